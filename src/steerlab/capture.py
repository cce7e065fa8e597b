"""Read residual-stream activations at chosen layers and positions, streaming.

The forward pass stops right after the deepest layer needed (a hook raises
:class:`~steerlab.hooks.StopForward`), so reading layer ``l`` of ``N`` costs about
``(l + 1) / N`` of a full pass. Only the selected position of each prompt is kept per layer;
statistics are running sums in float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .errors import DataError, LayerError
from .hooks import StopForward, scoped_hooks
from .models.adapter import ModelAdapter, blocks_of
from .models.chat import Batch, encode

__all__ = [
    "ClassStats",
    "Site",
    "capture_stats",
    "forward_kwargs",
    "read_activations",
    "resolve_layers",
    "select_positions",
]

Site = Literal["resid_pre", "resid_post"]
PositionSpec = str | int  # "last" | "instruction-end" | "mean" | negative offset from the end


def resolve_layers(spec: str | int | Sequence[int] | None, n_layers: int) -> list[int]:
    """Parse ``all`` | ``L`` | ``A:B`` (inclusive-exclusive, like Python) | a list of ints.

    Negative indices count from the end. Raises :class:`LayerError` when out of range.
    """
    if spec is None or spec == "all":
        return list(range(n_layers))
    if isinstance(spec, int):
        items: list[int] = [spec]
    elif isinstance(spec, str):
        s = spec.strip()
        try:
            if ":" in s:
                a, b = s.split(":", 1)
                lo = int(a) if a else 0
                hi = int(b) if b else n_layers
                lo, hi = (lo + n_layers if lo < 0 else lo), (hi + n_layers if hi < 0 else hi)
                if lo >= hi:
                    raise LayerError(
                        f"layer range {spec!r} is empty: the end must come after the start "
                        "(A:B takes layers A..B-1)"
                    )
                if not 0 <= lo < hi <= n_layers:
                    raise LayerError(f"layer range {spec!r} is outside 0..{n_layers}")
                return list(range(lo, hi))
            items = [int(x) for x in s.split(",")]
        except ValueError:
            raise LayerError(f"cannot parse layers {spec!r}: use all, L, A:B or L1,L2") from None
    else:
        items = [int(x) for x in spec]
    out = []
    for x in items:
        y = x + n_layers if x < 0 else x
        if not 0 <= y < n_layers:
            raise LayerError(f"layer {x} is out of range: the model has layers 0..{n_layers - 1}")
        out.append(y)
    return sorted(set(out))


def forward_kwargs(batch: Batch) -> dict[str, Any]:
    """Arguments for a left-padded forward: explicit position ids so padding does not shift them."""
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": pos,
        "use_cache": False,
    }


def select_positions(x: torch.Tensor, batch: Batch, position: PositionSpec) -> torch.Tensor:
    """(B, T, D) -> (B, D) at the chosen position."""
    if position == "last":
        return x[:, -1]
    if position == "instruction-end":
        return x[torch.arange(x.shape[0], device=x.device), batch.instruction_end.to(x.device)]
    if position == "mean":
        m = batch.attention_mask.to(x.device, x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1)
    if isinstance(position, int) and position < 0:
        return x[:, position]
    raise DataError(f"unknown position {position!r}: use last, instruction-end, mean or -k")


@torch.no_grad()
def read_activations(
    model: nn.Module,
    adapter: ModelAdapter,
    batch: Batch,
    layers: Sequence[int],
    *,
    site: Site = "resid_pre",
    positions: Sequence[PositionSpec] = ("last",),
) -> dict[tuple[int, PositionSpec], torch.Tensor]:
    """One forward, stopped after the deepest layer; returns ``{(layer, position): (B, D)}``."""
    blocks = blocks_of(model, adapter)
    deepest = max(layers)
    out: dict[tuple[int, PositionSpec], torch.Tensor] = {}
    device = next(model.parameters()).device
    batch = batch.to(device)

    def make(layer: int) -> Callable[[torch.Tensor], None]:
        def fn(h: torch.Tensor) -> None:
            for p in positions:
                out[(layer, p)] = select_positions(h, batch, p).float()
            if layer == deepest:
                raise StopForward

        return fn

    with scoped_hooks() as hs:
        for layer in layers:
            if site == "resid_pre":
                hs.pre(blocks[layer], make(layer))
            else:
                hs.post(blocks[layer], make(layer))
        with contextlib.suppress(StopForward):
            model(**forward_kwargs(batch))
    return out


@dataclass
class ClassStats:
    """Running statistics of one prompt class: sums in float64, optional kept samples."""

    layers: list[int]
    d_model: int
    count: int = 0
    sums: torch.Tensor | None = None  # (L, D) float64
    samples: list[torch.Tensor] = field(default_factory=list)  # each (B, L, D) float32

    def update(self, acts: torch.Tensor, keep: bool) -> None:
        """acts: (B, L, D)."""
        a64 = acts.to(torch.float64).cpu()
        s = a64.sum(0)
        self.sums = s if self.sums is None else self.sums + s
        self.count += acts.shape[0]
        if keep:
            self.samples.append(acts.float().cpu())

    @property
    def mean(self) -> torch.Tensor:
        assert self.sums is not None
        return self.sums / self.count

    def stacked(self) -> torch.Tensor:
        """(N, L, D) float32 samples, in input order."""
        return torch.cat(self.samples, 0)


def capture_stats(
    model: nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    site: Site = "resid_pre",
    position: PositionSpec = "last",
    batch_size: int = 16,
    keep_samples: bool = False,
    chat: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> ClassStats:
    """Stream prompts through the model and accumulate per-layer statistics at one position.

    Args:
        progress: called with the number of prompts finished after each batch.
    """
    d = model.get_input_embeddings().weight.shape[1]
    stats = ClassStats(list(layers), int(d))
    for chunk in _chunks(prompts, batch_size):
        batch = encode(tokenizer, chunk, chat=chat)
        acts = read_activations(model, adapter, batch, layers, site=site, positions=(position,))
        stats.update(torch.stack([acts[(lay, position)] for lay in layers], 1), keep_samples)
        if progress:
            progress(len(chunk))
    return stats


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
