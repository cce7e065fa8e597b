"""The ``steerlab probe`` report: one self-contained page (inline CSS and PNG, no script, no
external URL, all text escaped by the template environment).

This module turns the report written as ``probe.json`` into the view that
``steerlab/report/templates/probe.html.j2`` renders; the figures are in :mod:`.plots`. The
page is written for a sceptical reader: every accuracy comes with its 95% interval, and the
summary says in words whether the controls that must fail did fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report._format import is_num, pick, png_bytes, run_timings
from ..report.render import config_rows, render, timings_view
from ..runs import Run, _finite
from . import plots

__all__ = ["probe_figures", "render_probe_html", "write_probe_report"]

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


def write_probe_report(run: Run, report: Mapping[str, Any]) -> None:
    """Write ``report.html`` (self-contained: the plots are embedded) into the run directory."""
    run.write_text("report.html", render_probe_html(report))


def _index(layers: Sequence[Any], layer: Any) -> int | None:
    return layers.index(layer) if layer in layers else None


def _score(rows: Any, i: int | None) -> dict[str, Any]:
    """Accuracy and AUROC with their intervals at layer index ``i`` of per-layer ``rows``."""
    rows = rows if isinstance(rows, Sequence) else []
    return pick(rows[i] if i is not None and i < len(rows) else None, SCORE_KEYS)


def _includes_chance(ci: Any) -> bool | None:
    """Whether a 95% interval contains 0.5; None without an interval."""
    ok = isinstance(ci, Sequence) and len(ci) == 2 and all(map(is_num, ci))
    return (ci[0] <= CHANCE <= ci[1]) if ok else None


def _reference(report: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The method the agreement is read against (mean_diff if run) and its best layer."""
    names = plots.method_names(report)
    ref = "mean_diff" if "mean_diff" in names else (names[0] if names else None)
    return ref, ((report.get("best") or {}).get(ref) or {}).get("layer")


def probe_figures(report: Mapping[str, Any]) -> dict[str, list[tuple[bytes, str]]]:
    """The page's PNGs with their captions, by section (``accuracy``, ``efficiency``,
    ``agreement``, ``transfer``, ``projections``); a section with nothing to draw has an empty
    list."""
    keys = ("accuracy", "efficiency", "agreement", "transfer", "projections")
    out: dict[str, list[tuple[bytes, str]]] = {k: [] for k in keys}
    if (fig := plots.accuracy_figure(report)) is not None:
        out["accuracy"].append(
            (
                png_bytes(fig),
                "Test accuracy (left) and AUROC (right) per layer. Coloured lines: the methods, "
                "shaded: bootstrap 95% interval, star: the layer chosen on validation. Grey "
                "dashed: the shuffled-label control and a random direction; black dash-dot: a "
                "fresh logistic probe after LEACE. These three should sit on the dotted chance "
                "line.",
            )
        )
    if (fig := plots.efficiency_figure(report)) is not None:
        out["efficiency"].append(
            (
                png_bytes(fig),
                "Test accuracy against training examples per class, each method at its best "
                "layer: the mean over random draws of the training examples, shaded: the "
                "middle 95% of the draws (none at the full training set: one draw).",
            )
        )
    ref, layer = _reference(report)
    if ref is not None and (fig := plots.agreement_figure(report, layer, ref)) is not None:
        out["agreement"].append(
            (
                png_bytes(fig),
                f"Cosine between the methods' unit directions at layer {layer}, where {ref} "
                "reads best (left), and between each method's direction and "
                f"{ref}'s at every layer (right). Each direction is signed so the positive "
                "class projects higher, so 1 is the same direction and -1 would be opposite.",
            )
        )
    if report.get("transfer") and (fig := plots.transfer_figure(report)) is not None:
        out["transfer"].append(
            (
                png_bytes(fig),
                "Accuracy per layer of each direction, fitted on train: on the test split "
                "(solid) and on the transfer set (dashed, shaded: 95% interval).",
            )
        )
    if (fig := plots.projection_figure(report)) is not None:
        out["projections"].append(
            (
                png_bytes(fig),
                "Each test example's projection on the method's direction at its best layer, "
                "by class (ticks below: one per example). Dashed: the threshold, the midpoint "
                "of the two train-class means; an example counts as correct on its class's "
                "side (positive above).",
            )
        )
    return out


