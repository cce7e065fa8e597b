"""``steerlab sweep``: where, how strong and where it breaks.

Steps (each cached in the run directory; an interrupted sweep resumes chunk by chunk):

1. the direction (extracted from the behaviour's contrast data, or given) and the typical
   residual norm at every layer, so coefficients mean the same everywhere;
2. the unsteered model on the selection split;
3. the grid layer x coefficient x positions on the selection split (or successive halving);
4. the chosen cell by the recorded rule, re-scored on the test split beside the unsteered model
   and a random vector of the same norm at the same cell, with bootstrap 95% intervals;
5. optionally the multi-layer maps (pairs of the best layers, sufficiency vs necessity).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..capture import resolve_layers
from ..directions.artifact import Direction
from ..directions.extract import data_hash, extract
from ..errors import LayerError
from ..evaluate.measure import summarize
from ..evaluate.norms import residual_norms
from ..evaluate.select import choose, rule_text
from ..interventions.base import NoOp
from ..metrics.stats import holm, mean_ci, null_percentile, null_test, paired, percentile_interval
from ..models.load import LoadedModel
from ..runs import Run
from . import maps
from .config import SweepConfig
from .grid import Cell, verdict
from .result import (
    ChosenCell,
    PairedContrast,
    RandomDirections,
    SelectionScores,
    SweepReport,
    SweepTest,
    TestScores,
)
from .search import search_grid
from .state import Sweep

__all__ = ["default_layers", "run_sweep"]


def default_layers(n_layers: int) -> list[int]:
    """The middle 80% of the blocks: the first and last few rarely steer anything useful."""
    lo, hi = round(0.1 * n_layers), round(0.9 * n_layers)
    return list(range(lo, max(hi, lo + 1)))


def _interval(per: dict[str, Any]) -> dict[str, Any]:
    s = summarize(per)
    lo, hi = mean_ci(per["score"])
    return {
        "score": s["score"],
        "ci": [lo, hi],
        "ce": s["ce"],
        "n": s["n"],
        "distinct2": s["distinct2"],
        "longest_repeat": s["longest_repeat"],
        "kl": s["kl"],
    }


def _check_layers(lm: LoadedModel, cfg: SweepConfig, vector: Direction | None) -> list[int]:
    """The layers to sweep; a given multi-layer vector must have a row at each of them."""
    n_layers = lm.info.n_layers
    layers = resolve_layers(cfg.layers, n_layers) if cfg.layers else default_layers(n_layers)
    if vector is not None:
        vector.check_model(lm.info)
        if len(vector.layers) > 1:
            missing = [lay for lay in layers if lay not in vector.layers]
            if missing:
                raise LayerError(
                    f"the vector has no row for layer(s) {missing}; its layers: "
                    f"{list(vector.layers)}"
                )
    return layers


def _direction(
    run: Run,
    lm: LoadedModel,
    behavior: Behavior,
    cfg: SweepConfig,
    layers: list[int],
    vector: Direction | None,
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Step 1: the unit direction at every layer (given, or extracted and saved) and its
    source, as the report describes it."""
    if vector is not None:
        units = {lay: vector.unit(lay if len(vector.layers) > 1 else None) for lay in layers}
        source: dict[str, Any] = {
            "kind": "given",
            **{k: vector.meta.get(k) for k in ("method", "data_hash", "site")},
        }
        return units, source
    pos, neg, chat, what = behavior.contrast(lm.tokenizer)
    run.say(f"extracting the {cfg.method} direction from {what} at {len(layers)} layers")
    key = [pos, neg, chat, cfg.method, layers]
    t = run.cache.tensors(
        "direction",
        key,
        lambda: {"v": extract(lm, pos, neg, method=cfg.method, layers=layers, chat=chat).vectors},
    )
    units = {lay: t["v"][i] / t["v"][i].norm() for i, lay in enumerate(layers)}
    source = {
        "kind": "extracted",
        "method": cfg.method,
        "from": what,
        "data_hash": data_hash(pos, neg),
    }
    meta = {
        "model": lm.info.to_dict(),
        "site": "resid_pre",
        "method": cfg.method,
        "position": "last",
        "behavior": behavior.name,
        "data_hash": source["data_hash"],
        "steerlab_version": __version__,
    }
    Direction(t["v"], tuple(layers), meta).save(run.path("direction.safetensors"))
    return units, source


