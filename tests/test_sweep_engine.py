"""The per-row engine equals one-treatment-at-a-time evaluation on a real model."""

from __future__ import annotations

import pytest
import torch

from steerlab.engines.rows import continuation_nll_rows, greedy_rows, next_logprobs_rows
from steerlab.generation import generate
from steerlab.interventions import Ablate, NoOp, Steer, apply
from steerlab.interventions.per_row import PerRow
from steerlab.models.fingerprint import weights_fingerprint
from steerlab.models.load import LoadedModel, load_model

PROMPTS = ["Describe a city bus.", "Tell me about breakfast.", "What is a river?"]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return load_model("smollm2-135m")


def _vec(seed: int, norm: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(576, generator=g)
    return v / v.norm() * norm


def test_unsteered_rows_decode_like_generate(lm: LoadedModel) -> None:
    rows = [NoOp()] * len(PROMPTS)
    ours = greedy_rows(lm, PROMPTS, rows, max_new_tokens=12)
    ref = generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=12)
    assert ours.texts == ref
    assert all(0 < n <= 12 for n in ours.lengths)


def test_per_row_logits_equal_one_cell_at_a_time(lm: LoadedModel) -> None:
    before = weights_fingerprint(lm.model)
    cells = [(3, _vec(1, 8.0)), (10, _vec(2, 20.0)), (20, _vec(3, 30.0))]
    settings = [Steer(v, layers=lay) for lay, v in cells for _ in PROMPTS]
    texts = [p for _ in cells for p in PROMPTS]
    batched = next_logprobs_rows(lm, texts, settings)
    worst = 0.0
    for c, (lay, v) in enumerate(cells):
        with apply(lm, Steer(v, layers=lay, coeff=1.0)) as t:
            one = next_logprobs_rows(t, PROMPTS)
        part = batched[c * len(PROMPTS) : (c + 1) * len(PROMPTS)]
        worst = max(worst, float((part - one).abs().max()))
    assert worst < 1e-4
    # The steering did something (the comparison is not between identical models).
    plain = next_logprobs_rows(lm, PROMPTS)
    assert float((batched[-len(PROMPTS) :] - plain).abs().max()) > 1e-2
    assert weights_fingerprint(lm.model) == before
    assert not any(m._forward_pre_hooks for m in lm.model.modules())


def test_ablation_rows_match_a_hook_alone(lm: LoadedModel) -> None:
    u = _vec(4, 1.0)
    with apply(lm, Ablate(u)) as t:  # every layer, every sublayer write
        ref = next_logprobs_rows(t, PROMPTS)
    mixed = [Ablate(u, writes=False)] * len(PROMPTS)
    ours = next_logprobs_rows(lm, PROMPTS, mixed)
    # Projecting only at block inputs is not full ablation: close but not identical.
    assert 0 < float((ours - ref).abs().max()) < 5.0
    alone = next_logprobs_rows(lm, PROMPTS[:1], mixed[:1])
    assert float((ours[:1] - alone).abs().max()) < 1e-4
    # Full ablation per row (every block input and sublayer write) is the hooks' own result,
    # bit for bit, beside untreated rows that stay the untreated model's.
    rows = [Ablate(u), NoOp(), Ablate(u)]
    per_row = next_logprobs_rows(lm, PROMPTS, rows)
    plain = next_logprobs_rows(lm, PROMPTS, [NoOp()] * 3)
    assert torch.equal(per_row[0], ref[0]) and torch.equal(per_row[2], ref[2])
    assert torch.equal(per_row[1], plain[1]) and not torch.equal(per_row[0], plain[0])


def test_generated_positions_share_the_prompt_forward(lm: LoadedModel) -> None:
    v = _vec(5, 25.0)
    settings = [Steer(v, layers=8, positions="generated")] * len(PROMPTS)
    ours = greedy_rows(lm, PROMPTS, settings, max_new_tokens=10)
    with apply(lm, Steer(v, layers=8, coeff=1.0, positions="generated")) as t:
        ref = generate(t.model, t.tokenizer, PROMPTS, max_new_tokens=10)
    assert ours.texts == ref
    plain = greedy_rows(lm, PROMPTS, [NoOp()] * 3, max_new_tokens=10)
    assert ours.texts != plain.texts


