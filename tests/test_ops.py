"""One description of a treatment: ``ops()`` is pure data, ``from_ops`` rebuilds a treatment
that applies identically, and every executor (HF hooks, the per-row engine) computes the same
numbers from it, on llama, qwen2 and gemma3 (sandwich norms) layouts."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer, snapshot

from steerlab.engines.plans import EngineError, merge_plans, plan_for
from steerlab.engines.rows import greedy_rows, next_logprobs_rows
from steerlab.interventions import (
    Ablate,
    Clamp,
    Compose,
    NoOp,
    Orthogonalize,
    PerRow,
    PromptPrefix,
    Steer,
    SteerRows,
    apply,
    from_ops,
)
from steerlab.interventions.bias import BakeSteer
from steerlab.interventions.spec import SpecError, treatment_from_spec
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info

D = 32
ARCHS3 = ["llama", "qwen2", "gemma3_text"]
PROMPTS = ["i am so happy today", "what a day", "life is sad"]


def _vec(seed: int, norm: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(D, generator=g)
    return v / v.norm() * norm


def _lm(arch: str) -> LoadedModel:
    model = make_model(arch)
    ad = get_adapter(model)
    return LoadedModel(model, make_tokenizer(), ad, model_info(model, f"tiny-{arch}", ad))


def _treatments() -> dict[str, object]:
    return {
        "steer": Steer(_vec(1), layers=2, coeff=1.5),
        "steer_post_all": Steer(_vec(2), layers="all", coeff=0.5, site="resid_post"),
        "steer_generated": Steer(_vec(3), layers=[1, 3], positions="generated"),
        "ablate": Ablate(_vec(4)),
        "ablate_span": Ablate(torch.stack([_vec(5), _vec(6)])),
        "ablate_inputs": Ablate(_vec(7), layers=[1, 2], writes=False),
        "clamp": Clamp(_vec(8), 0.7, layers=[0, 2]),
        "compose": Compose((Steer(_vec(9), layers=1), Ablate(_vec(10)))),
        "steer_rows": SteerRows(torch.stack([_vec(11), _vec(12), _vec(13)]), layer=2),
        "per_row": PerRow([Steer(_vec(14), layers=1), NoOp(), Ablate(_vec(15))]),
        "orthogonalize": Orthogonalize(_vec(16)),
        "prompt": PromptPrefix(system="be happy", prefix="so "),
        "none": NoOp(),
    }


def _logits(lm: LoadedModel, iv: object) -> torch.Tensor:
    with apply(lm, iv) as t:  # type: ignore[arg-type]
        return next_logprobs_rows(t, PROMPTS)


def _plain(x: object) -> object:
    """The ops with tensors as lists: what must be JSON-able."""
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@pytest.mark.parametrize("arch", ARCHS3)
def test_from_ops_applies_identically(arch: str) -> None:
    lm = _lm(arch)
    before = snapshot(lm.model)
    plain = _logits(lm, NoOp())
    for name, iv in _treatments().items():
        ops = iv.ops()  # type: ignore[attr-defined]
        json.dumps(_plain(ops))  # plain data: numbers, strings, lists
        want = _logits(lm, iv)
        got = _logits(lm, from_ops(ops))
        assert torch.equal(got, want), name
        assert from_ops(ops).ops().__repr__() == ops.__repr__() or name == "orthogonalize", name
        if name not in ("none", "steer_generated"):  # the prompt's forward is untouched there
            assert not torch.equal(want, plain), f"{name} changed nothing"
    after = snapshot(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("arch", ARCHS3)
def test_per_row_engine_equals_hooks_bit_for_bit(arch: str) -> None:
    """Each row of a mixed batch gets exactly what its treatment hooked on the whole batch
    computes for that row (same batch, so the same kernels), logits and greedy tokens; an
    untreated row stays the untreated model's."""
    lm = _lm(arch)
    hookable = {
        k: v
        for k, v in _treatments().items()
        if k in ("steer", "steer_post_all", "ablate", "ablate_span", "ablate_inputs", "clamp")
    }
    items = [*hookable.values(), NoOp()]
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(len(items))]
    batched = next_logprobs_rows(lm, texts, items)
    gen = greedy_rows(lm, texts, items, max_new_tokens=5)
    for i, iv in enumerate(items):
        with apply(lm, iv) as t:
            alone = next_logprobs_rows(t, texts, [NoOp()] * len(items))
            alone_gen = greedy_rows(t, texts, [NoOp()] * len(items), max_new_tokens=5)
        assert torch.equal(batched[i], alone[i]), list(hookable)[i] if i < len(hookable) else i
        assert gen.texts[i] == alone_gen.texts[i]


