"""The running batch of continuous batching: rows join at the next decode step, leave when done.

Each row is one request under its own treatment (:class:`~steerlab.interventions.PerRow`: the
hooks gate every op by a 0/1 row mask, so a row is changed exactly as its treatment alone would
change it). Arrivals are prefilled in a forward of their own (their prompts, their treatments)
and their KV cache is stacked onto the running one (:mod:`.kv`); then every decode step runs all
rows together. Greedy rows take the argmax as ``model.generate`` does; sampled rows draw from
their own seeded generator after Hugging Face's temperature and top-p warpers, so a request's
tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engines.rows import _forward
from ..interventions.per_row import PerRow
from ..models.chat import eos_ids, pad_id
from ..models.compat import cache_kwarg, cache_of
from ..models.load import LoadedModel
from . import kv
from .jobs import GenJob, Reply

__all__ = ["Running", "Slot", "warpers"]


@dataclass(eq=False)
class Slot:
    """One row of the running batch."""

    job: GenJob
    reply: Reply
    ids: list[int]
    gen: torch.Generator | None = None
    last: int = 0  # the token fed at the next step
    pos: int = 0  # its position id
    warpers: list[Any] = field(default_factory=list)


HF_TOP_K = 50  # model.generate's default, which steerlab generate keeps (it sets no top_k)


def warpers(job: GenJob) -> list[Any]:
    """Hugging Face's own logits warpers, in ``model.generate``'s order, so a sampled row
    draws what ``steerlab generate`` draws with the same seed."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if job.temperature <= 0:
        return []
    out: list[Any] = [TemperatureLogitsWarper(job.temperature), TopKLogitsWarper(HF_TOP_K)]
    if job.top_p < 1.0:
        out.append(TopPLogitsWarper(job.top_p))
    return out


