"""Probes: where a concept is linearly readable, by every method side by side, with controls,
erasure, sample efficiency, transfer and the read-vs-steer check (``steerlab probe``)."""

from .data import ProbeData, make_probe_data, read_labelled
from .fit import PROBE_METHODS, directions, score
from .pipeline import ProbeConfig, run_probe

__all__ = [
    "PROBE_METHODS",
    "ProbeConfig",
    "ProbeData",
    "directions",
    "make_probe_data",
    "read_labelled",
    "run_probe",
    "score",
]
