"""``steerlab sweep``: where, how strong and where it breaks.

Steps (each cached in the run directory; an interrupted sweep resumes chunk by chunk):

1. the direction (extracted from the behaviour's contrast data, or given) and the typical
   residual norm at every layer, so coefficients mean the same everywhere;
2. the unsteered model on the selection split;
3. the grid layer x coefficient x positions on the selection split (or successive halving);
4. the chosen cell by the recorded rule, re-scored on the test split beside the unsteered model
   and a random vector of the same norm at the same cell, with bootstrap 95% intervals;
5. optionally the multi-layer maps (pairs of the best layers, sufficiency vs necessity).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..capture import resolve_layers
from ..directions.artifact import Direction
from ..directions.extract import data_hash, extract
from ..errors import LayerError
from ..evaluate.measure import Measurer, summarize
from ..evaluate.norms import random_units, residual_norms
from ..evaluate.select import choose, rule_text
from ..interventions.per_row import RowSetting
from ..io.prompts import read_prompts
from ..metrics.stats import mean_ci
from ..models.load import LoadedModel
from ..runs import Run, key_of
from .config import SweepConfig
from .grid import Cell, verdict
from .search import search_grid

__all__ = ["default_layers", "run_sweep"]


def default_layers(n_layers: int) -> list[int]:
    """The middle 80% of the blocks: the first and last few rarely steer anything useful."""
    lo, hi = round(0.1 * n_layers), round(0.9 * n_layers)
    return list(range(lo, max(hi, lo + 1)))


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
        )
        width = lm.info.d_model
        self.random = random_units(width, layers, cfg.seed)
        self.rows_run = 0
        self.tokens = 0

    def items(self, split: str) -> list[Any] | None:
        if self.scorer.kind == "text":
            return None
        return list(self.behavior.items(split))  # type: ignore[arg-type]

    def random_setting(self, cell: Cell) -> RowSetting:
        delta = self.random[cell.layer] * (cell.coeff * self.norms[cell.layer])
        return RowSetting(
            add={cell.layer: delta},
            positions=cell.positions,  # type: ignore[arg-type]
            label=f"random {cell.key}",
        )

    def evaluate(
        self,
        settings: Sequence[RowSetting],
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

                def compute(chunk: list[RowSetting] = chunk) -> list[dict[str, Any]]:
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


def _interval(per: dict[str, Any]) -> dict[str, Any]:
    s = summarize(per)
    lo, hi = mean_ci(per["score"])
    return {
        "score": s["score"],
        "ci": [lo, hi],
        "ce": s["ce"],
        "n": s["n"],
        "distinct2": s["distinct2"],
        "longest_repeat": s["longest_repeat"],
        "kl": s["kl"],
    }


def run_sweep(
    lm: LoadedModel,
    behavior: Behavior,
    cfg: SweepConfig,
    out: str | Path,
    *,
    vector: Direction | None = None,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a sweep into ``out`` and return the report written as ``sweep.json``."""
    from . import maps
    from .report import write_sweep_report

    make_scorer(behavior.scorer, description=behavior.description)  # a missing library: now
    behavior.check_splits()
    n_layers = lm.info.n_layers
    layers = resolve_layers(cfg.layers, n_layers) if cfg.layers else default_layers(n_layers)
    if vector is not None:
        vector.check_model(lm.info)
        if len(vector.layers) > 1:
            missing = [lay for lay in layers if lay not in vector.layers]
            if missing:
                raise LayerError(
                    f"the vector has no row for layer(s) {missing}; its layers: "
                    f"{list(vector.layers)}"
                )
    run = Run(out, kind="sweep", lm=lm, progress=progress, status=status)
    say = run.say
    sel = behavior.prompts("selection")
    with run.step("direction"):
        if vector is not None:
            units = {lay: vector.unit(lay if len(vector.layers) > 1 else None) for lay in layers}
            source: dict[str, Any] = {
                "kind": "given",
                **{k: vector.meta.get(k) for k in ("method", "data_hash", "site")},
            }
        else:
            pos, neg, chat, what = behavior.contrast(lm.tokenizer)
            say(f"extracting the {cfg.method} direction from {what} at {len(layers)} layers")
            key = [pos, neg, chat, cfg.method, layers]
            t = run.cache.tensors(
                "direction",
                key,
                lambda: {
                    "v": extract(lm, pos, neg, method=cfg.method, layers=layers, chat=chat).vectors
                },
            )
            units = {lay: t["v"][i] / t["v"][i].norm() for i, lay in enumerate(layers)}
            source = {
                "kind": "extracted",
                "method": cfg.method,
                "from": what,
                "data_hash": data_hash(pos, neg),
            }
            meta = {
                "model": lm.info.to_dict(),
                "site": "resid_pre",
                "method": cfg.method,
                "position": "last",
                "behavior": behavior.name,
                "data_hash": source["data_hash"],
                "steerlab_version": __version__,
            }
            Direction(t["v"], tuple(layers), meta).save(run.path("direction.safetensors"))
    with run.step("norms"):
        raw = run.cache.json(
            "norms",
            [sel, layers, cfg.chat],
            lambda: {str(k): v for k, v in residual_norms(lm, sel, layers, chat=cfg.chat).items()},
        )
        norms = {int(k): float(v) for k, v in raw.items()}
    sw = Sweep(lm, behavior, cfg, run, layers, units, norms)
    with run.step("unsteered"):
        per = sw.evaluate([RowSetting(label="unsteered")], sel, sw.items("selection"), "base")[0]
        base = {**summarize(per), "_per": per}
    with run.step("grid"):
        cells, search = search_grid(sw, base)
        full = [c for c in cells if c["prompts"] == len(sel)]
        if cfg.random_control:
            grid_cells = [Cell(c["layer"], c["coeff"], c["positions"]) for c in full]
            rres = sw.evaluate(
                [sw.random_setting(c) for c in grid_cells],
                sel,
                sw.items("selection"),
                "random-grid",
            )
            for rec, r in zip(full, rres, strict=True):
                s = summarize(r)
                rec["random"] = {
                    "score": s["score"],
                    "ce": s["ce"],
                    "effect": s["score"] - base["score"],
                }
    pick = choose(full, base["ce"], cfg.max_ce_increase)
    best = pick["cell"]
    chosen = Cell(best["layer"], best["coeff"], best["positions"])
    say(f"chosen: layer {chosen.layer}, coefficient {chosen.coeff:g}, positions {chosen.positions}")
    with run.step("test"):
        test = behavior.prompts("test")
        trio = [
            chosen.setting(units, norms, "steered"),
            RowSetting(label="unsteered"),
            sw.random_setting(chosen),
        ]
        res = sw.evaluate(trio, test, sw.items("test"), "test")
        test_rep = {
            name: _interval(r)
            for name, r in zip(("steered", "unsteered", "random"), res, strict=True)
        }
    report: dict[str, Any] = {
        "kind": "sweep",
        "steerlab_version": __version__,
        "model": lm.info.to_dict(),
        "behavior": behavior.to_dict(),
        "scorer": sw.scorer.spec(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "direction": source,
        "layers": layers,
        "norms": {str(k): v for k, v in norms.items()},
        "unsteered_selection": {k: v for k, v in base.items() if k != "_per"},
        "cells": cells,
        "search": search,
        "chosen": {
            **chosen.to_dict(),
            "key": chosen.key,
            "rule": rule_text(cfg.max_ce_increase),
            "within_bound": pick["within_bound"],
            "selection": {k: best[k] for k in ("score", "ce", "ce_increase", "n")},
        },
        "test": test_rep,
        "verdict": verdict(test_rep),
        "examples": {
            name: [
                {"prompt": p, "completion": c} for p, c in zip(test, r["completions"], strict=False)
            ][:6]
            for name, r in zip(("steered", "unsteered", "random"), res, strict=True)
        },
    }
    if cfg.pairs >= 2 or cfg.profile:
        with run.step("maps"):
            report["maps"] = maps.multi_layer(sw, full, chosen, base)
    report["cost"] = {"rows_generated": sw.rows_run, "tokens_generated": sw.tokens}
    report["timings"] = run.timing_report()
    run.write_json("sweep.json", report)
    write_sweep_report(run, report)
    return report
