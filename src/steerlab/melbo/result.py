"""The MELBO result and its artifact: K vectors plus how they were found.

Stored as safetensors: ``vectors`` (K, D) float32, ``losses`` (K,) float64 (final objective
per vector), ``history`` (steps + 1, K) float64 (objective per step), with a JSON document
under the metadata key ``steerlab`` (kind ``steerlab.melbo``): the model's identity, the
resolved :class:`MelboConfig`, failures, data hash, steerlab version. Nothing is unpickled.
Each vector becomes a single-layer :class:`~steerlab.directions.Direction` for ``steer`` and
``steerlab generate --vector``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..directions.artifact import LAYER_CONVENTION, Direction
from ..errors import ArtifactError, VectorError
from ..io.safetensors_io import load_checked, save_atomic
from .config import MelboConfig

__all__ = ["MelboResult", "load_vectors", "save_vectors", "vector_direction"]

_KIND = "steerlab.melbo"


@dataclass(frozen=True)
class MelboResult:
    """K steering vectors found by MELBO, their objectives and training curves.

    Attributes:
        vectors: (K, D) float32 on the CPU, each of norm ``config.radius``; to be added at
            ``resid_pre[config.source_layer]``.
        losses: (K,) float64, the objective of each returned vector (higher = larger change at
            the target layer); NaN for a vector whose very first objective was non-finite.
        history: (steps + 1, K) float64, the objective before each step and after the last
            (fewer rows when every vector stopped early).
        config: the resolved configuration (layers and learning rate filled in).
        failed: vector index -> message, for vectors stopped by a non-finite objective or
            gradient (they keep their last finite value).
        meta: ``model`` (identity), ``data_hash``, ``n_prompts``, ``n_target_tokens``,
            ``target_norm`` (mean ``||Z_T(0)||`` at the target positions, for scale).
    """

    vectors: torch.Tensor
    losses: torch.Tensor
    history: torch.Tensor
    config: MelboConfig
    failed: dict[int, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    def to_direction(self, k: int) -> Direction:
        """Vector ``k`` as a single-layer Direction (see :func:`vector_direction`)."""
        return vector_direction(self, k)

    def save(self, path: str | os.PathLike[str], lm: Any = None) -> Path:
        """Write the artifact (see :func:`save_vectors`)."""
        return save_vectors(self, path, lm)


def vector_direction(result: MelboResult, k: int) -> Direction:
    """Vector ``k`` as a :class:`Direction` at ``resid_pre[source_layer]``, method ``melbo``.

    ``steer(model, d, coeff=1.0)`` then adds exactly the trained vector, as in training.

    Args:
        result: from :func:`~steerlab.melbo.train_melbo` or :func:`load_vectors`.
        k: index of the vector, ``0 <= k < K``.

    Returns:
        A Direction whose metadata names the model, the data and the MELBO settings.
    """
    if not 0 <= k < result.num_vectors:
        raise VectorError(f"no vector {k}: this result has vectors 0..{result.num_vectors - 1}")
    cfg = result.config
    assert cfg.source_layer is not None
    meta = {
        "model": result.meta.get("model", {}),
        "site": "resid_pre",
        "method": "melbo",
        "position": "all",
        "layer_convention": LAYER_CONVENTION,
        "data_hash": result.meta.get("data_hash"),
        "steerlab_version": __version__,
        "norms": [round(float(result.vectors[k].norm()), 6)],
        "melbo": {
            "index": k,
            "objective": float(result.losses[k]),
            "failed": result.failed.get(k),
            **_settings(cfg),
        },
    }
    return Direction(result.vectors[k : k + 1].float().clone(), (cfg.source_layer,), meta)


def _settings(cfg: MelboConfig) -> dict[str, Any]:
    keys = ("source_layer", "target_layer", "radius", "p", "q", "seed", "orthogonal")
    return {k: getattr(cfg, k) for k in (*keys, "token_positions", "steps", "lr")}


def save_vectors(result: MelboResult, path: str | os.PathLike[str], lm: Any = None) -> Path:
    """Write ``result`` atomically as a safetensors artifact.

    Args:
        result: what :func:`~steerlab.melbo.train_melbo` returned.
        path: destination ``.safetensors`` file.
        lm: optional :class:`~steerlab.models.load.LoadedModel`; its identity is recorded (and
            must match the one the result was trained on, when the result has one).

    Returns:
        The path written.
    """

    model = dict(result.meta.get("model", {}))
    if lm is not None:
        info = lm.info.to_dict()
        if model and model.get("config_hash") != info["config_hash"]:
            raise ArtifactError(
                f"these vectors were trained on {model.get('model_id')!r}, not {info['model_id']!r}"
            )
        model = info
    meta = {
        "kind": _KIND,
        "layer_convention": LAYER_CONVENTION,
        "site": "resid_pre",
        "steerlab_version": __version__,
        **{k: v for k, v in result.meta.items() if k != "model"},
        "model": model,
        "config": result.config.to_dict(),
        "failed": {str(k): v for k, v in result.failed.items()},
    }
    tensors = {
        "vectors": result.vectors.detach().float().cpu().contiguous(),
        "losses": result.losses.detach().double().cpu().contiguous(),
        "history": result.history.detach().double().cpu().contiguous(),
    }
    return save_atomic(tensors, path, meta)


def load_vectors(
    path: str | os.PathLike[str], *, model_info: Any = None, strict: bool = True
) -> MelboResult:
    """Read and validate a MELBO artifact.

    Args:
        path: a file written by :func:`save_vectors`.
        model_info: a :class:`~steerlab.models.ModelInfo`; when given, the width and layers must
            fit and (with ``strict``) the architecture hash must match.
        strict: refuse a config-hash mismatch.

    Returns:
        The :class:`MelboResult`.
    """
    t, meta = load_checked(path, _KIND, ("vectors", "losses", "history"), "MELBO")
    try:
        cfg = MelboConfig(**meta["config"])
    except (KeyError, TypeError) as e:  # unknown or missing config fields
        raise ArtifactError(f"{path} is corrupt or not a MELBO artifact ({e})") from None
    vec = t["vectors"].float()
    k = vec.shape[0] if vec.ndim == 2 else -1
    if k < 1 or t["losses"].shape != (k,) or t["history"].ndim != 2 or t["history"].shape[1] != k:
        raise ArtifactError(f"{path} has inconsistent tensor shapes")
    if not torch.isfinite(vec).all():
        raise VectorError(f"{path} holds NaN or inf vectors")
    if model_info is not None:
        _check_model(meta.get("model", {}), cfg, vec.shape[1], model_info, strict)
    rest = {key: v for key, v in meta.items() if key not in ("config", "failed", "kind")}
    failed = {int(i): str(m) for i, m in meta.get("failed", {}).items()}
    return MelboResult(vec, t["losses"].double(), t["history"].double(), cfg, failed, rest)


def _check_model(made: dict[str, Any], cfg: MelboConfig, d: int, info: Any, strict: bool) -> None:
    from ..errors import LayerError

    if d != info.d_model:
        raise VectorError(f"vector width {d} does not match the model's {info.d_model}")
    if (cfg.target_layer or 0) >= info.n_layers:
        raise LayerError(f"vectors target layer {cfg.target_layer}; the model has {info.n_layers}")
    h = made.get("config_hash")
    if strict and h and h != info.config_hash:
        raise ArtifactError(
            f"vectors were trained on {made.get('model_id')!r} (config {h}), not "
            f"{info.model_id!r} (config {info.config_hash}); pass strict=False to use them anyway"
        )
