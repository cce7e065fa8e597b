"""The one model-card writer of every exported checkpoint (README.md beside the weights)."""

from __future__ import annotations

from typing import Any

from .._version import __version__

__all__ = ["model_card"]

_TEMPLATES = {"refusal": "model_card.md.j2", "steer": "steer_card.md.j2"}


def model_card(kind: str, **context: Any) -> str:
    """Render the card of an export of ``kind`` (``refusal``: orthogonalized weights;
    ``steer``: steering baked into a bias); both share the equivalence-check section."""
    from ..report.render import render  # jinja2 loads only when a checkpoint is exported

    if kind not in _TEMPLATES:
        raise ValueError(f"no model card for export kind {kind!r}")
    return render(_TEMPLATES[kind], version=__version__, **context)
