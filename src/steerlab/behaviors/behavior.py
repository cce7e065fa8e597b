"""A behaviour: contrast data to find a direction, evaluation prompts split into selection and
test, and a scorer. One definition for the sweep, the probe and the baseline comparisons.

A behaviour file is JSON::

    {"name": "sentiment", "scorer": "sentiment", "description": "Respond cheerfully.",
     "eval_prompts": [...], "positive": [...] | "builtin:happy", "negative": [...],
     "pairs": [{"prompt", "positive", "negative"}], "ab": [{"question", "matching",
     "not_matching"}], "selection_fraction": 0.5}

Splits are decided by a hash of each item's text, never by file order or a random draw: the
same item lands in the same split on every machine, and adding items does not move others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from ..io.prompts import read_prompts, read_text_file
from ..models.chat import format_prompt

__all__ = [
    "MIN_SPLIT",
    "ABItem",
    "Behavior",
    "Pair",
    "builtin_behaviors",
    "load_behavior",
    "split_items",
]

MIN_SPLIT = 8  # fewer prompts per split cannot give an interval worth reporting
Split = Literal["selection", "test"]
_FIELDS = ("name", "scorer", "eval_prompts", "positive", "negative")


@dataclass(frozen=True)
class Pair:
    """A CAA-style pair: one prompt, a reply that shows the behaviour and one that does not."""

    prompt: str
    positive: str
    negative: str


@dataclass(frozen=True)
class ABItem:
    """A multiple-choice item: a question and the answer that shows the behaviour."""

    question: str
    matching: str
    not_matching: str

    @property
    def matching_letter(self) -> str:
        """Which letter the matching answer gets: fixed per item (a hash of its question), so
        half the items put it under A and half under B and position cannot stand in for it."""
        return "AB"[int(_digest(self.question), 16) % 2]

    def prompt(self) -> str:
        first, second = (
            (self.matching, self.not_matching)
            if self.matching_letter == "A"
            else (self.not_matching, self.matching)
        )
        return f"{self.question}\n\nChoices:\n(A) {first}\n(B) {second}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode("utf-8")).hexdigest()


def split_items(items: Sequence[Any], fraction: float, key: Any = str) -> tuple[list, list]:
    """Deterministic (selection, test) split: sort by hash, the first ``fraction`` goes to
    selection. File order is kept within each split."""
    order = sorted(range(len(items)), key=lambda i: _digest(key(items[i])))
    k = round(len(items) * fraction)
    chosen = set(order[:k])
    sel = [x for i, x in enumerate(items) if i in chosen]
    test = [x for i, x in enumerate(items) if i not in chosen]
    return sel, test


@dataclass(frozen=True)
class Behavior:
    """A behaviour (see the module docstring for the file format).

    Attributes:
        scorer: a scorer spec (``sentiment``, ``language:fr``, ``refusal``, ``regex:...``,
            ``keywords:...``, ``ab``, ``margin``, ``judge:URL``).
        source: where it was read from (``builtin:NAME`` or a path).
    """

    name: str
    scorer: str
    eval_prompts: tuple[str, ...]
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    pairs: tuple[Pair, ...] = ()
    ab: tuple[ABItem, ...] = ()
    description: str | None = None
    selection_fraction: float = 0.5
    source: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.selection_fraction < 1.0:
            raise DataError(
                f"behavior {self.name!r}: selection_fraction must be in (0, 1), "
                f"got {self.selection_fraction}"
            )
        if not self.eval_prompts:
            raise DataError(f"behavior {self.name!r}: eval_prompts is empty")
        if any(not p.strip() for p in self.eval_prompts):
            raise DataError(f"behavior {self.name!r}: eval_prompts contains an empty prompt")
        if self.scorer == "ab" and not self.ab:
            raise DataError(f"behavior {self.name!r}: the ab scorer needs 'ab' items")
        if self.scorer == "margin" and not self.pairs:
            raise DataError(f"behavior {self.name!r}: the margin scorer needs 'pairs'")

    # -- splits ------------------------------------------------------------------------

    def prompts(self, split: Split) -> list[str]:
        """The open-ended evaluation prompts of ``split``."""
        sel, test = split_items(self.eval_prompts, self.selection_fraction)
        return sel if split == "selection" else test

    def items(self, split: Split) -> list[ABItem] | list[Pair]:
        """The scored items of a likelihood scorer (``ab`` items or held-out ``pairs``).

        When the direction is extracted from the same items (no positive/negative prompts),
        the first half by hash is kept for extraction and only the rest is split, so no test
        item ever shapes the direction.
        """
        pool: list[Any] = list(self.ab if self.scorer == "ab" else self.pairs)
        key = (lambda x: x.question) if self.scorer == "ab" else (lambda x: x.prompt)
        if self._extracts_from_scored_items():
            _, pool = split_items(pool, 0.5, key)
        sel, test = split_items(pool, self.selection_fraction, key)
        return sel if split == "selection" else test

    def _extracts_from_scored_items(self) -> bool:
        if self.positive and self.negative:
            return False
        return (self.scorer == "ab" and not self.pairs) or self.scorer == "margin"

    def check_splits(self, minimum: int = MIN_SPLIT) -> None:
        """Each split has at least ``minimum`` prompts (and items, for likelihood scorers)."""
        for split in ("selection", "test"):
            n = len(self.prompts(split))  # type: ignore[arg-type]
            if n < minimum:
                raise DataError(
                    f"behavior {self.name!r}: the {split} split has {n} eval prompt(s); need at "
                    f"least {minimum} (add prompts or change selection_fraction)"
                )
            if self.scorer in ("ab", "margin"):
                m = len(self.items(split))  # type: ignore[arg-type]
                if m < minimum:
                    raise DataError(
                        f"behavior {self.name!r}: the {split} split has {m} scored item(s); "
                        f"need at least {minimum}"
                    )

    # -- contrast data -----------------------------------------------------------------

    def contrast(self, tokenizer: Any) -> tuple[list[str], list[str], bool | None, str]:
        """(positive texts, negative texts, chat flag for extraction, what they are).

        Prompt sets are used as they are (the template is applied when extracting). Pairs and
        A/B items are rendered here as a conversation whose reply is the positive or negative
        answer (CAA), so extraction reads them raw (``chat=False``).
        """
        if self.positive and self.negative:
            return list(self.positive), list(self.negative), None, "prompt sets"
        chat = bool(getattr(tokenizer, "chat_template", None))

        def reply(user: str, answer: str) -> str:
            return format_prompt(tokenizer, user, chat=chat) + answer

        if self.pairs:
            pairs = list(self.pairs)
            if self.scorer == "margin":
                pairs, _ = split_items(pairs, 0.5, lambda x: x.prompt)
            pos = [reply(p.prompt, p.positive) for p in pairs]
            neg = [reply(p.prompt, p.negative) for p in pairs]
            return pos, neg, False, f"{len(pairs)} pairs"
        if self.ab:
            items = list(self.ab)
            if self.scorer == "ab":
                items, _ = split_items(items, 0.5, lambda x: x.question)
            other = {"A": "B", "B": "A"}
            pos = [reply(i.prompt(), f"({i.matching_letter}") for i in items]
            neg = [reply(i.prompt(), f"({other[i.matching_letter]}") for i in items]
            return pos, neg, False, f"{len(items)} A/B items"
        raise DataError(
            f"behavior {self.name!r} has no contrast data: give positive/negative prompts, "
            "pairs or ab items (or pass --vector)"
        )

    def to_dict(self) -> dict[str, Any]:
        """What a report records: the source, the counts per split and the scorer."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "scorer": self.scorer,
            "description": self.description,
            "selection_fraction": self.selection_fraction,
            "counts": {
                "eval_prompts": len(self.eval_prompts),
                "selection": len(self.prompts("selection")),
                "test": len(self.prompts("test")),
                "positive": len(self.positive),
                "negative": len(self.negative),
                "pairs": len(self.pairs),
                "ab": len(self.ab),
            },
        }
        if self.scorer in ("ab", "margin"):
            out["counts"]["items_selection"] = len(self.items("selection"))
            out["counts"]["items_test"] = len(self.items("test"))
        return out


