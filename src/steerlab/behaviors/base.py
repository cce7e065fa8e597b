"""What every scorer shares: optional-library imports, the spec dict, the length check.

Kept apart from :mod:`.scorers` so that :mod:`.judge` can use them while :mod:`.scorers`
builds a :class:`~.judge.JudgeScorer`, without an import circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from ..errors import MissingDependency, ScorerError

__all__ = ["TextScorerBase", "check_lengths", "dist_version", "require", "scorer_spec"]


def require(module: str, scorer: str, dist: str) -> Any:
    """Import an optional library, or say in one line how to install it."""
    try:
        return import_module(module)
    except ImportError:
        raise MissingDependency(
            f'the {scorer} scorer needs {dist}: pip install "steerlab[all]" (or pip install {dist})'
        ) from None


def dist_version(dist: str) -> str:
    """The installed version of a distribution, or ``"unknown"``."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def scorer_spec(
    name: str, kind: str, library: str, lib_version: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The JSON-able description every scorer's ``spec()`` returns."""
    return {
        "name": name,
        "kind": kind,
        "library": library,
        "version": lib_version,
        "params": params,
        **extra,
    }


def check_lengths(prompts: Sequence[str], completions: Sequence[str]) -> None:
    """Refuse prompts and completions that do not pair up one to one."""
    if len(prompts) != len(completions):
        raise ScorerError(
            f"{len(prompts)} prompts but {len(completions)} completions: pass one prompt per "
            "completion"
        )


class TextScorerBase:
    """Common ground of the text scorers: their kind and repr."""

    kind: Literal["text"] = "text"
    name: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
