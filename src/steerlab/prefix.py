"""Shared-prefix KV caching for batches of chat prompts.

Chat templates put the same tokens before every instruction (Qwen's default system prompt is
24 of a typical 45 tokens). Computing them once per batch instead of once per row halves the
cost of scoring and generation on a CPU. The batch is laid out as
``[prefix][left padding][suffix]``: the padding sits in the middle, masked, and position ids
skip it, so every row computes exactly what it would alone.

Hooks active while :func:`prefix_forward` runs see the prefix forward (batch 1) and then the
suffix forward, so interventions that act on all positions (ablation, addition, clamping)
apply exactly as without caching. Steering restricted to ``generated`` positions must not be
combined with it (the suffix forward already has a cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .models.chat import encode, pad_id
from .models.compat import cache_kwarg, cache_of

__all__ = [
    "MIN_PREFIX",
    "PrefixBatch",
    "prefix_batch",
    "prefix_cache",
    "prefix_last_logits",
    "prefix_rows",
    "token_rows",
]

MIN_PREFIX = 8  # below this, caching saves less than it costs


@dataclass
class PrefixBatch:
    """``input_ids``/``attention_mask`` (B, P + S) with the shared prefix first, then the
    left-padded suffixes; ``position_ids`` (B, P + S) skip the padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prefix_len: int


def token_rows(
    tokenizer: Any, prompts: Sequence[str], chat: bool | None, system: str | None = None
) -> list[list[int]]:
    """Each prompt rendered (chat template) and tokenized as :func:`encode` does, unpadded."""
    b = encode(tokenizer, list(prompts), chat=chat, system=system)
    return [row[m.bool()].tolist() for row, m in zip(b.input_ids, b.attention_mask, strict=True)]


def prefix_batch(
    tokenizer: Any, prompts: Sequence[str], *, chat: bool | None = None
) -> PrefixBatch:
    """Tokenize, find the longest shared token prefix (leaving each row >= 1 own token)."""
    return prefix_rows(token_rows(tokenizer, prompts, chat), pad_id(tokenizer))


def prefix_rows(rows: Sequence[Sequence[int]], pid: int) -> PrefixBatch:
    """:func:`prefix_batch` for rows already tokenized (e.g. prompt + continuation)."""
    p = 0
    shortest = min(len(r) for r in rows)
    while p < shortest - 1 and all(r[p] == rows[0][p] for r in rows):
        p += 1
    s = max(len(r) for r in rows) - p
    b = len(rows)
    ids = torch.full((b, p + s), pid, dtype=torch.long)
    mask = torch.zeros((b, p + s), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :p] = torch.tensor(list(r[:p]))
        ids[i, p + s - (len(r) - p) :] = torch.tensor(list(r[p:]))
        mask[i, :p] = 1
        mask[i, p + s - (len(r) - p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return PrefixBatch(ids, mask, pos, p)


@torch.no_grad()
def prefix_cache(model: nn.Module, pb: PrefixBatch) -> Any:
    """Run the shared prefix once (batch 1) and return a cache repeated for every row."""
    dev = next(model.parameters()).device
    out = model(
        input_ids=pb.input_ids[:1, : pb.prefix_len].to(dev),
        attention_mask=pb.attention_mask[:1, : pb.prefix_len].to(dev),
        position_ids=pb.position_ids[:1, : pb.prefix_len].to(dev),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = cache_of(out)
    cache.batch_repeat_interleave(pb.input_ids.shape[0])
    return cache


@torch.no_grad()
def prefix_last_logits(model: nn.Module, pb: PrefixBatch) -> torch.Tensor:
    """(B, V) next-token logits after each prompt, computing the shared prefix once."""
    dev = next(model.parameters()).device
    p = pb.prefix_len
    cache = prefix_cache(model, pb)
    out = model(
        input_ids=pb.input_ids[:, p:].to(dev),
        attention_mask=pb.attention_mask.to(dev),
        position_ids=pb.position_ids[:, p:].to(dev),
        use_cache=True,
        **{cache_kwarg(model): cache},
        logits_to_keep=1,
    )
    return out.logits[:, -1]
