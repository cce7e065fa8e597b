"""The sections of the probe report page, as views: plain dicts and lists the template
``probe.html.j2`` formats. Every number shown is read from ``probe.json`` (the pipeline computes
it); a view only picks, pairs and compares what is there, e.g. which layers sit at chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report._format import is_num, pick
from . import plots

__all__ = ["CHANCE_LINES", "agreement_view", "best_view", "chance_view", "efficiency_view"]
__all__ += ["layer_rows", "nulls_view", "projections_view", "read_vs_steer_view", "reference"]
__all__ += ["transfer_view"]

CHANCE = 0.5
SCORE_KEYS = ("accuracy", "accuracy_ci", "auroc", "auroc_ci")
RVS_KEYS = (
    "method",
    "layer",
    "which",
    "read_accuracy",
    "steer_score",
    "steer_ci",
    "steer_effect",
    "ce_increase",
    "kl",
    "n",
)
# (section, key) of the per-layer lines that should sit at chance: the controls, and a fresh
# logistic probe after erasure (LEACE; the mean-difference direction projected out)
CHANCE_LINES = (
    ("controls", "shuffled"),
    ("controls", "random"),
    ("erasure", "after_leace"),
    ("erasure", "after_mean_diff_ablation"),
)
TIE = 1e-9  # values this close count as equal when naming the best reader and steerer


def layer_index(layers: Sequence[Any], layer: Any) -> int | None:
    return layers.index(layer) if layer in layers else None


def score_at(rows: Any, i: int | None) -> dict[str, Any]:
    """Accuracy and AUROC with their intervals at layer index ``i`` of per-layer ``rows``."""
    rows = rows if isinstance(rows, Sequence) else []
    return pick(rows[i] if i is not None and i < len(rows) else None, SCORE_KEYS)


def includes_chance(ci: Any) -> bool | None:
    """Whether a 95% interval contains 0.5; None without an interval."""
    ok = isinstance(ci, Sequence) and len(ci) == 2 and all(map(is_num, ci))
    return (ci[0] <= CHANCE <= ci[1]) if ok else None


def reference(report: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The method the agreement is read against (mean_diff if run) and its best layer."""
    names = plots.method_names(report)
    ref = "mean_diff" if "mean_diff" in names else (names[0] if names else None)
    return ref, ((report.get("best") or {}).get(ref) or {}).get("layer")


