"""Held-out evaluation of the selected refusal direction under every intervention.

Variants and the prompt sets they are generated on:

=============== ============================================ ==================
variant          intervention                                 generated on
=============== ============================================ ==================
baseline         none                                         harmful, harmless
ablation         direction ablated at every layer             harmful, harmless
subtraction      ``-1 x`` mean difference added at its layer  harmful
addition         ``coeff x`` mean difference at its layer     harmless
clamp            projection pinned to the harmful-train mean  harmless
orthogonalized   the weight-edited model, no hooks            harmful, harmless
random           random direction of the same norm: ablated   harmful, harmless
                 on harmful, added (same coeff) on harmless
=============== ============================================ ==================

First-token refusal scores, KL on harmless and cross-entropy are measured for every variant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..evaluate.loss import continuation_loss
from ..evaluate.refusal import (
    bootstrap_ci,
    kl_divergence,
    last_token_logprobs,
    refusal_scores,
    strict_refusal,
    substring_refusal,
)
from ..generation import generate
from ..interventions import ablate, clamp, steer
from ..models.load import LoadedModel
from ..runcache import Journal
from .config import RefusalConfig

__all__ = ["GENERATED_ON", "VARIANTS", "Intervention", "evaluate_variants"]

VARIANTS = ("baseline", "ablation", "subtraction", "addition", "clamp", "orthogonalized", "random")
GENERATED_ON: dict[str, tuple[str, ...]] = {
    "baseline": ("harmful", "harmless"),
    "ablation": ("harmful", "harmless"),
    "subtraction": ("harmful",),
    "addition": ("harmless",),
    "clamp": ("harmless",),
    "orthogonalized": ("harmful", "harmless"),
    "random": ("harmful", "harmless"),
}


@dataclass
class Intervention:
    """What the selected direction is, and how each variant applies it."""

    lm: LoadedModel
    vector: torch.Tensor  # (D,) mean difference at the selected layer/position
    layer: int
    coeff: float
    clamp_value: float
    random_vector: torch.Tensor  # same norm as ``vector``
    edited: nn.Module | None = None

    def model_for(self, variant: str) -> nn.Module:
        if variant == "orthogonalized":
            assert self.edited is not None
            return self.edited
        return self.lm.model

    def context(self, variant: str, which: str) -> AbstractContextManager[Any]:
        m, ad, v, lay = self.lm.model, self.lm.adapter, self.vector, self.layer
        if variant in ("baseline", "orthogonalized"):
            return nullcontext()
        if variant == "ablation":
            return ablate(m, v, adapter=ad)
        if variant == "subtraction":
            return steer(m, v, layers=lay, coeff=-1.0, adapter=ad)
        if variant == "addition":
            return steer(m, v, layers=lay, coeff=self.coeff, adapter=ad)
        if variant == "clamp":
            return clamp(m, v, self.clamp_value, layers=[lay], adapter=ad)
        if variant == "random":
            if which == "harmful":
                return ablate(m, self.random_vector, adapter=ad)
            return steer(m, self.random_vector, layers=lay, coeff=self.coeff, adapter=ad)
        raise ValueError(f"unknown variant {variant!r}")


def _rates(texts: Sequence[str], seed: int) -> dict[str, Any]:
    loose = np.array([substring_refusal(t) for t in texts])
    strict = np.array([strict_refusal(t) for t in texts])
    return {
        "rate": float(loose.mean()),
        "ci": list(bootstrap_ci(loose, seed=seed)),
        "rate_strict": float(strict.mean()),
        "ci_strict": list(bootstrap_ci(strict, seed=seed)),
        "disagree": float((loose != strict).mean()),
    }


def evaluate_variants(
    iv: Intervention,
    harmful: Sequence[str],
    harmless: Sequence[str],
    refusal_ids: Sequence[int],
    cfg: RefusalConfig,
    journal: Journal,
    *,
    baseline_journal: Journal | None = None,
    n_ce: int = 16,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[str]]]]:
    """Run every variant; returns (metrics per variant, completions per variant and set).

    First-token scores and KL come free with generation (the first step's distribution); the
    only extra forwards are harmless prompts for variants not generated there (for KL) and the
    cross-entropy on ``n_ce`` harmless prompts.
    """
    lm = iv.lm
    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    say = progress or (lambda _s, _n: None)
    base_lp: torch.Tensor | None = None

    @contextmanager
    def applied(variant: str, which: str) -> Iterator[nn.Module]:
        with iv.context(variant, which):
            yield iv.model_for(variant)

    def first_lp(variant: str, which: str) -> tuple[list[str] | None, torch.Tensor]:
        with applied(variant, which) as model:
            if which in GENERATED_ON[variant]:
                texts, lp = generate(
                    model,
                    lm.tokenizer,
                    sets[which],
                    max_new_tokens=cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    chat=cfg.chat,
                    seed=cfg.seed,
                    first_logprobs=True,
                    prefix_cache=True,
                    progress=lambda n: say(f"{variant}/{which}", n),
                )
                return texts, lp
            return None, last_token_logprobs(
                model, lm.tokenizer, sets[which], batch_size=cfg.batch_size, chat=cfg.chat
            )

    records: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        jr = baseline_journal if variant == "baseline" and baseline_journal else journal
        rec = jr.get(f"eval:{variant}")
        if rec is None:
            rec = {}
            for which in ("harmful", "harmless"):
                if which not in GENERATED_ON[variant] and which == "harmful":
                    continue
                texts, lp = first_lp(variant, which)
                rec[which] = {"texts": texts, "scores": refusal_scores(lp, refusal_ids).tolist()}
                if which == "harmless":
                    if variant == "baseline":
                        base_lp = lp
                    if base_lp is None:  # baseline came from the cache: one forward for it
                        base_lp = last_token_logprobs(
                            lm.model,
                            lm.tokenizer,
                            sets["harmless"],
                            batch_size=cfg.batch_size,
                            chat=cfg.chat,
                        )
                    rec["kl_harmless"] = kl_divergence(base_lp, lp)
            base_texts = (records.get("baseline") or rec)["harmless"]["texts"]
            ce_prompts = sets["harmless"][:n_ce]
            with applied(variant, "harmless") as model:
                rec["ce_loss_harmless"] = continuation_loss(
                    model, lm.tokenizer, [""] * len(ce_prompts), ce_prompts, chat=False
                )
                rec["ce_loss_completions"] = continuation_loss(
                    model, lm.tokenizer, ce_prompts, base_texts[: len(ce_prompts)], chat=cfg.chat
                )
            jr.put(f"eval:{variant}", rec)
        else:
            say(variant, sum(len(sets[w]) for w in GENERATED_ON[variant]))
        records[variant] = rec
    metrics: dict[str, dict[str, Any]] = {}
    completions: dict[str, dict[str, list[str]]] = {}
    for variant, rec in records.items():
        m: dict[str, Any] = {
            k: rec[k] for k in ("kl_harmless", "ce_loss_harmless", "ce_loss_completions")
        }
        for which in ("harmful", "harmless"):
            part = rec.get(which)
            texts = part["texts"] if part else None
            m[f"{which}_score_mean"] = float(np.mean(part["scores"])) if part else None
            r = _rates(texts, cfg.seed) if texts is not None else None
            m[f"{which}_refusal_rate"] = r["rate"] if r else None
            m[f"{which}_refusal_ci"] = r["ci"] if r else None
            m[f"{which}_refusal_rate_strict"] = r["rate_strict"] if r else None
            m[f"{which}_refusal_ci_strict"] = r["ci_strict"] if r else None
            m[f"{which}_disagreement"] = r["disagree"] if r else None
            if texts is not None:
                completions.setdefault(variant, {})[which] = texts
        metrics[variant] = m
    return metrics, completions
