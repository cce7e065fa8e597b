"""Figures of the refusal report (matplotlib on bare Agg figures; imported lazily)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..report._format import contiguous_runs, find_key, new_figure, num_or_nan
from .result import CandidateRow, RefusalReport, SelectedCandidate, VariantMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VARIANTS = ("baseline", "ablation", "subtraction", "addition", "clamp", "orthogonalized", "random")
SCREEN_KEYS = {"bypass_score": "screen_bypass", "kl_score": "screen_kl"}
SCORE_PANELS = (
    ("bypass_score", "Bypass: refusal score, harmful + ablation (lower is better)"),
    ("induce_score", "Induce: refusal score, harmless + addition (higher is better)"),
    ("kl_score", "KL on harmless prompts under ablation (lower is better)"),
)
# (set, suffix, colour) for the refusal-rate bars, in drawing order; strict bars are hatched.
# Fields are SetMetrics.refusal_rate{suffix} and .refusal_ci{suffix}.
RATE_SERIES = (
    ("harmful", "", "#c0392b"),
    ("harmful", "_strict", "#c0392b"),
    ("harmless", "", "#2e6da4"),
    ("harmless", "_strict", "#2e6da4"),
)
STAR = dict(ls="none", marker="*", color="gold", mec="black", mew=0.8, zorder=5)


def selected_scores(report: RefusalReport) -> SelectedCandidate | None:
    """The selected candidate; a report without ``selected`` falls back on the candidate
    marked selected (no coefficient then)."""
    if report.selected is not None:
        return report.selected
    for c in report.candidates:
        if c.status == "selected":
            return SelectedCandidate(
                c.layer, c.position, c.bypass_score, c.induce_score, c.kl_score, None
            )
    return None


def scores_by_layer_figure(report: RefusalReport) -> Figure | None:
    """Bypass, induce and KL scores against layer, one line per position; None if no candidates."""
    cands = report.candidates
    if not cands:
        return None
    layers = sorted({int(c.layer) for c in cands})
    positions = sorted({int(c.position) for c in cands})
    pruned = [int(c.layer) for c in cands if c.status == "pruned_layer"]
    kl_max = find_key(report.config, "kl_max")
    sel = selected_scores(report)

    fig = new_figure((12, 4.0))
    axes = fig.subplots(1, len(SCORE_PANELS), sharex=True)
    for ax, (key, title) in zip(axes, SCORE_PANELS, strict=True):
        for i, (lo, hi) in enumerate(contiguous_runs(pruned)):
            label = "pruned layers" if i == 0 else None
            ax.axvspan(lo - 0.5, hi + 0.5, color="0.88", zorder=0, label=label)
        for pos in positions:
            by_layer = {
                int(c.layer): num_or_nan(getattr(c, key)) for c in cands if c.position == pos
            }
            ys = [by_layer.get(layer, math.nan) for layer in layers]
            line = ax.plot(layers, ys, marker="o", ms=2.5, lw=1.2, label=f"position {pos}")[0]
            screen_key = SCREEN_KEYS.get(key)
            if screen_key:  # every candidate's pre-screen score, on fewer prompts
                scr = {
                    int(c.layer): num_or_nan(getattr(c, screen_key))
                    for c in cands
                    if c.position == pos
                }
                ax.plot(
                    layers,
                    [scr.get(layer, math.nan) for layer in layers],
                    ls=":",
                    lw=1.0,
                    color=line.get_color(),
                    alpha=0.7,
                    label="pre-screen (dotted)",
                )
        if key == "induce_score":
            ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
        if key == "kl_score" and isinstance(kl_max, (int, float)):
            ax.axhline(
                float(kl_max), color="#c0392b", lw=1.0, ls="--", label=f"kl_max = {kl_max:g}"
            )
        if sel is not None and not math.isnan(num_or_nan(getattr(sel, key))):
            ax.plot([sel.layer], [num_or_nan(getattr(sel, key))], ms=15, label="selected", **STAR)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    ncol = min(len(handles), 7)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol, fontsize=8)
    return fig


def ordered(names: Iterable[str]) -> list[str]:
    """Variant names in the table's order, unknown ones after."""
    names = list(names)
    known = [n for n in VARIANTS if n in names]
    return known + [n for n in names if n not in VARIANTS]


def _rate(variant: VariantMetrics, series: tuple[str, ...]) -> float | None:
    value = getattr(variant.of(series[0]), f"refusal_rate{series[1]}")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


def refusal_rates_figure(report: RefusalReport) -> Figure | None:
    """Grouped bars of refusal rate per variant; None (missing) values get no bar at all."""
    variants = report.variants
    names = ordered(variants)
    series = [s for s in RATE_SERIES if any(_rate(variants[n], s) is not None for n in names)]
    if not series:
        return None
    from matplotlib.ticker import PercentFormatter

    fig = new_figure((max(6.0, 1.3 * len(names) + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for j, (subset, suffix, colour) in enumerate(series):
        xs, ys, err = [], [], []  # err: (x, rate, below, above) where a CI is given
        for i, name in enumerate(names):
            rate = _rate(variants[name], (subset, suffix))
            if rate is None:
                continue  # missing: no bar, not a zero-height one
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(rate)
            ci = getattr(variants[name].of(subset), f"refusal_ci{suffix}")
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
                err.append((xs[-1], rate, max(rate - ci[0], 0.0), max(ci[1] - rate, 0.0)))
        face = "white" if suffix else colour
        hatch = "///" if suffix else None
        label = f"{subset} ({'strict' if suffix else 'substring'})"
        ax.bar(xs, ys, width, label=label, color=face, edgecolor=colour, hatch=hatch, lw=0.8)
        if err:
            ex, ey, lo, hi = zip(*err, strict=True)
            ax.errorbar(
                ex, ey, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=0.9, capsize=2.5
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("refusal rate")
    ax.set_title("Refusal rate by intervention (bars: CI; hatched: strict measure)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def candidates_heatmap_figure(report: RefusalReport) -> Figure | None:
    """Layer × position heatmap of bypass score (grey = not computed); None if no scores."""
    cands = report.candidates

    def score(c: CandidateRow) -> float:
        full = num_or_nan(c.bypass_score)
        return full if not math.isnan(full) else num_or_nan(c.screen_bypass)

    if all(math.isnan(score(c)) for c in cands):
        return None
    import matplotlib
    import numpy as np

    layers = sorted({int(c.layer) for c in cands})
    positions = sorted({int(c.position) for c in cands})
    li = {v: i for i, v in enumerate(layers)}
    pi = {v: i for i, v in enumerate(positions)}
    grid = np.full((len(positions), len(layers)), np.nan)  # (P, L)
    for c in cands:
        grid[pi[int(c.position)], li[int(c.layer)]] = score(c)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")

    fig = new_figure((max(6.0, 0.28 * len(layers) + 2.5), 0.45 * len(positions) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest")
    step = max(1, math.ceil(len(layers) / 30))
    ax.set_xticks(range(0, len(layers), step), [str(v) for v in layers[::step]], fontsize=7)
    ax.set_yticks(range(len(positions)), [str(p) for p in positions], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("position")
    sel = selected_scores(report)
    if sel is not None and sel.layer in li and sel.position in pi:
        ax.plot([li[sel.layer]], [pi[sel.position]], ms=14, **STAR)
    fig.colorbar(im, ax=ax, label="bypass score")
    ax.set_title(
        "Bypass score per candidate (full score, else pre-screen; lower = more refusal "
        "removed; ★ selected; grey = not computed)",
        fontsize=9,
    )
    return fig
