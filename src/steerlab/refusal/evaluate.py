"""Held-out evaluation of the selected refusal direction under every intervention.

Each variant is a pair of :class:`~steerlab.interventions.Intervention` objects, one for the
harmful and one for the harmless prompts, and the sets it generates on:

=============== ============================================ ==================
variant          intervention                                 generated on
=============== ============================================ ==================
baseline         none                                         harmful, harmless
ablation         direction ablated at every layer             harmful, harmless
subtraction      ``-1 x`` mean difference added at its layer  harmful
addition         ``coeff x`` mean difference at its layer     harmless
clamp            projection pinned to the harmful-train mean  harmless
random           random direction of the same norm: ablated   harmful, harmless
                 on harmful, added (same coeff) on harmless
orthogonalized   the weights edited in place (restored after) harmful, harmless
=============== ============================================ ==================

With several directions (``--directions K``), ablation, orthogonalized and the random control's
ablation remove a K-dimensional span; subtraction, addition and clamp use the first direction.

The orthogonalized variant comes last: its in-place edit is the only one that touches weights.
First-token refusal scores, KL on harmless and cross-entropy are measured for every variant
(on harmless prompts also for variants that do not generate there).

On a vLLM engine every pending variant's completions decode in a single call, each (variant,
set) a request group under its own treatment (its ops); the first-token scores then come from
one forward of the Hugging Face model under that treatment. The completions are journaled as
soon as that call returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engines.base import Engine
from ..generation import generate, last_token_logprobs
from ..interventions import Ablate, Clamp, Intervention, NoOp, Orthogonalize, Steer
from ..metrics import (
    continuation_loss,
    kl_divergence,
    mean_ci,
    rate,
    refusal_scores,
    strict_refusal,
    substring_refusal,
)
from ..models.load import LoadedModel
from ..runs import Journal
from .config import RefusalConfig
from .result import SetMetrics, VariantMetrics

__all__ = ["SETS", "Variant", "evaluate_variants", "generation_record", "refusal_variants"]

SETS = ("harmful", "harmless")


@dataclass(frozen=True, eq=False)
class Variant:
    """One row of the evaluation: what is applied to each set, and where it generates."""

    name: str
    harmful: Intervention
    harmless: Intervention
    generated_on: tuple[str, ...]

    def on(self, which: str) -> Intervention:
        return self.harmful if which == "harmful" else self.harmless

    def spec(self) -> dict[str, Any]:
        return {
            "harmful": self.harmful.spec(),
            "harmless": self.harmless.spec(),
            "generated_on": list(self.generated_on),
        }


def refusal_variants(
    vec: torch.Tensor,
    layer: int,
    coeff: float,
    clamp_value: float,
    random_vec: torch.Tensor,
    spill_dir: Path | None = None,
    *,
    span: torch.Tensor | None = None,
    random_span: torch.Tensor | None = None,
) -> list[Variant]:
    """The variants of the table above, for the selected direction ``vec`` at ``layer``
    (``spill_dir``: where the orthogonalized variant keeps the original weights meanwhile).

    ``span`` (K, D): ablate and orthogonalize its span instead of ``vec`` (``vec`` its first
    row); ``random_span`` (K, D): what the random control ablates."""
    add, sub = Steer(vec, layers=layer, coeff=coeff), Steer(vec, layers=layer, coeff=-1.0)
    removed = vec if span is None else span
    ortho = Orthogonalize(removed, spill_dir=spill_dir)
    rand_ab = Ablate(random_vec if random_span is None else random_span)
    return [
        Variant("baseline", NoOp(), NoOp(), SETS),
        Variant("ablation", Ablate(removed), Ablate(removed), SETS),
        Variant("subtraction", sub, sub, ("harmful",)),
        Variant("addition", add, add, ("harmless",)),
        Variant(
            "clamp",
            Clamp(vec, clamp_value, layers=[layer]),
            Clamp(vec, clamp_value, layers=[layer]),
            ("harmless",),
        ),
        Variant("random", rand_ab, Steer(random_vec, layers=layer, coeff=coeff), SETS),
        Variant("orthogonalized", ortho, ortho, SETS),
    ]


def _rates(texts: Sequence[str]) -> dict[str, Any]:
    loose = np.array([substring_refusal(t) for t in texts])
    strict = np.array([strict_refusal(t) for t in texts])
    lr, sr = rate(loose), rate(strict)
    return {
        "rate": lr["rate"],
        "ci": lr["ci"],
        "k": lr["k"],
        "n": lr["n"],
        "rate_strict": sr["rate"],
        "ci_strict": sr["ci"],
        "k_strict": sr["k"],
        "disagree": float((loose != strict).mean()),
    }


def _measure(
    variant: Variant,
    lm: LoadedModel,
    sets: dict[str, list[str]],
    ids: Sequence[int],
    cfg: RefusalConfig,
    base: tuple[torch.Tensor, list[str]] | None,
    advance: Callable[[int], None],
    n_ce: int,
    done: dict[str, list[str]] | None = None,
    clock: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One variant's measures; ``base`` (the unchanged model's harmless log-probs and texts,
    computed outside any intervention) is None for the baseline itself. ``done`` holds
    completions already generated per set (an engine's one call for every variant)."""
    groups: list[tuple[Intervention, list[str]]] = []  # one context per distinct intervention
    for which in SETS:
        if which == "harmful" and which not in variant.generated_on:
            continue  # harmful prompts are only measured where generated
        iv = variant.on(which)
        if groups and groups[-1][0] is iv:
            groups[-1][1].append(which)
        else:
            groups.append((iv, [which]))
    rec: dict[str, Any] = {}
    for iv, whiches in groups:
        with iv.applied(lm) as m:
            for which in whiches:
                if done is not None and which in done:
                    texts = done[which]
                    lp = last_token_logprobs(
                        m.model, m.tokenizer, sets[which], batch_size=cfg.batch_size, chat=cfg.chat
                    )
                elif which in variant.generated_on:
                    t0 = time.perf_counter()
                    texts, lp = generate(
                        m.model,
                        m.tokenizer,
                        sets[which],
                        max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.batch_size,
                        chat=cfg.chat,
                        seed=cfg.seed,
                        first_logprobs=True,
                        prefix_cache=True,
                        progress=advance,
                    )
                    _tick(clock, m.tokenizer, [texts], t0)
                else:  # harmless, not generated here: one forward, for KL and scores
                    texts = None
                    lp = last_token_logprobs(
                        m.model, m.tokenizer, sets[which], batch_size=cfg.batch_size, chat=cfg.chat
                    )
                rec[which] = {"texts": texts, "scores": refusal_scores(lp, ids).tolist()}
                if which != "harmless":
                    continue
                rec["kl_harmless"] = 0.0 if base is None else kl_divergence(base[0], lp)
                ce = sets["harmless"][:n_ce]
                rec["ce_loss_harmless"] = continuation_loss(
                    m.model, m.tokenizer, [""] * len(ce), ce, chat=False
                )
                own = texts if base is None else base[1]
                rec["ce_loss_completions"] = continuation_loss(
                    m.model, m.tokenizer, ce, own[: len(ce)], chat=cfg.chat
                )
                if base is None:
                    rec["_lp"] = lp
    return rec


