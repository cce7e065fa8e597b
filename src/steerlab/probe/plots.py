"""Figures of the probe report (matplotlib on bare Agg figures, loaded only when drawn).

Every function takes the report as written to ``probe.json`` (missing values are None) and
returns a :class:`~matplotlib.figure.Figure`, or None when there is nothing to draw. A method
keeps its colour in every figure; controls are grey.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..report._format import integer_locator, is_num, new_figure, num_or_nan

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "accuracy_figure",
    "agreement_figure",
    "efficiency_figure",
    "method_names",
    "method_styles",
    "projection_figure",
    "transfer_figure",
]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
# (report section, key, label, line style) of the lines that must sit at chance
CONTROLS = (
    ("controls", "shuffled", "shuffled-label control", dict(ls="--", marker="x")),
    ("controls", "random", "random direction", dict(ls="--", marker="+")),
)
LEACE_STYLE = dict(color="black", ls="-.", marker="v", ms=4, lw=1.3)
CLASS_COLOURS = {"pos": "#c0392b", "neg": "#2e6da4"}
ANNOTATE_MAX = 8  # methods up to which the cosine heatmap writes every value


def method_names(report: Mapping[str, Any]) -> list[str]:
    """The methods in the order of the run (``agreement.methods``, else ``methods``)."""
    listed = list((report.get("agreement") or {}).get("methods") or [])
    return list(dict.fromkeys([*listed, *(report.get("methods") or {})]))


def method_styles(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Colour, marker and width per method, the same in every figure. Methods that find the
    same direction draw the same line: the earlier ones are wider with bigger markers, so a
    line drawn on top of another leaves it visible."""
    return {
        m: {
            "color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[i % len(MARKERS)],
            "lw": max(1.2, 3.2 - 0.5 * i),
            "ms": max(3.5, 8.0 - 1.1 * i),
        }
        for i, m in enumerate(method_names(report))
    }


def _style(styles: Mapping[str, dict[str, Any]], m: str) -> dict[str, Any]:
    return styles.get(m) or {"color": "C0", "marker": "o", "lw": 1.5, "ms": 4}


def _series(rows: Any, key: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """``key`` and the bounds of ``key_ci`` of per-layer rows, NaN where missing, ``n`` long."""
    rows = list(rows or [])[:n]
    rows += [{}] * (n - len(rows))
    vals, lo, hi = [], [], []
    for r in rows:
        r = r if isinstance(r, Mapping) else {}
        ci = r.get(f"{key}_ci")
        ok = isinstance(ci, Sequence) and len(ci) == 2 and all(map(is_num, ci))
        vals.append(num_or_nan(r.get(key)))
        lo.append(float(ci[0]) if ok else math.nan)
        hi.append(float(ci[1]) if ok else math.nan)
    return vals, lo, hi


def _band(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    lo: Sequence[float],
    hi: Sequence[float],
    label: str,
    **style: Any,
) -> None:
    """A line in ``style`` (``color`` included) with its interval shaded in that colour (an
    error bar where there is a single point)."""
    style = {"marker": "o", "ms": 3, "lw": 1.5, **style}
    colour = style["color"]
    ax.plot(xs, ys, label=label, **style)
    if any(math.isfinite(v) for v in lo):
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)
        if len(xs) == 1:
            ax.errorbar(
                xs, ys, yerr=[[ys[0] - lo[0]], [hi[0] - ys[0]]], color=colour, capsize=3, lw=1
            )


def _chance(ax: Axes) -> None:
    ax.axhline(0.5, color="0.3", lw=0.8, ls=":", label="chance (0.5)")


def _star(ax: Axes, x: float, y: float, colour: str) -> None:
    if math.isfinite(y):
        ax.plot(
            [x], [y], ls="none", marker="*", ms=13, color=colour, mec="black", mew=0.7, zorder=6
        )


