"""Chat templates, left-padded batches and token positions.

Nothing here mutates the caller's tokenizer (padding side, pad token): batches are padded by
hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import DataError

__all__ = [
    "Batch",
    "Position",
    "PromptFormat",
    "encode",
    "format_prompt",
    "has_chat_template",
    "pad_id",
    "prompted",
]

Position = Literal["last", "instruction-end", "mean"]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


@dataclass(frozen=True)
class PromptFormat:
    """How a user's message is dressed before the model sees it (prompting baselines).

    Attributes:
        system: a system message (chat templates that have a system role).
        shots: ``(user, assistant)`` demonstrations put before the message, as earlier turns
            of the conversation (raw text without a template: ``user\\nassistant\\n\\n``).
        prefix / suffix: text put right before / after the user's message, in the same turn.
    """

    system: str | None = None
    shots: tuple[tuple[str, str], ...] = field(default=())
    prefix: str = ""
    suffix: str = ""

    def then(self, inner: PromptFormat) -> PromptFormat:
        """This format applied around ``inner`` (an earlier one): shots add up, texts nest."""
        return PromptFormat(
            system=self.system if self.system is not None else inner.system,
            shots=(*inner.shots, *self.shots),
            prefix=self.prefix + inner.prefix,
            suffix=inner.suffix + self.suffix,
        )


class PromptedTokenizer:
    """A read-only view of a tokenizer whose prompts are rendered with a :class:`PromptFormat`.

    Everything else is the wrapped tokenizer's; the wrapped tokenizer itself is never changed.
    """

    def __init__(self, tokenizer: Any, fmt: PromptFormat) -> None:
        self.__dict__["wrapped"] = tokenizer
        self.__dict__["steerlab_prompt"] = fmt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["wrapped"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a prompted tokenizer view is read-only; change the tokenizer itself")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.wrapped)


def prompted(tokenizer: Any, fmt: PromptFormat) -> PromptedTokenizer:
    """A view of ``tokenizer`` rendering prompts with ``fmt`` (nested views combine)."""
    inner = getattr(tokenizer, "steerlab_prompt", None)
    if isinstance(tokenizer, PromptedTokenizer):
        tokenizer = tokenizer.wrapped
    return PromptedTokenizer(tokenizer, fmt.then(inner) if inner is not None else fmt)


def format_prompt(
    tokenizer: Any, instruction: str, *, chat: bool | None = None, system: str | None = None
) -> str:
    """Render one user instruction as the model sees it before its reply.

    Args:
        tokenizer: the model's tokenizer (or a :func:`prompted` view of it).
        instruction: the user's message.
        chat: apply the chat template (default: when the tokenizer has one).
        system: optional system message.
    """
    fmt: PromptFormat = getattr(tokenizer, "steerlab_prompt", None) or PromptFormat()
    text = f"{fmt.prefix}{instruction}{fmt.suffix}"
    system = system if system is not None else fmt.system
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    if not use_chat:
        head = f"{system}\n\n" if system else ""
        return head + "".join(f"{u}\n{a}\n\n" for u, a in fmt.shots) + text
    if not has_chat_template(tokenizer):
        raise DataError("this model has no chat template; pass --no-chat (or a template)")
    messages = [{"role": "system", "content": system}] if system else []
    for user, reply in fmt.shots:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": text})
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors are user-facing: the template rejected the prompt
        raise DataError(f"the chat template cannot render this prompt: {e}") from None


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a reply: the model's generation config, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


@dataclass
class Batch:
    """A left-padded batch.

    Attributes:
        input_ids: (B, T) token ids.
        attention_mask: (B, T) 1 for real tokens.
        instruction_end: (B,) index (in padded coordinates) of the last token of the user's
            instruction; equals the last index when no template wraps it.
        texts: the rendered prompts.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    instruction_end: torch.Tensor
    texts: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.instruction_end.to(device),
            self.texts,
        )

    def position_index(self, offset: int = -1) -> torch.Tensor:
        """(B,) indices of the ``offset``-th token from the end (``-1`` = last)."""
        T = self.input_ids.shape[1]
        return torch.full((self.input_ids.shape[0],), T + offset, dtype=torch.long)


def _token_ids(
    tokenizer: Any, text: str, add_special: bool
) -> tuple[list[int], list[tuple[int, int]] | None]:
    try:
        enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):
        enc = tokenizer(text, add_special_tokens=add_special)
        return list(enc["input_ids"]), None


def encode(
    tokenizer: Any,
    instructions: Sequence[str],
    *,
    chat: bool | None = None,
    system: str | None = None,
) -> Batch:
    """Render (chat template when present), tokenize and left-pad a list of instructions."""
    if len(instructions) == 0:
        raise DataError("no prompts to encode")
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    rows: list[list[int]] = []
    ends: list[int] = []
    texts: list[str] = []
    for ins in instructions:
        text = format_prompt(tokenizer, ins, chat=use_chat, system=system)
        # A template carries its own BOS; raw text gets the tokenizer's special tokens.
        ids, offsets = _token_ids(tokenizer, text, add_special=not use_chat)
        if not ids:
            raise DataError(f"prompt tokenizes to nothing: {ins!r}")
        end_char = text.rfind(ins) + len(ins) if ins and ins in text else len(text)
        end_tok = len(ids) - 1
        if offsets is not None:
            # The last token that starts before the instruction's end.
            cands = [i for i, (s, e) in enumerate(offsets) if s < end_char and e > s]
            if cands:
                end_tok = cands[-1]
        rows.append(ids)
        ends.append(end_tok)
        texts.append(text)
    T = max(len(r) for r in rows)
    pid = pad_id(tokenizer)
    input_ids = torch.full((len(rows), T), pid, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, T - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, T - len(r) :] = 1
    inst_end = torch.tensor([T - len(r) + e for r, e in zip(rows, ends, strict=True)])
    return Batch(input_ids, mask, inst_end, texts)