def _tick(clock: dict[str, float] | None, tok: Any, texts: list[list[str]], t0: float) -> None:
    """Add a generation call's wall time and generated tokens to ``clock``."""
    if clock is None:
        return
    clock["seconds"] = clock.get("seconds", 0.0) + time.perf_counter() - t0
    n = sum(len(tok.encode(t, add_special_tokens=False)) for g in texts for t in g)
    clock["tokens"] = clock.get("tokens", 0) + n


def _generate_pending(
    lm: LoadedModel,
    engine: Engine,
    variants: Sequence[Variant],
    sets: dict[str, list[str]],
    cfg: RefusalConfig,
    journal_of: Callable[[Variant], Journal],
    adv: Callable[[int], None],
    clock: dict[str, float] | None,
) -> dict[str, dict[str, list[str]]]:
    """Completions of every variant not yet measured, decoded by ``engine`` in one call (each
    variant's treatment travels as its ops; nothing is applied to the Hugging Face model).

    Each variant's completions are journaled (``texts:NAME``) as soon as the call returns, so
    an interrupted evaluation does not decode them again.
    """
    done: dict[str, dict[str, list[str]]] = {}
    jobs: list[tuple[Variant, str]] = []
    for v in variants:
        jr = journal_of(v)
        if jr.get(f"eval:{v.name}") is not None:
            continue
        kept = jr.get(f"texts:{v.name}")
        if kept is not None:
            done[v.name] = kept
            adv(sum(len(sets[w]) for w in kept))
            continue
        jobs += [(v, w) for w in v.generated_on]
    if not jobs:
        return done
    t0 = time.perf_counter()
    texts = engine.generate_jobs(
        lm,
        [(v.on(w), sets[w]) for v, w in jobs],
        max_new_tokens=cfg.max_new_tokens,
        chat=cfg.chat,
        progress=adv,
    )
    _tick(clock, lm.tokenizer, texts, t0)
    for (v, w), t in zip(jobs, texts, strict=True):
        done.setdefault(v.name, {})[w] = t
    for v in {v.name: v for v, _ in jobs}.values():
        journal_of(v).put(f"texts:{v.name}", done[v.name])
    return done


