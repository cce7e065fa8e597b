"""Directions: the artifact, the methods that fit it, and extraction from contrast sets."""

from .artifact import LAYER_CONVENTION, Direction
from .extract import extract
from .methods import METHODS, fit_layer

__all__ = ["LAYER_CONVENTION", "METHODS", "Direction", "extract", "fit_layer"]
