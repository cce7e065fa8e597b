"""``steerlab serve --engine vllm``: the same API on stock vLLM's async engine.

A live server on smollm2-135m (float32) whose completions vLLM decodes, each request's
treatment a request group in vLLM's workers, is compared with a live server on the Hugging
Face engine: greedy replies to the same requests (plain, steered, ablated, both; sent one by
one and all at once) must match token for token for most prompts (numerical ties may differ,
as in tests/test_vllm.py), and the treatments must change them. One vLLM engine serves the
module (starting one takes minutes on a loaded CPU).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", exc_type=ImportError)
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_kit import Live, serving  # noqa: E402

from steerlab.directions.artifact import Direction  # noqa: E402
from steerlab.models.chat import encode  # noqa: E402
from steerlab.models.load import LoadedModel, load_model  # noqa: E402
from steerlab.serve.app import create_app  # noqa: E402
from steerlab.serve.vllm_batcher import VLLMBatcher  # noqa: E402

pytestmark = pytest.mark.vllm

PROMPTS = [
    "Describe a city bus.",
    "Tell me about breakfast.",
    "What is a river?",
    "How do bees make honey?",
]
N = 16
LAYER = 10
STEER = {"steer": [{"direction": "steer", "layer": LAYER, "coeff": 1.0}]}
ABLATE = {"ablate": [{"direction": "mean"}]}
TREATMENTS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "steer": STEER,
    # another strength of the same steer: the same request group, its own coefficient
    "back": {"steer": [{"direction": "steer", "layer": LAYER, "coeff": -1.5}]},
    "ablate": ABLATE,
    "both": {**STEER, **ABLATE},
}


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def runs(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directions that matter: the unit mean residual at LAYER (ablating a random direction
    changes nothing visible) and a random vector half the residual's norm."""
    b = encode(lm.tokenizer, PROMPTS)
    with torch.no_grad():
        hs = lm.model(
            input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True
        ).hidden_states[LAYER]
    h = hs[b.attention_mask.bool()]
    mean, norm = h.mean(0), float(h.norm(dim=-1).mean())
    v = torch.randn(lm.info.d_model, generator=torch.Generator().manual_seed(1))
    root = tmp_path_factory.mktemp("runs")
    meta = {"site": "resid_pre", "method": "mean_diff", "model": lm.info.to_dict()}
    Direction((mean / mean.norm())[None], (LAYER,), meta).save(root / "mean.safetensors")
    Direction((v / v.norm() * 0.5 * norm)[None], (LAYER,), meta).save(root / "steer.safetensors")
    return root


@pytest.fixture(scope="module")
def vllm_live(lm: LoadedModel, runs: Path) -> Iterator[Live]:
    backend = VLLMBatcher(lm, max_model_len=512, max_batch=8, max_queue=16)
    app = create_app(lm, runs, model_name="smol", backend=backend)
    with serving(app) as live:  # the app's shutdown closes the engine
        yield live


@pytest.fixture(scope="module")
def hf_live(lm: LoadedModel, runs: Path) -> Iterator[Live]:
    with serving(create_app(lm, runs, model_name="smol")) as live:
        yield live


def _reply(live: Live, prompt: str, treatment: dict[str, Any] | None, **kw: Any) -> Any:
    return live.chat(prompt, treatment, max_tokens=kw.pop("max_tokens", N), **kw).choices[0]


def _same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def _backend(live: Live) -> VLLMBatcher:
    return live.app.state.batcher  # type: ignore[no-any-return]


def _settled(live: Live) -> None:
    """Every request has left vLLM and every group's hooks the workers."""
    b = _backend(live)
    for _ in range(100):
        if b.unfinished() == 0 and b.hooks_installed() == [0]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{b.unfinished()} requests, {b.hooks_installed()} hooks left")


def test_greedy_replies_equal_the_hf_engine_one_by_one_and_all_at_once(
    vllm_live: Live, hf_live: Live
) -> None:
    cases = [(name, p) for name in TREATMENTS for p in PROMPTS]
    ref = {c: _reply(hf_live, c[1], TREATMENTS[c[0]]).message.content for c in cases}
    alone = {c: _reply(vllm_live, c[1], TREATMENTS[c[0]]).message.content for c in cases}
    with ThreadPoolExecutor(len(cases)) as pool:  # mixed treatments decoded together
        futs = {c: pool.submit(_reply, vllm_live, c[1], TREATMENTS[c[0]]) for c in cases}
        together = {c: f.result().message.content for c, f in futs.items()}
    for name in TREATMENTS:
        keys = [(name, p) for p in PROMPTS]
        want = [ref[k] for k in keys]
        assert _same([alone[k] for k in keys], want) >= 0.75, (name, alone, ref)
        assert _same([together[k] for k in keys], want) >= 0.75, (name, together, ref)
        if name != "plain":  # the treatment changed something
            assert _same([alone[k] for k in keys], [alone[("plain", p)] for p in PROMPTS]) < 1
    stats = vllm_live.stats
    assert stats["largest"] > 1 and stats["failed"] == 0
    assert stats["installs"] >= 2  # groups came and went
    _settled(vllm_live)


def test_streams_stop_strings_and_logprobs_read_as_on_the_hf_engine(
    vllm_live: Live, hf_live: Live
) -> None:
    prompt = PROMPTS[2]
    full = _reply(vllm_live, prompt, STEER).message.content
    chunks = vllm_live.chat(prompt, STEER, stream=True, max_tokens=N)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full
    stop = full.split()[3]  # a word in the middle of the reply
    got = _reply(vllm_live, prompt, STEER, stop=[stop])
    want = _reply(hf_live, prompt, STEER, stop=[stop])
    assert got.finish_reason == want.finish_reason == "stop"
    assert got.message.content == want.message.content == full[: full.index(stop)]
    got = _reply(vllm_live, prompt, ABLATE, logprobs=True, top_logprobs=2)
    want = _reply(hf_live, prompt, ABLATE, logprobs=True, top_logprobs=2)
    if got.message.content == want.message.content:  # a numerical tie would part them
        for a, b in zip(got.logprobs.content, want.logprobs.content, strict=True):
            assert a.token == b.token and abs(a.logprob - b.logprob) < 1e-3
            assert [t.token for t in a.top_logprobs] == [t.token for t in b.top_logprobs]
    _settled(vllm_live)


def test_a_stream_left_by_its_client_is_aborted_in_vllm(vllm_live: Live) -> None:
    before = vllm_live.stats["cancelled"]
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
        "steerlab": STEER,
    }
    with httpx.stream("POST", vllm_live.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():  # the role chunk comes before the request reaches vLLM
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                break  # a token came: the request runs in vLLM; then the client leaves
    for _ in range(300):
        if vllm_live.stats["cancelled"] > before:
            break
        time.sleep(0.1)
    assert vllm_live.stats["cancelled"] == before + 1, vllm_live.stats
    _settled(vllm_live)  # vLLM holds no request: it was aborted, not decoded to the end


def test_a_treatment_vllm_cannot_repeat_is_a_400(vllm_live: Live) -> None:
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Hi"}],
        "steerlab": {"steer": [{"direction": "steer", "layer": LAYER, "positions": "generated"}]},
    }
    r = httpx.post(vllm_live.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert "vLLM" in msg and "\n" not in msg
    assert json.loads(r.text)["error"]["code"] == 400
    health = httpx.get(vllm_live.url + "/health").json()
    assert health["status"] == "ok" and health["failed"] == 0
