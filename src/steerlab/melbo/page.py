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


def discover_files(report: Mapping[str, Any], completions: Mapping[str, Any]) -> dict[str, bytes]:
    """``report.html`` (and ``radius_sweep.png`` when R was swept), as ``{name: bytes}``."""
    files: dict[str, bytes] = {}
    png = None
    if (report.get("radius") or {}).get("sweep"):
        png = files["radius_sweep.png"] = png_bytes(radius_figure(report["radius"]))
    html = render_discover_html(report, completions, png)
    return {"report.html": html.encode("utf-8"), **files}


def radius_figure(radius: Mapping[str, Any]) -> Any:
    """Change (left) and fluency (right) against R for learned and random vectors."""
    pts = radius["sweep"]
    rs = [p["radius"] for p in pts]
    fig = new_figure((10, 3.6))
    ax1, ax2 = fig.subplots(1, 2, sharex=True)
    style = {"learned": dict(color="#c0392b", marker="o"), "random": dict(color="0.45", marker="s")}
    for kind, st in style.items():

        def get(p: Mapping[str, Any], key: str, kind: str = kind) -> float:
            v = (p.get(kind) or {}).get(key)
            return math.nan if v is None else float(v)

        ax1.plot(rs, [get(p, "changed") for p in pts], label=f"{kind}: changed", **st)
        ax1.plot(rs, [get(p, "new_opening_max") for p in pts], ls="--", **st)
        ax2.plot(rs, [get(p, "loss") for p in pts], label=kind, **st)
    base = radius.get("unsteered_loss")
    if base is not None:
        ax2.axhline(base, color="#2e6da4", lw=1, ls=":", label="unsteered")
        limit = base + radius["fluency_margin"]
        ax2.axhline(limit, color="#2e6da4", lw=1, ls="--", label="fluency limit")
    for ax in (ax1, ax2):
        ax.axvline(radius["value"], color="gold", lw=2, alpha=0.8, label="chosen R")
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


def _radius_view(rad: Mapping[str, Any]) -> dict[str, Any] | None:
    if not rad.get("sweep"):
        return None
    keys = ("rule", "fluency_margin", "median_source_norm", "sweep_vectors", "sweep_steps")
    view = _pick(rad, (*keys, "sweep_prompts"))
    view["points"] = [
        {
            "radius": p.get("radius"),
            "factor": p.get("factor"),
            **{kind: _pick(p.get(kind), SWEEP_KEYS) for kind in ("learned", "random")},
            "fluent": bool(p.get("fluent")),
            "chosen": i == rad.get("chosen_index"),
        }
        for i, p in enumerate(rad["sweep"])
    ]
    return view


def render_discover_html(
    report: Mapping[str, Any], completions: Mapping[str, Any], png: bytes | None = None
) -> str:
    """The report page as a string (``png``: the radius-sweep plot, if any)."""
    model = (report.get("model") or {}).get("model_id", "unknown model")
    unsteered = completions.get("unsteered") or []
    entries = completions.get("vectors") or []
    summary = report.get("summary") or {}
    rad = report.get("radius") or {}
    cfg = report.get("config") or {}
    melbo = cfg.get("melbo") or {}
    groups = []
    for c in report.get("clusters") or []:
        members = [e for e in entries if e["kind"] == "learned" and e.get("cluster") == c["id"]]
        terms = ", ".join(c.get("terms") or []) or None
        cards = [_card(e, unsteered) for e in members]
        groups.append({"id": c["id"], "size": c.get("size"), "terms": terms, "cards": cards})
    return render(
        "discover.html.j2",
        title=f"MELBO discovery: {model}",
        model=model,
        version=report.get("steerlab_version"),
        metric_columns=METRIC_COLUMNS,
        setup=_pick(melbo, ("num_vectors", "source_layer", "target_layer")),
        radius={"value": rad.get("value"), "auto": rad.get("mode") == "auto"},
        summary={k: _metrics(summary.get(k)) for k in ("learned", "random")},
        unsteered_loss=report.get("unsteered_loss"),
        notes=[n for n in report.get("notes") or [] if n],
        sweep=_radius_view(rad),
        png=png,
        cluster_method=CLUSTER_METHOD,
        groups=groups,
        control_seed=cfg.get("control_seed"),
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
        timings=timings_view(report),
        config=config_rows(report.get("config")),
    )
