"""What a comparison's runs come to: one row per method and N (its two-level bootstrap
interval, thresholded rate, fluency bound and degeneracy), then the pre-named paired contrasts
(:mod:`.contrasts`) from which alone a winner is declared."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..evaluate.select import DEGENERATE
from ..metrics.stats import nested_mean_ci, proportion_ci
from .config import N_FREE

__all__ = ["RATE_THRESHOLD", "score_table", "summarize_runs"]

# Text scorers give a score in [0, 1]; above one half a completion shows the behaviour (VADER:
# positive compound; lingua: French more likely than not). The rate is reported beside the mean.
RATE_THRESHOLD = 0.5


def _mean(xs: Sequence[Any]) -> float:
    v = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def method_runs(runs: Sequence[dict[str, Any]], method: str, n: int) -> list[dict[str, Any]]:
    """The runs of ``method`` at N = ``n`` (a method without examples: its one run per draw),
    one per draw, in draw order."""
    rs = [r for r in runs if r["method"] == method and (r["n"] == n or method in N_FREE)]
    return sorted({r["draw"]: r for r in rs}.values(), key=lambda r: r["draw"])


def score_table(runs: Sequence[dict[str, Any]], method: str, n: int) -> np.ndarray:
    """(draws, prompts) test scores of ``method`` at N = ``n``."""
    return np.array([r["scores"] for r in method_runs(runs, method, n)], dtype=float)


def _within(rs: Sequence[dict[str, Any]]) -> bool:
    """Every draw's choice kept to the fluency bound (the unsteered model is the bound's own
    reference)."""
    return all((r.get("chosen") or {}).get("within_bound", True) for r in rs)


def summarize_runs(
    runs: Sequence[dict[str, Any]], methods: Sequence[str], sizes: Sequence[int], seed: int = 0
) -> list[dict[str, Any]]:
    """One row per method and N: mean test score over draws and prompts with its two-level
    bootstrap 95% interval (draws, then prompts within a draw); the share of completions above
    :data:`RATE_THRESHOLD` with its Wilson interval; CE, KL, cross-prompt similarity; whether
    every draw's choice kept to the fluency bound and whether the completions are degenerate;
    and the tuning budget (candidates scored on selection, seconds fitting and choosing)."""
    out = []
    for m in methods:
        for n in sizes:
            rs = method_runs(runs, m, n)
            if not rs:
                continue
            mat = np.array([r["scores"] for r in rs], dtype=float)
            lo, hi = nested_mean_ci(mat, seed=seed)
            finite = mat[np.isfinite(mat)]
            k, total = int((finite > RATE_THRESHOLD).sum()), int(finite.size)
            fs = _mean([r.get("fit_seconds", 0.0) for r in rs])
            ss = _mean([r.get("select_seconds", 0.0) for r in rs])
            sim = _mean([r.get("similarity") for r in rs])
            row = {
                "method": m,
                "n": n,
                "score": float(np.nanmean(mat)),
                "ci": [lo, hi],
                "rate": k / total if total else float("nan"),
                "rate_ci": list(proportion_ci(k, total)),
                "rate_threshold": RATE_THRESHOLD,
                "ce": _mean([r["ce"] for r in rs]),
                "within_bound": _within(rs),
                "similarity": sim,
                "degenerate": bool(math.isfinite(sim) and sim > DEGENERATE),
                "selection_score": _mean(
                    [((r.get("chosen") or {}).get("selection") or {}).get("score") for r in rs]
                ),
                "fit_seconds": fs,
                "examples_per_second": (n / fs) if fs > 0 and m not in N_FREE else None,
                "budget": {
                    "candidates": int(max(r.get("candidates", 1) for r in rs)),
                    "seconds": fs + ss,
                },
                "kl": _mean([r["kl"] for r in rs]),
                "distinct2": _mean([r["distinct2"] for r in rs]),
                "draws": len(rs),
                "prompts": int(mat.shape[1]),
                "uses_examples": m not in N_FREE,
            }
            if "examples_used" in rs[0]:
                row["examples_used"] = _mean([r["examples_used"] for r in rs])
            out.append(row)
    return out
