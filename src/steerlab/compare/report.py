"""The ``steerlab compare`` report: one self-contained page (inline PNG, no script, no external
URL) built from ``compare.json``: sample-efficiency curves, score against fluency cost per N,
the winner per N (marked only where intervals separate), skipped methods with their reasons,
and examples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..evaluate.select import DEGENERATE
from ..report._format import is_num, new_figure, num_or_nan, pick, png_bytes, run_timings
from ..report.render import config_rows, render, timings_view
from ..runs import Run, _finite
from .result import CompareReport, SummaryRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "curves_figure",
    "null_figure",
    "pareto_figure",
    "parsed",
    "render_compare_html",
    "write_compare_report",
]

# colour and line per family: steering solid, prompting dashed, finetuning dotted
STYLE: dict[str, tuple[str, str]] = {
    "unsteered": ("black", ":"),
    "mean_diff": ("tab:blue", "-"),
    "pca": ("tab:cyan", "-"),
    "random": ("tab:gray", "-"),
    "zero_shot": ("tab:olive", "--"),
    "system_prompt": ("tab:brown", "--"),
    "few_shot": ("tab:orange", "--"),
    "contrast_prompt": ("tab:red", "--"),
    "lora": ("tab:green", "-."),
    "dpo": ("tab:purple", "-."),
    "lora+mean_diff": ("darkgreen", (0, (1, 1))),  # type: ignore[dict-item]
    "few_shot+mean_diff": ("darkorange", (0, (1, 1))),  # type: ignore[dict-item]
}


COST_KEYS = ("method", "score", "ce", "kl", "distinct2", "similarity", "fit_seconds")

Report = CompareReport | Mapping[str, Any]  # a report dict (compare.json) is parsed first


def parsed(report: Report) -> CompareReport:
    """The report, NaN as None (as ``compare.json`` has it), parsed once for the views."""
    d = report.to_dict() if isinstance(report, CompareReport) else dict(report)
    return CompareReport.from_dict(_finite(d))


def write_compare_report(run: Run, report: Report) -> None:
    run.write_text("report.html", render_compare_html(report))


def curves_figure(rep: CompareReport) -> Figure | None:
    """Test score against N (log scale), one line per method with its 95% band."""
    if not rep.summary:
        return None
    fig = new_figure((8.5, 4.8))
    ax = fig.add_subplot()
    for m in rep.methods:
        rows = rep.rows(m)
        if not rows:
            continue
        xs = [r.n for r in rows]
        ys = [num_or_nan(r.score) for r in rows]
        lo = [num_or_nan(r.ci[0]) for r in rows]
        hi = [num_or_nan(r.ci[1]) for r in rows]
        color, ls = STYLE.get(m, ("tab:gray", "-"))
        free = not rows[0].uses_examples
        ax.plot(xs, ys, color=color, ls=ls, marker=None if free else "o", ms=4, label=m, lw=1.6)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.08 if free else 0.15, lw=0)
    ax.set_xscale("log", base=2)
    sizes = rep.train_sizes
    if sizes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("training pairs N (every method of a draw sees the same N)")
    ax.set_ylabel("test score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return fig


def pareto_figure(rep: CompareReport) -> Figure | None:
    """Per N: test score against fluency cost (CE under the unsteered model), one point per
    method with its score interval; the methods on the Pareto front are joined."""
    sizes = rep.train_sizes
    if not rep.summary or not sizes:
        return None
    cols = min(3, len(sizes))
    rws = math.ceil(len(sizes) / cols)
    fig = new_figure((3.4 * cols, 3.0 * rws))
    axes = fig.subplots(rws, cols, squeeze=False)
    for i, n in enumerate(sizes):
        ax = axes[i // cols][i % cols]
        pts = [r for r in rep.summary if r.n == n and is_num(r.score) and is_num(r.ce)]
        for r in pts:
            color, _ = STYLE.get(r.method, ("tab:gray", "-"))
            lo, hi = r.ci
            # a bootstrap interval need not contain its mean (a percentile interval of a
            # skewed resample can miss it): draw what lies on each side, never a negative bar
            below = max(0.0, r.score - lo) if is_num(lo) else 0.0  # type: ignore[operator]
            above = max(0.0, hi - r.score) if is_num(hi) else 0.0  # type: ignore[operator]
            ax.errorbar(
                r.ce, r.score, yerr=[[below], [above]], fmt="o", color=color, ms=4, lw=1, capsize=2
            )
            ax.annotate(
                r.method, (r.ce, r.score), fontsize=6, xytext=(3, 2), textcoords="offset points"
            )
        front = pareto_front([{"ce": r.ce, "score": r.score} for r in pts])
        if len(front) > 1:
            ax.plot(
                [r["ce"] for r in front], [r["score"] for r in front], color="k", lw=0.8, alpha=0.5
            )
        ax.set_title(f"N = {n}", fontsize=9)
        ax.set_xlabel("CE, nats/token (lower: more fluent)", fontsize=7)
        ax.set_ylabel("test score", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for j in range(len(sizes), rws * cols):
        axes[j // cols][j % cols].set_visible(False)
    return fig


def null_figure(rep: CompareReport) -> Figure | None:
    """The random null as a histogram of its directions' mean test scores, with the methods'
    scores at the same N as vertical lines."""
    r = rep.random_null
    if r is None or not r.scores:
        return None
    fig = new_figure((7.0, 3.2))
    ax = fig.add_subplot()
    ax.hist([num_or_nan(x) for x in r.scores], bins=12, color="0.75", label="random directions")
    for row in rep.summary:
        if row.n == r.n and row.method in ("unsteered", "mean_diff", "pca"):
            color, ls = STYLE.get(row.method, ("tab:gray", "-"))
            ax.axvline(num_or_nan(row.score), color=color, ls=ls, lw=1.5, label=row.method)
    ax.set_xlabel(f"test score at N = {r.n}")
    ax.set_ylabel("directions")
    ax.legend(fontsize=7)
    return fig


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Points no other beats on both score (higher) and CE (lower), by increasing CE."""
    front = []
    for p in sorted(points, key=lambda r: (r["ce"], -r["score"])):
        if not front or p["score"] > front[-1]["score"]:
            front.append(p)
    return front


