"""How each compared method turns N training pairs into a treatment.

Every treatment is an :class:`~steerlab.interventions.Intervention` or a per-row steering
setting, so the same measuring code serves all of them:

* steering (``mean_diff``, ``pca``, ``random``): a vector from the N pairs' activations, added
  at a layer with a strength chosen on the selection split;
* prompting: a :class:`~steerlab.interventions.PromptPrefix` (zero-shot instruction, system
  prompt, few-shot demonstrations, contrast prompt);
* finetuning: a LoRA adapter trained on the N pairs (see :mod:`.finetune`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..interventions.prompting import PromptPrefix
from ..models.chat import encode

__all__ = [
    "contrast_prompt",
    "few_shot",
    "fit_direction",
    "system_prompt",
    "zero_shot",
]

Pair3 = tuple[str, str, str]  # (prompt, positive reply, negative reply)


def fit_direction(method: str, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Unit direction from paired activations (N, D) at one layer.

    ``mean_diff``: the difference of the class means (ActAdd / CAA). ``pca``: the top right
    singular vector of the paired differences (RepE LAT, uncentered, so that one pair gives
    its own difference), signed to agree with the mean difference.
    """
    diffs = (pos - neg).double()
    md = diffs.mean(0)
    if method == "mean_diff":
        v = md
    elif method == "pca":
        _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
        v = vh[0] if float(vh[0] @ md) >= 0 else -vh[0]
    else:
        raise ValueError(f"no direction method {method!r}")
    return (v / v.norm().clamp_min(1e-12)).float()


def zero_shot(description: str) -> PromptPrefix:
    """The behaviour's one-line description put before the user's message."""
    return PromptPrefix(prefix=f"{description.strip()}\n\n", name="zero_shot")


def system_prompt(description: str) -> PromptPrefix:
    """The behaviour's description as the system message."""
    return PromptPrefix(system=description.strip(), name="system_prompt")


def _fits(lm: Any, make: Any, k: int, max_context: int, probe: str) -> bool:
    with make(k).applied(lm) as view:
        n = int(encode(view.tokenizer, [probe]).attention_mask.sum())
    return n <= max_context


def _most_that_fit(lm: Any, make: Any, n: int, max_context: int, probe: str) -> int:
    """The largest k <= n whose prompt for ``probe`` stays within ``max_context`` tokens."""
    lo, hi = 0, n
    while lo < hi:  # prompt length grows with k: binary search
        mid = (lo + hi + 1) // 2
        if _fits(lm, make, mid, max_context, probe):
            lo = mid
        else:
            hi = mid - 1
    return lo


def few_shot(
    lm: Any, pairs: Sequence[Pair3], max_context: int, longest: str
) -> tuple[PromptPrefix, int]:
    """The pairs' prompts and positive replies as earlier turns of the conversation, as many
    as fit in ``max_context`` tokens with the ``longest`` evaluation prompt; returns the
    treatment and the count used."""

    def make(k: int) -> PromptPrefix:
        return PromptPrefix(shots=tuple((p, a) for p, a, _ in pairs[:k]), name="few_shot")

    k = _most_that_fit(lm, make, len(pairs), max_context, longest)
    return make(k), k


def contrast_prompt(
    lm: Any, pairs: Sequence[Pair3], max_context: int, longest: str
) -> tuple[PromptPrefix, int]:
    """Each pair as ``Question / Good response / Bad response``, then the user's message and
    ``Good response:`` (in the same turn), as many pairs as fit."""

    def make(k: int) -> PromptPrefix:
        blocks = [f"Question: {p}\nGood response: {a}\nBad response: {b}" for p, a, b in pairs[:k]]
        head = "\n\n".join(blocks)
        return PromptPrefix(
            prefix=(f"{head}\n\n" if head else "") + "Question: ",
            suffix="\nGood response:",
            name="contrast_prompt",
        )

    k = _most_that_fit(lm, make, len(pairs), max_context, longest)
    return make(k), k
