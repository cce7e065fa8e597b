"""Interventions: reversible (context managers) and permanent (weight edits), kept apart."""

from .runtime import ablate, clamp, steer
from .weights import orthogonalize

__all__ = ["ablate", "clamp", "orthogonalize", "steer"]
