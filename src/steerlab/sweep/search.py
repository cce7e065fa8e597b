"""How a sweep walks its grid: every cell on the whole selection split, or successive halving
(every cell on a few prompts, the best third on twice as many, and so on), with the automatic
coefficient grid growing until its strongest push breaks fluency somewhere."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..evaluate.measure import summarize
from ..evaluate.select import rank_key
from .config import AUTO_COEFFS, MAX_EXTENSIONS
from .grid import Cell

if TYPE_CHECKING:
    from .state import Sweep

__all__ = ["search_grid"]


def _cell_record(cell: Cell, per: dict[str, Any], base: dict[str, Any], rnd: int) -> dict:
    s = summarize(per)
    return {
        **cell.to_dict(),
        "key": cell.key,
        **s,
        "ce_increase": s["ce"] - base["ce"],
        "effect": s["score"] - base["score"],
        "round": rnd,
    }


def search_grid(sw: Sweep, base: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = sw.cfg
    sel = sw.behavior.prompts("selection")
    items = sw.items("selection")
    coeffs = list(AUTO_COEFFS if cfg.coeffs == "auto" else cfg.coeffs)  # type: ignore[arg-type]
    positions: tuple[str, ...] = cfg.positions  # type: ignore[assignment]
    search: dict[str, Any] = {"mode": cfg.search, "extended": [], "rounds": []}
    records: dict[str, dict[str, Any]] = {}

    def run_cells(cells: list[Cell], prompts: list[str], its: Any, rnd: int) -> list[dict]:
        res = sw.evaluate([c.setting(sw.units, sw.norms) for c in cells], prompts, its, "grid")
        recs = [
            _cell_record(c, r, base if len(prompts) == len(sel) else _sub(base, len(prompts)), rnd)
            for c, r in zip(cells, res, strict=True)
        ]
        for c, r, rec in zip(cells, res, recs, strict=True):
            rec["examples"] = r["completions"][:3]
            rec["prompts"] = len(prompts)
            records[c.key] = rec
        search["rounds"].append({"cells": len(cells), "prompts": len(prompts)})
        return recs

    cells = [Cell(lay, c, p) for p in positions for lay in sw.layers for c in coeffs]
    if cfg.search == "grid":
        run_cells(cells, sel, items, 0)
    else:
        survivors, n, rnd = cells, min(8, len(sel)), 0
        while True:
            its = items[: max(n, 8)] if items is not None else None
            recs = run_cells(survivors, sel[:n], its, rnd)
            if n >= len(sel) or len(survivors) <= 2:
                if n < len(sel):  # the last survivors are measured on the full split
                    run_cells(survivors, sel, items, rnd + 1)
                break
            recs.sort(key=lambda r: rank_key(r, _sub(base, n)["ce"], cfg.max_ce_increase))
            keep = {r["key"] for r in recs[: max(2, math.ceil(len(recs) / 3))]}
            survivors = [c for c in survivors if c.key in keep]
            n, rnd = min(2 * n, len(sel)), rnd + 1
    # auto grid: grow until the strongest coefficient breaks fluency somewhere
    while cfg.coeffs == "auto" and len(search["extended"]) < MAX_EXTENSIONS:
        top = max(coeffs)
        at_top = [r for r in records.values() if r["coeff"] == top and r["n"]]
        if not at_top or any(r["ce_increase"] > cfg.max_ce_increase for r in at_top):
            break
        coeffs.append(2 * top)
        search["extended"].append(2 * top)
        run_cells(
            [Cell(lay, 2 * top, p) for p in positions for lay in sw.layers],
            sel,
            items,
            len(search["rounds"]),
        )
    search["coeffs"] = coeffs
    search["cells_run"] = len(records)
    search["full_grid_cells"] = len(positions) * len(sw.layers) * len(coeffs)
    return list(records.values()), search


def _sub(base: dict[str, Any], n: int) -> dict[str, Any]:
    """The unsteered summary on the first ``n`` selection prompts."""
    per = base["_per"]
    return summarize({k: v[:n] if isinstance(v, list) else v for k, v in per.items()})
