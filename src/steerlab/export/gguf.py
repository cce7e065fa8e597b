"""llama.cpp control vectors: write a Direction as a control-vector GGUF, read one back.

The format (llama.cpp ``common_control_vector_load``, also written by its ``cvector-generator``
and by repeng's ``export_gguf``): ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the llama.cpp architecture name), ``controlvector.layer_count``,
and one F32 1-D tensor ``direction.{il}`` of width ``n_embd`` per steered layer. llama.cpp adds
``direction.{il}`` to the **output** of block ``il`` (0-based) at every position, prompt
included; its loader rejects ``il = 0`` (its buffer holds no slot for block 0).

steerlab's convention (:data:`~steerlab.directions.artifact.LAYER_CONVENTION`):
``resid_pre[l]`` is the input of block ``l`` = the output of block ``l - 1``; ``resid_post[l]``
is the output of block ``l``. So a ``resid_pre`` layer ``l`` is written as ``direction.{l-1}``
(``l >= 2``) and a ``resid_post`` layer ``l`` as ``direction.{l}`` (``l >= 1``); an imported file
becomes a ``resid_post`` Direction with the same indices, which steers exactly as llama.cpp does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..capture import resolve_layers
from ..directions.artifact import Direction
from ..errors import ArtifactError, LayerError, SteerlabError, VectorError
from ..interventions.runtime import check_coeff

__all__ = [
    "ARCH",
    "ControlVectorFile",
    "import_control_vector",
    "llamacpp_index",
    "read_control_vector",
    "write_control_vector",
]

ARCH = "controlvector"
# Hugging Face model_type -> llama.cpp architecture name (controlvector.model_hint). llama.cpp
# does not check the hint; cvector-generator writes llama.cpp's name, repeng the HF model_type.
_HINT = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gpt_neox": "gptneox",
}


def llamacpp_index(layer: int, site: str) -> int:
    """The llama.cpp block index whose output receives steerlab's ``layer`` at ``site``."""
    if site == "resid_post":
        il = layer
    elif site == "resid_pre":
        il = layer - 1
    else:
        raise LayerError(f"cannot export a direction read at site {site!r} to llama.cpp")
    if il < 1:
        first = 2 if site == "resid_pre" else 1
        raise LayerError(
            f"llama.cpp cannot steer {site} layer {layer} (that is direction.{il}: llama.cpp "
            f"adds direction.il to the output of block il and rejects il < 1); use {site} "
            f"layers >= {first}"
        )
    return il


def _n_layers(d: Direction, n_layers: int | None) -> int:
    n = n_layers or d.meta.get("model", {}).get("n_layers")
    if not n:
        raise ArtifactError(
            "the direction does not record its model's layer count; pass --model to say which"
        )
    return int(n)


