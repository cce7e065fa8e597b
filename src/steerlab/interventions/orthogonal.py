"""Weight orthogonalization as an intervention: the weights edited in place while the context
is open, restored bit for bit on exit (originals spilled to a temporary file)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.load import LoadedModel
from .ops import Op
from .treatments import _single, _span_spec, _span_vectors
from .vectors import SpanLike, as_basis
from .weights import orthogonalize_

__all__ = ["Orthogonalize"]


class _Spill:
    """Original parameter values written to a temporary file, read back to restore them.

    Weight orthogonalization is not invertible in floating point, and a copy of every edited
    matrix in memory would cost about half the model again: the originals go to disk instead,
    one tensor at a time, as raw bytes (nothing is pickled), and come back bit for bit.
    """

    SLICE = 1 << 24  # bytes read back per copy

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        # Closed by close(), which Orthogonalize calls in its finally.
        self.file = tempfile.TemporaryFile(prefix="steerlab-spill-", dir=directory)  # noqa: SIM115
        self.index: list[tuple[str, int, int, tuple[int, ...], torch.dtype]] = []

    def save(self, name: str, t: torch.Tensor) -> None:
        data = t.detach().contiguous().cpu()
        raw = data.reshape(-1).view(torch.uint8).numpy()
        offset = self.file.seek(0, os.SEEK_END)
        raw.tofile(self.file)
        self.index.append((name, offset, raw.nbytes, tuple(data.shape), data.dtype))

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Write every saved tensor back, a slice at a time (no second copy of a matrix)."""
        for name, offset, nbytes, shape, dtype in reversed(self.index):
            target = model.get_parameter(name).data
            self.file.seek(offset)
            if not target.is_contiguous():  # rare: no flat byte view, copy it whole
                whole = np.fromfile(self.file, dtype=np.uint8, count=nbytes)
                target.copy_(torch.from_numpy(whole).view(dtype).reshape(shape))
                continue
            raw = target.view(-1).view(torch.uint8)  # the parameter's own bytes
            for start in range(0, nbytes, self.SLICE):
                n = min(self.SLICE, nbytes - start)
                chunk = np.fromfile(self.file, dtype=np.uint8, count=n)
                raw[start : start + n].copy_(torch.from_numpy(chunk))

    def close(self) -> None:
        self.file.close()


def _config_ties(model: nn.Module) -> list[tuple[Any, bool]]:
    cfgs = [model.config, getattr(model.config, "text_config", None)]
    return [
        (c, c.tie_word_embeddings)
        for c in cfgs
        if c is not None and hasattr(c, "tie_word_embeddings")
    ]


@dataclass(frozen=True, eq=False)
class Orthogonalize:
    """Weight orthogonalization, in place while the context is open, restored exactly on exit.

    The model's own weights are edited (no second copy in memory); their original values are
    spilled to a temporary file in ``spill_dir`` (default: the system's temp dir) and written
    back on exit. For a permanent edit use :func:`~steerlab.orthogonalize`. Several
    directions remove their span, as :class:`Ablate` does.
    """

    direction: SpanLike
    layer: int | Sequence[int] | None = None
    spill_dir: str | Path | None = None
    name: str = "orthogonalize"

    def __post_init__(self) -> None:
        if not _single(self.direction, self.layer):
            self.spec()

    def spec(self) -> dict[str, Any]:
        return _span_spec("orthogonalize", self.direction, self.layer)

    def ops(self) -> list[Op]:
        """The rows as given; ``layer`` is only recorded (``from_ops`` rebuilds the same weight
        edit from the rows, recording no layer)."""
        layer = list(self.layer) if isinstance(self.layer, Sequence) else self.layer
        return [
            {
                "kind": "orthogonalize",
                "vectors": _span_vectors(self.direction, self.layer),
                "layer": layer,
                "spill_dir": None if self.spill_dir is None else str(self.spill_dir),
            }
        ]

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        model = lm.model
        basis = as_basis(model, self.direction, self.layer)  # (K, D) float64 orthonormal
        r = basis[0] if basis.shape[0] == 1 else basis
        out_emb = model.get_output_embeddings()
        head = out_emb.weight if out_emb is not None else None
        ties = _config_ties(model)
        had_edit = hasattr(model.config, "steerlab_edit")
        old_edit = getattr(model.config, "steerlab_edit", None)
        spill = _Spill(self.spill_dir)
        try:
            orthogonalize_(model, r, lm.adapter, layer=self.layer, save=spill.save)
            yield lm
        finally:
            if out_emb is not None and out_emb.weight is not head:
                out_emb.weight = head  # re-tie first: the untied copy is freed before restoring
            spill.restore(model)
            spill.close()
            for cfg, tie in ties:
                cfg.tie_word_embeddings = tie
            if had_edit:
                model.config.steerlab_edit = old_edit
            elif hasattr(model.config, "steerlab_edit"):
                del model.config.steerlab_edit
