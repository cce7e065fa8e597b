"""Every treatment computes the same numbers through the HF hooks and the per-row engine on the
three built-in architectures: llama (smollm2-135m), qwen2 (qwen2.5-coder-0.5b) and gemma3
(gemma3-270m, sandwich norms). Real weights: random ones hide bugs that only show in a trained
residual stream. (vLLM's workers are checked against the same models in ``test_vllm_archs.py``.)
"""

from __future__ import annotations

import pytest
import torch

from steerlab.engines import HFEngine
from steerlab.engines.rows import next_logprobs_rows
from steerlab.interventions import Ablate, Clamp, Compose, NoOp, Steer, apply
from steerlab.models.load import LoadedModel, load_model

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"]
# distinct prompts: every batch below has the same rows (no prompt is shared and deduplicated)
PROMPTS = [
    "Describe a city bus.",
    "What is a river?",
    "Name a famous painter.",
    "How do bees make honey?",
    "Write one sentence about winter.",
    "What does a librarian do?",
]


@pytest.fixture(scope="module", params=MODELS)
def lm(request: pytest.FixtureRequest) -> LoadedModel:
    return load_model(request.param)


def _mean_unit(lm: LoadedModel, layer: int) -> tuple[torch.Tensor, float]:
    """The unit mean residual at ``layer`` and its typical norm: a direction that matters."""
    from steerlab.models.chat import encode

    b = encode(lm.tokenizer, PROMPTS)
    with torch.no_grad():
        hs = lm.model(
            input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True
        ).hidden_states[layer]
    h = hs[b.attention_mask.bool()][1:]  # the first token is an attention sink
    mean = h.mean(0)
    return mean / mean.norm(), float(h.norm(dim=-1).median())


def _treatments(lm: LoadedModel) -> list[object]:
    mid = lm.info.n_layers // 2
    u, norm = _mean_unit(lm, mid)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(lm.info.d_model, generator=g)
    r = r / r.norm()
    return [
        Steer(r * 0.5 * norm, layers=mid),
        Ablate(u),
        Ablate(u, layers=[mid], writes=False),
        Clamp(u, 0.0, layers=[mid - 1, mid]),
        Compose((Steer(r * 0.25 * norm, layers=mid - 2), Ablate(u))),
        NoOp(),
    ]


def test_per_row_engine_equals_hooks_on_real_models(lm: LoadedModel) -> None:
    """A batch where every row has its own treatment gives, row for row, exactly the logits and
    greedy tokens of that treatment hooked on the whole batch; and treatments matter."""
    items = _treatments(lm)
    texts = PROMPTS[: len(items)]
    eng = HFEngine()
    batched = next_logprobs_rows(lm, texts, items)
    gen = eng.generate_rows(lm, texts, items, max_new_tokens=8)
    plain = next_logprobs_rows(lm, texts, [NoOp()] * len(items))
    for i, iv in enumerate(items):
        with apply(lm, iv) as t:
            alone = next_logprobs_rows(t, texts, [NoOp()] * len(items))
            alone_gen = eng.generate_rows(t, texts, [NoOp()] * len(items), max_new_tokens=8)
        assert float((batched[i] - alone[i]).abs().max()) == 0.0, (lm.info.model_id, iv)
        assert gen.texts[i] == alone_gen.texts[i], (lm.info.model_id, iv)
        if not isinstance(iv, NoOp):
            assert float((batched[i] - plain[i]).abs().max()) > 1e-3, (lm.info.model_id, iv)
    assert torch.equal(batched[-1], plain[-1])
