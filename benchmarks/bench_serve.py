"""`steerlab serve` under load: time to first token mid-batch, throughput, and a crowd.

smollm2-135m, a direction extracted at layer 12, every request streamed over real HTTP
(httpx, server-sent events), all on this machine in one run:

* **mid-batch arrival**: a long steered request is decoding when a short one arrives; its time
  to first token (TTFT) is compared with one decode step plus its own prefill (the target) and
  with the rest of the long request (what it waited before continuous batching);
* **throughput at 1 / 8 / 32 clients**: that many clients at once, each steered with its own
  coefficient, aggregate tokens/s against one plain batched ``generate`` call on the same
  prompts (batch = clients, unsteered): the target is >= 0.9x at 32;
* **a crowd**: ``--clients`` (64) clients for ``--crowd-s`` seconds (120), each request plain,
  steered, sampled (seeded) or abandoned after two tokens; p50/p99 TTFT and tokens/s, and every
  finished reply checked against the same request run alone through ``generate`` (lost or
  crossed replies are counted; the target is zero).

With ``--engine vllm`` (run in ``.venv-vllm``): ``steerlab serve --engine vllm`` against stock
``vllm serve`` instead, tokens/s at 1 / 8 / 32 clients (:mod:`_serve_vllm`).

Run: ``python benchmarks/bench_serve.py [--quick] [--engine hf|vllm] [--json out.json]``
"""

from __future__ import annotations

import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    concurrently,
    contrast_pairs,
    emit,
    machine,
    parser,
    print_table,
    r3,
    set_threads,
)

LAYER = 12
MODEL = "smollm2-135m"


def _serve(lm: Any, runs: Path, backend: Any = None) -> tuple[str, Any, Any]:
    """(base url, app, stop()) of a live server on a free loopback port."""
    import uvicorn

    from steerlab.serve.app import create_app

    app = create_app(lm, runs, model_name=MODEL, max_queue=256, max_batch=64, backend=backend)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)

    return f"http://127.0.0.1:{sock.getsockname()[1]}", app, stop


def _body(
    prompt: str, max_tokens: int, coeff: float | None, temp: float = 0.0, seed: int = 0
) -> dict:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": temp,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if coeff is not None:
        body["steerlab"] = {"steer": [{"direction": "bench/happy", "layer": LAYER, "coeff": coeff}]}
    return body


def _stream(url: str, body: dict, hang_up_after: int | None = None) -> dict[str, Any]:
    """One streamed request: TTFT, text, completion tokens, wall time (None text: hung up)."""
    import httpx

    t0 = time.perf_counter()
    ttft, parts, tokens = None, [], 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=900) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            msg = json.loads(line[6:])
            if "error" in msg:
                raise RuntimeError(msg["error"]["message"])
            if msg.get("usage"):
                tokens = msg["usage"]["completion_tokens"]
            for c in msg.get("choices", []):
                if c["delta"].get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    parts.append(c["delta"]["content"])
            if hang_up_after is not None and len(parts) >= hang_up_after:
                return {"ttft": ttft, "text": None, "tokens": 0, "wall": time.perf_counter() - t0}
    return {
        "ttft": ttft,
        "text": "".join(parts),
        "tokens": tokens,
        "wall": time.perf_counter() - t0,
    }


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def mid_batch(url: str, app: Any, prompts: list[str], long_tokens: int) -> dict[str, Any]:
    """TTFT of a short request sent while a long one decodes, against its parts."""
    short = _body(prompts[1], 8, None)
    alone = [_stream(url, short)["ttft"] for _ in range(3)]  # prefill (+ HTTP), nothing running
    out: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: out.update(long=_stream(url, _body(prompts[0], long_tokens, 6.0)))
    )
    s0 = app.state.batcher.stats["steps"]
    runner.start()
    while app.state.batcher.stats["steps"] - s0 < 8:  # the long request is decoding
        time.sleep(0.005)
    t_steps, t0 = app.state.batcher.stats["steps"], time.perf_counter()
    got = _stream(url, short)
    short_wall = time.perf_counter() - t0  # it left while the long one went on
    runner.join()
    long = out["long"]
    step = long["wall"] / max(1, long["tokens"])  # one decode step of the batch, on average
    rest = (long_tokens - (t_steps - s0)) * step
    return {
        "long_tokens": long["tokens"],
        "ttft_mid_batch_s": r3(got["ttft"]),
        "prefill_alone_ttft_s": r3(statistics.median(alone)),
        "decode_step_s": r3(step),
        "target_s": r3(statistics.median(alone) + step),
        "rest_of_batch_s": r3(rest),
        "short_wall_s": r3(short_wall),
    }


