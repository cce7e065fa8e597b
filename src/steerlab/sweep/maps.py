"""Multi-layer maps, measured on the **test** split (held out from every choice and from the
direction's contrast data), each effect a paired difference with its interval.

* **pairs**: for the K best layers (ranked on the selection grid), add the direction at every
  pair (a, b) with the chosen coefficient split in half between them, beside each layer alone
  at half strength; per prompt, ``interaction = (s_ab - s_0) - (s_a - s_0) - (s_b - s_0)``:
  zero when the two edits add up, positive when they reinforce each other.
* **profile**: per layer, *sufficiency* (adding at that layer alone at the chosen coefficient,
  against the unsteered model on the same test prompts; the grid cells that chose the strength
  are not reused) against *necessity* (projecting the direction out at that layer alone, on the
  test prompts where the unsteered model shows the behaviour, score >= 0.5), with the ablation
  at every layer at once for reference.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluate.measure import summarize
from ..evaluate.select import rank_key
from ..interventions.base import Compose, NoOp
from ..interventions.treatments import Ablate, Steer
from ..metrics.stats import mean_ci, paired
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


def _square(k: int) -> list[list[Any]]:
    return [[None] * k for _ in range(k)]


def _pairs(sw: Sweep, cells: list[dict[str, Any]], chosen: Cell, base: dict) -> dict[str, Any]:
    """``base``: the unsteered model's per-prompt test figures (``score``, ``ce``)."""
    cfg = sw.cfg
    sel_ce = summarize(base["selection"])["ce"]
    top = _best_layers(cells, chosen.positions, sel_ce, cfg.max_ce_increase, cfg.pairs)
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
    res = sw.evaluate(singles + both, base["prompts"], sw.items("test"), "pairs-test")
    s0 = np.asarray(base["score"], dtype=float)
    eff = {lay: np.asarray(res[i]["score"], dtype=float) - s0 for i, lay in enumerate(top)}
    k = len(top)
    effect, inter, inter_ci, ce = _square(k), _square(k), _square(k), _square(k)
    base_ce = summarize(base)["ce"]
    for j, (a, b) in enumerate(combos):
        r = res[len(top) + j]
        e = np.asarray(r["score"], dtype=float) - s0
        per = e - eff[a] - eff[b]  # per-prompt interaction
        ia, ib = top.index(a), top.index(b)
        for x, y in ((ia, ib), (ib, ia)):
            effect[x][y] = float(np.nanmean(e))
            inter[x][y] = float(np.nanmean(per))
            inter_ci[x][y] = list(mean_ci(per, seed=cfg.seed))
            ce[x][y] = summarize(r)["ce"] - base_ce
    return {
        "layers": top,
        "coeff_each": half,
        "positions": chosen.positions,
        "split": "test",
        "single_effect": [float(np.nanmean(eff[lay])) for lay in top],
        "pair_effect": effect,
        "interaction": inter,
        "interaction_ci": inter_ci,
        "pair_ce_increase": ce,
    }


def _sufficiency(sw: Sweep, chosen: Cell, base: dict) -> tuple[list[float], list[list[float]]]:
    cells = [Cell(lay, chosen.coeff, chosen.positions) for lay in sw.layers]
    settings = [c.setting(sw.units, sw.norms) for c in cells]
    res = sw.evaluate(settings, base["prompts"], sw.items("test"), "sufficiency", kl=False)
    rows = [paired(r["score"], base["score"], seed=sw.cfg.seed) for r in res]
    return [r["diff"] for r in rows], [r["ci"] for r in rows]


def _present(sw: Sweep, base: dict) -> tuple[list[str], list[Any] | None]:
    """Test prompts (or items) on which the unsteered model shows the behaviour (>= 0.5)."""
    cap = sw.cfg.necessity_prompts
    keep = [i for i, s in enumerate(base["score"]) if s >= 0.5][:cap]
    items = sw.items("test")
    if items is not None:
        return base["prompts"][: len(keep)], [items[i] for i in keep]
    return [base["prompts"][i] for i in keep], None


def _profile(sw: Sweep, chosen: Cell, base: dict) -> dict[str, Any]:
    suff, suff_ci = _sufficiency(sw, chosen, base)
    prompts, items = _present(sw, base)
    n_present = len(items) if items is not None else len(prompts)
    out: dict[str, Any] = {
        "layers": sw.layers,
        "coeff": chosen.coeff,
        "split": "test",
        "sufficiency": suff,
        "sufficiency_ci": suff_ci,
        "present": n_present,
    }
    if n_present < MIN_PRESENT:
        out["necessity"] = None
        out["note"] = (
            f"only {n_present} test prompt(s) show the behaviour unsteered (need {MIN_PRESENT}): "
            "necessity is not measured"
        )
        return out
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
    res = sw.evaluate(settings, prompts, items, "necessity", kl=False)
    rows = [paired(res[0]["score"], r["score"], seed=sw.cfg.seed) for r in res[1:]]
    ref = summarize(res[0])
    out["necessity"] = [r["diff"] for r in rows[:-1]]
    out["necessity_ci"] = [r["ci"] for r in rows[:-1]]
    # what each ablation cost in fluency: a large drop with broken text is not a clean necessity
    out["necessity_ce_increase"] = [summarize(r)["ce"] - ref["ce"] for r in res[1:]]
    out["necessity_all_layers"] = rows[-1]["diff"]
    out["necessity_all_layers_ci"] = rows[-1]["ci"]
    out["present_score"] = ref["score"]
    out["source"] = "test items" if items is not None else "test prompts"
    return out


def multi_layer(
    sw: Sweep, cells: list[dict[str, Any]], chosen: Cell, base: dict[str, Any]
) -> dict[str, Any]:
    """The maps the config asks for (``pairs`` >= 2 implies the profile too). ``base``: the
    unsteered model's per-prompt figures on the test split (``prompts``, ``score``, ``ce``,
    ...) and on selection (``selection``)."""
    out: dict[str, Any] = {}
    if sw.cfg.pairs >= 2:
        out["pairs"] = _pairs(sw, cells, chosen, base)
    out["profile"] = _profile(sw, chosen, base)
    return out
