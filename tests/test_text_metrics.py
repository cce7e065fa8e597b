"""Repetition measures: distinct-n and the longest repeated n-gram, against brute force."""

from __future__ import annotations

import random
import time

import pytest

from steerlab.errors import DataError
from steerlab.metrics import distinct_n, longest_repeat, repetition
from steerlab.metrics.text import words


def _brute_longest(toks: list[str]) -> int:
    for k in range(len(toks) - 1, 0, -1):
        grams = [tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)]
        if len(set(grams)) < len(grams):
            return k
    return 0


def test_words_lowercase_and_drop_punctuation() -> None:
    assert words("Hello, HELLO! Don't stop...") == ["hello", "hello", "don't", "stop"]


def test_distinct_n_values() -> None:
    assert distinct_n("the cat the cat", n=2) == pytest.approx(2 / 3)
    assert distinct_n("one two three four") == 1.0
    assert distinct_n("a a a a", n=1) == 0.25
    assert distinct_n("Hello, hello!", n=1) == 0.5  # case and punctuation ignored


def test_distinct_n_short_text_is_one() -> None:
    assert distinct_n("", n=2) == 1.0
    assert distinct_n("word", n=2) == 1.0
    assert distinct_n("two words", n=3) == 1.0


def test_distinct_n_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="n must be"):
        distinct_n("a b", n=0)


def test_longest_repeat_examples() -> None:
    assert longest_repeat("I like tea. I like tea a lot.") == 3
    assert longest_repeat("a b a b a") == 3  # overlapping occurrences count
    assert longest_repeat("one two three") == 0
    assert longest_repeat("") == 0
    assert longest_repeat("word") == 0


def test_longest_repeat_min_n() -> None:
    text = "the cat sat on the mat"
    assert longest_repeat(text) == 1
    assert longest_repeat(text, min_n=2) == 0
    assert longest_repeat("I like tea. I like tea.", min_n=3) == 3


def test_longest_repeat_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(300):
        vocab = ["a", "b", "c", "d"][: rng.randint(1, 4)]
        toks = [rng.choice(vocab) for _ in range(rng.randint(0, 25))]
        assert longest_repeat(" ".join(toks)) == _brute_longest(toks), toks


def test_longest_repeat_fast_on_degenerate_loops() -> None:
    t0 = time.perf_counter()
    assert longest_repeat("go " * 2000) == 1999
    assert longest_repeat("I am here. " * 500) == 1497
    assert time.perf_counter() - t0 < 5


def test_repetition_means() -> None:
    out = repetition(["the cat the cat", "one two three"])
    assert out["distinct2"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["longest_repeat"] == pytest.approx((2 + 0) / 2)
    assert set(out) == {"distinct2", "longest_repeat"}


def test_repetition_needs_texts() -> None:
    with pytest.raises(DataError, match="no texts"):
        repetition([])