def write_control_vector(
    d: Direction,
    path: str | os.PathLike[str],
    *,
    layers: str | int | list[int] | None = None,
    coeff: float = 1.0,
    n_layers: int | None = None,
    model_type: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``coeff`` times ``d`` at ``layers`` (steerlab indices; default: the direction's own
    layers) as a llama.cpp control vector. A one-row direction is used at every chosen layer;
    a multi-row one gives each layer its own row. Returns what was written."""
    import gguf

    coeff = check_coeff(coeff, "--coeff")
    path = Path(path)
    if path.exists() and not overwrite:
        raise SteerlabError(f"{path} exists; pass --overwrite to replace it")
    n = _n_layers(d, n_layers)
    chosen = list(d.layers) if layers is None else resolve_layers(layers, n)
    beyond = [lay for lay in chosen if lay >= n]
    if beyond:
        raise LayerError(f"layers {beyond} are beyond the model's {n} blocks")
    tensors: dict[int, np.ndarray] = {}
    for lay in chosen:
        il = llamacpp_index(lay, d.site)
        row = d.vectors[0] if len(d.layers) == 1 else d.vector(lay)
        tensors[il] = (coeff * row.double()).float().numpy()
    mt = model_type or d.meta.get("model", {}).get("model_type", "")
    hint = _HINT.get(mt, mt or "unknown")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_string(f"{ARCH}.model_hint", hint)
        w.add_uint32(f"{ARCH}.layer_count", len(tensors))
        for il in sorted(tensors):
            w.add_tensor(f"direction.{il}", tensors[il])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(path),
        "model_hint": hint,
        "site": d.site,
        "steerlab_layers": chosen,
        "llamacpp_layers": sorted(tensors),
        "coeff": coeff,
        "n_embd": d.d_model,
        "layer_range_flag": f"--control-vector-layer-range {min(tensors)} {max(tensors)}",
    }


@dataclass(frozen=True)
class ControlVectorFile:
    """A control-vector GGUF as read: ``vectors[il]`` is added to block ``il``'s output."""

    vectors: dict[int, torch.Tensor]
    model_hint: str
    layer_count: int | None
    sha256: str


def _field(reader: Any, key: str) -> Any:
    f = reader.get_field(key)
    if f is None:
        return None
    part = f.parts[f.data[0]]
    if getattr(f.types[0], "name", "") == "STRING":
        return bytes(part).decode("utf-8", errors="replace")
    return part.tolist()[0]


def read_control_vector(path: str | os.PathLike[str]) -> ControlVectorFile:
    """Read and check a control-vector GGUF (llama.cpp's, repeng's or steerlab's)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no such file: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError, struct errors, ... for a foreign file
        raise ArtifactError(f"{path} is not a GGUF file ({type(e).__name__}: {e})") from None
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ArtifactError(
            f"{path} is not a control vector: general.architecture is {arch!r}, not {ARCH!r}"
        )
    vectors: dict[int, torch.Tensor] = {}
    width = None
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            raise ArtifactError(f"{path}: unexpected tensor {t.name!r} in a control vector")
        try:
            il = int(t.name.split(".", 1)[1])
        except ValueError:
            raise ArtifactError(f"{path}: cannot read a layer index from {t.name!r}") from None
        if il < 1:
            raise LayerError(
                f"{path}: {t.name} is invalid: llama.cpp control vectors start at direction.1"
            )
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise VectorError(f"{path}: {t.name} is {t.tensor_type.name}, not F32")
        shape = [int(x) for x in t.shape if int(x) != 1] or [1]
        if len(shape) != 1:
            raise VectorError(f"{path}: {t.name} has shape {list(t.shape)}, not 1-D")
        if width is not None and shape[0] != width:
            raise VectorError(f"{path}: {t.name} has width {shape[0]}, others {width}")
        width = shape[0]
        if il in vectors:
            raise ArtifactError(f"{path}: {t.name} appears twice")
        v = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
        if not torch.isfinite(v).all():
            raise VectorError(f"{path}: {t.name} holds NaN or inf values")
        vectors[il] = v
    if not vectors:
        raise ArtifactError(f"{path}: a control vector with no direction.* tensors")
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    count = _field(reader, f"{ARCH}.layer_count")
    return ControlVectorFile(
        vectors=dict(sorted(vectors.items())),
        model_hint=str(_field(reader, f"{ARCH}.model_hint") or ""),
        layer_count=None if count is None else int(count),
        sha256=h,
    )


def import_control_vector(path: str | os.PathLike[str], info: Any) -> Direction:
    """A ``resid_post`` Direction that steers ``info``'s model as llama.cpp would with the file
    (coefficient 1, all its layers), checked against the model's width and depth."""
    cv = read_control_vector(path)
    width = next(iter(cv.vectors.values())).shape[0]
    if width != info.d_model:
        raise VectorError(
            f"{path}: control vector width {width} does not match the model's {info.d_model}"
        )
    beyond = [il for il in cv.vectors if il >= info.n_layers]
    if beyond:
        raise LayerError(
            f"{path}: direction.{beyond[0]} is beyond the model's {info.n_layers} blocks "
            f"(0..{info.n_layers - 1})"
        )
    if cv.layer_count is not None and cv.layer_count > info.n_layers:
        raise LayerError(
            f"{path}: controlvector.layer_count {cv.layer_count} exceeds the model's "
            f"{info.n_layers} blocks"
        )
    hint = _HINT.get(info.model_type, info.model_type)
    meta = {
        "site": "resid_post",
        "method": "import:gguf",
        "apply_layers": "all",
        "model": info.to_dict(),
        "source": {
            "file": Path(path).name,
            "sha256": cv.sha256,
            "model_hint": cv.model_hint,
            "layer_count": cv.layer_count,
            "model_hint_matches": cv.model_hint in ("", hint, info.model_type),
        },
        "note": "direction.il of the GGUF is layer il here (resid_post = output of block il); "
        "vectors carry the file's scale: steer with coefficient 1 to match llama.cpp",
    }
    layers = tuple(cv.vectors)
    return Direction(torch.stack([cv.vectors[il] for il in layers]), layers, meta)
