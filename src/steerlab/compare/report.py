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

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "curves_figure",
    "null_figure",
    "pareto_figure",
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


COST_KEYS = (
    "method",
    "score",
    "ce",
    "kl",
    "distinct2",
    "similarity",
    "fit_seconds",
    "examples_used",
)


def write_compare_report(run: Run, report: Mapping[str, Any]) -> None:
    run.write_text("report.html", render_compare_html(report))


def _rows(report: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    return sorted(
        (r for r in report.get("summary") or [] if r.get("method") == method),
        key=lambda r: r["n"],
    )


def curves_figure(report: Mapping[str, Any]) -> Figure | None:
    """Test score against N (log scale), one line per method with its 95% band."""
    methods = list(report.get("methods") or [])
    if not report.get("summary"):
        return None
    fig = new_figure((8.5, 4.8))
    ax = fig.add_subplot()
    for m in methods:
        rows = _rows(report, m)
        if not rows:
            continue
        xs = [r["n"] for r in rows]
        ys = [num_or_nan(r.get("score")) for r in rows]
        lo = [num_or_nan((r.get("ci") or [None, None])[0]) for r in rows]
        hi = [num_or_nan((r.get("ci") or [None, None])[1]) for r in rows]
        color, ls = STYLE.get(m, ("tab:gray", "-"))
        free = not rows[0].get("uses_examples", True)
        ax.plot(xs, ys, color=color, ls=ls, marker=None if free else "o", ms=4, label=m, lw=1.6)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.08 if free else 0.15, lw=0)
    ax.set_xscale("log", base=2)
    sizes = report.get("train_sizes") or []
    if sizes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("training pairs N (every method of a draw sees the same N)")
    ax.set_ylabel("test score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return fig


def pareto_figure(report: Mapping[str, Any]) -> Figure | None:
    """Per N: test score against fluency cost (CE under the unsteered model), one point per
    method with its score interval; the methods on the Pareto front are joined."""
    summary = report.get("summary") or []
    sizes = list(report.get("train_sizes") or [])
    if not summary or not sizes:
        return None
    cols = min(3, len(sizes))
    rws = math.ceil(len(sizes) / cols)
    fig = new_figure((3.4 * cols, 3.0 * rws))
    axes = fig.subplots(rws, cols, squeeze=False)
    for i, n in enumerate(sizes):
        ax = axes[i // cols][i % cols]
        pts = [r for r in summary if r["n"] == n and is_num(r.get("score")) and is_num(r.get("ce"))]
        for r in pts:
            color, _ = STYLE.get(r["method"], ("tab:gray", "-"))
            lo, hi = r.get("ci") or [r["score"], r["score"]]
            # a bootstrap interval need not contain its mean (a percentile interval of a
            # skewed resample can miss it): draw what lies on each side, never a negative bar
            below = max(0.0, r["score"] - num_or_nan(lo)) if is_num(lo) else 0.0
            above = max(0.0, num_or_nan(hi) - r["score"]) if is_num(hi) else 0.0
            ax.errorbar(
                r["ce"],
                r["score"],
                yerr=[[below], [above]],
                fmt="o",
                color=color,
                ms=4,
                lw=1,
                capsize=2,
            )
            ax.annotate(
                r["method"],
                (r["ce"], r["score"]),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        front = pareto_front(pts)
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


def null_figure(report: Mapping[str, Any]) -> Figure | None:
    """The random null as a histogram of its directions' mean test scores, with the methods'
    scores at the same N as vertical lines."""
    r = report.get("random_null")
    if not isinstance(r, Mapping) or not r.get("scores"):
        return None
    fig = new_figure((7.0, 3.2))
    ax = fig.add_subplot()
    ax.hist([num_or_nan(x) for x in r["scores"]], bins=12, color="0.75", label="random directions")
    for row in report.get("summary") or []:
        if row.get("n") == r.get("n") and row.get("method") in ("unsteered", "mean_diff", "pca"):
            color, ls = STYLE.get(row["method"], ("tab:gray", "-"))
            ax.axvline(
                num_or_nan(row.get("score")), color=color, ls=ls, lw=1.5, label=row["method"]
            )
    ax.set_xlabel(f"test score at N = {r.get('n')}")
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


def _fmt_ci(r: Mapping[str, Any]) -> str:
    ci = r.get("ci") or [None, None]
    if not (is_num(r.get("score")) and is_num(ci[0]) and is_num(ci[1])):
        return "—"
    return f"{r['score']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _rate(r: Mapping[str, Any] | None) -> str:
    ci = (r or {}).get("rate_ci") or [None, None]
    if not (r and is_num(r.get("rate")) and is_num(ci[0]) and is_num(ci[1])):
        return ""
    return f"{100 * r['rate']:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def _table(report: Mapping[str, Any]) -> dict[str, Any]:
    """Methods x N: score [CI] and rate; the constrained view's winner of each N starred."""
    sizes = list(report.get("train_sizes") or [])
    win = {w["n"]: w for w in report.get("winners") or [] if w.get("view") == "constrained"}
    rows = []
    for m in report.get("methods") or []:
        cells = []
        by_n = {r["n"]: r for r in _rows(report, m)}
        for n in sizes:
            r = by_n.get(n)
            w = win.get(n) or {}
            cells.append(
                {
                    "text": _fmt_ci(r) if r else "—",
                    "won": bool(r and w.get("method") == m),
                    "over": bool(r and r.get("within_bound") is False),
                    "degenerate": bool(r and r.get("degenerate")),
                    "rate": _rate(r),
                }
            )
        free = not (by_n and next(iter(by_n.values())).get("uses_examples", True))
        rows.append({"method": m, "cells": cells, "free": free})
    return {"sizes": sizes, "rows": rows}


def _costs(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per method at the largest N: fluency, KL, distinct-2 and fitting time."""
    sizes = report.get("train_sizes") or []
    if not sizes:
        return []
    big = max(sizes)
    out = []
    for m in report.get("methods") or []:
        r = next((x for x in _rows(report, m) if x["n"] == big), None)
        if r:
            budget = r.get("budget") or {}
            out.append(
                pick(r, COST_KEYS)
                | {"candidates": budget.get("candidates"), "tuning_seconds": budget.get("seconds")}
            )
    return out


def _winner_text(report: Mapping[str, Any]) -> list[str]:
    out = []
    for w in report.get("winners") or []:
        bests = ", ".join(f"{f}: {m}" for f, m in (w.get("family_best") or {}).items() if m)
        view = w.get("view", "")
        if w.get("method"):
            out.append(
                f"N = {w['n']} ({view}): {w['method']} wins: it beats the best of each other "
                f"family ({', '.join(w.get('beats') or [])}) by paired tests, Holm p < 0.05"
            )
        else:
            out.append(
                f"N = {w['n']} ({view}): no winner; no family's best (chosen on selection: "
                f"{bests or 'none'}) beats both others by paired tests after Holm's correction"
            )
    return out


def _contrasts(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = ("a", "b", "n", "kind", "view", "diff", "ci", "p", "p_holm")
    return [
        pick(c, keys) | {"significant": is_num(c.get("p_holm")) and c["p_holm"] < 0.05}
        for c in report.get("contrasts") or []
    ]


def _null(report: Mapping[str, Any]) -> dict[str, Any] | None:
    r = report.get("random_null")
    if not isinstance(r, Mapping) or not r.get("scores"):
        return None
    lo, hi = r.get("ci") or [None, None]
    return {
        **pick(r, ("n_directions", "n", "cell")),
        "lo": lo,
        "hi": hi,
        "percentile": sorted((r.get("percentile") or {}).items()),
    }


def _chosen(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What was chosen on the selection split for every run (strength, layer, checkpoint)."""
    out = []
    for r in report.get("runs") or []:
        ch = r.get("chosen")
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
                "within_bound": ch.get("within_bound"),
                "score": r.get("score"),
            }
        )
    return out


def render_compare_html(report: Mapping[str, Any]) -> str:
    rep: dict[str, Any] = _finite(dict(report))
    model = rep.get("model") or {}
    behavior = rep.get("behavior") or {}
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
        title=f"Compare: {behavior.get('name', 'behaviour')} on {model.get('model_id', 'model')}",
        version=rep.get("steerlab_version"),
        model=pick(model, ("model_id", "model_type", "n_layers", "d_model")),
        behavior=pick(behavior, ("name", "source", "scorer", "description")),
        splits=pick(rep.get("splits"), ("selection", "test", "neutral")),
        pool=pick(rep.get("pool"), ("pairs", "draw_rule")),
        rule=rep.get("rule"),
        figures=figs,
        table=_table(rep),
        winners=_winner_text(rep),
        contrasts=_contrasts(rep),
        null=_null(rep),
        threshold=next((r.get("rate_threshold") for r in rep.get("summary") or []), None),
        bound=(rep.get("config") or {}).get("max_ce_increase"),
        degenerate=DEGENERATE,
        draws_note=(
            "One draw of training data: the intervals cover prompts, not the choice of "
            "training examples (the quick preset)."
            if (rep.get("config") or {}).get("draws") == 1
            else None
        ),
        costs=_costs(rep),
        skipped=sorted((rep.get("skipped") or {}).items()),
        chosen=_chosen(rep),
        examples=[(m, ex) for m, ex in (rep.get("examples") or {}).items()],
        layers=rep.get("layers") or [],
        cost=pick(rep.get("cost"), ("rows_generated", "tokens_generated")),
        scorer=config_rows(rep.get("scorer")),
        timings=timings_view(run_timings(rep.get("timings"))),
        config=config_rows(rep.get("config")),
    )
