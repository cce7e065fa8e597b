"""Steps 4-6 of ``steerlab refusal``, on the selected direction: the addition coefficient,
the direction artifact, and the evaluation of every variant on held-out prompts. As in
:mod:`.steps`, each step keys its cache on the values it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .._version import __version__
from ..directions.artifact import LAYER_CONVENTION, Direction
from ..generation import last_token_logprobs
from ..interventions import Steer
from ..metrics import refusal_scores
from ..runs import key_of
from .data import RefusalData
from .evaluate import evaluate_variants, generation_record, refusal_variants
from .result import VariantMetrics
from .steps import Ctx, Filtered, Selection, vec_key

__all__ = ["Coefficient", "Evaluation", "coefficient", "direction_artifact", "evaluation"]


# ------------------------------------------------------------------------------ 4. coefficient


@dataclass
class Coefficient:
    value: float
    scan: list[dict[str, float]]


def coefficient(ctx: Ctx, data: RefusalData, sel: Selection) -> Coefficient:
    """The addition coefficient, chosen on harmless *val* prompts (never on evaluation data):
    the smallest of the grid that makes ``induce_target`` of them score > 0."""
    cfg = ctx.cfg
    grid = list(cfg.coeff_grid) if cfg.coeff == "auto" else [float(cfg.coeff)]

    def scan() -> list[dict[str, float]]:
        rows = []
        with ctx.run.bar("coefficient: harmless val", len(grid)) as adv:
            for c in grid:
                with Steer(sel.vector, layers=sel.layer, coeff=c).applied(ctx.lm) as m:
                    lp = last_token_logprobs(
                        m.model,
                        m.tokenizer,
                        data.harmless_val,
                        batch_size=cfg.batch_size,
                        chat=cfg.chat,
                    )
                s = refusal_scores(lp, ctx.ids)
                rows.append(
                    {
                        "coeff": c,
                        "induce_score": float(s.mean()),
                        "frac_positive": float((s > 0).float().mean()),
                    }
                )
                adv(1)
        return rows

    key = [ctx.prompt_key, vec_key(sel.vector), sel.layer, grid, data.harmless_val, ctx.ids]
    rows = ctx.run.cache.json("coefficient", key, scan)
    if cfg.coeff != "auto":
        return Coefficient(float(cfg.coeff), rows)
    hit = [r for r in rows if r["frac_positive"] >= cfg.induce_target]
    best = hit[0] if hit else max(rows, key=lambda r: (r["frac_positive"], r["induce_score"]))
    return Coefficient(float(best["coeff"]), rows)


# ------------------------------------------------------------------------------ 5. artifact


def direction_artifact(
    ctx: Ctx, filtered: Filtered, sel: Selection, coeff: Coefficient
) -> Direction:
    """The selected direction as a Direction artifact (``direction.safetensors``)."""
    d = Direction(
        sel.vector.unsqueeze(0),
        (sel.layer,),
        {
            "model": ctx.lm.info.to_dict(),
            "weights": ctx.run.identity.get("weights"),
            "site": "resid_pre",
            "method": "mean_diff",
            "position": sel.position,
            "layer_convention": LAYER_CONVENTION,
            "kind_of_direction": "refusal",
            "data_hash": key_of([filtered.harmful, filtered.harmless]),
            "counts": {"positive": len(filtered.harmful), "negative": len(filtered.harmless)},
            "selection": {k: sel.best[k] for k in ("bypass_score", "induce_score", "kl_score")},
            "coeff": coeff.value,
            "clamp_value": sel.clamp_value,
            "steerlab_version": __version__,
            # --directions K > 1: the other candidates of the ablated span (not in this file)
            **(
                {"span": [{"layer": c["layer"], "position": c["position"]} for c in sel.span]}
                if sel.k > 1
                else {}
            ),
        },
    )
    d.save(ctx.run.path("direction.safetensors"))
    return d


# ------------------------------------------------------------------------------ 6. evaluation


@dataclass
class Evaluation:
    metrics: dict[str, VariantMetrics]
    completions: dict[str, dict[str, list[str]]]
    generation: dict[str, Any] | None = None  # this run's decoding: engine, seconds, tokens


def evaluation(ctx: Ctx, data: RefusalData, sel: Selection, coeff: Coefficient) -> Evaluation:
    """Every variant on the held-out prompts (the orthogonalized one last)."""
    cfg = ctx.cfg
    gen = torch.Generator().manual_seed(cfg.seed)
    rand = torch.randn(sel.vector.shape[0], generator=gen)
    rand = rand / rand.norm() * sel.vector.norm()
    # K directions: the random control ablates K random directions (the first is ``rand``)
    rand_span = None
    if sel.k > 1:
        rand_span = torch.cat([rand[None], torch.randn(sel.k - 1, rand.shape[0], generator=gen)])
    spill = ctx.run.path("cache")  # the originals of orthogonalized weights, meanwhile
    variants = refusal_variants(
        sel.vector, sel.layer, coeff.value, sel.clamp_value, rand, spill,
        span=sel.ablated if sel.k > 1 else None, random_span=rand_span,
    )  # fmt: skip
    sets = {"harmful": data.eval_harmful, "harmless": data.eval_harmless}
    n_gen = sum(len(sets[w]) for v in variants for w in v.generated_on)
    common = [
        ctx.prompt_key,
        ctx.ids,
        cfg.max_new_tokens,
        cfg.batch_size,
        data.eval_harmful,
        data.eval_harmless,
        cfg.seed,
    ]
    journal = ctx.run.cache.journal(
        "evaluation", [*common, [v.spec() for v in variants if v.name != "baseline"]]
    )
    # The unchanged model's results do not depend on the direction: kept apart so that a rerun
    # with another selection rule reuses them.
    base_journal = ctx.run.cache.journal("evaluation-baseline", common)
    t0 = time.perf_counter()
    clock: dict[str, float] = {}
    with ctx.run.bar("evaluation: generating", n_gen) as adv:
        metrics, completions = evaluate_variants(
            ctx.lm,
            variants,
            data.eval_harmful,
            data.eval_harmless,
            ctx.ids,
            cfg,
            journal,
            baseline_journal=base_journal,
            advance=adv,
            clock=clock,
            engine=ctx.run.engine,
        )
    ctx.run.say(f"evaluation: {len(variants)} variants in {time.perf_counter() - t0:.0f} s")
    gen = generation_record(ctx.run.engine, clock)
    if gen:
        ctx.run.say(
            f"evaluation: generation on {gen['engine']}: {gen['tokens']} tokens in "
            f"{gen['seconds']:.0f} s ({gen['tokens_per_s']:.1f} tokens/s)"
        )
    return Evaluation(metrics, completions, gen)
