"""Behaviour scorers: turn completions into scores in [0, 1], named by a short spec string.

========================  ==================================================================
spec                      score of one completion
========================  ==================================================================
``sentiment``             VADER compound polarity c mapped to (c + 1) / 2; empty text: 0.5
``language:CODE``         lingua's confidence that the text is in ISO 639-1 language CODE
``refusal``               1 if a refusal phrase occurs (substring measure), else 0
``regex:PATTERN``         1 if ``re.search(PATTERN, text)`` (write ``(?i)`` for no case)
``keywords:a,b,c``        1 if any keyword occurs as a whole word, ignoring case
``judge:URL``             an LLM judge's AxBench-style rating (concept, relevance, fluency)
``ab`` / ``margin``       likelihood scorers: computed from the model, not from text
========================  ==================================================================

Optional libraries (vaderSentiment, lingua-language-detector, openai) are imported when a
scorer is made, never by ``import steerlab``.

Example:
    >>> s = make_scorer("keywords:paris,france")
    >>> s.score(["Where?"], ["I live in Paris."])
    [1.0]
"""

from __future__ import annotations

import functools
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .._version import __version__
from ..errors import ScorerError, first_line
from .base import TextScorerBase, check_lengths, dist_version, require, scorer_spec
from .judge import JudgeScorer

__all__ = [
    "KeywordScorer",
    "LanguageScorer",
    "LikelihoodScorer",
    "RefusalScorer",
    "RegexScorer",
    "Scorer",
    "SentimentScorer",
    "TextScorer",
    "available_scorers",
    "make_scorer",
]

_FORMS = {
    "sentiment": "sentiment",
    "language": "language:CODE",
    "refusal": "refusal",
    "regex": "regex:PATTERN",
    "keywords": "keywords:WORD,WORD,...",
    "judge": "judge:URL",
    "ab": "ab",
    "margin": "margin",
}


def available_scorers() -> list[str]:
    """The spec forms :func:`make_scorer` accepts, for help text."""
    return list(_FORMS.values())


