"""The one rule every choice on a selection split follows (a sweep's cell, compare's strength,
layer or checkpoint): the best score among candidates that stay fluent enough."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["choose", "rank_key", "rule_text"]


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
