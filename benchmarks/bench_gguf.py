"""steerlab's GGUF control-vector export, checked in a real llama.cpp (not our own reader).

For each model: a happy-vs-sad difference-in-means direction at ``resid_pre`` layer L (50% of
depth) is exported with ``steerlab export gguf`` (as a library call) at one layer and at a
range of layers (coefficient: ``--rel-norm`` x the median residual norm at L, over the
direction's norm), and loaded by llama.cpp's own control-vector code (``--control-vector``, the
path llama-cli takes; benchmarks/llamacpp). On the same prompts, given as the same token ids:

* the change steering makes to the next-token logits in llama.cpp (steered - unsteered) is
  correlated with the change steerlab's runtime steering makes in transformers (Pearson, per
  prompt; target > 0.99);
* the first ``--steps`` greedy tokens under steering agree on most prompts;
* an **off-by-one control** writes the vector one block later (what an index slip would do):
  its correlation must be visibly lower, so the check can tell the layers apart;
* a control vector written by **repeng itself** (``repeng.ControlVector.export_gguf``, in
  repeng's own venv) is imported with ``steerlab import gguf``: steering with it equals steering
  with the original direction, and llama.cpp gives the same logits with either file.

The built-in models' GGUFs are quantized (smollm2: Q4_1); steerlab runs their dequantized
weights in float32, so the unsteered logits already differ a little (reported).

    .venv/bin/python benchmarks/bench_gguf.py [--models smollm2-135m,qwen2.5-coder-0.5b]
        [--prompts 16] [--steps 4] [--json P]

Needs the llama.cpp build (``bash benchmarks/llamacpp/build.sh``, once, about 4 min) and, for
the repeng part, the repeng venv ``${STEERLAB_BENCH_CACHE:-~/.cache/steerlab-bench}/venv-repeng``
(``pip install "torch==2.13.0"`` then ``pip install repeng "torch==2.13.0"``; skip the part with
``--no-repeng``). See benchmarks/llamacpp/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import emit, machine, parser, print_table, r3, set_threads, verdict


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument(
        "--rel-norm",
        type=float,
        default=0.5,
        help="steering strength: |coeff * v| as a fraction of the median residual norm at L",
    )
    p.add_argument("--span", type=int, default=4, help="layers in the multi-layer export")
    p.add_argument("--no-repeng", action="store_true")
    args = p.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.prompts, args.steps = 6, 2

    from _llamacpp import llamacpp_logits

    from steerlab import load_model
    from steerlab.directions.extract import extract
    from steerlab.export.gguf import write_control_vector
    from steerlab.interventions import Steer
    from steerlab.io.prompts import read_prompts
    from steerlab.models.fetch import _assemble_gguf
    from steerlab.models.registry import cache_dir, get_builtin
    from steerlab.prefix import token_rows

    prompts = read_prompts("builtin:harmless:test")[: args.prompts]
    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    results: dict[str, dict] = {}
    rows = []
    all_ok = True
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t_model = time.perf_counter()
        spec = get_builtin(name)
        assert spec is not None, name
        gguf_path = cache_dir() / "bench-gguf" / spec.gguf_name
        if not gguf_path.is_file():
            gguf_path.parent.mkdir(parents=True, exist_ok=True)
            _assemble_gguf(spec, gguf_path, print)
        lm = load_model(name, dtype="float32")
        n = lm.info.n_layers
        L = round(0.5 * n)
        d = extract(
            lm,
            read_prompts("builtin:happy")[:32],
            read_prompts("builtin:sad")[:32],
            method="mean_diff",
            layers=[L],
            site="resid_pre",
        )
        ids = token_rows(lm.tokenizer, prompts, chat=None)
        resid = _median_norm(lm, ids, L)
        coeff = args.rel_norm * resid / float(d.vectors[0].norm())

        def hf_run(treat, ids=ids, lm=lm):
            return _hf_run(lm, treat, ids, args.steps)

        cases = {
            "one layer": (f"{L}:{L + 1}", [L]),
            f"{args.span} layers": (f"{L}:{L + args.span}", list(range(L, L + args.span))),
        }
        base_hf, base_hf_greedy = hf_run(None)
        base_cpp, base_cpp_greedy = llamacpp_logits(gguf_path, ids, greedy_steps=args.steps)
        vocab = min(base_hf.shape[1], base_cpp.shape[1])
        base_hf, base_cpp = base_hf[:, :vocab], base_cpp[:, :vocab]
        res: dict[str, object] = {
            "layer": L,
            "coeff": r3(coeff),
            "median_resid_norm": r3(resid),
            "rel_norm": args.rel_norm,
            "direction_norm": r3(float(d.vectors[0].norm())),
            "unsteered": {
                "logit_corr_mean": r3(
                    np.mean([_pearson(a, b) for a, b in zip(base_hf, base_cpp, strict=True)])
                ),
                "greedy_agree": r3(
                    np.mean([a == b for a, b in zip(base_hf_greedy, base_cpp_greedy, strict=True)])
                ),
            },
        }
        for case, (span, layers) in cases.items():
            f = work / f"{name}-{len(layers)}.gguf"
            info = write_control_vector(d, f, layers=span, coeff=coeff, overwrite=True)
            treat = Steer(d.vectors[0], layers=layers, coeff=coeff)
            st_hf, st_hf_greedy = hf_run(treat)
            st_cpp, st_cpp_greedy = llamacpp_logits(
                gguf_path, ids, control_vector=f, greedy_steps=args.steps
            )
            st_hf, st_cpp = st_hf[:, :vocab], st_cpp[:, :vocab]
            dh, dc = st_hf - base_hf, st_cpp - base_cpp
            corr = [_pearson(a, b) for a, b in zip(dh, dc, strict=True)]
            agree = np.mean([a == b for a, b in zip(st_hf_greedy, st_cpp_greedy, strict=True)])
            first = np.mean(
                [a[0] == b[0] for a, b in zip(st_hf_greedy, st_cpp_greedy, strict=True)]
            )
            changed = np.mean([a != b for a, b in zip(st_hf_greedy, base_hf_greedy, strict=True)])
            # off by one: the same vectors one block later in llama.cpp
            off = work / f"{name}-{len(layers)}-off.gguf"
            shifted = [lay + 1 for lay in layers if lay + 1 < n]
            write_control_vector(
                d, off, layers=",".join(map(str, shifted)), coeff=coeff, overwrite=True
            )
            off_cpp, _ = llamacpp_logits(gguf_path, ids, control_vector=off, greedy_steps=1)
            off_corr = [
                _pearson(a, b) for a, b in zip(dh, off_cpp[:, :vocab] - base_cpp, strict=True)
            ]
            ok = min(corr) > 0.99 and agree >= 0.5
            all_ok &= ok
            res[case] = {
                "export": {k: info[k] for k in ("steerlab_layers", "llamacpp_layers")},
                "logit_diff_corr_mean": r3(np.mean(corr)),
                "logit_diff_corr_min": r3(min(corr)),
                "off_by_one_corr_mean": r3(np.mean(off_corr)),
                "greedy_agree_all_steps": r3(agree),
                "greedy_agree_first_token": r3(first),
                "steering_changed_greedy": r3(changed),
                "verdict": verdict(ok),
            }
            rows.append(
                [
                    name,
                    case,
                    info["llamacpp_layers"],
                    r3(np.mean(corr)),
                    r3(min(corr)),
                    r3(np.mean(off_corr)),
                    r3(agree),
                    r3(changed),
                ]
            )
        if not args.no_repeng:
            res["repeng"] = _repeng_check(lm, d, L, coeff, work, name, gguf_path, ids)
            all_ok &= res["repeng"].get("ok", False)
        res["seconds"] = r3(time.perf_counter() - t_model)
        results[name] = res
        del lm
    print_table(
        "llama.cpp control vector vs steerlab runtime steering",
        [
            "model",
            "export",
            "llama.cpp layers",
            "corr mean",
            "corr min",
            "off-by-one corr",
            f"greedy {args.steps} agree",
            "steering changed greedy",
        ],
        rows,
    )
    emit(
        {
            "machine": machine(),
            "prompts": len(prompts),
            "steps": args.steps,
            "models": results,
            "target": "logit-difference correlation > 0.99 on every prompt; greedy tokens agree "
            "on most prompts; repeng's own GGUF imports and steers identically",
            "verdict": verdict(all_ok),
        },
        args.json,
    )


def _median_norm(lm: Any, ids: list[list[int]], layer: int) -> float:
    """Median norm of the residual stream entering block ``layer`` over the prompts' tokens
    (the first token, whose norm is often an outlier, left out)."""
    import torch

    norms = []
    with torch.no_grad():
        for row in ids:
            out = lm.model(input_ids=torch.tensor([row]), output_hidden_states=True)
            norms.append(out.hidden_states[layer][0, 1:].float().norm(dim=-1))
    return float(torch.cat(norms).median())


def _hf_run(lm: Any, treat: Any, ids: list[list[int]], steps: int) -> tuple[np.ndarray, list]:
    """Last-position logits and ``steps`` greedy tokens per prompt, one prompt per forward."""
    import torch

    from steerlab.interventions import NoOp

    logits, greedy = [], []
    with torch.no_grad():
        for row in ids:
            x = torch.tensor([row])
            with (treat or NoOp()).applied(lm) as m:
                logits.append(m.model(input_ids=x).logits[0, -1].float().numpy())
                out = m.model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=steps,
                    do_sample=False,
                    pad_token_id=lm.tokenizer.pad_token_id or 0,
                )
            greedy.append(out[0, x.shape[1] :].tolist())
    return np.stack(logits), greedy


def _repeng_check(
    lm: Any,
    d: Any,
    L: int,
    coeff: float,
    work: Path,
    name: str,
    gguf_path: Path,
    ids: list[list[int]],
) -> dict:
    """repeng writes the GGUF from the steerlab vector; steerlab imports it."""
    import os

    from _llamacpp import llamacpp_logits

    from steerlab.directions.artifact import Direction
    from steerlab.export.gguf import import_control_vector, read_control_vector
    from steerlab.interventions import Steer

    root = Path(os.environ.get("STEERLAB_BENCH_CACHE", Path.home() / ".cache/steerlab-bench"))
    py = root / "venv-repeng" / "bin" / "python"
    if not py.is_file():
        return {"ok": False, "error": f"no repeng venv at {py} (benchmarks/llamacpp/README.md)"}
    version = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('repeng'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the coefficient is applied here exactly as steerlab's writer applies it (float64, then
    # float32), so both files hold the same float32 values: a float32 product rounds
    # differently, and llama.cpp's 8-bit activation quantization turns 1e-6 into 0.5 logits
    art = work / f"{name}-dir.safetensors"
    Direction((coeff * d.vectors.double()).float(), d.layers, d.meta).save(art)
    out = work / f"{name}-repeng.gguf"
    # repeng's direction.i is added to the output of block i: steerlab resid_pre L = block L-1
    script = str(Path(__file__).parent / "repeng_export.py")
    cmd = [
        str(py),
        script,
        str(art),
        str(out),
        "--map",
        f"{L}:{L - 1}",
        "--coeff",
        "1",
        "--model-type",
        lm.info.model_type,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr[-2000:]}
    imported = import_control_vector(out, lm.info)
    ours = work / f"{name}-1.gguf"
    mine = read_control_vector(ours).vectors[L - 1]
    vec_diff = float((imported.vectors[0] - mine).abs().max())
    want, _ = _hf_run(lm, Steer(d.vectors[0], layers=[L], coeff=coeff), ids, 1)
    got, _ = _hf_run(lm, Steer(imported, layers=list(imported.layers), coeff=1.0), ids, 1)
    diff = float(np.abs(want - got).max())
    a, _ = llamacpp_logits(gguf_path, ids, control_vector=ours, greedy_steps=1)
    b, _ = llamacpp_logits(gguf_path, ids, control_vector=out, greedy_steps=1)
    cpp_diff = float(np.abs(a - b).max())
    return {
        "repeng_version": version,
        "imported_layers": list(imported.layers),
        "steer_max_abs_logit_diff_vs_original": diff,
        "llamacpp_max_abs_logit_diff_ours_vs_repeng": cpp_diff,
        "vector_max_abs_diff_ours_vs_repeng": vec_diff,
        "ok": bool(diff < 1e-4 and cpp_diff < 1e-3),
    }


if __name__ == "__main__":
    main()
