"""Sweeps: which layer, which strength and which positions steer a behaviour, at what cost.

:func:`run_sweep` is the library layer under ``steerlab sweep``; :mod:`.engine` evaluates many
treatments per batch (one per row); :class:`~.measure.Measurer` scores them.
"""

from .config import SweepConfig
from .engine import continuation_nll_rows, greedy_rows, next_logprobs_rows
from .measure import Measurer
from .pipeline import run_sweep

__all__ = [
    "Measurer",
    "SweepConfig",
    "continuation_nll_rows",
    "greedy_rows",
    "next_logprobs_rows",
    "run_sweep",
]