def throughput(url: str, lm: Any, prompts: list[str], clients: int, max_new: int) -> dict[str, Any]:
    """Aggregate tokens/s of ``clients`` steered requests at once vs plain batched generate."""
    from steerlab.generation import generate

    asks = [(prompts[i % len(prompts)], (i % 9 - 4) * 1.0) for i in range(clients)]
    res: list[dict[str, Any]] = [{}] * clients

    def one(i: int) -> None:
        res[i] = _stream(url, _body(asks[i][0], max_new, asks[i][1]))

    wall = concurrently(one, clients)
    served = sum(r["tokens"] for r in res)
    ps = [p for p, _ in asks]
    t0 = time.perf_counter()
    texts = generate(lm.model, lm.tokenizer, ps, max_new_tokens=max_new, batch_size=clients)
    gen_wall = time.perf_counter() - t0
    gen_tokens = sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    serve_tps, gen_tps = served / wall, gen_tokens / gen_wall
    return {
        "clients": clients,
        "serve_tokens_per_s": r3(serve_tps),
        "generate_batched_tokens_per_s": r3(gen_tps),
        "ratio": r3(serve_tps / gen_tps),
        "ttft_p50_s": r3(_pct([r["ttft"] for r in res if r["ttft"]], 0.5) or 0),
    }


def crowd(
    url: str,
    lm: Any,
    direction: Any,
    prompts: list[str],
    clients: int,
    seconds: float,
    max_new: int,
) -> dict[str, Any]:
    """``clients`` clients for ``seconds``: mixed requests, then every reply checked alone."""
    kinds = ["plain", "steered", "sampled", "abandoned"]
    done: list[tuple[tuple, dict[str, Any]]] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client(k: int) -> None:
        rng = random.Random(k)
        while time.perf_counter() < end:
            kind, p = rng.choice(kinds), rng.randrange(len(prompts))
            coeff = rng.choice([-3.0, 3.0, 6.0]) if kind == "steered" else None
            temp, seed = (0.9, rng.randrange(4)) if kind == "sampled" else (0.0, 0)
            key = (kind, p, coeff, temp, seed)
            with lock:
                sent[0] += 1
            try:
                r = _stream(
                    url,
                    _body(prompts[p], max_new, coeff, temp, seed),
                    hang_up_after=2 if kind == "abandoned" else None,
                )
            except Exception as e:  # counted as lost
                with lock:
                    errors.append(str(e)[:200])
                continue
            with lock:
                done.append((key, r))

    wall = concurrently(client, clients)
    crossed = _crossed(lm, direction, prompts, done, max_new)
    ttfts = [r["ttft"] for _, r in done if r["ttft"] is not None]
    tokens = sum(r["tokens"] for _, r in done)
    return {
        "clients": clients,
        "seconds": r3(wall),
        "requests": sent[0],
        "finished": sum(k[0] != "abandoned" for k, _ in done),
        "abandoned": sum(k[0] == "abandoned" for k, _ in done),
        "lost": len(errors),
        "crossed": crossed,
        "errors": errors[:3],
        "ttft_p50_s": r3(_pct(ttfts, 0.5) or 0),
        "ttft_p99_s": r3(_pct(ttfts, 0.99) or 0),
        "tokens_per_s": r3(tokens / wall),
    }


