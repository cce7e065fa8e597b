"""Measures and statistics: refusal, repetition, KL, cross-entropy, intervals (one home)."""

from .loss import continuation_loss
from .refusal import (
    REFUSAL_PHRASES,
    refusal_scores,
    refusal_token_ids,
    strict_refusal,
    substring_refusal,
)
from .stats import compare_rates, kl_divergence, mean_ci, proportion_ci, rate, separated
from .text import distinct_n, longest_repeat, repetition

__all__ = [
    "REFUSAL_PHRASES",
    "compare_rates",
    "continuation_loss",
    "distinct_n",
    "kl_divergence",
    "longest_repeat",
    "mean_ci",
    "proportion_ci",
    "rate",
    "refusal_scores",
    "refusal_token_ids",
    "repetition",
    "separated",
    "strict_refusal",
    "substring_refusal",
]