def _norms(run: Run, lm: LoadedModel, sel: list[str], layers: list[int], cfg: SweepConfig) -> dict:
    """Step 1 (cont.): the typical residual norm at every layer, cached."""
    raw = run.cache.json(
        "norms",
        [sel, layers, cfg.chat],
        lambda: {str(k): v for k, v in residual_norms(lm, sel, layers, chat=cfg.chat).items()},
    )
    return {int(k): float(v) for k, v in raw.items()}


def _random_grid(sw: Sweep, full: list[dict[str, Any]], sel: list[str], base: dict) -> None:
    """Step 3 (cont.): a random vector at every full-size cell, recorded in its cell."""
    grid_cells = [Cell(c["layer"], c["coeff"], c["positions"]) for c in full]
    rres = sw.evaluate(
        [sw.random_setting(c) for c in grid_cells],
        sel,
        sw.items("selection"),
        "random-grid",
    )
    for rec, r in zip(full, rres, strict=True):
        s = summarize(r)
        rec["random"] = {
            "score": s["score"],
            "ce": s["ce"],
            "effect": s["score"] - base["score"],
        }


_TRIO = ("steered", "unsteered", "random")


def _test(sw: Sweep, chosen: Cell, test: list[str]) -> list[dict[str, Any]]:
    """Step 4: per-prompt figures of the chosen cell, the unsteered model and
    ``random_directions`` norm-matched random vectors at the same cell, on the test split
    (steered, unsteered, then the random draws)."""
    settings = [chosen.setting(sw.units, sw.norms, "steered"), NoOp()]
    settings += [sw.random_setting(chosen, j) for j in range(sw.cfg.random_directions)]
    return sw.evaluate(settings, test, sw.items("test"), "test")


def _null(
    res: list[dict[str, Any]], steered: TestScores, seed: int
) -> tuple[RandomDirections, np.ndarray]:
    """The random directions' test figures as a distribution, the steered cell in it, and
    their per-prompt mean (the reference of the paired contrast against the null)."""
    scores = [summarize(r)["score"] for r in res]
    per_prompt = np.nanmean(np.array([r["score"] for r in res], dtype=float), axis=0)
    keys = ("score", "ce", "distinct2", "longest_repeat")
    pooled = summarize({k: [x for r in res for x in r[k]] for k in keys})
    null = RandomDirections(
        score=float(np.mean(scores)),
        ci=list(percentile_interval(scores)),
        ci_kind="central 95% of the random directions' mean scores",
        mean_ci=list(mean_ci(per_prompt, seed=seed)),
        ce=pooled["ce"],
        n=pooled["n"],
        distinct2=pooled["distinct2"],
        longest_repeat=pooled["longest_repeat"],
        kl=float(np.nanmean([r["kl"] for r in res])) if res[0]["kl"] is not None else None,
        n_directions=len(res),
        null_scores=scores,
        percentile=null_percentile(steered.score, scores),
        p_direction=null_test(steered.score, scores),
    )
    return null, per_prompt


def _test_block(res: list[dict[str, Any]], seed: int) -> SweepTest:
    """Step 4 (cont.): the steered cell, the unsteered model and the random directions on the
    test split, and the two pre-named paired contrasts, Holm-corrected together."""
    steered, unsteered = (TestScores.from_dict(_interval(r)) for r in res[:2])
    null, null_per_prompt = _null(res[2:], steered, seed)
    pair = [
        paired(res[0]["score"], res[1]["score"], seed=seed),
        paired(res[0]["score"], null_per_prompt, seed=seed),
    ]
    for c, p in zip(pair, holm([c["p"] for c in pair]), strict=True):
        c["p_holm"] = p
    vs_u, vs_n = (PairedContrast.from_dict(c) for c in pair)
    return SweepTest(steered, unsteered, null, vs_u, vs_n)


