"""What the server tests share: a tiny random llama, direction artifacts, and a live uvicorn
server on a free loopback port driven by the real openai client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import torch
import uvicorn
from conftest import D, make_model, make_tokenizer

from steerlab.directions.artifact import Direction
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info
from steerlab.serve.batcher import Call

N = 12  # new tokens per request


def tiny_lm() -> LoadedModel:
    m = make_model("llama")
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny-llama", ad))


def make_direction(
    lm: LoadedModel, layers: tuple[int, ...], seed: int, width: int = D
) -> Direction:
    g = torch.Generator().manual_seed(seed)
    meta = {"site": "resid_pre", "method": "mean_diff", "model": lm.info.to_dict()}
    return Direction(torch.randn(len(layers), width, generator=g), layers, meta)


class Live:
    def __init__(self, app: Any, url: str, api_key: str = "none") -> None:
        self.app, self.url = app, url
        self.client = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.app.state.batcher.stats)

    def chat(self, prompt: str, steerlab: dict | None = None, **kw: Any) -> Any:
        extra = {"steerlab": steerlab} if steerlab is not None else None
        return self.client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=kw.pop("max_tokens", N),
            temperature=kw.pop("temperature", 0),
            extra_body=extra,
            **kw,
        )

    def hold(self) -> threading.Event:
        """Block the worker until the returned event is set."""
        go, held = threading.Event(), threading.Event()

        def wait(_lm: Any) -> None:
            held.set()
            go.wait(30)

        self.app.state.batcher.submit(Call(wait, lambda *_: None))
        assert held.wait(10)
        return go

    def wait_waiting(self, n: int, at_most: bool = False) -> None:
        for _ in range(400):
            w = self.app.state.batcher.waiting
            if (w <= n) if at_most else (w >= n):
                return
            time.sleep(0.02)
        raise AssertionError(f"{n} requests never queued")


@contextlib.contextmanager
def serving(app: Any, api_key: str = "none") -> Iterator[Live]:
    """``app`` served by uvicorn in a thread on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield Live(app, f"http://127.0.0.1:{port}", api_key)
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()