def _crossed(lm: Any, direction: Any, prompts: list[str], done: list, max_new: int) -> int:
    """Finished replies that differ from the same request run alone through ``generate``."""
    from steerlab.generation import generate
    from steerlab.interventions import Steer, apply

    refs: dict[tuple, str] = {}
    crossed = 0
    for key, r in done:
        kind, p, coeff, temp, seed = key
        if kind == "abandoned":
            continue
        if key not in refs:
            tr = [Steer(direction, layers=LAYER, coeff=coeff)] if coeff is not None else None
            with apply(lm, tr) as m:
                refs[key] = generate(
                    m.model,
                    m.tokenizer,
                    [prompts[p]],
                    max_new_tokens=max_new,
                    temperature=temp,
                    seed=seed,
                )[0]
        crossed += r["text"] != refs[key]
    return crossed


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64, help="crowd size")
    p.add_argument("--crowd-s", type=float, default=120.0, help="crowd duration in seconds")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="the server's engine")
    p.add_argument("--rounds", type=int, default=3, help="--engine vllm: interleaved rounds")
    args = p.parse_args()
    from steerlab.directions import extract
    from steerlab.models.load import load_model

    set_threads(args.threads)
    max_new = 8 if args.quick else 32
    crowd_s = min(args.crowd_s, 20.0) if args.quick else args.crowd_s
    lm = load_model(MODEL)
    happy, sad = contrast_pairs(64)
    direction = extract(lm, happy[:16], sad[:16], layers=LAYER)
    prompts = happy[32:40] + sad[32:40]
    runs = Path(tempfile.mkdtemp(prefix="steerlab-bench-serve-"))
    direction.save(runs / "bench" / "happy.safetensors")
    if args.engine == "vllm":
        _vllm(lm, runs, prompts, max_new, args.quick, args.json, args.rounds)
        return
    url, app, stop = _serve(lm, runs)
    try:
        _stream(url, _body(prompts[0], 2, 1.0))  # warm up
        mid = mid_batch(url, app, prompts, 64 if args.quick else 256)
        tput = [throughput(url, lm, prompts, k, max_new) for k in (1, 8, 32)]
        crowd_res = crowd(url, lm, direction, prompts, args.clients, crowd_s, max_new)
    finally:
        stop()
    print_table("mid-batch arrival", list(mid), [list(mid.values())])
    print_table("throughput (tokens/s)", list(tput[0]), [list(t.values()) for t in tput])
    shown = {k: v for k, v in crowd_res.items() if k != "errors"}
    print_table("crowd", list(shown), [list(shown.values())])
    emit(
        {
            "benchmark": "serve",
            "model": MODEL,
            "max_tokens": max_new,
            "layer": LAYER,
            "mid_batch": mid,
            "throughput": tput,
            "ratio_at_32": tput[-1]["ratio"],
            "crowd": crowd_res,
            "batcher": dict(app.state.batcher.stats),
            "machine": machine(),
        },
        args.json,
    )


def _vllm(
    lm: Any, runs: Path, prompts: list[str], max_new: int, quick: bool, out: Any, rounds: int
) -> None:
    from _serve_vllm import compare

    counts = [1, 8] if quick else [1, 8, 32]
    source = str(lm.extra["source"])
    res = compare(MODEL, source, runs, prompts, _stream, _body, counts, max_new, rounds)
    shown = [{k: v for k, v in r.items() if k != "rounds"} for r in res["rows"]]
    print_table("steerlab serve --engine vllm vs stock vllm serve (tokens/s)", list(shown[0]),
                [list(r.values()) for r in shown])  # fmt: skip
    emit(
        {"benchmark": "serve_vllm", "model": MODEL, "max_tokens": max_new, "layer": LAYER,
         **res, "target": 0.85, "machine": machine()},
        out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
