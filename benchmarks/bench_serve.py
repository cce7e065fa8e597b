"""`steerlab serve` throughput: requests/s and tokens/s with 1 and 8 concurrent clients.

smollm2-135m, greedy, 32 new tokens, 8 prompts, each request steered with its own coefficient
(a direction extracted at layer 12). Compared, on the same prompts:

* **serve, 1 client**: the 8 requests one after another through the openai client;
* **serve, 8 clients**: 8 threads at once (the server decodes them as one batch);
* **generate, batched (unsteered)**: one `steerlab.generate` call, batch 8, no steering: the
  best a single setting gets without the server;
* **generate, one setting at a time**: `steerlab.generate` per request under its own `Steer`:
  what different settings cost without per-row batching.

The server's replies are also checked against `generate` under the same steering.

Run: ``python benchmarks/bench_serve.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
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
)

LAYER = 12
COEFFS = [0.0, 2.0, 4.0, 6.0, -2.0, -4.0, 8.0, 3.0]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import openai
    import uvicorn

    from steerlab.directions import extract
    from steerlab.engines.rows import greedy_rows
    from steerlab.generation import generate
    from steerlab.interventions import NoOp, Steer, apply
    from steerlab.models.load import load_model
    from steerlab.serve.app import create_app

    max_new = 8 if args.quick else 32
    repeats = args.repeats or (1 if args.quick else 3)
    say = print
    set_threads(args.threads)
    mon = monitor_for(max_wait(args))
    info = machine()
    mon.wait_quiet("start", say)

    lm = load_model("smollm2-135m")
    happy, sad = contrast_pairs(64)
    direction = extract(lm, happy[:16], sad[:16], layers=LAYER)
    prompts = happy[32:36] + sad[32:36]
    runs = Path(tempfile.mkdtemp(prefix="steerlab-bench-serve-"))
    direction.save(runs / "bench" / "happy.safetensors")

    app = create_app(lm, runs, model_name="smollm2-135m")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)
    usage: dict[str, int] = {}

    def ask(i: int) -> str:
        steer = {"steer": [{"direction": "bench/happy", "layer": LAYER, "coeff": COEFFS[i]}]}
        r = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": prompts[i]}],
            max_tokens=max_new,
            temperature=0,
            extra_body={"steerlab": steer},
        )
        usage[str(i)] = r.usage.completion_tokens
        return r.choices[0].message.content or ""

    def serve_1() -> list[str]:
        return [ask(i) for i in range(len(prompts))]

    def serve_8() -> list[str]:
        out = [""] * len(prompts)

        def one(i: int) -> None:
            out[i] = ask(i)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def gen_batched() -> list[str]:
        return generate(lm.model, lm.tokenizer, prompts, max_new_tokens=max_new, batch_size=8)

    def gen_each() -> list[str]:
        out = []
        for i, p in enumerate(prompts):
            with apply(lm, Steer(direction, layers=LAYER, coeff=COEFFS[i])) as m:
                out += generate(m.model, m.tokenizer, [p], max_new_tokens=max_new)
        return out

    # untimed: correctness and token counts
    b0 = dict(app.state.batcher.stats)
    together = serve_8()
    batches = app.state.batcher.stats["batches"] - b0["batches"]
    alone = gen_each()
    identical = sum(a == b for a, b in zip(together, alone, strict=True))
    serve_tokens = sum(usage.values())
    plain_tokens = greedy_rows(lm, prompts, [NoOp()] * 8, max_new_tokens=max_new).tokens
    steered_rows = [
        Steer(c * direction.vector(LAYER), layers=LAYER) for c in COEFFS[: len(prompts)]
    ]
    each_tokens = greedy_rows(lm, prompts, steered_rows, max_new_tokens=max_new).tokens

    fns = {
        "serve, 1 client": serve_1,
        "serve, 8 clients": serve_8,
        "generate, batched (unsteered)": gen_batched,
        "generate, one setting at a time": gen_each,
    }
    tokens = {
        "serve, 1 client": serve_tokens,
        "serve, 8 clients": serve_tokens,
        "generate, batched (unsteered)": plain_tokens,
        "generate, one setting at a time": each_tokens,
    }
    say(f"timing {len(fns)} paths x {repeats} repeats: {len(prompts)} requests, "
        f"max_tokens={max_new}, greedy, steer layer {LAYER} ...")
    t0 = time.perf_counter()
    times = interleaved(fns, repeats=repeats, warmup=1, monitor=mon, say=say)
    wall = time.perf_counter() - t0
    server.should_exit = True
    thread.join(30)

    paths, rows = {}, []
    for k, ts in times.items():
        t = med(ts)
        paths[k] = {"median_s": r3(t), "runs_s": [r3(x) for x in ts], "spread": r3(spread(ts)),
                    "requests_per_s": r3(len(prompts) / t), "tokens": tokens[k],
                    "tokens_per_s": r3(tokens[k] / t)}
        rows.append([k, f"{t:.2f}", f"{len(prompts) / t:.2f}", tokens[k], f"{tokens[k] / t:.1f}"])
    print_table("steerlab serve", ["path", "median s", "req/s", "tokens", "tokens/s"], rows)
    s1, s8 = paths["serve, 1 client"], paths["serve, 8 clients"]
    result = {
        "benchmark": "serve",
        "model": "smollm2-135m",
        "requests": len(prompts),
        "max_tokens": max_new,
        "layer": LAYER,
        "coeffs": COEFFS[: len(prompts)],
        "paths": paths,
        "speedup_8_clients_vs_1": r3(s1["median_s"] / s8["median_s"]),
        "serve_8_vs_generate_each": r3(paths["generate, one setting at a time"]["median_s"]
                                       / s8["median_s"]),
        "serve_8_vs_generate_batched_unsteered": r3(
            paths["generate, batched (unsteered)"]["median_s"] / s8["median_s"]),
        "batches_for_8_clients": batches,
        "identical_to_generate_alone": f"{identical}/{len(prompts)}",
        "wall_s": r3(wall),
        "machine": info,
        "load": mon.summary(),
    }
    mon.warn_if_noisy()
    emit(result, args.json)


if __name__ == "__main__":
    main()
