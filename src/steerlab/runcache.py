"""Resumable runs: each step's result is stored under a key that hashes everything it depends on.

A second run with the same inputs reuses the stored result; an interrupted run loses only the
step in flight (files are written to a temporary name, then renamed). Long sweeps append one
JSON line per finished item so they resume mid-step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .io.safetensors_io import save_atomic

__all__ = ["RunCache", "key_of"]

T = TypeVar("T")


def key_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunCache:
    """Step results under ``root``, named ``<step>-<key>.<ext>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.hits: list[str] = []

    def _path(self, step: str, key: Any, ext: str) -> Path:
        return self.root / f"{step}-{key_of(key)}.{ext}"

    def json(self, step: str, key: Any, compute: Callable[[], T]) -> T:
        p = self._path(step, key, "json")
        if p.is_file():
            self.hits.append(step)
            return json.loads(p.read_text())
        value = compute()
        _atomic_write(p, json.dumps(value).encode())
        return value

    def tensors(
        self, step: str, key: Any, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        p = self._path(step, key, "safetensors")
        if p.is_file():
            self.hits.append(step)
            return load_file(str(p))
        value = compute()
        save_atomic(value, p)
        return value

    def journal(self, step: str, key: Any) -> Journal:
        return Journal(self._path(step, key, "jsonl"))


class Journal:
    """Append-only JSON lines: one finished item per line, re-read on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, Any] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupt: recompute that item
                self.items[rec["id"]] = rec["value"]

    def get(self, item: str) -> Any | None:
        return self.items.get(item)

    def put(self, item: str, value: Any) -> None:
        self.items[item] = value
        with open(self.path, "a") as f:
            f.write(json.dumps({"id": item, "value": value}) + "\n")
            f.flush()
            os.fsync(f.fileno())
