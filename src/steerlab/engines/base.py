"""What every generation engine offers: an :class:`Engine` decodes prompts under treatments
given explicitly, one treatment per row (or per job), and says what its numbers depend on.

Engines are passed to the pipelines that use them (``run_refusal(..., engine=...)``,
``Measurer(..., engine=...)``); nothing is bound to a model behind the caller's back:
``steerlab.generate(model, ...)`` always decodes on the Hugging Face model it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["ENGINES", "Engine", "Generated", "OnStep", "Progress"]

ENGINES = ("hf", "vllm")
Progress = Callable[[int], None]
# (index of the batch's first row in the call, each row's new token or None once it has ended)
# -> indices (in the call) of rows to stop now; the server streams and cancels through it
OnStep = Callable[[int, list[int | None]], Sequence[int] | None]


@dataclass(frozen=True)
class Generated:
    """Completions of a row batch: ``texts[i]`` and its number of new tokens ``lengths[i]``
    (EOS excluded)."""

    texts: list[str]
    lengths: list[int]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


@runtime_checkable
class Engine(Protocol):
    """Greedy decoding under explicit treatments.

    ``rows[i]`` (an :class:`~steerlab.interventions.Intervention` that adds, ablates or clamps,
    or ``NoOp``) treats row ``i`` alone; ``around`` (any intervention: a prompt, a LoRA,
    orthogonalized weights, hooks) treats the whole call. Teacher-forced scoring
    (log-probabilities, cross-entropy) runs on the Hugging Face model under every engine.
    """

    name: str

    def identity(self) -> dict[str, Any]:
        """What this engine's numbers depend on (recorded in runs, keys their caches)."""
        ...

    def generate(
        self,
        lm: Any,
        prompts: Sequence[str],
        treatment: Any = None,
        *,
        max_new_tokens: int = 48,
        batch_size: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        chat: bool | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Completions under one treatment (None: untreated); sampled when ``temperature``."""
        ...

    def generate_rows(
        self,
        lm: Any,
        prompts: Sequence[str],
        rows: Sequence[Any],
        *,
        around: Any = None,
        max_new_tokens: int = 32,
        batch_rows: int = 64,
        chat: bool | None = None,
        progress: Progress | None = None,
        on_step: OnStep | None = None,
    ) -> Generated:
        """Greedy completion of ``prompts[i]`` under ``rows[i]`` (inside ``around``)."""
        ...

    def generate_jobs(
        self,
        lm: Any,
        jobs: Sequence[tuple[Any, Sequence[str]]],
        *,
        max_new_tokens: int = 48,
        batch_size: int = 8,
        chat: bool | None = None,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        """Greedy completions for several ``(intervention, prompts)`` jobs."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, memory)."""
        ...
