"""The server's model worker: one thread owns the model, requests wait in a queue.

Each time the worker is free it takes every waiting request and groups them:

* greedy requests that share their prompt format and their whole-batch treatments (ablation,
  clamping) run as **one batch**, each row with its own steering
  (:class:`~steerlab.interventions.per_row.RowSetting`), through
  :func:`~steerlab.evaluate.engine.greedy_rows`, which decodes exactly as ``model.generate`` does;
* sampled requests (temperature > 0) run one at a time through
  :func:`~steerlab.generation.generate` under their interventions, as ``steerlab generate``.

Tokens reach the request as they are decoded (``on_step``); a cancelled request (its client
went away) is stopped at the next step, and dropped if it had not started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SteerlabError
from ..interventions.base import apply
from ..interventions.per_row import RowSetting
from ..models.chat import PromptFormat, prompted
from ..models.load import LoadedModel

__all__ = ["Batcher", "Call", "GenJob", "QueueFull"]

Emit = Callable[[str, Any], None]  # ("delta", text) | ("done", dict) | ("error", exception)


class QueueFull(SteerlabError):
    """Too many requests are waiting (HTTP 429)."""


@dataclass(eq=False)
class GenJob:
    """One completion to produce.

    Attributes:
        prompt: the user's message (``chat`` None: the chat template applies when present) or
            raw text (``chat`` False).
        fmt: system message and earlier turns of a chat (None: a single user message).
        row: this request's additions at block inputs (batched per row).
        shared: treatments applied to the whole batch (ablation, clamping); ``shared_key``
            says which requests may share a batch.
        interventions: every treatment of this request, for the sampled path.
    """

    prompt: str
    emit: Emit
    chat: bool | None = None
    fmt: PromptFormat | None = None
    row: RowSetting = field(default_factory=RowSetting)
    shared: tuple[Any, ...] = ()
    shared_key: Hashable = ()
    interventions: tuple[Any, ...] = ()
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def group(self) -> Hashable:
        fmt = None if self.fmt is None else (self.fmt.system, self.fmt.shots)
        return (self.chat, fmt, self.shared_key)


@dataclass(eq=False)
class Call:
    """Any other work on the model (a reading): ``fn(lm)``'s value is emitted as ``done``."""

    fn: Callable[[LoadedModel], Any]
    emit: Emit
    cancelled: threading.Event = field(default_factory=threading.Event)


Job = GenJob | Call


class _Row:
    """A request's text as it grows: deltas, stop strings, the reason it ended."""

    def __init__(self, job: GenJob, tokenizer: Any) -> None:
        self.job, self.tok = job, tokenizer
        self.ids: list[int] = []
        self.sent = ""
        self.finish: str | None = None
        self.text = ""
        self.prompt_tokens = 0

    def _render(self) -> tuple[str, bool]:
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.job.stop if s and s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def push(self, token: int | None) -> bool:
        """Take one decoded token (None: EOS); True when the row is to stop now."""
        if self.finish is not None:
            return False
        if token is None:
            self.finish = "stop"
            return False
        self.ids.append(token)
        self.text, hit = self._render()
        stop = hit or len(self.ids) >= self.job.max_tokens or self.job.cancelled.is_set()
        if hit:
            self.finish = "stop"
        elif len(self.ids) >= self.job.max_tokens:
            self.finish = "length"
        elif self.job.cancelled.is_set():
            self.finish = "cancelled"
        hold = 0 if stop else max((len(s) for s in self.job.stop), default=1) - 1
        self._send(self.text[: len(self.text) - hold] if hold else self.text)
        return stop

    def _send(self, text: str) -> None:
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.job.emit("delta", text[len(self.sent) :])
            self.sent = text

    def close(self, text: str | None = None) -> dict[str, Any]:
        """Send what is left; the result. ``text``: the whole reply, decoded elsewhere."""
        if text is None:
            self.text = self._render()[0]
        else:
            cuts = [text.find(s) for s in self.job.stop if s and s in text]
            self.text = text[: min(cuts)] if cuts else text
            self.finish = "stop" if cuts else self.finish
        if self.text.startswith(self.sent) and len(self.text) > len(self.sent):
            self.job.emit("delta", self.text[len(self.sent) :])
            self.sent = self.text
        return {
            "text": self.text,
            "finish_reason": self.finish or "length",
            "completion_tokens": len(self.ids),
            "prompt_tokens": self.prompt_tokens,
        }


