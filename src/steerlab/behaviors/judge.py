"""The ``judge:URL`` scorer: an LLM judge behind any OpenAI-compatible chat endpoint.

AxBench's protocol with rubrics written for steerlab: three separate 0-2 ratings (how much
the completion shows the concept, whether it answers the instruction, how fluent it is); the
score is their harmonic mean over 2, zero when any rating is zero, missing when any rating
cannot be read from the judge's reply.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ScorerError, first_line
from .base import TextScorerBase, check_lengths, dist_version, require, scorer_spec

__all__ = ["JudgeScorer", "judge_score", "parse_rating"]


_ASK = (
    "\n\nGive a one- or two-sentence reason, then end your answer with the rating in exactly "
    "this form: Rating: [[N]]"
)
_RUBRICS: dict[str, str] = {
    "concept": (
        "Rate how strongly a text expresses a given concept.\n\n"
        "Concept: {description}\n\nText:\n<<<\n{completion}\n>>>\n\n"
        "Judge only the concept, not quality or topic.\n"
        "0 = the concept is absent.\n"
        "1 = the concept appears faintly, in passing, or forced.\n"
        "2 = the concept is clearly and substantially present." + _ASK
    ),
    "instruction": (
        "Rate whether a reply responds to the request it was given.\n\n"
        "Request:\n<<<\n{prompt}\n>>>\n\nReply:\n<<<\n{completion}\n>>>\n\n"
        "Judge relevance only; extra themes or an unusual tone are not penalised.\n"
        "0 = the reply is unrelated to the request.\n"
        "1 = the reply touches the request but drifts away or answers only part of it.\n"
        "2 = the reply addresses the request directly." + _ASK
    ),
    "fluency": (
        "Rate how fluent a text is.\n\nText:\n<<<\n{completion}\n>>>\n\n"
        "Judge language only: grammar, coherence, no gibberish or loops. Ignore content.\n"
        "0 = broken: gibberish, heavy repetition, or ungrammatical.\n"
        "1 = understandable but awkward, with some errors or repetition.\n"
        "2 = fluent and natural." + _ASK
    ),
}
_RUBRIC_SHA = hashlib.sha256("\n".join(_RUBRICS.values()).encode()).hexdigest()[:12]
_NUM = r"(\d+(?:\.\d+)?)"
# Most to least specific; within a pattern the last match wins, since judges often quote the
# scale ("[[0]] means...") before answering.
_RATING_PATTERNS = (
    re.compile(rf"rating\W{{0,8}}\[\[\s*{_NUM}\s*\]\]", re.IGNORECASE),
    re.compile(rf"\[\[\s*{_NUM}\s*\]\]"),
    re.compile(rf"rating\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*{_NUM}", re.IGNORECASE),
)


def parse_rating(reply: str | None) -> float | None:
    """The 0–2 rating at the end of a judge's reply, or None when there is none in range.

    Example:
        >>> parse_rating("Clear and on topic. Rating: [[2]]")
        2.0
    """
    if not reply:
        return None
    for pat in _RATING_PATTERNS:
        found = pat.findall(reply)
        if found:
            v = float(found[-1])
            return v if 0 <= v <= 2 else None
    return None


def judge_score(concept: float | None, instruction: float | None, fluency: float | None) -> float:
    """AxBench's aggregate: harmonic mean of three 0–2 ratings, halved to land in [0, 1].

    The harmonic mean is 0 when any rating is 0: a fluent on-topic reply without the concept
    (or the concept in gibberish) earns nothing. Any missing rating makes the score NaN.
    """
    vals = [math.nan if r is None else float(r) for r in (concept, instruction, fluency)]
    if any(math.isnan(v) for v in vals):
        return math.nan
    if min(vals) == 0:
        return 0.0
    return 3 / sum(1 / v for v in vals) / 2


class JudgeScorer(TextScorerBase):
    """An LLM judge behind an OpenAI-compatible chat endpoint, with an AxBench-style rubric
    (Wu et al. 2025, "AxBench"): three separate 0–2 ratings (concept, instruction relevance,
    fluency), combined by :func:`judge_score`.

    Replies without a parseable rating score NaN; ``unparseable`` counts such replies and
    ``missing`` such completions, since construction (both are in :meth:`spec`).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8000/v1``.
        description: the concept to rate, in words.
        model: served model name (default: ``$STEERLAB_JUDGE_MODEL``, else ``"default"``).
        api_key: default ``$OPENAI_API_KEY``, else ``"none"`` (local servers ignore it).
        timeout: seconds per request.
        max_tokens: reply budget per rating (the reason and the rating).
        workers: requests in flight at once.
    """

    def __init__(
        self,
        url: str,
        description: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 256,
        workers: int = 4,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ScorerError(f"the judge URL must start with http:// or https:// (got {url!r})")
        self._openai = require("openai", "judge", "openai")
        self.url = url
        self.description = description
        self.model = model or os.environ.get("STEERLAB_JUDGE_MODEL") or "default"
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.workers = max(1, workers)
        self.name = f"judge:{url}"
        self.calls = 0
        self.unparseable = 0
        self.missing = 0
        self._client = self._openai.OpenAI(
            base_url=url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout,
            max_retries=1,
        )

    def spec(self) -> dict[str, Any]:
        params = {
            "url": self.url,
            "model": self.model,
            "description": self.description,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "rubric": "concept, instruction, fluency 0-2; harmonic mean / 2",
            "rubric_sha256": _RUBRIC_SHA,
        }
        stats = {"calls": self.calls, "unparseable": self.unparseable, "missing": self.missing}
        lib = "openai"
        return scorer_spec(self.name, self.kind, lib, dist_version(lib), params, stats=stats)

    def _ask(self, text: str) -> str | None:
        oa = self._openai
        try:
            resp = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": text}],
                temperature=0.0,
                max_tokens=self.max_tokens,
            )
        except oa.APITimeoutError:
            raise ScorerError(
                f"the judge at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except oa.APIConnectionError as e:
            raise ScorerError(f"cannot reach the judge at {self.url}: {first_line(e)}") from None
        except oa.APIStatusError as e:
            raise ScorerError(
                f"the judge at {self.url} answered HTTP {e.status_code}: {first_line(e)}"
            ) from None
        except oa.OpenAIError as e:
            raise ScorerError(f"the judge at {self.url} failed: {first_line(e)}") from None
        if not resp.choices:
            return None
        return resp.choices[0].message.content

    def ratings(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[dict[str, float | None]]:
        """The three raw ratings (None where unparseable) for each completion."""
        check_lengths(prompts, completions)
        jobs = [
            _RUBRICS[k].format(description=self.description, prompt=p, completion=c)
            for p, c in zip(prompts, completions, strict=True)
            for k in _RUBRICS
        ]
        pool = ThreadPoolExecutor(max_workers=self.workers)
        try:
            replies = list(pool.map(self._ask, jobs))
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, send nothing more
        parsed = [parse_rating(r) for r in replies]
        self.calls += len(replies)
        self.unparseable += sum(r is None for r in parsed)
        n = len(_RUBRICS)
        return [dict(zip(_RUBRICS, parsed[i : i + n], strict=True)) for i in range(0, len(jobs), n)]

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        out = [
            judge_score(r["concept"], r["instruction"], r["fluency"])
            for r in self.ratings(prompts, completions)
        ]
        self.missing += sum(math.isnan(s) for s in out)
        return out
