"""Interventions pinned by exact identities on tiny models of each architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import NON_SANDWICH, all_hooks, assert_identical, make_model, make_tokenizer, snapshot

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.directions import Direction
from steerlab.errors import LayerError, VectorError
from steerlab.generation import generate
from steerlab.models.adapter import blocks_of, get_adapter
from steerlab.models.chat import encode

PROMPTS = ["i am so happy today", "tell me about your day", "what a day"]


def _run(model: torch.nn.Module, hidden: bool = True):
    batch = encode(make_tokenizer(), PROMPTS)
    with torch.no_grad():
        return model(**forward_kwargs(batch), output_hidden_states=hidden)


def _block_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    """Inputs of every block and of the final norm, as the modules really receive them.

    HF's ``output_hidden_states`` may record a block's input before other pre-hooks replace it,
    so identities are checked with hooks registered after the intervention's own.
    """
    ad = get_adapter(model)
    mods = [*blocks_of(model, ad), model.get_submodule(ad.final_norm)]
    seen: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(
            lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).clone()),
            with_kwargs=True,
        )
        for m in mods
    ]
    try:
        _run(model, hidden=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def _dir(model: torch.nn.Module, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.get_input_embeddings().weight.shape[1], generator=g)


def test_steer_adds_exactly_at_its_layer(tiny: torch.nn.Module) -> None:
    v = _dir(tiny)
    base = _run(tiny).hidden_states
    lay, coeff = 2, 2.5
    captured: list[torch.Tensor] = []
    block = blocks_of(tiny, get_adapter(tiny))[lay]
    with steerlab.steer(tiny, v, layers=lay, coeff=coeff):
        h = block.register_forward_pre_hook(
            lambda m, a, kw: captured.append((a[0] if a else kw["hidden_states"]).clone()),
            with_kwargs=True,
        )
        steered = _run(tiny).hidden_states
        h.remove()
    # Layers before the steered one are untouched; the block's input is original + delta.
    for i in range(lay + 1):
        assert torch.equal(steered[i], base[i])
    torch.testing.assert_close(captured[0], base[lay] + coeff * v, rtol=0, atol=1e-6)
    assert not torch.allclose(steered[lay + 1], base[lay + 1])


def test_steer_resid_post_and_direction_default_layer() -> None:
    model = make_model("llama")
    v = _dir(model)
    base = _run(model).hidden_states
    d = Direction(v.unsqueeze(0), (1,), {"site": "resid_post"})
    with steerlab.steer(model, d, coeff=-1.0):
        out = _block_inputs(model)
    # resid_post[1] = output of block 1 = input of block 2.
    assert torch.equal(out[1], base[1])
    torch.testing.assert_close(out[2], base[2] - v, rtol=0, atol=1e-6)


def test_steer_generated_positions_leave_prompt_alone() -> None:
    model = make_model("llama")
    tok = make_tokenizer()
    v = _dir(model) * 50
    batch = encode(tok, PROMPTS)
    with torch.no_grad():
        ref = model(**forward_kwargs(batch)).logits
    seen: list[bool] = []
    with steerlab.steer(model, v, layers=1, positions="generated"), torch.no_grad():
        same = model(**forward_kwargs(batch)).logits
        assert torch.equal(same, ref)  # no cache: a prompt forward, not steered
        h = blocks_of(model, get_adapter(model))[3].register_forward_pre_hook(
            lambda m, a, kw: seen.append(True), with_kwargs=True
        )
        first_g = generate(model, tok, PROMPTS, max_new_tokens=1)
        gen_g = generate(model, tok, PROMPTS, max_new_tokens=4)
        h.remove()
    first_plain = generate(model, tok, PROMPTS, max_new_tokens=1)
    gen_plain = generate(model, tok, PROMPTS, max_new_tokens=4)
    with steerlab.steer(model, v, layers=1, positions="all"):
        first_all = generate(model, tok, PROMPTS, max_new_tokens=1)
    # The first generated token comes from the prompt forward: unsteered in "generated" mode.
    assert first_g == first_plain
    assert first_all != first_plain
    assert gen_g != gen_plain  # later tokens are steered
    assert len(seen) >= 2


def test_ablation_removes_direction_everywhere(tiny: torch.nn.Module) -> None:
    v = _dir(tiny)
    r = v / v.norm()
    with steerlab.ablate(tiny, v):
        ins = _block_inputs(tiny)
    for i, h in enumerate(ins):  # every block input and the final norm's input
        assert (h @ r).abs().max() < 1e-4, f"residual {i} still carries the direction"


def test_clamp_pins_projection(tiny: torch.nn.Module) -> None:
    v = _dir(tiny)
    r = v / v.norm()
    base = _run(tiny).hidden_states
    captured: list[torch.Tensor] = []
    block = blocks_of(tiny, get_adapter(tiny))[2]
    with steerlab.clamp(tiny, v, 4.0, layers=[2]):
        h = block.register_forward_pre_hook(
            lambda m, a, kw: captured.append((a[0] if a else kw["hidden_states"]).clone()),
            with_kwargs=True,
        )
        _run(tiny)
        h.remove()
    x = captured[0]
    torch.testing.assert_close(x @ r, torch.full(x.shape[:2], 4.0), rtol=0, atol=1e-5)
    orth = base[2] - (base[2] @ r).unsqueeze(-1) * r
    torch.testing.assert_close(x - (x @ r).unsqueeze(-1) * r, orth, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", NON_SANDWICH)
def test_orthogonalized_logits_equal_runtime_ablation(arch: str) -> None:
    model = make_model(arch)
    v = _dir(model)
    snap = snapshot(model)
    with steerlab.ablate(model, v):
        ablated = _run(model, hidden=False).logits
    edited = steerlab.orthogonalize(model, v)
    assert_identical(model, snap)  # the original is left alone
    ortho = _run(edited, hidden=False).logits
    assert (ortho - ablated).abs().max() < 1e-4
    assert not torch.allclose(ablated, _run(model, hidden=False).logits)
    assert all_hooks(edited) == 0


def test_sandwich_norm_orthogonalization_removes_direction_exactly() -> None:
    model = make_model("gemma3_text")
    with torch.no_grad():  # non-trivial norm gains so g * r differs from r
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.normal_(0, 0.5)
    v = _dir(model)
    r = v / v.norm()
    edited = steerlab.orthogonalize(model, v)
    for h in _block_inputs(edited):
        assert (h @ r).abs().max() < 1e-4
    assert "not identical" in edited.config.steerlab_edit["equivalence"]
    # And the naive edit (project r out of o_proj/down_proj) would not remove it:
    naive = steerlab.orthogonalize(
        model,
        v,
        adapter=get_adapter(model).__class__(
            **{**get_adapter(model).to_dict(), "sandwich": False, "norm_offset": 0.0}
        ),
    )
    assert max(float((h @ r).abs().max()) for h in _block_inputs(naive)[1:]) > 1e-2


def test_orthogonalize_unties_embeddings() -> None:
    model = make_model("gemma3_text")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    unembed = model.get_output_embeddings().weight.detach().clone()
    edited = steerlab.orthogonalize(model, _dir(model))
    assert edited.get_output_embeddings().weight is not edited.get_input_embeddings().weight
    assert torch.equal(edited.get_output_embeddings().weight, unembed)
    assert edited.config.tie_word_embeddings is False


def test_orthogonalize_inplace_and_save_roundtrip(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    model = make_model("qwen2")
    v = _dir(model)
    with steerlab.ablate(model, v):
        ablated = _run(model, hidden=False).logits
    steerlab.orthogonalize(model, v, inplace=True)
    model.save_pretrained(tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert (_run(back, hidden=False).logits - ablated).abs().max() < 1e-4


def test_bad_vectors_are_refused() -> None:
    model = make_model("llama")
    with pytest.raises(VectorError, match="width"), steerlab.steer(model, torch.ones(7), layers=1):
        pass
    with (
        pytest.raises(VectorError, match="NaN"),
        steerlab.ablate(model, torch.full((32,), float("nan"))),
    ):
        pass
    with pytest.raises(VectorError, match="zero"), steerlab.ablate(model, torch.zeros(32)):
        pass
    with pytest.raises(LayerError), steerlab.steer(model, torch.ones(32), layers=9):
        pass
    with pytest.raises(LayerError, match="say at which"), steerlab.steer(model, torch.ones(32)):
        pass
    assert all_hooks(model) == 0
