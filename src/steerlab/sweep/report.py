"""The ``steerlab sweep`` report: one self-contained page (inline CSS and PNG, no script, no
external URL, all text escaped by the template environment).

This module turns the report written as ``sweep.json`` into the view that
``steerlab/report/templates/sweep.html.j2`` renders; the figures are in :mod:`.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluate.select import rank_key
from ..report._format import is_num, pick, png_bytes, run_timings
from ..report.render import config_rows, render, timings_view
from ..runs import Run, _finite
from . import plots

__all__ = ["render_sweep_html", "sweep_figures", "write_sweep_report"]

TOP_CELLS = 15  # rows of the best-cells table
TEST_KEYS = ("score", "ci", "ce", "distinct2", "longest_repeat", "kl", "n")
CELL_KEYS = (
    "layer",
    "coeff",
    "positions",
    "score",
    "effect",
    "ce_increase",
    "distinct2",
    "longest_repeat",
    "kl",
    "n",
    "prompts",
)
SEARCH_MODES = {
    "grid": "full grid: every cell on every selection prompt",
    "auto": (
        "successive halving: every cell on a few selection prompts, then the best third on "
        "twice as many, until the survivors are measured on the whole selection split"
    ),
}


def write_sweep_report(run: Run, report: Mapping[str, Any]) -> None:
    """Write ``report.html`` (self-contained: the plots are embedded) into the run directory."""
    run.write_text("report.html", render_sweep_html(report))


def _positions(report: Mapping[str, Any]) -> list[str]:
    listed = (report.get("config") or {}).get("positions") or []
    listed = [listed] if isinstance(listed, str) else list(listed)
    seen = [c.get("positions") for c in report.get("cells") or []]
    return list(dict.fromkeys(p for p in [*listed, *seen] if p is not None))


def sweep_figures(report: Mapping[str, Any]) -> dict[str, list[tuple[bytes, str]]]:
    """The page's PNGs with their captions, by section (``grid``, ``pareto``, ``pairs``,
    ``profile``); a section with nothing to draw has an empty list."""
    out: dict[str, list[tuple[bytes, str]]] = {"grid": [], "pareto": [], "pairs": [], "profile": []}
    for pos in _positions(report):
        fig = plots.grid_figure(report, pos)
        if fig is not None:
            out["grid"].append(
                (
                    png_bytes(fig),
                    f"Positions {pos}: mean score (left) and CE increase over the unsteered "
                    "model (right) on the selection split. Outlined: the chosen cell; blue line "
                    "on the score scale: the unsteered model; dashed red line on the CE scale: "
                    "the fluency bound, * after a value: over it; hatched over colour: "
                    "dropped early by successive halving (fewer prompts); white: no score; "
                    "grey cross-hatched: not run.",
                )
            )
    fig = plots.pareto_figure(report)
    if fig is not None:
        caption = (
            "Each cell's fluency cost against its score. The front joins the cells no other "
            "cell beats on both."
        )
        if any(c.get("random") for c in report.get("cells") or []):
            caption += " Grey crosses: a random vector of the same norm at that cell."
        out["pareto"].append((png_bytes(fig), caption))
    maps = report.get("maps") or {}
    if maps.get("pairs") and (fig := plots.interaction_figure(maps["pairs"])) is not None:
        caption = (
            "Interaction of two layers: the effect of adding at both (half the coefficient "
            "each) minus the two single effects. Red: they reinforce; blue: they cancel."
        )
        out["pairs"].append((png_bytes(fig), caption))
    if maps.get("profile") and (fig := plots.profile_figure(maps["profile"])) is not None:
        caption = "Per layer: what adding the direction there gains, and what removing it costs."
        out["profile"].append((png_bytes(fig), caption))
    return out


def _test_rows(test: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = (
        ("steered", "steered (chosen cell)"),
        ("unsteered", "unsteered"),
        ("random", "random directions, same norm and cell (mean)"),
    )
    base = (test.get("unsteered") or {}).get("score")
    rows = []
    for key, label in names:
        row = pick(test.get(key), TEST_KEYS)
        diff = row["score"] - base if is_num(row["score"]) and is_num(base) else None
        rows.append({"name": label, **row, "effect": None if key == "unsteered" else diff})
    return rows


_CONTRASTS = (
    ("vs_unsteered", "steered − unsteered"),
    ("vs_null_mean", "steered − mean of the random directions"),
)


def _contrasts(test: Mapping[str, Any]) -> list[dict[str, Any]]:
    got = test.get("paired")
    if not isinstance(got, Mapping):
        return []
    keys = ("diff", "ci", "p", "p_holm", "n")
    return [{"name": label, **pick(got.get(k), keys)} for k, label in _CONTRASTS if k in got]


def _null_view(test: Mapping[str, Any]) -> dict[str, Any] | None:
    r = test.get("random")
    if not isinstance(r, Mapping) or "n_directions" not in r:
        return None
    return pick(r, ("n_directions", "score", "ci", "percentile", "p_direction"))


def _top_cells(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    cells = list(report.get("cells") or [])
    if not cells:
        return []
    full = max(int(c.get("prompts") or 0) for c in cells)
    base_ce = (report.get("unsteered_selection") or {}).get("ce")
    bound = (report.get("config") or {}).get("max_ce_increase")
    if is_num(base_ce) and is_num(bound):
        cells = sorted(cells, key=lambda c: (c.get("prompts") != full, rank_key(c, base_ce, bound)))
    chosen = (report.get("chosen") or {}).get("key")
    return [
        {
            **pick(c, CELL_KEYS),
            "random_effect": (c.get("random") or {}).get("effect"),
            "chosen": c.get("key") == chosen,
            "within": is_num(c.get("ce_increase")) and is_num(bound) and c["ce_increase"] <= bound,
        }
        for c in cells[:TOP_CELLS]
    ]


def _maps_view(maps: Any) -> dict[str, Any] | None:
    if not isinstance(maps, Mapping) or not maps:
        return None
    out: dict[str, Any] = {"pairs": None, "profile": None}
    pairs = maps.get("pairs")
    if isinstance(pairs, Mapping):
        lays = list(pairs.get("layers") or [])
        eff, inter, ce = (
            pairs.get(k) or [] for k in ("pair_effect", "interaction", "pair_ce_increase")
        )

        def at(m: Sequence[Sequence[Any]], i: int, j: int) -> Any:
            return m[i][j] if i < len(m) and j < len(m[i]) else None

        out["pairs"] = {
            **pick(pairs, ("coeff_each", "positions")),
            "singles": list(zip(lays, pairs.get("single_effect") or [], strict=False)),
            "rows": [
                {
                    "a": a,
                    "b": b,
                    "effect": at(eff, i, j),
                    "interaction": at(inter, i, j),
                    "ce_increase": at(ce, i, j),
                }
                for i, a in enumerate(lays)
                for j, b in enumerate(lays)
                if i < j
            ],
        }
    prof = maps.get("profile")
    if isinstance(prof, Mapping):
        lays = list(prof.get("layers") or [])
        suff, nec = list(prof.get("sufficiency") or []), prof.get("necessity")
        nce = list(prof.get("necessity_ce_increase") or [])
        keys = ("coeff", "present", "present_score", "source", "note", "necessity_all_layers")
        all_ce = nce[len(lays)] if len(nce) > len(lays) else None
        out["profile"] = {
            **pick(prof, keys),
            "measured": nec is not None,
            "all_layers_ce": all_ce,
            "rows": [
                {
                    "layer": lay,
                    "sufficiency": suff[i] if i < len(suff) else None,
                    "necessity": nec[i] if nec is not None and i < len(nec) else None,
                    "necessity_ce": nce[i] if i < len(nce) else None,
                }
                for i, lay in enumerate(lays)
            ],
        }
    return out


def _examples(ex: Any) -> list[dict[str, Any]]:
    ex = ex if isinstance(ex, Mapping) else {}
    by = {k: list(ex.get(k) or []) for k in ("steered", "unsteered", "random")}
    n = max(map(len, by.values()), default=0)

    def get(kind: str, i: int, key: str) -> Any:
        return by[kind][i].get(key) if i < len(by[kind]) else None

    return [
        {
            "prompt": next((p for k in by if (p := get(k, i, "prompt")) is not None), None),
            **{k: get(k, i, "completion") for k in by},
        }
        for i in range(n)
    ]


def render_sweep_html(report: Mapping[str, Any]) -> str:
    """The report page as a string. NaN values are shown as missing, as ``sweep.json`` has
    them; ``report`` is not modified."""
    rep: dict[str, Any] = _finite(dict(report))
    model = rep.get("model") or {}
    behavior = rep.get("behavior") or {}
    chosen = rep.get("chosen") or {}
    search = rep.get("search") or {}
    norms = rep.get("norms") or {}
    norm = norms.get(str(chosen.get("layer")))
    coeff = chosen.get("coeff")
    chosen_cell = next((c for c in rep.get("cells") or [] if c.get("key") == chosen.get("key")), {})
    return render(
        "sweep.html.j2",
        title=f"Sweep: {behavior.get('name', 'behaviour')} on {model.get('model_id', 'model')}",
        version=rep.get("steerlab_version"),
        model=pick(model, ("model_id", "model_type", "n_layers", "d_model")),
        behavior=pick(behavior, ("name", "source", "scorer", "description")),
        counts=pick(behavior.get("counts"), ("selection", "test", "positive", "negative")),
        verdict=pick(rep.get("verdict"), ("text", "steered_beats_unsteered", "beyond_random_null")),
        contrasts=_contrasts(rep.get("test") or {}),
        null=_null_view(rep.get("test") or {}),
        test=_test_rows(rep.get("test") or {}),
        chosen={
            **pick(chosen, ("layer", "coeff", "positions", "key", "rule", "within_bound")),
            "selection": pick(chosen.get("selection"), ("score", "ce", "ce_increase", "n")),
            "norm": norm,
            "vector_norm": coeff * norm if is_num(coeff) and is_num(norm) else None,
            "examples": list(chosen_cell.get("examples") or []),
        },
        unsteered=pick(rep.get("unsteered_selection"), ("score", "ce", "n", "kl")),
        bound=(rep.get("config") or {}).get("max_ce_increase"),
        figures=sweep_figures(rep),
        search={
            **pick(search, ("mode", "cells_run", "full_grid_cells")),
            "mode_text": SEARCH_MODES.get(search.get("mode"), search.get("mode")),
            "rounds": list(search.get("rounds") or []),
            "coeffs": list(search.get("coeffs") or []),
            "extended": list(search.get("extended") or []),
        },
        top_cells=_top_cells(rep),
        n_cells=len(rep.get("cells") or []),
        has_random=any(c.get("random") for c in rep.get("cells") or []),
        norms=[(k, v) for k, v in norms.items()],
        maps=_maps_view(rep.get("maps")),
        examples=_examples(rep.get("examples")),
        cost=pick(rep.get("cost"), ("rows_generated", "tokens_generated")),
        direction=config_rows(rep.get("direction")),
        scorer=config_rows(rep.get("scorer")),
        timings=timings_view(run_timings(rep.get("timings"))),
        config=config_rows(rep.get("config")),
    )
