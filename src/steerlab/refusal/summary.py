"""The report of a refusal run (``report.json`` contract) and the exported model's card."""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..metrics import refusal_scores
from .config import RefusalConfig
from .data import RefusalData
from .steps import Candidates, Coefficient, Ctx, Evaluation, Filtered, Selection
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
        "verdicts": refusal_verdicts(metrics, cfg, coeff.value if coeff else None),
        "disagreement": dis,
        "examples": _examples(data, ev.completions) if (data and ev) else [],
        "filter": filtered.counts if filtered else None,
        "export": export,
        "timings": timing["seconds"],
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
) -> str:
    """The README.md of an exported abliterated checkpoint."""

    def rate(variant: str, which: str) -> str:
        m = metrics.get(variant, {})
        v, ci = m.get(f"{which}_refusal_rate"), m.get(f"{which}_refusal_ci")
        return "—" if v is None else f"{v:.0%} (95% CI {ci[0]:.0%}–{ci[1]:.0%})"

    kl = metrics.get("orthogonalized", {}).get("kl_harmless")
    return f"""# {model_id} with the refusal direction removed

This checkpoint was written by steerlab {__version__} (`steerlab refusal --export`). It is
`{model_id}` with one direction in the residual stream projected out of every weight
that writes to it (token embeddings, attention and MLP output projections and their biases):
weight orthogonalization, as in Arditi et al. 2024, "Refusal in language models is mediated
by a single direction". It loads with stock `transformers`; nothing from steerlab is needed.

- Direction: difference in means of harmful vs harmless prompts at layer {best["layer"]},
  token position {best["position"]} (from the end of the prompt), `resid_pre` convention.
- Selection scores on validation prompts: bypass {best["bypass_score"]:.3f}, induce
  {best["induce_score"]:.3f}, KL {best["kl_score"]:.4f}.
- Equivalence: {equivalence}. Checked before export on {check["prompts"]} held-out prompts, one
  per forward: max |logit difference| vs runtime ablation = {check["max_abs_diff"]:.2e}, i.e.
  {check["max_rel_diff"]:.2e} of the logit scale (tolerance {check["tolerance_rel"]:g} in
  {check["dtype"]}; ablation itself moves the logits by {check["ablation_effect_rel"]:.2e}).

## Measured effects (held-out prompts, greedy, {cfg.max_new_tokens} new tokens)

| | harmful refusal rate | harmless refusal rate |
|---|---|---|
| original model | {rate("baseline", "harmful")} | {rate("baseline", "harmless")} |
| this model | {rate("orthogonalized", "harmful")} | {rate("orthogonalized", "harmless")} |

First-token KL from the original on harmless prompts: {"—" if kl is None else f"{kl:.4f}"}.
Refusal is judged by the reference phrase list; intervals are Wilson 95% intervals. See
`report.json` of the run for the stricter measure and the random-direction control.

**This model will comply with harmful requests its original refused.** Use it for research
on refusal and safety, not to serve users.
"""
