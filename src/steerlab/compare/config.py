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


def parse_coeffs(text: str | tuple[float, ...], name: str = "coeffs") -> tuple[float, ...]:
    """A comma list of numbers (``0.125,0.25``); a tuple passes through."""
    if not isinstance(text, str):
        return tuple(text)
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(name, f"{name} must be numbers like 0.25,0.5; got {text!r}") from None


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
        layers: steering layers searched on the selection split (default: four across the
            depth, at 25, 40, 55 and 70%).
        coeffs: steering strengths searched, x the layer's median residual norm (or their
            comma list). Layers x strengths is steering's budget of candidates.
        selection_prompts: selection prompts every choice is made on (0: the whole split).
        max_ce_increase: the fluency bound of every choice, for every method (the sweep's
            rule); a method with one candidate (a prompt) is marked over the bound when it is.
        lora_steps / lora_rank / lora_lrs / dpo_lrs / dpo_beta: finetuning; every learning
            rate is trained and ``checkpoints`` evenly spaced steps of each are candidates, so
            learning rates x checkpoints matches steering's layers x strengths by default.
        random_directions: norm-matched random directions scored on the test split at
            mean_diff's chosen cell (draw 0) at every N: the random null.
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
        default=3, metadata=bounds(ge=1, le=100) | cli("random nested subsets of the pairs")
    )
    layers: str | None = field(
        default=None,
        metadata=cli("steering layers searched on selection (default: 4 across the depth)"),
    )
    coeffs: str | tuple[float, ...] = field(
        default=(0.25, 0.5, 1.0),
        metadata=cli("steering strengths searched, x the layer's median norm"),
    )
    selection_prompts: int = field(default=0, metadata=bounds(ge=0))
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
    lora_lrs: str | tuple[float, ...] = field(
        default=(3e-4, 1e-3, 3e-3), metadata=cli("LoRA SFT learning rates searched")
    )
    dpo_lrs: str | tuple[float, ...] = field(
        default=(1.5e-4, 5e-4, 1.5e-3), metadata=cli("DPO learning rates searched")
    )
    dpo_beta: float = field(default=0.1, metadata=bounds(gt=0))
    train_batch: int = field(default=8, metadata=bounds(ge=1))
    checkpoints: int = field(
        default=4,
        metadata=bounds(ge=1, le=20) | cli("checkpoints per learning rate, chosen on selection"),
    )
    random_directions: int = field(
        default=20,
        metadata=bounds(ge=0, le=1000)
        | cli("norm-matched random directions at the chosen cell per N (the null; 0: none)"),
    )
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
        for name in ("coeffs", "lora_lrs", "dpo_lrs"):
            values = parse_coeffs(getattr(self, name), name)
            bad = [c for c in values if not math.isfinite(c) or c <= 0]
            if bad or not values:
                raise ConfigError(name, f"{name} must be positive and finite; got {bad}")
            object.__setattr__(self, name, tuple(dict.fromkeys(float(c) for c in values)))


# ``--quick``: two training sizes, ONE draw (intervals then cover prompts, not draws: the
# report says so), 2 strengths x 4 layers against 2 learning rates x 4 checkpoints, 12
# selection prompts, shorter completions and prompts.
QUICK = {
    "train_sizes": (1, 8),
    "draws": 1,
    "coeffs": (0.25, 0.5),
    "lora_steps": 8,
    "lora_lrs": (1e-3, 3e-3),
    "dpo_lrs": (5e-4, 1.5e-3),
    "selection_prompts": 12,
    "max_new_tokens": 16,
    "max_context": 384,
}
