"""Intervals and comparisons, in one place for every report.

* Rates (a share of prompts refused, of completions showing a behaviour) get a **Wilson score
  interval** (``scipy.stats.binomtest(...).proportion_ci``): unlike the percentile bootstrap it
  does not collapse to ``[0, 0]`` at 0/52, and it is exact to compute.
* Means of continuous scores get a **bootstrap interval** (``scipy.stats.bootstrap``, BCa).
* Statistics vectorized over resamples (an AUROC from ranks) get a **percentile bootstrap**
  (:func:`percentile_bootstrap`); a spread of repeated draws its :func:`percentile_interval`.
* Two rates are compared by whether their intervals separate, and by Fisher's exact test.
* Two methods scored on the **same prompts** are compared on their per-prompt differences
  (:func:`paired`): a bootstrap interval of the mean difference and a sign-flip permutation
  p-value; a family of such contrasts, named before the data are seen, is corrected with
  :func:`holm`. Interval overlap is not a test: two intervals may overlap while every prompt
  moves the same way.
* A random control is a distribution: :func:`null_percentile` places an effect within it.
* :func:`kl_divergence` is the KL between next-token distributions, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "LEVEL",
    "compare_rates",
    "holm",
    "kl_divergence",
    "mean_ci",
    "nested_mean_ci",
    "null_percentile",
    "null_test",
    "paired",
    "percentile_bootstrap",
    "percentile_interval",
    "proportion_ci",
    "rate",
    "separated",
    "sign_flip_p",
]

LEVEL = 0.95


def proportion_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) for ``n == 0``."""
    if n <= 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def rate(hits: Sequence[bool] | np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """``{"rate", "ci", "k", "n"}`` of a list of booleans (Wilson interval)."""
    x = np.asarray(hits, dtype=bool)
    k, n = int(x.sum()), int(x.size)
    return {
        "rate": k / n if n else float("nan"),
        "ci": list(proportion_ci(k, n, level)),
        "k": k,
        "n": n,
    }


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = LEVEL, seed: int = 0, n: int = 2000
) -> tuple[float, float]:
    """Bootstrap (BCa) interval of a mean; a point interval when all values are equal."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    import warnings

    from scipy.stats import bootstrap

    for method in ("BCa", "percentile"):  # BCa degenerates (NaN) on tiny samples
        with warnings.catch_warnings():  # ... and says so; the percentile fallback follows
            warnings.simplefilter("ignore")
            ci = bootstrap((x,), np.mean, confidence_level=level, n_resamples=n, method=method,
                           rng=np.random.default_rng(seed)).confidence_interval  # fmt: skip
        lo, hi = float(ci.low), float(ci.high)
        if np.isfinite(lo) and np.isfinite(hi):
            break
    return (lo, hi)


def percentile_interval(
    values: Sequence[float] | np.ndarray, level: float = LEVEL
) -> tuple[float, float]:
    """The central ``level`` range of a sample of statistics (bootstrap replicates, or the
    results of repeated random draws); (nan, nan) for an empty sample."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (float("nan"), float("nan"))
    # rounded so that level 0.95 asks for exactly the 2.5th and 97.5th percentiles
    q = round(100 * (1 - level) / 2, 10)
    lo, hi = np.percentile(v, [q, 100 - q])
    return (float(lo), float(hi))


def percentile_bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    size: int,
    *,
    seed: int = 0,
    n: int = 1000,
    level: float = LEVEL,
    max_cells: int = 2_000_000,
) -> tuple[float, float]:
    """Percentile bootstrap of a statistic computed for many resamples at once.

    Args:
        statistic: maps a (resamples, size) array of indices drawn with replacement to one
            value per resample; NaN where the statistic is undefined for that resample (such
            resamples are left out, as when a resample holds one class only).
        size: number of observations.
        seed: the resamples come from ``np.random.default_rng(seed)``, ``max_cells`` indices
            per call at most (memory), in order.
        n: number of resamples.

    Example:
        >>> x = np.arange(10.0)
        >>> lo, hi = percentile_bootstrap(lambda idx: x[idx].mean(1), len(x))
    """
    rng = np.random.default_rng(seed)
    vals: list[np.ndarray] = []
    chunk = max(1, max_cells // max(size, 1))
    for start in range(0, n, chunk):
        idx = rng.integers(0, size, (min(chunk, n - start), size))
        vals.append(np.asarray(statistic(idx), dtype=float))
    v = np.concatenate(vals)
    return percentile_interval(v[~np.isnan(v)], level)


def nested_mean_ci(
    values: np.ndarray | Sequence[Sequence[float]],
    level: float = LEVEL,
    seed: int = 0,
    n: int = 4000,
) -> tuple[float, float]:
    """Two-level bootstrap interval of the grand mean of a (groups, items) table: groups
    (e.g. random draws of training data) are resampled, then items (prompts) within each
    drawn group, so both sources of variation widen the interval. One group: :func:`mean_ci`.
    Percentile interval; non-finite cells are left out of each mean."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError("nested_mean_ci needs a non-empty (groups, items) table")
    if x.shape[0] == 1:
        return mean_ci(x[0], level=level, seed=seed)
    rng = np.random.default_rng(seed)
    g, m = x.shape
    gi = rng.integers(g, size=(n, g))
    ii = rng.integers(m, size=(n, g, m))
    sample = x[gi[:, :, None], ii]  # (n, g, m)
    means = np.nanmean(sample.reshape(n, -1), axis=1)
    a = (1 - level) / 2
    return (float(np.nanquantile(means, a)), float(np.nanquantile(means, 1 - a)))


def separated(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two intervals do not overlap."""
    return bool(a[1] < b[0] or b[1] < a[0])


def compare_rates(k1: int, n1: int, k2: int, n2: int, level: float = LEVEL) -> dict[str, Any]:
    """Two rates side by side: their Wilson intervals, whether they separate, Fisher's p."""
    from scipy.stats import fisher_exact

    a, b = proportion_ci(k1, n1, level), proportion_ci(k2, n2, level)
    p = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue) if n1 and n2 else float("nan")
    return {"ci_a": list(a), "ci_b": list(b), "separated": separated(a, b), "p_fisher": p}


