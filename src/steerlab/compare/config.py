"""Settings of a comparison, checked when built (each error names its flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..configs import Checked, ConfigError, bounds, cli

__all__ = [
    "METHODS",
    "N_FREE",
    "QUICK",
    "STEERED",
    "CompareConfig",
    "parse_coeffs",
    "parse_methods",
    "parse_sizes",
]

# Every method the comparison knows, in report order. ``unsteered``, ``random``,
# ``zero_shot`` and ``system_prompt`` use no training example: they are measured once per
# draw and shown at every N.
METHODS = (
    "unsteered",
    "mean_diff",
    "pca",
    "random",
    "zero_shot",
    "system_prompt",
    "few_shot",
    "contrast_prompt",
    "lora",
    "dpo",
    "lora+mean_diff",
    "few_shot+mean_diff",
)
N_FREE = ("unsteered", "random", "zero_shot", "system_prompt")
STEERED = ("mean_diff", "pca", "random", "lora+mean_diff", "few_shot+mean_diff")


def parse_methods(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """``all`` or a comma list of :data:`METHODS` (``unsteered`` is always measured)."""
    if isinstance(text, tuple):
        values = text
    elif text.strip() == "all":
        values = METHODS
    else:
        values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in METHODS]
    if bad or not values:
        raise ConfigError(
            "methods", f"unknown method(s) {bad or [text]}: use all or some of {', '.join(METHODS)}"
        )
    return tuple(m for m in METHODS if m in {"unsteered", *values})


def parse_coeffs(text: str | tuple[float, ...]) -> tuple[float, ...]:
    """A comma list of numbers (``0.125,0.25``); a tuple passes through."""
    if not isinstance(text, str):
        return tuple(text)
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError("coeffs", f"coeffs must be numbers like 0.25,0.5; got {text!r}") from None


def parse_sizes(text: str | tuple[int, ...]) -> tuple[int, ...]:
    """A comma list of positive training-set sizes (``1,2,4,8``)."""
    if isinstance(text, tuple):
        values = text
    else:
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ConfigError(
                "train_sizes", f"train sizes must be whole numbers like 1,4,16; got {text!r}"
            ) from None
    if not values or any(v < 1 for v in values):
        raise ConfigError("train_sizes", f"train sizes must be at least 1; got {list(values)}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class CompareConfig(Checked):
    """What a comparison runs.

    Attributes:
        methods: which methods (see :data:`METHODS`).
        train_sizes: N, the number of training pairs every method of a draw sees.
        draws: random nested subsets of the training pool (draw d's N=4 examples contain its
            N=2 examples), so a curve shows what more data adds, not a new sample.
        layers: steering layers searched on the selection split (default: one, at 40% depth).
        coeffs: steering strengths searched, x the layer's median residual norm (or their
            comma list).
        selection_prompts: selection prompts used to choose strengths and checkpoints.
        max_ce_increase: the fluency bound of every choice (the sweep's rule).
        lora_steps / lora_rank / lora_lr / dpo_lr / dpo_beta: finetuning, fixed for all N
            and recorded; ``checkpoints`` evenly spaced steps are scored on the selection
            split and the best kept (early stopping).
        max_context: prompt tokens a few-shot or contrast prompt may use; demonstrations that
            do not fit are left out and the count used is recorded.
    """

    methods: str | tuple[str, ...] = field(
        default="all", metadata=cli(f"all, or a comma list of {', '.join(METHODS)}")
    )
    train_sizes: str | tuple[int, ...] = field(
        default=(1, 4, 16, 32), metadata=cli("training pairs per method, e.g. 1,2,4,8,16,32")
    )
    draws: int = field(
        default=2, metadata=bounds(ge=1, le=100) | cli("random nested subsets of the pairs")
    )
    layers: str | None = field(
        default=None,
        metadata=cli("steering layers searched on selection (default: one, at 40% depth)"),
    )
    coeffs: str | tuple[float, ...] = field(
        default=(0.125, 0.25),
        metadata=cli("steering strengths searched, x the layer's median norm"),
    )
    selection_prompts: int = field(default=6, metadata=bounds(ge=1))
    max_ce_increase: float = field(
        default=1.0,
        metadata=bounds(gt=0) | cli("fluency bound of every choice, nats/token over unsteered"),
    )
    max_new_tokens: int = field(
        default=24, metadata=bounds(ge=1, le=1024) | cli("tokens generated per completion")
    )
    batch_rows: int = field(default=96, metadata=bounds(ge=1))
    lora_steps: int = field(default=12, metadata=bounds(ge=1) | cli("LoRA/DPO optimizer steps"))
    lora_rank: int = field(default=8, metadata=bounds(ge=1))
    lora_lr: float = field(default=1e-3, metadata=bounds(gt=0))
    dpo_lr: float = field(default=5e-4, metadata=bounds(gt=0))
    dpo_beta: float = field(default=0.1, metadata=bounds(gt=0))
    train_batch: int = field(default=8, metadata=bounds(ge=1))
    checkpoints: int = field(default=2, metadata=bounds(ge=1, le=10))
    max_context: int = field(
        default=512,
        metadata=bounds(ge=16) | cli("prompt tokens few-shot and contrast prompts may fill"),
    )
    neutral_prompts: int = field(default=8, metadata=bounds(ge=0))
    seed: int = field(default=0, metadata=cli("random seed"))
    chat: bool | None = field(default=None, metadata=cli("raw prompts, no template", "--no-chat"))

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "methods", parse_methods(self.methods))
        object.__setattr__(self, "train_sizes", parse_sizes(self.train_sizes))
        coeffs = parse_coeffs(self.coeffs)
        bad = [c for c in coeffs if not math.isfinite(c) or c <= 0]
        if bad or not coeffs:
            raise ConfigError("coeffs", f"coeffs must be positive and finite; got {bad}")
        object.__setattr__(self, "coeffs", tuple(float(c) for c in coeffs))


# ``--quick``: two training sizes, one draw, shorter completions and prompts (< 8 minutes for
# builtin:sentiment on smollm2-135m on 2 CPU cores)
QUICK = {
    "train_sizes": (1, 8),
    "draws": 1,
    "lora_steps": 8,
    "selection_prompts": 4,
    "max_new_tokens": 16,
    "max_context": 384,
}
