"""Paired comparisons, Holm's correction and random nulls (issue 24's statistics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steerlab.metrics.stats import (
    holm,
    mean_ci,
    null_percentile,
    null_test,
    paired,
    separated,
    sign_flip_p,
)


def test_a_fixed_per_prompt_gain_is_separated_by_the_paired_test_only() -> None:
    # Prompts differ a lot from each other; method a adds 0.1 to every prompt.
    rng = np.random.default_rng(1)
    b = rng.uniform(0.1, 0.9, 24)
    a = b + 0.1 + rng.normal(0, 0.01, 24)
    assert not separated(mean_ci(a), mean_ci(b))  # unpaired intervals overlap
    r = paired(a, b)
    assert r["ci"][0] > 0.05 and r["p"] < 0.001  # the paired test separates
    assert r["diff"] == pytest.approx(float(np.mean(a - b)))
    assert r["n"] == 24


def test_no_difference_is_not_significant() -> None:
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 1, 30)
    a = b + rng.normal(0, 0.05, 30)  # noise only, centred on 0
    r = paired(a, b)
    assert r["ci"][0] < 0 < r["ci"][1]
    assert r["p"] > 0.05
    assert paired(b, b)["p"] == 1.0


def test_sign_flip_is_exact_for_few_prompts() -> None:
    # 4 positive differences: 2 of the 16 sign patterns give a mean as extreme (two-sided).
    assert sign_flip_p([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 16)


def test_paired_tables_pair_draws_and_prompts() -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(0, 1, (3, 12))
    a = b + 0.2
    r = paired(a, b)
    assert r["diff"] == pytest.approx(0.2) and r["n"] == 12
    with pytest.raises(ValueError, match="one shape"):
        paired(a, b[:, :5])


def test_holm_matches_a_hand_checked_table() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # statsmodels' multipletests(method="holm") on this family gives the same
    assert holm([0.2, 0.5, 0.001]) == pytest.approx([0.4, 0.5, 0.003])
    out = holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 x 2 capped at 1; monotone after it


def test_an_effect_the_random_null_covers_is_not_significant() -> None:
    rng = np.random.default_rng(4)
    null = rng.normal(0.6, 0.1, 20)
    inside = 0.7  # one sd above the null's mean: some random directions do as well
    assert null_test(inside, null) > 0.05
    assert 60 < null_percentile(inside, null) < 100
    far = 1.2
    assert null_test(far, null) < 0.001
    assert null_percentile(far, null) == 100.0
    assert null_percentile(0.0, null) == 0.0
