"""Report for the refusal-direction pipeline: PNG plots and one self-contained HTML page.

The pipeline follows Arditi et al. 2024, "Refusal in language models is mediated by a single
direction": candidate directions (one per layer and post-instruction position) are scored by how
much ablating them removes refusal on harmful prompts (bypass), how much adding them induces
refusal on harmless ones (induce) and how much ablating them changes harmless next-token
distributions (KL); one is selected and evaluated under several interventions.

This module turns the report dict into the view ``templates/refusal.html.j2`` renders: plain
values, missing ones as None, so the template only lays out and formats. A failed run's partial
report (``status: "failed"``) renders whatever sections have data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._format import fmt_value, num_or_nan, png_bytes
from ._plots import (
    _ordered,
    _selected_scores,
    candidates_heatmap_figure,
    refusal_rates_figure,
    scores_by_layer_figure,
)
from .render import config_rows, render, timings_view

__all__ = [
    "candidates_heatmap_figure",
    "refusal_files",
    "refusal_rates_figure",
    "render_refusal_html",
    "scores_by_layer_figure",
    "write_refusal_report",
]

STATUS_ORDER = ("selected", "kept", "pruned_layer", "pruned_early", "failed_induce", "failed_kl")
# Variant-table columns after the name: (header, metric key, format); rates get their interval.
VARIANT_COLUMNS = (
    ("harmful refusal", "harmful_refusal_rate", "rate"),
    ("harmless refusal", "harmless_refusal_rate", "rate"),
    ("harmful refusal (strict)", "harmful_refusal_rate_strict", "rate"),
    ("harmless refusal (strict)", "harmless_refusal_rate_strict", "rate"),
    ("harmful score", "harmful_score_mean", "mean"),
    ("harmless score", "harmless_score_mean", "mean"),
    ("KL (harmless)", "kl_harmless", "float"),
    ("CE loss (harmless)", "ce_loss_harmless", "float"),
    ("CE loss (completions)", "ce_loss_completions", "float"),
)
# Shown only when some variant has them (per-variant substring vs strict disagreement).
OPTIONAL_COLUMNS = (
    ("disagree (harmful)", "harmful_disagreement", "pct"),
    ("disagree (harmless)", "harmless_disagreement", "pct"),
)
FIGURES = (  # (file name, caption), in page order
    (
        "refusal_rates.png",
        "Refusal rate per intervention; error bars are 95% Wilson intervals, hatched bars the "
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
SELECTED_KEYS = ("layer", "position", "bypass_score", "induce_score", "kl_score", "coeff")
CHECK_KEYS = ("prompts", "dtype", "max_abs_diff", "max_rel_diff", "tolerance_rel")
CHECK_KEYS += ("ablation_effect_rel", "passed")
# Spec keys worth a reader's attention, in this order; vector hashes and the like are left out.
SPEC_KEYS = ("layer", "layers", "coeff", "value", "positions", "rows", "rank")


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


def render_refusal_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The report page as a string; ``images`` maps PNG file names to their bytes."""
    model = report.get("model") or "unknown model"
    variants: Mapping[str, Mapping[str, Any]] = report.get("variants") or {}
    sel = _selected_scores(report)
    failure: Mapping[str, Any] = report.get("failure") or {}
    failed = report.get("status") == "failed"
    base = report.get("baseline_scores") or {}

    def rate(name: str, key: str) -> Any:
        return (variants.get(name) or {}).get(key)

    return render(
        "refusal.html.j2",
        title=f"Refusal direction: {model}",
        model=model,
        version=report.get("steerlab_version"),
        failure={"step": failure.get("step"), "error": failure.get("error")} if failed else None,
        sel=None if sel is None else {k: sel.get(k) for k in SELECTED_KEYS},
        rule=report.get("selection_rule"),
        base={k: base.get(k) for k in ("harmful_val_mean", "harmless_val_mean")},
        rate=rate,
        verdicts=[_verdict(v) for v in report.get("verdicts") or []],
        notes=[n for n in report.get("notes") or [] if n],
        figures=[(images[n], caption) for n, caption in FIGURES if n in images],
        **_variants_view(variants),
        disagreement=_disagreement(report.get("disagreement")),
        candidates=_candidates_view(report),
        examples=_examples_view(report.get("examples") or []),
        filter_rows=_filter_rows(report.get("filter")),
        export=_export_view(report, failure if failed else {}),
        timings=timings_view(report),
        config=config_rows(report.get("config")),
    )


def _verdict(v: Mapping[str, Any]) -> dict[str, Any]:
    level = "ok" if v.get("level") == "ok" else "warning"  # anything unknown is worth a look
    return {"level": level, "check": v.get("check"), "text": v.get("text")}


