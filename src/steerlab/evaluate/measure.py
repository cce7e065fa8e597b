"""Measure treatments of a behaviour: score, fluency and side effects, many settings per batch.

For each treatment (an :class:`~steerlab.interventions.Intervention`: one cell of a grid, the
unsteered model, a random control...) on a list of open-ended prompts:

* ``score``: the behaviour scorer on the greedy completions (text scorers), or on the
  behaviour's items (``ab``: the matching letter's share of P(reply begins "(A") + P("(B"),
  :mod:`.letters`; ``margin``: sigmoid of the per-token log-likelihood margin of the positive
  completion);
* ``ce``: cross-entropy (nats/token) of the completion under the *untreated* model given the
  plain prompt, whatever the treatment: per-row edits are off, a prompted view's tokenizer is not
  used, and every peft adapter in the model is disabled (:func:`untreated`). A finetuned model
  would otherwise grade its own fluency, and pass a bound that steering must meet;
* ``distinct2`` and ``longest_repeat``: repetition of the completion; ``similarity``: how alike
  the completions to different prompts are (:func:`~steerlab.metrics.text.cross_prompt_similarity`:
  1 when one memorized reply answers every prompt);
* ``kl``: first-token KL(unsteered || treated) on neutral prompts (zero by construction for
  ``generated``-only steering, which leaves every prompt's forward alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..behaviors.behavior import ABItem, Behavior, Pair
from ..engines.base import Engine
from ..engines.hf import HFEngine
from ..engines.rows import continuation_nll_rows, next_logprobs_rows
from ..interventions.base import Intervention
from ..interventions.per_row import row_touches_prompt
from ..metrics.stats import kl_divergence
from ..metrics.text import cross_prompt_similarity, distinct_n, longest_repeat
from ..models.chat import format_prompt, has_chat_template
from ..models.load import LoadedModel
from .letters import letter_probs

__all__ = ["Measurer", "summarize", "untreated"]

Progress = Callable[[int], None]


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def summarize(per: dict[str, list[Any]]) -> dict[str, Any]:
    """Means of one setting's per-prompt figures (what a grid cell records)."""
    out = {k: _mean(per[k]) for k in ("score", "ce", "distinct2", "longest_repeat")}
    out["n"] = len([s for s in per["score"] if s is not None and math.isfinite(s)])
    out["kl"] = per.get("kl")
    if "similarity" in per:
        out["similarity"] = per["similarity"]
    return out


@contextmanager
def untreated(lm: LoadedModel) -> Iterator[LoadedModel]:
    """``lm`` with every peft adapter injected in its module tree disabled (what
    ``PeftModel.disable_adapter()`` does, found from the tree itself so that no handle to the
    adapter is needed); adapters, their ``requires_grad`` flags and modes are restored on exit.

    peft injects adapters in place (:class:`~steerlab.interventions.LoRA`), so ``lm.model`` runs
    them while one is applied: this is how the base model is reached meanwhile.
    """
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft: no adapter can be injected
        yield lm
        return
    layers = [m for m in lm.model.modules() if isinstance(m, BaseTunerLayer)]
    off = [m.disable_adapters for m in layers]
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    try:
        for m in layers:
            m.enable_adapters(False)
        yield lm
    finally:
        for m, was_off in zip(layers, off, strict=True):
            m.enable_adapters(not was_off)
        for n, p in lm.model.named_parameters():  # enable_adapters(True) sets requires_grad
            p.requires_grad_(grads.get(n, p.requires_grad))


