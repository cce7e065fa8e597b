"""Atomic safetensors writes: a temp file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checked", "save_atomic"]


def save_atomic(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` (contiguous CPU copies) with ``meta`` as JSON under the metadata key
    ``steerlab``; an interrupted write leaves no file behind."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        save_file(data, str(tmp), metadata=None if meta is None else {"steerlab": json.dumps(meta)})
        # safetensors creates its file 0600; give artifacts the usual umask-based mode.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checked(
    path: str | os.PathLike[str], kind: str, keys: tuple[str, ...], what: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a steerlab safetensors artifact of ``kind`` holding ``keys``; never unpickles.

    Raises :class:`~steerlab.errors.ArtifactError` (with ``what`` in the message) for a missing,
    corrupt or foreign file.
    """
    from safetensors import safe_open

    from ..errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no such artifact: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("steerlab")
            if raw is None or not set(keys) <= set(f.keys()):
                raise ArtifactError(f"{path} is not a steerlab {what} artifact")
            tensors = {k: f.get_tensor(k) for k in keys}
        meta = json.loads(raw)
    except ArtifactError:
        raise
    except Exception as e:  # safetensors raises several types for corrupt headers
        raise ArtifactError(f"{path} is corrupt or not a safetensors file ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise ArtifactError(f"{path} is not a steerlab {what} artifact")
    return tensors, meta
