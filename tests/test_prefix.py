"""Shared-prefix caching computes exactly what the plain batched forward computes."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

import steerlab
from steerlab.generation import generate, last_token_logprobs
from steerlab.prefix import prefix_batch

SHARED = "tell me about your day the time you had a great day with him and"
PROMPTS = [f"{SHARED} what a joyful day", f"{SHARED} it was awful", f"{SHARED} life is great so"]


def test_prefix_batch_layout() -> None:
    pb = prefix_batch(make_tokenizer(), PROMPTS, chat=True)
    assert pb.prefix_len >= 14
    assert (pb.attention_mask[:, : pb.prefix_len] == 1).all()
    # Positions continue across the masked padding: each row's last position = its length - 1.
    lengths = pb.attention_mask.sum(1)
    assert torch.equal(pb.position_ids[:, -1], lengths - 1)


@pytest.mark.parametrize(
    "arch", ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gpt_neox"]
)
def test_cached_scores_and_generations_match(arch: str) -> None:
    model, tok = make_model(arch), make_tokenizer()
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    for ctx in (lambda: steerlab.ablate(model, v), lambda: steerlab.steer(model, v, layers=1)):
        with ctx():
            plain = last_token_logprobs(model, tok, PROMPTS, prefix=False)
            cached = last_token_logprobs(model, tok, PROMPTS, prefix=True)
            torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-4)
            g_plain, lp_plain = generate(model, tok, PROMPTS, max_new_tokens=5, first_logprobs=True)
            g_cached, lp_cached = generate(
                model, tok, PROMPTS, max_new_tokens=5, first_logprobs=True, prefix_cache=True
            )
            assert g_cached == g_plain
            torch.testing.assert_close(lp_cached, lp_plain, rtol=1e-4, atol=1e-4)
