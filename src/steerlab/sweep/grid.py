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
from ..metrics.stats import separated

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


def verdict(test: dict[str, Any]) -> dict[str, Any]:
    """Whether the steered cell beats the unsteered model by non-overlapping 95% intervals on
    the test split, and where the random control at the same cell lands."""
    s, u, r = test["steered"], test["unsteered"], test["random"]
    up = s["score"] > u["score"]
    beats = separated(s["ci"], u["ci"])
    inside = bool(u["ci"][0] <= r["score"] <= u["ci"][1])
    r_beats = separated(r["ci"], u["ci"])
    r_same_way = r_beats and (r["score"] > u["score"]) == up
    moved = "raises" if up else "lowers"
    if not beats:
        text = (
            "steering does not move the score on the test split by separated intervals: this "
            "behaviour is not shown to be steerable here with this direction"
        )
    elif inside:
        text = (
            f"steering {moved} the score on the test split (intervals separate from the "
            "unsteered model's), and the random control at the same cell stays inside the "
            "unsteered interval"
        )
    elif r_same_way:
        text = (
            f"steering {moved} the score, but a random vector of the same norm also moves it "
            "the same way with separated intervals: part of the effect may be any push of that "
            "size"
        )
    else:
        text = (
            f"steering {moved} the score (intervals separate); the random control leaves the "
            "unsteered interval "
            + ("in the opposite direction" if r_beats else "without separating from it")
            + ", so the effect is specific to the direction, though a push of that size alone "
            "is not neutral"
        )
    return {
        "steered_beats_unsteered": bool(beats and up),
        "steered_moves_score": bool(beats),
        "random_inside_unsteered": inside,
        "random_moves_same_way": bool(r_same_way),
        "text": text,
    }
