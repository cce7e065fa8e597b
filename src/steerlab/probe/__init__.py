"""Probes: where a concept is linearly readable, by every method side by side, with controls,
erasure, sample efficiency, transfer and the read-vs-steer check (``steerlab probe``).

Importing the config is light (the command line reads it for ``--help``); the rest loads on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import PROBE_METHODS, ProbeConfig

if TYPE_CHECKING:
    from .data import ProbeData, make_probe_data, read_labelled
    from .fit import directions, score
    from .pipeline import run_probe
    from .result import ProbeResult

__all__ = [
    "PROBE_METHODS",
    "ProbeConfig",
    "ProbeData",
    "ProbeResult",
    "directions",
    "make_probe_data",
    "read_labelled",
    "run_probe",
    "score",
]

_LAZY = {
    "ProbeData": "data",
    "make_probe_data": "data",
    "read_labelled": "data",
    "directions": "fit",
    "score": "fit",
    "run_probe": "pipeline",
    "ProbeResult": "result",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'steerlab.probe' has no attribute {name!r}")
