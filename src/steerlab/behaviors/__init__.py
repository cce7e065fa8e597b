"""Behaviours: what a steering run tries to change, and the scorers that measure it."""

from .behavior import (
    ABItem,
    Behavior,
    Pair,
    behavior_from_dict,
    builtin_behaviors,
    load_behavior,
    split_items,
)
from .scorers import LikelihoodScorer, TextScorer, available_scorers, make_scorer

__all__ = [
    "ABItem",
    "Behavior",
    "LikelihoodScorer",
    "Pair",
    "TextScorer",
    "available_scorers",
    "behavior_from_dict",
    "builtin_behaviors",
    "load_behavior",
    "make_scorer",
    "split_items",
]
