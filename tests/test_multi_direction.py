"""Several directions at once: span ablation equals orthogonalization of the span, one
direction is exactly the old code path, and several steering terms compose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    NON_SANDWICH,
    TINY_REFUSAL,
    all_hooks,
    assert_identical,
    make_model,
    make_tokenizer,
    snapshot,
)
from typer.testing import CliRunner

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.cli import app
from steerlab.configs import ConfigError
from steerlab.directions import Direction
from steerlab.engines.plans import plan_for
from steerlab.errors import VectorError
from steerlab.interventions import (
    Ablate,
    Compose,
    Orthogonalize,
    Steer,
    apply,
    as_basis,
    steer_many,
)
from steerlab.interventions.arithmetic import project_out
from steerlab.interventions.execute import op_basis
from steerlab.interventions.runtime import as_unit, orthonormal_rows
from steerlab.models.adapter import blocks_of, get_adapter
from steerlab.models.chat import encode
from steerlab.models.load import LoadedModel, model_info
from steerlab.refusal import RefusalConfig, run_refusal
from steerlab.refusal.select import select_many

PROMPTS = ["i am so happy today", "tell me about your day", "what a day"]


def _vecs(k: int, seed: int = 5, d: int = 32) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed))


def _lm(arch: str = "llama") -> LoadedModel:
    m = make_model(arch)
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, f"tiny-{arch}", ad))


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model(**forward_kwargs(encode(make_tokenizer(), PROMPTS))).logits


def _residuals(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every block input and the final norm's input, as the modules receive them."""
    ad = get_adapter(model)
    seen: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(
            lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).clone()),
            with_kwargs=True,
        )
        for m in [*blocks_of(model, ad), model.get_submodule(ad.final_norm)]
    ]
    try:
        _logits(model)
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------------------ the basis


def test_basis_is_orthonormal_spans_the_inputs_and_keeps_the_first_direction() -> None:
    v = _vecs(3)
    v[1] += 5 * v[0]  # far from orthogonal
    q, dropped = orthonormal_rows(v)
    assert dropped == []
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    # each input lies in the span: projecting it out leaves nothing
    res = v.double() - (v.double() @ q.T) @ q
    assert res.abs().max() < 1e-10
    torch.testing.assert_close(q[0], v[0].double() / v[0].double().norm(), rtol=0, atol=1e-15)


def test_one_direction_is_bit_for_bit_the_old_path() -> None:
    model = make_model("llama")
    v = _vecs(1)[0]
    assert torch.equal(as_basis(model, v), as_unit(model, v, None)[None])
    assert torch.equal(as_basis(model, [v]), as_unit(model, v, None)[None])
    assert torch.equal(as_basis(model, v[None]), as_unit(model, v, None)[None])
    with steerlab.ablate(model, v):
        old = _logits(model)
    assert op_basis(Ablate(v).ops()[0], 32).shape == (32,)  # one direction: the (D,) formula
    for same in ([v], v[None]):
        with steerlab.ablate(model, same):
            assert torch.equal(_logits(model), old)
    a = steerlab.orthogonalize(model, v)
    b = steerlab.orthogonalize(model, [v])
    c = steerlab.orthogonalize(model, v[None])
    for other in (b, c):
        for (name, p), q in zip(a.named_parameters(), other.parameters(), strict=True):
            assert torch.equal(p, q), name
    edit = a.config.steerlab_edit
    assert edit["k"] == 1 and edit == b.config.steerlab_edit
    # The one-direction spec is unchanged (refusal caches are keyed on it).
    assert set(Ablate(v).spec()) == {"kind", "layer", "vector"}
    assert set(Orthogonalize(v).spec()) == {"kind", "layer", "vector"}


# ------------------------------------------------------------------------------ the span


