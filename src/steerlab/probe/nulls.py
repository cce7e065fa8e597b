"""Null distributions a real reading must beat, per layer: label permutations and random
directions, each many draws, summarized with their spread and the real methods' percentiles.

* **Label permutations** (``n`` draws): the train labels are permuted, and the logistic probe
  is refitted *from scratch* on them, its C chosen again by cross-validation on the permuted
  train part only (test is never seen while fitting); then scored on the real test labels.
* **Random directions** (``n`` draws): unit directions drawn uniformly on the sphere (norm-
  matched to the methods' unit directions), each signed on train so the positive class
  projects higher, as every method's direction is, and classified the same way (midpoint of
  the train-class means).

A real method's *percentile* in a null is the share of draws below its test accuracy, ties
counting half; its *p-value* is ``(1 + #draws >= real) / (1 + n)`` (the permutation test's
add-one rule, never 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics.stats import percentile_interval
from .fit import Scored, choose_c, directions, score

__all__ = [
    "NullSummary",
    "empirical_percentile",
    "permutation_null",
    "permutation_p_value",
    "random_direction_null",
    "random_units_signed",
    "summarize_null",
]


def empirical_percentile(value: float, null: Sequence[float] | np.ndarray) -> float:
    """Percentile (0-100) of ``value`` within ``null``: share below, ties counted half."""
    v = np.asarray(null, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or not np.isfinite(value):
        return float("nan")
    return float(100 * ((v < value).mean() + 0.5 * (v == value).mean()))


def permutation_p_value(value: float, null: Sequence[float] | np.ndarray) -> float:
    """One-sided p-value of ``value`` against ``null`` draws: ``(1 + #null >= value) / (1 + n)``."""
    v = np.asarray(null, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or not np.isfinite(value):
        return float("nan")
    return float((1 + (v >= value).sum()) / (1 + v.size))


@dataclass(frozen=True)
class NullSummary:
    """One layer's null: the mean over draws with its spread, and where the real methods fall.

    ``accuracy_ci`` / ``auroc_ci`` are the middle 95% of the *draws* (the null's spread, not an
    interval of its mean), so a report can ask whether 0.5 lies inside, as for the methods.
    """

    accuracy: float
    accuracy_sd: float
    accuracy_ci: tuple[float, float]
    accuracy_5_95: tuple[float, float]
    auroc: float
    auroc_sd: float
    auroc_ci: tuple[float, float]
    accuracies: tuple[float, ...]
    aurocs: tuple[float, ...]
    percentile: Mapping[str, float] = field(default_factory=dict)
    p_value: Mapping[str, float] = field(default_factory=dict)
    c: tuple[float, ...] | None = None  # each permutation's own C (permutations only)

    @property
    def draws(self) -> int:
        return len(self.accuracies)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "accuracy_sd": self.accuracy_sd,
            "accuracy_5_95": list(self.accuracy_5_95),
            "auroc": self.auroc,
            "auroc_ci": list(self.auroc_ci),
            "auroc_sd": self.auroc_sd,
            "draws": self.draws,
            "spread": "accuracy_ci / auroc_ci: middle 95% of the draws; accuracy_5_95: 5th-95th",
            "accuracies": list(self.accuracies),
            "aurocs": list(self.aurocs),
            "percentile": dict(self.percentile),
            "p_value": dict(self.p_value),
        }
        if self.c is not None:
            out["c"] = list(self.c)
        return out


def summarize_null(
    draws: Sequence[Scored],
    real: Mapping[str, float],
    c: Sequence[float] | None = None,
) -> NullSummary:
    """Mean, spread and the percentile / p-value of each ``real`` accuracy (by method)."""
    acc = np.array([d.accuracy for d in draws], dtype=float)
    auc = np.array([d.auroc for d in draws], dtype=float)

    def sd(a: np.ndarray) -> float:
        return float(a.std(ddof=1)) if a.size > 1 else 0.0

    return NullSummary(
        accuracy=float(acc.mean()),
        accuracy_sd=sd(acc),
        accuracy_ci=percentile_interval(acc),
        accuracy_5_95=percentile_interval(acc, level=0.90),
        auroc=float(auc.mean()),
        auroc_sd=sd(auc),
        auroc_ci=percentile_interval(auc),
        accuracies=tuple(float(a) for a in acc),
        aurocs=tuple(float(a) for a in auc),
        percentile={m: empirical_percentile(v, acc) for m, v in real.items()},
        p_value={m: permutation_p_value(v, acc) for m, v in real.items()},
        c=None if c is None else tuple(float(x) for x in c),
    )


def permutation_null(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n: int,
    seed: int,
) -> tuple[list[Scored], list[float]]:
    """``n`` logistic probes on permuted train labels, each with its own C by cross-validation
    on the permuted train (``x``, ``y``) only; scored on the real test labels.

    Returns:
        The test scores and the C chosen for each permutation.
    """
    rng = np.random.default_rng(seed)
    scores, cs = [], []
    for k in range(n):
        yp = rng.permutation(y)
        c = choose_c(x, yp, seed + k)
        xp, xn = x[yp == 1], x[yp == 0]
        u = directions(xp, xn, c=c, methods=("logistic",))["logistic"]
        scores.append(score(u, xp, xn, x_test, y_test, intervals=False))
        cs.append(c)
    return scores, cs


def random_units_signed(d: int, n: int, md: np.ndarray, *, seed: int) -> np.ndarray:
    """(n, d) unit directions drawn uniformly on the sphere, each signed so that ``md`` (the
    train mean difference) projects non-negatively on it, as every method's direction is."""
    u = np.random.default_rng(seed).standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return np.where((u @ md)[:, None] < 0, -u, u)


def random_direction_null(
    xp: np.ndarray,
    xn: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n: int,
    seed: int,
) -> list[Scored]:
    """``n`` uniformly random unit directions, each signed on train (positive class higher),
    scored on test like a method's direction."""
    units = random_units_signed(xp.shape[1], n, xp.mean(0) - xn.mean(0), seed=seed)
    return [score(u, xp, xn, x_test, y_test, intervals=False) for u in units]