class Batcher:
    """The queue and the worker thread that owns ``lm``.

    Args:
        lm: the served model.
        max_queue: most requests waiting at once; more are refused with :class:`QueueFull`.
        max_batch: most rows decoded together.
        gather_s: an idle worker, woken by a request, waits until no other has come for this
            long (at most ten times this in all), so simultaneous clients share a batch.

    ``stats`` counts ``batches`` (greedy batches run), ``rows`` (requests in them),
    ``largest`` (the largest batch), ``sampled`` (requests decoded alone), ``calls``
    (readings), ``dropped`` (requests whose client left while they waited) and ``cancelled``
    (requests stopped mid-decoding because their client left).
    """

    def __init__(
        self,
        lm: LoadedModel,
        *,
        max_queue: int = 64,
        max_batch: int = 32,
        gather_s: float = 0.01,
    ) -> None:
        self.lm = lm
        self.max_queue = max_queue
        self.max_batch = max(1, max_batch)
        self.gather_s = gather_s
        self.stats = dict.fromkeys(
            ("batches", "rows", "largest", "sampled", "calls", "dropped", "cancelled"), 0
        )
        self._waiting: list[Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="steerlab-serve", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._cv:
            return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(
                    f"{len(self._waiting)} requests are already waiting (the limit is "
                    f"{self.max_queue}); retry later"
                )
            self._waiting.append(job)
            self._cv.notify()

    def close(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._closed = True
            left, self._waiting = self._waiting, []
            self._cv.notify()
        for job in left:
            _safe_emit(job, "error", QueueFull("the server shut down"))
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                # clients that send at the same moment arrive a few ms apart: wait until none
                # has come for gather_s (at most 10 x gather_s in all)
                now = time.monotonic()
                end, cap, seen = now + self.gather_s, now + 10 * self.gather_s, 0
                while len(self._waiting) < self.max_batch and not self._closed:
                    if len(self._waiting) > seen:
                        seen = len(self._waiting)
                        end = time.monotonic() + self.gather_s
                    left = min(end, cap) - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if self._closed:
                    return
                jobs, self._waiting = self._waiting, []
            live = [j for j in jobs if not j.cancelled.is_set()]
            self.stats["dropped"] += len(jobs) - len(live)  # their clients left while waiting
            jobs = live
            for run, items in self._plan(jobs):
                try:
                    run(items)
                except BaseException as e:  # reported to its requests; the worker lives on
                    for j in items:
                        _safe_emit(j, "error", e)

    def _plan(self, jobs: list[Job]) -> list[tuple[Callable[[list[Any]], None], list[Any]]]:
        """Greedy jobs grouped (in arrival order of each group's first job), the rest alone."""
        groups: dict[Hashable, list[GenJob]] = {}
        plan: list[tuple[Callable[[list[Any]], None], list[Any]]] = []
        for j in jobs:
            if isinstance(j, Call):
                plan.append((self._call, [j]))
            elif j.temperature > 0:
                plan.append((self._sampled, [j]))
            else:
                if j.group not in groups:
                    groups[j.group] = []
                    plan.append((self._greedy, groups[j.group]))
                groups[j.group].append(j)
        out: list[tuple[Callable[[list[Any]], None], list[Any]]] = []
        for run, items in plan:  # cut oversized groups
            for i in range(0, len(items), self.max_batch):
                out.append((run, items[i : i + self.max_batch]))
        return out

    def _call(self, jobs: list[Call]) -> None:
        self.stats["calls"] += 1
        _safe_emit(jobs[0], "done", jobs[0].fn(self.lm))

    def _view(self, job: GenJob) -> LoadedModel:
        if job.fmt is None:
            return self.lm
        return dataclasses.replace(self.lm, tokenizer=prompted(self.lm.tokenizer, job.fmt))

    def _greedy(self, jobs: list[GenJob]) -> None:
        try:
            self._greedy_batch(jobs)
        except SteerlabError:
            if len(jobs) == 1:
                raise
            for j in jobs:  # one bad request must not fail the others: run each alone
                try:
                    self._greedy_batch([j])
                except BaseException as e:
                    _safe_emit(j, "error", e)

    def _greedy_batch(self, jobs: list[GenJob]) -> None:
        from ..evaluate.engine import greedy_rows

        lm = self._view(jobs[0])
        rows = [_Row(j, lm.tokenizer) for j in jobs]
        for r in rows:  # also refuses a prompt the template cannot render, before the batch
            r.prompt_tokens = _prompt_tokens(lm, r.job)

        def step(first: int, tokens: list[int | None]) -> list[int]:
            return [first + i for i, t in enumerate(tokens) if rows[first + i].push(t)]

        self.stats["batches"] += 1
        self.stats["rows"] += len(jobs)
        self.stats["largest"] = max(self.stats["largest"], len(jobs))
        with apply(lm, list(jobs[0].shared)) as m:
            greedy_rows(
                m,
                [j.prompt for j in jobs],
                [j.row for j in jobs],
                max_new_tokens=max(j.max_tokens for j in jobs),
                batch_rows=len(jobs),
                chat=jobs[0].chat,
                min_prefix=0,
                on_step=step,
            )
        self.stats["cancelled"] += sum(r.finish == "cancelled" for r in rows)
        for r in rows:
            _safe_emit(r.job, "done", r.close())

    def _sampled(self, jobs: list[GenJob]) -> None:
        from ..generation import generate

        (job,) = jobs
        self.stats["sampled"] += 1
        lm = self._view(job)
        with apply(lm, list(job.interventions)) as m:
            out = generate(
                m.model,
                m.tokenizer,
                [job.prompt],
                max_new_tokens=job.max_tokens,
                temperature=job.temperature,
                top_p=job.top_p,
                seed=job.seed,
                chat=job.chat,
            )
        text = out[0] if isinstance(out, list) else out[0][0]
        row = _Row(job, lm.tokenizer)
        row.prompt_tokens = _prompt_tokens(lm, job)
        row.ids = lm.tokenizer.encode(text, add_special_tokens=False)  # a count: re-tokenized
        row.finish = "length" if len(row.ids) >= job.max_tokens else "stop"
        _safe_emit(job, "done", row.close(text))


def _prompt_tokens(lm: LoadedModel, job: GenJob) -> int:
    from ..models.chat import encode

    return int(encode(lm.tokenizer, [job.prompt], chat=job.chat).attention_mask.sum())


def _safe_emit(job: Job, kind: str, payload: Any) -> None:
    with contextlib.suppress(Exception):  # the request's event loop is gone: nobody listens
        job.emit(kind, payload)