def _fmt_ci(r: SummaryRow) -> str:
    (lo, hi), score = r.ci, r.score
    if score is None or lo is None or hi is None:
        return "—"
    return f"{score:.3f} [{lo:.2f}, {hi:.2f}]"


def _rate(r: SummaryRow | None) -> str:
    if r is None or r.rate is None or r.rate_ci[0] is None or r.rate_ci[1] is None:
        return ""
    lo, hi = r.rate_ci
    return f"{100 * r.rate:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"  # type: ignore[operator]


def _table(rep: CompareReport) -> dict[str, Any]:
    """Methods x N: score [CI] and rate; the constrained view's winner of each N starred."""
    rows = []
    for m in rep.methods:
        by_n = {r.n: r for r in rep.rows(m)}
        cells = []
        for n in rep.train_sizes:
            r, w = by_n.get(n), rep.winner(n)
            cells.append(
                {
                    "text": _fmt_ci(r) if r else "—",
                    "won": bool(r and w and w.method == m),
                    "over": bool(r and not r.within_bound),
                    "degenerate": bool(r and r.degenerate),
                    "rate": _rate(r),
                }
            )
        free = not (by_n and next(iter(by_n.values())).uses_examples)
        rows.append({"method": m, "cells": cells, "free": free})
    return {"sizes": rep.train_sizes, "rows": rows}


