"""Hooks are scoped: removed on any exit, and the model is bit-identical afterwards."""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, assert_identical, make_model, make_tokenizer, snapshot

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.hooks import retuple, scoped_hooks, untuple
from steerlab.models.chat import encode


class Boom(Exception):
    pass


def _logits(model: torch.nn.Module) -> torch.Tensor:
    batch = encode(make_tokenizer(), ["i am so happy today", "tell me about your day"])
    with torch.no_grad():
        return model(**forward_kwargs(batch)).logits


@pytest.mark.parametrize("which", ["steer", "ablate", "clamp", "generated"])
def test_exception_inside_context_leaves_no_trace(tiny: torch.nn.Module, which: str) -> None:
    before_hooks = all_hooks(tiny)
    snap = snapshot(tiny)
    ref = _logits(tiny)
    v = torch.randn(tiny.get_input_embeddings().weight.shape[1])
    ctx = {
        "steer": lambda: steerlab.steer(tiny, v, layers=[1, 2], coeff=3.0),
        "ablate": lambda: steerlab.ablate(tiny, v),
        "clamp": lambda: steerlab.clamp(tiny, v, 1.5),
        "generated": lambda: steerlab.steer(tiny, v, layers=1, positions="generated"),
    }[which]
    with pytest.raises(Boom), ctx():
        assert all_hooks(tiny) > before_hooks
        if which != "generated":
            assert not torch.equal(_logits(tiny), ref)
        raise Boom
    assert all_hooks(tiny) == before_hooks
    assert_identical(tiny, snap)
    assert torch.equal(_logits(tiny), ref)


def test_foreign_hooks_are_kept() -> None:
    model = make_model("llama")
    calls: list[int] = []
    h = model.model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    with steerlab.ablate(model, torch.ones(32)):
        _logits(model)
    _logits(model)
    assert len(calls) == 2
    h.remove()


def test_untuple_retuple_both_forms() -> None:
    t = torch.ones(2)
    assert untuple(t) is t
    assert untuple((t, "x"))[0] == 1
    new = torch.zeros(2)
    assert retuple(t, new) is new
    out = retuple((t, "x", None), new)
    assert isinstance(out, tuple) and out[0] is new and out[1:] == ("x", None)


def test_post_hook_on_tuple_returning_module() -> None:
    class TupleMod(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
            return x * 2, "aux"

    m = TupleMod()
    with scoped_hooks() as hs:
        hs.post(m, lambda h: h + 1)
        out = m(torch.zeros(3))
    assert isinstance(out, tuple) and out[1] == "aux"
    assert torch.equal(out[0], torch.ones(3))
    assert m(torch.zeros(3))[0].sum() == 0


def test_pre_hook_with_keyword_hidden_states() -> None:
    class KwMod(torch.nn.Module):
        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return hidden_states

    m = KwMod()
    with scoped_hooks() as hs:
        hs.pre(m, lambda h: h + 5)
        assert m(hidden_states=torch.zeros(2)).sum() == 10
        assert m(torch.zeros(2)).sum() == 10
    assert m(hidden_states=torch.zeros(2)).sum() == 0
