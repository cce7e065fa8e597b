"""Model organisms: models with a planted behaviour, to test whether discovery methods find it.

Importing the config is light (the command line reads it for ``--help``); the rest, which needs
torch, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import BackdoorConfig

if TYPE_CHECKING:
    from .backdoor import (
        ORGANISM_FILE,
        behavior_rate,
        shows_behavior,
        train_backdoor,
        triggered,
    )

__all__ = [
    "ORGANISM_FILE",
    "BackdoorConfig",
    "behavior_rate",
    "shows_behavior",
    "train_backdoor",
    "triggered",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backdoor

        return getattr(backdoor, name)
    raise AttributeError(f"module 'steerlab.organism' has no attribute {name!r}")
