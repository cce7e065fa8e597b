"""Candidate refusal directions and their selection (Arditi et al. 2024, section 2.3 / app. C).

Candidates: the difference in means between harmful and harmless prompts at every layer and
each of the last K post-instruction positions. Scores, each a mean first-token refusal score:

* bypass: on harmful val with the candidate ablated everywhere (lower = removes refusal);
* induce: on harmless val with the candidate added at its layer (higher = causes refusal);
* KL: first-token KL(baseline || ablated) on harmless val (lower = harmless behaviour kept).

The deepest ``prune_last`` of layers is never chosen. To fit on a laptop CPU, every candidate
is first screened by its bypass score and KL on a few val prompts; only the best ``keep``
(lowest bypass among those within the KL bound) are fully scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from ..capture import read_activations
from ..errors import SteerlabError
from ..generation import last_token_logprobs
from ..interventions import Ablate, Steer
from ..metrics import kl_divergence, refusal_scores
from ..models.chat import encode
from ..models.load import LoadedModel
from ..runs import Bar, Journal
from .config import RefusalConfig

# How far above ``kl_max`` a screen KL (on ``early_prompts`` prompts) may be and still rank
# with the passing candidates.
SCREEN_KL_SLACK = 2.0

__all__ = [
    "candidate_means",
    "post_instruction_tokens",
    "rank_candidates",
    "score_candidates",
    "select",
    "select_many",
]


def post_instruction_tokens(lm: LoadedModel, chat: bool | None) -> int:
    """Tokens the chat template adds after the user's message (e.g. ``<|im_end|>\\n<|im_start|>
    assistant\\n``); 1 when there is no template."""
    b = encode(lm.tokenizer, ["Write a poem about the sea"], chat=chat)
    return max(1, int(b.input_ids.shape[1] - 1 - b.instruction_end[0]))


@torch.no_grad()
def candidate_means(
    lm: LoadedModel,
    prompts: Sequence[str],
    positions: int,
    *,
    batch_size: int,
    chat: bool | None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(L, K, D) float64 mean activations at ``resid_pre`` of every layer and the last K tokens."""
    n_layers = lm.info.n_layers
    pos = tuple(range(-positions, 0))
    total = torch.zeros(n_layers, positions, lm.info.d_model, dtype=torch.float64)
    for i in range(0, len(prompts), batch_size):
        batch = encode(lm.tokenizer, list(prompts[i : i + batch_size]), chat=chat)
        acts = read_activations(lm.model, lm.adapter, batch, list(range(n_layers)), positions=pos)
        for lay in range(n_layers):
            for k, p in enumerate(pos):
                total[lay, k] += acts[(lay, p)].double().sum(0).cpu()
        if progress:
            progress(len(batch.texts))
    return total / len(prompts)


