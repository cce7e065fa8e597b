"""Report for the refusal-direction pipeline: PNG plots and one self-contained HTML page.

The pipeline follows Arditi et al. 2024, "Refusal in language models is mediated by a single
direction": candidate directions (one per layer and post-instruction position) are scored by how
much ablating them removes refusal on harmful prompts (bypass), how much adding them induces
refusal on harmless ones (induce) and how much ablating them changes harmless next-token
distributions (KL); one is selected and evaluated under several interventions.

matplotlib is imported inside the plotting functions, so ``import steerlab.report`` stays light.
Figures are drawn on an Agg canvas attached to a bare ``Figure``: no pyplot, no global backend
switch, nothing left registered after the call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._html import (
    DASH,
    config_section,
    esc,
    figure_html,
    fmt_float,
    fmt_pct,
    fmt_rate,
    fmt_value,
    notes_section,
    num_or_nan,
    page,
    png_bytes,
    table,
    timings_section,
)
from ._plots import (
    SCORE_PANELS,
    _ordered,
    _selected_scores,
    candidates_heatmap_figure,
    refusal_rates_figure,
    scores_by_layer_figure,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "candidates_heatmap_figure",
    "refusal_files",
    "refusal_rates_figure",
    "scores_by_layer_figure",
    "write_refusal_report",
]

STATUS_ORDER = ("selected", "kept", "pruned_layer", "pruned_early", "failed_induce", "failed_kl")
# Variant-table columns after the name: (header, metric key); keys ending in _rate get their CI.
VARIANT_COLUMNS = (
    ("harmful refusal", "harmful_refusal_rate"),
    ("harmless refusal", "harmless_refusal_rate"),
    ("harmful refusal (strict)", "harmful_refusal_rate_strict"),
    ("harmless refusal (strict)", "harmless_refusal_rate_strict"),
    ("harmful score", "harmful_score_mean"),
    ("harmless score", "harmless_score_mean"),
    ("KL (harmless)", "kl_harmless"),
    ("CE loss (harmless)", "ce_loss_harmless"),
    ("CE loss (completions)", "ce_loss_completions"),
)
# Shown only when some variant has them (per-variant substring vs strict disagreement).
OPTIONAL_COLUMNS = (
    ("disagree (harmful)", "harmful_disagreement"),
    ("disagree (harmless)", "harmless_disagreement"),
)
FIGURES = (  # (file name, caption), in page order
    (
        "refusal_rates.png",
        "Refusal rate per intervention; error bars are confidence intervals, hatched bars the "
        "strict measure.",
    ),
    (
        "scores_by_layer.png",
        "Candidate scores by layer, one line per position; grey bands are pruned layers, the "
        "star is the selected candidate.",
    ),
    ("candidates_heatmap.png", "Bypass score for every layer × position candidate."),
)
TOP_CANDIDATES = 20


def refusal_files(report: Mapping[str, Any]) -> dict[str, bytes]:
    """``report.html`` and its PNG plots, as ``{file name: bytes}`` (nothing is written).

    The page is self-contained: PNGs are embedded as base64 data URIs, CSS is inline, there is no
    JavaScript and no external URL. Plots without data (e.g. no candidates) are left out. The
    ``report`` mapping is not modified.

    Args:
        report: the refusal pipeline's report dict (model, config, selected, candidates,
            variants, examples, ...). Rates and CIs are fractions in [0, 1]; None means "not
            computed" and is shown as '—', never drawn as zero.
    """
    figures = {
        "scores_by_layer.png": scores_by_layer_figure(report),
        "refusal_rates.png": refusal_rates_figure(report),
        "candidates_heatmap.png": candidates_heatmap_figure(report),
    }
    images = {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}
    return {"report.html": render_refusal_html(report, images).encode("utf-8"), **images}


def write_refusal_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write :func:`refusal_files` into ``out_dir``, each file atomically; returns the paths
    (``report.html`` first).

    Example::

        paths = write_refusal_report(result, Path("runs/qwen-refusal"))
        print(paths[0])  # runs/qwen-refusal/report.html
    """
    from ..runs import atomic_write

    out = Path(out_dir)
    return [atomic_write(out / name, data) for name, data in refusal_files(report).items()]


# ------------------------------------------------------------------------------ HTML


