"""The vLLM engine against the Hugging Face engine: same model, prompts and treatments.

Target (the vLLM issue): >= 3x the HF engine's generated tokens/s for qwen2.5-coder-0.5b in
bfloat16 on this CPU, with the same refusal figures within their intervals. One run measures,
for each treatment (none; the refusal direction ablated on harmful prompts; added on harmless
ones), each engine's wall time, tokens/s and refusal rate with a 95% interval, and how many
greedy completions are identical between the engines. The direction is the difference in
means at the last prompt token (harmful vs harmless, the built-in training prompts) at
``--layer`` (default 60% of depth): fixed, so both engines get exactly the same treatment.

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--model M] [--dtype bfloat16]
        [--prompts 48] [--max-new-tokens 64] [--json P]

Run it from .venv-vllm (scripts/setup_vllm.sh). A per-row sweep grid (4 settings) is timed
too. The HF engine also runs in float32 (its fastest dtype on a CPU) for reference.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, print_table, r3, set_threads, verdict


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16, help="HF engine batch size")
    p.add_argument("--no-fp32", action="store_true", help="skip the HF float32 reference run")
    args = p.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.prompts, args.max_new_tokens = 16, 24

    import torch

    from steerlab import load_model
    from steerlab.capture import capture_stats
    from steerlab.engines import engine_off, use_engine
    from steerlab.evaluate.engine import greedy_rows
    from steerlab.generation import generate, generate_jobs
    from steerlab.interventions import Ablate, NoOp, Steer, apply
    from steerlab.interventions.per_row import RowSetting
    from steerlab.io.prompts import read_prompts
    from steerlab.metrics.refusal import substring_refusal
    from steerlab.metrics.stats import proportion_ci

    harmful = read_prompts("builtin:harmful:test")[: args.prompts]
    harmless = read_prompts("builtin:harmless:test")[: args.prompts]
    lm = load_model(args.model, dtype=args.dtype)
    n_layers = lm.info.n_layers
    layer = args.layer if args.layer is not None else round(0.6 * n_layers)
    tr_h = read_prompts("builtin:harmful:train")[:64]
    tr_b = read_prompts("builtin:harmless:train")[:64]
    mh = capture_stats(lm.model, lm.tokenizer, lm.adapter, tr_h, [layer]).mean[0]
    mb = capture_stats(lm.model, lm.tokenizer, lm.adapter, tr_b, [layer]).mean[0]
    diff = (mh - mb).float()
    unit = diff / diff.norm()
    treatments = {
        "none (harmful)": (None, harmful),
        "ablate (harmful)": (Ablate(unit), harmful),
        "add (harmless)": (Steer(diff, layers=layer, coeff=1.0), harmless),
    }

    def run_all(tag: str) -> dict[str, dict]:
        out = {}
        for name, (treat, prompts) in treatments.items():
            with apply(lm, treat):
                t0 = time.perf_counter()
                texts = generate(
                    lm.model,
                    lm.tokenizer,
                    prompts,
                    max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size,
                )
                wall = time.perf_counter() - t0
            toks = sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for t in texts)
            k = sum(substring_refusal(t) for t in texts)
            out[name] = {
                "texts": texts,
                "seconds": r3(wall),
                "tokens": toks,
                "tokens_per_s": r3(toks / wall),
                "refusal": r3(k / len(texts)),
                "ci": [r3(x) for x in proportion_ci(k, len(texts))],
            }
            print(f"{tag} {name}: {wall:.1f}s {toks / wall:.1f} tok/s refusal {k}/{len(texts)}")
        return out

    def jobs(tag: str) -> dict[str, Any]:
        """Every treatment in one call (the refusal evaluation's shape): on vLLM one batched
        call with a request group per treatment, on the HF engine one treatment after the
        other."""
        t0 = time.perf_counter()
        got = generate_jobs(
            lm,
            [(treat or NoOp(), prompts) for treat, prompts in treatments.values()],
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        wall = time.perf_counter() - t0
        toks = sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for g in got for t in g)
        out: dict[str, Any] = {"seconds": r3(wall), "tokens": toks, "tokens_per_s": r3(toks / wall)}
        for name, texts in zip(treatments, got, strict=True):
            k = sum(substring_refusal(t) for t in texts)
            out[name] = {
                "texts": texts,
                "refusal": r3(k / len(texts)),
                "ci": [r3(x) for x in proportion_ci(k, len(texts))],
            }
        print(f"{tag} all treatments, one call: {wall:.1f}s {toks / wall:.1f} tok/s")
        return out

    def grid(tag: str) -> float:
        sets = [RowSetting(add={layer: diff * c}, label=str(c)) for c in (0.0, 0.5, 1.0, 1.5)]
        prompts = harmless[:16]
        t0 = time.perf_counter()
        g = greedy_rows(
            lm,
            [q for _ in sets for q in prompts],
            [s for s in sets for _ in prompts],
            max_new_tokens=args.max_new_tokens,
        )
        wall = time.perf_counter() - t0
        print(f"{tag} grid: {wall:.1f}s {g.tokens / wall:.1f} tok/s")
        return g.tokens / wall

    t0 = time.perf_counter()
    use_engine(lm, "vllm", max_model_len=1024)
    start_s = time.perf_counter() - t0
    with torch.no_grad():
        vl = run_all("vllm")
        vl_jobs = jobs("vllm")
        vl_grid = grid("vllm")
        with engine_off(lm):
            hf = run_all(f"hf-{args.dtype}")
            hf_jobs = jobs(f"hf-{args.dtype}")
            hf_grid = grid(f"hf-{args.dtype}")
    hf32 = None
    if args.dtype != "float32" and not args.no_fp32:
        del lm
        lm = load_model(args.model, dtype="float32")
        hf32 = run_all("hf-float32")
    rows, res_t = [], {}
    ratios = []
    for name in treatments:
        a, b = vl[name], hf[name]
        same = sum(x == y for x, y in zip(a["texts"], b["texts"], strict=True)) / len(a["texts"])
        overlap = a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]
        ratio = a["tokens_per_s"] / b["tokens_per_s"]
        ratios.append(ratio)
        res_t[name] = {
            "vllm": {k: v for k, v in a.items() if k != "texts"},
            "hf": {k: v for k, v in b.items() if k != "texts"},
            **(
                {"hf_float32": {k: v for k, v in hf32[name].items() if k != "texts"}}
                if hf32
                else {}
            ),
            "identical_greedy": r3(same),
            "refusal_intervals_overlap": overlap,
            "speedup": r3(ratio),
        }
        rows.append(
            [
                name,
                a["tokens_per_s"],
                b["tokens_per_s"],
                hf32[name]["tokens_per_s"] if hf32 else "-",
                r3(ratio),
                f"{a['refusal']} {a['ci']}",
                f"{b['refusal']} {b['ci']}",
                r3(same),
            ]
        )
    one_call: dict[str, Any] = {
        "vllm_tokens_per_s": vl_jobs["tokens_per_s"],
        "hf_tokens_per_s": hf_jobs["tokens_per_s"],
        "vllm_seconds": vl_jobs["seconds"],
        "hf_seconds": hf_jobs["seconds"],
        "speedup": r3(vl_jobs["tokens_per_s"] / hf_jobs["tokens_per_s"]),
        "treatments": {},
    }
    for name in treatments:
        a, b = vl_jobs[name], hf_jobs[name]
        one_call["treatments"][name] = {
            "vllm": {"refusal": a["refusal"], "ci": a["ci"]},
            "hf": {"refusal": b["refusal"], "ci": b["ci"]},
            "refusal_intervals_overlap": a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1],
            "identical_greedy": r3(
                sum(x == y for x, y in zip(a["texts"], b["texts"], strict=True)) / len(a["texts"])
            ),
        }
    # the target is judged where the engines do the same work in the shape steerlab runs it:
    # every treatment of an evaluation in one call
    ok = one_call["speedup"] >= 3.0 and all(
        t["refusal_intervals_overlap"] for t in one_call["treatments"].values()
    )
    res = {
        "machine": machine(),
        "model": args.model,
        "dtype": args.dtype,
        "layer": layer,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "hf_batch_size": args.batch_size,
        "vllm_start_seconds": r3(start_s),
        "treatments": res_t,
        "all_treatments_one_call": one_call,
        "grid_tokens_per_s": {
            "vllm": r3(vl_grid),
            "hf": r3(hf_grid),
            "speedup": r3(vl_grid / hf_grid),
        },
        "target": ">= 3x HF tokens/s (same dtype) with every treatment in one call, refusal "
        "intervals overlapping",
        "verdict": verdict(ok),
    }
    print_table(
        f"vLLM vs HF engine, {args.model} {args.dtype}",
        [
            "treatment",
            "vllm tok/s",
            "hf tok/s",
            "hf fp32 tok/s",
            "speedup",
            "vllm refusal",
            "hf refusal",
            "identical",
        ],
        [
            *rows,
            [
                "all, one call",
                one_call["vllm_tokens_per_s"],
                one_call["hf_tokens_per_s"],
                "-",
                one_call["speedup"],
                "",
                "",
                "",
            ],
            ["grid (4 settings)", r3(vl_grid), r3(hf_grid), "-", r3(vl_grid / hf_grid), "", "", ""],
        ],
    )
    emit(res, args.json)


if __name__ == "__main__":  # vLLM's worker processes import this module: keep the guard
    main()
