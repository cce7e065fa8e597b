"""The one rule every choice on a selection split follows (a sweep's cell, compare's strength,
layer or checkpoint): the best score among candidates that stay fluent enough."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["DEGENERATE", "choose", "degenerate", "rank_key", "rule_text"]

# Completions to different prompts this alike (mean pairwise Jaccard of word bigrams) no longer
# answer their prompts: one memorized reply, which a lexicon scorer may still reward. Replies of
# the models measured here to different prompts score ~0.02-0.1.
DEGENERATE = 0.5


def rule_text(bound: float) -> str:
    return (
        f"highest mean score on the selection split among cells whose completions cost the "
        f"unsteered model at most {bound:g} nats/token more than its own and do not repeat one "
        f"reply across prompts (cross-prompt similarity <= {DEGENERATE:g}; ties: lower cost)"
    )


def degenerate(cell: dict[str, Any]) -> bool:
    """Whether a cell's completions barely depend on the prompt."""
    s = cell.get("similarity")
    return _finite(s) and s > DEGENERATE


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def rank_key(cell: dict[str, Any], base_ce: float, bound: float) -> tuple:
    """Sort key (ascending = better) implementing :func:`rule_text`."""
    ok = _finite(cell.get("ce")) and cell["ce"] - base_ce <= bound and not degenerate(cell)
    score = cell["score"] if _finite(cell.get("score")) else -math.inf
    ce = cell["ce"] if _finite(cell.get("ce")) else math.inf
    return (not ok, -score, ce)


def choose(cells: Sequence[dict[str, Any]], base_ce: float, bound: float) -> dict[str, Any]:
    """The best cell by :func:`rule_text`, whether it met the fluency bound, and whether its
    completions are degenerate (chosen only when every candidate's are)."""
    best = min(cells, key=lambda c: rank_key(c, base_ce, bound))
    within = _finite(best.get("ce")) and best["ce"] - base_ce <= bound
    return {"cell": best, "within_bound": bool(within), "degenerate": degenerate(best)}
