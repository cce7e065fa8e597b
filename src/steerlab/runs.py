"""The one run object: out dir, weights-keyed cache and journals, atomic writes, timings, progress.

Every pipeline does its file and cache work through a :class:`Run`:

* ``run.cache`` stores each step's result under a key that hashes everything it depends on, the
  model's **weights fingerprint** and the numeric library versions included, so a model
  retrained in place never reuses stale results; a rerun with the same inputs reuses them.
* ``run.cache.journal(...)`` appends one JSON line per finished item, so long sweeps resume
  mid-step; a line torn by an interrupt is cut off, not glued onto.
* ``run.write_*`` write to a temporary name and rename; ``run.step(name)`` times a step.
* directories steerlab makes carry a marker (:data:`MARKER`); :func:`remove_tree` deletes
  only those.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch

from ._version import __version__
from .errors import SteerlabError
from .io.safetensors_io import save_atomic

__all__ = [
    "MARKER",
    "REPLACEABLE",
    "Bar",
    "Journal",
    "Run",
    "RunCache",
    "atomic_write",
    "check_new_dir",
    "key_of",
    "made_by_steerlab",
    "mark",
    "model_identity",
    "remove_tree",
]

T = TypeVar("T")
MARKER = ".steerlab.json"  # in every directory steerlab creates and may later delete
# progress(description, total) -> context manager yielding advance(n)
Bar = Callable[[str, int | None], Any]


def key_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------ markers


def mark(directory: Path, kind: str, **info: Any) -> None:
    """Record that steerlab made ``directory`` (and may delete it when asked to overwrite)."""
    rec = {"kind": kind, "steerlab_version": __version__, **info}
    atomic_write(directory / MARKER, json.dumps(rec, indent=1).encode())


# Kinds of steerlab directory that --overwrite may replace as a whole. Run directories
# (refusal, discover) are resumed, never deleted: they may hold a user's other files.
REPLACEABLE = ("export", "organism")


def made_by_steerlab(directory: Path) -> dict[str, Any] | None:
    """The marker of a steerlab-made directory (with its ``kind``), or None."""
    # Exports and organisms made before markers carry their own record files.
    for name, kind in (
        (MARKER, None),
        ("steerlab_export.json", "export"),
        ("organism.json", "organism"),
    ):
        f = directory / name
        if f.is_file():
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            if not isinstance(rec, dict):
                return None
            return rec if kind is None else {**rec, "kind": kind}
    return None


def _within(a: Path, b: Path) -> bool:  # a is b or inside it
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_new_dir(path: Path, *, overwrite: bool, keep: tuple[Path, ...] = (), what: str) -> None:
    """Refuse to write ``what`` into ``path`` unless it is new, empty, or (with ``overwrite``)
    steerlab-made; ``path`` may not be or contain any of ``keep`` (a run dir, a cache)."""
    from .models.registry import cache_dir

    for k in (*keep, cache_dir()):
        if _within(k, path):
            raise SteerlabError(f"{what} {path} would contain {k}, which must not be deleted")
    for c in (cache_dir(), *(k / "cache" for k in keep)):
        if _within(path, c):
            raise SteerlabError(f"{what} {path} is inside the cache {c}; choose another path")
    if not path.exists():
        return
    if not path.is_dir():
        raise SteerlabError(f"{what} {path} exists and is not a directory")
    if not any(path.iterdir()):
        return
    if not overwrite:
        raise SteerlabError(
            f"{what} {path} exists and is not empty; pass --overwrite to replace it"
        )
    made = made_by_steerlab(path)
    if made is None:
        raise SteerlabError(
            f"{what} {path} was not made by steerlab; refusing to delete it (choose another "
            "path, or remove it yourself)"
        )
    if made.get("kind") not in REPLACEABLE:
        raise SteerlabError(
            f"{what} {path} is a steerlab {made.get('kind')} directory, not an export or an "
            "organism; refusing to delete it (choose another path)"
        )


def remove_tree(path: Path, *, keep: tuple[Path, ...] = ()) -> None:
    """Delete a directory steerlab made (it carries :data:`MARKER`); refuse anything else."""
    check_new_dir(path, overwrite=True, keep=keep, what="directory")
    if path.exists():
        shutil.rmtree(path)


# ------------------------------------------------------------------------------ cache


class Journal:
    """Append-only JSON lines: one finished item per line, re-read on resume.

    An interrupt can cut the last line short; it is dropped (the item is recomputed) and cut
    off the file, so the next line starts on a line of its own.
    """

    def __init__(self, path: Path, on_hit: Callable[[float], None] | None = None) -> None:
        self.path = path
        self.items: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}
        self._on_hit = on_hit
        # a hit is an item an earlier session finished, counted once (not one put just now,
        # nor the same item asked for again)
        self._earlier: set[str] = set()
        if not path.is_file():
            return
        raw = path.read_bytes()
        good = raw.rfind(b"\n") + 1  # everything after the last newline is a torn line
        if good < len(raw):
            with open(path, "r+b") as f:
                f.truncate(good)
        for line in raw[:good].decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: recompute that item
            self.items[rec["id"]] = rec["value"]
            self.seconds[rec["id"]] = float(rec.get("seconds", 0.0))
        self._earlier = set(self.items)

    def get(self, item: str) -> Any | None:
        value = self.items.get(item)
        if value is not None and item in self._earlier:
            self._earlier.discard(item)
            if self._on_hit is not None:
                self._on_hit(self.seconds.get(item, 0.0))
        return value

    def put(self, item: str, value: Any, seconds: float = 0.0) -> None:
        self.items[item] = value
        self.seconds[item] = seconds
        rec = {"id": item, "value": value, "seconds": round(seconds, 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


class RunCache:
    """Step results under ``root``, named ``<step>-<key>.<ext>``; every key also holds
    ``base`` (the weights fingerprint and library versions)."""

    def __init__(
        self,
        root: Path,
        base: Any = None,
        on_hit: Callable[[str, float], None] | None = None,
    ) -> None:
        self.root = root
        self.base = base
        root.mkdir(parents=True, exist_ok=True)
        self.hits: list[str] = []
        self._on_hit = on_hit

    def _path(self, step: str, key: Any, ext: str) -> Path:
        return self.root / f"{step}-{key_of([self.base, key])}.{ext}"

    def _hit(self, step: str, seconds: float) -> None:
        self.hits.append(step)
        if self._on_hit is not None:
            self._on_hit(step, seconds)

    def json(self, step: str, key: Any, compute: Callable[[], T]) -> T:
        p = self._path(step, key, "json")
        if p.is_file():
            rec = json.loads(p.read_text())
            self._hit(step, float(rec.get("seconds", 0.0)))
            return rec["value"]
        t0 = time.perf_counter()
        value = compute()
        rec = {"value": value, "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write(p, json.dumps(rec).encode())
        return value

    def tensors(
        self, step: str, key: Any, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        p = self._path(step, key, "safetensors")
        if p.is_file():
            with safe_open(str(p), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("steerlab", "{}"))
            self._hit(step, float(meta.get("seconds", 0.0)))
            return load_file(str(p))
        t0 = time.perf_counter()
        value = compute()
        save_atomic(value, p, {"seconds": round(time.perf_counter() - t0, 3)})
        return value

    def journal(self, step: str, key: Any) -> Journal:
        return Journal(self._path(step, key, "jsonl"), lambda s: self._hit(step, s))


# ------------------------------------------------------------------------------ run


def model_identity(lm: Any, engine: Any = None) -> dict[str, Any]:
    """What results computed with ``lm`` depend on: its identity, a fingerprint of its weights,
    its dtype and device type, the versions of the libraries that change numbers, and the
    engine that decodes when it is not the Hugging Face model itself."""
    from .models.fingerprint import numeric_versions, weights_fingerprint

    ident = {
        "model": lm.info.to_dict(),
        "adapter": lm.adapter.to_dict(),  # which modules are hooked and edited
        "weights": weights_fingerprint(lm.model),
        "dtype": str(next(lm.model.parameters()).dtype),
        "device": lm.device.type,
        "versions": numeric_versions(),
    }
    if engine is not None and engine.name != "hf":  # its results are its own cache entries
        ident["engine"] = engine.identity()
    return ident


def _noop_bar(_description: str, _total: int | None) -> Any:
    return nullcontext(lambda _n: None)


class Run:
    """One pipeline run in ``out_dir``.

    Args:
        out_dir: created if missing; an existing file there is refused.
        kind: what runs here (``"refusal"``, ``"discover"``...), recorded in the marker.
        lm: the loaded model; its weights fingerprint keys every cache entry.
        identity: :func:`model_identity` of the model, when the caller already has it.
        engine: what decodes (:mod:`steerlab.engines`; default: the Hugging Face model).
        progress: ``progress(description, total)`` -> context yielding ``advance(n)``, e.g.
            :func:`steerlab.ui.progress_bar`; ``status``: called with one-line messages.

    Example:
        >>> run = Run("runs/x", kind="refusal", lm=lm)  # doctest: +SKIP
        >>> with run.step("filter"):  # doctest: +SKIP
        ...     scores = run.cache.json("filter", [prompts], compute)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        kind: str,
        lm: Any = None,
        identity: dict[str, Any] | None = None,
        engine: Any = None,
        progress: Bar | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        from .engines.hf import HFEngine

        self.out = Path(out_dir)
        self.engine = engine if engine is not None else HFEngine()
        if self.out.exists() and not self.out.is_dir():
            raise SteerlabError(f"--out {self.out} exists and is not a directory")
        self.kind = kind
        self.bar: Bar = progress or _noop_bar
        self.say: Callable[[str], None] = status or (lambda _m: None)
        self.identity: dict[str, Any] = {"kind": kind}
        if identity is not None:  # already computed by the caller (reading the weights again)
            self.identity |= identity
        elif lm is not None:
            self.identity |= model_identity(lm, self.engine)
        self.timings: dict[str, float] = {}  # wall seconds of each step in this session
        self.reused: dict[str, float] = {}  # compute seconds earlier sessions spent on reuse
        self._current: str | None = None
        self._t0 = time.perf_counter()
        fresh = not self.out.exists() or not any(self.out.iterdir())
        self.out.mkdir(parents=True, exist_ok=True)
        if fresh:  # never claim a directory that already held someone's files
            mark(self.out, kind)
        self.cache = RunCache(self.out / "cache", base=self.identity, on_hit=self._reused)

    def _reused(self, step: str, seconds: float) -> None:
        where = self._current or step
        self.reused[where] = round(self.reused.get(where, 0.0) + seconds, 3)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step (its wall time is recorded even when it fails)."""
        outer, self._current = self._current, name
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 2)
            self._current = outer

    def provenance(self) -> dict[str, Any]:
        """How a result was made: weights fingerprint, dtype, device, versions, engine."""
        keys = ("weights", "dtype", "device", "versions", "engine")
        return {k: self.identity[k] for k in keys if k in self.identity}

    def timing_report(self) -> dict[str, Any]:
        """``seconds`` (this session's wall time per step and ``total``), ``compute_seconds``
        (adding what earlier sessions spent on reused results) and ``resumed_steps``."""
        seconds = dict(self.timings)
        seconds["total"] = round(time.perf_counter() - self._t0, 2)
        compute = {k: round(v + self.reused.get(k, 0.0), 2) for k, v in self.timings.items()}
        compute["total"] = round(sum(compute.values()), 2)
        return {
            "seconds": seconds,
            "compute_seconds": compute,
            "resumed_steps": sorted(set(self.cache.hits)),
        }

    # -- files -------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.out / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write(self.out / name, data)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write(self.out / name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any, *, indent: int = 2) -> Path:
        return self.write_text(name, json.dumps(_finite(obj), indent=indent, allow_nan=False))

    def write_files(self, files: dict[str, bytes]) -> list[Path]:
        """Write several files (e.g. a report's HTML and PNGs), each atomically."""
        return [self.write_bytes(name, data) for name, data in files.items()]


def _finite(x: Any) -> Any:
    """NaN and inf as None, so the JSON files are strict JSON."""
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
