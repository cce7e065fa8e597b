"""``steerlab compare``: steering against prompting and finetuning on the same N examples.

Steps (everything is cached in the run directory; the journal holds one line per finished
method x N x draw, so an interrupted comparison resumes at the next one):

1. the training pool (the behaviour's pairs) and, per draw, a seeded permutation of it: draw
   d's first N pairs are what every method sees at N (nested: its N=4 contain its N=2);
2. one capture pass of every pool pair's positive and negative reply (CAA rendering, last
   token) at the steering layers: every N and draw's vector is a mean over cached rows;
3. per draw, the methods that use no example (unsteered, random, zero-shot, system prompt);
   then per N: steering (strength and layer chosen on the selection split), few-shot and
   contrast prompting, few-shot + steering, LoRA SFT (checkpoint chosen on the selection split)
   and LoRA + steering, DPO;
4. the summary per method and N over test prompts and draws (two-level bootstrap), the
   winner per N where intervals separate, the report.

Every method is an object of :data:`.methods.REGISTRY` (its data needs, its candidates, the
treatment each is) and runs the same way here: candidates scored on the selection prompts,
one chosen by the sweep's rule (:func:`~steerlab.evaluate.select.choose`: the best score among
candidates whose completions cost the unsteered model at most ``max_ce_increase`` nats/token
more than its own), the chosen one scored on the test prompts. Fluency is always the untreated
model's on the plain prompt (:class:`~steerlab.evaluate.Measurer`), adapters included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..capture import resolve_layers
from ..directions.extract import data_hash
from ..errors import DataError, first_line
from ..evaluate.select import choose, rule_text
from ..interventions import Intervention, NoOp
from ..models.load import LoadedModel
from ..runs import Journal, Run
from .config import METHODS, CompareConfig
from .contrasts import build_contrasts, winners
from .methods import REGISTRY, Draw, Method
from .null import null_report, random_null
from .prepare import capture, skipped_methods
from .result import CompareExample, CompareReport, Contrast, RandomNull, SummaryRow, Winner
from .state import Compare
from .summary import summarize_runs

__all__ = ["default_layers", "run_compare"]

Pair3 = tuple[str, str, str]


DEPTHS = (0.25, 0.4, 0.55, 0.7)


def default_layers(n_layers: int) -> list[int]:
    """Four layers across the depth (25, 40, 55, 70%): where single-layer addition steered on
    the models measured here (the sweep chose layer 13 of 30 for sentiment on smollm2-135m and
    found French only at 16 and 25), so no concept is judged at one layer only."""
    return sorted({min(n_layers - 1, max(1, round(f * n_layers))) for f in DEPTHS})


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _sel_view(res: dict[str, Any]) -> dict[str, float]:
    return {"score": _mean(res["score"]), "ce": _mean(res["ce"]), "similarity": res["similarity"]}


def _record(res: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **_sel_view(res),
        "distinct2": _mean(res["distinct2"]),
        "similarity": res["similarity"],
        "kl": res["kl"],
        "scores": res["score"],
        "ce_per_prompt": res["ce"],
        "completions": res["completions"],
        **extra,
    }


class _Chosen:
    """A method's chosen treatment at one draw and what its test run records."""

    def __init__(self, treatment: Intervention, record: dict[str, Any]) -> None:
        self.treatment, self.record = treatment, record


def _select(c: Compare, group: list[Method], fits: dict[str, Any]) -> dict[str, _Chosen]:
    """Every candidate of the methods that select, scored on the selection split in one go;
    each method's pick by the sweep's rule."""
    sel = [m for m in group if m.selects]
    cands = [(m.name, k) for m in sel for k in fits[m.name].candidates]
    t0 = time.perf_counter()
    res = c.evaluate([k.treatment for _, k in cands], c.sel, kl=False) if cands else []
    t_sel = (time.perf_counter() - t0) / max(len(sel), 1)
    out = {}
    for m in group:
        fit = fits[m.name]
        if not m.selects:  # the unsteered model: the reference of the bound itself
            out[m.name] = _Chosen(fit.candidates[0].treatment, dict(fit.info))
            continue
        cells = [
            {**k.label, **k.notes, **_sel_view(r), "_k": k}
            for (name, k), r in zip(cands, res, strict=True)
            if name == m.name
        ]
        pick = choose(cells, c.base_sel["ce"], c.cfg.max_ce_increase)
        k = pick["cell"]["_k"]
        rec = {
            "chosen": {
                **k.label,
                "within_bound": pick["within_bound"],
                "degenerate": pick["degenerate"],
                "selection": {x: pick["cell"][x] for x in ("score", "ce", "similarity")},
            },
            "selection": [{x: v for x, v in cell.items() if x != "_k"} for cell in cells],
            "select_seconds": t_sel,
            "candidates": len(cells),
            **fit.info,
            **k.info,
        }
        out[m.name] = _Chosen(k.treatment, rec)
    return out


