"""Read vs steer: does the direction that classifies best also steer best?

For each method, its direction at the layer where it reads best (chosen on validation), and
every method at one common layer (where the difference in means reads best), is added at the
same strength: ``coeff x`` the median residual norm at that layer, so only the direction
differs. Each is scored on the behaviour's selection prompts with the sweep's engine, beside
the unsteered model and a random direction of the same norm.
"""

from __future__ import annotations

from typing import Any

import torch

from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..evaluate.measure import Measurer, summarize
from ..evaluate.norms import random_units, residual_norms
from ..interventions.base import Intervention, NoOp
from ..interventions.treatments import Steer
from ..io.prompts import read_prompts
from ..metrics.stats import mean_ci
from ..models.load import LoadedModel
from ..runs import Run
from .result import ProbeResult

__all__ = ["read_vs_steer"]


Plan = list[tuple[str, int, str]]  # (method, layer, which rows it belongs to)


def _norms(run: Run, lm: LoadedModel, prompts: list[str], used: list[int], chat: Any) -> dict:
    """The median residual norm at each used layer (cached)."""
    raw = run.cache.json(
        "steer-norms",
        [prompts, used, chat],
        lambda: {str(k): v for k, v in residual_norms(lm, prompts, used, chat=chat).items()},
    )
    return {int(k): float(v) for k, v in raw.items()}


def _settings(
    plan: Plan,
    used: list[int],
    result: ProbeResult,
    norms: dict[int, float],
    rand: dict[int, torch.Tensor],
    coeff: float,
) -> list[Intervention]:
    """Unsteered, then each planned (method, layer), then a random direction at each layer."""

    def vec(m: str, lay: int) -> torch.Tensor:
        u = torch.tensor(result.row(lay).dirs[m], dtype=torch.float32)
        return u * (coeff * norms[lay])

    settings: list[Intervention] = [NoOp()]
    settings += [Steer(vec(m, lay), layers=lay, name=f"{m}@{lay}") for m, lay, _ in plan]
    settings += [
        Steer(rand[lay] * (coeff * norms[lay]), layers=lay, name=f"random@{lay}") for lay in used
    ]
    return settings


def _rows(
    plan: Plan, used: list[int], summ: list[dict[str, Any]], result: ProbeResult
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The method rows and the random rows, each effect against the unsteered ``summ[0]``."""
    base = summ[0]
    rows = []
    for (m, lay, why), s in zip(plan, summ[1 : 1 + len(plan)], strict=True):
        rows.append(
            {
                "method": m,
                "layer": lay,
                "which": why,
                "read_accuracy": result.row(lay).methods[m].accuracy,
                "steer_score": s["score"],
                "steer_ci": s["ci"],
                "steer_effect": s["score"] - base["score"],
                "ce_increase": s["ce"] - base["ce"],
                "kl": s["kl"],
                "n": s["n"],
            }
        )
    randoms = [
        {
            "layer": lay,
            "steer_score": s["score"],
            "steer_ci": s["ci"],
            "steer_effect": s["score"] - base["score"],
            "ce_increase": s["ce"] - base["ce"],
        }
        for lay, s in zip(used, summ[1 + len(plan) :], strict=True)
    ]
    return rows, randoms


def read_vs_steer(
    run: Run,
    lm: LoadedModel,
    behavior: Behavior,
    result: ProbeResult,
    cfg: Any,
) -> dict[str, Any]:
    scorer = make_scorer(behavior.scorer, description=behavior.description)
    prompts = behavior.prompts("selection")
    items = None if scorer.kind == "text" else list(behavior.items("selection"))
    methods = list(result.best)
    common = result.best.get("mean_diff", result.best[methods[0]])
    plan = [(m, result.best[m], "best layer for reading") for m in methods]
    plan += [(m, common, "common layer") for m in methods]
    used = sorted({lay for _, lay, _ in plan})
    norms = _norms(run, lm, prompts, used, cfg.chat)
    rand = random_units(lm.info.d_model, used, cfg.seed)
    settings = _settings(plan, used, result, norms, rand, cfg.steer_coeff)
    meas = Measurer(
        lm,
        behavior,
        scorer,
        max_new_tokens=cfg.max_new_tokens,
        neutral=read_prompts("builtin:harmless:val")[:12],
        chat=cfg.chat,
    )
    key = [[s.spec() for s in settings], prompts, cfg.max_new_tokens, cfg.chat, behavior.scorer]
    with run.bar("read vs steer", len(settings) * len(prompts)) as adv:
        res = run.cache.json(
            "read-vs-steer", key, lambda: meas.measure(settings, prompts, items=items, progress=adv)
        )
    summ = [summarize(r) | {"ci": list(mean_ci(r["score"]))} for r in res]
    base = summ[0]
    rows, randoms = _rows(plan, used, summ, result)
    return {
        "behavior": behavior.to_dict(),
        "coeff": cfg.steer_coeff,
        "scale": "coeff x the median residual norm at the layer (the same for every method)",
        "unsteered": {"score": base["score"], "ci": base["ci"], "ce": base["ce"], "n": base["n"]},
        "rows": rows,
        "random": randoms,
        "split": "selection",
    }