@dataclass
class Measurer:
    """Measures settings of one model on one behaviour.

    Args:
        lm: the model as loaded; a treatment that changes the model itself (a prompt, an
            adapter) is passed to :meth:`measure` as ``view``.
        scorer: from :func:`steerlab.behaviors.make_scorer` (``kind`` text, ab or margin).
        engine: what decodes the completions (default: the HF model itself); teacher-forced
            scores stay on the Hugging Face model.
        neutral: prompts for the first-token KL.
        chat: apply the chat template (default: when the tokenizer has one).
    """

    lm: LoadedModel
    behavior: Behavior
    scorer: Any
    max_new_tokens: int = 32
    batch_rows: int = 64
    neutral: Sequence[str] = ()
    chat: bool | None = None
    engine: Engine | None = None

    def __post_init__(self) -> None:
        self._base_neutral: torch.Tensor | None = None
        if self.engine is None:
            self.engine = HFEngine()

    # -- pieces ------------------------------------------------------------------------

    def _kl(self, settings: Sequence[Intervention], view: LoadedModel) -> list[float]:
        if not self.neutral:
            return [float("nan")] * len(settings)
        if self._base_neutral is None:
            with untreated(self.lm):
                self._base_neutral = next_logprobs_rows(self.lm, self.neutral, chat=self.chat)
        # a treated view changes every prompt forward; without one only prompt-time edits do
        if view is not self.lm:
            touching = list(settings)
        else:
            touching = [s for s in settings if row_touches_prompt(s)]
        out: dict[int, float] = {}
        if touching:
            texts = [p for _ in touching for p in self.neutral]
            rows = [s for s in touching for _ in self.neutral]
            edits = any(s.ops() for s in touching)
            lp = next_logprobs_rows(
                view, texts, rows if edits else None, chat=self.chat, batch_rows=self.batch_rows
            )
            k = len(self.neutral)
            for j, s in enumerate(touching):
                out[id(s)] = kl_divergence(self._base_neutral, lp[j * k : (j + 1) * k])
        return [out.get(id(s), 0.0) for s in settings]

    def _item_scores(
        self, settings: Sequence[Intervention], items: Sequence[Any], view: LoadedModel
    ) -> list[list]:
        tok = view.tokenizer
        n = len(items)
        rows = [s for s in settings for _ in items]
        if self.scorer.kind == "ab":
            chat = has_chat_template(tok) if self.chat is None else self.chat
            texts = [format_prompt(tok, it.prompt(), chat=chat) for it in items] * len(settings)
            probs = letter_probs(view, texts, rows, batch_rows=self.batch_rows)
            res = []
            for j in range(len(settings)):
                block = probs[j * n : (j + 1) * n]
                scores = []
                for i, it in enumerate(items):
                    pa, pb = float(block[i, 0]), float(block[i, 1])
                    match = pa if it.matching_letter == "A" else pb
                    scores.append(match / (pa + pb) if pa + pb > 0 else float("nan"))
                res.append(scores)
            return res
        # margin: per-token log-likelihood of the positive vs the negative completion
        ctx = [it.prompt for it in items] * len(settings)
        pos = continuation_nll_rows(
            view, ctx, [it.positive for it in items] * len(settings), rows, chat=self.chat
        )
        neg = continuation_nll_rows(
            view, ctx, [it.negative for it in items] * len(settings), rows, chat=self.chat
        )
        res = []
        for j in range(len(settings)):
            scores = []
            for i in range(n):
                (sp, np_), (sn, nn_) = pos[j * n + i], neg[j * n + i]
                m = (-sp / max(np_, 1)) - (-sn / max(nn_, 1))
                scores.append(1.0 / (1.0 + math.exp(-m)))
            res.append(scores)
        return res

    # -- the one entry point -----------------------------------------------------------

    def measure(
        self,
        settings: Sequence[Intervention],
        prompts: Sequence[str],
        *,
        items: Sequence[ABItem | Pair] | None = None,
        kl: bool = True,
        progress: Progress | None = None,
        view: LoadedModel | None = None,
    ) -> list[dict[str, Any]]:
        """Per-prompt figures for each setting: ``{"score": [...], "ce": [...], "distinct2",
        "longest_repeat", "completions", "similarity", "kl", "tokens"}``.

        Args:
            view: the treated model the settings run on (what ``Intervention.applied`` yields:
                a prompted tokenizer, an injected adapter); default the model as loaded. It
                generates and is scored; fluency (``ce``) is always the untreated model's.
        """
        view = self.lm if view is None else view
        rows = [s for s in settings for _ in prompts]
        texts = [p for _ in settings for p in prompts]
        assert self.engine is not None
        gen = self.engine.generate_rows(
            view,
            texts,
            rows,
            max_new_tokens=self.max_new_tokens,
            batch_rows=self.batch_rows,
            chat=self.chat,
            progress=progress,
        )
        with untreated(self.lm):
            nll = continuation_nll_rows(self.lm, texts, gen.texts, chat=self.chat)
        if self.scorer.kind == "text":
            scores = [float(x) for x in self.scorer.score(texts, gen.texts)]
            item_scores = None
        else:
            item_scores = self._item_scores(settings, items or [], view)
            scores = []
        kls = self._kl(settings, view) if kl else [float("nan")] * len(settings)
        n = len(prompts)
        out = []
        for j, _s in enumerate(settings):
            sl = slice(j * n, (j + 1) * n)
            comps = gen.texts[sl]
            out.append(
                {
                    "score": item_scores[j] if item_scores is not None else scores[sl],
                    "ce": [s / m if m else float("nan") for s, m in nll[sl]],
                    "distinct2": [distinct_n(c, 2) for c in comps],
                    "longest_repeat": [float(longest_repeat(c)) for c in comps],
                    "completions": comps,
                    "similarity": cross_prompt_similarity(comps),
                    "kl": kls[j],
                    "tokens": sum(gen.lengths[sl]),
                }
            )
        return out
