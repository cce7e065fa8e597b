"""Continuous batching in ``steerlab serve``: requests join the running batch at the next decode
step and leave it when done or abandoned; sampled rows batch with their own seeds; a failing row
fails alone. Every reply is compared with the same request run alone through
:func:`steerlab.generation.generate` (what ``steerlab generate`` runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import D  # noqa: E402
from serve_kit import Live, N, make_direction, serving, tiny_lm  # noqa: E402

from steerlab.directions.artifact import Direction  # noqa: E402
from steerlab.generation import generate  # noqa: E402
from steerlab.interventions import Steer, apply  # noqa: E402
from steerlab.models.load import LoadedModel  # noqa: E402
from steerlab.serve.app import create_app  # noqa: E402
from steerlab.serve.batcher import Batcher, prompt_ids  # noqa: E402
from steerlab.serve.jobs import GenJob  # noqa: E402

PROMPTS = ["tell me about your day", "what a day", "i am so happy today", "life is great"]
ENDLESS = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": 8.0}]}  # never hits EOS


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_lm()


@pytest.fixture(scope="module")
def live(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("runs")
    make_direction(lm, (1, 2), 1).save(root / "steer" / "happy.safetensors")
    with serving(create_app(lm, root, model_name="tiny", max_tokens_limit=4000)) as server:
        yield server


def _happy(live: Live) -> Direction:
    return live.app.state.directions.get("steer/happy")


def _ref(lm: LoadedModel, prompt: str, treatments: list | None = None, **kw: Any) -> str:
    kw.setdefault("max_new_tokens", N)
    with apply(lm, treatments) as m:
        return generate(m.model, m.tokenizer, [prompt], **kw)[0]  # type: ignore[index]


def _wait(cond: Any, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_request_arriving_mid_batch_joins_at_the_next_step(live: Live, lm: LoadedModel) -> None:
    want = _ref(lm, PROMPTS[1])  # before the server's hooks are on the shared model
    before = live.stats
    stream = live.chat(PROMPTS[0], ENDLESS, stream=True, max_tokens=2000)
    chunks = iter(stream)
    for _ in range(5):  # the long row is decoding
        next(chunks)
    got = live.chat(PROMPTS[1], max_tokens=N).choices[0].message.content
    assert got == want
    # the decode steps a request lives through, counted from its submission to the server's
    # batcher (an HTTP round trip would add the steps taken while it travels)
    b = live.app.state.batcher
    seen: dict[str, int] = {}
    result: list[Any] = []
    ended = threading.Event()

    def emit(kind: str, payload: Any) -> None:
        seen.setdefault(kind, b.stats["steps"])
        if kind in ("done", "error"):
            result.append(payload)
            ended.set()

    start = b.stats["steps"]
    b.submit(GenJob(prompt=PROMPTS[1], emit=emit, max_tokens=N))
    assert ended.wait(30) and "done" in seen and result[0]["text"] == want, (seen, result)
    # it did not wait for the 2000-token row: it joined at the next step (its first token
    # comes from its prefill) and left after its own N tokens
    assert seen["delta"] - start <= 1 and seen["done"] - start <= N, (seen, start)
    steps = live.stats["steps"]
    for _ in range(200):  # the long row goes on after the short one left (chunks read so
        next(chunks)  # far may have been buffered before it left: read until a new step)
        if live.stats["steps"] > steps:
            break
    stream.close()
    assert live.stats["steps"] > steps and live.stats["largest"] >= 2
    _wait(lambda: live.stats["cancelled"] > before["cancelled"], "the stream's cancellation")


def test_an_abandoned_request_leaves_the_batch_within_a_step(live: Live) -> None:
    for stream in (False, True):
        before = live.stats
        body = {
            "messages": [{"role": "user", "content": PROMPTS[0]}],
            "max_tokens": 2000,
            "steerlab": ENDLESS,
            "stream": stream,
        }
        if stream:  # read a few chunks, then hang up
            with httpx.stream("POST", live.url + "/v1/chat/completions", json=body) as resp:
                for i, _ in enumerate(resp.iter_lines()):
                    if i == 3:
                        break
        else:  # the client gives up after 1 s
            with pytest.raises(httpx.TimeoutException):
                httpx.post(live.url + "/v1/chat/completions", json=body, timeout=1.0)
        _wait(lambda b=before: live.stats["cancelled"] > b["cancelled"], "cancellation")
        gone = live.stats["steps"]
        time.sleep(0.3)
        assert live.stats["steps"] == gone  # nothing decodes for it any more
        assert live.chat(PROMPTS[1], max_tokens=1).choices[0].message.content is not None
        assert live.stats["steps"] == gone  # one token: its prefill gives it, no step ran


def test_sampled_rows_batch_with_their_own_seeds(live: Live, lm: LoadedModel) -> None:
    happy = _happy(live)
    asks = [(PROMPTS[i % 4], 0.9 if i % 3 else 0.0, 10 + i, (i % 2) * 2.0) for i in range(6)]
    out: dict[int, str] = {}

    def ask(i: int) -> None:
        p, t, seed, c = asks[i]
        steer = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": c}]}
        out[i] = live.chat(p, steer, temperature=t, seed=seed).choices[0].message.content

    before = live.stats
    go = live.hold()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    live.wait_waiting(6)
    go.set()
    for t in threads:
        t.join(60)
    after = live.stats
    assert after["batches"] - before["batches"] == 1
    assert after["sampled"] - before["sampled"] == 4
    for i, (p, t, seed, c) in enumerate(asks):
        ref = _ref(lm, p, [Steer(happy, layers=2, coeff=c)], temperature=t, seed=seed)
        assert out[i] == ref, i


def test_sampled_stop_strings_are_checked_each_step(live: Live, lm: LoadedModel) -> None:
    full = _ref(lm, PROMPTS[2], temperature=1.0, seed=3, max_new_tokens=40)
    words = full.split()
    assert len(words) > 4
    stop = " " + words[2]
    r = live.chat(PROMPTS[2], temperature=1.0, seed=3, max_tokens=40, stop=[stop])
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and full.startswith(text) and stop not in text
    assert r.usage.completion_tokens < len(lm.tokenizer.encode(full, add_special_tokens=False))
    # a sampled stream can be abandoned too
    before = live.stats
    stream = live.chat(PROMPTS[0], ENDLESS, stream=True, max_tokens=2000, temperature=1.0)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    _wait(lambda: live.stats["cancelled"] > before["cancelled"], "the sampled stream's cancel")


def _run_jobs(lm: LoadedModel, jobs: list[dict[str, Any]]) -> tuple[Batcher, dict[int, list]]:
    """Submit ``jobs`` (GenJob keywords) to a fresh Batcher at once; every job's events."""
    events: dict[int, list[tuple[str, Any]]] = {i: [] for i in range(len(jobs))}
    done = threading.Event()

    def emit_for(i: int) -> Any:
        def emit(kind: str, payload: Any) -> None:
            events[i].append((kind, payload))
            if sum(bool(e) and e[-1][0] in ("done", "error") for e in events.values()) == len(jobs):
                done.set()

        return emit

    b = Batcher(lm, gather_s=0.2)
    try:
        for i, kw in enumerate(jobs):
            b.submit(GenJob(emit=emit_for(i), **{"max_tokens": N, **kw}))
        assert done.wait(60)
    finally:
        b.close()
    return b, events


