"""Adapter resolution and the layer convention, on a tiny model of each architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, NON_SANDWICH, SANDWICH, make_model, make_tokenizer

from steerlab.capture import forward_kwargs, read_activations
from steerlab.errors import SteerlabError
from steerlab.hooks import untuple
from steerlab.models.adapter import (
    ARCH_TABLE,
    ModelAdapter,
    _guess,
    _validate,
    blocks_of,
    get_adapter,
)
from steerlab.models.chat import encode


@pytest.mark.parametrize("model_type", sorted(ARCH_TABLE))
def test_every_table_row_fits_a_model_of_its_type(model_type: str) -> None:
    """Each row of the table names modules that exist in a real model of that type: the block
    stack, the embeddings, the final norm and the per-block write/projection modules; writes
    are the projections themselves except for sandwich norms, whose writes are norms."""
    if model_type not in ARCHS:
        pytest.fail(f"ARCH_TABLE row {model_type!r} has no tiny fixture in conftest.ARCHS")
    model = make_model(model_type)
    row = ARCH_TABLE[model_type]
    assert _validate(model, row) is row
    ad = get_adapter(model)
    assert ad == row and ad.source == "table"
    blocks = blocks_of(model, ad)
    assert len(blocks) == 4  # every fixture has 4 layers
    # The first embedding module is the one HF uses for input ids.
    assert model.get_submodule(row.embeddings[0]) is model.get_input_embeddings()
    for rel in (row.attn_proj, row.mlp_proj):
        proj = blocks[0].get_submodule(rel)
        d_out = proj.weight.shape[1] if type(proj).__name__ == "Conv1D" else proj.weight.shape[0]
        assert d_out == model.get_input_embeddings().weight.shape[1]  # writes to the residual
    # What the block adds to the residual is exactly what attn_write and mlp_write output.
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        blocks[1].register_forward_pre_hook(
            lambda m, a, kw: seen.__setitem__("in", a[0] if a else kw["hidden_states"]),
            with_kwargs=True,
        ),
        blocks[1].register_forward_hook(lambda m, a, o: seen.__setitem__("out", untuple(o))),
        blocks[1]
        .get_submodule(row.attn_write)
        .register_forward_hook(lambda m, a, o: seen.__setitem__("attn", untuple(o))),
        blocks[1]
        .get_submodule(row.mlp_write)
        .register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", untuple(o))),
    ]
    try:
        batch = encode(make_tokenizer(), ["i am so happy today", "what a day"])
        with torch.no_grad():
            model(**forward_kwargs(batch))
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(
        seen["out"], seen["in"] + seen["attn"] + seen["mlp"], rtol=1e-5, atol=1e-5
    )
    if not row.sandwich:
        assert (row.attn_write, row.mlp_write) == (row.attn_proj, row.mlp_proj)
    # Where the structural guess applies (no sandwich norms), it finds the same modules.
    if not row.sandwich:
        guessed = _guess(model)
        for f in ("blocks", "attn_proj", "mlp_proj", "final_norm"):
            assert getattr(guessed, f) == getattr(row, f), f
        assert guessed.embeddings[0] == row.embeddings[0]


def test_table_adapter_resolves(tiny: torch.nn.Module, arch: str) -> None:
    ad = get_adapter(tiny)
    assert ad.source == "table"
    assert len(blocks_of(tiny, ad)) == 4
    assert ad.sandwich == (arch in SANDWICH)


@pytest.mark.parametrize("arch", NON_SANDWICH)
def test_structural_guess_matches_table(arch: str) -> None:
    model = make_model(arch)
    table = get_adapter(model)
    model.config.model_type = "unknown_arch"
    guessed = get_adapter(model)
    assert guessed.source == "guess"
    assert guessed.blocks == table.blocks
    assert guessed.attn_proj == table.attn_proj
    assert guessed.mlp_proj == table.mlp_proj
    assert guessed.final_norm == table.final_norm


def test_override_fields_and_errors() -> None:
    model = make_model("llama")
    ad = get_adapter(model, {"attn_write": "self_attn.o_proj", "mlp_write": "mlp.down_proj"})
    assert ad.source == "override"
    full = ModelAdapter(**{**ARCH_TABLE["llama"].to_dict(), "source": "override"})
    assert get_adapter(model, full) == full
    with pytest.raises(SteerlabError, match="unknown adapter fields"):
        get_adapter(model, {"blockz": "x"})
    with pytest.raises(SteerlabError, match="Pass an adapter override"):
        get_adapter(model, {"blocks": "model.nothing_here"})


def test_unrecognisable_model_says_how_to_override() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

    with pytest.raises(SteerlabError, match="--adapter"):
        get_adapter(Odd())


def test_layer_convention_matches_hidden_states(tiny: torch.nn.Module) -> None:
    """resid_pre[l] == hidden_states[l]; resid_post[l] == hidden_states[l+1] except the last,
    which HF reports after the final norm."""
    ad = get_adapter(tiny)
    tok = make_tokenizer()
    batch = encode(tok, ["i am so happy today", "what a day"])
    with torch.no_grad():
        hs = tiny(**forward_kwargs(batch), output_hidden_states=True).hidden_states
    n = len(blocks_of(tiny, ad))
    assert len(hs) == n + 1
    layers = list(range(n))
    pre = read_activations(tiny, ad, batch, layers, site="resid_pre", positions=("last",))
    post = read_activations(tiny, ad, batch, layers, site="resid_post", positions=("last",))
    for lay in layers:
        torch.testing.assert_close(pre[(lay, "last")], hs[lay][:, -1], rtol=0, atol=0)
    for lay in layers[:-1]:
        torch.testing.assert_close(post[(lay, "last")], hs[lay + 1][:, -1], rtol=0, atol=0)
    last = post[(n - 1, "last")]
    assert not torch.allclose(last, hs[n][:, -1])
    norm = tiny.get_submodule(ad.final_norm)
    torch.testing.assert_close(norm(last), hs[n][:, -1], rtol=1e-5, atol=1e-5)