def _run_group(
    c: Compare,
    group: list[Method],
    d: Draw,
    chosen: dict[str, _Chosen],
    report: list[str],
    put: Callable[[str, dict[str, Any], float], None],
) -> None:
    """Fit, choose and test the methods of one family at one draw; ``report`` names those
    whose test run is recorded (the others only serve as a stacked method's base)."""
    t0 = time.perf_counter()
    fits = {m.name: m.candidates(c, d, chosen.get(m.stacks_on or "")) for m in group}
    chosen.update(_select(c, group, fits))
    tested = [m.name for m in group if m.name in report]
    t1 = time.perf_counter()
    res = c.evaluate([chosen[m].treatment for m in tested], c.test, kl=True) if tested else []
    t_test = (time.perf_counter() - t1) / max(len(tested), 1)
    seconds = (time.perf_counter() - t0) / max(len(tested), 1)
    for m, r in zip(tested, res, strict=True):
        put(m, _record(r, eval_seconds=t_test, **chosen[m].record), seconds)


def _families(methods: Sequence[Method]) -> list[list[Method]]:
    """Consecutive methods of one family together, every other method alone."""
    out: list[list[Method]] = []
    for m in methods:
        if out and m.family is not None and out[-1][0].family == m.family:
            out[-1].append(m)
        else:
            out.append([m])
    return out


def _run_draw(c: Compare, names: Sequence[str], d: Draw, journal: Journal) -> None:
    """The methods ``names`` at one draw and N, skipping those already journaled; a method
    runs (unrecorded) where a stacked method needs its chosen treatment."""

    def item(m: str, draw: int = d.draw) -> str:
        return f"{m}|{'-' if d.n is None else d.n}|{draw}"

    def put(m: str, rec: dict[str, Any], seconds: float) -> None:
        rec = {"method": m, "n": d.n, "draw": d.draw, "seed": c.cfg.seed, **rec}
        rec.setdefault("fit_seconds", 0.0)
        journal.put(item(m), rec, seconds)

    todo = [m for m in names if journal.get(item(m)) is None]
    for m in list(todo):
        first = journal.get(item(m, 0))
        if REGISTRY[m].fixed and d.draw > 0 and first is not None:
            rec = {k: v for k, v in first.items() if k not in ("method", "n", "draw", "seed")}
            put(m, rec | {"copied_from_draw": 0}, 0.0)
            todo.remove(m)
    bases = {REGISTRY[m].stacks_on for m in todo} - {None}
    run = [REGISTRY[m] for m in METHODS if m in todo or m in bases]
    chosen: dict[str, _Chosen] = {}
    for group in _families(run):
        _run_group(c, group, d, chosen, todo, put)


def _draw_order(n_pool: int, seed: int, draw: int) -> list[int]:
    return np.random.default_rng([seed, draw]).permutation(n_pool).tolist()


