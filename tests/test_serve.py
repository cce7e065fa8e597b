"""``steerlab serve``: a live uvicorn server on a tiny model, driven by the real openai client.

Every completion is compared with :func:`steerlab.generation.generate` under the same
interventions (what ``steerlab generate`` runs); concurrent requests are checked to be decoded
as one batch and to give what each gives alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import D

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_kit import Live, N, make_direction, serving, tiny_lm  # noqa: E402

from steerlab.capture import read_activations  # noqa: E402
from steerlab.directions.artifact import Direction  # noqa: E402
from steerlab.engines.rows import greedy_rows  # noqa: E402
from steerlab.generation import generate  # noqa: E402
from steerlab.interventions import Ablate, Clamp, NoOp, Steer, apply  # noqa: E402
from steerlab.models.chat import encode  # noqa: E402
from steerlab.models.load import LoadedModel  # noqa: E402
from steerlab.serve.app import create_app  # noqa: E402
from steerlab.serve.batcher import Call  # noqa: E402

PROMPTS = ["tell me about your day", "what a day", "i am so happy today", "life is great"]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_lm()


@pytest.fixture(scope="module")
def runs(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_direction(lm, (1, 2), 1).save(root / "steer" / "happy.safetensors")
    make_direction(lm, (1,), 2).save(root / "abl" / "dir.safetensors")
    rep = root / "sweep-1"
    rep.mkdir()
    (rep / "report.html").write_text("<html>sweep</html>")
    (rep / ".steerlab.json").write_text(json.dumps({"kind": "sweep"}))
    (root / "secret.key").write_text("no")
    return root


@pytest.fixture(scope="module")
def live(lm: LoadedModel, runs: Path) -> Iterator[Live]:
    app = create_app(lm, runs, max_queue=12, upload_limit=4096, model_name="tiny")
    with serving(app) as server:
        yield server


def _ref(lm: LoadedModel, prompt: str, treatments: list | None = None, **kw: Any) -> str:
    kw.setdefault("max_new_tokens", N)
    with apply(lm, treatments) as m:
        return generate(m.model, m.tokenizer, [prompt], **kw)[0]  # type: ignore[index]


def _happy(lm: LoadedModel, runs: Path) -> Direction:
    return Direction.load(runs / "steer" / "happy.safetensors", model_info=lm.info)


def test_plain_and_streamed_equal_generate(live: Live, lm: LoadedModel) -> None:
    for p in PROMPTS[:2]:
        r = live.chat(p)
        assert r.choices[0].message.content == _ref(lm, p)
        assert r.object == "chat.completion" and r.usage.completion_tokens > 0
        chunks = list(live.chat(p, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == r.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
        assert all(c.object == "chat.completion.chunk" for c in chunks)
    with httpx.stream(
        "POST",
        live.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": PROMPTS[0]}], "stream": True},
    ) as resp:
        lines = [x for x in resp.iter_lines() if x]
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)


def test_completions_endpoint_is_raw_text(live: Live, lm: LoadedModel) -> None:
    r = live.client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=N)
    assert r.choices[0].text == _ref(lm, PROMPTS[2], chat=False)
    streamed = live.client.completions.create(
        model="tiny", prompt=PROMPTS[2], max_tokens=N, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text
    models = live.client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_steered_ablated_clamped_equal_generate(live: Live, lm: LoadedModel, runs: Path) -> None:
    happy = _happy(lm, runs)
    abl = Direction.load(runs / "abl" / "dir.safetensors", model_info=lm.info)
    p = PROMPTS[0]
    plain = live.chat(p).choices[0].message.content
    steer = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": 3.0}]}
    got = live.chat(p, steer).choices[0].message.content
    assert got == _ref(lm, p, [Steer(happy, layers=2, coeff=3.0)])
    assert got != plain
    got = live.chat(p, {"ablate": [{"direction": "abl/dir"}]}).choices[0].message.content
    assert got == _ref(lm, p, [Ablate(abl, layer=1)])
    clamp = {"clamp": [{"direction": "abl/dir", "layer": 1, "value": 6.0}]}
    got = live.chat(p, clamp).choices[0].message.content
    assert got == _ref(lm, p, [Clamp(abl, 6.0, layer=1)])
    both = {**steer, "ablate": [{"direction": "steer/happy", "layer": 1}]}
    got = live.chat(p, both).choices[0].message.content
    assert got == _ref(lm, p, [Steer(happy, layers=2, coeff=3.0), Ablate(happy, layer=1)])
    streamed = live.chat(p, both, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == got
    sampled = live.chat(p, steer, temperature=0.8, seed=5).choices[0].message.content
    ref = _ref(lm, p, [Steer(happy, layers=2, coeff=3.0)], temperature=0.8, seed=5)
    assert sampled == ref


def test_concurrent_clients_are_batched_and_equal_alone(
    live: Live, lm: LoadedModel, runs: Path
) -> None:
    happy = _happy(lm, runs)
    coeffs = [0.0, 1.0, -2.0, 3.0, 4.0, -5.0, 6.0, 8.0]
    prompts = [PROMPTS[i % 3] for i in range(8)]  # different lengths: left padding
    out: dict[int, str] = {}

    def ask(i: int) -> None:
        steer = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": coeffs[i]}]}
        out[i] = live.chat(prompts[i], steer).choices[0].message.content

    before = live.stats
    go = live.hold()  # the 8 requests queue up while the worker is busy
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    live.wait_waiting(8)
    go.set()
    for t in threads:
        t.join(60)
    after = live.stats
    assert after["batches"] - before["batches"] == 1 and after["largest"] >= 8
    for i in range(8):
        assert out[i] == _ref(lm, prompts[i], [Steer(happy, layers=2, coeff=coeffs[i])]), i
    assert len(set(out.values())) > 2


def test_bad_requests_get_one_line_4xx_and_the_server_lives(
    live: Live, lm: LoadedModel, tmp_path: Path
) -> None:
    url = live.url

    def check(resp: httpx.Response, code: int) -> str:
        assert resp.status_code == code, resp.text
        msg = resp.json()["error"]["message"]
        assert msg and "\n" not in msg
        return msg

    chat = url + "/v1/chat/completions"
    msgs = [{"role": "user", "content": PROMPTS[0]}]

    def steer(**over: Any) -> httpx.Response:
        item = {"direction": "steer/happy", "layer": 2, "coeff": 1.0, **over}
        return httpx.post(chat, json={"messages": msgs, "steerlab": {"steer": [item]}})

    check(steer(direction="nope"), 404)
    check(steer(direction="../runs/steer/happy"), 400)
    check(steer(direction="/etc/passwd"), 400)
    check(steer(layer=99), 400)
    check(steer(coeff="big"), 400)
    nan = json.dumps({"messages": msgs, "steerlab": {"steer": [{"direction": "steer/happy"}]}})
    nan = nan.replace('"steer/happy"', '"steer/happy", "layer": 2, "coeff": NaN')
    assert "finite" in check(httpx.post(chat, content=nan, headers=JSON), 400)
    check(httpx.post(chat, json={"messages": msgs, "steerlab": {"bogus": []}}), 400)
    check(httpx.post(chat, json={"messages": []}), 400)
    check(httpx.post(chat, content=b"{not json", headers=JSON), 400)
    check(httpx.post(chat, json={"messages": msgs, "n": 3}), 400)
    # uploads: wrong width, not safetensors, too large, a path as its name
    wide = make_direction(lm, (1,), 3, width=D + 1)
    wide.save(tmp_path / "wide.safetensors")
    up = url + "/directions"
    files = {"file": ("wide.safetensors", (tmp_path / "wide.safetensors").read_bytes())}
    assert "width" in check(httpx.post(up, files=files), 400)
    check(httpx.post(up, files={"file": ("x.pt", b"\x80\x04pickle")}), 400)
    check(httpx.post(up, files={"file": ("x.safetensors", b"garbage" * 10)}), 400)
    check(httpx.post(up, files={"file": ("big.safetensors", b"0" * 20000)}), 413)
    good = (tmp_path / "good.safetensors", make_direction(lm, (2,), 4))
    good[1].save(good[0])
    files = {"file": ("good.safetensors", good[0].read_bytes())}
    check(httpx.post(up, files=files, data={"name": "../escape"}), 400)
    check(httpx.post(up, files=files, data={"name": "/abs/path"}), 400)
    # report files: no escape, only report suffixes
    check(httpx.get(url + "/runs/%2e%2e/secret.key"), 400)
    check(httpx.get(url + "/runs/secret.key"), 400)
    check(httpx.get(url + "/runs/steer/happy.safetensors"), 400)
    check(httpx.get(url + "/runs/sweep-1/missing.html"), 404)
    # still serving
    assert live.chat(PROMPTS[1]).choices[0].message.content == _ref(lm, PROMPTS[1])


def test_upload_list_and_use(live: Live, lm: LoadedModel, tmp_path: Path) -> None:
    d = make_direction(lm, (2,), 7)
    d.save(tmp_path / "mine.safetensors")
    files = {"file": ("mine.safetensors", (tmp_path / "mine.safetensors").read_bytes())}
    r = httpx.post(live.url + "/directions", files=files, data={"name": "uploads/mine"})
    assert r.status_code == 200 and r.json() == {"name": "upload:uploads/mine"}
    names = httpx.get(live.url + "/directions").json()["directions"]
    assert {"upload:uploads/mine", "steer/happy", "abl/dir"} <= set(names)
    steer = {"steer": [{"direction": "upload:uploads/mine", "coeff": 6.0}]}  # its only layer
    got = live.chat(PROMPTS[0], steer).choices[0].message.content
    assert got == _ref(lm, PROMPTS[0], [Steer(d, layers=2, coeff=6.0)])


def test_read_projects_capture_per_token(live: Live, lm: LoadedModel, runs: Path) -> None:
    text = "i am so happy today"
    r = httpx.post(live.url + "/read", json={"text": text, "direction": "steer/happy", "layer": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    batch = encode(lm.tokenizer, [text], chat=False)
    t = batch.input_ids.shape[1]
    assert len(body["tokens"]) == len(body["projections"]) == t
    acts = read_activations(lm.model, lm.adapter, batch, [2], positions=tuple(range(-t, 0)))
    unit = _happy(lm, runs).unit(2)
    want = [float(acts[(2, p)][0] @ unit) for p in range(-t, 0)]
    assert body["projections"] == pytest.approx(want, abs=1e-5)


def test_runs_and_pages(live: Live) -> None:
    runs = httpx.get(live.url + "/runs").json()["runs"]
    assert [(r["path"], r["kind"]) for r in runs] == [("sweep-1", "sweep")]
    page = httpx.get(live.url + "/runs/sweep-1/report.html")
    assert page.status_code == 200 and "sweep" in page.text
    assert httpx.get(live.url + "/").status_code == 200
    assert httpx.get(live.url + "/health").json()["status"] == "ok"


def test_queue_limit_and_disconnect(live: Live) -> None:
    batcher = live.app.state.batcher
    go = live.hold()
    try:
        for _ in range(batcher.max_queue):  # fill the queue behind the held worker
            batcher.submit(Call(lambda _lm: None, lambda *_: None))
        with pytest.raises(openai.RateLimitError):
            live.chat(PROMPTS[0])
    finally:
        go.set()
    live.wait_waiting(0, at_most=True)
    # a client that leaves while queued is dropped; one that leaves mid-stream is stopped
    before = live.stats
    go = live.hold()
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                live.url + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "what a day"}]},
                timeout=0.5,
            )
        time.sleep(1.0)  # the server notices the disconnect within 0.5 s
    finally:
        go.set()
    assert live.chat(PROMPTS[0]).choices[0].message.content  # the next request runs
    assert live.stats["rows"] - before["rows"] == 1  # only that one: the other was dropped
    assert live.stats["dropped"] - before["dropped"] == 1
    # mid-stream: a long reply ("this this ..." at a strong coefficient never ends early)
    steer = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": 8.0}]}
    stream = live.chat(PROMPTS[0], steer, stream=True, max_tokens=2000)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    for _ in range(200):
        if live.stats["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.05)
    assert live.stats["cancelled"] - before["cancelled"] == 1


def test_on_step_streams_and_stops_without_changing_rows(lm: LoadedModel) -> None:
    rows = [NoOp()] * 3
    plain = greedy_rows(lm, PROMPTS[:3], rows, max_new_tokens=8)
    seen: list[list[int | None]] = []

    def step(first: int, tokens: list[int | None]) -> list[int]:
        seen.append(tokens)
        return [0] if len(seen) == 2 else []

    got = greedy_rows(lm, PROMPTS[:3], rows, max_new_tokens=8, on_step=step)
    assert got.texts[1:] == plain.texts[1:]
    assert got.lengths[0] == 2 and plain.texts[0].startswith(got.texts[0])
    assert all(t[0] is None for t in seen[2:])


def test_judge_scorer_talks_to_the_server(live: Live) -> None:
    from steerlab.behaviors.judge import JudgeScorer

    judge = JudgeScorer(live.url + "/v1", "happiness", max_tokens=4, workers=2)
    ratings = judge.ratings(["what a day"], ["life is great"])
    assert set(ratings[0]) == {"concept", "instruction", "fluency"} and judge.calls == 3


def test_cli_serve_warns_off_loopback(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from steerlab.cli import app as cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    args = ["serve", "--model", str(tiny_dir), "--port", "0", "--runs", str(tiny_dir), "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1" and "warning" not in res.output
    res = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0"])
    assert res.exit_code == 0 and "warning" in res.output and seen["host"] == "0.0.0.0"
    with TestClient(seen["app"], base_url="http://127.0.0.1") as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == str(tiny_dir)
