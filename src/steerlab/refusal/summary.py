"""The coefficient scan and the report of a refusal run (``report.json`` contract)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..evaluate.refusal import last_token_logprobs, refusal_scores
from ..interventions import steer
from ..models.load import LoadedModel
from ..runcache import RunCache
from .config import RefusalConfig

__all__ = ["build_report", "choose_coeff", "write_report"]


def choose_coeff(
    lm: LoadedModel,
    vec: torch.Tensor,
    layer: int,
    prompts: list[str],
    ids: list[int],
    cfg: RefusalConfig,
    cache: RunCache,
    key: Any,
    bar: Callable[[str, int], Any],
) -> tuple[float, list[dict[str, float]]]:
    grid = list(cfg.coeff_grid) if cfg.coeff == "auto" else [float(cfg.coeff)]

    def scan() -> list[dict[str, float]]:
        rows = []
        with bar("coefficient: harmless val", len(grid)) as adv:
            for c in grid:
                with steer(lm.model, vec, layers=layer, coeff=c, adapter=lm.adapter):
                    s = refusal_scores(
                        last_token_logprobs(
                            lm.model,
                            lm.tokenizer,
                            prompts,
                            batch_size=cfg.batch_size,
                            chat=cfg.chat,
                        ),
                        ids,
                    )
                rows.append(
                    {
                        "coeff": c,
                        "induce_score": float(s.mean()),
                        "frac_positive": float((s > 0).float().mean()),
                    }
                )
                adv(1)
        return rows

    rows = cache.json("coefficient", [key, grid, prompts], scan)
    if cfg.coeff != "auto":
        return float(cfg.coeff), rows
    hit = [r for r in rows if r["frac_positive"] >= cfg.induce_target]
    best = hit[0] if hit else max(rows, key=lambda r: (r["frac_positive"], r["induce_score"]))
    return float(best["coeff"]), rows


def build_report(
    lm: LoadedModel,
    cfg: RefusalConfig,
    best: dict[str, Any],
    cands: list[dict[str, Any]],
    metrics: dict[str, Any],
    completions: dict[str, dict[str, list[str]]],
    data: Any,
    filter_counts: dict[str, int],
    timings: dict[str, float],
    notes: list[str],
    coeff: float,
    coeff_scan: list[dict[str, float]],
    clamp_value: float,
    base_h_scores: list[float],
    base_hl: torch.Tensor,
    ids: list[int],
    exported: dict[str, Any] | None,
    k: int,
    hits: list[str],
) -> dict[str, Any]:
    examples = []
    for which, prompts in (("harmful", data.eval_harmful), ("harmless", data.eval_harmless)):
        for i, p in enumerate(prompts[:6]):
            examples.append(
                {
                    "set": which,
                    "prompt": p,
                    "completions": {
                        v: sets[which][i] for v, sets in completions.items() if which in sets
                    },
                }
            )
    dis = {w: metrics["baseline"].get(f"{w}_disagreement") for w in ("harmful", "harmless")}
    return {
        "model": lm.info.model_id,
        "config": {
            **cfg.to_dict(),
            "positions_used": k,
            "refusal_token_ids": ids,
            "coeff_chosen": coeff,
            "clamp_value": clamp_value,
            "data": data.sizes(),
        },
        "selected": {
            "layer": best["layer"],
            "position": best["position"],
            "bypass_score": best["bypass_score"],
            "induce_score": best["induce_score"],
            "kl_score": best["kl_score"],
            "coeff": coeff,
        },
        "selection_rule": (
            f"lowest bypass score with induce > {cfg.induce_min:g} (coefficient "
            f"{cfg.induce_coeff:g}) and KL < {cfg.kl_max:g}; last {cfg.prune_last:.0%} of layers "
            f"pruned; candidates pre-screened ({cfg.screen}) on {cfg.early_prompts} val "
            f"prompts, best {cfg.keep} fully scored"
        ),
        "candidates": [
            {
                kk: c[kk]
                for kk in (
                    "layer",
                    "position",
                    "bypass_score",
                    "induce_score",
                    "kl_score",
                    "screen_bypass",
                    "status",
                )
            }
            for c in cands
        ],
        "coefficient_scan": coeff_scan,
        "baseline_scores": {
            "harmful_val_mean": float(sum(base_h_scores) / len(base_h_scores)),
            "harmless_val_mean": float(refusal_scores(base_hl, ids).mean()),
        },
        "variants": metrics,
        "disagreement": dis,
        "examples": examples,
        "filter": filter_counts,
        "export": exported,
        "timings": timings,
        "resumed_steps": sorted(set(hits)),
        "notes": notes,
        "steerlab_version": __version__,
    }


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    tmp = out_dir / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out_dir / "report.json")
    try:
        from ..report.refusal import write_refusal_report
    except ImportError:  # pragma: no cover - the report package ships with steerlab
        return
    write_refusal_report(report, out_dir)