def describe_spec(spec: Any) -> str:
    """An intervention spec in a few words: 'steer, layers 13, coeff 1.25'."""
    if not isinstance(spec, Mapping):
        return fmt_value(spec)
    kind = str(spec.get("kind", "?"))
    if kind == "none":
        return "nothing"
    if kind == "compose":
        return " + ".join(describe_spec(s) for s in spec.get("items") or [])
    parts = [kind]
    for key in SPEC_KEYS:
        if spec.get(key) is not None:
            parts.append(f"{key} {fmt_value(spec[key])}")
    if kind in ("ablate", "orthogonalize") and spec.get("layer") is None:
        parts.append("all layers")
    return ", ".join(parts)


def _ci_key(key: str) -> str:
    """Where a column's interval lives: rates' Wilson, mean scores' bootstrap interval."""
    return key.replace("_rate", "_ci") if "_rate" in key else key.replace("_mean", "_ci")


def _variants_view(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    extra = [c for c in OPTIONAL_COLUMNS if any(v.get(c[1]) is not None for v in variants.values())]
    columns = [
        {"header": h, "key": k, "kind": kind, "ci": _ci_key(k)}
        for h, k, kind in (*VARIANT_COLUMNS, *extra)
    ]
    names = _ordered(variants)
    rows = [
        {
            "name": n,
            "values": {c["key"]: variants[n].get(c["key"]) for c in columns},
            "cis": {c["key"]: variants[n].get(c["ci"]) for c in columns},
        }
        for n in names
    ]
    applied = []
    for n in names:
        spec = variants[n].get("intervention")
        if isinstance(spec, Mapping):
            on = spec.get("generated_on")
            applied.append({
                "name": n,
                "harmful": describe_spec(spec.get("harmful")),
                "harmless": describe_spec(spec.get("harmless")),
                "generated_on": ", ".join(map(str, on)) if on else None,
            })  # fmt: skip
    return {"columns": columns, "variant_rows": rows, "applied": applied}


def _disagreement(dis: Any) -> dict[str, Any] | None:
    if not isinstance(dis, Mapping) or all(dis.get(w) is None for w in ("harmful", "harmless")):
        return None
    return {"harmful": dis.get("harmful"), "harmless": dis.get("harmless")}


def _candidates_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    cands = list(report.get("candidates") or [])
    if not cands:
        return None
    counts: dict[str, int] = {}
    for c in cands:
        counts[str(c.get("status"))] = counts.get(str(c.get("status")), 0) + 1
    order = [s for s in STATUS_ORDER if s in counts] + [s for s in counts if s not in STATUS_ORDER]
    sel = _selected_scores(report) or {}

    def key(c: Mapping[str, Any]) -> tuple[bool, float]:  # missing scores last
        b = num_or_nan(c.get("bypass_score"))
        return (math.isnan(b), b)

    rows = []
    for c in sorted(cands, key=key)[:TOP_CANDIDATES]:
        is_sel = c.get("status") == "selected" or (
            c.get("layer") == sel.get("layer") and c.get("position") == sel.get("position")
        )
        keys = ("layer", "position", "bypass_score", "induce_score", "kl_score", "status")
        rows.append({**{k: c.get(k) for k in keys}, "selected": is_sel})
    return {
        "total": len(cands),
        "counts": ", ".join(f"{counts[s]} {s}" for s in order),
        "rows": rows,
    }


def _examples_view(examples: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    if not examples:
        return None
    names = _ordered(dict.fromkeys(n for ex in examples for n in (ex.get("completions") or {})))
    rows = [
        {
            "set": ex.get("set"),
            "prompt": ex.get("prompt"),
            "completions": [(ex.get("completions") or {}).get(n) for n in names],
        }
        for ex in examples
    ]
    return {"names": names, "rows": rows}


def _filter_rows(filt: Any) -> list[dict[str, Any]]:
    if not isinstance(filt, Mapping) or not filt:
        return []
    rows = []
    for s in ("harmful", "harmless"):
        kept, total = filt.get(f"{s}_kept"), filt.get(f"{s}_total")
        share = kept / total if isinstance(kept, int) and total else None
        rows.append({"set": s, "kept": kept, "total": total, "share": share})
    return rows


def _export_view(report: Mapping[str, Any], failure: Mapping[str, Any]) -> dict[str, Any] | None:
    exp = report.get("export")
    if not isinstance(exp, Mapping):
        return None
    check = exp.get("check") if isinstance(exp.get("check"), Mapping) else {}
    return {
        "dir": exp.get("dir"),
        "error": exp.get("error"),
        # the check passed but the run stopped while publishing: nothing was moved into place
        "interrupted": failure.get("step") == "export",
        "equivalence": exp.get("equivalence"),
        "check": {k: check.get(k) for k in CHECK_KEYS},
    }