def test_ops_are_pure_and_carry_what_the_executors_need() -> None:
    (op,) = Steer(_vec(1), layers="1:3", coeff=2.0, positions="prompt").ops()
    assert op["kind"] == "add" and op["layers"] == "1:3" and op["coeff"] == 2.0
    assert op["positions"] == "prompt" and op["site"] == "resid_pre"
    (op,) = Ablate([_vec(1), _vec(2)]).ops()
    assert op["vectors"].shape == (2, D) and op["layers"] == "all" and op["writes"]
    assert Compose((NoOp(), Clamp(_vec(3), 1.0))).ops()[0]["kind"] == "clamp"
    assert NoOp().ops() == []
    with pytest.raises(Exception, match="per-row treatment can only"):
        PerRow([PromptPrefix(system="x")])


def test_vllm_plans_translate_ops_and_refuse_what_hooks_cannot_repeat() -> None:
    v = _vec(1)
    steer = Steer(v, layers=2).ops()
    assert plan_for(steer) == steer
    (abl,) = plan_for(Orthogonalize(v).ops())  # weights that compute what ablation computes
    assert abl["kind"] == "ablate" and abl["writes"] and abl["layers"] == "all"
    with pytest.raises(EngineError, match="sandwich"):
        plan_for(Orthogonalize(v).ops(), sandwich=True)
    with pytest.raises(EngineError, match="generated"):
        plan_for(Steer(v, layers=2, positions="generated").ops())
    (add,) = plan_for(BakeSteer(v, layer=2, coeff=3.0).ops())
    assert add["kind"] == "add" and add["layers"] == [2] and add["coeff"] == 3.0
    assert plan_for(PromptPrefix(system="x").ops()) == []  # the engine renders prompts
    merged = merge_plans([steer, steer + Ablate(v).ops()])
    assert [op["groups"] for op in merged] == [[0, 1], [1]]


def test_one_parser_for_cli_flags_and_server_fields() -> None:
    from steerlab.directions.artifact import Direction

    lm = _lm("llama")
    dirs = {"d": Direction(torch.stack([_vec(1), _vec(2)]), (1, 2), {"site": "resid_pre"})}
    spec = {
        "steer": [{"direction": "d", "layer": 1, "coeff": 2.0}],
        "ablate": [{"direction": "d", "layer": 2}],
        "clamp": [{"direction": "d", "layer": 1, "value": 0.5, "layers": [0, 3]}],
    }
    iv = treatment_from_spec(spec, dirs.__getitem__, n_layers=4, width=D)
    want = Compose(
        (
            Steer(dirs["d"], layers=1, coeff=2.0),
            Ablate(dirs["d"], layer=2),
            Clamp(dirs["d"], 0.5, layers=[0, 3], layer=1),
        )
    )
    assert torch.equal(_logits(lm, iv), _logits(lm, want))
    for bad, match in [
        ({"steer": [{"direction": "d", "layer": 1, "coeff": "1e3"}]}, "coeff"),
        ({"steer": [{"direction": "d"}]}, "several layers"),
        ({"steer": [{"direction": "d", "layer": 9}]}, "range"),
        ({"clamp": [{"direction": "d", "layer": 1}]}, "needs a value"),
        ({"bogus": []}, "unknown field"),
    ]:
        with pytest.raises((SpecError, Exception), match=match):
            treatment_from_spec(bad, dirs.__getitem__, n_layers=4, width=D)


def test_each_row_keeps_its_own_order_of_ops() -> None:
    """Row 1 adds then ablates; row 0 holds the same ablation at another place. Each row must
    get its own order (add-then-ablate differs from ablate-then-add)."""
    lm = _lm("llama")
    u, v = _vec(1, 1.0), _vec(2, 5.0)
    x = Steer(_vec(3), layers=0)
    ab = Ablate(u, layers=[1], writes=False)
    add = Steer(v, layers=1)
    rows = [Compose((x, ab)), Compose((add, ab))]
    got = next_logprobs_rows(lm, PROMPTS[:2], rows)
    for i, iv in enumerate(rows):
        with apply(lm, iv) as t:
            want = next_logprobs_rows(t, PROMPTS[:2], [NoOp(), NoOp()])
        assert torch.equal(got[i], want[i])
    with apply(lm, Compose((ab, add))) as t:  # the other order is another result
        other = next_logprobs_rows(t, PROMPTS[:2], [NoOp(), NoOp()])
    assert not torch.equal(got[1], other[1])
