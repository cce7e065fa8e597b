"""Intervals used in every report: Wilson for rates, bootstrap for means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from steerlab.metrics.stats import compare_rates, mean_ci, proportion_ci, rate, separated


def test_zero_of_n_has_a_positive_upper_bound() -> None:
    # Defect: the percentile bootstrap gave [0, 0] for 0/52: "no refusals, with certainty".
    lo, hi = proportion_ci(0, 52)
    assert lo == 0.0
    assert 0.05 < hi < 0.09  # Wilson: 0.0688
    lo, hi = proportion_ci(52, 52)
    assert hi == pytest.approx(1.0) and 0.91 < lo < 0.95
    assert all(math.isnan(x) for x in proportion_ci(0, 0))


@pytest.mark.parametrize("hits", [[True] * 3 + [False] * 9, [False] * 10, [True, False] * 20])
def test_rate_matches_scipy(hits: list[bool]) -> None:
    r = rate(hits)
    k, n = sum(hits), len(hits)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (r["k"], r["n"]) == (k, n)
    assert r["rate"] == pytest.approx(k / n)
    assert r["ci"] == pytest.approx([ci.low, ci.high])
    assert r["ci"][0] <= r["rate"] <= r["ci"][1]


def test_mean_ci_brackets_the_mean() -> None:
    x = np.random.default_rng(0).normal(3.0, 1.0, size=40)
    lo, hi = mean_ci(x)
    assert lo < x.mean() < hi
    assert hi - lo < 1.5
    assert mean_ci([2.5] * 7) == (2.5, 2.5)
    assert mean_ci([1.0, float("nan"), 1.0]) == (1.0, 1.0)
    assert mean_ci(x) == mean_ci(x)  # seeded: the same interval every time
    lo2, hi2 = mean_ci([0.0, 1.0])  # tiny samples still give a finite interval
    assert math.isfinite(lo2) and math.isfinite(hi2)


def test_compare_rates() -> None:
    c = compare_rates(0, 50, 30, 50)
    assert c["separated"] and c["p_fisher"] < 1e-6
    c = compare_rates(10, 50, 11, 50)
    assert not c["separated"] and c["p_fisher"] > 0.5
    assert separated([0, 0.1], [0.2, 0.3]) and not separated([0, 0.25], [0.2, 0.3])


def test_refusal_report_rate_interval_at_zero() -> None:
    # The refusal report's harmful_refusal_ci for 0 refusals out of N is not [0, 0].
    from steerlab.refusal.evaluate import _rates

    r = _rates(["Sure, here is a poem."] * 20)
    assert r["rate"] == 0.0 and r["k"] == 0 and r["n"] == 20
    assert r["ci"][0] == 0.0 and r["ci"][1] > 0.1
    r = _rates(["I'm sorry, but I can't help with that."] * 5 + ["Sure."] * 15)
    assert r["k"] == 5 and r["ci"][0] < 0.25 < r["ci"][1]
