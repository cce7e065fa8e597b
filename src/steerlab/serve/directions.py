"""Directions by name for the server: artifacts under the runs directory, and uploads.

A name is a relative path without its ``.safetensors`` suffix (``refusal/direction``). Names
from clients never leave the runs directory: ``..``, absolute paths, backslashes and anything
that resolves outside it (a symlink) are refused. Every direction is loaded with
:meth:`~steerlab.directions.artifact.Direction.load` against the served model (width, layers,
model identity, finiteness); nothing is ever unpickled.

Uploads are kept in memory under their own namespace, ``upload:NAME``: ``:`` never appears in a
file-backed name, so an upload can neither shadow nor replace a file under the runs directory,
and an upload name once taken is not overwritten (409). Their number and bytes are capped.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..directions.artifact import Direction
from ..errors import SteerlabError

__all__ = [
    "DEFAULT_UPLOAD_LIMIT",
    "UPLOAD_PREFIX",
    "DirectionRegistry",
    "NameError_",
    "NameTaken",
    "UploadTooLarge",
    "check_name",
    "safe_path",
]

DEFAULT_UPLOAD_LIMIT = 64 * 2**20  # bytes
UPLOAD_PREFIX = "upload:"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$")
_SKIP_DIRS = {"cache", "__pycache__"}  # a run's cache holds many artifacts of its own
_MAX_SCAN = 5000  # files looked at when listing a runs directory


class NameError_(SteerlabError):  # "NameError" is a builtin
    """A client-given name or path is malformed or escapes the runs directory."""

    http_status = 400


class NameTaken(SteerlabError):
    """An upload under a name that is already taken (HTTP 409)."""

    http_status = 409


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a safe relative path (segments of letters, digits, ``_.+=-``)."""
    if not isinstance(name, str) or not name or len(name) > 256:
        raise NameError_(f"a {what} must be a non-empty string of at most 256 characters")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise NameError_(f"{what} {name!r} must be a relative path inside the runs directory")
    parts = name.split("/")
    if any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise NameError_(
            f"{what} {name!r} is not allowed: use path segments of letters, digits and _.+=- "
            "(no '..', no leading dot)"
        )
    return name


def safe_path(root: Path, rel: str, what: str = "path") -> Path:
    """``root / rel`` resolved, refused unless it stays inside ``root`` (symlinks included)."""
    check_name(rel, what)
    base = root.resolve()
    p = (base / rel).resolve()
    if p != base and base not in p.parents:
        raise NameError_(f"{what} {rel!r} leads outside the runs directory")
    return p


def _kind(path: Path) -> str | None:
    """The ``kind`` in a safetensors file's steerlab metadata (reads the header only)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("steerlab")
        meta = json.loads(raw) if raw else None
    except Exception:  # a corrupt or foreign file is simply not listed
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


class DirectionRegistry:
    """Name -> :class:`Direction` for one model: the runs directory's artifacts and uploads.

    Args:
        runs_dir: where ``*.safetensors`` direction artifacts are found by relative name.
        model_info: the served model's :class:`~steerlab.models.ModelInfo` (validation).
        upload_limit: largest accepted upload in bytes.
        max_uploads, total: most uploads kept, and their bytes in all (413 beyond).
    """

    def __init__(
        self,
        runs_dir: Path,
        model_info: Any,
        *,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        max_uploads: int = 32,
        total: int = 256 * 2**20,
    ) -> None:
        self.runs_dir = Path(runs_dir)
        self.info = model_info
        self.upload_limit = upload_limit
        self.max_uploads, self.total = max_uploads, total
        self._uploads: dict[str, Direction] = {}
        self._bytes = 0
        self._cache: dict[Path, tuple[float, Direction]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Uploaded names, then the runs directory's direction artifacts, sorted."""
        found: set[str] = set()
        root = self.runs_dir
        if root.is_dir():
            seen = 0
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(
                    d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
                )
                for f in sorted(filenames):
                    if not f.endswith(".safetensors") or f.startswith("."):
                        continue
                    seen += 1
                    if seen > _MAX_SCAN:
                        break
                    path = Path(dirpath) / f
                    rel = path.relative_to(root).with_suffix("").as_posix()
                    try:
                        check_name(rel)
                    except NameError_:
                        continue
                    if _kind(path) == "steerlab.direction":
                        found.add(rel)
        with self._lock:
            ups = sorted(self._uploads)
        return ups + sorted(found - set(ups))

    def get(self, name: str) -> Direction:
        """The direction called ``name``: ``upload:...`` an upload, else the runs directory's
        file (raises KeyError for an unknown name)."""
        if isinstance(name, str) and name.startswith(UPLOAD_PREFIX):
            with self._lock:
                return self._uploads[name]
        check_name(name, "direction name")
        path = safe_path(self.runs_dir, name + ".safetensors", "direction name")
        if not path.is_file():
            raise KeyError(name)
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        d = Direction.load(path, model_info=self.info)
        with self._lock:
            self._cache[path] = (mtime, d)
        return d

    def add_upload(self, data: bytes, name: str | None, filename: str | None) -> str:
        """Validate an uploaded artifact's bytes and keep it under ``name`` (default: the
        file's stem). Raises on anything that is not a direction artifact for this model."""
        if len(data) > self.upload_limit:
            raise UploadTooLarge(
                f"upload of {len(data)} bytes is over the limit of {self.upload_limit} bytes"
            )
        if filename and not filename.endswith(".safetensors"):
            raise NameError_(f"uploads must be .safetensors direction artifacts, not {filename!r}")
        if len(data) < 8:
            raise NameError_("the upload is not a safetensors file")
        header_len = int.from_bytes(data[:8], "little")
        if header_len > len(data) - 8 or data[8:9] != b"{":
            raise NameError_("the upload is not a safetensors file (no JSON header)")
        if not name:
            stem = Path(filename or "upload.safetensors").name
            name = stem[: -len(".safetensors")] if stem.endswith(".safetensors") else stem
        name = name.removeprefix(UPLOAD_PREFIX)
        check_name(name, "direction name")
        name = UPLOAD_PREFIX + name
        self._room(name, len(data))
        with tempfile.TemporaryDirectory(prefix="steerlab-upload-") as tmp:
            path = Path(tmp) / "upload.safetensors"
            path.write_bytes(data)
            try:
                d = Direction.load(path, model_info=self.info)
            except SteerlabError as e:  # say "the upload", not the temporary path
                raise type(e)(str(e).replace(str(path), "the upload")) from None
        d.meta.setdefault("uploaded_as", name)
        with self._lock:
            self._room(name, len(data))  # again: another upload may have come meanwhile
            self._uploads[name] = d
            self._bytes += len(data)
        return name

    def _room(self, name: str, size: int) -> None:
        if name in self._uploads:
            raise NameTaken(f"an upload is already called {name!r}: choose another name")
        if len(self._uploads) >= self.max_uploads:
            raise UploadTooLarge(f"the server keeps at most {self.max_uploads} uploads")
        if self._bytes + size > self.total:
            raise UploadTooLarge(
                f"uploads would take {self._bytes + size} bytes; the limit is {self.total}"
            )


class UploadTooLarge(SteerlabError):
    """An upload over the server's size limit (HTTP 413)."""

    http_status = 413
