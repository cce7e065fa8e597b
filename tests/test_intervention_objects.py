"""Intervention objects: the same effect as the function-style calls, composed and undone in
order, described by a JSON spec, and refusing bad numbers when built."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import all_hooks, assert_identical, make_model, make_tokenizer, snapshot

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.directions import Direction
from steerlab.errors import VectorError
from steerlab.generation import generate
from steerlab.interventions import (
    Ablate,
    Clamp,
    Compose,
    Intervention,
    LoRA,
    NoOp,
    Orthogonalize,
    PromptPrefix,
    Steer,
    SteerRows,
    apply,
)
from steerlab.models.adapter import get_adapter
from steerlab.models.chat import encode, format_prompt
from steerlab.models.load import LoadedModel, model_info

PROMPTS = ["i am so happy today", "tell me about your day", "what a day"]


def _lm(arch: str = "llama") -> LoadedModel:
    m = make_model(arch)
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, f"tiny-{arch}", ad))


def _vec(seed: int) -> torch.Tensor:
    return torch.randn(32, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(lm: LoadedModel, prompts: list[str] = PROMPTS) -> torch.Tensor:
    return lm.model(**forward_kwargs(encode(lm.tokenizer, prompts))).logits


def test_objects_equal_the_function_style_calls() -> None:
    lm = _lm()
    v, w = _vec(1), _vec(2)
    base = _logits(lm)
    cases = [
        (
            [Steer(v, layers=[1, 2], coeff=2.5)],
            lambda: steerlab.steer(lm.model, v, layers=[1, 2], coeff=2.5),
        ),
        ([Ablate(v)], lambda: steerlab.ablate(lm.model, v)),
        ([Clamp(w, 1.5, layers=[0, 3])], lambda: steerlab.clamp(lm.model, w, 1.5, layers=[0, 3])),
    ]
    for objs, fn in cases:
        with apply(lm, objs) as treated:
            got = _logits(treated)
        with fn():
            want = _logits(lm)
        assert torch.equal(got, want), objs[0].name
        assert not torch.allclose(got, base), objs[0].name
    # Several at once: the same as the nested function calls, entered in the same order.
    with apply(lm, [Steer(v, layers=1, coeff=2.0), Ablate(w)]) as treated:
        got = _logits(treated)
    with steerlab.steer(lm.model, v, layers=1, coeff=2.0), steerlab.ablate(lm.model, w):
        want = _logits(lm)
    assert torch.equal(got, want)
    assert all_hooks(lm.model) == 0
    assert torch.equal(_logits(lm), base)
    # None and NoOp change nothing.
    for nothing in (None, NoOp(), []):
        with apply(lm, nothing) as treated:  # type: ignore[arg-type]
            assert treated is lm and torch.equal(_logits(treated), base)


def test_direction_rows_are_used_per_layer() -> None:
    lm = _lm()
    d = Direction(torch.stack([_vec(1), _vec(2)]), (1, 2), {"method": "mean_diff"})
    with apply(lm, Steer(d, layers=[1, 2])) as treated:
        got = _logits(treated)
    with steerlab.steer(lm.model, _vec(1), layers=1), steerlab.steer(lm.model, _vec(2), layers=2):
        want = _logits(lm)
    assert torch.equal(got, want)


@dataclass(frozen=True)
class Recorder:
    """A fake intervention that logs its entry and exit (and can fail on entry)."""

    label: str
    log: list[str] = field(default_factory=list, compare=False)
    fail: bool = False
    name: str = "recorder"

    def ops(self) -> list[dict[str, Any]]:
        return [{"kind": "recorder", "label": self.label}]

    def spec(self) -> dict[str, Any]:
        return {"kind": "recorder", "label": self.label}

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        if self.fail:
            raise RuntimeError(f"{self.label} failed")
        self.log.append(f"+{self.label}")
        try:
            yield lm
        finally:
            self.log.append(f"-{self.label}")


class Boom(Exception):
    pass


def test_compose_undoes_in_reverse_order_on_error() -> None:
    lm = _lm()
    log: list[str] = []
    items = tuple(Recorder(x, log) for x in "abc")
    assert all(isinstance(i, Intervention) for i in items)
    with pytest.raises(Boom), Compose(items).applied(lm):
        assert log == ["+a", "+b", "+c"]
        raise Boom
    assert log == ["+a", "+b", "+c", "-c", "-b", "-a"]
    # One that fails on entry: those entered before it are undone, the rest never entered.
    log.clear()
    failing = (Recorder("a", log), Recorder("b", log, fail=True), Recorder("c", log))
    with pytest.raises(RuntimeError, match="b failed"), Compose(failing).applied(lm):
        pass
    assert log == ["+a", "-a"]


def test_compose_of_real_interventions_restores_everything_on_error(tmp_path) -> None:
    lm = _lm("gemma")  # tied embeddings: the in-place edit unties them
    snap = snapshot(lm.model)
    head = lm.model.get_output_embeddings().weight
    base = _logits(lm)
    treat = [
        Steer(_vec(1), layers=1, coeff=3.0),
        Orthogonalize(_vec(2), spill_dir=tmp_path),
        Clamp(_vec(3), 2.0),
        PromptPrefix(system="be happy"),
    ]
    with pytest.raises(Boom), apply(lm, treat) as treated:
        assert treated.tokenizer is not lm.tokenizer
        assert all_hooks(lm.model) > 0 and not torch.equal(_logits(lm), base)
        raise Boom
    assert all_hooks(lm.model) == 0
    assert_identical(lm.model, snap)
    assert lm.model.get_output_embeddings().weight is head is lm.model.get_input_embeddings().weight
    assert not hasattr(lm.model.config, "steerlab_edit")
    assert torch.equal(_logits(lm), base)


def test_specs_are_json_and_name_their_kind() -> None:
    from peft import LoraConfig

    v = _vec(1)
    d = Direction(torch.stack([v, _vec(2)]), (1, 2), {"method": "pca"})
    objs: dict[str, Intervention] = {
        "steer": Steer(v, layers=(1, 2), coeff=2.0),
        "ablate": Ablate(d, layer=2),
        "clamp": Clamp(v, 1.0, layers=(0,)),
        "steer_rows": SteerRows(torch.stack([v, -v]), layer=1),
        "orthogonalize": Orthogonalize(v),
        "prompt": PromptPrefix(system="s", shots=[("u", "a")], prefix="p", suffix="x"),
        "lora": LoRA(config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])),
        "none": NoOp(),
    }
    for kind, obj in objs.items():
        spec = json.loads(json.dumps(obj.spec()))
        assert spec["kind"] == kind
    both = Compose(tuple(objs.values())).spec()
    assert [s["kind"] for s in json.loads(json.dumps(both))["items"]] == list(objs)
    # The spec tells vectors apart (by hash) and records the numbers that matter.
    assert Steer(v, layers=1).spec()["vector"] != Steer(_vec(2), layers=1).spec()["vector"]
    assert objs["steer"].spec()["layers"] == [1, 2] and objs["steer"].spec()["coeff"] == 2.0
    assert objs["ablate"].spec()["vector"]["method"] == "pca"
    assert objs["lora"].spec()["target_modules"] == ["q_proj", "v_proj"]


def test_bad_numbers_are_refused_when_built() -> None:
    # Defect: Steer(v, coeff=nan) was accepted and produced NaN text at generation time.
    for bad in (float("nan"), float("inf"), "lots"):
        with pytest.raises(VectorError):
            Steer(_vec(1), layers=1, coeff=bad)  # type: ignore[arg-type]
        with pytest.raises(VectorError):
            Clamp(_vec(1), bad)  # type: ignore[arg-type]
    with (
        pytest.raises(VectorError, match="NaN"),
        apply(_lm(), SteerRows(torch.full((2, 32), float("nan")), layer=1)),
    ):
        pass


def test_prompt_prefix_renders_everything_in_order() -> None:
    lm = _lm()
    plain = format_prompt(lm.tokenizer, "x")
    pp = PromptPrefix(system="SYS", shots=[("USER1", "REPLY1")], prefix="BEFORE ", suffix=" AFTER")
    with pp.applied(lm) as treated:
        assert treated.model is lm.model
        text = format_prompt(treated.tokenizer, "x")
        order = [text.index(s) for s in ("SYS", "USER1", "REPLY1", "BEFORE x AFTER")]
        assert order == sorted(order)
        assert text.endswith("<|assistant|>")
    assert format_prompt(lm.tokenizer, "x") == plain  # the original tokenizer is unchanged
    assert "SYS" not in plain and "BEFORE" not in plain


def test_prompt_prefix_changes_generation() -> None:
    lm = _lm()
    long = " ".join(["the day was awful and miserable"] * 6) + " "
    plain = generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=4)
    with PromptPrefix(system="life is awful", prefix=long).applied(lm) as treated:
        prompted = generate(treated.model, treated.tokenizer, PROMPTS, max_new_tokens=4)
    assert prompted != plain
    assert generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=4) == plain


def test_steer_rows_object_equals_per_row_steer() -> None:
    lm = _lm()
    deltas = torch.stack([_vec(1), -2 * _vec(2), 3 * _vec(3)])
    with apply(lm, SteerRows(deltas, layer=1)) as treated:
        got = _logits(treated)
    for i in range(len(PROMPTS)):
        with apply(lm, Steer(deltas[i], layers=1)) as treated:
            want = _logits(treated)
        torch.testing.assert_close(got[i], want[i], rtol=0, atol=1e-5)
    # One row is added to every row of the batch.
    with apply(lm, SteerRows(deltas[:1], layer=1)) as treated:
        one = _logits(treated)
    with apply(lm, Steer(deltas[0], layers=1)) as treated:
        torch.testing.assert_close(one, _logits(treated), rtol=0, atol=1e-5)
    with (
        pytest.raises(VectorError, match="2 row treatments for a batch of 3"),
        apply(lm, SteerRows(deltas[:2], layer=1)) as treated,
    ):
        _logits(treated)
    assert all_hooks(lm.model) == 0
    # The shared-prefix forward runs the prefix once (batch 1): per-row steering cannot apply
    # there, and the error says so instead of failing deep inside the cache.
    from steerlab.generation import last_token_logprobs

    shared = "tell me about your day the time you had a great day with him and"
    prompts = [f"{shared} what a day", f"{shared} it was awful", f"{shared} life is great"]
    rows = deltas[:1].repeat(3, 1)
    with (
        pytest.raises(VectorError, match="prefix"),
        apply(lm, SteerRows(rows, layer=1)) as treated,
    ):
        last_token_logprobs(treated.model, treated.tokenizer, prompts, prefix=True)
    with apply(lm, SteerRows(rows, layer=1)) as treated:
        got = last_token_logprobs(treated.model, treated.tokenizer, prompts, prefix=False)
    with apply(lm, Steer(deltas[0], layers=1)) as treated:
        want = last_token_logprobs(treated.model, treated.tokenizer, prompts, prefix=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Interventions compare by identity (tensor fields): no ambiguous elementwise ==.
    a = Steer(deltas[0], layers=1)
    assert a == a and a != Steer(deltas[0], layers=1) and a in [a]
