"""Sweeps: which layer, which strength and which positions steer a behaviour, at what cost.

:func:`run_sweep` is the library layer under ``steerlab sweep``; :mod:`steerlab.evaluate`
measures the treatments (re-exported here: ``Measurer`` and the per-row engine).
"""

from ..evaluate import Measurer, continuation_nll_rows, greedy_rows, next_logprobs_rows
from .config import SweepConfig
from .pipeline import run_sweep

__all__ = [
    "Measurer",
    "SweepConfig",
    "continuation_nll_rows",
    "greedy_rows",
    "next_logprobs_rows",
    "run_sweep",
]
