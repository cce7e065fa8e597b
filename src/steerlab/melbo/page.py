"""The ``steerlab discover`` report: one self-contained page (inline CSS and PNG, no script,
no external URL, all text escaped by the template environment) and the radius-sweep plot.

This module turns the report and completions into the view
``steerlab/report/templates/discover.html.j2`` renders; the page's markup lives in the template.
It sits in ``melbo/`` beside the pipeline, as the probe and sweep pages do, so that ``report/``
never imports ``melbo/`` (which writes this page).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report._format import new_figure, png_bytes
from ..report.render import config_rows, render, timings_view
from .findings import DiscoverReport, Radius
from .metrics import CHANGED_TOKENS, METRICS
from .report import CLUSTER_METHOD

__all__ = ["discover_files", "radius_figure", "render_discover_html"]

EXAMPLES = 3  # completions per card
SWEEP_KEYS = ("changed", "new_opening_max", "loss")  # per grid point, learned and random
# (header, metric key, format) per metric, in METRICS order.
METRIC_COLUMNS = tuple(
    zip(
        ("changed", "edit distance", "new opening", "loss", "loss increase"),
        METRICS,
        ("pct", "float", "pct", "float", "float"),
        strict=True,
    )
)


Report = DiscoverReport | Mapping[str, Any]  # a report dict (report.json) is parsed first


def _parsed(report: Report) -> DiscoverReport:
    return report if isinstance(report, DiscoverReport) else DiscoverReport.from_dict(report)


def discover_files(report: Report, completions: Mapping[str, Any]) -> dict[str, bytes]:
    """``report.html`` (and ``radius_sweep.png`` when R was swept), as ``{name: bytes}``."""
    rep = _parsed(report)
    files: dict[str, bytes] = {}
    png = None
    if rep.radius.sweep:
        png = files["radius_sweep.png"] = png_bytes(radius_figure(rep.radius))
    html = render_discover_html(rep, completions, png)
    return {"report.html": html.encode("utf-8"), **files}


def radius_figure(radius: Radius) -> Any:
    """Change (left) and fluency (right) against R for learned and random vectors."""
    pts = radius.sweep
    rs = [p["radius"] for p in pts]
    fig = new_figure((10, 3.6))
    ax1, ax2 = fig.subplots(1, 2, sharex=True)
    style = {"learned": dict(color="#c0392b", marker="o"), "random": dict(color="0.45", marker="s")}
    for kind, st in style.items():

        def get(p: Mapping[str, Any], key: str, kind: str = kind) -> float:
            v = p[kind].get(key)  # every grid point measured both kinds
            return math.nan if v is None else float(v)

        ax1.plot(rs, [get(p, "changed") for p in pts], label=f"{kind}: changed", **st)
        ax1.plot(rs, [get(p, "new_opening_max") for p in pts], ls="--", **st)
        ax2.plot(rs, [get(p, "loss") for p in pts], label=kind, **st)
    base = radius.unsteered_loss
    if base is not None:
        ax2.axhline(base, color="#2e6da4", lw=1, ls=":", label="unsteered")
        limit = base + (radius.fluency_margin or 0.0)
        ax2.axhline(limit, color="#2e6da4", lw=1, ls="--", label="fluency limit")
    for ax in (ax1, ax2):
        ax.axvline(radius.value, color="gold", lw=2, alpha=0.8, label="chosen R")
        ax.set_xscale("log")
        ax.set_xlabel("radius R")
        ax.grid(alpha=0.3)
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_title(f"changed (first {CHANGED_TOKENS} tokens); dashed: best new opening", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.set_title("loss of the completions under the unsteered model (nats/token)", fontsize=9)
    ax2.legend(fontsize=8)
    return fig


def _pick(d: Any, keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` of ``d``, None where absent, so the template never meets an undefined name."""
    d = d if isinstance(d, Mapping) else {}
    return {k: d.get(k) for k in keys}


def _metrics(m: Any) -> dict[str, Any]:
    return _pick(m, METRICS)


def _card(entry: Mapping[str, Any], unsteered: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    rows = [
        {"prompt": c.get("prompt"), "unsteered": u.get("text"), "steered": c.get("text")}
        for c, u in zip(entry["completions"][:EXAMPLES], unsteered[:EXAMPLES], strict=False)
    ]
    sign = "+1" if entry["sign"] > 0 else "−1"
    return {
        "title": f"{entry['kind']} vector {entry['index']}, sign {sign}",
        "metrics": _metrics(entry.get("metrics")),
        "failed": entry.get("failed"),
        "rows": rows,
    }


def _radius_view(rad: Radius) -> dict[str, Any] | None:
    if not rad.sweep:
        return None
    keys = ("rule", "fluency_margin", "median_source_norm", "sweep_vectors", "sweep_steps")
    view = {k: getattr(rad, k) for k in (*keys, "sweep_prompts")}
    view["points"] = [
        {
            "radius": p.get("radius"),
            "factor": p.get("factor"),
            **{kind: _pick(p.get(kind), SWEEP_KEYS) for kind in ("learned", "random")},
            "fluent": bool(p.get("fluent")),
            "chosen": i == rad.chosen_index,
        }
        for i, p in enumerate(rad.sweep)
    ]
    return view


def render_discover_html(
    report: Report, completions: Mapping[str, Any], png: bytes | None = None
) -> str:
    """The report page as a string (``png``: the radius-sweep plot, if any)."""
    rep = _parsed(report)
    model = rep.model.get("model_id", "unknown model")
    unsteered = completions.get("unsteered") or []  # completions.json: any part may be absent
    entries = completions.get("vectors") or []
    groups = []
    for c in rep.clusters:
        members = [e for e in entries if e["kind"] == "learned" and e.get("cluster") == c.id]
        cards = [_card(e, unsteered) for e in members]
        groups.append({"id": c.id, "size": c.size, "terms": ", ".join(c.terms) or None,
                       "cards": cards})  # fmt: skip
    return render(
        "discover.html.j2",
        title=f"MELBO discovery: {model}",
        model=model,
        version=rep.steerlab_version,
        metric_columns=METRIC_COLUMNS,
        setup=_pick(rep.melbo, ("num_vectors", "source_layer", "target_layer")),
        radius={"value": rep.radius.value, "auto": rep.radius.auto},
        summary={k: _metrics(_summary(rep, k)) for k in ("learned", "random")},
        unsteered_loss=rep.unsteered_loss,
        notes=[n for n in rep.notes if n],
        sweep=_radius_view(rep.radius),
        png=png,
        cluster_method=CLUSTER_METHOD,
        groups=groups,
        control_seed=rep.config.get("control_seed"),
        random_cards=[_card(e, unsteered) for e in entries if e["kind"] == "random"],
        vectors=[
            {
                "kind": e["kind"],
                "index": e["index"],
                "sign": f"{e['sign']:+d}",
                "metrics": _metrics(e.get("metrics")),
                "cluster": e.get("cluster"),
                "failed": bool(e.get("failed")),
            }
            for e in entries
        ],
        timings=timings_view(
            {"timings": rep.timings, "compute_seconds": rep.compute_seconds}
            | {"resumed_steps": rep.resumed_steps}
        ),
        config=config_rows(rep.config),
    )


def _summary(rep: DiscoverReport, kind: str) -> dict[str, Any] | None:
    group = rep.summary.get(kind)  # a partial report may have no summary
    return group.to_dict() if group else None