class Running:
    """The rows being decoded, their KV cache and attention mask."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.slots: list[Slot] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.eos = set(eos_ids(lm.model, lm.tokenizer))
        self._hooks: contextlib.ExitStack | None = None

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def joinable(self) -> bool:
        """Whether new rows may join now (some caches cannot be stacked: they wait)."""
        return not self.slots or kv.mergeable(self.cache)

    def close_hooks(self) -> None:
        """Take the decode hooks off (before any other forward on the model)."""
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None

    def _pick(self, logits: torch.Tensor, s: Slot) -> tuple[int, Any]:
        """The row's next token from its (V,) logits, and (its log-probability, [(token id,
        log-probability)] of the top alternatives) when the request asked for them."""
        scores = logits.float()[None]
        if s.warpers:
            warped = scores
            for w in s.warpers:
                warped = w(None, warped)
            probs = torch.softmax(warped, -1)
            tok = int(torch.multinomial(probs, 1, generator=s.gen)[0, 0])
        else:
            tok = int(scores.argmax(-1)[0])
        n = s.job.logprobs
        if n is None:
            return tok, None
        lp = torch.log_softmax(scores[0], -1)  # the model's distribution, before any warper
        top = lp.topk(n) if n else None
        alts = [] if top is None else zip(top.indices.tolist(), top.values.tolist(), strict=True)
        return tok, (float(lp[tok]), list(alts))

    def _take(self, s: Slot, logits: torch.Tensor) -> bool:
        """Decode one token for ``s``; True when its row has ended."""
        tok, lps = self._pick(logits, s)
        if tok in self.eos:
            return s.reply.push(None)
        if lps is not None:
            s.reply.note_logprobs(tok, *lps)
        s.last, s.pos = tok, s.pos + 1
        return s.reply.push(tok)

    def _take_all(
        self, slots: list[Slot], logits: torch.Tensor
    ) -> tuple[list[Slot], list[Slot], list[tuple[Slot, Exception]]]:
        """Each row's token from its logits, a row at a time (one that errs fails alone):
        (rows going on, rows that ended, (row, error) for rows that failed)."""
        going, ended, failed = [], [], []
        for i, s in enumerate(slots):
            try:
                (ended if self._take(s, logits[i]) else going).append(s)
            except Exception as e:
                failed.append((s, e))
        return going, ended, failed

    @torch.no_grad()
    def prefill(
        self, slots: list[Slot]
    ) -> tuple[Any, torch.Tensor, list[Slot], list[tuple[Slot, Exception]]]:
        """The arrivals' forward under their treatments: (cache, mask, rows going on, (row,
        error) for rows whose first token failed). A failing forward raises (nothing sent)."""
        lm, dev = self.lm, self.lm.device
        width = max(len(s.ids) for s in slots)
        pid = pad_id(lm.tokenizer)
        ids = torch.tensor([[pid] * (width - len(s.ids)) + s.ids for s in slots], device=dev)
        mask = torch.tensor(
            [[0] * (width - len(s.ids)) + [1] * len(s.ids) for s in slots], device=dev
        )
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with PerRow([s.job.treatment for s in slots]).applied(lm):
            out = _forward(
                lm.model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True
            )
        for s in slots:
            s.pos = len(s.ids) - 1  # the last prompt token's; the first new token is one on
        going, _, failed = self._take_all(slots, out.logits[:, -1])
        alive = [i for i, s in enumerate(slots) if s in going]
        cache, mask = kv.keep(cache_of(out), mask, alive)
        return cache, mask, going, failed

    def join(self, cache: Any, mask: torch.Tensor, slots: list[Slot]) -> None:
        """Stack prefilled rows onto the running batch."""
        if not slots:
            return
        self.close_hooks()
        if not self.slots:
            self.cache, self.mask, self.slots = cache, mask, list(slots)
            return
        assert self.mask is not None
        self.cache, self.mask = kv.join(self.cache, self.mask, cache, mask)
        self.slots += slots

    def drop(self, ended: list[Slot]) -> None:
        """Take ended rows out of the batch (and their columns of pure padding)."""
        if not ended:
            return
        self.close_hooks()
        gone = set(map(id, ended))
        rows = [i for i, s in enumerate(self.slots) if id(s) not in gone]
        self.slots = [self.slots[i] for i in rows]
        if not rows:
            self.cache = self.mask = None
            return
        assert self.mask is not None
        self.cache, self.mask = kv.keep(self.cache, self.mask, rows)

    def _decode(self, slots: list[Slot], mask: torch.Tensor) -> torch.Tensor:
        """One decode forward of ``slots`` (the cache's rows, under their treatments): the
        logits of their next tokens. The cache grows by one column."""
        dev = self.lm.device
        out = _forward(
            self.lm.model,
            input_ids=torch.tensor([[s.last] for s in slots], device=dev),
            attention_mask=mask,
            position_ids=torch.tensor([[s.pos] for s in slots], device=dev),
            use_cache=True,
            **{cache_kwarg(self.lm.model): self.cache},
        )
        self.cache = cache_of(out)
        return out.logits[:, -1]

    @torch.no_grad()
    def step(self) -> tuple[list[Slot], list[tuple[Slot, Exception]]]:
        """One decode step for every row: (rows that ended, (row, error) for rows that
        failed), all still in the batch. A forward that fails raises; :attr:`intact` says
        whether the batch was put back as it was before the step (then :meth:`failing_alone`
        can find the rows at fault)."""
        assert self.mask is not None
        saved, self.intact = kv.snapshot(self.cache), True
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.slots), 1)], 1)
        try:
            if self._hooks is None:  # kept on while the batch's rows stay the same
                stack = contextlib.ExitStack()
                self._hooks = stack
                treatments = [s.job.treatment for s in self.slots]
                stack.enter_context(PerRow(treatments).applied(self.lm))
            logits = self._decode(self.slots, mask)
        except BaseException:
            self.close_hooks()
            self.intact = saved is not None
            if saved is not None:
                kv.restore(self.cache, saved)
            raise
        self.mask = mask
        _, ended, failed = self._take_all(self.slots, logits)
        return ended, failed

    intact = True  # after a failed step: whether it was undone

    @torch.no_grad()
    def failing_alone(self) -> list[tuple[Slot, Exception]]:
        """The rows whose decode step fails when each runs alone, under its own treatment
        (after :meth:`step` failed and was undone); the batch is left as it was."""
        assert self.mask is not None and self.intact
        self.close_hooks()
        saved = kv.snapshot(self.cache)
        assert saved is not None
        cache, bad = self.cache, []
        for i, s in enumerate(self.slots):
            self.cache, mask = kv.keep(cache, self.mask, [i])  # the row's own (a trial)
            try:
                with PerRow([s.job.treatment]).applied(self.lm):
                    self._decode([s], torch.cat([mask, mask.new_ones(1, 1)], 1))
            except Exception as e:
                bad.append((s, e))
            finally:
                self.cache = cache
                kv.restore(cache, saved)
        return bad

    def longest(self) -> Slot:
        """The row with the most context (the batch's width and memory follow it)."""
        return max(self.slots, key=lambda s: s.pos)

    def fail_all(self) -> list[Slot]:
        """Empty the batch after a failed step (its cache is no longer consistent)."""
        self.close_hooks()
        out, self.slots, self.cache, self.mask = self.slots, [], None, None
        return out
