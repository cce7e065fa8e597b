"""Write a steerlab direction artifact as a llama.cpp control-vector GGUF with *repeng's* code.

Runs in the repeng venv (``${STEERLAB_BENCH_CACHE:-~/.cache/steerlab-bench}/venv-repeng``:
``pip install "torch==2.13.0"`` first, then ``pip install repeng "torch==2.13.0"``; repeng 0.4.0
with transformers 5.24, gguf 0.19.0, numpy 1.26.4). It imports nothing from steerlab: the
artifact is read with ``safetensors.numpy`` (tensor ``vectors`` (L, D) float32, ``layers`` (L,)
int64, JSON metadata under the key ``steerlab``), and the file is written by
``repeng.ControlVector(model_type=..., directions={index: np.ndarray}).export_gguf(path)``.

    python benchmarks/repeng_export.py ART.safetensors OUT.gguf --map 12:12 [--map 20:20]
        [--model-type llama] [--coeff 1.0]

``--map S:R`` (required, repeatable, or comma-separated ``S:R,S:R``) takes steerlab layer ``S``
of the artifact and writes it under repeng/llama.cpp index ``R`` (the directions dict key, hence
tensor ``direction.R``). Nothing is inferred: the caller states the mapping. Only mapped layers
are written. ``--coeff`` multiplies the vectors before export (repeng's ``ControlVector * c``).

What repeng 0.4.0 does (read from its source, ``repeng/extract.py`` and ``repeng/control.py``):

* Reading (``extract.batched_get_hiddens``): a direction for layer ``i`` is computed from
  ``out.hidden_states[i + 1]`` of the HF model (``hidden_idx = layer + 1 if layer >= 0 else
  layer``), last non-padding token. ``hidden_states[0]`` is the embedding output and
  ``hidden_states[i + 1]`` the output of ``model.layers[i]`` -- except that for the last layer
  (``i = n_layers - 1``) HF's ``hidden_states[n_layers]`` has the final norm applied, so repeng's
  last-layer reading is post-norm. ``read_representations``' default ``hidden_layers`` is
  ``range(-1, -num_hidden_layers, -1)``, normalized to ``n_layers - 1 .. 1``: layer 0 is never
  trained by default.
* Steering (``control.ControlModel`` / ``ControlModule``): ``ControlModel(model, layer_ids)``
  replaces ``model.model.layers[i]`` (or ``model.transformer.h[i]``) with a ``ControlModule``
  whose forward runs the block and ADDS ``coeff * directions[i]`` to the block's output
  (``output[0]`` when the block returns a tuple), at every position (positions before the first
  ``position_ids == 0`` are masked out, i.e. left padding); ``normalize=True`` would rescale to
  the pre-addition norm (off by default). So direction ``i`` is added to the output of
  ``model.layers[i]`` = what becomes HF ``hidden_states[i + 1]`` -- the same place llama.cpp adds
  ``direction.i`` (output of block ``i``; llama.cpp rejects ``i = 0``).
* ``ControlVector.export_gguf(path)``: ``gguf.GGUFWriter(path, "controlvector")`` (so
  ``general.architecture = "controlvector"``), ``controlvector.model_hint`` = the
  ``model_type`` string as given (repeng passes HF ``model.config.model_type``, e.g. "llama",
  "mistral", "qwen2" -- not a llama.cpp architecture name; llama.cpp does not check it),
  ``controlvector.layer_count`` (uint32) = ``len(directions)`` (the number of vectors written, NOT
  the model's layer count), then one tensor ``direction.{key}`` per dict key, in dict order, with
  the numpy array's own dtype and shape (float32 1-D (D,) from its PCA; we pass float32 1-D so
  the tensors are GGML F32, which llama.cpp requires). No scale is stored; llama.cpp applies its
  ``--control-vector-scaled FILE:S`` factor at load time.

Mapping steerlab -> repeng/llama.cpp index: steerlab's ``resid_post`` layer ``l`` is the output of
block ``l`` -> index ``l``; its ``resid_pre`` layer ``l`` is the input of block ``l`` = output of
block ``l - 1`` -> index ``l - 1``. The script prints the artifact's site and warns when the given
mapping differs from that rule, but writes what it was told.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def parse_map(items: list[str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            s, sep, r = part.partition(":")
            if not sep:
                raise SystemExit(f"--map wants STEERLAB_LAYER:REPENG_INDEX, got {part!r}")
            s_i, r_i = int(s), int(r)
            if s_i in out:
                raise SystemExit(f"steerlab layer {s_i} mapped twice")
            out[s_i] = r_i
    if not out:
        raise SystemExit("--map is required")
    if len(set(out.values())) != len(out):
        raise SystemExit("two steerlab layers mapped to the same repeng index")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="steerlab direction .safetensors")
    ap.add_argument("out", help="GGUF to write")
    ap.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="S:R",
        help="steerlab layer S -> repeng/llama.cpp index R (repeatable or S:R,S:R)",
    )
    ap.add_argument(
        "--model-type",
        default=None,
        help="controlvector.model_hint (default: the artifact's model_type, else llama)",
    )
    ap.add_argument("--coeff", type=float, default=1.0, help="multiply the vectors (default 1)")
    args = ap.parse_args()

    import repeng
    from repeng import ControlVector
    from safetensors import safe_open
    from safetensors.numpy import load_file

    t = load_file(args.artifact)
    if "vectors" not in t or "layers" not in t:
        raise SystemExit(f"{args.artifact}: no 'vectors'/'layers' tensors (not a direction)")
    with safe_open(args.artifact, framework="numpy") as f:
        meta = json.loads((f.metadata() or {}).get("steerlab", "{}"))
    vectors = np.asarray(t["vectors"], dtype=np.float32)
    layers = [int(x) for x in np.asarray(t["layers"]).reshape(-1)]
    if vectors.ndim != 2 or vectors.shape[0] != len(layers):
        raise SystemExit(f"bad shapes: vectors {vectors.shape}, layers {len(layers)}")
    row_of = {lay: i for i, lay in enumerate(layers)}
    site = str(meta.get("site", "resid_pre"))
    model_meta = meta.get("model", {}) if isinstance(meta.get("model"), dict) else {}
    model_type = args.model_type or model_meta.get("model_type") or "llama"

    mapping = parse_map(args.map)
    directions: dict[int, np.ndarray] = {}
    for s, r in mapping.items():
        if s not in row_of:
            raise SystemExit(f"steerlab layer {s} not in the artifact (has {layers})")
        if r < 1:
            print(f"warning: index {r} < 1: llama.cpp rejects direction.{r}", file=sys.stderr)
        expect = s if site == "resid_post" else s - 1 if site == "resid_pre" else None
        if expect is not None and expect != r:
            print(
                f"warning: {site} layer {s} is the output of block {expect}, "
                f"but it is written as direction.{r}",
                file=sys.stderr,
            )
        directions[r] = np.ascontiguousarray(
            vectors[row_of[s]] * np.float32(args.coeff), dtype=np.float32
        )

    cv = ControlVector(model_type=model_type, directions=directions)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv.export_gguf(args.out)
    print(
        json.dumps(
            {
                "repeng": getattr(repeng, "__version__", None) or _dist_version("repeng"),
                "out": str(args.out),
                "site": site,
                "model_type": model_type,
                "map": {str(s): r for s, r in mapping.items()},
                "coeff": args.coeff,
                "d_model": int(vectors.shape[1]),
            }
        )
    )
    return 0


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
