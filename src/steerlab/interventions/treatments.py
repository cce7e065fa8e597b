"""Direction-based interventions as objects: Steer, Ablate, Clamp, Orthogonalize.

Each wraps the function of the same name (:mod:`.runtime`, :mod:`.weights`) so that pipelines
can hold a treatment as a value, describe it (``spec()``) and apply it to a loaded model.

Example::

    from steerlab.interventions import Ablate, Steer, apply
    with apply(lm, [Steer(d, layers=12, coeff=4), Ablate(other)]) as treated:
        steerlab.generate(treated.model, treated.tokenizer, prompts)

Several directions: ``Ablate([d1, d2], layer=[10, 14])`` and ``Orthogonalize(...)`` remove their
span (orthonormalized, recorded in ``spec()``); ``steer_many([(v1, 10, 4.0), (v2, 14, -2.0)])``
adds several vectors at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import Site
from ..directions.artifact import Direction
from ..errors import VectorError
from ..models.load import LoadedModel
from .base import Compose, vector_spec
from .record import recorded
from .runtime import (
    Positions,
    SpanLike,
    VectorLike,
    ablate,
    as_basis,
    check_coeff,
    clamp,
    orthonormal_rows,
    span_rows,
    steer,
    steer_rows,
)
from .weights import orthogonalize_

__all__ = ["Ablate", "Clamp", "Orthogonalize", "Steer", "SteerRows", "steer_many"]


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


SteerTerm = tuple[Any, ...] | Steer  # (vector, layers) or (vector, layers, coeff), or a Steer


def steer_many(
    terms: Iterable[SteerTerm],
    *,
    positions: Positions = "all",
    site: Site | None = None,
    name: str = "steer_many",
) -> Compose:
    """Several additions at once: ``[(vector, layers, coeff), ...]`` (coeff defaults to 1).

    Each term is a :class:`Steer`; they are entered in order, so two terms at the same layer
    add ``c1 * v1`` then ``c2 * v2`` (the same as their sum, up to float rounding), and terms
    at different layers compose like nested :func:`~steerlab.steer` contexts.

    Example:
        >>> with apply(lm, steer_many([(d1, 10, 4.0), (d2, 14, -2.0)])) as m:  # doctest: +SKIP
        ...     steerlab.generate(m.model, m.tokenizer, prompts)
    """
    items: list[Steer] = []
    for i, t in enumerate(terms):
        if isinstance(t, Steer):
            items.append(t)
            continue
        if not isinstance(t, tuple) or len(t) not in (2, 3):
            raise VectorError(f"steer term {i} must be (vector, layers[, coeff]), got {t!r}")
        coeff = check_coeff(t[2] if len(t) == 3 else 1.0, f"the coefficient of steer term {i}")
        items.append(Steer(t[0], layers=t[1], coeff=coeff, positions=positions, site=site))
    if not items:
        raise VectorError("steer_many needs at least one (vector, layers, coeff) term")
    return Compose(tuple(items), name=name)


def _single(direction: SpanLike, layer: int | Sequence[int] | None) -> bool:
    """One direction given the one-direction way (its spec and records stay as they were)."""
    if isinstance(direction, torch.Tensor):
        return direction.ndim != 2
    return isinstance(direction, Direction) and not isinstance(layer, Sequence)


def _span_spec(kind: str, direction: SpanLike, layer: int | Sequence[int] | None) -> dict:
    if _single(direction, layer):
        return {"kind": kind, "layer": layer, "vector": vector_spec(direction, layer)}  # type: ignore[arg-type]
    rows = [r.detach().float().cpu() for r in span_rows(direction, layer)]
    basis = _check_span(rows)
    return {
        "kind": kind,
        "layer": list(layer) if isinstance(layer, Sequence) else layer,
        "k": len(rows),
        "vector": vector_spec(rows[0]),  # the first direction: the basis's first row
        "vectors": [vector_spec(r) for r in rows],
        "basis": vector_spec(basis.float()),
    }


def _check_span(rows: list[torch.Tensor]) -> torch.Tensor:
    if len({tuple(r.shape) for r in rows}) != 1 or rows[0].ndim != 1:
        raise VectorError(f"directions of different shapes: {[tuple(r.shape) for r in rows]}")
    if not all(torch.isfinite(r).all() for r in rows):
        raise VectorError("a direction holds NaN or inf values")
    return orthonormal_rows(torch.stack(rows))[0]


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
    """Remove a direction from the residual stream at every layer; see :func:`~steerlab.ablate`.

    Several directions (a (K, D) tensor, a list, ``layer=[...]``) remove their span; they are
    orthonormalized in order and a zero or dependent one is refused when built. ``spec()``
    then records ``k``, each direction and the basis."""

    direction: SpanLike
    layer: int | Sequence[int] | None = None
    name: str = "ablate"

    def __post_init__(self) -> None:
        if not _single(self.direction, self.layer):
            self.spec()  # refuses zero, dependent, NaN or mismatched directions now

    def spec(self) -> dict[str, Any]:
        return _span_spec("ablate", self.direction, self.layer)

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

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        model = lm.model
        basis = as_basis(model, self.direction, self.layer)  # (K, D) float64 orthonormal
        k = basis.shape[0]
        r = basis[0] if k == 1 else basis
        if k == 1:
            op: dict[str, Any] = {"kind": "orthogonalize", "unit": r.detach().float().cpu()}
        else:
            op = {"kind": "orthogonalize", "basis": basis.float(), "k": k}
        out_emb = model.get_output_embeddings()
        head = out_emb.weight if out_emb is not None else None
        ties = _config_ties(model)
        had_edit = hasattr(model.config, "steerlab_edit")
        old_edit = getattr(model.config, "steerlab_edit", None)
        spill = _Spill(self.spill_dir)
        try:
            orthogonalize_(model, r, lm.adapter, layer=self.layer, save=spill.save)
            with recorded(model, op):
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
