"""The scale steering strengths are measured in: the typical residual-stream norm at a layer,
and the random unit directions of the norm-matched control."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from ..capture import forward_kwargs
from ..hooks import StopForward, scoped_hooks
from ..models.adapter import blocks_of
from ..models.chat import encode
from ..models.load import LoadedModel

__all__ = ["random_units", "residual_norms"]


@torch.no_grad()
def residual_norms(
    lm: LoadedModel,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    chat: bool | None = None,
    batch_size: int = 64,
) -> dict[int, float]:
    """Median L2 norm of ``resid_pre[layer]`` over the prompts' real tokens, first token left out.

    The first token is the attention sink: its norm is tens of times the others' (~93x the
    median at layer 22 of smollm2-135m), and counting it would make every strength scaled
    by this norm mean more than it says. The sweep, compare, the probe's steer check and MELBO's
    radius all use this one rule. The forward stops after the deepest layer asked for.

    Returns:
        layer -> median norm (float).
    """
    blocks = blocks_of(lm.model, lm.adapter)
    deepest = max(layers)
    found: dict[int, list[torch.Tensor]] = {lay: [] for lay in layers}
    for i in range(0, len(prompts), batch_size):
        batch = encode(lm.tokenizer, list(prompts[i : i + batch_size]), chat=chat).to(lm.device)
        keep = batch.attention_mask.bool().clone()  # (B, T) real tokens
        first = keep.float().argmax(-1)  # left padding: the first real token of each row
        keep[torch.arange(keep.shape[0]), first] = False

        def make(layer: int, keep: torch.Tensor = keep) -> Any:
            def fn(h: torch.Tensor) -> None:
                found[layer].append(h.float().norm(dim=-1)[keep].cpu())
                if layer == deepest:
                    raise StopForward

            return fn

        with scoped_hooks() as hs, contextlib.suppress(StopForward):
            for lay in layers:
                hs.pre(blocks[lay], make(lay))
            lm.model(**forward_kwargs(batch))
    return {lay: float(torch.cat(found[lay]).median()) for lay in layers}


def random_units(width: int, layers: Sequence[int], seed: int) -> dict[int, torch.Tensor]:
    """One fixed random unit vector per layer (the norm-matched control's direction)."""
    out = {}
    for lay in layers:
        g = torch.Generator().manual_seed(seed * 100_003 + lay)
        v = torch.randn(width, generator=g, dtype=torch.float64)
        out[lay] = (v / v.norm()).float()
    return out