def run_compare(
    lm: LoadedModel,
    behavior: Behavior,
    cfg: CompareConfig,
    out: str | Path,
    *,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
    engine: Any = None,
) -> CompareReport:
    """Run a comparison into ``out`` and return the report (its :meth:`~.CompareReport.to_dict`
    is ``compare.json``);
    ``engine`` decodes the completions (:mod:`steerlab.engines`; default: the HF model)."""
    from .report import write_compare_report

    behavior.check_splits()
    sizes = list(cfg.train_sizes)
    c0 = make_scorer(behavior.scorer, description=behavior.description)  # a missing library: now
    if c0.kind != "text":
        raise DataError(
            f"behavior {behavior.name!r} is scored by {behavior.scorer!r} on items; compare "
            "scores open-ended completions (a text scorer such as sentiment or language:fr)"
        )
    too_big = [n for n in sizes if n > len(behavior.pairs)]
    if too_big and behavior.pairs:
        raise DataError(
            f"--train-sizes {','.join(map(str, too_big))} exceed the {len(behavior.pairs)} pairs "
            f"of behavior {behavior.name!r}"
        )
    skipped = skipped_methods(lm, behavior, cfg, engine)
    methods = [m for m in cfg.methods if m not in skipped]
    n_layers = lm.info.n_layers
    run = Run(out, kind="compare", lm=lm, engine=engine, progress=progress, status=status)
    c = Compare(lm, behavior, cfg, run)
    c.layers = resolve_layers(cfg.layers, n_layers) if cfg.layers else default_layers(n_layers)
    with run.step("capture"):
        capture(c, run)

    key = [
        {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(cfg).items()
            if k not in ("methods", "train_sizes", "draws")
        },
        data_hash([f"{p}\x00{a}\x00{b}" for p, a, b in c.pool]),
        list(c.sel),
        list(c.test),
        list(c.neutral),
        c.layers,
        {k: v for k, v in c.scorer.spec().items() if k != "stats"},
    ]
    journal = run.cache.journal("runs", key)
    c.base_sel = run.cache.json(
        "unsteered-selection", key, lambda: _sel_view(c.evaluate([NoOp()], c.sel, kl=False)[0])
    )
    free = [m for m in methods if REGISTRY[m].needs == "none"]
    fitted = [m for m in methods if REGISTRY[m].needs == "pairs"]
    units = [u for d in range(cfg.draws) for u in [(None, d), *((n, d) for n in sizes)]]
    with run.step("methods"), run.bar("compare", len(units)) as advance:
        for n, d in units:
            if n is None:
                _run_draw(c, free, Draw(None, d), journal)
                run.say(f"draw {d + 1}: baselines without examples done")
            else:
                run.say(f"draw {d + 1}/{cfg.draws}, N = {n}")
                idx = _draw_order(len(c.pool), cfg.seed, d)[:n]
                _run_draw(c, fitted, Draw(n, d, idx, [c.pool[i] for i in idx]), journal)
            advance(1)

    runs = [journal.items[k] for k in sorted(journal.items)]
    runs = [r for r in runs if r["method"] in methods and (r["n"] in sizes or r["n"] is None)]
    runs = [r for r in runs if r["draw"] < cfg.draws]
    with run.step("random null"):
        null = random_null(c, runs, key)
    summary = summarize_runs(runs, methods, sizes, seed=cfg.seed)
    contrasts = build_contrasts(runs, summary, sizes, null, seed=cfg.seed)
    report = _report(c, runs, summary, skipped, contrasts, null)
    run.write_json("compare.json", report.to_dict())
    try:  # the results are saved: a figure that cannot be drawn must not lose them
        write_compare_report(run, report)
    except Exception as e:  # any rendering failure, reported in one line
        run.say(f"report.html not written ({type(e).__name__}: {first_line(str(e))}); "
                f"the results are in {run.path('compare.json')}")  # fmt: skip
    return report


def _report(
    c: Compare,
    runs: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    skipped: dict[str, str],
    contrasts: list[dict[str, Any]],
    null: dict[int, dict[str, Any]],
) -> CompareReport:
    cfg, lm = c.cfg, c.lm
    sizes = list(cfg.train_sizes)
    big = max(sizes)
    examples: dict[str, list[CompareExample]] = {}
    for m in cfg.methods:
        r = next(
            (x for x in runs if x["method"] == m and x["draw"] == 0 and x["n"] in (big, None)),
            None,
        )
        if r:
            examples[m] = [
                CompareExample(p, t, s)
                for p, t, s in zip(c.test, r["completions"], r["scores"], strict=False)
            ][:4]
    null_rep = null_report(null, summary, sizes, cfg.random_directions)
    return CompareReport(
        steerlab_version=__version__,
        model=lm.info.to_dict(),
        provenance=c.run.provenance(),
        behavior=c.behavior.to_dict(),
        scorer=c.scorer.spec(),
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        methods=[m for m in METHODS if m in cfg.methods and m not in skipped],
        skipped=skipped,
        train_sizes=sizes,
        layers=c.layers,
        norms={str(k): v for k, v in c.norms.items()},
        pool={"pairs": len(c.pool), "draw_rule": "seeded permutation per draw; N = its first N"},
        splits={"selection": len(c.sel), "test": len(c.test), "neutral": len(c.neutral)},
        rule=rule_text(cfg.max_ce_increase),
        unsteered_selection=c.base_sel,
        summary=[SummaryRow.from_dict(r) for r in summary],
        runs=[{k: v for k, v in r.items() if k != "completions"} for r in runs],
        examples=examples,
        cost={"rows_generated": c.rows, "tokens_generated": c.tokens},
        timings=c.run.timing_report(),
        contrasts=[Contrast.from_dict(x) for x in contrasts],
        winners=[Winner.from_dict(w) for w in winners(contrasts, summary, sizes)],
        random_null=None if null_rep is None else RandomNull.from_dict(null_rep),
    )
