"""The random null of a comparison: norm-matched random directions at mean_diff's chosen cell,
scored on the test prompts, so that steering is placed in a distribution of pushes of the same
size rather than beside one random draw."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate.norms import random_units
from ..interventions import Steer
from ..metrics.stats import null_percentile, percentile_interval
from .state import Compare

__all__ = ["null_report", "random_null"]


def _mean(xs: list[float]) -> float:
    v = np.asarray(xs, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def random_null(c: Compare, runs: list[dict[str, Any]], key: list[Any]) -> dict[int, dict]:
    """Per N: ``random_directions`` norm-matched random directions at mean_diff's chosen cell
    (draw 0) on the test prompts; each direction's mean score and the per-prompt mean."""
    cfg, out = c.cfg, {}
    for n in cfg.train_sizes:
        r = next(
            (x for x in runs if x["method"] == "mean_diff" and x["n"] == n and x["draw"] == 0),
            None,
        )
        if r is None or not cfg.random_directions:
            continue
        layer, coeff = int(r["chosen"]["layer"]), float(r["chosen"]["coeff"])

        def compute(layer: int = layer, coeff: float = coeff, n: int = n) -> dict[str, Any]:
            width, norm = c.lm.info.d_model, c.norms[layer]
            rows = [
                Steer(
                    random_units(width, [layer], cfg.seed * 7919 + 1000 + j)[layer],
                    layers=layer,
                    coeff=coeff * norm,
                    name=f"null#{j}",
                )
                for j in range(cfg.random_directions)
            ]
            c.run.say(f"random null at N = {n}: {len(rows)} directions at layer {layer}")
            res = c.evaluate(rows, c.test, kl=False)
            return {"scores": [x["score"] for x in res], "ce": [_mean(x["ce"]) for x in res]}

        got = c.run.cache.json(f"null-n{n}", [key, layer, coeff, cfg.random_directions], compute)
        per = np.array(got["scores"], dtype=float)  # (directions, prompts)
        out[n] = {
            "n": n,
            "cell": {"layer": layer, "coeff": coeff},
            "scores": np.nanmean(per, axis=1).tolist(),
            "per_prompt": np.nanmean(per, axis=0).tolist(),
            "ce": _mean(got["ce"]),
        }
    return out


def null_report(
    null: dict[int, dict], summary: list[dict[str, Any]], sizes: list[int], k: int
) -> dict[str, Any] | None:
    """``random_null`` of ``compare.json``: the largest N's null (its directions' scores, and
    every method's percentile in it there), and every N's."""
    if not null:
        return None
    big = max(null)
    scores = null[big]["scores"]
    return {
        "n_directions": k,
        "n": big,
        "cell": null[big]["cell"],
        "scores": scores,
        "ci": list(percentile_interval(scores)),
        "ce": null[big]["ce"],
        "percentile": {
            r["method"]: null_percentile(r["score"], scores) for r in summary if r["n"] == big
        },
        "by_n": [
            {kk: v for kk, v in null[n].items() if kk != "per_prompt"} for n in sizes if n in null
        ],
    }
