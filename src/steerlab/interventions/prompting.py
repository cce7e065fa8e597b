"""Prompting as an intervention: a system prompt, few-shot demonstrations, or text around the
user's message (contrast prompting), for the baselines that steering is compared with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..models.chat import PromptFormat, prompted
from ..models.load import LoadedModel

__all__ = ["PromptPrefix"]


@dataclass(frozen=True)
class PromptPrefix:
    """Change what the model is shown, not the model: every prompt rendered inside the context
    gets the system message, the demonstrations and the surrounding text.

    The yielded model is a view of ``lm`` whose tokenizer renders prompts this way; ``lm`` and
    its tokenizer are not changed.

    Args:
        system: a system message (for chat templates that have a system role).
        shots: ``(user, assistant)`` pairs shown as earlier turns (few-shot prompting).
        prefix: text put before the user's message (e.g. contrast prompting:
            ``"Good response: ... Bad response: ...\\n\\n"`` before the query).
        suffix: text put after the user's message.
        name: the treatment's name in reports.

    Example:
        >>> with PromptPrefix(system="Answer cheerfully.").applied(lm) as treated:  # doctest: +SKIP
        ...     steerlab.generate(treated.model, treated.tokenizer, prompts)
    """

    system: str | None = None
    shots: Sequence[tuple[str, str]] = ()
    prefix: str = ""
    suffix: str = ""
    name: str = "prompt"

    @property
    def format(self) -> PromptFormat:
        shots = tuple((str(u), str(a)) for u, a in self.shots)
        return PromptFormat(self.system, shots, self.prefix, self.suffix)

    def ops(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": "prompt",
                "system": self.system,
                "shots": [list(s) for s in self.shots],
                "prefix": self.prefix,
                "suffix": self.suffix,
            }
        ]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "prompt",
            "system": self.system,
            "n_shots": len(self.shots),
            "shots": [list(s) for s in self.shots],
            "prefix": self.prefix,
            "suffix": self.suffix,
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        yield replace(lm, tokenizer=prompted(lm.tokenizer, self.format))
