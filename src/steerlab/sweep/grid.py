"""Cells of a sweep and the verdict on the chosen one.

A cell is (layer, coefficient, positions). Its steering vector is ``coeff * norm[layer] *
unit[layer]``: ``unit`` the direction at that layer normalized, ``norm`` the typical (median)
residual-stream norm there. A coefficient therefore means the same push relative to the stream
at every layer, and one grid spans all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..interventions.treatments import Steer
from .result import SweepTest, SweepVerdict

__all__ = ["Cell", "verdict"]


@dataclass(frozen=True)
class Cell:
    layer: int
    coeff: float
    positions: str

    @property
    def key(self) -> str:
        return f"L{self.layer}:c{self.coeff:g}:{self.positions}"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "coeff": self.coeff, "positions": self.positions}

    def setting(
        self, units: dict[int, torch.Tensor], norms: dict[int, float], label: str = ""
    ) -> Steer:
        delta = units[self.layer] * (self.coeff * norms[self.layer])
        return Steer(delta, layers=self.layer, positions=self.positions, name=label or self.key)  # type: ignore[arg-type]


def verdict(test: SweepTest, alpha: float = 0.05) -> SweepVerdict:
    """What the test split says of the chosen cell, from its two pre-named paired contrasts
    (steered vs unsteered, steered vs the random directions' mean, Holm-corrected) and where
    the direction falls in the null distribution of norm-matched random directions."""
    vs_u, vs_n, null = test.vs_unsteered, test.vs_null_mean, test.random
    diff, p_u, p_dir = vs_u.diff, vs_u.p_holm, null.p_direction
    up = diff > 0  # type: ignore[operator]
    beats = bool(p_u < alpha)  # type: ignore[operator]
    beyond = bool(vs_n.p_holm < alpha and p_dir < alpha)  # type: ignore[operator]
    moved = "raises" if up else "lowers"
    pct, n = null.percentile, null.n_directions
    if not beats:
        text = (
            f"steering does not move the score on the test split (paired difference "
            f"{diff:+.3f}, Holm p = {p_u:.2g}): this behaviour is not shown to "
            "be steerable here with this direction"
        )
    elif beyond:
        text = (
            f"steering {moved} the score on the test split (paired difference "
            f"{diff:+.3f}, Holm p = {p_u:.2g}), beyond {n} norm-matched "
            f"random directions at the same cell (above {pct:.0f}% of them, p = "
            f"{p_dir:.2g}): the effect is specific to the direction"
        )
    else:
        text = (
            f"steering {moved} the score on the test split (paired difference "
            f"{diff:+.3f}, Holm p = {p_u:.2g}), but not beyond {n} "
            f"norm-matched random directions at the same cell (it scores above {pct:.0f}% of "
            f"them, p = {p_dir:.2g}): a push of that size may do as much"
        )
    lo, hi = null.ci
    return SweepVerdict(
        steered_beats_unsteered=bool(beats and up),
        steered_moves_score=beats,
        beyond_random_null=bool(beyond and up),
        random_inside_unsteered=bool(lo <= test.unsteered.score <= hi),  # type: ignore[operator]
        text=text,
    )
