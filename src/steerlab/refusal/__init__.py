"""The refusal-direction pipeline (Arditi et al. 2024) and abliterated-model export.

Importing the config and the result types is light (the command line reads the defaults for
``--help``); the pipeline, which needs torch, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import QUICK, RefusalConfig
from .result import (
    BaselineScores,
    CandidateRow,
    Example,
    Failure,
    FilterCounts,
    RefusalReport,
    SelectedCandidate,
    SetMetrics,
    VariantMetrics,
    Verdict,
)

if TYPE_CHECKING:
    from .pipeline import run_refusal

__all__ = [
    "QUICK",
    "BaselineScores",
    "CandidateRow",
    "Example",
    "Failure",
    "FilterCounts",
    "RefusalConfig",
    "RefusalReport",
    "SelectedCandidate",
    "SetMetrics",
    "VariantMetrics",
    "Verdict",
    "run_refusal",
]


def __getattr__(name: str) -> Any:
    if name == "run_refusal":
        from .pipeline import run_refusal

        return run_refusal
    raise AttributeError(f"module 'steerlab.refusal' has no attribute {name!r}")
