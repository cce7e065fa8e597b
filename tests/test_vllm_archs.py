"""vLLM's workers repeat each treatment on qwen2 (qwen2.5-coder-0.5b) and gemma3 (gemma3-270m,
sandwich norms: ablation hooks the post-norms the adapter names), as the Hugging Face engine
computes it. One engine per model, closed before the next starts. Greedy completions in
float32: most prompts must match token for token (numerical ties may differ), and the
treatment must change them. smollm2 (llama) is covered by ``test_vllm.py``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", exc_type=ImportError)

from test_vllm import PROMPTS  # the same prompts as the llama checks

from steerlab.engines import HFEngine, make_engine
from steerlab.engines.vllm import EngineError
from steerlab.interventions import Ablate, Clamp, Compose, NoOp, Orthogonalize, Steer
from steerlab.models.load import LoadedModel, load_model

pytestmark = pytest.mark.vllm

N = 12


def _mean_unit(lm: LoadedModel, layer: int) -> tuple[torch.Tensor, float]:
    from steerlab.models.chat import encode

    b = encode(lm.tokenizer, PROMPTS)
    with torch.no_grad():
        hs = lm.model(
            input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True
        ).hidden_states[layer]
    h = hs[b.attention_mask.bool()][1:]
    mean = h.mean(0)
    return mean / mean.norm(), float(h.norm(dim=-1).median())


def _same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "gemma3-270m"])
def test_treatments_repeat_in_vllm_on_other_architectures(name: str) -> None:
    lm = load_model(name)
    mid = lm.info.n_layers // 2
    u, norm = _mean_unit(lm, mid)
    r = torch.randn(lm.info.d_model, generator=torch.Generator().manual_seed(0))
    treatments = {
        "steer": Steer(r / r.norm() * 0.5 * norm, layers=mid),
        "ablate": Ablate(u),
        "clamp": Clamp(u, 0.0, layers=[mid - 1, mid]),
        "compose": Compose((Steer(r / r.norm() * 0.25 * norm, layers=mid - 2), Ablate(u))),
    }
    hf = HFEngine()
    eng = make_engine(lm, "vllm", max_model_len=512)
    try:
        jobs = [(NoOp(), PROMPTS), *((iv, PROMPTS) for iv in treatments.values())]
        ours = eng.generate_jobs(lm, jobs, max_new_tokens=N)
        ref = hf.generate_jobs(lm, jobs, max_new_tokens=N)
        for label, got, want in zip(["none", *treatments], ours, ref, strict=True):
            assert _same(got, want) >= 0.75, (name, label, got, want)
            if label != "none":
                assert _same(got, ours[0]) < 1.0, (name, label)  # it changed something
        if lm.adapter.sandwich:  # post-normed writes: orthogonalized weights are not ablation
            with pytest.raises(EngineError, match="sandwich"):
                eng.generate(lm, PROMPTS[:1], Orthogonalize(u), max_new_tokens=2)
        assert eng.hooks_installed() == [0]
    finally:
        eng.close()
