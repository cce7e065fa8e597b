"""MELBO speed on smollm2-135m: batched sliced training vs its floor and vs the reference way.

Measured in one run, medians of repeats:
* ``step``: one step of :func:`steerlab.melbo.train_melbo` for K vectors (whole run time / steps,
  setup amortized), against
* ``floor``: one forward + backward through blocks S..T-1 on the same (K x B) batch, with no
  optimizer, projection or bookkeeping. Target: step <= 1.3x floor.
* ``reference``: the reference code's way: per vector, a full-model forward (hook at block S,
  ``output_hidden_states``) and backward at every step, K runs one after another. Target:
  steerlab's whole run >= 3x faster than the K sequential runs.

    .venv/bin/python benchmarks/bench_melbo.py [--steps 6] [--vectors 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--vectors", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import steerlab
    from steerlab.capture import forward_kwargs
    from steerlab.hooks import scoped_hooks
    from steerlab.melbo import MelboConfig, train_melbo
    from steerlab.melbo.blocks import capture_prefix, frozen, run_slice
    from steerlab.melbo.train import melbo_objective
    from steerlab.models.adapter import blocks_of
    from steerlab.models.chat import encode

    lm = steerlab.load_model(args.model)
    m = lm.model
    blocks = blocks_of(m, lm.adapter)
    prompts = ["Tell me a joke.", "What is the capital of France?",
               "Write a haiku about rain.", "How do I bake bread?"]
    cfg = MelboConfig(num_vectors=args.vectors, steps=args.steps, radius=8.0, chat=False,
                      seed=0).resolved(lm.info.n_layers, lm.info.d_model)
    S, T, K = cfg.source_layer, cfg.target_layer, cfg.num_vectors
    batch = encode(lm.tokenizer, prompts, chat=False)
    mask = batch.attention_mask.bool()
    theta0 = torch.randn(K, lm.info.d_model, generator=torch.Generator().manual_seed(0))
    theta0 = theta0 / theta0.norm(dim=1, keepdim=True) * cfg.radius

    def run_ours() -> float:
        t0 = time.perf_counter()
        train_melbo(lm, prompts, cfg)
        return time.perf_counter() - t0

    def floor_step() -> float:
        cache = capture_prefix(m, blocks, batch, S, T, K)
        th = theta0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        h = (cache.source[None] + th[:, None, None]).reshape(-1, *cache.source.shape[1:])
        z = run_slice(list(blocks)[S:T], cache.calls, h)
        melbo_objective(z, cache.target, mask).sum().backward()
        return time.perf_counter() - t0

    def reference_run() -> float:
        with torch.no_grad():
            z0 = m(**forward_kwargs(batch), output_hidden_states=True).hidden_states[T]
        t0 = time.perf_counter()
        for k in range(K):
            th = theta0[k].clone().requires_grad_(True)
            opt = torch.optim.Adam([th], lr=1e-3 * cfg.radius)
            for _ in range(args.steps):
                with scoped_hooks() as hs:
                    hs.pre(blocks[S], lambda x, th=th: x + th)
                    z = m(**forward_kwargs(batch), output_hidden_states=True).hidden_states[T]
                loss = -melbo_objective(z, z0, mask).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    th.mul_(cfg.radius / th.norm())
        return time.perf_counter() - t0

    run_ours()  # warm-up
    ours, floors, refs = [], [], []
    for _ in range(args.repeats):
        ours.append(run_ours())
        with frozen(m), torch.enable_grad():
            floors.append(floor_step())
            refs.append(reference_run())
    ours_s, floor_s, ref_s = (statistics.median(x) for x in (ours, floors, refs))
    step_s = ours_s / args.steps
    res = {
        "benchmark": "bench_melbo", "model": args.model, "K": K, "S": S, "T": T,
        "steps": args.steps, "tokens": int(mask.sum()),
        "run_s": round(ours_s, 3), "step_s": round(step_s, 4), "floor_s": round(floor_s, 4),
        "reference_run_s": round(ref_s, 3),
        "step_vs_floor": round(step_s / floor_s, 3), "target_step_vs_floor_max": 1.3,
        "reference_vs_ours": round(ref_s / ours_s, 2), "target_speedup_min": 3.0,
        "loadavg": list(os.getloadavg()),
    }
    print(f"step (K={K}) {step_s:.3f}s vs floor fwd+bwd S..T {floor_s:.3f}s -> "
          f"{res['step_vs_floor']}x (target <= 1.3)")
    print(f"whole run {ours_s:.2f}s vs K sequential full-model runs {ref_s:.2f}s -> "
          f"{res['reference_vs_ours']}x faster (target >= 3)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
