"""Report for the refusal-direction pipeline: PNG plots and one self-contained HTML page.

The pipeline follows Arditi et al. 2024, "Refusal in language models is mediated by a single
direction": candidate directions (one per layer and post-instruction position) are scored by how
much ablating them removes refusal on harmful prompts (bypass), how much adding them induces
refusal on harmless ones (induce) and how much ablating them changes harmless next-token
distributions (KL); one is selected and evaluated under several interventions.

This module turns the :class:`~.result.RefusalReport` (a report dict is parsed into one first)
into the view ``steerlab/report/templates/refusal.html.j2`` renders: plain values, missing ones
as None, so the template only lays out and formats. A failed run's partial report (``status:
"failed"``) renders whatever sections have data. It sits beside the pipeline, as the other
pages do, so that ``report/`` never imports a pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..report._format import fmt_value, num_or_nan, png_bytes
from ..report.render import config_rows, render, timings_view
from .plots import (
    candidates_heatmap_figure,
    ordered,
    refusal_rates_figure,
    scores_by_layer_figure,
    selected_scores,
)
from .result import CandidateRow, Example, Failure, FilterCounts, RefusalReport, VariantMetrics

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
CHECK_KEYS = ("prompts", "dtype", "max_abs_diff", "max_rel_diff", "tolerance_rel")
CHECK_KEYS += ("ablation_effect_rel", "passed")
# Spec keys worth a reader's attention, in this order; vector hashes and the like are left out.
SPEC_KEYS = ("layer", "layers", "coeff", "value", "positions", "rows", "rank")


Report = RefusalReport | Mapping[str, Any]  # a report dict (report.json) is parsed first


def _parsed(report: Report) -> RefusalReport:
    return report if isinstance(report, RefusalReport) else RefusalReport.from_dict(report)


def refusal_files(report: Report) -> dict[str, bytes]:
    """``report.html`` and its PNG plots, as ``{file name: bytes}`` (nothing is written).

    The page is self-contained: PNGs are embedded as base64 data URIs, CSS is inline, there is no
    JavaScript and no external URL. Plots without data (e.g. no candidates) are left out.

    Args:
        report: the refusal pipeline's report, or its dict (``report.json``; older and partial
            ones too). Rates and CIs are fractions in [0, 1]; None means "not computed" and is
            shown as '—', never drawn as zero.
    """
    rep = _parsed(report)
    figures = {
        "scores_by_layer.png": scores_by_layer_figure(rep),
        "refusal_rates.png": refusal_rates_figure(rep),
        "candidates_heatmap.png": candidates_heatmap_figure(rep),
    }
    images = {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}
    return {"report.html": render_refusal_html(rep, images).encode("utf-8"), **images}


def write_refusal_report(report: Report, out_dir: str | os.PathLike) -> list[Path]:
    """Write :func:`refusal_files` into ``out_dir``, each file atomically; returns the paths
    (``report.html`` first).

    Example::

        paths = write_refusal_report(result, Path("runs/qwen-refusal"))
        print(paths[0])  # runs/qwen-refusal/report.html
    """
    from ..runs import atomic_write

    out = Path(out_dir)
    return [atomic_write(out / name, data) for name, data in refusal_files(report).items()]


def render_refusal_html(report: Report, images: Mapping[str, bytes]) -> str:
    """The report page as a string; ``images`` maps PNG file names to their bytes."""
    rep = _parsed(report)
    model = rep.model or "unknown model"
    sel = selected_scores(rep)
    base = rep.baseline_scores

    def rate(name: str, key: str) -> Any:
        v = rep.variants.get(name)
        return v.to_dict().get(key) if v else None

    return render(
        "refusal.html.j2",
        title=f"Refusal direction: {model}",
        model=model,
        version=rep.steerlab_version,
        failure=_failure(rep.failure) if rep.failed else None,
        sel=None if sel is None else sel.to_dict(),
        rule=rep.selection_rule,
        base={
            "harmful_val_mean": base.harmful_val_mean if base else None,
            "harmless_val_mean": base.harmless_val_mean if base else None,
        },
        rate=rate,
        verdicts=[v.to_dict() for v in rep.verdicts],
        notes=[n for n in rep.notes if n],
        figures=[(images[n], caption) for n, caption in FIGURES if n in images],
        **_variants_view(rep.variants),
        disagreement=_disagreement(rep.disagreement),
        candidates=_candidates_view(rep),
        examples=_examples_view(rep.examples),
        filter_rows=_filter_rows(rep.filter),
        export=_export_view(rep.export, interrupted=rep.failed and _step(rep) == "export"),
        timings=timings_view(
            {"timings": rep.timings, "compute_seconds": rep.compute_seconds}
            | {"resumed_steps": rep.resumed_steps}
        ),
        config=config_rows(rep.config),
    )


def _step(rep: RefusalReport) -> str | None:
    return rep.failure.step if rep.failure else None


def _failure(failure: Failure | None) -> dict[str, Any]:
    return failure.to_dict() if failure else {"step": None, "error": None}


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


def _variants_view(variants: Mapping[str, VariantMetrics]) -> dict[str, Any]:
    flat = {n: v.to_dict() for n, v in variants.items()}  # the columns name report.json keys
    extra = [c for c in OPTIONAL_COLUMNS if any(v[c[1]] is not None for v in flat.values())]
    columns = [
        {"header": h, "key": k, "kind": kind, "ci": _ci_key(k)}
        for h, k, kind in (*VARIANT_COLUMNS, *extra)
    ]
    names = ordered(variants)
    rows = [
        {
            "name": n,
            "values": {c["key"]: flat[n][c["key"]] for c in columns},
            "cis": {c["key"]: flat[n][c["ci"]] for c in columns},
        }
        for n in names
    ]
    applied = []
    for n in names:
        spec = variants[n].intervention
        if spec is not None:
            on = spec.get("generated_on")
            applied.append({
                "name": n,
                "harmful": describe_spec(spec.get("harmful")),
                "harmless": describe_spec(spec.get("harmless")),
                "generated_on": ", ".join(map(str, on)) if on else None,
            })  # fmt: skip
    return {"columns": columns, "variant_rows": rows, "applied": applied}


def _disagreement(dis: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if dis is None or all(dis.get(w) is None for w in ("harmful", "harmless")):
        return None
    return {"harmful": dis.get("harmful"), "harmless": dis.get("harmless")}


def _candidates_view(rep: RefusalReport) -> dict[str, Any] | None:
    cands = rep.candidates
    if not cands:
        return None
    counts: dict[str, int] = {}
    for c in cands:
        counts[str(c.status)] = counts.get(str(c.status), 0) + 1
    order = [s for s in STATUS_ORDER if s in counts] + [s for s in counts if s not in STATUS_ORDER]
    sel = selected_scores(rep)

    def key(c: CandidateRow) -> tuple[bool, float]:  # missing scores last
        b = num_or_nan(c.bypass_score)
        return (math.isnan(b), b)

    rows = []
    for c in sorted(cands, key=key)[:TOP_CANDIDATES]:
        here = sel is not None and (c.layer, c.position) == (sel.layer, sel.position)
        keys = ("layer", "position", "bypass_score", "induce_score", "kl_score", "status")
        is_sel = c.status == "selected" or here
        rows.append({**{k: getattr(c, k) for k in keys}, "selected": is_sel})
    return {
        "total": len(cands),
        "counts": ", ".join(f"{counts[s]} {s}" for s in order),
        "rows": rows,
    }


def _examples_view(examples: list[Example]) -> dict[str, Any] | None:
    if not examples:
        return None
    names = ordered(dict.fromkeys(n for ex in examples for n in ex.completions))
    rows = [
        {"set": ex.set, "prompt": ex.prompt, "completions": [ex.completions.get(n) for n in names]}
        for ex in examples
    ]
    return {"names": names, "rows": rows}


def _filter_rows(filt: FilterCounts | None) -> list[dict[str, Any]]:
    if filt is None:
        return []
    return [
        {
            "set": s,
            "kept": getattr(filt, f"{s}_kept"),
            "total": getattr(filt, f"{s}_total"),
            "share": filt.share(s),
        }
        for s in ("harmful", "harmless")
    ]


def _export_view(exp: Mapping[str, Any] | None, *, interrupted: bool) -> dict[str, Any] | None:
    """The export record; ``interrupted``: the check passed but the run stopped while
    publishing, so nothing was moved into place."""
    if exp is None:
        return None
    check = exp.get("check") if isinstance(exp.get("check"), Mapping) else {}
    return {
        "dir": exp.get("dir"),
        "error": exp.get("error"),
        "interrupted": interrupted,
        "equivalence": exp.get("equivalence"),
        "check": {k: check.get(k) for k in CHECK_KEYS},
    }
