"""The vLLM engine repeats steerlab's treatments inside stock vLLM's workers.

These tests run where vLLM imports (``.ci/run`` builds ``.venv-vllm`` for them); elsewhere
they are skipped. One engine serves the whole module (starting one takes ~20-60 s on CPU).
Equivalence is judged on greedy completions in float32: most prompts must match the Hugging
Face engine token for token (numerical ties may differ), and the treatment must change them.
Engines are passed explicitly: the Hugging Face reference is ``HFEngine()`` on the same model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", exc_type=ImportError)

from steerlab.engines import HFEngine, make_engine
from steerlab.engines.vllm import EngineError, VLLMEngine
from steerlab.interventions import Ablate, Clamp, Compose, LoRA, NoOp, Steer
from steerlab.models.load import LoadedModel, load_model

pytestmark = pytest.mark.vllm

PROMPTS = [
    "Describe a city bus.",
    "Tell me about breakfast.",
    "What is a river?",
    "Write one sentence about winter.",
    "How do bees make honey?",
    "Name a famous painter.",
    "What does a librarian do?",
    "Explain what rain is.",
]
N = 16
HF = HFEngine()


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[LoadedModel, VLLMEngine]]:
    lm = load_model("smollm2-135m")
    eng = make_engine(lm, "vllm", max_model_len=512)
    try:
        yield lm, eng  # type: ignore[misc]
    finally:
        eng.close()


def _vec(seed: int, norm: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(576, generator=g)
    return v / v.norm() * norm


def _both(lm: LoadedModel, eng: VLLMEngine, iv: object = None) -> tuple[list[str], list[str]]:
    ours = eng.generate(lm, PROMPTS, iv, max_new_tokens=N)
    ref = HF.generate(lm, PROMPTS, iv, max_new_tokens=N)
    return ours, ref


def _same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else 1.0


def test_plain_generation_equals_the_hf_engine(env: tuple[LoadedModel, VLLMEngine]) -> None:
    lm, eng = env
    ours, ref = _both(lm, eng)
    assert _same(ours, ref) >= 0.75
    assert eng.hooks_installed() == [0]


def _mean_direction(lm: LoadedModel, layer: int) -> tuple[torch.Tensor, float]:
    """The unit mean residual at ``layer`` over the prompts, and the mean residual norm: a
    direction that matters (ablating a random one changes nothing visible)."""
    from steerlab.models.chat import encode

    b = encode(lm.tokenizer, PROMPTS)
    with torch.no_grad():
        hs = lm.model(
            input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True
        ).hidden_states[layer]
    h = hs[b.attention_mask.bool()]
    mean = h.mean(0)
    return mean / mean.norm(), float(h.norm(dim=-1).mean())


@pytest.mark.parametrize("kind", ["steer", "ablate", "ablate_span", "clamp"])
def test_treatments_repeat_in_vllm(env: tuple[LoadedModel, VLLMEngine], kind: str) -> None:
    lm, eng = env
    plain, _ = _both(lm, eng)
    u, norm = _mean_direction(lm, 10)
    treat = {
        "steer": Steer(_vec(1, 0.5 * norm), layers=10, coeff=1.0),
        "ablate": Ablate(u),
        "ablate_span": Ablate([u, _mean_direction(lm, 4)[0]]),
        "clamp": Clamp(u, value=0.0, layers=[8, 9, 10]),
    }[kind]
    ours, ref = _both(lm, eng, treat)
    assert _same(ours, ref) >= 0.75, (ours, ref)
    assert _same(ours, plain) < 1.0  # the treatment changed something
    assert eng.hooks_installed() == [0]  # removed after the call
    again, _ = _both(lm, eng)
    assert again == plain  # no stale hook, no stale prefix cache


def test_per_row_treatments_match_the_hf_per_row_engine(
    env: tuple[LoadedModel, VLLMEngine],
) -> None:
    lm, eng = env
    a = Steer(_vec(2, 12.0), layers=10)
    b = Ablate(_vec(3, 1.0), layers=[6], writes=False)
    plain = NoOp()
    prompts = PROMPTS[:4] * 3
    rows = [a] * 4 + [b] * 4 + [plain] * 4
    ours = eng.generate_rows(lm, prompts, rows, max_new_tokens=N)
    ref = HF.generate_rows(lm, prompts, rows, max_new_tokens=N)
    assert _same(ours.texts, ref.texts) >= 0.75
    assert ours.texts[:4] != ours.texts[8:]


def test_what_vllm_cannot_repeat_is_refused(env: tuple[LoadedModel, VLLMEngine]) -> None:
    lm, eng = env
    with pytest.raises(EngineError, match="generated"):
        eng.generate(
            lm, PROMPTS[:1], Steer(_vec(4, 5.0), layers=10, positions="generated"), max_new_tokens=4
        )
    from peft import LoraConfig

    lora = LoRA(config=LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(EngineError, match="LoRA"):
        eng.generate(lm, PROMPTS[:1], lora, max_new_tokens=4)
    assert eng.hooks_installed() == [0]


def test_jobs_decode_in_one_call_each_under_its_own_treatment(
    env: tuple[LoadedModel, VLLMEngine],
) -> None:
    """Several treatments share one vLLM call (request groups); each group gets exactly its
    own treatment: the HF engine's output job by job, and the same as a call of its own."""
    lm, eng = env
    u, norm = _mean_direction(lm, 10)
    steer = Steer(_vec(1, 0.5 * norm), layers=10, coeff=1.0)
    jobs = [
        (NoOp(), PROMPTS),
        (steer, PROMPTS),
        (Ablate(u), PROMPTS[:5]),
        (steer, []),  # an empty job keeps its place
        (Compose((Clamp(u, value=0.0, layers=[8, 9, 10]), steer)), PROMPTS[2:]),
    ]
    assert eng.grouping()
    ours = eng.generate_jobs(lm, jobs, max_new_tokens=N)
    ref = HF.generate_jobs(lm, jobs, max_new_tokens=N)
    assert [len(g) for g in ours] == [8, 8, 5, 0, 6]
    for got, want in zip(ours, ref, strict=True):
        assert _same(got, want) >= 0.75, (got, want)
    assert _same(ours[0], ours[1]) < 1.0
    for (iv, prompts), got in zip(jobs, ours, strict=True):
        if prompts:
            alone = eng.generate(lm, prompts, iv, max_new_tokens=N)
            assert _same(alone, got) >= 0.75, (alone, got)
    assert eng.hooks_installed() == [0]


