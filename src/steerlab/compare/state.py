"""The state one comparison shares between its steps, and how it measures treatments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..evaluate.measure import Measurer
from ..interventions import Compose, Intervention, NoOp
from ..interventions.ops import HOOK_KINDS
from ..io.prompts import read_prompts
from ..models.load import LoadedModel
from ..runs import Run
from .config import CompareConfig

__all__ = ["Compare"]

Pair3 = tuple[str, str, str]


def _hooks_only(t: Intervention) -> bool:
    return all(op["kind"] in HOOK_KINDS for op in t.ops())


def _split(t: Intervention) -> tuple[Intervention | None, Intervention]:
    """A treatment as (what is applied around the batch, this row's own treatment): what hooks
    can apply per row (steering, ablation, clamping) becomes the row, so candidates that share
    the rest (a prompt, an adapter) share batched forwards."""
    if _hooks_only(t):
        return None, t
    if isinstance(t, Compose) and len(t.items) == 2 and _hooks_only(t.items[1]):
        return t.items[0], t.items[1]
    return t, NoOp()


class Compare:
    """The state one comparison shares between its steps."""

    def __init__(self, lm: LoadedModel, behavior: Behavior, cfg: CompareConfig, run: Run) -> None:
        self.lm, self.behavior, self.cfg, self.run = lm, behavior, cfg, run
        self.scorer = make_scorer(behavior.scorer, description=behavior.description)
        sel = behavior.prompts("selection")
        self.sel = sel[: cfg.selection_prompts] if cfg.selection_prompts else sel
        self.test = behavior.prompts("test")
        self.neutral = read_prompts("builtin:harmless:val")[: cfg.neutral_prompts]
        self.pool: list[Pair3] = [(p.prompt, p.positive, p.negative) for p in behavior.pairs]
        self.longest = max([*self.sel, *self.test], key=len)
        self.measurer = Measurer(
            lm,
            behavior,
            self.scorer,
            max_new_tokens=cfg.max_new_tokens,
            batch_rows=cfg.batch_rows,
            neutral=self.neutral,
            chat=cfg.chat,
            engine=run.engine,
        )
        self.rows = 0
        self.tokens = 0
        # set by the capture step
        self.layers: list[int] = []
        self.norms: dict[int, float] = {}
        self.acts: dict[str, torch.Tensor] = {}
        self.per_pair = 0.0
        self.base_sel: dict[str, float] = {}  # the unsteered model on the selection split

    def evaluate(
        self, treatments: Sequence[Intervention], prompts: Sequence[str], *, kl: bool
    ) -> list[dict[str, Any]]:
        """Each treatment's per-prompt figures; treatments that share what is applied around
        the batch (a prompt, an adapter) run as rows of one batch under it."""
        parts = [_split(t) for t in treatments]
        groups: dict[int, list[int]] = {}
        for i, (base, _) in enumerate(parts):
            groups.setdefault(id(base), []).append(i)
        out: list[dict[str, Any]] = [{}] * len(treatments)
        for idx in groups.values():
            base = parts[idx[0]][0] or NoOp()
            with base.applied(self.lm) as view:
                rows = [parts[i][1] for i in idx]
                res = self.measurer.measure(rows, prompts, kl=kl, view=view)
            for i, r in zip(idx, res, strict=True):
                out[i] = r
                self.rows += len(prompts)
                self.tokens += r["tokens"]
        return out