def _summary(report: Mapping[str, Any]) -> str:
    sel = _selected_scores(report)
    variants: Mapping[str, Mapping[str, Any]] = report.get("variants") or {}
    base = report.get("baseline_scores") or {}
    parts = []
    if sel is None:
        parts.append("<p>No direction was selected.</p>")
    else:
        parts.append(
            f"<p>The refusal direction was taken from <strong>layer {esc(sel['layer'])}</strong>"
            f", <strong>position {esc(sel.get('position', DASH))}</strong> (token offset from the"
            " end of the prompt), chosen by the rule:"
            f" <em>{esc(report.get('selection_rule', DASH))}</em>.</p>"
        )
        coeff = (
            ""
            if sel.get("coeff") is None
            else f"; addition coefficient {esc(fmt_float(sel.get('coeff')))}"
        )
        parts.append(
            "<p>With this direction ablated, the mean refusal score on harmful validation prompts"
            f" is {esc(fmt_float(sel.get('bypass_score')))} (no intervention:"
            f" {esc(fmt_float(base.get('harmful_val_mean')))}); with it added, the mean refusal"
            f" score on harmless prompts is {esc(fmt_float(sel.get('induce_score')))} (no"
            f" intervention: {esc(fmt_float(base.get('harmless_val_mean')))}); KL on harmless"
            f" prompts under ablation is {esc(fmt_float(sel.get('kl_score')))}{coeff}.</p>"
        )

    def rate(name: str, key: str) -> Any:
        return (variants.get(name) or {}).get(key)

    items = []
    b, a = rate("baseline", "harmful_refusal_rate"), rate("ablation", "harmful_refusal_rate")
    if b is not None or a is not None:
        line = (
            f"Harmful prompts refused: <strong>{esc(fmt_pct(b))}</strong> without intervention"
            f" → <strong>{esc(fmt_pct(a))}</strong> with the direction ablated"
        )
        bs, as_ = (
            rate("baseline", "harmful_refusal_rate_strict"),
            rate("ablation", "harmful_refusal_rate_strict"),
        )
        if bs is not None or as_ is not None:
            line += f" (strict measure: {esc(fmt_pct(bs))} → {esc(fmt_pct(as_))})"
        items.append(line + ".")
    h = rate("addition", "harmless_refusal_rate")
    if h is not None:
        items.append(
            f"Harmless prompts refused with the direction added: <strong>"
            f"{esc(fmt_pct(h))}</strong> (without intervention:"
            f" {esc(fmt_pct(rate('baseline', 'harmless_refusal_rate')))})."
        )
    kl = rate("ablation", "kl_harmless")
    if kl is not None:
        items.append(
            f"KL divergence on harmless prompts under ablation: <strong>"
            f"{esc(fmt_float(kl))}</strong>."
        )
    r = rate("random", "harmful_refusal_rate")
    if r is not None:
        items.append(f"Control, random direction: {esc(fmt_pct(r))} of harmful prompts refused.")
    if items:
        parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return '<section class="summary">' + "".join(parts) + "</section>"


def _variants_section(report: Mapping[str, Any]) -> str:
    variants: Mapping[str, Mapping[str, Any]] = report.get("variants") or {}
    if not variants:
        return "<h2>Interventions</h2><p>No variants were evaluated.</p>"
    extra = [c for c in OPTIONAL_COLUMNS if any(v.get(c[1]) is not None for v in variants.values())]
    columns = (*VARIANT_COLUMNS, *extra)
    headers = ["variant", *(h for h, _ in columns)]

    def cell(v: Mapping[str, Any], key: str) -> str:
        if "_refusal_rate" in key:
            return fmt_rate(v.get(key), v.get(key.replace("_rate", "_ci")))
        return fmt_pct(v.get(key)) if key.endswith("_disagreement") else fmt_float(v.get(key))

    rows = [[n, *(cell(variants[n], k) for _, k in columns)] for n in _ordered(variants)]
    out = [
        "<h2>Interventions</h2>",
        '<p class="muted">Rates with confidence intervals in brackets (percentage points). '
        "Substring: refusal phrases anywhere in the completion; strict: the stricter "
        "measure. Scores: mean first-token refusal score.</p>",
        table(headers, rows, numeric=range(1, len(headers))),
    ]
    dis = report.get("disagreement")
    if isinstance(dis, Mapping) and dis:
        out.append(
            f"<p>The substring and strict measures disagree on "
            f"{esc(fmt_pct(dis.get('harmful')))} of harmful and "
            f"{esc(fmt_pct(dis.get('harmless')))} of harmless completions.</p>"
        )
    return "".join(out)


