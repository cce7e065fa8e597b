"""Options of the refusal-direction pipeline, in one serializable dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ..configs import MODEL_HELP, Checked, ConfigError, bounds, cli

__all__ = ["QUICK", "RefusalConfig"]


@dataclass(frozen=True)
class RefusalConfig(Checked):
    """Every knob of ``steerlab refusal``; recorded verbatim in ``report.json``.

    Attributes:
        model: built-in name, HF id, local dir or .gguf.
        harmful, harmless: training prompt sets (train split used for the difference in means).
        harmful_val, harmless_val: selection sets (never the evaluation sets).
        eval_harmful, eval_harmless: held-out evaluation sets.
        n_train, n_val, n_eval: caps on set sizes (first N after shuffling with ``seed``).
        max_prompt_tokens: prompts longer than this (rendered) are dropped, and the report says so.
        positions: how many post-instruction token positions (from the end) to try.
        prune_last: fraction of the deepest layers never selected (paper: 0.2).
        kl_max: KL bound on harmless val under ablation (paper: 0.1).
        induce_min: induce-score threshold (paper: 0, at coefficient 1).
        induce_coeff: coefficient of the addition used for the induce score (paper: 1).
        on_empty: when no candidate passes both filters: ``relax`` drops the induce filter and
            says so in the report; ``error`` stops.
        early_prompts: harmful val prompts used to pre-screen every candidate's bypass score.
        keep: candidates kept after the pre-screen for full scoring.
        screen: ``layers`` (screen the last position of every layer, then all positions of the
            best ``keep`` layers) or ``all`` (screen every candidate; slower).
        coeff: addition coefficient for evaluation: a number, or ``auto`` (the smallest of
            ``coeff_grid`` that makes ``induce_target`` of harmless *val* prompts score > 0).
        max_new_tokens: generation length for the phrase-based refusal rates.
        filter_train: keep only harmful train prompts the model refuses (score > 0) and
            harmless ones it answers (score < 0), as the paper does.
        filter_rule: ``score`` (the paper's log-odds > 0) or ``argmax`` (the most likely first
            token opens a refusal; keeps more prompts on models whose refusal mass is split).
        directions: how many of the best candidates (by the selection rule) are ablated and
            orthogonalized together, as the span of their orthonormalized mean differences;
            addition, subtraction and clamp use the first (best) one. At most ``keep``.
    """

    model: str = field(default="qwen2.5-coder-0.5b", metadata=cli(MODEL_HELP, "--model", "-m"))
    harmful: str = field(default="builtin:harmful:train", metadata=cli("harmful train prompts"))
    harmless: str = field(default="builtin:harmless:train", metadata=cli("harmless train prompts"))
    harmful_val: str = field(
        default="builtin:harmful:val", metadata=cli("harmful selection prompts")
    )
    harmless_val: str = field(
        default="builtin:harmless:val", metadata=cli("harmless selection prompts")
    )
    eval_harmful: str = field(
        default="builtin:harmful:test", metadata=cli("held-out harmful prompts")
    )
    eval_harmless: str = field(
        default="builtin:harmless:test", metadata=cli("held-out harmless prompts")
    )
    n_train: int = field(default=160, metadata=bounds(ge=1) | cli("train prompts per class (cap)"))
    # All 52 of the built-in val split: with a 32-prompt draw the best candidate's val KL
    # fell on either side of 0.1 depending on the draw.
    n_val: int = field(default=64, metadata=bounds(ge=1) | cli("val prompts per class (cap)"))
    n_eval: int = field(default=100, metadata=bounds(ge=1) | cli("eval prompts per class (cap)"))
    max_prompt_tokens: int = field(default=96, metadata=bounds(ge=1) | cli("drop longer prompts"))
    # 0: all post-instruction tokens of the chat template (at most 5)
    positions: int = field(
        default=0,
        metadata=bounds(ge=0) | cli("post-instruction positions to try (0: all, at most 5)"),
    )
    prune_last: float = field(
        default=0.2, metadata=bounds(ge=0, lt=1) | cli("deepest layer fraction never selected")
    )
    kl_max: float = field(
        default=0.1, metadata=bounds(gt=0) | cli("KL bound on harmless val under ablation")
    )
    induce_min: float = field(default=0.0, metadata=bounds() | cli("induce-score threshold"))
    induce_coeff: float = field(
        default=1.0,
        metadata=bounds() | cli("coefficient of the addition for the induce score"),
    )
    on_empty: Literal["relax", "error"] = field(
        default="relax", metadata=cli("when no candidate passes both filters")
    )
    early_prompts: int = field(default=8, metadata=bounds(ge=1))
    keep: int = field(
        default=4, metadata=bounds(ge=1) | cli("candidates fully scored after screening")
    )
    screen: Literal["layers", "all"] = field(
        default="layers", metadata=cli("which candidates the few-prompt screen scores")
    )
    coeff: str = field(
        default="auto", metadata=cli("addition coefficient for evaluation: auto or a number")
    )
    coeff_grid: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    induce_target: float = field(default=0.9, metadata=bounds(gt=0, le=1))
    max_new_tokens: int = field(
        default=32, metadata=bounds(ge=1) | cli("tokens generated in evaluation")
    )
    batch_size: int = field(default=16, metadata=bounds(ge=1) | cli("prompts per forward"))
    seed: int = field(default=0, metadata=cli("shuffles and the random control"))
    chat: bool | None = field(default=None, metadata=cli("raw prompts, no template", "--no-chat"))
    filter_train: bool = field(default=True, metadata=cli("skip the refusal filter", "--no-filter"))
    filter_rule: Literal["score", "argmax"] = field(
        default="score", metadata=cli("which train prompts count as refused/answered")
    )
    directions: int = field(
        default=1,
        metadata=bounds(ge=1)
        | cli(
            "best candidates ablated together as one orthonormalized span (addition and clamp "
            "use the first)"
        ),
    )

    def check(self) -> None:
        if self.directions > self.keep:
            raise ConfigError(
                "directions",
                f"directions ({self.directions}) must be at most keep ({self.keep}): only keep "
                "candidates are fully scored; raise keep",
            )
        if self.coeff != "auto":
            try:
                ok = math.isfinite(float(self.coeff))
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError("coeff", f"coeff must be auto or a number, got {self.coeff!r}")
        if not self.coeff_grid or not all(math.isfinite(c) for c in self.coeff_grid):
            raise ConfigError("coeff_grid", "coeff_grid must hold finite numbers")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coeff_grid"] = list(self.coeff_grid)
        return d

    def with_overrides(self, **kw: Any) -> RefusalConfig:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# The laptop preset saves on evaluation (fewer held-out prompts, shorter generations) and on
# the number of token positions tried; it keeps the full train and val sets, so it selects on
# the same data as the full preset. With 64 train prompts only 10 harmful ones passed the
# refusal filter, their noisy mean difference pushed the KL of every middle-layer candidate
# over the bound, and an embedding-adjacent layer (2) won; with 16-32 val prompts the best
# candidate's KL fell on either side of the bound depending on the draw.
QUICK: dict[str, Any] = dict(n_eval=32, positions=2, max_new_tokens=24)
