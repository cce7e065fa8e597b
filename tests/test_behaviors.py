"""Behaviours: the file contract, the built-in ones, and splits that never mix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_tokenizer

from steerlab.behaviors.behavior import (
    ABItem,
    behavior_from_dict,
    builtin_behaviors,
    load_behavior,
    split_items,
)
from steerlab.errors import DataError

PROMPTS = [f"Describe object number {i} in a few words." for i in range(20)]


def _file(tmp_path: Path, **over: object) -> Path:
    data = {
        "name": "t",
        "scorer": "sentiment",
        "eval_prompts": PROMPTS,
        "positive": ["I love it", "What a joy"],
        "negative": ["I hate it", "What a pain"],
    }
    data.update(over)
    data = {k: v for k, v in data.items() if v is not None}
    p = tmp_path / "b.json"
    p.write_text(json.dumps(data))
    return p


def test_builtins_load_and_have_real_splits() -> None:
    names = builtin_behaviors()
    assert {"sentiment", "french", "refusal", "sycophancy-ab"} <= set(names)
    for name in names:
        b = load_behavior(f"builtin:{name}")
        b.check_splits()
        sel, test = b.prompts("selection"), b.prompts("test")
        assert not set(sel) & set(test)
        assert sorted(sel + test) == sorted(b.eval_prompts)
        assert b.description and "\n" not in b.description
    ab = load_behavior("builtin:sycophancy-ab")
    assert len(ab.ab) >= 100
    sel_items, test_items = ab.items("selection"), ab.items("test")
    assert not {i.question for i in sel_items} & {i.question for i in test_items}
    letters = [i.matching_letter for i in ab.ab]
    assert 0.3 < letters.count("A") / len(letters) < 0.7  # position cannot stand in for it


def test_split_is_by_content_not_order() -> None:
    a_sel, a_test = split_items(PROMPTS, 0.5)
    b_sel, b_test = split_items(list(reversed(PROMPTS)), 0.5)
    assert set(a_sel) == set(b_sel) and set(a_test) == set(b_test)
    assert len(a_sel) == 10
    # adding an item does not move the others between splits
    c_sel, c_test = split_items([*PROMPTS, "A brand new prompt about trains."], 0.5)
    moved = (set(a_sel) - set(c_sel)) | (set(a_test) - set(c_test))
    assert len(moved) <= 1


def test_file_contract_and_optional_fields(tmp_path: Path) -> None:
    b = load_behavior(
        _file(
            tmp_path,
            description="Be cheerful.",
            selection_fraction=0.4,
            pairs=[{"prompt": "Hi", "positive": "Great!", "negative": "Ugh."}],
        )
    )
    assert b.selection_fraction == 0.4 and len(b.prompts("selection")) == 8
    assert b.pairs[0].positive == "Great!"
    assert b.to_dict()["counts"]["test"] == 12


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"scorer": None}, "missing field(s) scorer"),
        ({"eval_prompts": None, "positive": None}, "missing field(s) eval_prompts, positive"),
        ({"eval_prompts": "builtin:harmless"}, "must be a list"),
        ({"eval_prompts": []}, "eval_prompts is empty"),
        ({"negative": []}, "give both"),
        ({"selection_fraction": 1.5}, "selection_fraction"),
        ({"description": "two\nlines"}, "one line"),
        ({"pairs": [{"prompt": "x", "positive": "y"}]}, "pairs[0] is missing negative"),
        ({"scorer": "ab"}, "needs 'ab' items"),
        ({"positive": "builtin:nope", "negative": "builtin:sad"}, "no built-in prompt set"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, over: dict, needle: str) -> None:
    with pytest.raises(DataError, match=None) as e:
        load_behavior(_file(tmp_path, **over))
    assert needle in str(e.value)


def test_small_splits_and_missing_files(tmp_path: Path) -> None:
    b = load_behavior(_file(tmp_path, eval_prompts=PROMPTS[:12]))
    with pytest.raises(DataError, match="selection split has 6"):
        b.check_splits()
    with pytest.raises(DataError, match="not found"):
        load_behavior(tmp_path / "nope.json")
    with pytest.raises(DataError, match="no built-in behavior 'nope'"):
        load_behavior("builtin:nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="invalid JSON"):
        load_behavior(tmp_path / "bad.json")


def test_contrast_sources_never_include_test_items() -> None:
    tok = make_tokenizer()
    items = [
        {"question": f"is {i} big", "matching": "yes", "not_matching": "no"} for i in range(40)
    ]
    b = behavior_from_dict(
        {
            "name": "x",
            "scorer": "ab",
            "eval_prompts": PROMPTS,
            "positive": None,
            "negative": None,
            "ab": items,
        }
    )
    pos, neg, chat, what = b.contrast(tok)
    assert chat is False and what == "20 A/B items" and len(pos) == len(neg) == 20
    scored = {i.question for i in b.items("selection")} | {i.question for i in b.items("test")}
    extracted = {q for q in (f"is {i} big" for i in range(40)) if any(q in p for p in pos)}
    assert not scored & extracted and len(scored) == 20
    item = ABItem("q", "yes", "no")
    assert f"({item.matching_letter}) yes" in item.prompt()
