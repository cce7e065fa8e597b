"""The ``steerlab discover`` report: one self-contained page (inline CSS and PNG, no script,
no external URL, all text escaped) and the radius-sweep plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..melbo.metrics import CHANGED_TOKENS, METRICS
from ..melbo.report import CLUSTER_METHOD
from . import _html
from ._html import DASH, esc, fmt_float, fmt_pct, table

__all__ = ["discover_files", "radius_figure", "render_discover_html"]

EXAMPLES = 3  # completions per card


def discover_files(report: Mapping[str, Any], completions: Mapping[str, Any]) -> dict[str, bytes]:
    """``report.html`` (and ``radius_sweep.png`` when R was swept), as ``{name: bytes}``."""
    files: dict[str, bytes] = {}
    png = None
    if (report.get("radius") or {}).get("sweep"):
        png = files["radius_sweep.png"] = _html.png_bytes(radius_figure(report["radius"]))
    html = render_discover_html(report, completions, png)
    return {"report.html": html.encode("utf-8"), **files}


def radius_figure(radius: Mapping[str, Any]) -> Any:
    """Change (left) and fluency (right) against R for learned and random vectors."""
    pts = radius["sweep"]
    rs = [p["radius"] for p in pts]
    fig = _html.new_figure((10, 3.6))
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


# ------------------------------------------------------------------------------ HTML

_STYLE = """<style>
.card { border: 1px solid #ccc; border-radius: 4px; padding: 0.4em 0.8em; margin: 0.8em 0; }
.card h4 { margin: 0.2em 0; } .failed { border-color: #c0392b; background: #fdf0ee; }
</style>"""
_HEAD = ["", "changed", "edit distance", "new opening", "loss", "loss increase"]


def _metric_cells(m: Mapping[str, Any]) -> list[str]:
    fmts = (fmt_pct, fmt_float, fmt_pct, fmt_float, fmt_float)
    return [f(m.get(key)) for f, key in zip(fmts, METRICS, strict=True)]


def _card(entry: Mapping[str, Any], unsteered: Sequence[Mapping[str, Any]], n: int) -> str:
    sign = "+1" if entry["sign"] > 0 else "−1"
    m = entry.get("metrics") or {}
    failed = entry.get("failed")
    head = f"{entry['kind']} vector {entry['index']}, sign {sign}"
    line = ", ".join(f"{h} {c}" for h, c in zip(_HEAD[1:], _metric_cells(m), strict=True))
    rows = [
        [c["prompt"], u.get("text", DASH), c["text"]]
        for c, u in zip(entry["completions"][:n], unsteered[:n], strict=False)
    ]
    return (
        f'<div class="card{" failed" if failed else ""}"><h4>{esc(head)}</h4>'
        f'<p class="muted">{esc(line)}</p>'
        + (f"<p><strong>failed:</strong> {esc(failed)}</p>" if failed else "")
        + table(["prompt", "unsteered", "steered"], rows, table_class="completions")
        + "</div>"
    )


def _summary(report: Mapping[str, Any]) -> str:
    s = report.get("summary") or {}
    rad = report.get("radius") or {}
    cfg = (report.get("config") or {}).get("melbo") or {}
    learned, rand = s.get("learned") or {}, s.get("random") or {}
    how = "chosen by the radius sweep" if rad.get("mode") == "auto" else "fixed"
    text = (
        f"<p>{esc(cfg.get('num_vectors', DASH))} vectors of norm R = "
        f"<strong>{esc(fmt_float(rad.get('value')))}</strong> ({esc(how)}) added at the input "
        f"of block {esc(cfg.get('source_layer', DASH))}, trained to change the input of block "
        f"{esc(cfg.get('target_layer', DASH))}, each used with sign +1 and −1. Learned vectors "
        f"changed <strong>{esc(fmt_pct(learned.get('changed')))}</strong> of completions; "
        f"random vectors of the same norm changed {esc(fmt_pct(rand.get('changed')))}. "
        f"Unsteered loss: {esc(fmt_float(report.get('unsteered_loss')))} nats/token.</p>"
    )
    rows = [[k, *_metric_cells(s.get(k) or {})] for k in ("learned", "random")]
    return (
        f'<section class="summary">{text}'
        + table(["vectors", *_HEAD[1:]], rows, numeric=range(1, 6))
        + "</section>"
    )


def _radius_section(rad: Mapping[str, Any], png: bytes | None) -> str:
    if not rad.get("sweep"):
        return ""
    out = [
        "<h2>Radius sweep</h2>",
        f"<p>Rule: {esc(rad.get('rule', DASH))} Fluency margin: "
        f"{esc(fmt_float(rad.get('fluency_margin')))} nats/token. Grid: multiples of the median "
        f"‖resid_pre[S]‖ = {esc(fmt_float(rad.get('median_source_norm')))}; short runs of "
        f"{esc(rad.get('sweep_vectors'))} vectors × {esc(rad.get('sweep_steps'))} steps on "
        f"{esc(rad.get('sweep_prompts'))} prompts.</p>",
    ]
    if png is not None:
        out.append(_html.figure_html(png, "Change and fluency against the radius; gold: chosen R."))
    rows, classes = [], []
    for i, p in enumerate(rad["sweep"]):
        lr, rd = p.get("learned") or {}, p.get("random") or {}
        rows.append([
            f"{p['radius']:.4g}", _html.fmt_value(p.get("factor")), fmt_pct(lr.get("changed")),
            fmt_pct(rd.get("changed")), fmt_pct(lr.get("new_opening_max")),
            fmt_pct(rd.get("new_opening_max")), fmt_float(lr.get("loss")),
            fmt_float(rd.get("loss")), "yes" if p.get("fluent") else "no",
        ])  # fmt: skip
        classes.append("selected" if i == rad.get("chosen_index") else "")
    head = ["R", "× norm", "changed (learned)", "changed (random)", "best new opening (learned)"]
    head += ["best new opening (random)", "loss (learned)", "loss (random)", "fluent"]
    out.append(table(head, rows, numeric=range(8), row_classes=classes))
    return "".join(out)


def _vector_table(entries: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [e["kind"], e["index"], f"{e['sign']:+d}", *_metric_cells(e.get("metrics") or {}),
         DASH if e.get("cluster") is None else e["cluster"], "failed" if e.get("failed") else ""]
        for e in entries
    ]  # fmt: skip
    head = ["kind", "vector", "sign", *_HEAD[1:], "group", ""]
    return "<h2>All vectors</h2>" + table(head, rows, numeric=range(1, 9))


def render_discover_html(
    report: Mapping[str, Any], completions: Mapping[str, Any], png: bytes | None = None
) -> str:
    """The report page as a string (see :func:`write_discover_report`)."""
    model = (report.get("model") or {}).get("model_id", "unknown model")
    n = EXAMPLES
    unsteered = completions.get("unsteered") or []
    entries = completions.get("vectors") or []
    body = [
        _STYLE,
        f"<h1>MELBO discovery: {esc(model)}</h1>",
        '<p class="muted">Unsupervised steering vectors (Mack &amp; Turner 2024, "Mechanistically '
        'eliciting latent behaviors in language models"), beside random vectors of the same '
        "norm as a control.</p>",
        _summary(report),
        _html.notes_section(report.get("notes")),
        _radius_section(report.get("radius") or {}, png),
        "<h2>Learned vectors, grouped by what they do</h2>",
        f'<p class="muted">{esc(CLUSTER_METHOD)}</p>',
    ]
    for c in report.get("clusters") or []:
        members = [e for e in entries if e["kind"] == "learned" and e.get("cluster") == c["id"]]
        terms = ", ".join(c.get("terms") or []) or DASH
        body.append(f"<h3>Group {esc(c['id'])} ({esc(c['size'])}): {esc(terms)}</h3>")
        body += [_card(e, unsteered, n) for e in members]
    body.append(
        "<h2>Random control</h2><p>Random directions of the same norm, seeds "
        f"{esc((report.get('config') or {}).get('control_seed', DASH))} + j: what steering "
        "with no learning does.</p>"
    )
    body += [_card(e, unsteered, n) for e in entries if e["kind"] == "random"]
    body += [
        _vector_table(entries),
        _html.timings_section(report.get("timings")),
        _html.config_section(report.get("config")),
        f"<footer>Generated by steerlab {esc(report.get('steerlab_version', DASH))}.</footer>",
    ]
    return _html.page(f"MELBO discovery: {model}", "\n".join(b for b in body if b))
