"""Model organisms: models with a planted behaviour, to test whether discovery methods find it."""

from .backdoor import (
    ORGANISM_FILE,
    BackdoorConfig,
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