def test_mixed_cells_generate_like_each_cell_alone(lm: LoadedModel) -> None:
    cells = [
        Steer(_vec(6, 20.0), layers=6),
        Steer(_vec(7, 40.0), layers=15, positions="prompt"),
    ]
    settings = [c for c in cells for _ in PROMPTS]
    texts = [p for _ in cells for p in PROMPTS]
    together = greedy_rows(lm, texts, settings, max_new_tokens=8)
    for c, cell in enumerate(cells):
        alone = greedy_rows(lm, PROMPTS, [cell] * len(PROMPTS), max_new_tokens=8)
        assert together.texts[c * 3 : (c + 1) * 3] == alone.texts


def test_continuation_nll(lm: LoadedModel) -> None:
    good = continuation_nll_rows(lm, ["What is 2 + 2?"] * 2, ["2 + 2 = 4.", "Purple elephant sky."])
    assert good[0][1] > 0 and good[0][0] / good[0][1] < good[1][0] / good[1][1]
    assert continuation_nll_rows(lm, ["Hi"], [""]) == [(0.0, 0)]
    with pytest.raises(ValueError):
        greedy_rows(lm, PROMPTS, [NoOp()], max_new_tokens=2)
    assert isinstance(PerRow([NoOp()]).spec(), dict)


def test_shared_prefix_nll_equals_plain(lm: LoadedModel) -> None:
    conts = ["A bus is a large vehicle.", "Eggs and toast.", "Water that flows."]
    shared = continuation_nll_rows(lm, PROMPTS, conts)  # unsteered: the template is shared
    plain = continuation_nll_rows(lm, PROMPTS, conts, [NoOp()] * 3)  # no sharing
    for (a, n), (b, m) in zip(shared, plain, strict=True):
        assert n == m and abs(a - b) < 1e-3 * max(1.0, abs(b))


def test_unsteered_rows_beside_generated_rows_share_the_prompt(lm: LoadedModel) -> None:
    v = _vec(8, 25.0)
    rows = [Steer(v, layers=8, positions="generated"), NoOp(), NoOp(name="x")]
    texts = [PROMPTS[0]] * 3
    got = greedy_rows(lm, texts, rows, max_new_tokens=6)
    plain = greedy_rows(lm, PROMPTS[:1], [NoOp()], max_new_tokens=6)
    assert got.texts[1] == got.texts[2] == plain.texts[0]


LONG = "Here is some background before the question. " * 12  # > LONG_PREFIX tokens, shared


def test_long_shared_prefix_runs_once_and_changes_nothing(lm: LoadedModel) -> None:
    """Prompts sharing a long prefix (few-shot demonstrations) compute it once per batch; the
    completions and logits equal the plain path's, for unsteered rows, rows steered on the
    whole prompt (one batch per setting) and mixed settings."""
    prompts = [LONG + p for p in PROMPTS]
    a, b = Steer(_vec(5, 12.0), layers=8), Steer(_vec(6, 12.0), layers=8)
    rows = [NoOp()] * 3 + [a] * 3 + [b] * 3
    texts = prompts * 3
    calls: list[int] = []

    def count(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("input_ids")
        calls.append(int(x.shape[0] * x.shape[1]))

    h = lm.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        fast = greedy_rows(lm, texts, rows, max_new_tokens=8)
        tokens_fast = sum(calls)
        calls.clear()
        slow = greedy_rows(lm, texts, rows, max_new_tokens=8, min_prefix=0)
        tokens_slow = sum(calls)
    finally:
        h.remove()
    assert fast.texts == slow.texts
    assert tokens_fast < tokens_slow / 2  # the shared ~120 tokens were not run 9 times
    lp_fast = next_logprobs_rows(lm, texts, rows)
    lp_slow = next_logprobs_rows(lm, texts, rows, min_prefix=0)
    assert float((lp_fast - lp_slow).abs().max()) < 1e-3
    assert float((lp_fast[3] - lp_fast[6]).abs().max()) > 1e-2  # the settings differ
