"""Capture cost: reading activations vs a plain forward pass, on smollm2-135m.

(a) ``extract(method="mean_diff", layers="all")`` over 64 contrast pairs (128 texts) against a
    plain ``model(**forward_kwargs(batch))`` over the same batches. Target: ratio <= 1.05.
(b) ``extract(..., layers=L, site="resid_post")`` for several L: the forward stops after block
    L, so the ideal cost is (L+1)/N of the decoder stack.

The plain forward also computes the final norm and the LM head (49k x 576 logits at every
position), which capture skips; a second baseline, the decoder stack alone
(``model.model(...)``), isolates the cost of the hooks and statistics themselves.

Run: ``python benchmarks/bench_capture.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    contrast_pairs,
    emit,
    interleaved,
    machine,
    max_wait,
    med,
    monitor_for,
    parser,
    print_table,
    r3,
    set_threads,
    spread,
    verdict,
)

TARGET_ALL = 1.05


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import torch

    from steerlab.capture import forward_kwargs
    from steerlab.directions import extract
    from steerlab.models.chat import encode
    from steerlab.models.load import load_model

    n_pairs = 16 if args.quick else 64
    repeats = args.repeats or (1 if args.quick else 3)
    batch_size = 16
    say = print
    set_threads(args.threads)
    mon = monitor_for(max_wait(args))
    info = machine()
    mon.wait_quiet("start", say)

    t0 = time.perf_counter()
    lm = load_model("smollm2-135m")
    load_s = time.perf_counter() - t0
    n_layers = lm.info.n_layers
    layers_b = [0, 14, n_layers - 1] if args.quick else [0, 7, 14, 22, n_layers - 1]
    pos, neg = contrast_pairs(n_pairs)

    # The same batches extract() builds: each class in chunks of batch_size, default chat rule.
    batches = [encode(lm.tokenizer, s[i : i + batch_size])
               for s in (pos, neg) for i in range(0, len(s), batch_size)]
    n_tokens = int(sum(int(b.attention_mask.sum()) for b in batches))

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                lm.model(**forward_kwargs(b))

    def decoder_only() -> None:
        with torch.inference_mode():
            for b in batches:
                lm.model.model(**forward_kwargs(b))

    def encode_only() -> None:
        for s in (pos, neg):
            for i in range(0, len(s), batch_size):
                encode(lm.tokenizer, s[i : i + batch_size])

    def ext(layers: object, site: str):
        return lambda: extract(lm, pos, neg, method="mean_diff", layers=layers, site=site,
                               batch_size=batch_size)

    fns = {
        "plain forward": plain,
        "decoder only": decoder_only,
        "extract all (resid_pre)": ext("all", "resid_pre"),
        "extract all (resid_post)": ext("all", "resid_post"),
    }
    for L in layers_b:
        fns[f"extract L={L} (resid_post)"] = ext(L, "resid_post")

    # Warm-up: one small batch through every path (allocator, kernels, tokenizer caches).
    with torch.inference_mode():
        lm.model(**forward_kwargs(batches[0]))
        lm.model.model(**forward_kwargs(batches[0]))
    extract(lm, pos[:2], neg[:2], layers="all")
    extract(lm, pos[:2], neg[:2], layers="all", site="resid_post")

    say(f"timing {len(fns)} paths x {repeats} repeats over {2 * n_pairs} texts "
        f"({n_tokens} tokens, {len(batches)} batches of {batch_size}) ...")
    times = interleaved(fns, repeats=repeats, warmup=0, monitor=mon, say=say)
    enc_t = interleaved({"encode": encode_only}, repeats=3, warmup=1)["encode"]

    t_plain = med(times["plain forward"])
    t_dec = med(times["decoder only"])
    rows = []
    res_paths = {}
    for name, ts in times.items():
        t = med(ts)
        res_paths[name] = {"median_s": r3(t), "runs_s": [r3(x) for x in ts],
                           "spread": r3(spread(ts)), "ratio_vs_plain": r3(t / t_plain),
                           "ratio_vs_decoder": r3(t / t_dec)}
        rows.append([name, f"{t:.2f}", f"{spread(ts):.0%}", f"{t / t_plain:.3f}",
                     f"{t / t_dec:.3f}"])
    print_table("(a) capture vs plain forward (median seconds; ratios are what count)",
                ["path", "median s", "spread", "vs plain fwd", "vs decoder only"], rows)

    all_ratio = med(times["extract all (resid_pre)"]) / t_plain
    all_post_ratio = med(times["extract all (resid_post)"]) / t_plain
    all_post_vs_dec = med(times["extract all (resid_post)"]) / t_dec

    rows_b = []
    per_layer = []
    for L in layers_b:
        t = med(times[f"extract L={L} (resid_post)"])
        ideal = (L + 1) / n_layers
        rel_dec = t / t_dec
        per_layer.append({"layer": L, "ratio_vs_plain": r3(t / t_plain),
                          "ratio_vs_decoder": r3(rel_dec), "ideal": r3(ideal),
                          "ideal_vs_plain": r3(ideal * t_dec / t_plain),
                          "excess_over_ideal": r3(rel_dec - ideal)})
        rows_b.append([L, f"{t / t_plain:.3f}", f"{rel_dec:.3f}", f"{ideal:.3f}",
                       f"{rel_dec - ideal:+.3f}"])
    print_table("(b) capture at one layer L (forward stops after block L)",
                ["L", "vs plain fwd", "vs decoder only", "ideal (L+1)/N", "excess"], rows_b)

    print(f"\nencoding all batches (tokenizer, padding): {med(enc_t) * 1000:.1f} ms "
          f"= {med(enc_t) / t_plain:.1%} of a plain forward (included in extract times)")
    print(f"decoder stack alone = {t_dec / t_plain:.3f} of the plain forward "
          "(the rest is the final norm and LM head, which capture skips)")
    print(f"extract all layers / plain forward = {all_ratio:.3f} (target <= {TARGET_ALL}): "
          f"{verdict(all_ratio <= TARGET_ALL)}")
    print(f"extract all layers, resid_post (all 30 blocks) / decoder-only forward = "
          f"{all_post_vs_dec:.3f}  (hooks + statistics overhead)")

    result = {
        "benchmark": "bench_capture",
        "model": "smollm2-135m",
        "quick": args.quick,
        "texts": 2 * n_pairs,
        "tokens": n_tokens,
        "batch_size": batch_size,
        "repeats": repeats,
        "load_model_s": r3(load_s),
        "machine": info,
        "load": mon.summary(),
        "paths": res_paths,
        "encode_s": r3(med(enc_t)),
        "decoder_fraction_of_plain": r3(t_dec / t_plain),
        "capture_all_ratio": r3(all_ratio),
        "capture_all_resid_post_ratio": r3(all_post_ratio),
        "capture_all_resid_post_vs_decoder": r3(all_post_vs_dec),
        "target_capture_all_ratio_max": TARGET_ALL,
        "capture_all_ok": all_ratio <= TARGET_ALL,
        "per_layer": per_layer,
    }
    mon.warn_if_noisy()
    emit(result, args.json)


if __name__ == "__main__":
    main()
