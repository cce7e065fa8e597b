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
    progress: Callable[[str, int], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[str]]]]:
    """Run every variant; returns (metrics per variant, completions per variant and set)."""
    lm = iv.lm
    sets = {"harmful": list(harmful), "harmless": list(harmless)}
    gen_kw = dict(
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, chat=cfg.chat, seed=cfg.seed
    )
    say = progress or (lambda _s, _n: None)

    @contextmanager
    def applied(variant: str, which: str) -> Iterator[nn.Module]:
        with iv.context(variant, which):
            yield iv.model_for(variant)

    # Baseline completions first: the other variants' CE is measured on them.
    completions: dict[str, dict[str, list[str]]] = {}
    for variant in VARIANTS:
        for which in GENERATED_ON[variant]:
            cid = f"gen:{variant}:{which}"
            texts = journal.get(cid)
            if texts is None:
                with applied(variant, which) as model:
                    texts = generate(
                        model,
                        lm.tokenizer,
                        sets[which],
                        progress=lambda n, lab=f"{variant}/{which}": say(lab, n),
                        **gen_kw,
                    )
                journal.put(cid, texts)
            else:
                say(f"{variant}/{which}", len(texts))
            completions.setdefault(variant, {})[which] = texts
    base_lp: dict[str, torch.Tensor] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        mid = f"metrics:{variant}"
        m = journal.get(mid)
        if m is None:
            m = {}
            for which in ("harmful", "harmless"):
                with applied(variant, which) as model:
                    lp = last_token_logprobs(
                        model, lm.tokenizer, sets[which], batch_size=cfg.batch_size, chat=cfg.chat
                    )
                    if which == "harmless":
                        m["ce_loss_harmless"] = continuation_loss(
                            model, lm.tokenizer, [""] * len(harmless), sets["harmless"], chat=False
                        )
                        m["ce_loss_completions"] = continuation_loss(
                            model,
                            lm.tokenizer,
                            sets["harmless"],
                            completions["baseline"]["harmless"],
                            chat=cfg.chat,
                        )
                if variant == "baseline":
                    base_lp[which] = lp
                m[f"{which}_score_mean"] = float(refusal_scores(lp, refusal_ids).mean())
                if which == "harmless":
                    ref = base_lp.get("harmless")
                    if ref is None:
                        ref = last_token_logprobs(
                            lm.model,
                            lm.tokenizer,
                            sets["harmless"],
                            batch_size=cfg.batch_size,
                            chat=cfg.chat,
                        )
                        base_lp["harmless"] = ref
                    m["kl_harmless"] = kl_divergence(ref, lp)
            journal.put(mid, m)
        say(f"metrics/{variant}", 1)
        for which in ("harmful", "harmless"):
            texts = completions.get(variant, {}).get(which)
            r = _rates(texts, cfg.seed) if texts is not None else None
            m[f"{which}_refusal_rate"] = r["rate"] if r else None
            m[f"{which}_refusal_ci"] = r["ci"] if r else None
            m[f"{which}_refusal_rate_strict"] = r["rate_strict"] if r else None
            m[f"{which}_refusal_ci_strict"] = r["ci_strict"] if r else None
            m[f"{which}_disagreement"] = r["disagree"] if r else None
        metrics[variant] = m
    return metrics, completions
