"""The web playground of ``steerlab serve`` in a real browser.

Headless Debian chromium (``/usr/bin/chromium``), driven by Playwright's Python package, against
the real server (uvicorn in a thread on a free loopback port) serving a tiny random llama and a
saved direction artifact. The tests click what a user clicks: move the coefficient slider, type
a prompt, press Send, and read both streamed replies; colour tokens in the read view; open a
past run's report; upload a direction; see the server's error; and check that the page fetches
nothing from outside the server.

Skipped, with the reason, where playwright or chromium is missing (``.ci/run`` installs both).
Never downloads a browser. Screenshots go to each test's ``tmp_path`` and to
``runs/screenshots/`` at the repository root (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import D, make_model, make_tokenizer

from steerlab.directions.artifact import Direction
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("STEERLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless chromium with nothing of its own on the network (this machine's network is closed:
# without these it tries Google's hosts at every start).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
SHOTS = Path(__file__).resolve().parents[1] / "runs" / "screenshots"
TIMEOUT_MS = 60_000  # generous: CI machines are small and shared
REPORT_MARK = "fake refusal report for the playground test"


def _need_browser() -> Any:
    """playwright's sync API, or a skip saying what is missing."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    return sync_api


# --- the server ------------------------------------------------------------------------------


def _lm() -> LoadedModel:
    m = make_model("llama")
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny-llama", ad))


def _direction(lm: LoadedModel, seed: int) -> Direction:
    g = torch.Generator().manual_seed(seed)
    meta = {"site": "resid_pre", "method": "mean_diff", "model": lm.info.to_dict()}
    return Direction(torch.randn(1, D, generator=g), (2,), meta)


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return _lm()


@pytest.fixture(scope="module")
def server(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on 127.0.0.1 (port chosen by the OS), with a direction and a past run."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from steerlab.serve.app import create_app

    runs = tmp_path_factory.mktemp("runs")
    _direction(lm, 1).save(runs / "dirs" / "test.safetensors")
    run = runs / "refusal-demo"
    run.mkdir()
    (run / "report.html").write_text(
        f"<!doctype html><title>report</title><h1>Refusal report</h1><p>{REPORT_MARK}</p>"
    )
    (run / "report.json").write_text('{"kind": "refusal"}')

    app = create_app(lm, runs)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-playground", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh page on the playground that records its requests and script errors."""

    def __init__(self, browser: Any, url: str, out: Path) -> None:
        self.url = url
        self.out = out
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.js_errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.js_errors.append(str(e)))

    def open(self) -> Any:
        self.page.goto(self.url + "/")
        self.page.wait_for_selector("body[data-ready='true']")
        return self.page

    def shot(self, name: str) -> Path:
        path = self.out / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def pg(browser: Any, server: str, tmp_path: Path) -> Iterator[Page]:
    p = Page(browser, server, tmp_path)
    try:
        yield p
        assert p.js_errors == [], f"script errors on the page: {p.js_errors}"
    finally:
        p.close()


def _set_range(page: Any, selector: str, key: str, presses: int = 1) -> None:
    """Move a slider as a user does from the keyboard (focus it, press keys)."""
    page.focus(selector)
    for _ in range(presses):
        page.keyboard.press(key)


def _send_and_wait(page: Any) -> tuple[str, str]:
    from playwright.sync_api import expect

    page.click("#send")
    # expect(), not wait_for_function: the page's CSP forbids the eval the latter needs
    expect(page.locator("#chat-status")).to_have_text(re.compile(r"^done"), timeout=TIMEOUT_MS)
    expect(page.locator("#send")).to_be_enabled(timeout=TIMEOUT_MS)
    return page.inner_text("#reply-plain"), page.inner_text("#reply-steered")


# --- tests -----------------------------------------------------------------------------------


def test_page_loads_models_and_directions(pg: Page) -> None:
    page = pg.open()
    assert page.title() == "steerlab playground"
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == [
        "tiny-llama"
    ]
    assert "dirs/test" in page.eval_on_selector_all(
        "#direction option", "os => os.map(o => o.value)"
    )
    # Every control has an accessible name.
    for sel in ["#model", "#direction", "#layer", "#coeff", "#prompt", "#clamp-value"]:
        label = page.evaluate(
            "s => { const e = document.querySelector(s);"
            " return e.labels && e.labels.length ? e.labels[0].textContent.trim()"
            " : e.getAttribute('aria-label'); }",
            sel,
        )
        assert label, f"{sel} has no label"
    assert page.is_hidden("#error")


def test_compare_streams_unsteered_and_steered(pg: Page) -> None:
    page = pg.open()
    page.select_option("#direction", "dirs/test")
    # The layer slider spans the model's blocks (n_layers from /v1/models); move it to the
    # direction's layer, 2.
    assert page.get_attribute("#layer", "max") == "3"
    _set_range(page, "#layer", "Home")
    _set_range(page, "#layer", "ArrowRight", presses=2)
    assert page.input_value("#layer") == "2" and page.inner_text("#layer-out") == "2"
    # Coefficient slider to its far right: a big push along the direction.
    _set_range(page, "#coeff", "End")
    assert page.input_value("#coeff") == "32"
    assert page.inner_text("#coeff-out") == "32"
    page.fill("#prompt", "tell me about your day")
    page.fill("#max-tokens", "12")
    plain, steered = _send_and_wait(page)
    assert plain.strip() and steered.strip(), (plain, steered)
    assert steered != plain, "a coefficient of 32 left the greedy reply unchanged"
    assert "+32" in page.inner_text("#steered-tag")
    for side in ("plain", "steered"):  # the footers count the streamed tokens
        assert page.inner_text(f"#meta-{side}") == "12 tokens · stopped at max tokens"
    assert page.is_hidden("#error")
    pg.shot("playground_compare")

    # Coefficient 0: the steered request is the unsteered one, the replies agree.
    _set_range(page, "#coeff", "ArrowLeft", presses=64)  # 32 -> 0 in steps of 0.5
    assert page.inner_text("#coeff-out") == "0"
    plain0, steered0 = _send_and_wait(page)
    assert plain0 == plain and steered0 == plain0