def best_view(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    methods = report.get("methods") or {}
    val = report.get("validation_accuracy") or {}
    rows = []
    for m in plots.method_names(report):
        b = (report.get("best") or {}).get(m) or {}
        i = layer_index(layers, b.get("layer"))
        vals = val.get(m) or []
        rows.append(
            {
                "method": m,
                "layer": b.get("layer"),
                "rule": b.get("rule"),
                **score_at(methods.get(m), i),
                "val": vals[i] if i is not None and i < len(vals) else None,
            }
        )
    return rows


def chance_view(rows: Any, layers: list[Any]) -> dict[str, Any] | None:
    """How often a line that must fail sits at chance: its accuracy range over layers, and
    the layers where its 95% interval excludes 0.5."""
    if not rows:
        return None
    scored = [(lay, score_at(rows, i)) for i, lay in enumerate(layers)]
    accs = [(s["accuracy"], lay) for lay, s in scored if is_num(s["accuracy"])]
    inside = [includes_chance(s["accuracy_ci"]) for _, s in scored]
    return {
        "n": len(scored),
        "at_chance": sum(v is True for v in inside),
        "unknown": sum(v is None for v in inside),
        "off": [lay for (lay, _), v in zip(scored, inside, strict=True) if v is False],
        "lo": min(accs)[0] if accs else None,
        "hi": max(accs)[0] if accs else None,
        "hi_layer": max(accs)[1] if accs else None,
    }


def agreement_view(report: Mapping[str, Any], layers: list[Any]) -> dict[str, Any] | None:
    names = list((report.get("agreement") or {}).get("methods") or [])
    ref, layer = reference(report)
    per = (report.get("agreement") or {}).get("cosine") or []
    i = layer_index(layers, layer)
    if ref not in names or i is None or i >= len(per):
        return None
    mat = per[i] if isinstance(per[i], Sequence) else []
    row = mat[names.index(ref)] if names.index(ref) < len(mat) else None
    row = row if isinstance(row, Sequence) else []
    others = [(n, row[j] if j < len(row) else None) for j, n in enumerate(names) if n != ref]
    if not any(is_num(v) for _, v in others):
        return None
    d = (report.get("model") or {}).get("d_model")
    return {
        "ref": ref,
        "layer": layer,
        "others": others,
        "mean": (report.get("agreement") or {}).get("mean_cosine_to_reference"),  # pipeline's
        "random_scale": 1 / math.sqrt(d) if is_num(d) and d > 0 else None,
        "d_model": d,
    }


def layer_rows(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    methods = report.get("methods") or {}
    names = plots.method_names(report)
    best = report.get("best") or {}
    val = report.get("validation_accuracy") or {}
    c = list(report.get("logistic_c") or [])
    return [
        {
            "layer": lay,
            "methods": [
                {**score_at(methods.get(m), i), "best": (best.get(m) or {}).get("layer") == lay}
                for m in names
            ],
            "val": [
                {
                    "value": (val.get(m) or [])[i] if i < len(val.get(m) or []) else None,
                    "best": (best.get(m) or {}).get("layer") == lay,
                }
                for m in names
            ],
            "c": c[i] if i < len(c) else None,
            **{key: score_at((report.get(sec) or {}).get(key), i) for sec, key in CHANCE_LINES},
            **{
                f"held_out_{key}": score_at(
                    ((report.get("erasure") or {}).get("held_out") or {}).get(key), i
                )
                for key in ("before_erasure", "after_leace", "after_mean_diff_ablation")
            },
        }
        for i, lay in enumerate(layers)
    ]


def efficiency_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    eff = report.get("sample_efficiency") or {}
    names = [m for m in plots.method_names(report) if eff.get(m)]
    if not names:
        return None
    by = {m: {p.get("n_per_class"): p for p in eff[m] if isinstance(p, Mapping)} for m in names}
    sizes = sorted({n for d in by.values() for n in d if is_num(n)})
    rows = [
        {
            "n": n,
            "draws": max(
                (by[m][n].get("draws") for m in names if is_num(by[m].get(n, {}).get("draws"))),
                default=None,
            ),
            "cells": [pick(by[m].get(n), ("accuracy", "interval")) for m in names],
        }
        for n in sizes
    ]

    def leader(n: Any) -> dict[str, Any] | None:
        accs = [
            (by[m][n]["accuracy"], m) for m in names if is_num(by[m].get(n, {}).get("accuracy"))
        ]
        if not accs:
            return None
        top = max(a for a, _ in accs)
        return {"n": n, "accuracy": top, "methods": [m for a, m in accs if a >= top - TIE]}

    best = report.get("best") or {}
    return {
        "methods": [(m, (best.get(m) or {}).get("layer")) for m in names],
        "rows": rows,
        "leaders": [x for x in (leader(sizes[0]), leader(sizes[-1])) if x] if sizes else [],
    }


def transfer_view(report: Mapping[str, Any], layers: list[Any]) -> dict[str, Any] | None:
    transfer = report.get("transfer")
    if not isinstance(transfer, Mapping) or not transfer:
        return None
    names = [m for m in plots.method_names(report) if m in transfer]
    methods = report.get("methods") or {}
    best = report.get("best") or {}
    at_best = []
    for m in names:
        lay = (best.get(m) or {}).get("layer")
        i = layer_index(layers, lay)
        t = score_at(transfer.get(m), i)
        at_best.append(
            {
                "method": m,
                "layer": lay,
                "test": score_at(methods.get(m), i),
                "transfer": t,
                "chance": includes_chance(t["accuracy_ci"]),
            }
        )
    return {
        "methods": names,
        "at_best": at_best,
        "rows": [
            {
                "layer": lay,
                "cells": [
                    {"test": score_at(methods.get(m), i), "transfer": score_at(transfer.get(m), i)}
                    for m in names
                ],
            }
            for i, lay in enumerate(layers)
        ],
    }


def leaders(rows: list[dict[str, Any]], key: str) -> tuple[list[str], Any]:
    vals = [(r[key], r["method"]) for r in rows if is_num(r[key])]
    if not vals:
        return [], None
    top = max(v for v, _ in vals)
    return list(dict.fromkeys(m for v, m in vals if v >= top - TIE)), top


def read_vs_steer_view(rvs: Any) -> dict[str, Any] | None:
    """The read-vs-steer table, and per group of rows (each method at its own best reading
    layer; every method at one common layer) whether the best reader also steers best."""
    if not isinstance(rvs, Mapping) or not rvs:
        return None
    randoms = [
        pick(r, ("layer", "steer_score", "steer_ci", "steer_effect", "ce_increase"))
        for r in rvs.get("random") or []
    ]
    rand_by_layer = {r["layer"]: r["steer_effect"] for r in randoms}
    rows = [
        {**pick(r, RVS_KEYS), "random_effect": rand_by_layer.get(r.get("layer"))}
        for r in rvs.get("rows") or []
    ]
    groups = []
    for which in dict.fromkeys(r["which"] for r in rows):
        sub = [r for r in rows if r["which"] == which]
        readers, read = leaders(sub, "read_accuracy")
        steerers, steer = leaders(sub, "steer_effect")
        if not readers or not steerers:
            continue
        effects = [r["steer_effect"] for r in sub if is_num(r["steer_effect"])]
        lays = sorted({r["layer"] for r in sub if r["layer"] is not None})
        rand = [r["steer_effect"] for r in randoms if r["layer"] in lays]
        rand = [v for v in rand if is_num(v)]
        reader_effect = max(
            (
                r["steer_effect"]
                for r in sub
                if r["method"] in readers and is_num(r["steer_effect"])
            ),
            default=None,
        )
        groups.append(
            {
                "which": which,
                "layers": lays,
                "readers": readers,
                "read_accuracy": read,
                "steerers": steerers,
                "steer_effect": steer,
                "reader_effect": reader_effect,
                "same": bool(set(readers) & set(steerers)),
                "lo": min(effects),
                "hi": max(effects),
                "random_lo": min(rand, default=None),
                "random_hi": max(rand, default=None),
            }
        )
    return {
        "behavior": pick(rvs.get("behavior"), ("name", "source", "scorer", "description")),
        **pick(rvs, ("coeff", "scale", "split")),
        "unsteered": pick(rvs.get("unsteered"), ("score", "ce", "n")),
        "rows": rows,
        "random": randoms,
        "groups": groups,
    }


def projections_view(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    proj = report.get("projections")
    if not isinstance(proj, Mapping):
        return []
    methods = report.get("methods") or {}
    out = []
    for m, p in proj.items():
        if not isinstance(p, Mapping):
            continue
        lay = p.get("layer")
        out.append(
            {
                "method": m,
                "layer": lay,
                "threshold": p.get("threshold"),
                "n_pos": sum(map(is_num, p.get("pos") or [])),
                "n_neg": sum(map(is_num, p.get("neg") or [])),
                **pick(p, ("pos_mean", "neg_mean", "accuracy")),  # from fit.projection_summary
                "reported": score_at(methods.get(m), layer_index(layers, lay))["accuracy"],
            }
        )
    return out


NULL_KEYS = ("accuracy", "accuracy_ci", "accuracy_sd", "draws")


def nulls_view(report: Mapping[str, Any], layers: list[Any]) -> dict[str, Any] | None:
    """Each method's test accuracy at its best layer beside the two nulls there (label
    permutations, random directions): their mean and spread and the method's percentile and
    p-value within them, all as the pipeline stored them (:mod:`.nulls`)."""
    controls = report.get("controls") or {}
    methods = report.get("methods") or {}
    rows = []
    for m in plots.method_names(report):
        i = layer_index(layers, ((report.get("best") or {}).get(m) or {}).get("layer"))
        if i is None:
            continue
        row: dict[str, Any] = {"method": m, "layer": layers[i], **score_at(methods.get(m), i)}
        for key in ("shuffled", "random"):
            per = controls.get(key) or []
            null = per[i] if i < len(per) and isinstance(per[i], Mapping) else {}
            row[key] = {
                **pick(null, NULL_KEYS),
                "percentile": (null.get("percentile") or {}).get(m),
                "p_value": (null.get("p_value") or {}).get(m),
            }
        rows.append(row)
    if not rows:
        return None
    return {
        "n_permutations": controls.get("n_permutations"),
        "n_random_directions": controls.get("n_random_directions"),
        "rows": rows,
    }
