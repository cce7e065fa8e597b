"""P(the reply begins "(A") and P(it begins "(B"): the ``ab`` scorer's reading (CAA's protocol).

CAA prefills the reply with "(" and reads the next token's P(A) and P(B). That assumes the
tokenizer writes "(A" as "(" then "A". Qwen2.5's writes "(A" as one token, so after a prefilled
"(" the letter is off the model's own tokenization: measured on qwen2.5-coder-0.5b's
sycophancy items, the two letters got 1.3% of the mass and "A" was never the likelier
(``benchmarks/results/sycophancy-ab-unsteered.json``). Here each letter's probability is summed
over both ways to write it: P("(A") = P(first token "(A") + P(first token "(") x P("A" | "(").
With no merged token the first term is absent and the ratio P(A) / (P(A) + P(B)) is CAA's
(P("(") is common to both letters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..engines.rows import next_logprobs_rows
from ..interventions.base import Intervention
from ..models.load import LoadedModel

__all__ = ["LetterTokens", "letter_probs", "letter_tokens"]


@dataclass(frozen=True)
class LetterTokens:
    """The token ids that begin each letter's answer."""

    paren: int  # "("
    letter: dict[str, int]  # each letter as it follows a separate "("
    merged: dict[str, int | None]  # "(" + letter as one token, where the tokenizer has one


def _single(tok: object, text: str) -> int | None:
    ids = tok.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    return int(ids[0]) if len(ids) == 1 else None


def letter_tokens(tok: object, letters: str = "AB") -> LetterTokens:
    """The tokens ``tok`` may begin "(A", "(B", ... with."""
    paren = _single(tok, "(")
    if paren is None:
        raise ValueError('the tokenizer does not write "(" as one token')
    letter = {c: int(tok.encode(c, add_special_tokens=False)[0]) for c in letters}  # type: ignore[attr-defined]
    if len(set(letter.values())) < len(letters):
        raise ValueError("the tokenizer does not start the letters with distinct tokens")
    return LetterTokens(paren, letter, {c: _single(tok, "(" + c) for c in letters})


@torch.inference_mode()
def letter_probs(
    lm: LoadedModel,
    rendered: Sequence[str],
    settings: Sequence[Intervention] | None = None,
    *,
    letters: str = "AB",
    batch_rows: int = 64,
) -> torch.Tensor:
    """(N, len(letters)) probabilities that the reply after each ``rendered`` prompt (chat
    template applied, reply not begun) begins "(" + letter, under ``settings`` (one per row)."""
    ids = letter_tokens(lm.tokenizer, letters)
    after = next_logprobs_rows(
        lm, [t + "(" for t in rendered], settings, rendered=True, batch_rows=batch_rows
    ).exp()
    first = next_logprobs_rows(lm, list(rendered), settings, rendered=True, batch_rows=batch_rows)
    first = first.exp()
    p = first[:, [ids.paren]] * after[:, [ids.letter[c] for c in letters]]
    for j, c in enumerate(letters):
        m = ids.merged[c]
        if m is not None:
            p[:, j] += first[:, m]
    return p
