"""Steering against prompting and finetuning on the same N examples, with sample-efficiency
curves and intervals (``steerlab compare``)."""

from .config import METHODS, QUICK, CompareConfig
from .pipeline import run_compare
from .summary import summarize_runs

__all__ = ["METHODS", "QUICK", "CompareConfig", "run_compare", "summarize_runs"]