@runtime_checkable
class TextScorer(Protocol):
    """Scores completions from their text alone."""

    name: str  # the spec string, e.g. "language:fr"
    kind: Literal["text"]

    def spec(self) -> dict[str, Any]:
        """JSON-able description: name, kind, library and version used, params."""
        ...

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One score in [0, 1] per completion (NaN where a judge gave no usable answer)."""
        ...


@dataclass(frozen=True)
class LikelihoodScorer:
    """A scorer that needs the model's log-probabilities (``ab``: the probability of the
    behaviour's answer letter, :mod:`steerlab.evaluate.letters`; ``margin``: a log-probability
    margin). Only named here; the computation lives with the model code."""

    name: str
    kind: Literal["ab", "margin"]

    def spec(self) -> dict[str, Any]:
        # the reading is in the spec (and so in cache keys): runs that read the letter after a
        # prefilled "(" alone are not resumed as if they had read both tokenizations
        params = {"reading": "(A over both tokenizations"} if self.kind == "ab" else {}
        return scorer_spec(self.name, self.kind, "steerlab", __version__, params)


Scorer = TextScorer | LikelihoodScorer


def make_scorer(spec: str, *, description: str | None = None) -> Scorer:
    """Build the scorer a spec string names (see the module docstring for the forms).

    Args:
        spec: e.g. ``"sentiment"``, ``"language:fr"``, ``"regex:(?i)\\bparis\\b"``,
            ``"judge:http://127.0.0.1:8000/v1"``.
        description: the behaviour in words; the judge rates how much a completion shows it.

    Raises:
        ScorerError: the spec is malformed (the message names the problem).
        MissingDependency: the scorer's optional library is not installed.

    Example:
        >>> make_scorer("regex:(?i)bonjour").score(["Greet me."], ["Bonjour !"])
        [1.0]
    """
    head, colon, arg = spec.partition(":")
    head = head.strip().lower()
    if head not in _FORMS:
        raise ScorerError(f"unknown scorer {spec!r}: use one of {', '.join(available_scorers())}")
    takes_arg = ":" in _FORMS[head]
    if takes_arg and not arg.strip():
        raise ScorerError(f"the {head} scorer needs an argument: {_FORMS[head]}")
    if not takes_arg and colon:
        raise ScorerError(f"the {head} scorer takes no argument (got {spec!r})")
    if head == "sentiment":
        return SentimentScorer()
    if head == "language":
        return LanguageScorer(arg.strip())
    if head == "refusal":
        return RefusalScorer()
    if head == "regex":
        return RegexScorer(arg)  # not stripped: spaces may be part of the pattern
    if head == "keywords":
        return KeywordScorer(arg.split(","))
    if head == "judge":
        if description is None or not description.strip():
            raise ScorerError(
                "the judge scorer needs a description of the behaviour it rates "
                "(pass description=..., e.g. 'talks about the Eiffel Tower')"
            )
        return JudgeScorer(arg.strip(), description)
    return LikelihoodScorer(head, "ab" if head == "ab" else "margin")


# --- text scorers -------------------------------------------------------------------------


class SentimentScorer(TextScorerBase):
    """VADER (Hutto & Gilbert 2014) compound polarity c in [-1, 1], as (c + 1) / 2.

    VADER is a lexicon and rule model tuned on short social-media text: fast and
    deterministic, blind to sarcasm and to sentiment carried by content rather than words.
    """

    name = "sentiment"

    def __init__(self) -> None:
        mod = require("vaderSentiment.vaderSentiment", "sentiment", "vaderSentiment")
        self._analyzer = mod.SentimentIntensityAnalyzer()

    def spec(self) -> dict[str, Any]:
        params = {"map": "(compound + 1) / 2", "empty": 0.5}
        lib = "vaderSentiment"
        return scorer_spec(self.name, self.kind, lib, dist_version(lib), params)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        check_lengths(prompts, completions)
        out = []
        for text in completions:
            # Empty text has no polarity: neutral, which is also what VADER says (c = 0).
            c = self._analyzer.polarity_scores(text)["compound"] if text.strip() else 0.0
            out.append((c + 1) / 2)
        return out


@functools.lru_cache(maxsize=2)
def _detector(high_accuracy: bool) -> Any:
    """One lingua detector per process and mode (its language models load on first use)."""
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages()
    return (builder if high_accuracy else builder.with_low_accuracy_mode()).build()


class LanguageScorer(TextScorerBase):
    """Confidence, from lingua, that the text is in one language.

    The detector considers all 75 languages lingua knows, so a confidence for ``fr`` is
    relative to every alternative (with a short candidate list, Italian text gets a sizeable
    French score). By default it runs in low-accuracy mode (trigram models only): measured here
    that loads ~95 MiB in ~0.3 s, against ~920 MiB in ~7 s for high accuracy, and it is
    *more* decisive on sentence-length text ("Je pense que c'est une bonne idée." scored 0.99
    French, against 0.49 with high accuracy). High accuracy is better on one or two words.

    Args:
        code: ISO 639-1 code, case-insensitive (``fr``, ``de``, ``es``, ``en``...).
        high_accuracy: use lingua's full n-gram models (about 10x the memory).
    """

    def __init__(self, code: str, *, high_accuracy: bool = False) -> None:
        lingua = require("lingua", "language", "lingua-language-detector")
        code = code.strip().lower()
        iso = getattr(lingua.IsoCode639_1, code.upper(), None) if code.isalpha() else None
        if len(code) != 2 or iso is None:
            known = sorted(lang.iso_code_639_1.name.lower() for lang in lingua.Language.all())
            raise ScorerError(
                f"unknown language code {code!r} for the language scorer: use an ISO 639-1 code "
                f"lingua knows ({', '.join(known)})"
            )
        self.code = code
        self.high_accuracy = high_accuracy
        self.name = f"language:{code}"
        self._language = lingua.Language.from_iso_code_639_1(iso)

    def spec(self) -> dict[str, Any]:
        params = {"code": self.code, "high_accuracy": self.high_accuracy, "empty": 0.0}
        lib = "lingua-language-detector"
        return scorer_spec(self.name, self.kind, lib, dist_version(lib), params)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        check_lengths(prompts, completions)
        det = _detector(self.high_accuracy)
        return [
            float(det.compute_language_confidence(t, self._language)) if t.strip() else 0.0
            for t in completions
        ]


class RefusalScorer(TextScorerBase):
    """1 if the completion contains a refusal phrase (the reference substring measure).

    The substring measure over-counts persona openers ("As an AI, I don't have feelings, but
    ..."); :meth:`strict` gives the first-sentence measure, to report beside it.
    """

    name = "refusal"

    def spec(self) -> dict[str, Any]:
        note = "the strict first-sentence measure is reported separately (strict())"
        params = {"measure": "substring"}
        return scorer_spec(self.name, self.kind, "steerlab", __version__, params, note=note)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        from ..metrics.refusal import substring_refusal

        check_lengths(prompts, completions)
        return [float(substring_refusal(t)) for t in completions]

    def strict(self, completions: Sequence[str]) -> list[float]:
        """1 where the completion declines in its first sentence (strict measure)."""
        from ..metrics.refusal import strict_refusal

        return [float(strict_refusal(t)) for t in completions]


class RegexScorer(TextScorerBase):
    """1 if ``re.search(pattern, completion)`` matches. No flags: write ``(?i)`` inline."""

    def __init__(self, pattern: str) -> None:
        try:
            self._re = re.compile(pattern)
        except re.error as e:
            raise ScorerError(f"invalid regex {pattern!r}: {first_line(e)}") from None
        self.pattern = pattern
        self.name = f"regex:{pattern}"

    def spec(self) -> dict[str, Any]:
        params = {"pattern": self.pattern}
        return scorer_spec(self.name, self.kind, "re", platform.python_version(), params)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        check_lengths(prompts, completions)
        return [float(self._re.search(t) is not None) for t in completions]


class KeywordScorer(TextScorerBase):
    """1 if any keyword occurs as a whole word or phrase, ignoring case.

    "Whole" means not flanked by a letter, digit or underscore, so ``cat`` does not match
    "category" and ``c++`` still matches "I like C++."
    """

    def __init__(self, keywords: Sequence[str]) -> None:
        kws = [k.strip() for k in keywords if k.strip()]
        if not kws:
            raise ScorerError("the keywords scorer needs at least one keyword: keywords:a,b,c")
        self.keywords = kws
        self.name = "keywords:" + ",".join(kws)
        alts = "|".join(re.escape(k) for k in sorted(kws, key=len, reverse=True))
        self._re = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)

    def spec(self) -> dict[str, Any]:
        params = {"keywords": self.keywords, "match": "whole word, case-insensitive"}
        return scorer_spec(self.name, self.kind, "re", platform.python_version(), params)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        check_lengths(prompts, completions)
        return [float(self._re.search(t) is not None) for t in completions]