def _costs(rep: CompareReport) -> list[dict[str, Any]]:
    """Per method at the largest N: fluency, KL, distinct-2 and fitting time."""
    if not rep.train_sizes:
        return []
    big = max(rep.train_sizes)
    rows = [r for m in rep.methods if (r := rep.row(m, big)) is not None]
    return [
        {k: getattr(r, k) for k in COST_KEYS}
        | {
            "examples_used": r.examples_used,
            "candidates": r.budget.candidates,
            "tuning_seconds": r.budget.seconds,
        }
        for r in rows
    ]


def _winner_text(rep: CompareReport) -> list[str]:
    out = []
    for w in rep.winners:
        bests = ", ".join(f"{f}: {m}" for f, m in w.family_best.items() if m)
        if w.method:
            out.append(
                f"N = {w.n} ({w.view}): {w.method} wins: it beats the best of each other "
                f"family ({', '.join(w.beats)}) by paired tests, Holm p < 0.05"
            )
        else:
            out.append(
                f"N = {w.n} ({w.view}): no winner; no family's best (chosen on selection: "
                f"{bests or 'none'}) beats both others by paired tests after Holm's correction"
            )
    return out


def _null(rep: CompareReport) -> dict[str, Any] | None:
    r = rep.random_null
    if r is None or not r.scores:
        return None
    return {
        "n_directions": r.n_directions,
        "n": r.n,
        "cell": r.cell,
        "lo": r.ci[0],
        "hi": r.ci[1],
        "percentile": sorted(r.percentile.items()),
    }


def _chosen(rep: CompareReport) -> list[dict[str, Any]]:
    """What was chosen on the selection split for every run (strength, layer, checkpoint)."""
    out = []
    for r in rep.runs:
        ch = r.get("chosen")  # the unsteered model chooses nothing
        if not ch:
            continue
        out.append(
            {
                "method": r["method"],
                "n": r["n"] if r["n"] is not None else "—",
                "draw": r["draw"],
                "choice": ", ".join(
                    f"{k} {ch[k]:g}" if isinstance(ch[k], float) else f"{k} {ch[k]}"
                    for k in ("layer", "coeff", "step")
                    if k in ch
                ),
                "within_bound": ch["within_bound"],
                "score": r["score"],
            }
        )
    return out


def render_compare_html(report: Report) -> str:
    """The report page as a string, from the report or its dict (``compare.json``)."""
    rep = parsed(report)
    model, behavior = rep.model, rep.behavior
    figs = []
    for make, caption in (
        (
            curves_figure,
            "Test score against the number of training pairs (95% bands over "
            "draws and prompts; methods without markers use no example)",
        ),
        (pareto_figure, "Score against fluency cost per N; the line joins the Pareto front"),
        (null_figure, "The random null: norm-matched random directions at mean_diff's chosen cell"),
    ):
        f = make(rep)
        if f is not None:
            figs.append((png_bytes(f), caption))
    return render(
        "compare.html.j2",
        title=f"Compare: {behavior['name']} on {model['model_id']}",
        version=rep.steerlab_version,
        model=pick(model, ("model_id", "model_type", "n_layers", "d_model")),
        behavior=pick(behavior, ("name", "source", "scorer", "description")),
        splits=rep.splits,
        pool=rep.pool,
        rule=rep.rule,
        figures=figs,
        table=_table(rep),
        winners=_winner_text(rep),
        contrasts=rep.contrasts,
        null=_null(rep),
        threshold=rep.summary[0].rate_threshold if rep.summary else None,
        bound=rep.config["max_ce_increase"],
        degenerate=DEGENERATE,
        draws_note=(
            "One draw of training data: the intervals cover prompts, not the choice of "
            "training examples (the quick preset)."
            if rep.config["draws"] == 1
            else None
        ),
        costs=_costs(rep),
        skipped=sorted(rep.skipped.items()),
        chosen=_chosen(rep),
        examples=list(rep.examples.items()),
        layers=rep.layers,
        cost=rep.cost,
        scorer=config_rows(rep.scorer),
        timings=timings_view(run_timings(rep.timings)),
        config=config_rows(rep.config),
    )
