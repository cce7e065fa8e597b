"""The Direction artifact: per-layer vectors plus metadata that says how they were made.

Stored as safetensors (tensor ``vectors`` (L, D) float32 and ``layers`` (L,) int64) with a
JSON document under the metadata key ``steerlab``. Loading never unpickles anything and checks
shapes, finiteness and, when a model is given, its identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import ArtifactError, LayerError, VectorError
from ..io.safetensors_io import load_checked, save_atomic

__all__ = ["LAYER_CONVENTION", "SITES", "Direction"]

SITES = ("resid_pre", "resid_post")

LAYER_CONVENTION = (
    "resid_pre[l] = input of block l = hidden_states[l]; resid_post[l] = output of block l"
)
_KIND = "steerlab.direction"


@dataclass(frozen=True)
class Direction:
    """Steering / reading vectors for one or more layers of one model.

    Attributes:
        vectors: (L, D) float32, one row per entry of ``layers``.
        layers: block indices the rows belong to.
        meta: how they were made: ``model`` (id, config hash, ...), ``site``, ``method``,
            ``position``, ``data_hash``, ``counts``, ``steerlab_version``, ``layer_convention``.

    Example:
        >>> d = Direction(torch.ones(2, 4), (3, 5), {"site": "resid_pre"})
        >>> d.vector(5).shape
        torch.Size([4])
    """

    vectors: torch.Tensor
    layers: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.vectors
        if v.ndim != 2 or v.shape[0] != len(self.layers):
            raise VectorError(f"vectors must be (len(layers), D); got {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise VectorError("direction holds NaN or inf values")

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def site(self) -> str:
        return str(self.meta.get("site", "resid_pre"))

    def vector(self, layer: int | None = None) -> torch.Tensor:
        """The (D,) vector for ``layer`` (or the only one when the artifact has one layer)."""
        if layer is None:
            if len(self.layers) != 1:
                raise LayerError(
                    f"this direction has {len(self.layers)} layers ({_span(self.layers)}); "
                    "say which one"
                )
            return self.vectors[0]
        if layer not in self.layers:
            raise LayerError(f"layer {layer} is not in this direction (has {_span(self.layers)})")
        return self.vectors[self.layers.index(layer)]

    def unit(self, layer: int | None = None) -> torch.Tensor:
        v = self.vector(layer)
        n = v.norm()
        if n == 0:
            raise VectorError("cannot normalize a zero vector")
        return v / n

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file, then rename)."""

        path = Path(path)
        meta = {
            "kind": _KIND,
            "layer_convention": LAYER_CONVENTION,
            "steerlab_version": __version__,
            **self.meta,
        }
        tensors = {
            "vectors": self.vectors.detach().float(),
            "layers": torch.tensor(self.layers, dtype=torch.int64),
        }
        return save_atomic(tensors, path, meta)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, model_info: Any = None, strict: bool = True
    ) -> Direction:
        """Read and validate an artifact.

        Args:
            path: a ``.safetensors`` file written by :meth:`save`.
            model_info: a :class:`~steerlab.models.ModelInfo`; when given, the width must match
                and (with ``strict``) the architecture hash too.
            strict: refuse a config-hash mismatch (else accept any model of the same width).
        """
        t, meta = load_checked(path, _KIND, ("vectors", "layers"), "direction")
        layers = _checked_layers(t["layers"])
        if t["vectors"].ndim != 2 or not t["vectors"].is_floating_point():
            raise VectorError(
                f"vectors must be a 2-D float tensor; got {tuple(t['vectors'].shape)}"
            )
        site = meta.get("site", "resid_pre")
        if site not in SITES:
            raise ArtifactError(f"direction site must be one of {', '.join(SITES)}, not {site!r}")
        d = cls(t["vectors"].float(), layers, meta)
        if model_info is not None:
            d.check_model(model_info, strict=strict)
        return d

    def check_model(self, info: Any, *, strict: bool = True) -> None:
        """Refuse a model of another width, or (strict) another architecture."""
        if self.d_model != info.d_model:
            raise VectorError(
                f"direction width {self.d_model} does not match the model's {info.d_model}"
            )
        bad = [lay for lay in self.layers if lay >= info.n_layers]
        if bad:
            raise LayerError(f"direction has layers {bad} but the model has {info.n_layers}")
        made_for = self.meta.get("model", {})
        h = made_for.get("config_hash")
        if strict and h and h != info.config_hash:
            raise ArtifactError(
                f"direction was made for {made_for.get('model_id')!r} (config {h}), not "
                f"{info.model_id!r} (config {info.config_hash}); pass strict=False / --force "
                "to use it anyway"
            )


def _checked_layers(t: torch.Tensor) -> tuple[int, ...]:
    """A stored ``layers`` tensor as block indices: 1-D integers, unique, non-negative (an
    artifact is refused when it loads, not when a forward meets it)."""
    if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise LayerError(f"layers must be a 1-D integer tensor; got {t.dtype} {tuple(t.shape)}")
    layers = tuple(int(x) for x in t.tolist())
    if any(x < 0 for x in layers):
        raise LayerError(f"layers must be block indices >= 0; got {list(layers)}")
    if len(set(layers)) != len(layers):
        raise LayerError(f"layers must be unique; got {list(layers)}")
    return layers


def _span(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0]) if layers else "none"
