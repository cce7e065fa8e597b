"""Run a real llama.cpp (our ``cvec_logits`` tool, built by ``benchmarks/llamacpp/build.sh``) on
token ids, optionally with a GGUF control vector loaded by llama.cpp's own code.

numpy + subprocess only (no steerlab import). The binary is ``$STEERLAB_LLAMACPP_BIN`` if set,
else the newest ``<cache>/llamacpp/build-*/bin/cvec_logits`` where ``<cache>`` is
``$STEERLAB_BENCH_CACHE`` or ``~/.cache/steerlab-bench`` (the same place build.sh uses).

llama.cpp's control-vector semantics (llama.cpp in llama-cpp-python 0.3.36): tensor
``direction.{il}`` (F32, 1-D, n_embd) is added to the *output* of block ``il`` (0-based), i.e.
to what HF calls ``hidden_states[il + 1]``; ``direction.0`` is rejected by the loader; the
layer range is inclusive and defaults to ``1 .. n_layer`` (block 0 can never be steered).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BUILD_SH = Path(__file__).resolve().parent / "llamacpp" / "build.sh"


class LlamaCppNotBuilt(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("STEERLAB_BENCH_CACHE") or str(Path.home() / ".cache" / "steerlab-bench")
    return Path(root) / "llamacpp"


def find_binary() -> Path:
    """The cvec_logits binary, or LlamaCppNotBuilt saying how to build it."""
    env = os.environ.get("STEERLAB_LLAMACPP_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise LlamaCppNotBuilt(f"STEERLAB_LLAMACPP_BIN={env} is not an executable file")
        return p
    found = sorted(
        cache_dir().glob("build-*/bin/cvec_logits"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    found = [p for p in found if os.access(p, os.X_OK)]
    if not found:
        raise LlamaCppNotBuilt(
            f"llama.cpp cvec_logits not built (looked in {cache_dir()}/build-*/bin/); "
            f"run: bash {BUILD_SH}   (4-12 min on 2 cores; or set STEERLAB_LLAMACPP_BIN)"
        )
    return found[0]


def llamacpp_logits(
    model_gguf: str | os.PathLike[str],
    token_rows: Sequence[Sequence[int]],
    *,
    control_vector: str | os.PathLike[str] | None = None,
    scale: float = 1.0,
    layer_range: tuple[int, int] | None = None,
    greedy_steps: int = 4,
    threads: int = 2,
    extra_args: Sequence[str] = (),
    timeout: float | None = 1800,
    return_meta: bool = False,
) -> tuple[np.ndarray, list[list[int]]] | tuple[np.ndarray, list[list[int]], dict[str, Any]]:
    """Next-token logits (N, n_vocab) float32 at the last position of each row, and
    ``greedy_steps`` argmax tokens after each row, from llama.cpp.

    Each row is evaluated alone in a cleared KV cache, positions from 0, exactly the ids given
    (no BOS added). ``control_vector`` is passed as ``--control-vector-scaled FILE:scale``;
    ``layer_range=(a, b)`` as ``--control-vector-layer-range a b`` (inclusive, llama.cpp block
    indices). ``return_meta`` adds the tool's JSON (timing, n_ctx, effective layer range, ...).
    """
    rows = [[int(t) for t in r] for r in token_rows]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("token_rows must be a non-empty list of non-empty rows")
    if greedy_steps < 0:
        raise ValueError("greedy_steps must be >= 0")
    model_gguf = Path(model_gguf)
    if not model_gguf.is_file():
        raise FileNotFoundError(model_gguf)
    binary = find_binary()
    with tempfile.TemporaryDirectory(prefix="cvec_logits-") as td:
        ids = Path(td) / "prompts.txt"
        ids.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
        out = Path(td) / "out"
        cmd = [
            str(binary),
            "--cvl-prompts", str(ids),
            "--cvl-out", str(out),
            "--cvl-steps", str(greedy_steps),
            "-m", str(model_gguf),
            "-t", str(threads),
            "-tb", str(threads),
        ]  # fmt: skip
        if control_vector is not None:
            cv = Path(control_vector)
            if not cv.is_file():
                raise FileNotFoundError(cv)
            if ":" in str(cv) or "," in str(cv):
                raise ValueError(
                    f"llama.cpp cannot parse a control-vector path with ':' or ',': {cv}"
                )
            cmd += ["--control-vector-scaled", f"{cv}:{float(scale)!r}"]
        if layer_range is not None:
            a, b = layer_range
            cmd += ["--control-vector-layer-range", str(int(a)), str(int(b))]
        cmd += list(extra_args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or "").splitlines()[-40:])
            raise RuntimeError(
                f"cvec_logits failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}"
            )
        meta = json.loads(out.with_suffix(".json").read_text())
        n_vocab = int(meta["n_vocab"])
        logits = np.fromfile(out.with_suffix(".f32"), dtype=np.float32)
        if logits.size != len(rows) * n_vocab:
            raise RuntimeError(f"expected {len(rows)}x{n_vocab} logits, got {logits.size} floats")
        logits = logits.reshape(len(rows), n_vocab)
        greedy = [[int(t) for t in g] for g in meta["greedy"]]
    if return_meta:
        meta["stderr_tail"] = "\n".join((proc.stderr or "").splitlines()[-20:])
        return logits, greedy, meta
    return logits, greedy


def write_control_vector(
    path: str | os.PathLike[str],
    directions: dict[int, np.ndarray],
    *,
    model_hint: str = "llama",
) -> None:
    """A llama.cpp control-vector GGUF written with the ``gguf`` package (for checks):
    ``direction.{il}`` float32 1-D per key ``il`` (llama.cpp block index, >= 1)."""
    import gguf  # the gguf package; imported lazily

    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", model_hint)
    w.add_uint32("controlvector.layer_count", len(directions))
    for il, v in sorted(directions.items()):
        w.add_tensor(f"direction.{int(il)}", np.ascontiguousarray(v, dtype=np.float32).reshape(-1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
