"""The server's model worker: one thread owns the model and runs continuous batching.

Requests wait in a queue. Between two decode steps of the running batch (:mod:`.running`) the
worker runs any waiting :class:`Call` (a reading), prefills the waiting completions (up to
``max_batch`` rows in all) under their own treatments and stacks them onto the batch; then one
step decodes every row. A row leaves as soon as it ends: EOS, a stop string (checked every
step), ``max_tokens``, or its client gone (the request sets ``cancelled``; the row is dropped
before the next step). Greedy and sampled rows share the batch; a sampled row draws from its
own seeded generator. A row fails alone: a failing prefill is retried one request at a time;
a failing decode step is undone and each row tried alone, and the rows that fail alone fail
(when none does, the batch together was too much, e.g. out of memory: the row with the most
context fails, and the others go on at the next step).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import torch

from ..models.chat import prompted
from ..models.load import LoadedModel
from .jobs import Call, GenJob, Job, QueueFull, Reply, run_call, safe_emit
from .running import Running, Slot, warpers

__all__ = ["Batcher", "Call", "GenJob", "QueueFull", "prompt_ids"]


def view_of(lm: LoadedModel, job: GenJob) -> LoadedModel:
    """``lm`` with the job's chat format (system message, earlier turns) in its tokenizer."""
    if job.fmt is None:
        return lm
    return dataclasses.replace(lm, tokenizer=prompted(lm.tokenizer, job.fmt))


def prompt_ids(lm: LoadedModel, job: GenJob) -> list[int]:
    """The job's prompt as the model sees it (chat template and format applied)."""
    from ..models.chat import encode

    batch = encode(view_of(lm, job).tokenizer, [job.prompt], chat=job.chat)
    return [int(x) for x in batch.input_ids[0].tolist()]


class Batcher:
    """The queue and the worker thread that owns ``lm``.

    Args:
        lm: the served model.
        max_queue: most requests waiting at once; more are refused with :class:`QueueFull`.
        max_batch: most rows decoded together.
        gather_s: an idle worker, woken by a request, waits until no other has come for this
            long (at most ten times this in all), so simultaneous clients share a prefill.

    ``stats`` counts ``batches`` (prefill forwards), ``rows`` (requests admitted), ``largest``
    (the largest running batch), ``sampled`` (sampled rows), ``steps`` (decode steps),
    ``calls`` (readings), ``dropped`` (requests whose client left while they waited),
    ``cancelled`` (rows stopped because their client left) and ``failed`` (rows that erred).
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
        keys = [
            "batches",
            "rows",
            "largest",
            "sampled",
            "steps",
            "calls",
            "dropped",
            "cancelled",
            "failed",
        ]
        self.stats = dict.fromkeys(keys, 0)
        self._waiting: list[Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self._run = Running(lm)
        self._thread = threading.Thread(target=self._loop, name="steerlab-serve", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._cv:
            return len(self._waiting)

    max_model_len: int | None = None  # no engine limit: the model's own context holds

    def prepare(self, job: GenJob) -> None:
        """Nothing to refuse: every treatment runs on the Hugging Face model."""

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
            safe_emit(job, "error", QueueFull("the server shut down"))
        self._thread.join(timeout)

    def _gather(self) -> None:
        """Idle: wait for a request, then until none has come for ``gather_s``."""
        while not self._waiting and not self._closed:
            self._cv.wait()
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

    def _take(self) -> tuple[list[Call], list[GenJob]] | None:
        """Every waiting call, and the completions that fit in the batch (None: closed)."""
        run = self._run
        with self._cv:
            if not run.slots:
                self._gather()
            if self._closed:
                return None
            room = self.max_batch - len(run) if run.joinable else 0
            calls, gens, rest = [], [], []
            for j in self._waiting:
                if isinstance(j, Call):
                    calls.append(j)
                elif len(gens) < room or j.cancelled.is_set():
                    gens.append(j)
                else:
                    rest.append(j)
            self._waiting = rest
        return calls, gens

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                for s in self._run.fail_all():
                    safe_emit(s.job, "error", QueueFull("the server shut down"))
                return
            calls, gens = taken
            for c in calls:
                self._run.close_hooks()
                self._call(c)
            live = [j for j in gens if not j.cancelled.is_set()]
            self.stats["dropped"] += len(gens) - len(live)  # their clients left while waiting
            if live:
                self._admit(live)
            if self._run.slots:
                self._step()

    def _call(self, job: Call) -> None:
        run_call(job, self.lm, self.stats)

    def _slot(self, job: GenJob) -> Slot:
        ids = job.ids if job.ids is not None else prompt_ids(self.lm, job)
        gen = None
        if job.temperature > 0:
            gen = torch.Generator(device=self.lm.device).manual_seed(job.seed)
        reply = Reply(job, self.lm.tokenizer, len(ids))
        return Slot(job=job, reply=reply, ids=ids, gen=gen, warpers=warpers(job))

    def _admit(self, jobs: list[GenJob]) -> None:
        """Prefill the arrivals (together; one at a time if that fails) and join the batch."""
        slots = []
        for j in jobs:
            try:
                slots.append(self._slot(j))
            except BaseException as e:
                self._fail([j], e)
        groups = [slots] if slots else []
        while groups:
            group = groups.pop(0)
            self._run.close_hooks()
            try:
                cache, mask, alive, failed = self._run.prefill(group)
            except BaseException as e:
                if len(group) == 1:
                    self._fail([group[0].job], e)
                else:  # find the bad one: each alone (nothing was sent yet)
                    groups = [[s] for s in group] + groups
                continue
            self.stats["batches"] += 1
            self.stats["rows"] += len(group)
            self.stats["sampled"] += sum(s.gen is not None for s in group)
            self._fail_rows(failed)
            bad = [s for s, _ in failed]
            self._finish([s for s in group if s not in alive and s not in bad])  # ended at once
            self._run.join(cache, mask, alive)
            self.stats["largest"] = max(self.stats["largest"], len(self._run))

    def _step(self) -> None:
        run = self._run
        gone = [s for s in run.slots if s.job.cancelled.is_set()]
        for s in gone:
            s.reply.finish = "cancelled"
        self._finish(gone)
        run.drop(gone)
        if not run.slots:
            return
        try:
            ended, failed = run.step()
        except BaseException as e:
            if not run.intact:  # a cache updated in place: this step's is half-written
                self._fail([s.job for s in run.fail_all()], e)
                return
            # undone: the rows at fault fail; when none fails alone, the batch together was
            # too much (e.g. out of memory) and the row with the most context gives way
            failed = run.failing_alone() or [(run.longest(), e)]
            self._fail_rows(failed)
            run.drop([s for s, _ in failed])
            return
        self.stats["steps"] += 1
        self._fail_rows(failed)
        self._finish(ended)
        run.drop(ended + [s for s, _ in failed])

    def _finish(self, slots: list[Slot]) -> None:
        for s in slots:
            self.stats["cancelled"] += s.reply.finish == "cancelled"
            safe_emit(s.job, "done", s.reply.close())

    def _fail_rows(self, failed: list[tuple[Slot, Exception]]) -> None:
        for s, e in failed:
            self._fail([s.job], e)

    def _fail(self, jobs: list[GenJob], e: BaseException) -> None:
        self.stats["failed"] += len(jobs)
        for j in jobs:
            safe_emit(j, "error", e)
