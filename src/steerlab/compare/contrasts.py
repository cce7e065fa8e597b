"""The comparisons a comparison makes, named before any test score is seen, and the winner
they (and only they) allow.

Every method is scored on the same test prompts, so two methods are compared on per-prompt
differences (:func:`~steerlab.metrics.stats.paired`: a bootstrap interval over draws, then
prompts, and a sign-flip p-value), never by whether two intervals overlap. The family of
contrasts, corrected together with Holm's method:

* each method against the unsteered model (a method without examples once, the others at
  every N);
* ``mean_diff`` and ``pca`` against the random null at every N: the interval is paired against
  the null directions' per-prompt mean; the p-value is the prediction test of the method's
  mean among the directions' means (:func:`~steerlab.metrics.stats.null_test`), so an effect
  that random directions of the same norm also reach is not significant;
* at every N, the best method of each family against the best of each other family
  (steering, prompting, finetuning), the best being the one with the highest **selection**
  score (never the test score), among methods within the fluency bound whose completions are
  not degenerate (the constrained view) and among all (the unconstrained view);
* each stacked method against its base at every N.

A family's best wins at N only where it beats both other families' bests with Holm-adjusted
p < :data:`ALPHA`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics.stats import holm, null_test, paired
from .config import N_FREE
from .summary import score_table

__all__ = ["ALPHA", "FAMILIES", "STACKS", "build_contrasts", "family_best", "winners"]

ALPHA = 0.05
FAMILIES: dict[str, tuple[str, ...]] = {
    "steering": ("mean_diff", "pca"),
    "prompting": ("zero_shot", "system_prompt", "few_shot", "contrast_prompt"),
    "finetuning": ("lora", "dpo"),
}
STACKS = {"lora+mean_diff": "lora", "few_shot+mean_diff": "few_shot"}
VS_NULL = ("mean_diff", "pca")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def family_best(
    summary: Sequence[dict[str, Any]], n: int, family: str, constrained: bool
) -> str | None:
    """The family's method with the highest selection score at N (constrained: only those
    within the bound whose completions are not degenerate)."""
    rows = [
        r
        for r in summary
        if r["n"] == n and r["method"] in FAMILIES[family] and _finite(r.get("selection_score"))
    ]
    if constrained:
        rows = [r for r in rows if r["within_bound"] and not r["degenerate"]]
    return max(rows, key=lambda r: r["selection_score"])["method"] if rows else None


def _pair(runs: Sequence[dict[str, Any]], a: str, b: str, n: int, seed: int) -> dict[str, Any]:
    ta, tb = score_table(runs, a, n), score_table(runs, b, n)
    d = min(len(ta), len(tb))  # draw d of both saw the same training subset
    got = paired(ta[:d], tb[:d], seed=seed)
    got["prompts"] = got.pop("n")
    return got


def build_contrasts(
    runs: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    sizes: Sequence[int],
    null: dict[int, dict[str, Any]],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The pre-named contrasts (module docstring), each ``{a, b, n, kind, diff, ci, p,
    p_holm}``; ``null`` maps N to its random directions' ``scores`` and ``per_prompt`` mean."""
    present = {r["method"] for r in summary}
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int | None]] = set()

    def add(a: str, b: str, n: int | None, kind: str, **extra: Any) -> None:
        if a not in present or b not in present or a == b or (a, b, n) in seen:
            return
        seen.add((a, b, n))
        seen.add((b, a, n))
        out.append(
            {
                "a": a,
                "b": b,
                "n": n,
                "kind": kind,
                **_pair(runs, a, b, n or sizes[0], seed),
                **extra,
            }
        )

    for m in sorted(present - {"unsteered"}):
        for n in [None] if m in N_FREE else sizes:
            add(m, "unsteered", n, "vs unsteered")
    for m, n in itertools.product(VS_NULL, sizes):
        if m in present and n in null:
            out.append(_vs_null(runs, m, n, null[n], seed))
    for constrained in (True, False):
        view = "constrained" if constrained else "unconstrained"
        for n in sizes:
            bests = {f: family_best(summary, n, f, constrained) for f in FAMILIES}
            for f1, f2 in itertools.combinations(FAMILIES, 2):
                a, b = bests[f1], bests[f2]
                if a and b:
                    add(a, b, n, f"best {f1} vs best {f2}", view=view)
    for stack, base in STACKS.items():
        for n in sizes:
            add(stack, base, n, "stack vs its base")
    for c, p in zip(out, holm([c["p"] for c in out]), strict=True):
        c["p_holm"] = p
    return out


def _vs_null(
    runs: Sequence[dict[str, Any]], m: str, n: int, null: dict[str, Any], seed: int
) -> dict[str, Any]:
    t = score_table(runs, m, n)
    ref = np.tile(np.asarray(null["per_prompt"], dtype=float), (len(t), 1))
    got = paired(t, ref, seed=seed)
    got["p"] = null_test(float(np.nanmean(t)), null["scores"])
    got["prompts"] = got.pop("n")
    return {"a": m, "b": "random null", "n": n, "kind": "vs random null", **got}


def winners(
    contrasts: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """Per N and view: the family best that beats both other families' bests (Holm p <
    :data:`ALPHA`), or none; ``separated`` says whether one was found."""
    out = []
    for n, constrained in itertools.product(sizes, (True, False)):
        view = "constrained" if constrained else "unconstrained"
        bests = {f: family_best(summary, n, f, constrained) for f in FAMILIES}
        found, beats = None, []
        for f, m in bests.items():
            if m is None:
                continue
            others = [o for g, o in bests.items() if g != f and o is not None]
            wins = [_beats(contrasts, m, o, n) for o in others]
            if others and all(wins):
                found, beats = m, others
        score = next((r["score"] for r in summary if r["n"] == n and r["method"] == found), None)
        out.append(
            {
                "n": n,
                "view": view,
                "method": found,
                "score": score,
                "separated": found is not None,
                "beats": beats,
                "family_best": bests,
            }
        )
    return out


def _beats(contrasts: Sequence[dict[str, Any]], a: str, b: str, n: int) -> bool:
    for c in contrasts:
        if c["n"] == n and {c["a"], c["b"]} == {a, b} and c["kind"].startswith("best"):
            sign = 1 if c["a"] == a else -1
            return bool(c["p_holm"] < ALPHA and sign * c["diff"] > 0)
    return False
