"""The report of a refusal run (:class:`~.result.RefusalReport`, ``report.json``) from the
finished steps, and the exported model's card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..metrics import refusal_scores
from .config import RefusalConfig
from .data import RefusalData
from .evaluate import SETS
from .outcome import Coefficient, Evaluation
from .result import (
    BaselineScores,
    CandidateRow,
    Example,
    Failure,
    RefusalReport,
    SelectedCandidate,
    VariantMetrics,
)
from .steps import Candidates, Ctx, Filtered, Selection
from .verdicts import refusal_verdicts

__all__ = ["build_report", "model_card"]


def _examples(data: RefusalData, completions: dict[str, dict[str, list[str]]]) -> list[Example]:
    out = []
    for which, prompts in (("harmful", data.eval_harmful), ("harmless", data.eval_harmless)):
        for i, p in enumerate(prompts[:6]):
            done = {v: sets[which][i] for v, sets in completions.items() if which in sets}
            out.append(Example(which, p, done))
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
    failure: Failure | None = None,
) -> RefusalReport:
    """The report from whatever steps finished (a failed run still gets one, with
    ``status: "failed"`` and ``failure``: which step, and the error)."""
    cfg, lm = ctx.cfg, ctx.lm
    metrics = ev.metrics if ev else {}
    base = metrics.get("baseline")
    value = coeff.value if coeff else None
    timing = ctx.run.timing_report()
    return RefusalReport(
        status="failed" if failure else "complete",
        failure=failure,
        model=lm.info.model_id,
        identity=ctx.run.identity,
        config={
            **cfg.to_dict(),
            "positions_used": cands.positions if cands else None,
            "refusal_token_ids": ctx.ids,
            "coeff_chosen": value,
            "clamp_value": sel.clamp_value if sel else None,
            "data": data.sizes() if data else None,
        },
        selected=_selected(sel.best, value) if sel else None,
        directions=_directions(sel, cfg) if sel is not None else None,
        selection_rule=selection_rule(cfg),
        candidates=[CandidateRow.from_dict(c) for c in sel.candidates] if sel else [],
        coefficient_scan=coeff.scan if coeff else [],
        baseline_scores=_baseline_scores(sel, ctx.ids) if sel else None,
        variants=metrics,
        verdicts=refusal_verdicts(metrics, cfg, value, not lm.adapter.sandwich),
        disagreement={w: base.of(w).disagreement if base else None for w in SETS},
        examples=_examples(data, ev.completions) if (data and ev) else [],
        filter=filtered.counts if filtered else None,
        export=export,
        timings=timing["seconds"],
        evaluation_generation=ev.generation if ev else None,
        compute_seconds=timing["compute_seconds"],
        resumed_steps=timing["resumed_steps"],
        notes=list(notes or []),
        steerlab_version=__version__,
    )


def _selected(best: dict[str, Any], coeff: float | None) -> SelectedCandidate:
    keys = ("layer", "position", "bypass_score", "induce_score", "kl_score")
    return SelectedCandidate(**{k: best[k] for k in keys}, coeff=coeff)


def _baseline_scores(sel: Selection, ids: list[int]) -> BaselineScores:
    """The unchanged model's mean refusal score on the val prompts."""
    harmful = float(sum(sel.base_harmful_val) / len(sel.base_harmful_val))
    return BaselineScores(harmful, float(refusal_scores(sel.base_harmless_val, ids).mean()))


def model_card(
    model_id: str,
    best: dict[str, Any],
    metrics: Mapping[str, VariantMetrics],
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
        metrics={n: v.to_dict() for n, v in metrics.items()},
        check=check,
        equivalence=equivalence,
        span=span if span and len(span) > 1 else [],
        max_new_tokens=cfg.max_new_tokens,
        kl=orth.kl_harmless if (orth := metrics.get("orthogonalized")) else None,
    )