def test_a_failing_row_fails_alone(lm: LoadedModel) -> None:
    good = make_direction(lm, (2,), 5)
    wide = Direction(torch.ones(1, D + 1), (2,), {"site": "resid_pre"})  # fails when hooked
    treatments = [Steer(good, layers=2, coeff=2.0), Steer(wide, layers=2), None, None]
    jobs = [{"prompt": p} for p in PROMPTS]
    for kw, tr in zip(jobs, treatments, strict=True):
        if tr is not None:
            kw["treatment"] = tr
    b, events = _run_jobs(lm, jobs)
    assert events[1][-1][0] == "error" and b.stats["failed"] == 1
    for i in (0, 2, 3):
        kind, res = events[i][-1]
        assert kind == "done"
        tr = [treatments[i]] if treatments[i] is not None else None
        assert res["text"] == _ref(lm, PROMPTS[i], tr)
        deltas = "".join(p for k, p in events[i] if k == "delta")
        assert deltas == res["text"]  # streamed once: nothing re-sent


def test_a_row_whose_decode_step_fails_fails_alone(lm: LoadedModel) -> None:
    # steered only on generated tokens, hard enough to overflow: its first token (the
    # prompt's forward) is fine, its first decode step gives NaN logits, which a sampled row
    # cannot draw from; the batch's other rows decode on
    big = Direction(torch.full((1, D), 10.0), (2,), {"site": "resid_pre"})
    blow = Steer(big, layers=2, coeff=1e38, positions="generated")  # inf in float32
    jobs = [{"prompt": p} for p in PROMPTS]
    jobs[1].update(treatment=blow, temperature=1.0, seed=3)
    b, events = _run_jobs(lm, jobs)
    kind, err = events[1][-1]
    assert kind == "error" and "probability" in str(err), events[1]
    assert b.stats["failed"] == 1 and b.stats["steps"] > 1
    for i in (0, 2, 3):
        assert events[i][-1][0] == "done" and events[i][-1][1]["text"] == _ref(lm, PROMPTS[i])


