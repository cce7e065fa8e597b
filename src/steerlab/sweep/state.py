"""The state one sweep shares between its steps: model, behaviour, scorer, measurer, units,
norms and the cost counters. Its own module so that the steps (:mod:`.search`, :mod:`.maps`)
and :mod:`.pipeline`, which drives them, all import it without importing each other."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..evaluate.measure import Measurer
from ..evaluate.norms import random_units
from ..interventions.base import Intervention
from ..interventions.treatments import Steer
from ..io.prompts import read_prompts
from ..models.load import LoadedModel
from ..runs import Run, key_of
from .config import SweepConfig
from .grid import Cell

__all__ = ["Sweep"]


class Sweep:
    """The state one sweep shares between its steps."""

    def __init__(
        self,
        lm: LoadedModel,
        behavior: Behavior,
        cfg: SweepConfig,
        run: Run,
        layers: list[int],
        units: dict[int, torch.Tensor],
        norms: dict[int, float],
    ) -> None:
        self.lm, self.behavior, self.cfg, self.run = lm, behavior, cfg, run
        self.layers, self.units, self.norms = layers, units, norms
        self.scorer = make_scorer(behavior.scorer, description=behavior.description)
        neutral = read_prompts("builtin:harmless:val")[: cfg.neutral_prompts]
        self.measurer = Measurer(
            lm,
            behavior,
            self.scorer,
            max_new_tokens=cfg.max_new_tokens,
            batch_rows=cfg.batch_rows,
            neutral=neutral,
            chat=cfg.chat,
            engine=run.engine,
        )
        width = lm.info.d_model
        self.random = random_units(width, layers, cfg.seed)
        self.rows_run = 0
        self.tokens = 0

    def items(self, split: str) -> list[Any] | None:
        if self.scorer.kind == "text":
            return None
        return list(self.behavior.items(split))  # type: ignore[arg-type]

    def random_setting(self, cell: Cell, draw: int = 0) -> Steer:
        """A norm-matched random vector at ``cell``: draw 0 is the grid's control, draws 1...
        the rest of the test split's null distribution."""
        unit = (
            self.random[cell.layer]
            if draw == 0
            else random_units(self.lm.info.d_model, [cell.layer], self.cfg.seed * 7919 + draw)[
                cell.layer
            ]
        )
        delta = unit * (cell.coeff * self.norms[cell.layer])
        return Steer(
            delta,
            layers=cell.layer,
            positions=cell.positions,  # type: ignore[arg-type]
            name=f"random {cell.key}" if draw == 0 else f"random#{draw} {cell.key}",
        )

    def evaluate(
        self,
        settings: Sequence[Intervention],
        prompts: Sequence[str],
        items: Sequence[Any] | None,
        step: str,
        *,
        kl: bool = True,
    ) -> list[dict[str, Any]]:
        """Per-prompt figures of each setting, in cached chunks (resumable, and identical on
        resume: chunks are cut from the ordered list, never from what is already done)."""
        per_chunk = max(1, (2 * self.cfg.batch_rows) // max(len(prompts), 1))
        base_key = [
            list(prompts),
            [repr(i) for i in items or []],
            {k: v for k, v in self.scorer.spec().items() if k != "stats"},  # not counters
            self.cfg.max_new_tokens,
            self.cfg.batch_rows,
            self.cfg.chat,
            list(self.measurer.neutral) if kl else None,
        ]
        out: list[dict[str, Any]] = []
        with self.run.bar(f"{step}: {len(settings)} settings", len(settings) * len(prompts)) as adv:
            for i in range(0, len(settings), per_chunk):
                chunk = list(settings[i : i + per_chunk])
                key = [base_key, [s.spec() for s in chunk]]

                def compute(chunk: list[Intervention] = chunk) -> list[dict[str, Any]]:
                    t0 = time.perf_counter()
                    res = self.measurer.measure(chunk, prompts, items=items, kl=kl, progress=adv)
                    for r in res:
                        r["seconds"] = (time.perf_counter() - t0) / len(res)
                    return res

                before = len(self.run.cache.hits)
                res = self.run.cache.json(f"{step}-{key_of(key)[:12]}", key, compute)
                if len(self.run.cache.hits) > before:
                    adv(len(chunk) * len(prompts))
                else:
                    self.rows_run += len(chunk) * len(prompts)
                    self.tokens += sum(r["tokens"] for r in res)
                out += res
        return out
