"""The vLLM engine repeats steerlab's treatments inside stock vLLM's workers.

These tests run where vLLM imports (``.ci/run`` builds ``.venv-vllm`` for them); elsewhere
they are skipped. One engine serves the whole module (starting one takes ~20-60 s on CPU).
Equivalence is judged on greedy completions in float32: most prompts must match the Hugging
Face engine token for token (numerical ties may differ), and the treatment must change them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("vllm", exc_type=ImportError)

from steerlab.engines import bound_engine, engine_off, release_engine, use_engine
from steerlab.engines.vllm import EngineError
from steerlab.evaluate.engine import greedy_rows
from steerlab.generation import generate, generate_jobs
from steerlab.interventions import Ablate, Clamp, Compose, LoRA, NoOp, Steer, apply
from steerlab.interventions.per_row import RowSetting
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


@pytest.fixture(scope="module")
def lm() -> Iterator[LoadedModel]:
    lm = load_model("smollm2-135m")
    use_engine(lm, "vllm", max_model_len=512)
    try:
        yield lm
    finally:
        release_engine(lm)


def _vec(seed: int, norm: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(576, generator=g)
    return v / v.norm() * norm


def _both(lm: LoadedModel) -> tuple[list[str], list[str]]:
    ours = generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=N)
    with engine_off(lm):
        ref = generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=N)
    return ours, ref


def _same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else 1.0


def test_plain_generation_equals_the_hf_engine(lm: LoadedModel) -> None:
    ours, ref = _both(lm)
    assert _same(ours, ref) >= 0.75
    assert bound_engine(lm.model).hooks_installed() == [0]


def _mean_direction(lm: LoadedModel, layer: int) -> tuple[torch.Tensor, float]:
    """The unit mean residual at ``layer`` over the prompts, and the mean residual norm: a
    direction that matters (ablating a random one changes nothing visible)."""
    from steerlab.models.chat import encode

    b = encode(lm.tokenizer, PROMPTS)
    with torch.no_grad(), engine_off(lm):
        hs = lm.model(
            input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True
        ).hidden_states[layer]
    m = b.attention_mask.bool()
    h = hs[m]
    mean = h.mean(0)
    return mean / mean.norm(), float(h.norm(dim=-1).mean())


@pytest.mark.parametrize("kind", ["steer", "ablate", "ablate_span", "clamp"])
def test_treatments_repeat_in_vllm(lm: LoadedModel, kind: str) -> None:
    plain, _ = _both(lm)
    u, norm = _mean_direction(lm, 10)
    treat = {
        "steer": Steer(_vec(1, 0.5 * norm), layers=10, coeff=1.0),
        "ablate": Ablate(u),
        # two directions: their orthonormal basis rows are removed one after the other there
        "ablate_span": Ablate([u, _mean_direction(lm, 4)[0]]),
        "clamp": Clamp(u, value=0.0, layers=[8, 9, 10]),
    }[kind]
    with apply(lm, treat):
        ours, ref = _both(lm)
    assert _same(ours, ref) >= 0.75, (ours, ref)
    assert _same(ours, plain) < 1.0  # the treatment changed something
    eng = bound_engine(lm.model)
    assert eng.hooks_installed() == [0]  # removed after the call
    again, _ = _both(lm)
    assert again == plain  # no stale hook, no stale prefix cache


def test_per_row_settings_match_greedy_rows_on_hf(lm: LoadedModel) -> None:
    a = RowSetting(add={10: _vec(2, 12.0)}, label="a")
    b = RowSetting(ablate={6: _vec(3, 1.0)}, label="b")
    plain = RowSetting(label="plain")
    prompts = PROMPTS[:4] * 3
    rows = [a] * 4 + [b] * 4 + [plain] * 4
    ours = greedy_rows(lm, prompts, rows, max_new_tokens=N)
    with engine_off(lm):
        ref = greedy_rows(lm, prompts, rows, max_new_tokens=N)
    assert _same(ours.texts, ref.texts) >= 0.75
    assert ours.texts[:4] != ours.texts[8:]


def test_what_vllm_cannot_repeat_is_refused(lm: LoadedModel) -> None:
    with (
        apply(lm, Steer(_vec(4, 5.0), layers=10, positions="generated")),
        pytest.raises(EngineError, match="generated"),
    ):
        generate(lm.model, lm.tokenizer, PROMPTS[:1], max_new_tokens=4)
    from steerlab.compare.finetune import lora_config, target_modules

    with (
        LoRA(config=lora_config(4, target_modules(lm.model))).applied(lm),
        pytest.raises(EngineError, match="LoRA"),
    ):
        generate(lm.model, lm.tokenizer, PROMPTS[:1], max_new_tokens=4)
    assert bound_engine(lm.model).hooks_installed() == [0]


def test_jobs_decode_in_one_call_each_under_its_own_treatment(lm: LoadedModel) -> None:
    """Several treatments share one vLLM call (request groups); each group gets exactly its
    own treatment: the HF engine's output job by job, and the same as a call of its own."""
    u, norm = _mean_direction(lm, 10)
    steer = Steer(_vec(1, 0.5 * norm), layers=10, coeff=1.0)
    jobs = [
        (NoOp(), PROMPTS),
        (steer, PROMPTS),
        (Ablate(u), PROMPTS[:5]),
        (steer, []),  # an empty job keeps its place
        (Compose((Clamp(u, value=0.0, layers=[8, 9, 10]), steer)), PROMPTS[2:]),
    ]
    eng = bound_engine(lm.model)
    assert eng.grouping()
    ours = generate_jobs(lm, jobs, max_new_tokens=N)
    with engine_off(lm):
        ref = generate_jobs(lm, jobs, max_new_tokens=N)
    assert [len(g) for g in ours] == [8, 8, 5, 0, 6]
    for got, want in zip(ours, ref, strict=True):
        assert _same(got, want) >= 0.75, (got, want)
    assert _same(ours[0], ours[1]) < 1.0
    for (iv, prompts), got in zip(jobs, ours, strict=True):
        if not prompts:
            continue
        with apply(lm, iv):
            alone = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=N)
        assert _same(alone, got) >= 0.75, (alone, got)
    assert eng.hooks_installed() == [0]


def test_groups_stay_apart_across_chunked_prefill(lm: LoadedModel) -> None:
    """Enough prompt tokens for several prefill chunks of the same size: each step's token
    layout is read afresh, so every group keeps its own treatment in every chunk."""
    eng = bound_engine(lm.model)
    chunk = eng.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    filler = " ".join(["The weather report said the river was calm and the sky was clear."] * 9)
    prompts = [f"{filler} {p}" for p in PROMPTS] * 3  # 24 prompts of ~150 tokens
    n_tok = sum(
        len(r) for r in eng.token_ids(prompts, chat=None, system=None, tokenizer=lm.tokenizer)
    )
    assert 3 * n_tok > 2 * chunk  # three groups span at least two full chunks
    u, norm = _mean_direction(lm, 10)
    jobs = [(NoOp(), prompts), (Ablate(u), prompts), (Steer(_vec(5, norm), layers=10), prompts)]
    together = generate_jobs(lm, jobs, max_new_tokens=8)
    for (iv, ps), got in zip(jobs, together, strict=True):
        with apply(lm, iv):
            alone = generate(lm.model, lm.tokenizer, ps, max_new_tokens=8)
        assert _same(alone, got) >= 0.75, (alone, got)
    assert _same(together[0], together[1]) < 0.75