def accuracy_figure(report: Mapping[str, Any]) -> Figure | None:
    """Test accuracy (left) and AUROC (right) against layer: every method with its 95% band
    and its best layer starred, the two controls (grey, dashed) and the probe after LEACE."""
    layers = list(report.get("layers") or [])
    methods = report.get("methods") or {}
    if not layers or not methods:
        return None
    styles = method_styles(report)
    best = report.get("best") or {}
    fig = new_figure((12.0, 4.4))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, title in zip(
        axes, ("accuracy", "auroc"), ("Test accuracy", "Test AUROC"), strict=True
    ):
        for m, rows in methods.items():
            ys, lo, hi = _series(rows, key, len(layers))
            _band(ax, layers, ys, lo, hi, m, **_style(styles, m))
            lay = (best.get(m) or {}).get("layer")
            if lay in layers:
                _star(ax, lay, ys[layers.index(lay)], _style(styles, m)["color"])
        for section, name, label, style in CONTROLS:
            rows = (report.get(section) or {}).get(name)
            if rows:
                ys, lo, hi = _series(rows, key, len(layers))
                _band(ax, layers, ys, lo, hi, label, color="0.55", **style)
        leace = (report.get("erasure") or {}).get("after_leace")
        if leace:
            ys, lo, hi = _series(leace, key, len(layers))
            ax.plot(layers, ys, label="logistic probe after LEACE", **LEACE_STYLE)
        held = ((report.get("erasure") or {}).get("held_out") or {}).get("after_leace")
        if held:
            ys, lo, hi = _series(held, key, len(layers))
            _band(ax, layers, ys, lo, hi, "after LEACE, held out", color="0.15", ls=":", marker="v")
        _chance(ax)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(integer_locator())
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (test split)")
    axes[1].set_ylabel("AUROC (test split)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return fig


def efficiency_figure(report: Mapping[str, Any]) -> Figure | None:
    """Accuracy against training examples per class (log scale), each method at its best
    layer, with the band of the middle 95% of the random draws."""
    eff = report.get("sample_efficiency") or {}
    eff = {m: [p for p in pts or [] if is_num(p.get("n_per_class"))] for m, pts in eff.items()}
    if not any(eff.values()):
        return None
    styles = method_styles(report)
    best = report.get("best") or {}
    fig = new_figure((8.0, 4.2))
    ax = fig.subplots()
    sizes: set[float] = set()
    for m, pts in eff.items():
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p["n_per_class"])
        xs = [float(p["n_per_class"]) for p in pts]
        sizes.update(xs)
        rows = [{"accuracy": p.get("accuracy"), "accuracy_ci": p.get("interval")} for p in pts]
        ys, lo, hi = _series(rows, "accuracy", len(rows))
        lay = (best.get(m) or {}).get("layer")
        label = f"{m} (layer {lay})" if lay is not None else m
        _band(ax, xs, ys, lo, hi, label, **_style(styles, m))
    _chance(ax)
    ax.set_xscale("log")
    ticks = sorted(sizes)
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training examples per class (log scale)")
    ax.set_ylabel("accuracy (test split)")
    ax.set_title("Sample efficiency, each method at its best layer", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _cosines(report: Mapping[str, Any], layer: Any) -> Any:
    """The M x M cosine matrix at ``layer`` as a float array, or None."""
    import numpy as np

    layers = list(report.get("layers") or [])
    per = (report.get("agreement") or {}).get("cosine") or []
    if layer not in layers or layers.index(layer) >= len(per):
        return None
    m = per[layers.index(layer)]
    if not isinstance(m, Sequence) or not all(isinstance(row, Sequence) for row in m):
        return None
    return np.array([[num_or_nan(v) for v in row] for row in m], dtype=float)


def agreement_figure(report: Mapping[str, Any], layer: Any, ref: str) -> Figure | None:
    """The cosine between every two methods' directions at ``layer`` (left) and, over all
    layers, the cosine between ``ref``'s direction and each other method's (right)."""
    names = list((report.get("agreement") or {}).get("methods") or [])
    cos = _cosines(report, layer)
    if cos is None or len(names) < 2 or cos.shape != (len(names), len(names)):
        return None
    import matplotlib

    layers = list(report.get("layers") or [])
    over_layers = len(layers) > 1 and ref in names
    size = max(3.6, 0.55 * len(names) + 2.2)
    fig = new_figure((size + (5.5 if over_layers else 0.0), size * 0.85))
    axes = fig.subplots(1, 2 if over_layers else 1, squeeze=False)[0]
    ax = axes[0]
    im = ax.imshow(
        cos,
        cmap=matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85"),
        vmin=-1,
        vmax=1,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label="cosine", shrink=0.85)
    if len(names) <= ANNOTATE_MAX:
        for i in range(len(names)):
            for j in range(len(names)):
                if math.isfinite(cos[i, j]):
                    colour = "white" if abs(cos[i, j]) > 0.6 else "black"
                    ax.text(
                        j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour
                    )
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(f"Cosine between directions, layer {layer}", fontsize=10)
    if over_layers:
        ax = axes[1]
        styles = method_styles(report)
        k = names.index(ref)
        per = (report.get("agreement") or {}).get("cosine") or []
        for j, other in enumerate(names):
            if j == k:
                continue
            ys = []
            for i in range(len(layers)):
                row = per[i][k] if i < len(per) and k < len(per[i]) else []
                ys.append(num_or_nan(row[j]) if j < len(row) else math.nan)
            ax.plot(layers, ys, label=other, **_style(styles, other))
        ax.axvline(layer, color="0.4", lw=0.8, ls=":")
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(integer_locator())
        ax.set_ylabel(f"cosine with {ref}")
        ax.set_title(f"Cosine with {ref}'s direction, every layer", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def transfer_figure(report: Mapping[str, Any]) -> Figure | None:
    """Per layer and method: accuracy on the test split (solid) and on the transfer set
    (dashed, with its 95% band)."""
    layers = list(report.get("layers") or [])
    transfer = report.get("transfer") or {}
    if not layers or not transfer:
        return None
    styles = method_styles(report)
    methods = report.get("methods") or {}
    fig = new_figure((9.0, 4.4))
    ax = fig.subplots()
    for m, rows in transfer.items():
        style = _style(styles, m)
        ys, _, _ = _series(methods.get(m), "accuracy", len(layers))
        ax.plot(layers, ys, label=f"{m}, test split", **style)
        ys, lo, hi = _series(rows, "accuracy", len(layers))
        _band(ax, layers, ys, lo, hi, f"{m}, transfer set", **{**style, "ls": "--", "mfc": "white"})
    _chance(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(integer_locator())
    ax.set_ylabel("accuracy")
    ax.set_title("In-distribution (test split) against transfer accuracy", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(
        *ax.get_legend_handles_labels(), loc="outside right center", fontsize=7, frameon=False
    )
    return fig


def projection_figure(report: Mapping[str, Any]) -> Figure | None:
    """Per method: histograms of the test examples' projections on its direction at its best
    layer, by class, with each example as a tick below and the threshold as a line."""
    proj = report.get("projections") or {}
    proj = {
        m: p for m, p in proj.items() if isinstance(p, Mapping) and (p.get("pos") or p.get("neg"))
    }
    if not proj:
        return None
    import numpy as np

    n = len(proj)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = new_figure((4.2 * ncols, 2.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (m, p) in zip(axes, proj.items(), strict=False):
        pos = np.array([num_or_nan(v) for v in p.get("pos") or []], dtype=float)
        neg = np.array([num_or_nan(v) for v in p.get("neg") or []], dtype=float)
        pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
        both = np.concatenate([pos, neg])
        if not both.size:
            ax.set_visible(False)
            continue
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        for name, vals, label in (("pos", pos, "positive"), ("neg", neg, "negative")):
            if vals.size:
                ax.hist(vals, bins=bins, color=CLASS_COLOURS[name], alpha=0.45, label=label)
        top = ax.get_ylim()[1]
        for k, (name, vals) in enumerate((("pos", pos), ("neg", neg))):
            y = -top * (0.06 + 0.07 * k)
            ax.plot(
                vals, np.full(vals.shape, y), ls="none", marker="|", ms=7, color=CLASS_COLOURS[name]
            )
        ax.yaxis.set_major_locator(integer_locator())
        ax.set_ylim(-top * 0.2, top * 1.35)  # room for the legend above the bars
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= top])  # none beside the ticks
        thr = p.get("threshold")
        if is_num(thr):
            ax.axvline(float(thr), color="black", lw=1.2, ls="--", label="threshold")
        acc = p.get("accuracy")  # computed by the pipeline (fit.projection_summary)
        right = f": {100 * acc:.1f}% on their side" if acc is not None else ""
        lay = p.get("layer")
        ax.set_title(f"{m}, layer {'—' if lay is None else lay}{right}", fontsize=9)
        ax.set_xlabel("projection on the unit direction", fontsize=8)
        ax.set_ylabel("test examples", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
    return fig
