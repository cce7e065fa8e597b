"""Sweeps: which layer, which strength and which positions steer a behaviour, at what cost.

:func:`run_sweep` is the library layer under ``steerlab sweep`` and returns a
:class:`SweepReport`; :mod:`steerlab.evaluate`
measures the treatments (re-exported here: ``Measurer`` and the per-row engine).
"""

from ..evaluate import Measurer, continuation_nll_rows, greedy_rows, next_logprobs_rows
from .config import SweepConfig
from .pipeline import run_sweep
from .result import (
    ChosenCell,
    PairedContrast,
    RandomDirections,
    SelectionScores,
    SweepReport,
    SweepTest,
    SweepVerdict,
    TestScores,
)

__all__ = [
    "ChosenCell",
    "Measurer",
    "PairedContrast",
    "RandomDirections",
    "SelectionScores",
    "SweepConfig",
    "SweepReport",
    "SweepTest",
    "SweepVerdict",
    "TestScores",
    "continuation_nll_rows",
    "greedy_rows",
    "next_logprobs_rows",
    "run_sweep",
]
