"""Figures of the sweep report (matplotlib on bare Agg figures, loaded only when drawn).

The grid and Pareto figures take the parsed report (:class:`~.result.SweepReport`, NaN read
as None), the map figures its ``maps`` entries; each returns a
:class:`~matplotlib.figure.Figure`, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..report._format import integer_locator, is_num, new_figure, num_or_nan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .result import SweepReport

__all__ = [
    "grid_figure",
    "interaction_figure",
    "pareto_figure",
    "pareto_front",
    "profile_figure",
]

ANNOTATE_MAX = 96  # cells per panel up to which every value is written in its square
STAR = dict(ls="none", marker="*", color="gold", mec="black", mew=0.8, zorder=6)


def _axis_values(report: SweepReport) -> tuple[list[int], list[float]]:
    cells = report.cells
    layers = sorted({*report.layers, *(int(c["layer"]) for c in cells)})
    coeffs = report.search["coeffs"]
    return layers, sorted({*map(float, coeffs), *(float(c["coeff"]) for c in cells)})


def _bound(report: SweepReport) -> float:
    return float(report.config["max_ce_increase"])


def _grid_arrays(
    cells: Sequence[Mapping[str, Any]], layers: list[int], coeffs: list[float]
) -> tuple[Any, Any, Any, Any]:
    """(layers, coeffs) arrays: score, CE increase, whether the cell ran, and whether it ran on
    fewer prompts than the full selection split (dropped early by successive halving)."""
    import numpy as np

    li = {v: i for i, v in enumerate(layers)}
    ci = {v: i for i, v in enumerate(coeffs)}
    full = max(c["prompts"] for c in cells)
    score = np.full((len(layers), len(coeffs)), np.nan)
    ce = np.full_like(score, np.nan)
    ran = np.zeros(score.shape, dtype=bool)
    partial = np.zeros(score.shape, dtype=bool)
    for c in cells:
        i, j = li[int(c["layer"])], ci[float(c["coeff"])]
        score[i, j], ce[i, j] = num_or_nan(c["score"]), num_or_nan(c["ce_increase"])
        ran[i, j], partial[i, j] = True, c["prompts"] < full
    return score, ce, ran, partial


def _mark_cells(ax: Any, vals: Any, ce: Any, ran: Any, partial: Any, bound: float | None) -> None:
    """Hatch the cells never run (grey) and those dropped early (over their colour); write
    each value in its square when the grid is small enough (``*``: over the CE bound)."""
    from matplotlib.patches import Rectangle

    n_l, n_c = vals.shape
    for i in range(n_l):
        for j in range(n_c):
            if not ran[i, j]:
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        facecolor="0.9",
                        edgecolor="0.6",
                        hatch="xx",
                        lw=0,
                    )
                )
            elif partial[i, j]:
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        fill=False,
                        edgecolor="white",
                        hatch="//",
                        lw=0,
                    )
                )
            if ran[i, j] and n_l * n_c <= ANNOTATE_MAX and math.isfinite(vals[i, j]):
                over = bound is not None and ce[i, j] > bound
                text = f"{vals[i, j]:.2f}" + ("*" if over else "")
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6),
                )


def grid_figure(report: SweepReport, positions: str) -> Figure | None:
    """Layer x coefficient heatmaps of score (left) and CE increase (right) at ``positions``:
    the chosen cell outlined, cells never run hatched grey, cells dropped early by successive
    halving (measured on fewer prompts) hatched over their colour."""
    cells = [c for c in report.cells if c["positions"] == positions]
    if not cells:
        return None
    import matplotlib
    import numpy as np
    from matplotlib.patches import Rectangle

    layers, coeffs = _axis_values(report)
    li = {v: i for i, v in enumerate(layers)}
    ci = {v: i for i, v in enumerate(coeffs)}
    bound = _bound(report)
    chosen = report.chosen
    base_score = num_or_nan(report.unsteered_selection["score"])
    score, ce, ran, partial = _grid_arrays(cells, layers, coeffs)
    n_l, n_c = score.shape
    fig = new_figure((max(9.0, 1.2 * n_c + 5), max(2.6, 0.32 * n_l + 1.6)))
    axes = fig.subplots(1, 2)
    finite = score[np.isfinite(score)]
    unit = finite.size and finite.min() >= 0 and finite.max() <= 1
    panels = (
        (score, "viridis", "mean score (selection split)", (0, 1) if unit else (None, None)),
        (ce, "magma_r", "CE increase (nats/token)", (min(0.0, np.nanmin(ce, initial=0)), None)),
    )
    for ax, (vals, cmap_name, label, (lo, hi)) in zip(axes, panels, strict=True):
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="white")
        im = ax.imshow(
            np.ma.masked_invalid(vals),
            aspect="auto",
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            interpolation="nearest",
        )
        bar = fig.colorbar(im, ax=ax, label=label)
        if vals is score and math.isfinite(base_score):
            bar.ax.axhline(base_score, color="#2e6da4", lw=2)  # the unsteered level
        if vals is ce:
            bar.ax.axhline(bound, color="#c0392b", lw=2, ls="--")  # the fluency bound
        _mark_cells(ax, vals, ce, ran, partial, bound)
        key = (chosen.layer, float(chosen.coeff))
        if chosen.positions == positions and key[0] in li and key[1] in ci:
            for colour, width in (("white", 5.0), ("black", 2.5)):  # visible on any colour
                corner = (ci[key[1]] - 0.45, li[key[0]] - 0.45)
                ax.add_patch(Rectangle(corner, 0.9, 0.9, fill=False, ec=colour, lw=width, zorder=5))
        ax.set_xticks(range(n_c), [f"{c:g}" for c in coeffs], fontsize=8)
        step = max(1, math.ceil(n_l / 32))
        ax.set_yticks(range(0, n_l, step), [str(v) for v in layers[::step]], fontsize=8)
        ax.set_xlabel("coefficient (× median residual norm at the layer)")
        ax.set_ylabel("layer")
        ax.set_title(label.split(" (")[0], fontsize=10)
    fig.suptitle(f"positions = {positions}", fontsize=10)
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (lower cost x, higher score y), by increasing cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _xy(cs: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    return [num_or_nan(c["ce_increase"]) for c in cs], [num_or_nan(c["score"]) for c in cs]


def _scatter_cells(fig: Any, ax: Any, full: list[Any], rest: list[Any], base: Mapping) -> None:
    """The full-split cells coloured by layer, the cells dropped early, and the random vectors
    measured at the full-split cells."""
    lays = [int(c["layer"]) for c in full] or [0]
    sc = ax.scatter(
        *_xy(full),
        c=lays,
        cmap="viridis",
        s=28,
        edgecolor="black",
        lw=0.4,
        label="cells (colour: layer)",
        zorder=3,
    )
    if len(set(lays)) > 1:
        fig.colorbar(sc, ax=ax, label="layer").ax.yaxis.set_major_locator(integer_locator())
    if rest:
        ax.scatter(
            *_xy(rest),
            s=18,
            facecolor="none",
            edgecolor="0.5",
            lw=0.7,
            zorder=2,
            label="dropped early (fewer prompts)",
        )
    rnd = [c["random"] for c in full if isinstance(c.get("random"), Mapping)]
    if rnd:
        base_ce = num_or_nan(base["ce"])
        rx = [num_or_nan(r["ce"]) - base_ce for r in rnd]
        ax.scatter(
            rx,
            [num_or_nan(r["score"]) for r in rnd],
            marker="x",
            color="0.55",
            s=22,
            lw=0.9,
            label="random vector, same cell",
            zorder=2,
        )


def pareto_figure(report: SweepReport) -> Figure | None:
    """Every cell's CE increase against its score, the front of the cells measured on the
    full selection split, the chosen cell, the unsteered model, the bound and random vectors."""
    cells = [c for c in report.cells if c["score"] is not None]
    if not cells:
        return None
    full_n = max(c["prompts"] for c in cells)
    full = [c for c in cells if c["prompts"] == full_n]
    rest = [c for c in cells if c["prompts"] < full_n]
    base = report.unsteered_selection
    bound = _bound(report)
    fig = new_figure((8.0, 5.0))
    ax = fig.subplots()
    _scatter_cells(fig, ax, full, rest, base)
    front = pareto_front(list(zip(*_xy(full), strict=True)))
    if front:
        fx, fy = zip(*front, strict=True)
        ax.step(fx, fy, where="post", color="#c0392b", lw=1.4, label="Pareto front", zorder=4)
    if is_num(base["score"]):
        ax.plot(
            [0.0],
            [base["score"]],
            ls="none",
            marker="s",
            ms=9,
            color="#2e6da4",
            mec="black",
            label="unsteered",
            zorder=5,
        )
    sel = report.chosen.selection
    if is_num(sel.score) and is_num(sel.ce_increase):
        ax.plot([sel.ce_increase], [sel.score], ms=18, label="chosen", **STAR)
    ax.axvline(bound, color="#c0392b", ls="--", lw=1, label=f"bound {bound:g} nats/token")
    ax.set_xlabel("CE increase over the unsteered model (nats/token): fluency cost")
    ax.set_ylabel("mean score (selection split)")
    ax.set_title("Effect against fluency cost, every cell", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def interaction_figure(pairs: Mapping[str, Any]) -> Figure | None:
    """The K x K interaction matrix (pair effect minus both single effects), centred at 0."""
    layers = list(pairs.get("layers") or [])
    if len(layers) < 2:
        return None
    import matplotlib
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    m = np.array([[num_or_nan(v) for v in row] for row in pairs["interaction"]], dtype=float)
    lim = float(np.nanmax(np.abs(m), initial=0.0)) or 1.0
    fig = new_figure((max(4.5, 0.45 * len(layers) + 3), max(3.6, 0.45 * len(layers) + 2)))
    ax = fig.subplots()
    im = ax.imshow(
        np.ma.masked_invalid(m),
        cmap=matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85"),
        interpolation="nearest",
        norm=TwoSlopeNorm(0.0, -lim, lim),
    )
    fig.colorbar(im, ax=ax, label="interaction (score)")
    if len(layers) <= 10:
        for i in range(len(layers)):
            for j in range(len(layers)):
                if math.isfinite(m[i, j]):
                    colour = "white" if abs(m[i, j]) > 0.6 * lim else "black"
                    ax.text(
                        j, i, f"{m[i, j]:+.2f}", ha="center", va="center", fontsize=7, color=colour
                    )
    names = [f"L{v}" for v in layers]
    ax.set_xticks(range(len(layers)), names, fontsize=8)
    ax.set_yticks(range(len(layers)), names, fontsize=8)
    ax.set_title(f"Pair interaction, {_coeff(pairs.get('coeff_each'))} at each layer", fontsize=10)
    return fig


def _coeff(x: Any) -> str:
    return f"coefficient {float(x):g}" if is_num(x) else "coefficient —"


def _band(ax: Any, xs: list[Any], ci: Any, color: str) -> None:
    """A shaded 95% interval under a profile line, where the report has one."""
    rows = list(ci or [])[: len(xs)]
    if not rows:
        return
    lo = [num_or_nan(r[0]) if isinstance(r, (list, tuple)) else math.nan for r in rows]
    hi = [num_or_nan(r[1]) if isinstance(r, (list, tuple)) else math.nan for r in rows]
    ax.fill_between(xs[: len(rows)], lo, hi, color=color, alpha=0.15, lw=0)


def profile_figure(profile: Mapping[str, Any]) -> Figure | None:
    """Sufficiency and (when measured) necessity against layer, with their 95% intervals."""
    layers = list(profile.get("layers") or [])
    if not layers:
        return None
    fig = new_figure((8.0, 3.8))
    ax = fig.subplots()
    suff = [num_or_nan(v) for v in profile.get("sufficiency") or []]
    ax.plot(
        layers[: len(suff)],
        suff,
        marker="o",
        ms=3,
        color="#c0392b",
        label="sufficiency: score gained adding at this layer alone",
    )
    _band(ax, layers, profile.get("sufficiency_ci"), "#c0392b")
    nec = profile.get("necessity")
    if nec:
        ax.plot(
            layers[: len(nec)],
            [num_or_nan(v) for v in nec],
            marker="s",
            ms=3,
            color="#2e6da4",
            label="necessity: score lost projecting out at this layer",
        )
        _band(ax, layers, profile.get("necessity_ci"), "#2e6da4")
        allv = profile.get("necessity_all_layers")
        if is_num(allv):
            ax.axhline(
                allv,
                color="#2e6da4",
                ls="--",
                lw=1,
                label="necessity, projected out at every layer",
            )
    ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(integer_locator())
    ax.set_ylabel("score change (test split)")
    ax.set_title(f"Per-layer profile ({_coeff(profile.get('coeff'))})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