@pytest.mark.parametrize("fault", ["the row's", "the crowd's"])
def test_a_failed_decode_forward_is_undone_and_only_the_row_at_fault_fails(
    lm: LoadedModel, fault: str
) -> None:
    """A decode forward that raises half-way (in a late layer: earlier layers' caches have
    grown) is undone. Rows that fail alone fail; when none does (out of memory at this batch
    size), the row with the most context does. The others' replies are exactly as alone."""
    long = " ".join(PROMPTS * 3)
    n_long = len(prompt_ids(lm, GenJob(prompt=long, emit=lambda *_: None)))
    prompts = [PROMPTS[0], long, PROMPTS[3]]

    def hook(_m: Any, _args: Any, kw: dict[str, Any]) -> None:
        h = kw["hidden_states"] if "hidden_states" in kw else _args[0]
        if h.shape[1] != 1:  # a prefill
            return
        pos = kw["position_ids"]
        if fault == "the row's" and int(pos.max()) >= n_long + 3:  # the long row only
            raise RuntimeError("row fault")
        if fault == "the crowd's" and h.shape[0] >= 3:
            raise RuntimeError("out of memory")

    blocks = lm.model.model.layers
    handle = blocks[len(blocks) - 1].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        b, events = _run_jobs(lm, [{"prompt": p} for p in prompts])
    finally:
        handle.remove()
    kind, err = events[1][-1]
    assert kind == "error" and b.stats["failed"] == 1, events[1]
    assert str(err) == ("row fault" if fault == "the row's" else "out of memory")
    if fault == "the row's":  # it had streamed its first tokens before it failed
        assert sum(k == "delta" for k, _ in events[1]) >= 1, (events[1], n_long)
    for i in (0, 2):
        kind, res = events[i][-1]
        assert kind == "done" and res["text"] == _ref(lm, prompts[i])
        assert "".join(p for k, p in events[i] if k == "delta") == res["text"]


def test_logprobs_on_completions_and_chat(live: Live, lm: LoadedModel) -> None:
    r = live.client.completions.create(model="tiny", prompt=PROMPTS[3], max_tokens=4, logprobs=3)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.top_logprobs[0]) == 3
    ids = lm.tokenizer(PROMPTS[3], return_tensors="pt").input_ids
    with torch.no_grad():
        want = torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), -1)
    assert lp.token_logprobs[0] == pytest.approx(float(want.max()), abs=1e-4)
    assert max(lp.top_logprobs[0].values()) == pytest.approx(lp.token_logprobs[0], abs=1e-6)
    c = live.chat(PROMPTS[3], max_tokens=4, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) == c.usage.completion_tokens and len(content[0].top_logprobs) == 2
    assert live.chat(PROMPTS[3], max_tokens=2).choices[0].logprobs is None


def test_alone_and_batched_replies_are_the_same_under_load(live: Live, lm: LoadedModel) -> None:
    """A small crowd: mixed plain / steered / sampled requests arriving at random moments; each
    reply equals the request run alone (no lost or crossed replies)."""
    happy = _happy(live)
    rng = torch.Generator().manual_seed(0)
    asks = []
    for i in range(12):
        c = float(torch.randint(-3, 4, (1,), generator=rng))
        t = 0.8 if i % 4 == 3 else 0.0
        asks.append((PROMPTS[i % 4], c, t, i))
    out: dict[int, str] = {}

    def ask(i: int) -> None:
        time.sleep(0.05 * (i % 5))
        p, c, t, seed = asks[i]
        steer = {"steer": [{"direction": "steer/happy", "layer": 2, "coeff": c}]}
        out[i] = live.chat(p, steer, temperature=t, seed=seed).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (p, c, t, seed) in enumerate(asks):
        assert out[i] == _ref(lm, p, [Steer(happy, layers=2, coeff=c)], temperature=t, seed=seed)


def test_a_long_prompt_stops_padding_the_batch_once_it_leaves(lm: LoadedModel) -> None:
    """Rows join left-padded to the longest; when the long row leaves, its padding columns go,
    and the rows left decode exactly as before."""
    from steerlab.models.chat import encode
    from steerlab.serve.jobs import Reply
    from steerlab.serve.running import Running, Slot

    def slot(prompt: str, max_tokens: int) -> Slot:
        job = GenJob(prompt=prompt, emit=lambda *_: None, max_tokens=max_tokens)
        ids = encode(lm.tokenizer, [prompt], chat=None).input_ids[0].tolist()
        return Slot(job=job, reply=Reply(job, lm.tokenizer, len(ids)), ids=ids)

    run = Running(lm)
    short = slot(PROMPTS[1], N)
    run.join(*run.prefill([short])[:3])
    long = slot(" ".join(PROMPTS * 6), 2)
    run.join(*run.prefill([long])[:3])
    assert run.mask is not None and run.mask.shape[1] == len(long.ids)  # padded to the long one
    while run.slots:
        run.drop(run.step()[0])
        if long not in run.slots and run.slots:
            assert run.mask.shape[1] <= len(short.ids) + N  # its columns went with it
    assert short.reply.close()["text"] == _ref(lm, PROMPTS[1])
