"""Settings of a sweep, checked when built (each error names its flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..configs import Checked, ConfigError, bounds, cli

__all__ = ["AUTO_COEFFS", "POSITIONS", "SweepConfig", "parse_coeffs", "parse_positions"]

# Multiples of the typical residual norm at the layer: from a nudge that changes nothing to a
# push that breaks the text on the models measured here (the grid grows when it does not).
AUTO_COEFFS = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
POSITIONS = ("all", "prompt", "generated")
MAX_EXTENSIONS = 2


def parse_coeffs(text: str | tuple[float, ...]) -> tuple[float, ...] | str:
    """``auto`` or a comma list of finite, non-zero numbers (``0.5,1,2``)."""
    if isinstance(text, tuple):
        values = text
    else:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            values = tuple(float(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ConfigError(
                "coeffs", f"must be auto or numbers like 0.5,1,2; got {text!r}"
            ) from None
    if not values:
        raise ConfigError("coeffs", "coeffs is empty: give auto or a list like 0.5,1,2")
    bad = [v for v in values if not math.isfinite(v) or v == 0]
    if bad:
        raise ConfigError("coeffs", f"coeffs must be finite and non-zero; got {bad}")
    return tuple(dict.fromkeys(values))


def parse_positions(text: str | tuple[str, ...]) -> tuple[str, ...]:
    values = text if isinstance(text, tuple) else tuple(x.strip() for x in text.split(","))
    bad = [v for v in values if v not in POSITIONS]
    if not values or bad:
        raise ConfigError(
            "positions", f"positions must be one or more of {', '.join(POSITIONS)}; got {bad}"
        )
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class SweepConfig(Checked):
    """What a sweep evaluates and how it chooses.

    Attributes:
        layers: ``A:B``, a list or ``all``; default: the middle 80% of the blocks.
        coeffs: ``auto`` or multiples of the typical residual norm at each layer.
        positions: one or more of ``all``, ``prompt``, ``generated``.
        method: how the direction is extracted from the behaviour's contrast data.
        search: ``grid`` evaluates every cell on every selection prompt; ``auto`` runs
            successive halving (all cells on a few prompts, the best third on twice as many...).
        max_ce_increase: the fluency bound: nats/token the chosen cell's completions may cost
            the unsteered model over its own completions.
        pairs: K > 1 adds every pair of the K best layers with the coefficient split, and the
            per-layer sufficiency / necessity profile.
        random_control: also evaluate a norm-matched random vector at every grid cell.
        random_directions: norm-matched random directions scored at the chosen cell on the test
            split, always: the null distribution the chosen direction is placed in.
    """

    layers: str | None = field(
        default=None,
        metadata=cli("A:B (end excluded) | L1,L2 | all; default: the middle 80% of the blocks"),
    )
    coeffs: str | tuple[float, ...] = field(
        default="auto",
        metadata=cli("auto, or multiples of the layer's residual norm: 0.25,0.5,1"),
    )
    positions: str | tuple[str, ...] = field(
        default="all", metadata=cli("all | prompt | generated (comma list to sweep several)")
    )
    method: Literal["mean_diff", "pca", "logistic", "leace"] = field(
        default="mean_diff", metadata=cli("how the direction is extracted (without --vector)")
    )
    search: Literal["grid", "auto"] = field(
        default="grid", metadata=cli("every cell, or successive halving")
    )
    max_ce_increase: float = field(
        default=1.0,
        metadata=bounds(gt=0) | cli("fluency bound on the chosen cell, nats/token over unsteered"),
    )
    max_new_tokens: int = field(
        default=32, metadata=bounds(ge=1, le=1024) | cli("tokens generated per completion")
    )
    batch_rows: int = field(default=64, metadata=bounds(ge=1) | cli("rows per batched forward"))
    pairs: int = field(
        default=0,
        metadata=bounds(ge=0, le=12)
        | cli("K >= 2: every pair of the K best layers, and the layer profile"),
    )
    profile: bool = field(
        default=False, metadata=cli("per-layer sufficiency vs necessity", "--profile")
    )
    random_control: bool = field(
        default=False,
        metadata=cli("a norm-matched random vector at every grid cell", "--random-control"),
    )
    random_directions: int = field(
        default=20,
        metadata=bounds(ge=2, le=1000)
        | cli("norm-matched random directions at the chosen cell on test (the null)"),
    )
    neutral_prompts: int = field(default=12, metadata=bounds(ge=0))
    necessity_prompts: int = field(default=16, metadata=bounds(ge=1))
    seed: int = field(default=0, metadata=cli("random seed"))
    chat: bool | None = field(default=None, metadata=cli("raw prompts, no template", "--no-chat"))

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "coeffs", parse_coeffs(self.coeffs))
        object.__setattr__(self, "positions", parse_positions(self.positions))
        if self.pairs == 1:
            raise ConfigError("pairs", "pairs must be 0 (off) or at least 2 layers")
