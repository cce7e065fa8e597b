"""Steered vs plain generation throughput (tokens/s) on smollm2-135m.

Steering adds ``coeff * v`` at the input of block 12 at every position (prefill and every
decode step) through ``steerlab.interventions.steer``. Target: steered tokens/s >= 0.95 x plain.

Steering changes the text, so the two runs could stop at different lengths. Two measurements:

* **forced length**: ``model.generate`` with the generation config steerlab uses plus
  ``min_new_tokens == max_new_tokens``, so both produce exactly ``B x max_new_tokens`` tokens
  (greedy). This is the ratio the target applies to.
* **steerlab.generate** (the public path, EOS allowed): tokens counted as decode forwards per
  batch (an untimed counting run), so tokens/s stays comparable even when lengths differ.

Run: ``python benchmarks/bench_generate.py [--quick] [--json out.json]``
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

TARGET = 0.95
LAYER = 12
COEFF = 4.0


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import torch
    from transformers import GenerationConfig

    from steerlab.directions import extract
    from steerlab.generation import generate
    from steerlab.interventions import steer
    from steerlab.models.chat import encode, pad_id
    from steerlab.models.load import load_model

    n_prompts = 8 if args.quick else 16
    max_new = 8 if args.quick else 32
    batch_size = 8
    repeats = args.repeats or (1 if args.quick else 3)
    say = print
    set_threads(args.threads)
    mon = monitor_for(max_wait(args))
    info = machine()
    mon.wait_quiet("start", say)

    lm = load_model("smollm2-135m")
    model, tok = lm.model, lm.tokenizer
    happy, sad = contrast_pairs(64)
    direction = extract(lm, happy[:32], sad[:32], layers=LAYER)  # resid_pre, last token
    prompts = happy[32 : 32 + n_prompts // 2] + sad[32 : 32 + n_prompts - n_prompts // 2]
    batches = [encode(tok, prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]

    eos = model.generation_config.eos_token_id
    forced_cfg = GenerationConfig(max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                                  temperature=None, top_p=None, top_k=None,
                                  pad_token_id=pad_id(tok), eos_token_id=eos)

    def forced() -> int:
        n = 0
        with torch.inference_mode():
            for b in batches:
                ids = model.generate(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                     generation_config=forced_cfg)
                n += (ids.shape[1] - b.input_ids.shape[1]) * ids.shape[0]
        return n

    def forced_steered() -> int:
        with steer(model, direction, layers=LAYER, coeff=COEFF):
            return forced()

    def public() -> list[str]:
        return generate(model, tok, prompts, max_new_tokens=max_new, batch_size=batch_size)

    def public_steered() -> list[str]:
        with steer(model, direction, layers=LAYER, coeff=COEFF):
            return public()

    # Token counts, untimed: forced runs return them; for the public path count the model's
    # forward calls (one per generated position in each batch) times the batch's rows.
    n_forced = forced()
    n_forced_steered = forced_steered()
    assert n_forced == n_forced_steered == len(prompts) * max_new, (n_forced, n_forced_steered)

    def count_public(fn) -> tuple[int, list[str]]:
        calls: list[int] = []
        h = model.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            texts = fn()
        finally:
            h.remove()
        # generate() runs one model.generate per batch; all batches here are full but the last.
        steps_total = len(calls)
        per_batch_rows = [len(prompts[i : i + batch_size])
                          for i in range(0, len(prompts), batch_size)]
        if len(set(per_batch_rows)) == 1:
            return steps_total * per_batch_rows[0], texts
        raise SystemExit("use a prompt count divisible by the batch size")

    n_public, texts_plain = count_public(public)
    n_public_steered, texts_steered = count_public(public_steered)
    changed = sum(a != b for a, b in zip(texts_plain, texts_steered, strict=True))

    fns = {"plain (forced)": forced, "steered (forced)": forced_steered,
           "plain (steerlab.generate)": public, "steered (steerlab.generate)": public_steered}
    tokens = {"plain (forced)": n_forced, "steered (forced)": n_forced_steered,
              "plain (steerlab.generate)": n_public,
              "steered (steerlab.generate)": n_public_steered}
    say(f"timing {len(fns)} paths x {repeats} repeats: {len(prompts)} prompts, batch {batch_size}, "
        f"max_new_tokens={max_new}, greedy, steer layer {LAYER} coeff {COEFF} (all positions) ...")
    t0 = time.perf_counter()
    times = interleaved(fns, repeats=repeats, warmup=1, monitor=mon, say=say)
    wall = time.perf_counter() - t0

    rows = []
    paths = {}
    for k, ts in times.items():
        t = med(ts)
        paths[k] = {"median_s": r3(t), "runs_s": [r3(x) for x in ts], "spread": r3(spread(ts)),
                    "tokens": tokens[k], "tokens_per_s": r3(tokens[k] / t)}
        rows.append([k, tokens[k], f"{t:.2f}", f"{spread(ts):.0%}", f"{tokens[k] / t:.1f}"])
    print_table("generation throughput (median of repeats)",
                ["path", "new tokens", "median s", "spread", "tokens/s"], rows)

    ratio_forced = (paths["steered (forced)"]["tokens_per_s"]
                    / paths["plain (forced)"]["tokens_per_s"])
    ratio_public = (paths["steered (steerlab.generate)"]["tokens_per_s"]
                    / paths["plain (steerlab.generate)"]["tokens_per_s"])
    print(f"\nsteered / plain tokens/s, forced length: {ratio_forced:.3f} "
          f"(target >= {TARGET}): {verdict(ratio_forced >= TARGET)}")
    print(f"steered / plain tokens/s, steerlab.generate: {ratio_public:.3f} "
          f"(plain made {n_public} tokens, steered {n_public_steered})")
    print(f"steering changed {changed}/{len(prompts)} completions; e.g.")
    diff = [i for i, (a, b) in enumerate(zip(texts_plain, texts_steered, strict=True)) if a != b]
    ex = diff[0] if diff else 0
    print(f"  prompt:  {prompts[ex][:100]!r}")
    print(f"  plain:   {texts_plain[ex][:100]!r}")
    print(f"  steered: {texts_steered[ex][:100]!r}")

    result = {
        "benchmark": "bench_generate",
        "model": "smollm2-135m",
        "quick": args.quick,
        "prompts": len(prompts),
        "batch_size": batch_size,
        "max_new_tokens": max_new,
        "layer": LAYER,
        "coeff": COEFF,
        "positions": "all",
        "repeats": repeats,
        "timing_wall_s": r3(wall),
        "machine": info,
        "load": mon.summary(),
        "paths": paths,
        "ratio_forced": r3(ratio_forced),
        "ratio_steerlab_generate": r3(ratio_public),
        "target_ratio_min": TARGET,
        "ratio_ok": ratio_forced >= TARGET,
        "completions_changed_by_steering": changed,
    }
    mon.warn_if_noisy()
    emit(result, args.json)


if __name__ == "__main__":
    main()
