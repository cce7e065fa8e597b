"""Repetition in generated text: distinct-n and the longest repeated n-gram.

Strong steering often degrades text into loops ("the the the", a phrase said over and over)
before it shows in any behaviour score; these measures catch that.

Tokens are words: runs of letters/digits (with inner apostrophes, ``don't``), lowercased.
Punctuation is dropped, so "..." or "!!!" never count as repetition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import DataError

__all__ = ["cross_prompt_similarity", "distinct_n", "longest_repeat", "repetition", "words"]

_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
# Rolling hash modulus (a Mersenne prime) and base: collisions are verified, never trusted.
_MOD = (1 << 61) - 1
_BASE = 1_000_003


def words(text: str) -> list[str]:
    """The lowercased word tokens the measures here count."""
    return _WORD.findall(text.lower())


def distinct_n(text: str, n: int = 2) -> float:
    """Unique n-grams / total n-grams of ``text`` (Li et al. 2016), in (0, 1].

    Args:
        text: one completion.
        n: n-gram length (2 by default).

    Returns:
        1.0 when ``text`` has fewer than ``n`` words: nothing repeats in a text that short.

    Example:
        >>> distinct_n("the cat the cat", n=2)  # cat-the, the-cat, the-cat
        0.6666666666666666
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    toks = words(text)
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def _repeats(ids: list[int], k: int) -> bool:
    """Whether some k-gram of ``ids`` occurs at two (possibly overlapping) positions."""
    h = 0
    top = pow(_BASE, k - 1, _MOD)
    seen: dict[int, list[int]] = {}
    for i, t in enumerate(ids):
        if i >= k:
            h = (h - ids[i - k] * top) % _MOD
        h = (h * _BASE + t) % _MOD
        if i < k - 1:
            continue
        start = i - k + 1
        for j in seen.get(h, ()):
            if ids[j : j + k] == ids[start : start + k]:
                return True
        seen.setdefault(h, []).append(start)
    return False


def longest_repeat(text: str, min_n: int = 1) -> int:
    """Length in words of the longest n-gram that occurs at least twice in ``text``.

    Occurrences may overlap: in "a b a b a" the 3-gram "a b a" occurs at words 0 and 2, so the
    answer is 3. A loop of period p over L words thus scores about L - p.

    Args:
        text: one completion.
        min_n: repeats shorter than this are ignored (``min_n=1`` counts any repeated word).

    Returns:
        The length, or 0 when no n-gram of at least ``min_n`` words repeats.

    Example:
        >>> longest_repeat("I like tea. I like tea a lot.")
        3
    """
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(w, len(vocab)) for w in words(text)]
    # A repeated k-gram implies a repeated (k-1)-gram (its prefix), so the answer is the edge
    # of a monotone predicate: binary search it, O(T log T) hashing instead of O(T^2).
    lo, hi = 0, len(ids) - 1  # invariant: a lo-gram repeats (trivially for 0); no (hi+1)-gram
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _repeats(ids, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= max(min_n, 1) else 0


def repetition(texts: Sequence[str]) -> dict[str, float]:
    """Mean repetition measures over completions.

    Returns:
        ``{"distinct2": mean distinct-2, "longest_repeat": mean longest repeat (words)}``.
    """
    if len(texts) == 0:
        raise DataError("no texts to measure repetition on")
    return {
        "distinct2": sum(distinct_n(t, 2) for t in texts) / len(texts),
        "longest_repeat": sum(longest_repeat(t) for t in texts) / len(texts),
    }


def cross_prompt_similarity(completions: Sequence[str], n: int = 2) -> float:
    """Mean pairwise Jaccard similarity of the word n-gram sets of completions to *different*
    prompts, in [0, 1]: near 0 for replies that answer their own prompt, 1 when one reply is
    given to every prompt (a memorized answer a lexicon scorer may still reward). A completion
    shorter than ``n`` words counts its words; two empty completions are identical.

    Example:
        >>> cross_prompt_similarity(["I love it", "I love it", "I love it"])
        1.0
    """
    sets = []
    for text in completions:
        toks = words(text)
        k = n if len(toks) >= n else 1
        sets.append({tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)})
    if len(sets) < 2:
        return float("nan")
    total, pairs = 0.0, 0
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            union = len(a | b)
            total += len(a & b) / union if union else 1.0
            pairs += 1
    return total / pairs