def test_groups_stay_apart_across_chunked_prefill(env: tuple[LoadedModel, VLLMEngine]) -> None:
    """Enough prompt tokens for several prefill chunks of the same size: each step's token
    layout is read afresh, so every group keeps its own treatment in every chunk."""
    lm, eng = env
    chunk = eng.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    filler = " ".join(["The weather report said the river was calm and the sky was clear."] * 9)
    prompts = [f"{filler} {p}" for p in PROMPTS] * 3  # 24 prompts of ~150 tokens
    n_tok = sum(len(r) for r in eng.token_ids(lm, prompts))
    assert 3 * n_tok > 2 * chunk  # three groups span at least two full chunks
    u, norm = _mean_direction(lm, 10)
    jobs = [(NoOp(), prompts), (Ablate(u), prompts), (Steer(_vec(5, norm), layers=10), prompts)]
    together = eng.generate_jobs(lm, jobs, max_new_tokens=8)
    for (iv, ps), got in zip(jobs, together, strict=True):
        alone = HF.generate(lm, ps, iv, max_new_tokens=8)
        assert _same(alone, got) >= 0.75, (alone, got)
    assert _same(together[0], together[1]) < 0.75


def test_generate_json_on_vllm_is_clean_json(tmp_path: Path) -> None:
    """vLLM logs to stderr: ``steerlab generate --engine vllm --json`` prints only JSON."""
    from steerlab.directions.artifact import Direction

    lm = load_model("smollm2-135m")
    d = Direction(_vec(6, 8.0)[None], (10,), {"model": lm.info.to_dict(), "site": "resid_pre"})
    d.save(tmp_path / "v.safetensors")
    exe = str(Path(sys.executable).with_name("steerlab"))  # the venv's console script
    cmd = [exe, "generate", "--engine", "vllm", "--json"]
    cmd += ["--model", "smollm2-135m", "--prompt", "What is a river?", "--prompt", "Hi"]
    cmd += ["--vector", str(tmp_path / "v.safetensors"), "--compare", "--max-new-tokens", "6"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert [r["prompt"] for r in rows] == ["What is a river?", "Hi"]
    assert all(set(r) == {"prompt", "unsteered", "steered"} for r in rows)