@pytest.mark.parametrize("arch", NON_SANDWICH)
def test_orthogonalized_span_equals_runtime_ablation_of_the_span(arch: str) -> None:
    model = make_model(arch)
    v = _vecs(3)
    snap = snapshot(model)
    with steerlab.ablate(model, v):
        ablated = _logits(model)
    edited = steerlab.orthogonalize(model, v)
    assert_identical(model, snap)
    assert (_logits(edited) - ablated).abs().max() < 1e-5
    assert not torch.allclose(ablated, _logits(model), atol=1e-3)
    edit = edited.config.steerlab_edit
    assert edit["k"] == 3 and "equivalent" in edit["equivalence"]
    # The span differs from any one of its directions.
    with steerlab.ablate(model, v[0]):
        assert not torch.allclose(_logits(model), ablated, atol=1e-4)


def test_ablating_two_directions_removes_both_at_every_layer(tiny: torch.nn.Module) -> None:
    v = _vecs(2, seed=7)
    units = v / v.norm(dim=-1, keepdim=True)
    with steerlab.ablate(tiny, v):
        ins = _residuals(tiny)
    for i, h in enumerate(ins):
        assert (h @ units.T).abs().max() < 1e-4, f"residual {i} still carries a direction"
    assert all_hooks(tiny) == 0


def test_direction_rows_and_lists_name_the_same_span() -> None:
    lm = _lm()
    v = _vecs(2)
    d = Direction(v, (1, 3), {})
    with steerlab.ablate(lm.model, v):
        ref = _logits(lm.model)
    for treat in (
        Ablate(d, layer=[1, 3]),
        Ablate([Direction(v[:1], (1,), {}), v[1]]),
        Ablate(list(v)),
    ):
        with treat.applied(lm):
            assert torch.equal(_logits(lm.model), ref)
    spec = Ablate(d, layer=[1, 3]).spec()
    json.dumps(spec)
    assert spec["k"] == 2 and spec["layer"] == [1, 3] and len(spec["vectors"]) == 2
    assert spec["basis"]["sha256"] == Ablate(v).spec()["basis"]["sha256"]


def test_sandwich_norm_span_is_removed_exactly() -> None:
    model = make_model("gemma3_text")
    with torch.no_grad():  # non-trivial gains so g * q differs from q
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.normal_(0, 0.5)
    v = _vecs(2, seed=11)
    units = as_basis(model, v).float()
    edited = steerlab.orthogonalize(model, v)
    for h in _residuals(edited):
        assert (h @ units.T).abs().max() < 1e-4
    edit = edited.config.steerlab_edit
    assert edit["k"] == 2 and "not identical" in edit["equivalence"]


def test_zero_and_dependent_directions_are_refused() -> None:
    model = make_model("llama")
    v = _vecs(2)
    with pytest.raises(VectorError, match="zero"), steerlab.ablate(model, [v[0], torch.zeros(32)]):
        pass
    dep = torch.stack([v[0], v[1], 2 * v[0] - 0.5 * v[1]])
    with pytest.raises(VectorError, match=r"directions 0\.\.1"), steerlab.ablate(model, dep):
        pass
    with pytest.raises(VectorError, match="span"):
        steerlab.orthogonalize(model, [v[0], 3 * v[0]])
    with pytest.raises(VectorError, match="span"):
        Ablate([v[0], -v[0]])  # refused when built
    with pytest.raises(VectorError, match="span"):
        Orthogonalize(torch.stack([v[0], v[0]]))
    with pytest.raises(VectorError, match="2 directions but 1 layers"):
        Ablate([v[0], v[1]], layer=[1])
    with pytest.raises(VectorError, match="width"), steerlab.ablate(model, torch.ones(2, 7)):
        pass
    # The refusal pipeline's tolerant form: dependent rows are left out and listed.
    q, dropped = orthonormal_rows(dep, drop=True)
    assert q.shape == (2, 32) and dropped == [2]
    assert all_hooks(model) == 0


