"""Cells of a sweep, the scale coefficients live on, and how a cell is chosen.

A cell is (layer, coefficient, positions). Its steering vector is ``coeff * norm[layer] *
unit[layer]``: ``unit`` the direction at that layer normalized, ``norm`` the typical (median)
residual-stream norm there. A coefficient therefore means the same push relative to the stream
at every layer, and one grid spans all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..hooks import scoped_hooks
from ..interventions.treatments import Steer
from ..metrics.stats import separated
from ..models.adapter import blocks_of
from ..models.chat import encode
from ..models.load import LoadedModel

__all__ = ["Cell", "choose", "random_units", "residual_norms", "rule_text", "verdict"]


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


def rule_text(bound: float) -> str:
    return (
        f"highest mean score on the selection split among cells whose completions cost the "
        f"unsteered model at most {bound:g} nats/token more than its own (ties: lower cost)"
    )


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def rank_key(cell: dict[str, Any], base_ce: float, bound: float) -> tuple:
    """Sort key (ascending = better) implementing :func:`rule_text`."""
    ok = _finite(cell.get("ce")) and cell["ce"] - base_ce <= bound
    score = cell["score"] if _finite(cell.get("score")) else -math.inf
    ce = cell["ce"] if _finite(cell.get("ce")) else math.inf
    return (not ok, -score, ce)


def choose(cells: Sequence[dict[str, Any]], base_ce: float, bound: float) -> dict[str, Any]:
    """The best cell by :func:`rule_text`, and whether it met the fluency bound."""
    best = min(cells, key=lambda c: rank_key(c, base_ce, bound))
    within = _finite(best.get("ce")) and best["ce"] - base_ce <= bound
    return {"cell": best, "within_bound": bool(within)}


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