def _report(
    sw: Sweep,
    source: dict[str, Any],
    base: dict[str, Any],
    cells: list[dict[str, Any]],
    search: dict[str, Any],
    pick: dict[str, Any],
    chosen: Cell,
    test: list[str],
    res: list[dict[str, Any]],
    maps: dict[str, Any] | None,
) -> SweepReport:
    """The report (``sweep.json``), with its cost and timings as of now."""
    cfg, best = sw.cfg, pick["cell"]
    test_rep = _test_block(res, cfg.seed)
    return SweepReport(
        steerlab_version=__version__,
        model=sw.lm.info.to_dict(),
        provenance=sw.run.provenance(),
        behavior=sw.behavior.to_dict(),
        scorer=sw.scorer.spec(),
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        direction=source,
        layers=sw.layers,
        norms={str(k): v for k, v in sw.norms.items()},
        unsteered_selection={k: v for k, v in base.items() if k != "_per"},
        cells=cells,
        search=search,
        chosen=ChosenCell(
            **chosen.to_dict(),
            key=chosen.key,
            rule=rule_text(cfg.max_ce_increase),
            within_bound=pick["within_bound"],
            selection=SelectionScores(*(best[k] for k in ("score", "ce", "ce_increase", "n"))),
        ),
        test=test_rep,
        verdict=verdict(test_rep),
        examples={
            name: [
                {"prompt": p, "completion": c} for p, c in zip(test, r["completions"], strict=False)
            ][:6]
            for name, r in zip(_TRIO, res, strict=False)  # random: the first draw's
        },
        per_prompt={
            "prompts": test,
            **{name: r["score"] for name, r in zip(_TRIO[:2], res, strict=False)},
            "random": [r["score"] for r in res[2:]],
        },
        maps=maps,
        cost={"rows_generated": sw.rows_run, "tokens_generated": sw.tokens},
        timings=sw.run.timing_report(),
    )


def run_sweep(
    lm: LoadedModel,
    behavior: Behavior,
    cfg: SweepConfig,
    out: str | Path,
    *,
    vector: Direction | None = None,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
    engine: Any = None,
) -> SweepReport:
    """Run a sweep into ``out`` and return the report (its :meth:`~.SweepReport.to_dict` is
    ``sweep.json``); ``engine``
    decodes the completions (:mod:`steerlab.engines`; default: the Hugging Face model)."""
    from .report import write_sweep_report

    make_scorer(behavior.scorer, description=behavior.description)  # a missing library: now
    behavior.check_splits()
    layers = _check_layers(lm, cfg, vector)
    run = Run(out, kind="sweep", lm=lm, engine=engine, progress=progress, status=status)
    sel = behavior.prompts("selection")
    with run.step("direction"):
        units, source = _direction(run, lm, behavior, cfg, layers, vector)
    with run.step("norms"):
        norms = _norms(run, lm, sel, layers, cfg)
    sw = Sweep(lm, behavior, cfg, run, layers, units, norms)
    with run.step("unsteered"):
        per = sw.evaluate([NoOp()], sel, sw.items("selection"), "base")[0]
        base = {**summarize(per), "_per": per}
    with run.step("grid"):
        cells, search = search_grid(sw, base)
        full = [c for c in cells if c["prompts"] == len(sel)]
        if cfg.random_control:
            _random_grid(sw, full, sel, base)
    pick = choose(full, base["ce"], cfg.max_ce_increase)
    best = pick["cell"]
    chosen = Cell(best["layer"], best["coeff"], best["positions"])
    run.say(
        f"chosen: layer {chosen.layer}, coefficient {chosen.coeff:g}, positions {chosen.positions}"
    )
    with run.step("test"):
        test = behavior.prompts("test")
        res = _test(sw, chosen, test)
    maps_rep = None
    if cfg.pairs >= 2 or cfg.profile:
        with run.step("maps"):
            held_out = {**res[1], "prompts": test, "selection": base["_per"]}
            maps_rep = maps.multi_layer(sw, full, chosen, held_out)
    report = _report(sw, source, base, cells, search, pick, chosen, test, res, maps_rep)
    run.write_json("sweep.json", report.to_dict())
    write_sweep_report(run, report)
    return report
