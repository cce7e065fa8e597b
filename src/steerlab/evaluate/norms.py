"""The scale steering strengths are measured in: the typical residual-stream norm at a layer,
and the random unit directions of the norm-matched control."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..hooks import scoped_hooks
from ..models.adapter import blocks_of
from ..models.chat import encode
from ..models.load import LoadedModel

__all__ = ["random_units", "residual_norms"]


@torch.no_grad()
def residual_norms(
    lm: LoadedModel, prompts: Sequence[str], layers: Sequence[int], *, chat: bool | None = None
) -> dict[int, float]:
    """Median L2 norm of ``resid_pre[layer]`` over the prompts' real tokens.

    The first token of each prompt is left out: attention-sink tokens carry norms tens of times
    larger than the rest, and would make every coefficient mean far more than it says.
    """
    blocks = blocks_of(lm.model, lm.adapter)
    batch = encode(lm.tokenizer, list(prompts), chat=chat).to(lm.device)
    keep = batch.attention_mask.bool().clone()
    first = keep.float().argmax(-1)
    keep[torch.arange(keep.shape[0]), first] = False
    found: dict[int, torch.Tensor] = {}

    def make(layer: int) -> Any:
        def fn(h: torch.Tensor) -> None:
            found[layer] = h.float().norm(dim=-1)[keep].cpu()

        return fn

    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with scoped_hooks() as hs:
        for lay in layers:
            hs.pre(blocks[lay], make(lay))
        lm.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=pos,
            use_cache=False,
        )
    return {lay: float(found[lay].median()) for lay in layers}


def random_units(width: int, layers: Sequence[int], seed: int) -> dict[int, torch.Tensor]:
    """One fixed random unit vector per layer (the norm-matched control's direction)."""
    out = {}
    for lay in layers:
        g = torch.Generator().manual_seed(seed * 100_003 + lay)
        v = torch.randn(width, generator=g, dtype=torch.float64)
        out[lay] = (v / v.norm()).float()
    return out
