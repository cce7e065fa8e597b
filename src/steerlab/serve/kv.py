"""Row surgery on a Hugging Face KV cache, for a batch that rows join and leave.

Rows are left-padded: every row's tokens end at the last column, pads (masked out by the
attention mask) sit on the left. Joining pads the shorter of two caches on the left and stacks
the rows; leaving keeps the other rows and drops the columns that are padding for every row
left, so a long row that finished does not keep costing attention.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["join", "keep", "mergeable", "restore", "snapshot"]


def _layers(cache: Any) -> list[Any]:
    return list(getattr(cache, "layers", None) or [])


def mergeable(cache: Any) -> bool:
    """Whether rows can be stacked into ``cache`` (full-attention key/value layers only; a
    sliding-window or recurrent cache waits for its batch to finish instead)."""
    layers = _layers(cache)
    return bool(layers) and all(
        isinstance(getattr(x, "keys", None), torch.Tensor) and not getattr(x, "is_sliding", False)
        for x in layers
    )


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, n + T, D) with zeros in front."""
    if n == 0:
        return t
    z = t.new_zeros((*t.shape[:-2], n, t.shape[-1]))
    return torch.cat([z, t], dim=-2)


def join(
    cache: Any, mask: torch.Tensor, new_cache: Any, new_mask: torch.Tensor
) -> tuple[Any, torch.Tensor]:
    """``new_cache``'s rows stacked after ``cache``'s (both changed in place; ``cache``
    returned) and the matching (B, T) attention mask."""
    t, u = mask.shape[1], new_mask.shape[1]
    for a, b in zip(_layers(cache), _layers(new_cache), strict=True):
        a.keys = torch.cat([_pad_left(a.keys, max(0, u - t)), _pad_left(b.keys, max(0, t - u))])
        a.values = torch.cat(
            [_pad_left(a.values, max(0, u - t)), _pad_left(b.values, max(0, t - u))]
        )
    width = max(t, u)
    pad = [torch.cat([m.new_zeros(m.shape[0], width - m.shape[1]), m], 1) for m in (mask, new_mask)]
    return cache, torch.cat(pad)


def keep(cache: Any, mask: torch.Tensor, rows: list[int]) -> tuple[Any, torch.Tensor]:
    """Only ``rows`` of the cache and mask, without the columns that are padding in all."""
    idx = torch.tensor(rows, dtype=torch.long)
    mask = mask[idx.to(mask.device)]
    if not mergeable(cache):  # e.g. sliding-window layers hold only their last W columns
        cache.batch_select_indices(idx)
        return cache, mask
    used = mask.any(0).nonzero()
    drop = int(used[0]) if len(used) else 0
    for x in _layers(cache):
        x.keys = x.keys[idx.to(x.keys.device)][..., drop:, :]
        x.values = x.values[idx.to(x.values.device)][..., drop:, :]
    return cache, mask[:, drop:]


def snapshot(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The cache's tensors as they are, to undo a forward that failed half-way (a dynamic
    layer's update concatenates into new tensors: the old ones stay as they were). None for a
    cache that is updated in place."""
    if not mergeable(cache):
        return None
    return [(x.keys, x.values) for x in _layers(cache)]


def restore(cache: Any, saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back what :func:`snapshot` saw (after a failed forward, or a trial on some rows)."""
    for x, (k, v) in zip(_layers(cache), saved, strict=True):
        x.keys, x.values = k, v