# -- loading -----------------------------------------------------------------------------


def builtin_behaviors() -> list[str]:
    root = resources.files("steerlab") / "data" / "behaviors"
    if not root.is_dir():
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def _prompt_set(value: Any, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(read_prompts(value))
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        out = tuple(x.strip() for x in value)
        if any(not x for x in out):
            raise DataError(f"{where}: {name!r} contains an empty prompt")
        return out
    raise DataError(f"{where}: {name!r} must be a list of strings or a prompt file name")


def _records(value: Any, keys: tuple[str, ...], where: str, name: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: {name!r} must be a list of objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{where}: {name}[{i}] must be an object with {', '.join(keys)}")
        missing = [k for k in keys if not isinstance(item.get(k), str) or not item[k].strip()]
        if missing:
            raise DataError(f"{where}: {name}[{i}] is missing {', '.join(missing)}")
        out.append({k: item[k].strip() for k in keys})
    return out


def behavior_from_dict(data: Any, where: str = "behavior") -> Behavior:
    """Build and check a :class:`Behavior` from the JSON object of a behaviour file."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object")
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in ("name", "scorer"):
        if not isinstance(data[k], str) or not data[k].strip():
            raise DataError(f"{where}: {k!r} must be a non-empty string")
    if isinstance(data["eval_prompts"], str):
        raise DataError(f"{where}: 'eval_prompts' must be a list of prompts")
    frac = data.get("selection_fraction", 0.5)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)):
        raise DataError(f"{where}: 'selection_fraction' must be a number")
    desc = data.get("description")
    if desc is not None and (not isinstance(desc, str) or "\n" in desc.strip()):
        raise DataError(f"{where}: 'description' must be one line of text")
    pos = _prompt_set(data["positive"], where, "positive")
    neg = _prompt_set(data["negative"], where, "negative")
    if bool(pos) != bool(neg):
        raise DataError(f"{where}: give both 'positive' and 'negative' prompts, or neither")
    pairs = [
        Pair(**r)
        for r in _records(data.get("pairs"), ("prompt", "positive", "negative"), where, "pairs")
    ]
    ab = [
        ABItem(**r)
        for r in _records(data.get("ab"), ("question", "matching", "not_matching"), where, "ab")
    ]
    return Behavior(
        name=data["name"].strip(),
        scorer=data["scorer"].strip(),
        eval_prompts=_prompt_set(data["eval_prompts"], where, "eval_prompts"),
        positive=pos,
        negative=neg,
        pairs=tuple(pairs),
        ab=tuple(ab),
        description=desc.strip() if desc else None,
        selection_fraction=float(frac),
        source=where,
    )


def load_behavior(spec: str | Path) -> Behavior:
    """Read ``builtin:NAME`` or a behaviour JSON file, checked (see the module docstring)."""
    s = str(spec)
    if s.startswith("builtin:"):
        name = s.split(":", 1)[1]
        res = resources.files("steerlab") / "data" / "behaviors" / f"{name}.json"
        if not res.is_file():
            have = ", ".join(builtin_behaviors()) or "none"
            raise DataError(f"no built-in behavior {name!r}; have: {have}")
        text, where = res.read_text(encoding="utf-8"), s
    else:
        p = Path(s).expanduser()
        text, where = read_text_file(p, "behavior file"), str(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON ({e})") from None
    return behavior_from_dict(data, where)
