"""Measures and statistics: refusal measures, KL, cross-entropy, intervals (one home)."""

from .loss import continuation_loss
from .refusal import (
    REFUSAL_PHRASES,
    refusal_scores,
    refusal_token_ids,
    strict_refusal,
    substring_refusal,
)
from .stats import compare_rates, kl_divergence, mean_ci, proportion_ci, rate, separated

__all__ = [
    "REFUSAL_PHRASES",
    "compare_rates",
    "continuation_loss",
    "kl_divergence",
    "mean_ci",
    "proportion_ci",
    "rate",
    "refusal_scores",
    "refusal_token_ids",
    "separated",
    "strict_refusal",
    "substring_refusal",
]