def test_model_is_bit_identical_after_every_context_exits(tmp_path: Path) -> None:
    lm = _lm("gemma")  # tied embeddings: untied and re-tied by Orthogonalize
    snap = snapshot(lm.model)
    tie = lm.model.config.tie_word_embeddings
    v = _vecs(3)
    treatments = [
        Ablate(v),
        Orthogonalize(v, spill_dir=tmp_path),
        steer_many([(v[0], 1, 2.0), (v[1], 2, -1.0)]),
        Compose((Orthogonalize(v[:2], spill_dir=tmp_path), Ablate(v[2]))),
    ]
    for t in treatments:
        with t.applied(lm):
            pass
        with pytest.raises(RuntimeError, match="boom"), t.applied(lm):
            raise RuntimeError("boom")
        assert_identical(lm.model, snap)
        assert all_hooks(lm.model) == 0
        assert not hasattr(lm.model.config, "steerlab_edit")
        assert lm.model.config.tie_word_embeddings == tie
        assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight


def test_span_is_described_and_repeated_as_one_span_ablation() -> None:
    v = _vecs(2)
    (op,) = Orthogonalize(v).ops()
    assert op["kind"] == "orthogonalize" and op["vectors"].shape == (2, 32)
    (plan,) = plan_for([op])  # vLLM's workers repeat the weights as the ablation they equal
    assert plan["kind"] == "ablate" and plan["writes"] and plan["layers"] == "all"
    # The executors remove the span of the orthonormalized rows: h - Q^T (Q h).
    q = op_basis(plan, 32)
    assert q.shape == (2, 32)
    torch.testing.assert_close(q @ q.T, torch.eye(2, dtype=q.dtype), rtol=0, atol=1e-12)
    h = torch.randn(5, 32, generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(project_out(h, q), h - (h @ q.T) @ q, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ steering terms


def test_steer_terms_compose_like_nested_contexts_and_sum_at_one_layer() -> None:
    lm = _lm()
    v = _vecs(2)
    with steerlab.steer(lm.model, v[0], layers=1, coeff=2.0):  # noqa: SIM117
        with steerlab.steer(lm.model, v[1], layers=3, coeff=-1.5):
            nested = _logits(lm.model)
    with steer_many([(v[0], 1, 2.0), (v[1], 3, -1.5)]).applied(lm):
        assert torch.equal(_logits(lm.model), nested)
    assert [op["kind"] for op in steer_many([(v[0], 1, 2.0), (v[1], 3, -1.5)]).ops()] == [
        "add",
        "add",
    ]
    with steerlab.steer(lm.model, 2.0 * v[0] - 1.5 * v[1], layers=2):
        summed = _logits(lm.model)
    with apply(lm, steer_many([(v[0], 2, 2.0), Steer(v[1], layers=2, coeff=-1.5)])):
        torch.testing.assert_close(_logits(lm.model), summed, rtol=0, atol=1e-5)
    with steer_many([(v[0], [1, 2])]).applied(lm):  # coeff defaults to 1
        with_default = _logits(lm.model)
    with steerlab.steer(lm.model, v[0], layers=[1, 2]):
        assert torch.equal(_logits(lm.model), with_default)
    spec = steer_many([(v[0], 1, 2.0), (v[1], 3, -1.5)]).spec()
    assert spec["kind"] == "compose" and [i["coeff"] for i in spec["items"]] == [2.0, -1.5]
    with pytest.raises(VectorError, match="term 1"):
        steer_many([(v[0], 1, 2.0), (v[1], 3, float("nan"))])
    with pytest.raises(VectorError, match="at least one"):
        steer_many([])
    with pytest.raises(VectorError, match="term 0"):
        steer_many([v[0]])  # type: ignore[list-item]


# ------------------------------------------------------------------------------ CLI


def test_generate_with_several_vectors_and_ablations(tiny_dir: Path, tmp_path: Path) -> None:
    v = _vecs(2, seed=9) * 8
    a = Direction(v[:1], (1,), {}).save(tmp_path / "a.safetensors")
    b = Direction(v[1:], (2,), {}).save(tmp_path / "b.safetensors")
    base = ["generate", "--model", tiny_dir, "--prompt", "what a day", "--json", "-q"]
    base += ["--max-new-tokens", "3"]

    def run(*args: object) -> list[dict]:
        r = CliRunner().invoke(app, [str(x) for x in [*base, *args]])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    two = run("--vector", a, "--layer", "1", "--coeff", "4", "--vector", b, "--layer", "2")
    one = run("--vector", a, "--layer", "1", "--coeff", "4")  # the single form still works
    assert two[0]["steered"] and one[0]["steered"]
    assert run("--ablate", a, "--ablate", b)[0]["steered"]
    r = CliRunner().invoke(
        app, [str(x) for x in [*base, "--vector", a, "--vector", b, "--coeff", "1", "--coeff", "2",
                               "--coeff", "3"]]
    )  # fmt: skip
    assert r.exit_code == 2 and "3 --coeff values for 2 --vector" in r.output
    r = CliRunner().invoke(app, [str(x) for x in [*base, "--ablate", a, "--ablate", a]])
    assert r.exit_code == 2 and "span" in r.output


# ------------------------------------------------------------------------------ refusal


def _cand(layer: int, bypass: float, kl: float = 0.0, induce: float = 1.0) -> dict:
    return {
        "layer": layer,
        "position": -1,
        "bypass_score": bypass,
        "induce_score": induce,
        "kl_score": kl,
        "status": "kept",
    }


def test_select_many_ranks_as_select_does(tiny_dir: Path) -> None:
    cfg = RefusalConfig(**{**TINY_REFUSAL, "keep": 4})  # type: ignore[arg-type]
    cands = [_cand(0, 0.5), _cand(1, -2.0), _cand(2, -3.0, kl=9.0), _cand(3, -1.0)]
    chosen, notes = select_many(cands, cfg, 2)
    assert [c["layer"] for c in chosen] == [1, 3]  # layer 2 fails KL
    assert [c["status"] for c in chosen] == ["selected", "selected_span"]
    assert notes == []
    cands = [_cand(0, 0.5), _cand(1, -2.0, kl=9.0)]
    chosen, notes = select_many(cands, cfg, 3)
    assert [c["layer"] for c in chosen] == [0] and "only 1" in notes[0]
    with pytest.raises(ConfigError, match="at most keep"):
        RefusalConfig(**{**TINY_REFUSAL, "directions": 3})  # type: ignore[arg-type]
    r = CliRunner().invoke(app, ["refusal", "--model", str(tiny_dir), "--directions", "9"])
    assert r.exit_code == 2 and "--directions" in r.output and "Traceback" not in r.output


def test_refusal_with_two_directions(tmp_path: Path) -> None:
    lm = _lm()
    snap = snapshot(lm.model)
    cfg = RefusalConfig(**{**TINY_REFUSAL, "directions": 2})  # type: ignore[arg-type]
    rep = run_refusal(lm, cfg, tmp_path / "run", export_dir=tmp_path / "export").to_dict()
    span = rep["directions"]
    assert span["requested"] == 2 and span["k"] == 2
    cands = [(c["layer"], c["position"]) for c in span["candidates"]]
    assert len(set(cands)) == 2
    assert cands[0] == (rep["selected"]["layer"], rep["selected"]["position"])
    assert any(c["status"] == "selected_span" for c in rep["candidates"])
    ab = rep["variants"]["ablation"]["intervention"]["harmful"]
    assert ab["k"] == 2 and ab["basis"]["sha256"] == span["basis_sha256"]
    assert rep["variants"]["orthogonalized"]["intervention"]["harmful"]["k"] == 2
    assert rep["variants"]["random"]["intervention"]["harmful"]["k"] == 2
    assert "k" not in rep["variants"]["addition"]["intervention"]["harmless"]
    assert any("2 direction(s) ablated together" in n for n in rep["notes"])
    # The exported checkpoint was checked against runtime ablation of the span.
    assert rep["export"]["max_logit_diff_vs_ablation"] < 1e-4
    exported = json.loads((tmp_path / "export" / "steerlab_export.json").read_text())
    assert exported["directions"] == 2 and len(exported["span"]) == 2
    d = Direction.load(tmp_path / "run" / "direction.safetensors", model_info=lm.info)
    assert len(d.meta["span"]) == 2
    assert_identical(lm.model, snap)