def _scores(
    lm: LoadedModel, prompts: Sequence[str], ids: Sequence[int], cfg: RefusalConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    lp = last_token_logprobs(
        lm.model, lm.tokenizer, prompts, batch_size=cfg.batch_size, chat=cfg.chat
    )
    return lp, refusal_scores(lp, ids)


def _candidate_grid(n_layers: int, n_pos: int, max_layer: int) -> list[dict[str, Any]]:
    """One record per (layer, position); the deepest layers are pruned at once."""
    return [
        {
            "layer": lay,
            "position": k - n_pos,
            "bypass_score": None,
            "induce_score": None,
            "kl_score": None,
            "screen_bypass": None,
            "status": "pruned_layer" if lay >= max_layer else "kept",
        }
        for lay in range(n_layers)
        for k in range(n_pos)
    ]


def _rank(c: dict[str, Any], kl_max: float) -> tuple[bool, float]:
    # The screen's KL is measured on a few prompts, so it is noisy: holding it to the real
    # bound drops candidates whose full-val KL passes. It only orders what gets fully
    # scored; the real bound is applied to the full scores.
    return (c["screen_kl"] > SCREEN_KL_SLACK * kl_max, c["screen_bypass"])


@dataclass
class _Screen:
    """Stage 1 for one candidate: bypass and KL on the first ``early_prompts`` val prompts,
    journaled (a rerun reads them back)."""

    lm: LoadedModel
    diffs: torch.Tensor
    early: list[str]  # harmful
    early_hl: list[str]  # harmless
    base_early: torch.Tensor  # the unchanged model's log-probs on ``early_hl``
    refusal_ids: Sequence[int]
    cfg: RefusalConfig
    journal: Journal

    def __call__(self, c: dict[str, Any], advance: Callable[[int], None]) -> None:
        cid = f"screen:{c['layer']}:{c['position']}"
        val = self.journal.get(cid)
        if val is None:
            t0 = time.perf_counter()
            v = self.diffs[c["layer"], c["position"] + self.diffs.shape[1]].float()
            if float(v.norm()) == 0:
                val = {"bypass": float("inf"), "kl": float("inf")}
            else:
                ids, cfg = self.refusal_ids, self.cfg
                with Ablate(v).applied(self.lm) as ab:
                    bypass = float(_scores(ab, self.early, ids, cfg)[1].mean())
                    lp = _scores(ab, self.early_hl, ids, cfg)[0]
                val = {"bypass": bypass, "kl": kl_divergence(self.base_early, lp)}
            self.journal.put(cid, val, time.perf_counter() - t0)
        c["screen_bypass"], c["screen_kl"] = val["bypass"], val["kl"]
        advance(1)


def _screen_all(
    screen: _Screen, live: list[dict[str, Any]], cfg: RefusalConfig, n_pos: int, bar: Bar
) -> list[dict[str, Any]]:
    """Stage 1 over the live candidates; returns those screened. "all" screens every (layer,
    position); "layers" screens the last position of every layer, then every position of the
    best ``keep`` layers (nearby positions give nearly the same direction)."""
    by_layers = cfg.screen == "layers" and n_pos > 1
    n_last = sum(c["position"] == -1 for c in live)
    total = n_last + min(cfg.keep, n_last) * (n_pos - 1) if by_layers else len(live)
    with bar("selection: screening candidates", total) as adv:
        if not by_layers:
            for c in live:
                screen(c, adv)
            return live
        last = [c for c in live if c["position"] == -1]
        for c in last:
            screen(c, adv)
        ranked = sorted(last, key=lambda c: _rank(c, cfg.kl_max))
        top_layers = {c["layer"] for c in ranked[: cfg.keep]}
        for c in live:
            if c["position"] != -1 and c["layer"] in top_layers:
                screen(c, adv)
        return [c for c in live if c["screen_bypass"] is not None]


def score_candidates(
    lm: LoadedModel,
    diffs: torch.Tensor,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    refusal_ids: Sequence[int],
    cfg: RefusalConfig,
    journal: Journal,
    *,
    base_harmless_lp: torch.Tensor,
    bar: Bar | None = None,
) -> list[dict[str, Any]]:
    """Score every (layer, position) candidate; results are journaled one by one (resumable).

    ``bar(description, total)`` shows the screening and each round of full scoring."""
    bar = bar or (lambda _d, _t: nullcontext(lambda _n: None))
    n_layers, n_pos, _ = diffs.shape
    cands = _candidate_grid(n_layers, n_pos, int(n_layers * (1 - cfg.prune_last)))
    early_hl = list(harmless_val[: cfg.early_prompts])
    screen = _Screen(
        lm,
        diffs,
        list(harmful_val[: cfg.early_prompts]),
        early_hl,
        base_harmless_lp[: len(early_hl)],
        refusal_ids,
        cfg,
        journal,
    )
    live = _screen_all(screen, [c for c in cands if c["status"] == "kept"], cfg, n_pos, bar)
    # Candidates that already break harmless behaviour cannot win; among the rest, the lowest
    # bypass scores go on (the KL-failing ones only if too few pass).
    live.sort(key=lambda c: _rank(c, cfg.kl_max))
    for c in cands:
        if c["status"] == "kept" and c not in live[: cfg.keep]:
            c["status"] = "pruned_early"
    # Stage 2: full scores for the best few. If none of them keeps KL within bound, the next
    # few by screen rank are scored too (up to 3 rounds): a pruned candidate could still win.
    for rnd in range(3):
        chunk = live[rnd * cfg.keep : (rnd + 1) * cfg.keep]
        if not chunk:
            break
        label = "selection: full scores" + (f", round {rnd + 1}" if rnd else "")
        with bar(label, len(chunk)) as adv:
            for c in chunk:
                args = (harmful_val, harmless_val, refusal_ids, cfg, journal, base_harmless_lp)
                c.update(_full_score(lm, diffs, c, *args))
                c["status"] = "kept"
                adv(1)
        if any(c["kl_score"] <= cfg.kl_max for c in chunk):
            break
    return cands


def _full_score(
    lm: LoadedModel,
    diffs: torch.Tensor,
    c: dict[str, Any],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    refusal_ids: Sequence[int],
    cfg: RefusalConfig,
    journal: Journal,
    base_harmless_lp: torch.Tensor,
) -> dict[str, float]:
    cid = f"full:{c['layer']}:{c['position']}"
    val = journal.get(cid)
    if val is None:
        t0 = time.perf_counter()
        v = diffs[c["layer"], c["position"] + diffs.shape[1]].float()
        with Ablate(v).applied(lm) as ab:
            bypass = float(_scores(ab, harmful_val, refusal_ids, cfg)[1].mean())
            lp_hl = _scores(ab, harmless_val, refusal_ids, cfg)[0]
        with Steer(v, layers=c["layer"], coeff=cfg.induce_coeff).applied(lm) as st:
            induce = float(_scores(st, harmless_val, refusal_ids, cfg)[1].mean())
        val = {
            "bypass_score": bypass,
            "induce_score": induce,
            "kl_score": kl_divergence(base_harmless_lp, lp_hl),
        }
        journal.put(cid, val, time.perf_counter() - t0)
    return val


def rank_candidates(
    cands: list[dict[str, Any]], cfg: RefusalConfig
) -> tuple[list[dict[str, Any]], list[str]]:
    """Mark the fully scored candidates that fail a filter; returns those the rule may choose
    from (relaxed as ``on_empty`` says), best (lowest bypass) first, and notes on what it did."""
    scored = [c for c in cands if c["bypass_score"] is not None]
    notes: list[str] = []
    for c in scored:
        if c["kl_score"] > cfg.kl_max:
            c["status"] = "failed_kl"
        elif c["induce_score"] <= cfg.induce_min:
            c["status"] = "failed_induce"
    ok = [c for c in scored if c["status"] == "kept"]
    if not ok:
        if cfg.on_empty != "relax":
            raise_empty(scored, cfg)
        ok = [c for c in scored if c["status"] == "failed_induce"]
        notes.append(
            f"No candidate had induce score > {cfg.induce_min:g} at coefficient "
            f"{cfg.induce_coeff:g} together with KL < {cfg.kl_max:g}; the induce filter was "
            "dropped (on_empty=relax) and the lowest bypass score among KL-passing candidates "
            "was chosen."
        )
        if not ok:
            ok = scored
            notes.append(f"No candidate had KL < {cfg.kl_max:g} either; chose the lowest bypass.")
    return sorted(ok, key=lambda c: c["bypass_score"]), notes  # stable: ties keep their order


def select(cands: list[dict[str, Any]], cfg: RefusalConfig) -> tuple[dict[str, Any], list[str]]:
    """Apply the rule; returns the chosen candidate and notes on what the rule did."""
    ranked, notes = rank_candidates(cands, cfg)
    best = ranked[0]
    best["status"] = "selected"
    return best, notes


def select_many(
    cands: list[dict[str, Any]], cfg: RefusalConfig, k: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The best ``k`` candidates by the rule of :func:`select` (distinct (layer, position) by
    construction), best first: the first is :func:`select`'s choice (``status: selected``),
    the others get ``status: selected_span``. Fewer than ``k`` passing is said in the notes."""
    ranked, notes = rank_candidates(cands, cfg)
    chosen = ranked[:k]
    chosen[0]["status"] = "selected"
    for c in chosen[1:]:
        c["status"] = "selected_span"
    if len(chosen) < k:
        notes.append(
            f"{k} directions were asked for but only {len(chosen)} fully scored candidate(s) "
            f"passed the rule: the ablated span has {len(chosen)} direction(s)."
        )
    return chosen, notes


def raise_empty(scored: list[dict[str, Any]], cfg: RefusalConfig) -> None:
    best = max((c["induce_score"] for c in scored), default=float("nan"))
    raise SteerlabError(
        f"no candidate passed induce > {cfg.induce_min:g} (best {best:.2f} at coefficient "
        f"{cfg.induce_coeff:g}) and KL < {cfg.kl_max:g}; raise --induce-coeff, lower "
        "--induce-min, or pass --on-empty relax"
    )
