"""What a comparison's runs come to: one row per method and N with its two-level bootstrap
interval, and the winner per N where (only where) its interval separates from every other's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics.stats import nested_mean_ci, separated
from .config import N_FREE

__all__ = ["summarize_runs", "winners"]


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def summarize_runs(
    runs: Sequence[dict[str, Any]], methods: Sequence[str], sizes: Sequence[int], seed: int = 0
) -> list[dict[str, Any]]:
    """One row per method and N: mean test score over draws and prompts, its two-level
    bootstrap 95% interval (draws, then prompts within a draw), CE, KL and fitting time."""
    out = []
    for m in methods:
        for n in sizes:
            rs = [r for r in runs if r["method"] == m and (r["n"] == n or m in N_FREE)]
            rs = sorted({r["draw"]: r for r in rs}.values(), key=lambda r: r["draw"])
            if not rs:
                continue
            mat = np.array([r["scores"] for r in rs], dtype=float)
            lo, hi = nested_mean_ci(mat, seed=seed)
            fit = [r.get("fit_seconds", 0.0) for r in rs]
            fs = _mean(fit)
            out.append(
                {
                    "method": m,
                    "n": n,
                    "score": float(np.nanmean(mat)),
                    "ci": [lo, hi],
                    "ce": _mean([r["ce"] for r in rs]),
                    "fit_seconds": fs,
                    "examples_per_second": (n / fs) if fs > 0 and m not in N_FREE else None,
                    "kl": _mean([r["kl"] for r in rs]),
                    "distinct2": _mean([r["distinct2"] for r in rs]),
                    "draws": len(rs),
                    "prompts": int(mat.shape[1]),
                    "uses_examples": m not in N_FREE,
                    **(
                        {"examples_used": _mean([r["examples_used"] for r in rs])}
                        if "examples_used" in rs[0]
                        else {}
                    ),
                }
            )
    return out


def winners(summary: Sequence[dict[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per N: the best method, and whether its interval separates from every other's."""
    out = []
    for n in sizes:
        rows = [r for r in summary if r["n"] == n and math.isfinite(r["score"])]
        if not rows:
            continue
        rows.sort(key=lambda r: -r["score"])
        best = rows[0]
        clear = all(separated(best["ci"], r["ci"]) for r in rows[1:])
        out.append(
            {
                "n": n,
                "method": best["method"],
                "score": best["score"],
                "separated": bool(clear),
                "runner_up": rows[1]["method"] if len(rows) > 1 else None,
                "tied_with": [r["method"] for r in rows[1:] if not separated(best["ci"], r["ci"])],
            }
        )
    return out