def _candidates_section(report: Mapping[str, Any]) -> str:
    cands = list(report.get("candidates") or [])
    out = ["<h2>Candidate directions</h2>"]
    if not cands:
        return out[0] + "<p>No candidates were recorded.</p>"
    counts: dict[str, int] = {}
    for c in cands:
        counts[str(c.get("status", DASH))] = counts.get(str(c.get("status", DASH)), 0) + 1
    order = [s for s in STATUS_ORDER if s in counts] + [s for s in counts if s not in STATUS_ORDER]
    out.append(
        f"<p>{len(cands)} candidates: "
        + esc(", ".join(f"{counts[s]} {s}" for s in order))
        + ".</p>"
    )
    sel = _selected_scores(report) or {}

    def key(c: Mapping[str, Any]) -> tuple[bool, float]:  # missing scores last
        b = num_or_nan(c.get("bypass_score"))
        return (math.isnan(b), b)

    top = sorted(cands, key=key)[:TOP_CANDIDATES]
    rows, classes = [], []
    for rank, c in enumerate(top, 1):
        scores = (fmt_float(c.get(k)) for k, _ in SCORE_PANELS)
        rows.append([rank, c.get("layer"), c.get("position"), *scores, c.get("status", DASH)])
        is_sel = c.get("status") == "selected" or (
            c.get("layer") == sel.get("layer") and c.get("position") == sel.get("position")
        )
        classes.append("selected" if is_sel else "")
    out.append(f'<p class="muted">Top {len(top)} by bypass score (lowest first).</p>')
    headers = ["#", "layer", "position", "bypass", "induce", "KL", "status"]
    out.append(table(headers, rows, numeric=range(6), row_classes=classes))
    return "".join(out)


def _examples_section(report: Mapping[str, Any]) -> str:
    examples = list(report.get("examples") or [])
    out = ["<h2>Example completions</h2>"]
    if not examples:
        return out[0] + "<p>No example completions were recorded.</p>"
    names = _ordered(dict.fromkeys(n for ex in examples for n in (ex.get("completions") or {})))
    rows = [
        [
            ex.get("set", DASH),
            ex.get("prompt", DASH),
            *((ex.get("completions") or {}).get(n, DASH) for n in names),
        ]
        for ex in examples
    ]
    out.append(table(["set", "prompt", *names], rows, table_class="completions"))
    return "".join(out)


def _misc_sections(report: Mapping[str, Any]) -> str:
    out = []
    filt = report.get("filter")
    if isinstance(filt, Mapping) and filt:
        rows = []
        for s in ("harmful", "harmless"):
            kept, total = filt.get(f"{s}_kept"), filt.get(f"{s}_total")
            share = fmt_pct(kept / total) if isinstance(kept, int) and total else DASH
            rows.append([s, fmt_value(kept), fmt_value(total), share])
        out += [
            "<h2>Prompt filter</h2>",
            '<p class="muted">Prompts kept for direction extraction and selection.</p>',
            table(["set", "kept", "total", "kept share"], rows, numeric=(1, 2, 3)),
        ]
    out += [timings_section(report.get("timings")), config_section(report.get("config"))]
    return "".join(out)


def render_refusal_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The report page as a string; ``images`` maps PNG file names to their bytes."""
    model = report.get("model", "unknown model")
    body = [
        f"<h1>Refusal direction: {esc(model)}</h1>",
        '<p class="muted">Arditi et al. 2024, "Refusal in language models is mediated by a '
        'single direction".</p>',
        _summary(report),
    ]
    body.append(notes_section(report.get("notes")))
    body.append("<h2>Plots</h2>")
    body += [figure_html(images[n], c) for n, c in FIGURES if n in images]
    if not images:
        body.append("<p>No plots: nothing to draw.</p>")
    body += [
        _variants_section(report),
        _candidates_section(report),
        _examples_section(report),
        _misc_sections(report),
        f"<footer>Generated by steerlab {esc(report.get('steerlab_version', DASH))}.</footer>",
    ]
    return page(f"Refusal direction: {model}", "\n".join(b for b in body if b))
