"""Direction-based interventions as objects: Steer, Ablate, Clamp, Orthogonalize.

Each wraps the function of the same name (:mod:`.runtime`, :mod:`.weights`) so that pipelines
can hold a treatment as a value, describe it (``spec()``) and apply it to a loaded model.

Example::

    from steerlab.interventions import Ablate, Steer, apply
    with apply(lm, [Steer(d, layers=12, coeff=4), Ablate(other)]) as treated:
        steerlab.generate(treated.model, treated.tokenizer, prompts)
"""

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

from ..capture import Site
from ..models.load import LoadedModel
from .base import vector_spec
from .record import recorded
from .runtime import (
    Positions,
    VectorLike,
    ablate,
    as_unit,
    check_coeff,
    clamp,
    steer,
    steer_rows,
)
from .weights import orthogonalize_

__all__ = ["Ablate", "Clamp", "Orthogonalize", "Steer", "SteerRows"]


@dataclass(frozen=True, eq=False)  # tensor fields: identity, not elementwise ==
class Steer:
    """Add ``coeff * vector`` at ``layers`` (ActAdd / CAA); see :func:`~steerlab.steer`."""

    vector: VectorLike
    layers: int | Sequence[int] | str | None = None
    coeff: float = 1.0
    positions: Positions = "all"
    site: Site | None = None
    name: str = "steer"

    def __post_init__(self) -> None:
        check_coeff(self.coeff)

    def spec(self) -> dict[str, Any]:
        layers = self.layers if not isinstance(self.layers, tuple) else list(self.layers)
        return {
            "kind": "steer",
            "layers": layers,
            "coeff": self.coeff,
            "positions": self.positions,
            "site": self.site or getattr(self.vector, "site", "resid_pre"),
            "vector": vector_spec(
                self.vector, self.layers if isinstance(self.layers, int) else None
            ),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with steer(
            lm.model,
            self.vector,
            layers=self.layers,
            coeff=self.coeff,
            positions=self.positions,
            site=self.site,
            adapter=lm.adapter,
        ):
            yield lm


@dataclass(frozen=True, eq=False)
class SteerRows:
    """Add ``deltas[i]`` to batch row ``i`` at the input of block ``layer``; see
    :func:`~steerlab.interventions.runtime.steer_rows`."""

    deltas: torch.Tensor  # (rows, D)
    layer: int
    name: str = "steer_rows"

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "steer_rows",
            "layer": self.layer,
            "rows": int(self.deltas.shape[0]),
            "vector": vector_spec(self.deltas),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with steer_rows(lm.model, self.deltas, layer=self.layer, adapter=lm.adapter):
            yield lm


@dataclass(frozen=True, eq=False)
class Ablate:
    """Remove a direction from the residual stream at every layer; see :func:`~steerlab.ablate`."""

    direction: VectorLike
    layer: int | None = None
    name: str = "ablate"

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "ablate",
            "layer": self.layer,
            "vector": vector_spec(self.direction, self.layer),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with ablate(lm.model, self.direction, layer=self.layer, adapter=lm.adapter):
            yield lm


@dataclass(frozen=True, eq=False)
class Clamp:
    """Pin the projection on a direction to ``value`` at ``layers``; see :func:`~steerlab.clamp`."""

    direction: VectorLike
    value: float
    layers: int | Sequence[int] | str | None = "all"
    layer: int | None = None
    name: str = "clamp"

    def __post_init__(self) -> None:
        check_coeff(self.value, "the clamp value")

    def spec(self) -> dict[str, Any]:
        layers = self.layers if not isinstance(self.layers, tuple) else list(self.layers)
        return {
            "kind": "clamp",
            "value": self.value,
            "layers": layers,
            "layer": self.layer,
            "vector": vector_spec(self.direction, self.layer),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with clamp(
            lm.model,
            self.direction,
            self.value,
            layers=self.layers,
            layer=self.layer,
            adapter=lm.adapter,
        ):
            yield lm


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
    back on exit. For a permanent edit use :func:`~steerlab.orthogonalize`.
    """

    direction: VectorLike
    layer: int | None = None
    spill_dir: str | Path | None = None
    name: str = "orthogonalize"

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "orthogonalize",
            "layer": self.layer,
            "vector": vector_spec(self.direction, self.layer),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        model = lm.model
        r = as_unit(model, self.direction, self.layer)
        out_emb = model.get_output_embeddings()
        head = out_emb.weight if out_emb is not None else None
        ties = _config_ties(model)
        had_edit = hasattr(model.config, "steerlab_edit")
        old_edit = getattr(model.config, "steerlab_edit", None)
        spill = _Spill(self.spill_dir)
        try:
            orthogonalize_(model, r, lm.adapter, layer=self.layer, save=spill.save)
            with recorded(model, {"kind": "orthogonalize", "unit": r.detach().float().cpu()}):
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