def test_ablate_and_clamp_reach_the_server(pg: Page) -> None:
    page = pg.open()
    page.select_option("#direction", "dirs/test")
    page.uncheck("#do-steer")
    page.check("#do-ablate")
    page.check("#do-clamp")
    assert page.is_enabled("#clamp-value")
    page.fill("#clamp-value", "40")
    spec = page.inner_text("#spec")
    assert '"ablate"' in spec and '"clamp"' in spec and '"steer"' not in spec
    page.fill("#prompt", "what a day")
    page.fill("#max-tokens", "8")
    plain, steered = _send_and_wait(page)
    assert plain.strip() and steered.strip()
    assert steered != plain  # the projection pinned at 40 at every layer changes the reply
    assert page.is_hidden("#error"), page.inner_text("#error")


def test_read_view_colours_tokens(pg: Page) -> None:
    page = pg.open()
    page.select_option("#direction", "dirs/test")
    page.click("#tab-read")
    assert page.is_visible("#view-read") and page.is_hidden("#view-compare")
    page.fill("#read-text", "i am so happy today what a joyful day")
    page.click("#read-btn")
    page.wait_for_selector("#read-tokens .tok")
    toks = page.eval_on_selector_all(
        "#read-tokens .tok",
        "ts => ts.map(t => ({text: t.textContent, bg: getComputedStyle(t).backgroundColor,"
        " title: t.title, v: Number(t.dataset.projection)}))",
    )
    assert len(toks) >= 9  # nine words, maybe a BOS or chat tokens around them
    assert {"happy", "joyful"} <= {t["text"].strip() for t in toks}
    colours = {t["bg"] for t in toks}
    assert len(colours) > 1 and colours != {"rgb(255, 255, 255)"}
    for t in toks:
        assert f"{t['v']:.3f}" in t["title"]  # value in the tooltip
    # The largest |projection| gets the full end colour of its sign.
    top = max(toks, key=lambda t: abs(t["v"]))
    assert top["bg"] == ("rgb(178, 24, 43)" if top["v"] > 0 else "rgb(33, 102, 172)")
    assert page.is_visible("#legend")
    pg.shot("playground_read")


def test_runs_browser_opens_a_report(pg: Page) -> None:
    page = pg.open()
    page.click("#tab-runs")
    item = page.locator("#runs-list li", has_text="refusal-demo")
    item.wait_for()
    item.get_by_role("button", name="Open report").click()
    frame = page.frame_locator("#run-frame")
    assert REPORT_MARK in frame.locator("body").inner_text()
    href = item.get_by_role("link").get_attribute("href")
    assert href.startswith("/runs/") and href.endswith("report.html")
    pg.shot("playground_runs")


def test_upload_direction_and_use_it(pg: Page, lm: LoadedModel, tmp_path: Path) -> None:
    path = _direction(lm, 7).save(tmp_path / "uploaded.safetensors")
    page = pg.open()
    page.click("details.upload > summary")
    page.set_input_files("#upload-file", str(path))
    page.fill("#upload-name", "mine")
    page.click("#upload-btn")
    from playwright.sync_api import expect

    expect(page.locator("#direction")).to_have_value("upload:mine", timeout=TIMEOUT_MS)
    assert page.is_hidden("#error")
    page.click("#tab-read")
    page.click("#read-btn")
    page.wait_for_selector("#read-tokens .tok")


def test_server_errors_are_shown(pg: Page, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    page = pg.open()
    page.click("details.upload > summary")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-btn")
    page.wait_for_selector("#error:not([hidden])")
    msg = page.inner_text("#error-text")
    assert msg.startswith("Upload failed:") and "safetensors" in msg
    pg.shot("playground_error")
    page.click("#error-close")
    assert page.is_hidden("#error")


def test_a_refused_request_shows_the_servers_message(pg: Page) -> None:
    page = pg.open()
    page.select_option("#direction", "dirs/test")
    _set_range(page, "#layer", "End")  # layer 3: the direction has a row for layer 2 only
    page.fill("#prompt", "what a day")
    page.fill("#max-tokens", "4")
    plain, steered = _send_and_wait(page)
    assert plain.strip()  # the unsteered reply is unaffected
    assert "layer 3 is not in this direction" in steered
    assert "steered: layer 3 is not in this direction" in page.inner_text("#error-text")


def test_no_request_leaves_the_server(pg: Page) -> None:
    """Every request of a full tour (load, compare, read, runs, a report) goes to the server."""
    page = pg.open()
    page.select_option("#direction", "dirs/test")
    page.fill("#prompt", "tell me about the river")
    page.fill("#max-tokens", "6")
    _send_and_wait(page)
    page.click("#tab-read")
    page.click("#read-btn")
    page.wait_for_selector("#read-tokens .tok")
    page.click("#tab-runs")
    page.locator("#runs-list li button").first.click()
    page.frame_locator("#run-frame").locator("body").wait_for()
    page.wait_for_load_state("networkidle")
    assert len(pg.requests) >= 8, pg.requests
    outside = [u for u in pg.requests if not (u.startswith(pg.url + "/") or u.startswith("data:"))]
    assert outside == [], f"requests outside the server: {outside}"