def generation_record(engine: Engine, clock: dict[str, float]) -> dict[str, Any] | None:
    """What a run's decoding cost: engine, wall seconds, generated tokens, tokens/s."""
    if not clock.get("seconds"):
        return None
    sec, tok = clock["seconds"], int(clock["tokens"])
    return {
        "engine": engine.name,
        "seconds": round(sec, 3),
        "tokens": tok,
        "tokens_per_s": round(tok / sec, 3),
    }


def evaluate_variants(
    lm: LoadedModel,
    variants: Sequence[Variant],
    harmful: Sequence[str],
    harmless: Sequence[str],
    refusal_ids: Sequence[int],
    cfg: RefusalConfig,
    journal: Journal,
    *,
    baseline_journal: Journal | None = None,
    n_ce: int = 16,
    advance: Callable[[int], None] | None = None,
    clock: dict[str, float] | None = None,
    engine: Engine | None = None,
) -> tuple[dict[str, VariantMetrics], dict[str, dict[str, list[str]]]]:
    """Run every variant; returns (metrics per variant, completions per variant and set).

    Each finished variant is journaled (the baseline apart, in ``baseline_journal``, since it
    does not depend on the direction). First-token scores and KL come free with generation
    (the first step's distribution); the only extra forwards are harmless prompts for variants
    not generated there, and the cross-entropy on ``n_ce`` harmless prompts. ``clock``, when
    given, accumulates the generation calls' wall ``seconds`` and generated ``tokens``.
    """
    if not variants or variants[0].name != "baseline":
        raise ValueError("the baseline variant must come first: the others are measured against it")
    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    adv = advance or (lambda _n: None)
    memo: dict[str, Any] = {}

    def base_lp() -> torch.Tensor:  # the baseline's harmless first-token distribution
        if "lp" not in memo:
            memo["lp"] = last_token_logprobs(
                lm.model, lm.tokenizer, sets["harmless"], batch_size=cfg.batch_size, chat=cfg.chat
            )
        return memo["lp"]

    def journal_of(v: Variant) -> Journal:
        return baseline_journal if v.name == "baseline" and baseline_journal else journal

    done: dict[str, dict[str, list[str]]] = {}
    if engine is not None and engine.name != "hf":  # every pending completion in one call
        done = _generate_pending(lm, engine, variants, sets, cfg, journal_of, adv, clock)
    records: dict[str, dict[str, Any]] = {}
    for v in variants:
        jr = journal_of(v)
        rec = jr.get(f"eval:{v.name}")
        if rec is None:
            t0 = time.perf_counter()
            # The baseline's distribution is computed before any intervention is entered: a
            # baseline read from the journal must not be recomputed under a variant's hooks.
            base = (
                None
                if v.name == "baseline"
                else (base_lp(), records["baseline"]["harmless"]["texts"])
            )
            rec = _measure(v, lm, sets, refusal_ids, cfg, base, adv, n_ce, done.get(v.name), clock)
            if "_lp" in rec:
                memo["lp"] = rec.pop("_lp")
            jr.put(f"eval:{v.name}", rec, time.perf_counter() - t0)
        else:
            adv(sum(len(sets[w]) for w in v.generated_on))
        records[v.name] = rec
    metrics: dict[str, VariantMetrics] = {}
    completions: dict[str, dict[str, list[str]]] = {}
    for v in variants:
        metrics[v.name] = _variant_metrics(v, records[v.name], cfg.seed)
        for which in SETS:
            part = records[v.name].get(which)
            if part and part["texts"] is not None:
                completions.setdefault(v.name, {})[which] = part["texts"]
    return metrics, completions


def _variant_metrics(v: Variant, rec: dict[str, Any], seed: int) -> VariantMetrics:
    """One variant's metrics from its journaled record: KL and CE, then per prompt set the
    first-token score (mean, bootstrap interval) and the refusal rates (Wilson intervals)."""
    return VariantMetrics(
        rec["kl_harmless"],
        rec["ce_loss_harmless"],
        rec["ce_loss_completions"],
        v.spec(),
        *(_set_metrics(rec.get(which), seed) for which in SETS),
    )


def _set_metrics(part: dict[str, Any] | None, seed: int) -> SetMetrics:
    """Scores wherever the set was measured; rates only where it was generated on."""
    if not part:
        return SetMetrics()
    scores = SetMetrics(float(np.mean(part["scores"])), list(mean_ci(part["scores"], seed=seed)))
    if part["texts"] is None:
        return scores
    r = _rates(part["texts"])
    return replace(
        scores,
        refusal_rate=r["rate"],
        refusal_ci=r["ci"],
        refusal_k=r["k"],
        n=r["n"],
        refusal_rate_strict=r["rate_strict"],
        refusal_ci_strict=r["ci_strict"],
        refusal_k_strict=r["k_strict"],
        disagreement=r["disagree"],
    )
