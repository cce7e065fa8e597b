"""Multi-layer maps: edits at several layers at once, and what each layer is needed for.

* **pairs**: for the K best layers, add the direction at every pair (a, b) with the chosen
  coefficient split in half between them, beside each layer alone at half strength;
  ``interaction = effect(a+b) - effect(a) - effect(b)`` (effects relative to the unsteered
  model): zero when the two edits add up, positive when they reinforce each other.
* **profile**: per layer, *sufficiency* (adding at that layer alone, at the chosen coefficient,
  moves the score by this much) against *necessity* (projecting the direction out at that layer
  alone, on prompts where the unsteered model shows the behaviour, lowers the score by this
  much), with the ablation at every layer at once for reference.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..evaluate.measure import summarize
from ..evaluate.select import rank_key
from ..interventions.base import Compose, NoOp
from ..interventions.treatments import Ablate, Steer
from .grid import Cell

if TYPE_CHECKING:
    from .state import Sweep

__all__ = ["multi_layer"]

MIN_PRESENT = 4  # fewer prompts showing the behaviour cannot say what ablation removes


def _best_layers(
    cells: list[dict[str, Any]], positions: str, base_ce: float, bound: float, k: int
) -> list[int]:
    best: dict[int, tuple] = {}
    for c in cells:
        if c["positions"] != positions:
            continue
        key = rank_key(c, base_ce, bound)
        if c["layer"] not in best or key < best[c["layer"]]:
            best[c["layer"]] = key
    return sorted(sorted(best, key=lambda lay: best[lay])[:k])


def _pairs(sw: Sweep, cells: list[dict[str, Any]], chosen: Cell, base: dict) -> dict[str, Any]:
    cfg = sw.cfg
    top = _best_layers(cells, chosen.positions, base["ce"], cfg.max_ce_increase, cfg.pairs)
    half = chosen.coeff / 2
    singles = [Cell(lay, half, chosen.positions).setting(sw.units, sw.norms) for lay in top]
    combos = list(itertools.combinations(top, 2))
    both = [
        Compose(
            tuple(
                Steer(sw.units[x] * (half * sw.norms[x]), layers=x, positions=chosen.positions)  # type: ignore[arg-type]
                for x in (a, b)
            ),
            name=f"L{a}+L{b}:c{half:g}",
        )
        for a, b in combos
    ]
    sel = sw.behavior.prompts("selection")
    res = sw.evaluate(singles + both, sel, sw.items("selection"), "pairs")
    summ = [summarize(r) for r in res]
    single = {lay: summ[i]["score"] - base["score"] for i, lay in enumerate(top)}
    k = len(top)
    effect = [[None] * k for _ in range(k)]
    inter = [[None] * k for _ in range(k)]
    ce = [[None] * k for _ in range(k)]
    for j, (a, b) in enumerate(combos):
        s = summ[len(top) + j]
        ia, ib = top.index(a), top.index(b)
        e = s["score"] - base["score"]
        for x, y in ((ia, ib), (ib, ia)):
            effect[x][y] = e
            inter[x][y] = e - single[a] - single[b]
            ce[x][y] = s["ce"] - base["ce"]
    return {
        "layers": top,
        "coeff_each": half,
        "positions": chosen.positions,
        "single_effect": [single[lay] for lay in top],
        "pair_effect": effect,
        "interaction": inter,
        "pair_ce_increase": ce,
    }


def _present(sw: Sweep) -> tuple[list[str], list[Any] | None, list[float]]:
    """Prompts (or items) on which the unsteered model shows the behaviour (score >= 0.5)."""
    cap = sw.cfg.necessity_prompts
    sel = sw.behavior.prompts("selection")
    if sw.scorer.kind != "text":
        items = sw.items("selection") or []
        per = sw.evaluate([NoOp()], sel[:cap], items, "present", kl=False)
        keep = [it for it, s in zip(items, per[0]["score"], strict=True) if s >= 0.5][:cap]
        return sel[:cap], keep, []
    pool = list(sw.behavior.positive) if sw.behavior.positive else list(sel)
    pool = pool[: 3 * cap]
    per = sw.evaluate([NoOp()], pool, None, "present", kl=False)[0]
    keep = [p for p, s in zip(pool, per["score"], strict=True) if s >= 0.5][:cap]
    return keep, None, []


def _profile(sw: Sweep, cells: list[dict[str, Any]], chosen: Cell, base: dict) -> dict[str, Any]:
    by_key = {c["key"]: c for c in cells}
    missing = [
        Cell(lay, chosen.coeff, chosen.positions)
        for lay in sw.layers
        if Cell(lay, chosen.coeff, chosen.positions).key not in by_key
    ]
    sel = sw.behavior.prompts("selection")
    if missing:  # successive halving skipped them: measure each layer alone now
        res = sw.evaluate(
            [c.setting(sw.units, sw.norms) for c in missing], sel, sw.items("selection"), "grid"
        )
        for c, r in zip(missing, res, strict=True):
            by_key[c.key] = {"score": summarize(r)["score"]}
    suff = [
        by_key[Cell(lay, chosen.coeff, chosen.positions).key]["score"] - base["score"]
        for lay in sw.layers
    ]
    prompts, items, _ = _present(sw)
    n_present = len(items) if items is not None else len(prompts)
    out: dict[str, Any] = {
        "layers": sw.layers,
        "coeff": chosen.coeff,
        "sufficiency": suff,
        "present": n_present,
    }
    if n_present < MIN_PRESENT:
        out["necessity"] = None
        out["note"] = (
            f"only {n_present} prompt(s) show the behaviour unsteered (need {MIN_PRESENT}): "
            "necessity is not measured"
        )
        return out
    gen_prompts = prompts if items is None else sel[: len(prompts)]
    settings: list[Any] = [NoOp()]
    settings += [
        Ablate(sw.units[lay], layers=[lay], writes=False, name=f"ablate L{lay}")
        for lay in sw.layers
    ]
    every = Compose(
        tuple(Ablate(u, layers=[lay], writes=False) for lay, u in sw.units.items()),
        name="ablate all",
    )
    settings.append(every)
    res = [summarize(r) for r in sw.evaluate(settings, gen_prompts, items, "necessity", kl=False)]
    ref = res[0]["score"]
    out["necessity"] = [ref - r["score"] for r in res[1:-1]]
    # what each ablation cost in fluency: a large drop with broken text is not a clean necessity
    out["necessity_ce_increase"] = [r["ce"] - res[0]["ce"] for r in res[1:]]
    out["necessity_all_layers"] = ref - res[-1]["score"]
    out["present_score"] = ref
    out["source"] = (
        "selection items"
        if items is not None
        else "positive contrast prompts"
        if sw.behavior.positive
        else "selection prompts"
    )
    return out


def multi_layer(sw: Sweep, cells: list[dict[str, Any]], chosen: Cell, base: dict) -> dict:
    """The maps the config asks for (``pairs`` >= 2 implies the profile too)."""
    out: dict[str, Any] = {}
    if sw.cfg.pairs >= 2:
        out["pairs"] = _pairs(sw, cells, chosen, base)
    out["profile"] = _profile(sw, cells, chosen, base)
    return out