def _best_view(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    methods = report.get("methods") or {}
    val = report.get("validation_accuracy") or {}
    rows = []
    for m in plots.method_names(report):
        b = (report.get("best") or {}).get(m) or {}
        i = _index(layers, b.get("layer"))
        vals = val.get(m) or []
        rows.append(
            {
                "method": m,
                "layer": b.get("layer"),
                "rule": b.get("rule"),
                **_score(methods.get(m), i),
                "val": vals[i] if i is not None and i < len(vals) else None,
            }
        )
    return rows


def _chance_view(rows: Any, layers: list[Any]) -> dict[str, Any] | None:
    """How often a line that must fail sits at chance: its accuracy range over layers, and
    the layers where its 95% interval excludes 0.5."""
    if not rows:
        return None
    scored = [(lay, _score(rows, i)) for i, lay in enumerate(layers)]
    accs = [(s["accuracy"], lay) for lay, s in scored if is_num(s["accuracy"])]
    inside = [_includes_chance(s["accuracy_ci"]) for _, s in scored]
    return {
        "n": len(scored),
        "at_chance": sum(v is True for v in inside),
        "unknown": sum(v is None for v in inside),
        "off": [lay for (lay, _), v in zip(scored, inside, strict=True) if v is False],
        "lo": min(accs)[0] if accs else None,
        "hi": max(accs)[0] if accs else None,
        "hi_layer": max(accs)[1] if accs else None,
    }


def _agreement_view(report: Mapping[str, Any], layers: list[Any]) -> dict[str, Any] | None:
    names = list((report.get("agreement") or {}).get("methods") or [])
    ref, layer = _reference(report)
    per = (report.get("agreement") or {}).get("cosine") or []
    i = _index(layers, layer)
    if ref not in names or i is None or i >= len(per):
        return None
    mat = per[i] if isinstance(per[i], Sequence) else []
    row = mat[names.index(ref)] if names.index(ref) < len(mat) else None
    row = row if isinstance(row, Sequence) else []
    others = [(n, row[j] if j < len(row) else None) for j, n in enumerate(names) if n != ref]
    vals = [v for _, v in others if is_num(v)]
    if not vals:
        return None
    d = (report.get("model") or {}).get("d_model")
    return {
        "ref": ref,
        "layer": layer,
        "others": others,
        "mean": sum(vals) / len(vals),
        "random_scale": 1 / math.sqrt(d) if is_num(d) and d > 0 else None,
        "d_model": d,
    }


def _layer_rows(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    methods = report.get("methods") or {}
    names = plots.method_names(report)
    best = report.get("best") or {}
    val = report.get("validation_accuracy") or {}
    c = list(report.get("logistic_c") or [])
    return [
        {
            "layer": lay,
            "methods": [
                {**_score(methods.get(m), i), "best": (best.get(m) or {}).get("layer") == lay}
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
            **{key: _score((report.get(sec) or {}).get(key), i) for sec, key in CHANCE_LINES},
            **{
                f"held_out_{key}": _score(
                    ((report.get("erasure") or {}).get("held_out") or {}).get(key), i
                )
                for key in ("before_erasure", "after_leace", "after_mean_diff_ablation")
            },
        }
        for i, lay in enumerate(layers)
    ]


def _efficiency_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
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


def _transfer_view(report: Mapping[str, Any], layers: list[Any]) -> dict[str, Any] | None:
    transfer = report.get("transfer")
    if not isinstance(transfer, Mapping) or not transfer:
        return None
    names = [m for m in plots.method_names(report) if m in transfer]
    methods = report.get("methods") or {}
    best = report.get("best") or {}
    at_best = []
    for m in names:
        lay = (best.get(m) or {}).get("layer")
        i = _index(layers, lay)
        t = _score(transfer.get(m), i)
        at_best.append(
            {
                "method": m,
                "layer": lay,
                "test": _score(methods.get(m), i),
                "transfer": t,
                "chance": _includes_chance(t["accuracy_ci"]),
            }
        )
    return {
        "methods": names,
        "at_best": at_best,
        "rows": [
            {
                "layer": lay,
                "cells": [
                    {"test": _score(methods.get(m), i), "transfer": _score(transfer.get(m), i)}
                    for m in names
                ],
            }
            for i, lay in enumerate(layers)
        ],
    }


def _leaders(rows: list[dict[str, Any]], key: str) -> tuple[list[str], Any]:
    vals = [(r[key], r["method"]) for r in rows if is_num(r[key])]
    if not vals:
        return [], None
    top = max(v for v, _ in vals)
    return list(dict.fromkeys(m for v, m in vals if v >= top - TIE)), top


def _read_vs_steer_view(rvs: Any) -> dict[str, Any] | None:
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
        readers, read = _leaders(sub, "read_accuracy")
        steerers, steer = _leaders(sub, "steer_effect")
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


def _projections_view(report: Mapping[str, Any], layers: list[Any]) -> list[dict[str, Any]]:
    proj = report.get("projections")
    if not isinstance(proj, Mapping):
        return []
    methods = report.get("methods") or {}
    out = []
    for m, p in proj.items():
        if not isinstance(p, Mapping):
            continue
        pos = [v for v in p.get("pos") or [] if is_num(v)]
        neg = [v for v in p.get("neg") or [] if is_num(v)]
        lay = p.get("layer")
        out.append(
            {
                "method": m,
                "layer": lay,
                "threshold": p.get("threshold"),
                "n_pos": len(pos),
                "n_neg": len(neg),
                "pos_mean": sum(pos) / len(pos) if pos else None,
                "neg_mean": sum(neg) / len(neg) if neg else None,
                "accuracy": plots.projection_accuracy(p),
                "reported": _score(methods.get(m), _index(layers, lay))["accuracy"],
            }
        )
    return out


def render_probe_html(report: Mapping[str, Any]) -> str:
    """The report page as a string. NaN values are shown as missing, as ``probe.json`` has
    them; ``report`` is not modified."""
    rep: dict[str, Any] = _finite(dict(report))
    model = rep.get("model") or {}
    data = rep.get("data") or {}
    config = rep.get("config") or {}
    layers = list(rep.get("layers") or [])
    chance = {key: _chance_view((rep.get(sec) or {}).get(key), layers) for sec, key in CHANCE_LINES}
    held = (rep.get("erasure") or {}).get("held_out") or {}
    for key in ("before_erasure", "after_leace", "after_mean_diff_ablation"):
        chance[f"held_out_{key}"] = _chance_view(held.get(key), layers)
    best = _best_view(rep, layers)
    top = [b for b in best if is_num(b["accuracy"])]
    return render(
        "probe.html.j2",
        title=f"Probe: {model.get('model_id', 'model')}",
        version=rep.get("steerlab_version"),
        model=pick(model, ("model_id", "model_type", "n_layers", "d_model")),
        position=config.get("position"),
        layers=layers,
        methods=plots.method_names(rep),
        best=best,
        top=max(top, key=lambda b: b["accuracy"]) if top else None,
        chance=chance,
        agreement=_agreement_view(rep, layers),
        layer_rows=_layer_rows(rep, layers),
        efficiency=_efficiency_view(rep),
        transfer=_transfer_view(rep, layers),
        rvs=_read_vs_steer_view(rep.get("read_vs_steer")),
        projections=_projections_view(rep, layers),
        figures=probe_figures(rep),
        counts=pick(
            data.get("counts"),
            ("train_pos", "train_neg", "test_pos", "test_neg", "transfer_pos", "transfer_neg"),
        ),
        data=config_rows({k: v for k, v in data.items() if k != "counts"}),
        timings=timings_view(run_timings(rep.get("timings"))),
        config=config_rows(config),
    )
