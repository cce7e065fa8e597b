"""The report of a refusal run (``report.json`` contract) and the exported model's card."""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..metrics import refusal_scores
from .config import RefusalConfig
from .data import RefusalData
from .outcome import Coefficient, Evaluation
from .steps import Candidates, Ctx, Filtered, Selection
from .verdicts import refusal_verdicts

__all__ = ["build_report", "model_card"]

CANDIDATE_KEYS = (
    "layer",
    "position",
    "bypass_score",
    "induce_score",
    "kl_score",
    "screen_bypass",
    "screen_kl",
    "status",
)


def _examples(data: RefusalData, completions: dict[str, dict[str, list[str]]]) -> list[Any]:
    out = []
    for which, prompts in (("harmful", data.eval_harmful), ("harmless", data.eval_harmless)):
        for i, p in enumerate(prompts[:6]):
            done = {v: sets[which][i] for v, sets in completions.items() if which in sets}
            out.append({"set": which, "prompt": p, "completions": done})
    return out


def selection_rule(cfg: RefusalConfig) -> str:
    return (
        f"lowest bypass score with induce > {cfg.induce_min:g} (coefficient "
        f"{cfg.induce_coeff:g}) and KL < {cfg.kl_max:g}; last {cfg.prune_last:.0%} of layers "
        f"pruned; candidates pre-screened ({cfg.screen}) on {cfg.early_prompts} val "
        f"prompts, best {cfg.keep} fully scored"
    )


def _directions(sel: Selection, cfg: RefusalConfig) -> dict[str, Any]:
    """``--directions K``: which candidates span what is ablated, and what uses the first."""
    from ..interventions import vector_spec
    from ..interventions.runtime import orthonormal_rows

    keys = ("layer", "position", "bypass_score", "induce_score", "kl_score")
    span = sel.span or [sel.best]
    rows = sel.vectors if sel.vectors is not None else sel.vector[None]
    return {
        "requested": cfg.directions,
        "k": sel.k,
        "candidates": [{k: c.get(k) for k in keys} for c in span],
        "basis_sha256": vector_spec(orthonormal_rows(rows)[0].float())["sha256"],
        "ablated_by": ["ablation", "orthogonalized", "random (harmful: K random directions)"],
        "first_direction_only": ["subtraction", "addition", "clamp"],
    }


def build_report(
    ctx: Ctx,
    *,
    data: RefusalData | None = None,
    filtered: Filtered | None = None,
    cands: Candidates | None = None,
    sel: Selection | None = None,
    coeff: Coefficient | None = None,
    ev: Evaluation | None = None,
    export: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    failure: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report dict from whatever steps finished (a failed run still gets one, with
    ``status: "failed"`` and ``failure``: which step, and the error)."""
    cfg, lm = ctx.cfg, ctx.lm
    metrics = ev.metrics if ev else {}
    base = metrics.get("baseline") or {}
    dis = {w: base.get(f"{w}_disagreement") for w in ("harmful", "harmless")}
    selected = None
    if sel is not None:
        selected = {
            k: sel.best[k]
            for k in ("layer", "position", "bypass_score", "induce_score", "kl_score")
        }
        selected["coeff"] = coeff.value if coeff else None
    directions = _directions(sel, cfg) if sel is not None else None
    timing = ctx.run.timing_report()
    return {
        "kind": "steerlab.refusal",
        "status": "failed" if failure else "complete",
        "failure": failure,
        "model": lm.info.model_id,
        "identity": ctx.run.identity,
        "config": {
            **cfg.to_dict(),
            "positions_used": cands.positions if cands else None,
            "refusal_token_ids": ctx.ids,
            "coeff_chosen": coeff.value if coeff else None,
            "clamp_value": sel.clamp_value if sel else None,
            "data": data.sizes() if data else None,
        },
        "selected": selected,
        "directions": directions,
        "selection_rule": selection_rule(cfg),
        "candidates": [{k: c.get(k) for k in CANDIDATE_KEYS} for c in sel.candidates]
        if sel
        else [],
        "coefficient_scan": coeff.scan if coeff else [],
        "baseline_scores": {
            "harmful_val_mean": float(sum(sel.base_harmful_val) / len(sel.base_harmful_val)),
            "harmless_val_mean": float(refusal_scores(sel.base_harmless_val, ctx.ids).mean()),
        }
        if sel
        else None,
        "variants": metrics,
        "verdicts": refusal_verdicts(
            metrics, cfg, coeff.value if coeff else None, not lm.adapter.sandwich
        ),
        "disagreement": dis,
        "examples": _examples(data, ev.completions) if (data and ev) else [],
        "filter": filtered.counts if filtered else None,
        "export": export,
        "timings": timing["seconds"],
        "evaluation_generation": ev.generation if ev else None,
        "compute_seconds": timing["compute_seconds"],
        "resumed_steps": timing["resumed_steps"],
        "notes": list(notes or []),
        "steerlab_version": __version__,
    }


def model_card(
    model_id: str,
    best: dict[str, Any],
    metrics: dict[str, Any],
    cfg: RefusalConfig,
    check: dict[str, Any],
    equivalence: str,
    span: list[dict[str, Any]] | None = None,
) -> str:
    """The README.md of an exported abliterated checkpoint (``templates/model_card.md.j2``);
    ``span`` lists the candidates of a multi-direction export (``--directions K``)."""
    from ..export.card import model_card as card

    return card(
        "refusal",
        model_id=model_id,
        best=best,
        metrics=metrics,
        check=check,
        equivalence=equivalence,
        span=span if span and len(span) > 1 else [],
        max_new_tokens=cfg.max_new_tokens,
        kl=metrics.get("orthogonalized", {}).get("kl_harmless"),
    )
