"""The named steps of ``steerlab refusal`` that find the direction (1-3: filter, candidates,
selection), and the context every step sees; steps 4-6 are in :mod:`.outcome`. Data flows
forward: each step takes what earlier steps returned and keys its cache on those values
(prompts, vectors, settings), never on another step's key. The run's weights fingerprint is
part of every key (:class:`~steerlab.runs.Run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import DataError
from ..generation import last_token_logprobs
from ..interventions import vector_spec
from ..interventions.runtime import orthonormal_rows
from ..metrics import refusal_scores
from ..models.load import LoadedModel
from ..runs import Run
from .config import RefusalConfig
from .data import MIN_SET, RefusalData
from .result import FilterCounts
from .select import candidate_means, post_instruction_tokens, score_candidates, select_many

__all__ = [
    "Candidates",
    "Ctx",
    "Filtered",
    "Selection",
    "candidates",
    "filter_prompts",
    "selection",
    "vec_key",
]


@dataclass
class Ctx:
    """What every step sees: the run, the model, the settings, the refusal token ids."""

    run: Run
    lm: LoadedModel
    cfg: RefusalConfig
    ids: list[int]
    template: str | None = None

    def logprobs(self, prompts: list[str], label: str | None = None) -> torch.Tensor:
        """First-reply-token log-probs of the unchanged model, with a bar when labelled."""
        kw = {"batch_size": self.cfg.batch_size, "chat": self.cfg.chat}
        if label is None:
            return last_token_logprobs(self.lm.model, self.lm.tokenizer, prompts, **kw)
        with self.run.bar(label, len(prompts)) as adv:
            return last_token_logprobs(
                self.lm.model, self.lm.tokenizer, prompts, progress=adv, **kw
            )

    @property
    def prompt_key(self) -> dict[str, Any]:
        """How prompts are rendered: a template change re-measures everything."""
        return {"chat": self.cfg.chat, "template": self.template}


def vec_key(v: torch.Tensor) -> str:
    """A vector's cache key: the sha256 of its values."""
    return str(vector_spec(v)["sha256"])


# ------------------------------------------------------------------------------ 1. filter


@dataclass
class Filtered:
    harmful: list[str]
    harmless: list[str]
    counts: FilterCounts


def filter_prompts(ctx: Ctx, data: RefusalData) -> Filtered:
    """Keep harmful train prompts the model refuses and harmless ones it answers."""
    cfg, ids = ctx.cfg, ctx.ids

    def stats(prompts: list[str], label: str) -> dict[str, list[Any]]:
        lp = ctx.logprobs(prompts, label)
        top = lp.argmax(-1).tolist()
        return {
            "scores": refusal_scores(lp, ids).tolist(),
            "argmax_refusal": [int(t) in set(ids) for t in top],
        }

    filt = ctx.run.cache.json(
        "filter",
        [ctx.prompt_key, data.harmful, data.harmless, ids],
        lambda: {
            "harmful": stats(data.harmful, "filter: harmful train"),
            "harmless": stats(data.harmless, "filter: harmless train"),
        },
    )
    if cfg.filter_rule == "argmax":  # the greedy first token opens a refusal (or does not)
        keep_h = filt["harmful"]["argmax_refusal"]
        keep_l = [not r for r in filt["harmless"]["argmax_refusal"]]
    else:  # the paper's rule: refusal score > 0 (harmful) / < 0 (harmless)
        keep_h = [x > 0 for x in filt["harmful"]["scores"]]
        keep_l = [x < 0 for x in filt["harmless"]["scores"]]
    on = cfg.filter_train
    harmful = [p for p, k in zip(data.harmful, keep_h, strict=True) if k or not on]
    harmless = [p for p, k in zip(data.harmless, keep_l, strict=True) if k or not on]
    counts = FilterCounts(len(harmful), len(data.harmful), len(harmless), len(data.harmless))
    if len(harmful) < MIN_SET or len(harmless) < MIN_SET:
        raise DataError(
            f"after filtering, {len(harmful)} harmful prompt(s) are refused and {len(harmless)} "
            f"harmless ones answered (need {MIN_SET} each): this model may not refuse (try "
            "qwen2.5-coder-0.5b) or the sets are too small"
        )
    ctx.run.say(
        f"filter: {len(harmful)}/{len(data.harmful)} harmful refused, "
        f"{len(harmless)}/{len(data.harmless)} harmless answered"
    )
    return Filtered(harmful, harmless, counts)


# ------------------------------------------------------------------------------ 2. candidates


@dataclass
class Candidates:
    means: dict[str, torch.Tensor]  # "harmful" / "harmless": (L, K, D) float64
    positions: int  # K: the last K post-instruction tokens

    @property
    def diffs(self) -> torch.Tensor:
        return self.means["harmful"] - self.means["harmless"]


