"""The ``steerlab probe`` report: one self-contained page (inline CSS and PNG, no script, no
external URL, all text escaped by the template environment).

This module turns the report written as ``probe.json`` into the view that
``steerlab/report/templates/probe.html.j2`` renders; the figures are in :mod:`.plots`. The
page is written for a sceptical reader: every accuracy comes with its 95% interval, and the
summary says in words whether the controls that must fail did fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..report._format import is_num, pick, png_bytes, run_timings
from ..report.render import config_rows, render, timings_view
from ..runs import Run, _finite
from . import plots
from .views import (
    CHANCE_LINES,
    agreement_view,
    best_view,
    chance_view,
    efficiency_view,
    layer_rows,
    nulls_view,
    projections_view,
    read_vs_steer_view,
    reference,
    transfer_view,
)

__all__ = ["probe_figures", "render_probe_html", "write_probe_report"]


def write_probe_report(run: Run, report: Mapping[str, Any]) -> None:
    """Write ``report.html`` (self-contained: the plots are embedded) into the run directory."""
    run.write_text("report.html", render_probe_html(report))


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
    ref, layer = reference(report)
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


def render_probe_html(report: Mapping[str, Any]) -> str:
    """The report page as a string. NaN values are shown as missing, as ``probe.json`` has
    them; ``report`` is not modified."""
    rep: dict[str, Any] = _finite(dict(report))
    model = rep.get("model") or {}
    data = rep.get("data") or {}
    config = rep.get("config") or {}
    layers = list(rep.get("layers") or [])
    chance = {key: chance_view((rep.get(sec) or {}).get(key), layers) for sec, key in CHANCE_LINES}
    held = (rep.get("erasure") or {}).get("held_out") or {}
    for key in ("before_erasure", "after_leace", "after_mean_diff_ablation"):
        chance[f"held_out_{key}"] = chance_view(held.get(key), layers)
    best = best_view(rep, layers)
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
        nulls=nulls_view(rep, layers),
        agreement=agreement_view(rep, layers),
        layer_rows=layer_rows(rep, layers),
        efficiency=efficiency_view(rep),
        transfer=transfer_view(rep, layers),
        rvs=read_vs_steer_view(rep.get("read_vs_steer")),
        projections=projections_view(rep, layers),
        figures=probe_figures(rep),
        counts=pick(
            data.get("counts"),
            ("train_pos", "train_neg", "test_pos", "test_neg", "transfer_pos", "transfer_neg"),
        ),
        data=config_rows({k: v for k, v in data.items() if k != "counts"}),
        timings=timings_view(run_timings(rep.get("timings"))),
        config=config_rows(config),
    )
