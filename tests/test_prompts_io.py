"""Prompt-set readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.errors import DataError
from steerlab.io.prompts import builtin_prompt_sets, read_prompts


def test_formats(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(["x", {"instruction": "y"}]))
    (tmp_path / "b.jsonl").write_text('{"prompt": "x"}\n\n{"text": "y"}\n')
    (tmp_path / "c.csv").write_text("id,question\n1,x\n2,y\n")
    (tmp_path / "d.txt").write_text("x\n\ny\n")
    for name in ("a.json", "b.jsonl", "d.txt"):
        assert read_prompts(tmp_path / name) == ["x", "y"]
    assert read_prompts(tmp_path / "c.csv", column="question") == ["x", "y"]
    assert read_prompts(tmp_path / "c.csv") == ["x", "y"]


def test_errors(tmp_path: Path) -> None:
    (tmp_path / "obj.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("[1, 2")
    (tmp_path / "nofield.json").write_text('[{"foo": "x"}]')
    (tmp_path / "c.csv").write_text("id,body\n1,x\n")
    (tmp_path / "e.txt").write_text("\n\n")
    (tmp_path / "x.parquet").write_text("x")
    cases = {
        "obj.json": "JSON list",
        "bad.json": "invalid JSON",
        "nofield.json": "no text field",
        "c.csv": "no column",
        "e.txt": "no prompts",
        "x.parquet": "unknown prompt file type",
        "missing.json": "not found",
    }
    for name, msg in cases.items():
        with pytest.raises(DataError, match=msg):
            read_prompts(tmp_path / name)


def test_builtin_sets() -> None:
    names = builtin_prompt_sets()
    assert {"happy", "sad", "harmful", "harmless"} <= set(names)
    happy, sad = read_prompts("builtin:happy"), read_prompts("builtin:sad")
    assert len(happy) == len(sad) >= 32
    train = read_prompts("builtin:harmful:train")
    assert 0 < len(train) < len(read_prompts("builtin:harmful"))
    with pytest.raises(DataError, match="no built-in"):
        read_prompts("builtin:nothing")
    with pytest.raises(DataError, match="no split"):
        read_prompts("builtin:harmful:dev")
