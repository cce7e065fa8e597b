"""Per-row interventions: every row of one batch gets its own treatment.

A sweep evaluates many (layer, coefficient, vector, positions) settings on the same prompts.
Running each setting as its own batch repeats the whole model per setting; :class:`PerRow`
instead gives row ``i`` of a batch its own additions and ablations, so a grid of C settings x P
prompts runs as batches of C x P rows. Each hooked layer holds one (rows, D) tensor of deltas
(zero where a row adds nothing there) and one of unit directions to project out (zero where it
ablates nothing), gated per row by phase: ``prompt`` rows are treated only on the prompt's
forward, ``generated`` rows only on decode steps, ``all`` rows on both.

A row with no edit at a layer is left bit-identical there (``h + 0 * d`` and ``h - 0`` are
exact), and a row whose edit is active gets exactly ``h + d``: the same numbers as
:func:`~steerlab.steer` with that row's vector alone (tested to 1e-4 in float32 logits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..errors import LayerError, VectorError
from ..hooks import placed, scoped_hooks
from ..models.adapter import blocks_of
from ..models.compat import is_decode_step
from ..models.load import LoadedModel
from .base import vector_spec
from .record import recorded

__all__ = ["PerRow", "RowPositions", "RowSetting"]

RowPositions = Literal["all", "prompt", "generated"]
_PHASES: dict[str, tuple[str, ...]] = {
    "prefill": ("all", "prompt"),
    "decode": ("all", "generated"),
}


@dataclass(frozen=True, eq=False)
class RowSetting:
    """One row's treatment.

    Attributes:
        add: layer -> (D,) vector added to ``resid_pre[layer]`` (already scaled).
        ablate: layer -> (D,) direction projected out of ``resid_pre[layer]`` (normalized here).
        positions: ``all`` tokens, only the ``prompt``'s forward, or only ``generated`` tokens.
        label: a name for reports.
    """

    add: Mapping[int, torch.Tensor] = field(default_factory=dict)
    ablate: Mapping[int, torch.Tensor] = field(default_factory=dict)
    positions: RowPositions = "all"
    label: str = ""

    @property
    def touches_prompt(self) -> bool:
        """Whether the prompt's own forward differs from the unsteered model's."""
        return bool(self.add or self.ablate) and self.positions != "generated"

    def spec(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "positions": self.positions,
            "add": {str(k): vector_spec(v) for k, v in self.add.items()},
            "ablate": {str(k): vector_spec(v) for k, v in self.ablate.items()},
        }


def _rows_tensor(
    vectors: Sequence[torch.Tensor | None], width: int, unit: bool
) -> torch.Tensor | None:
    if all(v is None for v in vectors):
        return None
    out = torch.zeros(len(vectors), width, dtype=torch.float32)
    for i, v in enumerate(vectors):
        if v is None:
            continue
        v = v.detach().float().cpu().reshape(-1)
        if v.shape[0] != width:
            raise VectorError(f"row vector width {v.shape[0]} does not match the model's {width}")
        if not torch.isfinite(v).all():
            raise VectorError("a row vector holds NaN or inf values")
        if unit:
            n = v.norm()
            if n == 0:
                raise VectorError("cannot ablate along a zero vector")
            v = v / n
        out[i] = v
    return out


class PerRow:
    """Row ``i`` of every batch gets ``settings[i]`` (an :class:`Intervention`).

    The batch must have exactly ``len(settings)`` rows whenever a row is active; a forward in
    which no row is active (e.g. a shared unsteered prompt forward for ``generated`` rows) is
    left alone whatever its size.
    """

    name = "per_row"

    def __init__(self, settings: Sequence[RowSetting]) -> None:
        if not settings:
            raise VectorError("no row settings")
        self.settings = tuple(settings)

    def spec(self) -> dict[str, Any]:
        return {"kind": "per_row", "rows": [s.spec() for s in self.settings]}

    def masks(self) -> dict[str, torch.Tensor]:
        """phase -> (rows,) float mask of the rows treated in that phase (a row without edits
        is never treated, so the unsteered rows of a shared prompt forward do not count)."""
        return {
            ph: torch.tensor(
                [float(s.positions in ok and bool(s.add or s.ablate)) for s in self.settings]
            )
            for ph, ok in _PHASES.items()
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with per_row(lm.model, self.settings, adapter=lm.adapter):
            yield lm


@contextmanager
def per_row(model: nn.Module, settings: Sequence[RowSetting], *, adapter: Any) -> Iterator[None]:
    """The hooks behind :class:`PerRow` on a bare model."""
    blocks = blocks_of(model, adapter)
    width = int(model.get_input_embeddings().weight.shape[1])
    layers = sorted({k for s in settings for k in (*s.add, *s.ablate)})
    bad = [k for k in layers if not 0 <= k < len(blocks)]
    if bad:
        raise LayerError(f"layer(s) {bad} out of range: the model has {len(blocks)} blocks")
    masks = PerRow(settings).masks()
    state = {"phase": "prefill"}
    n = len(settings)

    def make(
        block: nn.Module, add: torch.Tensor | None, unit: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor | None]:
        d = None if add is None else placed(add, block)
        u = None if unit is None else placed(unit, block)
        gates = {ph: placed(m, block) for ph, m in masks.items()}

        def fn(h: torch.Tensor) -> torch.Tensor | None:
            g = gates[state["phase"]]
            if not bool(g.any()):
                return None
            if h.shape[0] != n:
                raise VectorError(f"{n} row settings for a batch of {h.shape[0]} rows")
            g3 = g.to(h.dtype)[:, None, None]
            if u is not None:
                uu = u.to(h.dtype)[:, None, :]
                h = h - g3 * (h * uu).sum(-1, keepdim=True) * uu
            if d is not None:
                h = h + g3 * d.to(h.dtype)[:, None, :]
            return h

        return fn

    with scoped_hooks() as hs, recorded(model, {"kind": "per_row"}):

        def phase(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            state["phase"] = "decode" if is_decode_step(args, kwargs) else "prefill"

        hs.raw_pre(model, phase)
        for lay in layers:
            add = _rows_tensor([s.add.get(lay) for s in settings], width, unit=False)
            unit = _rows_tensor([s.ablate.get(lay) for s in settings], width, unit=True)
            hs.pre(blocks[lay], make(blocks[lay], add, unit))
        yield