def candidates(ctx: Ctx, filtered: Filtered) -> Candidates:
    """Mean activations at every layer and the last K post-instruction positions."""
    cfg, lm = ctx.cfg, ctx.lm
    n_post = post_instruction_tokens(lm, cfg.chat)
    k = min(cfg.positions or min(n_post, 5), n_post)
    kw = {"batch_size": cfg.batch_size, "chat": cfg.chat}

    def compute() -> dict[str, torch.Tensor]:
        n = len(filtered.harmful) + len(filtered.harmless)
        with ctx.run.bar("candidates: activations", n) as adv:
            return {
                "harmful": candidate_means(lm, filtered.harmful, k, progress=adv, **kw),
                "harmless": candidate_means(lm, filtered.harmless, k, progress=adv, **kw),
            }

    key = [ctx.prompt_key, filtered.harmful, filtered.harmless, k]
    return Candidates(ctx.run.cache.tensors("candidates", key, compute), k)


# ------------------------------------------------------------------------------ 3. selection


@dataclass
class Selection:
    best: dict[str, Any]
    candidates: list[dict[str, Any]]
    notes: list[str]
    vector: torch.Tensor  # (D,) float32 mean difference of the selected candidate
    clamp_value: float  # projection of the harmful-train mean on the unit direction
    base_harmful_val: list[float]  # unchanged model's refusal scores on harmful val
    base_harmless_val: torch.Tensor  # unchanged model's log-probs on harmless val
    # --directions K: the chosen candidates, best first (``best`` is the first), and their
    # mean differences (K, D) float32; one candidate when K = 1.
    span: list[dict[str, Any]] = field(default_factory=list)
    vectors: torch.Tensor | None = None

    @property
    def k(self) -> int:
        """How many directions are ablated together."""
        return 1 if self.vectors is None else int(self.vectors.shape[0])

    @property
    def ablated(self) -> torch.Tensor:
        """What ablation and orthogonalization remove: the (D,) vector, or (K, D) rows whose
        span is removed (orthonormalized by :class:`~steerlab.interventions.Ablate`)."""
        return self.vector if self.vectors is None or self.k == 1 else self.vectors

    @property
    def layer(self) -> int:
        return int(self.best["layer"])

    @property
    def position(self) -> int:
        return int(self.best["position"])


def selection(ctx: Ctx, data: RefusalData, cands: Candidates) -> Selection:
    """Score the candidates on validation prompts and apply the selection rule."""
    cfg, cache = ctx.cfg, ctx.run.cache
    base_hl = cache.tensors(
        "baseline_val",
        [ctx.prompt_key, data.harmless_val],
        lambda: {"lp": ctx.logprobs(data.harmless_val, "baseline: harmless val")},
    )["lp"]
    base_h = cache.json(
        "baseline_val_harmful",
        [ctx.prompt_key, data.harmful_val, ctx.ids],
        lambda: refusal_scores(
            ctx.logprobs(data.harmful_val, "baseline: harmful val"), ctx.ids
        ).tolist(),
    )
    diffs = cands.diffs
    # The journal holds per-candidate scores: they depend on the prompts a score uses and the
    # induce coefficient, not on how many candidates the rule keeps or prunes.
    scoring = [cfg.early_prompts, cfg.induce_coeff]
    key = [ctx.prompt_key, vec_key(diffs), data.harmful_val, data.harmless_val, ctx.ids, scoring]
    journal = cache.journal("selection", key)
    cands_ = score_candidates(
        ctx.lm,
        diffs,
        data.harmful_val,
        data.harmless_val,
        ctx.ids,
        cfg,
        journal,
        base_harmless_lp=base_hl,
        bar=ctx.run.bar,
    )
    chosen, notes = select_many(cands_, cfg, cfg.directions)
    best = chosen[0]
    k = cands.positions
    vec = diffs[best["layer"], best["position"] + k].float()
    vectors = None
    if cfg.directions > 1:
        rows = torch.stack([diffs[c["layer"], c["position"] + k].float() for c in chosen])
        _, dependent = orthonormal_rows(rows, drop=True)
        for i in dependent:  # never the first: it is nonzero (it was ablated when scored)
            c = chosen[i]
            c["status"] = "dependent"
            notes.append(
                f"candidate layer {c['layer']}, position {c['position']} is (nearly) in the span "
                "of the better ones: left out of the ablated span"
            )
        keep_rows = [i for i in range(len(chosen)) if i not in dependent]
        chosen = [chosen[i] for i in keep_rows]
        vectors = rows[keep_rows]
        notes.append(
            f"{len(chosen)} direction(s) ablated together (the orthonormalized span of the "
            "best candidates' mean differences) in the ablation, orthogonalized and random "
            "variants and the export; addition, subtraction and clamp use the first direction."
        )
    r = vec / vec.norm()
    clamp_value = float(cands.means["harmful"][best["layer"], best["position"] + k].float() @ r)
    ctx.run.say(
        f"selected layer {best['layer']}, position {best['position']}: bypass "
        f"{best['bypass_score']:.2f}, induce {best['induce_score']:.2f}, KL {best['kl_score']:.3f}"
    )
    if len(chosen) > 1:
        where = ", ".join(f"layer {c['layer']} position {c['position']}" for c in chosen[1:])
        ctx.run.say(f"span of {len(chosen)} directions: also {where}")
    return Selection(best, cands_, notes, vec, clamp_value, base_h, base_hl, chosen, vectors)
