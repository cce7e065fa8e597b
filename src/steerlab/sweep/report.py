"""The ``steerlab sweep`` report: one self-contained page (inline CSS and PNG, no script, no
external URL, all text escaped by the template environment).

This module parses the report (or ``sweep.json``) once and turns it into the view that
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
from .result import SweepReport, SweepTest

__all__ = ["parsed", "render_sweep_html", "sweep_figures", "write_sweep_report"]

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


Report = SweepReport | Mapping[str, Any]  # a report dict (sweep.json) is parsed first


def parsed(report: Report) -> SweepReport:
    """The report, NaN as None (as ``sweep.json`` has it), parsed once for the views."""
    d = report.to_dict() if isinstance(report, SweepReport) else dict(report)
    return SweepReport.from_dict(_finite(d))


def write_sweep_report(run: Run, report: Report) -> None:
    """Write ``report.html`` (self-contained: the plots are embedded) into the run directory."""
    run.write_text("report.html", render_sweep_html(report))


def _positions(rep: SweepReport) -> list[str]:
    listed = rep.config["positions"]
    listed = [listed] if isinstance(listed, str) else list(listed)
    seen = [c["positions"] for c in rep.cells]
    return list(dict.fromkeys(p for p in [*listed, *seen] if p is not None))


def sweep_figures(report: Report) -> dict[str, list[tuple[bytes, str]]]:
    """The page's PNGs with their captions, by section (``grid``, ``pareto``, ``pairs``,
    ``profile``); a section with nothing to draw has an empty list."""
    rep = parsed(report)
    out: dict[str, list[tuple[bytes, str]]] = {"grid": [], "pareto": [], "pairs": [], "profile": []}
    for pos in _positions(rep):
        fig = plots.grid_figure(rep, pos)
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
    fig = plots.pareto_figure(rep)
    if fig is not None:
        caption = (
            "Each cell's fluency cost against its score. The front joins the cells no other "
            "cell beats on both."
        )
        if _has_random(rep):
            caption += " Grey crosses: a random vector of the same norm at that cell."
        out["pareto"].append((png_bytes(fig), caption))
    maps = rep.maps or {}
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


def _has_random(rep: SweepReport) -> bool:
    """A random vector was measured at the grid's cells (``--random-control``)."""
    return any(c.get("random") for c in rep.cells)


def _test_rows(test: SweepTest) -> list[dict[str, Any]]:
    rows = []
    base = test.unsteered.score
    for key, label, got in (
        ("steered", "steered (chosen cell)", test.steered),
        ("unsteered", "unsteered", test.unsteered),
        ("random", "random directions, same norm and cell (mean)", test.random),
    ):
        row = {k: getattr(got, k) for k in TEST_KEYS}
        diff = row["score"] - base if is_num(row["score"]) and is_num(base) else None
        rows.append({"name": label, **row, "effect": None if key == "unsteered" else diff})
    return rows


def _contrasts(test: SweepTest) -> list[dict[str, Any]]:
    return [
        {"name": "steered − unsteered", **test.vs_unsteered.to_dict()},
        {"name": "steered − mean of the random directions", **test.vs_null_mean.to_dict()},
    ]


def _null_view(test: SweepTest) -> dict[str, Any]:
    r = test.random
    keys = ("n_directions", "score", "ci", "percentile", "p_direction")
    return {k: getattr(r, k) for k in keys}


def _top_cells(rep: SweepReport) -> list[dict[str, Any]]:
    cells = list(rep.cells)
    if not cells:
        return []
    full = max(c["prompts"] for c in cells)
    base_ce = rep.unsteered_selection["ce"]
    bound = rep.config["max_ce_increase"]
    if is_num(base_ce):
        cells = sorted(cells, key=lambda c: (c["prompts"] != full, rank_key(c, base_ce, bound)))
    return [
        {
            **pick(c, CELL_KEYS),
            "random_effect": (c.get("random") or {}).get("effect"),  # --random-control only
            "chosen": c["key"] == rep.chosen.key,
            "within": is_num(c["ce_increase"]) and c["ce_increase"] <= bound,
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


def _examples(ex: Mapping[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    by = {k: list(ex[k]) for k in ("steered", "unsteered", "random")}
    n = max(map(len, by.values()), default=0)

    def get(kind: str, i: int, key: str) -> Any:
        return by[kind][i][key] if i < len(by[kind]) else None

    return [
        {
            "prompt": next((p for k in by if (p := get(k, i, "prompt")) is not None), None),
            **{k: get(k, i, "completion") for k in by},
        }
        for i in range(n)
    ]


def render_sweep_html(report: Report) -> str:
    """The report page as a string, from the report or its dict (``sweep.json``). NaN values
    are shown as missing, as ``sweep.json`` has them; ``report`` is not modified."""
    rep = parsed(report)
    model, behavior, chosen, search = rep.model, rep.behavior, rep.chosen, rep.search
    norm = rep.norms.get(str(chosen.layer))
    chosen_cell = rep.chosen_record or {}
    return render(
        "sweep.html.j2",
        title=f"Sweep: {behavior['name']} on {model['model_id']}",
        version=rep.steerlab_version,
        model=pick(model, ("model_id", "model_type", "n_layers", "d_model")),
        behavior=pick(behavior, ("name", "source", "scorer", "description")),
        counts=pick(behavior.get("counts"), ("selection", "test", "positive", "negative")),
        verdict=rep.verdict.to_dict(),
        contrasts=_contrasts(rep.test),
        null=_null_view(rep.test),
        test=_test_rows(rep.test),
        chosen={
            **pick(chosen.to_dict(), ("layer", "coeff", "positions", "key", "rule")),
            "within_bound": chosen.within_bound,
            "selection": chosen.selection.to_dict(),
            "norm": norm,
            "vector_norm": chosen.coeff * norm if is_num(norm) else None,
            "examples": list(chosen_cell.get("examples") or []),
        },
        unsteered=pick(rep.unsteered_selection, ("score", "ce", "n", "kl")),
        bound=rep.config["max_ce_increase"],
        figures=sweep_figures(rep),
        search={
            **pick(search, ("mode", "cells_run", "full_grid_cells")),
            "mode_text": SEARCH_MODES.get(search["mode"], search["mode"]),
            "rounds": list(search["rounds"]),
            "coeffs": list(search["coeffs"]),
            "extended": list(search["extended"]),
        },
        top_cells=_top_cells(rep),
        n_cells=len(rep.cells),
        has_random=_has_random(rep),
        norms=list(rep.norms.items()),
        maps=_maps_view(rep.maps),
        examples=_examples(rep.examples),
        cost=rep.cost,
        direction=config_rows(rep.direction),
        scorer=config_rows(rep.scorer),
        timings=timings_view(run_timings(rep.timings)),
        config=config_rows(rep.config),
    )
