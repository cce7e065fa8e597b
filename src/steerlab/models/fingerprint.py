"""What a cached result depends on besides its inputs: the weights and the numeric libraries.

A model retrained in place, a new hub revision or a merged adapter keeps its name and config,
so a cache keyed on those alone would silently serve results of the old weights. The
fingerprint reads every parameter and buffer: its name, shape, dtype, an evenly strided sample
of its values and the integer sum of all its raw bits (exact, so the same weights always give
the same fingerprint whatever the thread count, and any changed value changes it). It costs one
integer reduction per tensor, about a second for a 0.5B model on two CPU cores.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Any

import torch
from torch import nn

__all__ = ["SAMPLE", "numeric_versions", "weights_fingerprint"]

SAMPLE = 4096  # values hashed per tensor, evenly strided


_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bit_sum(flat: torch.Tensor) -> int:
    """The sum of a tensor's raw bits as integers: exact and independent of summation order
    (threads, devices), and any single changed value changes it."""
    ints = flat.view(_INT_OF_WIDTH[flat.element_size()]) if flat.dtype != torch.bool else flat
    return sum(int(c.sum(dtype=torch.int64)) for c in ints.split(1 << 22))


@torch.no_grad()
def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's weights (all parameters and buffers, by name)."""
    h = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel() == 0 or t.device.type == "meta":
            continue
        flat = t.reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        sample = flat[::step][:SAMPLE].cpu().contiguous()
        h.update(sample.view(torch.uint8).numpy().tobytes())  # raw bytes: bf16 has no numpy type
        h.update(str(_bit_sum(flat)).encode())
    return h.hexdigest()[:16]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def numeric_versions() -> dict[str, Any]:
    """Versions of the libraries whose upgrades change numbers (kernels, model code)."""
    return {"torch": torch.__version__, "transformers": _version("transformers")}
