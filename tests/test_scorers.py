"""Behaviour scorers: real libraries on real text, spec parsing, errors, the judge rubric."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from steerlab.behaviors.judge import JudgeScorer, judge_score, parse_rating
from steerlab.behaviors.scorers import (
    LikelihoodScorer,
    TextScorer,
    available_scorers,
    make_scorer,
)
from steerlab.errors import MissingDependency, ScorerError, SteerlabError

ROOT = Path(__file__).resolve().parents[1]
FRENCH = "Je pense que c'est une très bonne idée, nous irons au marché demain matin."
ENGLISH = "I think this is a very good idea, we will go to the market tomorrow morning."


def _score(spec: str, completions: list[str]) -> list[float]:
    return make_scorer(spec).score([""] * len(completions), completions)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- sentiment, language, refusal, regex, keywords ----------------------------------------


def test_sentiment_ranks_positive_above_negative() -> None:
    pos, neg, empty = _score(
        "sentiment", ["I love this wonderful day", "This is terrible and I hate it", ""]
    )
    assert pos > 0.75 > 0.25 > neg
    assert empty == 0.5
    assert all(0 <= s <= 1 for s in (pos, neg))


def test_language_confidence() -> None:
    s = make_scorer("language:FR")  # case-insensitive
    assert s.name == "language:fr"
    fr, en, empty = s.score(["", "", ""], [FRENCH, ENGLISH, "  "])
    assert fr > 0.8
    assert en < 0.2
    assert empty == 0.0
    (en_en,) = _score("language:en", [ENGLISH])
    assert en_en > 0.8


def test_language_unknown_code_names_it() -> None:
    with pytest.raises(ScorerError, match="'xx'"):
        make_scorer("language:xx")
    with pytest.raises(ScorerError, match="'fra'"):
        make_scorer("language:fra")


def test_refusal_substring_and_strict() -> None:
    texts = [
        "I cannot help with that.",
        "As an AI, I have no feelings, but here is a poem.",
        "Sure!",
    ]
    s = make_scorer("refusal")
    assert s.score([""] * 3, texts) == [1.0, 1.0, 0.0]
    assert s.strict(texts) == [1.0, 0.0, 0.0]  # the persona opener alone does not decline
    assert "strict" in s.spec()["note"]


def test_regex_is_case_sensitive_unless_asked() -> None:
    assert _score("regex:Paris", ["I love paris", "I love Paris"]) == [0.0, 1.0]
    assert _score("regex:(?i)paris", ["I love PARIS"]) == [1.0]
    assert _score("regex:a:b", ["x a:b y"]) == [1.0]  # colons after the first belong to it


def test_keywords_whole_words_ignoring_case() -> None:
    s = make_scorer("keywords: cat , dog,c++")
    assert s.name == "keywords:cat,dog,c++"
    got = s.score([""] * 5, ["A Cat sat.", "category error", "hotdogs", "I write C++.", "DOG!"])
    assert got == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_specs_are_json_and_name_library_versions() -> None:
    for spec in ["sentiment", "language:de", "refusal", "regex:x", "keywords:a", "ab", "margin"]:
        s = make_scorer(spec)
        d = s.spec()
        json.dumps(d)
        assert d["name"] == s.name and d["kind"] == s.kind
        assert d["library"] and d["version"] and "params" in d
    assert make_scorer("sentiment").spec()["library"] == "vaderSentiment"


def test_text_scorers_follow_the_protocol() -> None:
    for spec in ["sentiment", "language:es", "refusal", "regex:x", "keywords:a"]:
        s = make_scorer(spec)
        assert isinstance(s, TextScorer) and s.kind == "text"


def test_likelihood_scorers_are_frozen_names() -> None:
    ab = make_scorer("AB")
    assert ab == LikelihoodScorer("ab", "ab")
    assert make_scorer("margin").kind == "margin"
    assert not isinstance(ab, TextScorer)
    with pytest.raises(AttributeError):
        ab.kind = "margin"  # type: ignore[misc]


def test_available_scorers_lists_every_form() -> None:
    forms = available_scorers()
    for f in ["sentiment", "language:CODE", "refusal", "regex:PATTERN", "judge:URL", "ab"]:
        assert f in forms


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "unknown scorer 'bogus'.*sentiment.*language:CODE"),
        ("language:", "needs an argument: language:CODE"),
        ("sentiment:yes", "takes no argument"),
        ("ab:1", "takes no argument"),
        ("regex:(unclosed", "invalid regex '\\(unclosed': missing \\)"),
        ("keywords:, ,", "at least one keyword"),
        ("judge:http://127.0.0.1:1/v1", "needs a description"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ScorerError, match=message) as info:
        make_scorer(spec)
    assert isinstance(info.value, SteerlabError)
    assert "\n" not in str(info.value)


def test_mismatched_lengths_refused() -> None:
    with pytest.raises(ScorerError, match="2 prompts but 1 completions"):
        make_scorer("regex:x").score(["a", "b"], ["x"])


# --- missing optional libraries -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "modules", "dist"),
    [
        ("sentiment", ["vaderSentiment", "vaderSentiment.vaderSentiment"], "vaderSentiment"),
        ("language:fr", ["lingua"], "lingua-language-detector"),
        ("judge:http://127.0.0.1:1/v1", ["openai"], "openai"),
    ],
)
def test_missing_library_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, spec: str, modules: list[str], dist: str
) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # makes `import m` raise ImportError
    with pytest.raises(MissingDependency) as info:
        make_scorer(spec, description="anything")
    msg = str(info.value)
    assert f"pip install {dist}" in msg and "steerlab[all]" in msg and "\n" not in msg


# --- judge rubric ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The text is clearly about cooking.\nRating: [[2]]", 2.0),
        ("It drifts a little. **Rating:** [[1]]", 1.0),
        ("**Rating**: [[0]]", 0.0),
        ("Scale: [[0]] absent, [[2]] present. Here it is faint. Rating: [[1]]", 1.0),
        ("Reason: fluent.\n[[ 2 ]]", 2.0),
        ("Rating: 2", 2.0),
        ("rating = 0 because it is gibberish", 0.0),
        ("Rating: [[1.5]]", 1.5),
        ("Rating: [[5]]", None),  # out of the 0-2 scale
        ("I would give it a two.", None),
        ("Rating: [[N]]", None),  # the format echoed back without a number
        ("", None),
        (None, None),
    ],
)
def test_parse_rating(reply: str | None, expected: float | None) -> None:
    assert parse_rating(reply) == expected


def test_judge_score_harmonic_mean() -> None:
    assert judge_score(2, 2, 2) == 1.0
    assert judge_score(1, 1, 1) == 0.5
    assert judge_score(2, 1, 2) == pytest.approx(3 / (1 / 2 + 1 + 1 / 2) / 2)  # 0.75
    assert judge_score(2, 1, 2) < (2 + 1 + 2) / 3 / 2  # below the arithmetic mean
    assert judge_score(0, 2, 2) == 0.0
    assert judge_score(2, 2, 0) == 0.0
    assert math.isnan(judge_score(None, 2, 2))
    assert math.isnan(judge_score(2, math.nan, 2))


def test_judge_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_JUDGE_MODEL", "my-judge")
    s = make_scorer("judge:http://127.0.0.1:9/v1", description="mentions cats")
    assert isinstance(s, JudgeScorer)
    d = s.spec()
    assert d["params"]["model"] == "my-judge" and d["params"]["temperature"] == 0.0
    assert d["params"]["description"] == "mentions cats"
    assert d["stats"] == {"calls": 0, "unparseable": 0, "missing": 0}
    monkeypatch.delenv("STEERLAB_JUDGE_MODEL")
    assert make_scorer("judge:http://h/v1", description="x").spec()["params"]["model"] == "default"


def test_judge_bad_url_scheme() -> None:
    with pytest.raises(ScorerError, match="http:// or https://"):
        make_scorer("judge:127.0.0.1:8000/v1", description="x")


def test_judge_unreachable_is_one_line_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    s = JudgeScorer(url, "mentions cats", timeout=5)
    with pytest.raises(ScorerError) as info:
        s.score(["Tell me a story."], ["Once upon a time."])
    msg = str(info.value)
    assert url in msg and "\n" not in msg


@pytest.mark.slow
def test_judge_round_trip_with_a_real_local_model() -> None:
    """A real OpenAI-compatible server (smollm2-135m behind FastAPI) judges two completions."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    server = ROOT / "tests" / "servers" / "chat_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(server), "--port", str(port), "--model", "smollm2-135m"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the chat server exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the chat server did not come up within 300 s")
            time.sleep(0.5)

        scorer = make_scorer(f"judge:http://127.0.0.1:{port}/v1", description="talks about food")
        assert isinstance(scorer, JudgeScorer)
        scorer.max_tokens = 48  # keep CPU generation short; the reply still has room to rate
        prompts = ["What did you have for dinner?", "Describe the weather today."]
        completions = [
            "I had a bowl of warm tomato soup with fresh bread and butter.",
            "It is sunny and mild, with a light breeze from the west.",
        ]
        scores = scorer.score(prompts, completions)
        assert len(scores) == 2
        for s in scores:
            assert math.isnan(s) or 0.0 <= s <= 1.0
        stats = scorer.spec()["stats"]
        assert stats["calls"] == 6
        assert stats["missing"] == sum(math.isnan(s) for s in scores)
        assert stats["unparseable"] >= stats["missing"]
        assert 0 <= stats["unparseable"] <= 6
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
