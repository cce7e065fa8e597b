"""Errors a user can act on. The CLI prints their message and exits with code 2."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "DataError",
    "LayerError",
    "MissingDependency",
    "ModelNotAvailableError",
    "ScorerError",
    "SteerlabError",
    "VectorError",
    "first_line",
]


class SteerlabError(Exception):
    """Base class: the message is a complete sentence meant for the user."""


class ModelNotAvailableError(SteerlabError):
    """The model cannot be found, fetched or converted."""


class DataError(SteerlabError):
    """A prompt set is missing, empty, unbalanced or unreadable."""


class LayerError(SteerlabError):
    """A layer index or range does not fit the model."""


class VectorError(SteerlabError):
    """A vector has the wrong width, or holds NaN/inf."""


class ArtifactError(SteerlabError):
    """An artifact file is corrupt, foreign, or made for another model."""


class ScorerError(SteerlabError):
    """A behaviour scorer's spec is malformed, or its scoring service failed."""


class MissingDependency(SteerlabError):
    """An optional library that this feature needs is not installed."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line
    errors built on a library's multi-line ones."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
