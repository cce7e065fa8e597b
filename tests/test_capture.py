"""Capture: early stop, streaming statistics equal a naive computation, positions."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from steerlab.capture import capture_stats, forward_kwargs, read_activations, resolve_layers
from steerlab.errors import LayerError
from steerlab.models.adapter import blocks_of, get_adapter
from steerlab.models.chat import encode

PROMPTS = [
    "i am so happy today",
    "what a day",
    "life is great",
    "tell me about your day",
    "i am miserable",
    "it was awful",
    "you look great",
    "the day is long",
]


def test_forward_stops_after_deepest_layer() -> None:
    model = make_model("llama")
    ad = get_adapter(model)
    calls: list[int] = []
    handles = [
        b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
        for i, b in enumerate(blocks_of(model, ad))
    ]
    batch = encode(make_tokenizer(), PROMPTS[:2])
    read_activations(model, ad, batch, [1], site="resid_pre")
    assert calls == [0]  # block 1's input is ready once block 0 ran; block 1 never runs
    calls.clear()
    read_activations(model, ad, batch, [0, 2], site="resid_post")
    assert calls == [0, 1, 2]
    for h in handles:
        h.remove()


@pytest.mark.parametrize("position", ["last", "mean", "instruction-end", -2])
def test_streaming_means_equal_naive(position: str | int) -> None:
    model = make_model("qwen2")
    tok = make_tokenizer()
    ad = get_adapter(model)
    layers = [0, 2, 3]
    stats = capture_stats(
        model, tok, ad, PROMPTS, layers, position=position, batch_size=3, keep_samples=True
    )
    rows = []
    for p in PROMPTS:  # one prompt at a time: no padding at all
        b = encode(tok, [p])
        with torch.no_grad():
            hs = model(**forward_kwargs(b), output_hidden_states=True).hidden_states
        if position == "mean":
            rows.append(torch.stack([hs[lay][0].mean(0) for lay in layers]))
        elif position == "instruction-end":
            rows.append(torch.stack([hs[lay][0, int(b.instruction_end[0])] for lay in layers]))
        else:
            idx = -1 if position == "last" else position
            rows.append(torch.stack([hs[lay][0, idx] for lay in layers]))
    naive = torch.stack(rows)  # (N, L, D)
    assert stats.count == len(PROMPTS)
    torch.testing.assert_close(stats.mean.float(), naive.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.stacked(), naive, rtol=1e-4, atol=1e-5)
    assert stats.sums is not None and stats.sums.dtype == torch.float64


def test_instruction_end_points_at_last_instruction_token() -> None:
    tok = make_tokenizer()
    b = encode(tok, ["i am so happy today", "what a day"])
    for row, end in zip(b.input_ids, b.instruction_end, strict=True):
        assert tok.convert_ids_to_tokens(int(row[end])) in ("today", "day")
        assert tok.convert_ids_to_tokens(int(row[-1])) == "<|assistant|>"


def test_left_padding_does_not_change_activations() -> None:
    model = make_model("llama")
    tok = make_tokenizer()
    ad = get_adapter(model)
    alone = read_activations(model, ad, encode(tok, ["what a day"]), [3])
    padded = read_activations(
        model, ad, encode(tok, ["what a day", PROMPTS[3] + " " + PROMPTS[0]]), [3]
    )
    torch.testing.assert_close(padded[(3, "last")][0], alone[(3, "last")][0], rtol=1e-4, atol=1e-5)


def test_resolve_layers() -> None:
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers("1:3", 4) == [1, 2]
    assert resolve_layers("-1", 4) == [3]
    assert resolve_layers("0,2", 4) == [0, 2]
    assert resolve_layers(2, 4) == [2]
    for bad in ("4", "2:9", "x", "-5"):
        with pytest.raises(LayerError):
            resolve_layers(bad, 4)
