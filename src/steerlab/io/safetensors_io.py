"""Atomic safetensors writes: a temp file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_atomic"]


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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
