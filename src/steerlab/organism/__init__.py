"""Model organisms: models with a planted behaviour, to test whether discovery methods find it.

Importing the config and the result types is light (the command line reads the config for
``--help``); the rest, which needs torch, loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import BackdoorConfig
from .result import BehaviorRate, OrganismExample, OrganismRecord, TrainLoss, TriggerRates

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
    "BehaviorRate",
    "OrganismExample",
    "OrganismRecord",
    "TrainLoss",
    "TriggerRates",
    "behavior_rate",
    "shows_behavior",
    "train_backdoor",
    "triggered",
]


_LAZY = ("ORGANISM_FILE", "behavior_rate", "shows_behavior", "train_backdoor", "triggered")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import backdoor

        return getattr(backdoor, name)
    raise AttributeError(f"module 'steerlab.organism' has no attribute {name!r}")