def kl_divergence(base_logprobs: torch.Tensor, new_logprobs: torch.Tensor) -> float:
    """Mean KL(base || new) over prompts, in nats, from (N, V) log-probabilities."""
    p = base_logprobs.double().exp()
    return float((p * (base_logprobs.double() - new_logprobs.double())).sum(-1).mean())


def sign_flip_p(diffs: Sequence[float] | np.ndarray, seed: int = 0, n: int = 9999) -> float:
    """Two-sided p-value of a mean per-prompt difference of zero, by flipping each difference's
    sign (the paired permutation test; exact over all 2**k flips where k <= 13, else ``n``
    random flips). 1.0 where every difference is zero."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    if not np.any(d):
        return 1.0
    from scipy.stats import permutation_test

    res = permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided",
        n_resamples=n, rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(min(1.0, res.pvalue))


def paired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """``a`` against ``b`` on the same prompts: ``{"diff", "ci", "p", "n"}``.

    Args:
        a, b: per-prompt scores, aligned (``a[i]`` and ``b[i]`` are the same prompt); or
            (draws, prompts) tables whose draw ``d`` rows belong together (the same training
            subset), in which case the interval resamples draws, then prompts
            (:func:`nested_mean_ci`) and the p-value flips the per-prompt means over draws.
        level: interval level.

    Returns:
        ``diff``: mean of ``a - b``; ``ci``: its bootstrap interval; ``p``: the two-sided
        sign-flip p-value (:func:`sign_flip_p`); ``n``: prompts.

    Example:
        >>> r = paired([0.5, 0.7, 0.9], [0.4, 0.6, 0.8])
        >>> round(r["diff"], 3)
        0.1
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need one shape; got {x.shape} and {y.shape}")
    d = x - y
    if d.ndim == 1:
        d = d[None, :]
    per_prompt = np.nanmean(d, axis=0)
    lo, hi = nested_mean_ci(d, level=level, seed=seed)
    return {
        "diff": float(np.nanmean(d)),
        "ci": [lo, hi],
        "p": sign_flip_p(per_prompt, seed=seed),
        "n": int(np.isfinite(per_prompt).sum()),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error
    rate; NaN entries are left out of the family and stay NaN). The i-th smallest of m
    p-values becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def null_percentile(value: float, null: Sequence[float] | np.ndarray) -> float:
    """Percent of a null distribution (scores of random directions) strictly below ``value``,
    ties counted half: 50 where the effect is typical of the null, 100 above all of it."""
    v = np.asarray(null, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or not math.isfinite(value):
        return float("nan")
    return float(100.0 * (np.sum(v < value) + 0.5 * np.sum(v == value)) / v.size)


def null_test(value: float, null: Sequence[float] | np.ndarray) -> float:
    """One-sided p-value that ``value`` (the real direction's mean score) comes from the same
    distribution as ``null`` (norm-matched random directions' mean scores): the t prediction
    test, (value - mean) / (sd * sqrt(1 + 1/n)) on n - 1 degrees of freedom. Unlike a rank
    among n draws it has no floor of 1/(n + 1), so it can survive a multiple-testing
    correction; an effect inside the null's spread gets a large p."""
    v = np.asarray(null, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2 or not math.isfinite(value):
        return float("nan")
    sd = float(v.std(ddof=1))
    if sd == 0.0:
        return 0.0 if value > v[0] else 1.0
    from scipy.stats import t as student_t

    z = (value - float(v.mean())) / (sd * math.sqrt(1 + 1 / v.size))
    return float(student_t.sf(z, df=v.size - 1))
