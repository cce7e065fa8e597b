"""Steering against prompting and finetuning on the same N examples, with sample-efficiency
curves and intervals (``steerlab compare``)."""

from .config import METHODS, QUICK, CompareConfig
from .pipeline import run_compare
from .result import (
    Budget,
    CompareExample,
    CompareReport,
    Contrast,
    NullAtN,
    NullCell,
    RandomNull,
    SummaryRow,
    Winner,
)
from .summary import summarize_runs

__all__ = [
    "METHODS",
    "QUICK",
    "Budget",
    "CompareConfig",
    "CompareExample",
    "CompareReport",
    "Contrast",
    "NullAtN",
    "NullCell",
    "RandomNull",
    "SummaryRow",
    "Winner",
    "run_compare",
    "summarize_runs",
]
