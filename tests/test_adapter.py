"""Adapter resolution and the layer convention, on a tiny model of each architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_model, make_tokenizer

from steerlab.capture import forward_kwargs, read_activations
from steerlab.errors import SteerlabError
from steerlab.models.adapter import ARCH_TABLE, ModelAdapter, blocks_of, get_adapter
from steerlab.models.chat import encode


def test_table_covers_required_types() -> None:
    for mt in ["llama", "qwen2", "gemma3_text", "mistral", "gpt2", "gpt_neox", "phi3"]:
        assert mt in ARCH_TABLE


def test_table_adapter_resolves(tiny: torch.nn.Module, arch: str) -> None:
    ad = get_adapter(tiny)
    assert ad.source == "table"
    assert len(blocks_of(tiny, ad)) == 4
    assert ad.sandwich == (arch == "gemma3_text")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "phi3", "gpt2", "gpt_neox"])
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


def test_all_archs_listed() -> None:
    assert set(ARCHS) <= set(ARCH_TABLE)
