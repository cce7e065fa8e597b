"""What the worker is given: a completion (:class:`GenJob`) or any other call on the model
(:class:`Call`), and a reply's text as it grows (:class:`Reply`: deltas, stop strings, the
reason it ended, log-probabilities)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import SteerlabError
from ..interventions.base import Intervention, NoOp
from ..models.chat import PromptFormat

__all__ = [
    "Backend", "Call", "Emit", "GenJob", "Job", "QueueFull", "Reply", "run_call", "safe_emit"
]  # fmt: skip

Emit = Callable[[str, Any], None]  # ("delta", text) | ("done", dict) | ("error", exception)


class QueueFull(SteerlabError):
    """Too many requests are waiting (HTTP 429)."""

    http_status = 429


@dataclass(eq=False)
class GenJob:
    """One completion to produce.

    Attributes:
        prompt: the user's message (``chat`` None: the chat template applies when present) or
            raw text (``chat`` False).
        fmt: system message and earlier turns of a chat (None: a single user message).
        treatment: this request's intervention (applied to its row of the running batch).
        ids: the prompt's token ids, when the caller tokenized it already.
        seed: this row's sampler seed (each sampled row has its own generator).
        logprobs: how many top alternatives to report per token (None: no log-probabilities).
        plan: the treatment's worker plan, where an engine runs it (``--engine vllm``).
    """

    prompt: str
    emit: Emit
    chat: bool | None = None
    fmt: PromptFormat | None = None
    treatment: Intervention = field(default_factory=NoOp)
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    ids: list[int] | None = None
    logprobs: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    plan: list[dict[str, Any]] | None = None


@dataclass(eq=False)
class Call:
    """Any other work on the model (a reading): ``fn(lm)``'s value is emitted as ``done``."""

    fn: Callable[[Any], Any]
    emit: Emit
    cancelled: threading.Event = field(default_factory=threading.Event)


Job = GenJob | Call


def safe_emit(job: Job, kind: str, payload: Any) -> None:
    with contextlib.suppress(Exception):  # the request's event loop is gone: nobody listens
        job.emit(kind, payload)


def run_call(job: Call, lm: Any, stats: dict[str, int]) -> None:
    """Run a :class:`Call` on the model thread; its failure goes to its request alone."""
    if job.cancelled.is_set():
        stats["dropped"] += 1
        return
    stats["calls"] += 1
    try:
        safe_emit(job, "done", job.fn(lm))
    except BaseException as e:  # reported to its request; the worker lives on
        safe_emit(job, "error", e)


class Backend(Protocol):
    """What decodes the server's jobs: the Hugging Face :class:`~.batcher.Batcher`, or an
    engine's (:class:`~.vllm_batcher.VLLMBatcher`)."""

    stats: dict[str, int]
    max_model_len: int | None  # the engine's longest prompt + reply (None: the model's)

    @property
    def waiting(self) -> int: ...

    def prepare(self, job: GenJob) -> None:
        """Refuse what this backend cannot run (called before ``submit``, off the loop)."""

    def submit(self, job: Job) -> None: ...

    def close(self, timeout: float = 30.0) -> None: ...


class Reply:
    """A request's text as it grows: deltas, stop strings, the reason it ended."""

    def __init__(self, job: GenJob, tokenizer: Any, prompt_tokens: int) -> None:
        self.job, self.tok = job, tokenizer
        self.ids: list[int] = []
        self.sent = ""
        self.finish: str | None = None
        self.text = ""
        self.prompt_tokens = prompt_tokens
        self.logprobs: list[dict[str, Any]] = []

    def note_logprobs(self, token: int, logprob: float, top: list[tuple[int, float]]) -> None:
        """Record the next token's log-probability and its alternatives' (call before
        :meth:`push`); each token is named by the text it adds to the reply so far."""
        before = self.tok.decode(self.ids, skip_special_tokens=True)

        def piece(t: int) -> str:
            return self.tok.decode([*self.ids, t], skip_special_tokens=True)[len(before) :]

        alts = [(piece(t), v) for t, v in top]
        self.logprobs.append({"token": piece(token), "logprob": logprob, "top": alts})

    def _render(self) -> tuple[str, bool]:
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.job.stop if s and s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def push(self, token: int | None) -> bool:
        """Take one decoded token (None: EOS); True when the row has ended."""
        if self.finish is not None:
            return True
        if token is None:
            self.finish = "stop"
            return True
        self.ids.append(token)
        self.text, hit = self._render()
        if hit:
            self.finish = "stop"
        elif len(self.ids) >= self.job.max_tokens:
            self.finish = "length"
        elif self.job.cancelled.is_set():
            self.finish = "cancelled"
        # hold back what could be the start of a stop string
        hold = 0 if self.finish else max((len(s) for s in self.job.stop), default=1) - 1
        self._send(self.text[: len(self.text) - hold] if hold else self.text)
        return self.finish is not None

    def _send(self, text: str) -> None:
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.job.emit("delta", text[len(self.sent) :])
            self.sent = text

    def close(self) -> dict[str, Any]:
        """Send what is left; the result."""
        self.text = self._render()[0]
        if self.text.startswith(self.sent) and len(self.text) > len(self.sent):
            self.job.emit("delta", self.text[len(self.sent) :])
            self.sent = self.text
        out: dict[str, Any] = {
            "text": self.text,
            "finish_reason": self.finish or "length",
            "completion_tokens": len(self.ids),
            "prompt_tokens": self.prompt_tokens,
        }
        if self.job.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out
