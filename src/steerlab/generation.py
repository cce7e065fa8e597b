"""Batched generation (left-padded, greedy by default, seedable) and next-token scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .capture import forward_kwargs
from .models.chat import encode, eos_ids, pad_id
from .models.compat import cache_kwarg
from .prefix import MIN_PREFIX, prefix_batch, prefix_last_logits
from .prefix import prefix_cache as cached_prefix

__all__ = ["generate", "last_token_logprobs"]


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    chat: bool | None = None,
    system: str | None = None,
    progress: Callable[[int], None] | None = None,
    first_logprobs: bool = False,
    prefix_cache: bool = False,
) -> list[str] | tuple[list[str], torch.Tensor]:
    """Generate a completion for each prompt (chat template applied when present).

    Decodes on ``model`` itself (another engine: :mod:`steerlab.engines`). Interventions
    apply by wrapping the call: ``with steer(model, v, layers=8): generate(...)``.

    Args:
        temperature: 0 means greedy decoding.
        seed: seeds torch before each batch so sampled runs repeat.
        progress: called with the number of prompts finished after each batch.
        first_logprobs: also return the (N, V) log-probabilities of the first new token (the
            prompt's next-token distribution, before any sampling processors), for free.
        prefix_cache: compute the tokens every prompt of a batch shares (the chat template's
            system part) once per batch. Same results; do not combine with steering restricted
            to ``generated`` positions.

    Returns:
        The decoded new text for each prompt, special tokens removed (and the log-probs).
    """
    device = next(model.parameters()).device
    cfg = _generation_config(model, tokenizer, max_new_tokens, temperature, top_p, first_logprobs)
    outs: list[str] = []
    firsts: list[torch.Tensor] = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        inputs = _batch_inputs(model, tokenizer, chunk, chat, system, prefix_cache, device)
        if seed is not None:
            torch.manual_seed(seed + i)
        res = model.generate(**inputs, generation_config=cfg)
        ids = res.sequences if first_logprobs else res
        if first_logprobs:
            firsts.append(torch.log_softmax(res.logits[0].float(), -1).cpu())
        new = ids[:, inputs["input_ids"].shape[1] :]
        outs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        if progress:
            progress(len(chunk))
    if first_logprobs:
        return outs, torch.cat(firsts)
    return outs


def _generation_config(
    model: nn.Module,
    tokenizer: Any,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    first_logprobs: bool,
) -> Any:
    """Greedy (temperature 0) or sampled decoding, stopping at every end-of-turn token."""
    from transformers import GenerationConfig

    sample = temperature > 0
    eos = eos_ids(model, tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,
        pad_token_id=pad_id(tokenizer),
        eos_token_id=eos[0] if len(eos) == 1 else (eos or None),
        output_logits=first_logprobs,
        return_dict_in_generate=first_logprobs,
    )


def _batch_inputs(
    model: nn.Module,
    tokenizer: Any,
    chunk: list[str],
    chat: bool | None,
    system: str | None,
    prefix_cache: bool,
    device: torch.device,
) -> dict[str, Any]:
    """``model.generate`` inputs for one batch; with ``prefix_cache``, the suffixes and the
    KV cache of their shared prefix when it is long enough to pay off."""
    batch = encode(tokenizer, chunk, chat=chat, system=system).to(device)
    inputs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
    }
    pb = prefix_batch(tokenizer, chunk, chat=chat) if prefix_cache and system is None else None
    if pb is not None and pb.prefix_len >= MIN_PREFIX and len(chunk) > 1:
        inputs = {
            "input_ids": pb.input_ids.to(device),
            "attention_mask": pb.attention_mask.to(device),
            cache_kwarg(model): cached_prefix(model, pb),
        }
    return inputs


@torch.no_grad()
def last_token_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    chat: bool | None = None,
    progress: Callable[[int], None] | None = None,
    prefix: bool = True,
) -> torch.Tensor:
    """(N, V) float32 log-probabilities of the first reply token (interventions apply).

    With ``prefix`` the tokens shared by every prompt of a batch (the chat template's system
    part) are computed once per batch (see :mod:`steerlab.prefix`); results are the same.
    """
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        pb = prefix_batch(tokenizer, chunk, chat=chat) if prefix and len(chunk) > 1 else None
        if pb is not None and pb.prefix_len >= MIN_PREFIX:
            logits = prefix_last_logits(model, pb)
        else:
            batch = encode(tokenizer, chunk, chat=chat).to(device)
            kw = forward_kwargs(batch)
            try:
                logits = model(**kw, logits_to_keep=1).logits[:, -1]
            except TypeError:  # models without logits_to_keep
                logits = model(**kw).logits[:, -1]
        out.append(torch.log_softmax(logits.float(), -1).cpu())
        if progress:
            progress(len(chunk))
    return torch.cat(out)
