"""Read prompt sets: JSON (strings or ``{"instruction": ...}``), JSONL, CSV, TXT.

Built-in sets are named ``builtin:NAME`` (files in ``steerlab/data/prompts``), optionally with
a split: ``builtin:harmful:train``.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["builtin_prompt_sets", "read_prompts", "read_text_file"]

_TEXT_KEYS = ("instruction", "prompt", "text", "question", "input")


def _pick(obj: Any, column: str | None, where: str) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        keys = (column,) if column else _TEXT_KEYS
        for k in keys:
            if k and isinstance(obj.get(k), str):
                return obj[k]
        raise DataError(f"{where}: no text field (looked for {', '.join(k for k in keys if k)})")
    raise DataError(f"{where}: expected a string or an object, got {type(obj).__name__}")


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of a user's file, or a :class:`DataError` saying what is wrong."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None


def builtin_prompt_sets() -> list[str]:
    root = resources.files("steerlab") / "data" / "prompts"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def _read_builtin(spec: str) -> list[str]:
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    split = parts[2] if len(parts) > 2 else None
    res = resources.files("steerlab") / "data" / "prompts" / f"{name}.json"
    if not res.is_file():
        raise DataError(
            f"no built-in prompt set {name!r}; have: {', '.join(builtin_prompt_sets())}"
        )
    items = json.loads(res.read_text(encoding="utf-8"))
    if split is not None:
        items = [x for x in items if isinstance(x, dict) and x.get("split") == split]
        if not items:
            raise DataError(f"built-in set {name!r} has no split {split!r}")
    return [_pick(x, None, spec) for x in items]


def read_prompts(path: str | Path, *, column: str | None = None) -> list[str]:
    """Read a prompt set.

    Args:
        path: ``.json`` (list of strings or objects), ``.jsonl``, ``.csv`` (needs a column named
            ``column`` or one of instruction/prompt/text), ``.txt`` (one prompt per line), or
            ``builtin:NAME[:SPLIT]``.
        column: the field or CSV column holding the text.

    Returns:
        The prompts, in file order.
    """
    spec = str(path)
    if spec.startswith("builtin:"):
        return _read_builtin(spec)
    p = Path(path).expanduser()
    text = read_text_file(p, "prompt file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise DataError(f"{p}: expected a JSON list")
            out = [_pick(x, column, f"{p} item {i}") for i, x in enumerate(data)]
        elif suffix == ".jsonl":
            out = [
                _pick(json.loads(line), column, f"{p} line {i + 1}")
                for i, line in enumerate(text.splitlines())
                if line.strip()
            ]
        elif suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows:
                raise DataError(f"{p}: no rows")
            cols = rows[0].keys()
            col = column or next((k for k in _TEXT_KEYS if k in cols), None)
            if col is None or col not in cols:
                raise DataError(
                    f"{p}: no column {column or '/'.join(_TEXT_KEYS)}; has {list(cols)}"
                )
            out = [r[col] for r in rows]
        elif suffix in (".txt", ""):
            out = [line for line in text.splitlines() if line.strip()]
        else:
            raise DataError(f"{p}: unknown prompt file type {suffix!r} (json, jsonl, csv, txt)")
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e})") from None
    out = [s.strip() for s in out]
    if not out:
        raise DataError(f"{p}: no prompts")
    if any(not s for s in out):
        raise DataError(f"{p}: contains an empty prompt")
    return out
