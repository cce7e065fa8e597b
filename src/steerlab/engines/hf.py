"""The Hugging Face engine: decoding on the loaded model itself, treatments as hooks."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from .base import Generated, OnStep, Progress

__all__ = ["HFEngine"]


class HFEngine:
    """Decodes on the loaded Hugging Face model (always available).

    ``generate_rows`` runs the per-row decode loop (one batch of rows, each under its own
    treatment); ``generate_jobs`` runs each job inside its intervention with batched
    ``generate`` (prefix cache on: the same tokens as without it).
    """

    name = "hf"

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}

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
        from ..generation import generate

        with treatment.applied(lm) if treatment is not None else nullcontext(lm) as m:
            out = generate(
                m.model,
                m.tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                chat=chat,
                progress=progress,
            )
        return list(out)

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
        from .rows import greedy_rows

        with around.applied(lm) if around is not None else nullcontext(lm) as view:
            return greedy_rows(
                view,
                prompts,
                rows,
                max_new_tokens=max_new_tokens,
                batch_rows=batch_rows,
                chat=chat,
                progress=progress,
                on_step=on_step,
            )

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
        opts = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, chat=chat)
        # an empty job keeps its place
        return [self.generate(lm, p, iv, progress=progress, **opts) if p else [] for iv, p in jobs]

    def close(self) -> None:
        return None
