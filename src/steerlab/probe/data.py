"""The two classes a probe reads, split into train and test (and an optional transfer set).

Sources, in order of preference: explicit test sets; a built-in set with ``train``/``test``
splits (``builtin:harmful`` -> ``builtin:harmful:train`` / ``:test``); otherwise a stratified,
seeded split of what was given, recorded in the output.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.prompts import read_prompts, read_text_file

__all__ = ["MIN_PER_CLASS", "ProbeData", "make_probe_data", "read_labelled"]

MIN_PER_CLASS = 4  # fewer examples per class and split cannot give a meaningful accuracy


@dataclass(frozen=True)
class ProbeData:
    """Positive/negative texts per split; ``split`` records how the split was made."""

    train_pos: tuple[str, ...]
    train_neg: tuple[str, ...]
    test_pos: tuple[str, ...]
    test_neg: tuple[str, ...]
    transfer_pos: tuple[str, ...] = ()
    transfer_neg: tuple[str, ...] = ()
    split: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        sets = {
            "train positive": self.train_pos,
            "train negative": self.train_neg,
            "test positive": self.test_pos,
            "test negative": self.test_neg,
        }
        if self.transfer_pos or self.transfer_neg:
            sets |= {"transfer positive": self.transfer_pos, "transfer negative": self.transfer_neg}
        for name, s in sets.items():
            if len(s) < MIN_PER_CLASS:
                raise DataError(
                    f"the {name} set has {len(s)} example(s); need at least {MIN_PER_CLASS} per "
                    "class in every split"
                )

    def counts(self) -> dict[str, int]:
        return {
            "train_pos": len(self.train_pos),
            "train_neg": len(self.train_neg),
            "test_pos": len(self.test_pos),
            "test_neg": len(self.test_neg),
            "transfer_pos": len(self.transfer_pos),
            "transfer_neg": len(self.transfer_neg),
        }


def _split(items: Sequence[str], fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    idx = rng.permutation(len(items))
    k = max(1, round(len(items) * fraction))
    test = set(idx[:k].tolist())
    return [x for i, x in enumerate(items) if i not in test], [
        x for i, x in enumerate(items) if i in test
    ]


def _builtin_splits(spec: str) -> tuple[list[str], list[str]] | None:
    if not spec.startswith("builtin:") or spec.count(":") != 1:
        return None
    try:
        return read_prompts(f"{spec}:train"), read_prompts(f"{spec}:test")
    except DataError:
        return None


def make_probe_data(
    positive: str | Sequence[str],
    negative: str | Sequence[str],
    *,
    test_positive: str | Sequence[str] | None = None,
    test_negative: str | Sequence[str] | None = None,
    transfer_positive: str | Sequence[str] | None = None,
    transfer_negative: str | Sequence[str] | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> ProbeData:
    """Read and split the two classes (see the module docstring)."""

    def read(x: str | Sequence[str] | None) -> list[str]:
        if x is None:
            return []
        return read_prompts(x) if isinstance(x, str) else [str(t) for t in x]

    if (test_positive is None) != (test_negative is None):
        raise DataError("give both --test-positive and --test-negative, or neither")
    if (transfer_positive is None) != (transfer_negative is None):
        raise DataError("give both --transfer-positive and --transfer-negative, or neither")
    tp, tn = read(transfer_positive), read(transfer_negative)
    if test_positive is not None:
        data = ProbeData(
            tuple(read(positive)),
            tuple(read(negative)),
            tuple(read(test_positive)),
            tuple(read(test_negative)),
            tuple(tp),
            tuple(tn),
            {"kind": "given"},
        )
    else:
        bp = _builtin_splits(positive) if isinstance(positive, str) else None
        bn = _builtin_splits(negative) if isinstance(negative, str) else None
        if bp and bn:
            data = ProbeData(
                tuple(bp[0]),
                tuple(bn[0]),
                tuple(bp[1]),
                tuple(bn[1]),
                tuple(tp),
                tuple(tn),
                {"kind": "builtin train/test splits"},
            )
        else:
            if not 0.0 < test_fraction < 1.0:
                raise DataError(f"the test fraction must be in (0, 1), got {test_fraction}")
            pos, neg = read(positive), read(negative)
            rng = np.random.default_rng(seed)
            # Equal sizes: one permutation for both, so index-paired sets stay paired.
            state = rng.bit_generator.state
            p_tr, p_te = _split(pos, test_fraction, rng)
            if len(pos) == len(neg):
                rng.bit_generator.state = state
            n_tr, n_te = _split(neg, test_fraction, rng)
            split = {"kind": "stratified", "seed": seed, "test_fraction": test_fraction}
            data = ProbeData(
                tuple(p_tr), tuple(n_tr), tuple(p_te), tuple(n_te), tuple(tp), tuple(tn), split
            )
    data.check()
    return data


def read_labelled(
    path: str | Path, *, label_column: str, text_column: str | None = None
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(positive, negative, labels) from a CSV / JSON / JSONL file with a binary label column.

    The label that sorts last (``1``, ``true``, ``yes``...) is positive. Anything but exactly two
    distinct labels is an error.
    """
    p = Path(path).expanduser()
    text = read_text_file(p, "labelled file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(text.splitlines()))
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(text)
        else:
            raise DataError(f"{p}: a labelled file must be .csv, .json or .jsonl")
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{p}: expected a list of records")
    cols = rows[0].keys()
    tcol = text_column or next((k for k in ("text", "prompt", "instruction") if k in cols), None)
    if tcol is None or tcol not in cols:
        raise DataError(f"{p}: no text column {text_column or 'text/prompt/instruction'}")
    if label_column not in cols:
        raise DataError(f"{p}: no label column {label_column!r}; has {list(cols)}")
    labels = sorted({str(r.get(label_column)).strip().lower() for r in rows})
    if len(labels) == 1:
        raise DataError(f"{p}: only one class ({labels[0]!r}) in column {label_column!r}")
    if len(labels) != 2:
        shown = ", ".join(repr(x) for x in labels[:6])
        raise DataError(f"{p}: labels must be binary; column {label_column!r} has {shown}")
    neg_label, pos_label = labels
    pos = [str(r[tcol]) for r in rows if str(r.get(label_column)).strip().lower() == pos_label]
    neg = [str(r[tcol]) for r in rows if str(r.get(label_column)).strip().lower() == neg_label]
    if any(not t.strip() for t in pos + neg):
        raise DataError(f"{p}: contains an empty text")
    return pos, neg, {"positive": pos_label, "negative": neg_label}
