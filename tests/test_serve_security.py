"""``steerlab serve`` tried as an attacker would: access rules, limits and malformed input.

A live uvicorn server on a tiny random llama, requests made by hand with httpx (foreign Host
and Origin headers, wrong content types, oversize and chunked bodies, hostile artifacts). Every
refusal must be the contract's status with a one-line JSON error, and the server must go on
serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_kit import Live, make_direction, serving, tiny_lm  # noqa: E402

from steerlab.directions.artifact import Direction  # noqa: E402
from steerlab.errors import SteerlabError  # noqa: E402
from steerlab.io.safetensors_io import save_atomic  # noqa: E402
from steerlab.models.load import LoadedModel  # noqa: E402
from steerlab.serve.app import create_app  # noqa: E402
from steerlab.serve.security import Access  # noqa: E402

KEY = "s3cret-key"
MSGS = [{"role": "user", "content": "what a day"}]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_lm()


@pytest.fixture(scope="module")
def runs(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_direction(lm, (1, 2), 1).save(root / "steer" / "happy.safetensors")
    rep = root / "sweep-1"
    rep.mkdir()
    (rep / "report.html").write_text("<html><body>sweep</body></html>")
    return root


@pytest.fixture(scope="module")
def open_srv(lm: LoadedModel, runs: Path) -> Iterator[Live]:
    """No key; the default hosts; small caps so the tests can reach them."""
    app = create_app(
        lm,
        runs,
        model_name="tiny",
        access=Access(max_body=64 * 1024),
        upload_limit=4096,
        max_items=4,
        max_uploads=3,
        upload_total=3 * 4096,
    )
    with serving(app) as live:
        yield live


@pytest.fixture(scope="module")
def keyed(lm: LoadedModel, runs: Path) -> Iterator[Live]:
    access = Access(api_key=KEY, cors_origins=("https://app.example",))
    with serving(create_app(lm, runs, model_name="tiny", access=access), api_key=KEY) as live:
        yield live


def _err(resp: Any, code: int) -> str:
    assert resp.status_code == code, resp.text
    msg = resp.json()["error"]["message"]
    assert msg and "\n" not in msg
    return msg


def _chat(url: str, body: Any = None, **kw: Any) -> Any:
    body = {"messages": MSGS, "max_tokens": 2} if body is None else body
    return httpx.post(url + "/v1/chat/completions", json=body, **kw)


def test_foreign_host_and_dns_rebinding_are_refused(open_srv: Live) -> None:
    url = open_srv.url
    _err(httpx.get(url + "/v1/models", headers={"Host": "attacker.example"}), 421)
    _err(httpx.get(url + "/runs/sweep-1/report.html", headers={"Host": "evil.test:80"}), 421)
    _err(_chat(url, headers={"Host": "attacker.example"}), 421)
    assert httpx.get(url + "/v1/models", headers={"Host": "localhost:1"}).status_code == 200


def test_foreign_origin_and_wrong_content_type_are_refused(open_srv: Live, lm: LoadedModel) -> None:
    url = open_srv.url
    before = open_srv.stats["rows"]
    evil = {"Origin": "https://attacker.example"}
    body = json.dumps({"messages": MSGS, "max_tokens": 2})
    # a browser's "simple" cross-site POST: text/plain, no preflight
    r = httpx.post(
        url + "/v1/chat/completions", content=body, headers={**evil, "Content-Type": "text/plain"}
    )
    _err(r, 403)
    _err(
        httpx.post(
            url + "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}
        ),
        415,
    )
    _err(httpx.post(url + "/v1/chat/completions", content=body), 415)
    _err(_chat(url, headers=evil), 403)
    _err(httpx.get(url + "/runs", headers=evil), 403)
    # an upload from a foreign page replaces nothing
    d = make_direction(lm, (1,), 9)
    files = {"file": ("x.safetensors", _bytes(d))}
    _err(
        httpx.post(url + "/directions", files=files, data={"name": "steer/happy"}, headers=evil),
        403,
    )
    _err(httpx.post(url + "/directions", json={"name": "x"}), 415)
    assert open_srv.stats["rows"] == before  # nothing ran
    # the server's own page (same origin) is let through
    own = {"Origin": url}
    assert _chat(url, headers=own).status_code == 200


def test_api_key_is_required_except_for_the_page_and_health(keyed: Live) -> None:
    url = keyed.url
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/directions"),
        ("GET", "/runs"),
        ("GET", "/runs/sweep-1/report.html"),
    ]:
        _err(httpx.request(method, url + path), 401)
        _err(httpx.request(method, url + path, headers={"Authorization": "Bearer wrong"}), 401)
        assert httpx.request(method, url + path, headers=AUTH).status_code == 200
    _err(_chat(url), 401)
    _err(_chat(url, headers={"Authorization": KEY}), 401)  # not "Bearer KEY"
    assert _chat(url, headers=AUTH).status_code == 200
    assert httpx.get(url + "/").status_code == 200
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.get(url + "/static/app.js").status_code == 200
    # the openai client sends the key as vLLM's and llama.cpp's servers take it
    r = keyed.client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=2)
    assert r.choices[0].message.content is not None
    bad = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_cors_origins_listed_are_allowed_with_a_preflight(keyed: Live) -> None:
    url, origin = keyed.url, "https://app.example"
    pre = httpx.options(
        url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
    r = _chat(url, headers={**AUTH, "Origin": origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    _err(_chat(url, headers={**AUTH, "Origin": "https://other.example"}), 403)


def test_security_headers_and_sandboxed_reports(open_srv: Live) -> None:
    url = open_srv.url
    for path in ("/", "/v1/models", "/runs", "/nope", "/runs/sweep-1/report.html"):
        h = httpx.get(url + path).headers
        assert h["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors" in h["content-security-policy"] or path.startswith("/runs/")
    rep = httpx.get(url + "/runs/sweep-1/report.html").headers["content-security-policy"]
    assert rep.split(";")[0].strip() == "sandbox"
    page = httpx.get(url + "/").text + httpx.get(url + "/static/app.js").text
    assert 'id="run-frame"' in page and "sandbox" in page.split('id="run-frame"')[1][:200]


def test_body_cap_on_every_route_chunked_too(open_srv: Live) -> None:
    url, big = open_srv.url, b" " * (70 * 1024)
    json_h = {"Content-Type": "application/json"}
    for path in ("/v1/chat/completions", "/v1/completions", "/read"):
        _err(httpx.post(url + path, content=b'{"x": "' + big + b'"}', headers=json_h), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"prompt": "'
            for _ in range(80):
                yield b"a" * 1024
            yield b'"}'

        _err(httpx.post(url + path, content=chunks(), headers=json_h), 413)
    files = {"file": ("big.safetensors", b"0" * (2 * 2**20))}
    _err(httpx.post(url + "/directions", files=files), 413)
    assert _chat(url).status_code == 200


def test_prompt_over_the_context_is_400_with_both_numbers(open_srv: Live, lm: LoadedModel) -> None:
    ctx = lm.model.config.max_position_embeddings
    msg = _err(_chat(open_srv.url, {"messages": MSGS, "max_tokens": ctx}), 400)
    assert str(ctx) in msg and "prompt has" in msg
    body = {"prompt": "a " * 1000, "max_tokens": ctx - 500}
    msg = _err(httpx.post(open_srv.url + "/v1/completions", json=body), 400)
    assert str(ctx) in msg


def test_malformed_inputs_are_4xx_never_500(open_srv: Live) -> None:
    url = open_srv.url
    json_h = {"Content-Type": "application/json"}
    deep = b'{"messages": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    _err(httpx.post(url + "/v1/chat/completions", content=deep, headers=json_h), 400)
    huge = b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}"
    _err(httpx.post(url + "/v1/chat/completions", content=huge, headers=json_h), 400)

    def steer(kind: str, **item: Any) -> Any:
        return _chat(
            url, {"messages": MSGS, "steerlab": {kind: [{"direction": "steer/happy", **item}]}}
        )

    _err(steer("clamp", layer=1, value=1.0, layers=[{"a": 1}]), 400)
    _err(steer("steer", layer=1, coeff="1e3"), 400)
    _err(steer("steer", layer=1, coeff=1, positions=["x"]), 400)
    _err(_chat(url, {"messages": MSGS, "seed": 1e23}), 400)
    _err(_chat(url, {"messages": MSGS, "seed": 10**30}), 400)
    _err(_chat(url, {"messages": MSGS, "logprobs": "yes"}), 400)
    many = [{"direction": "steer/happy", "layer": 1, "coeff": 0.1}] * 5
    assert "at most 4" in _err(_chat(url, {"messages": MSGS, "steerlab": {"steer": many}}), 400)
    assert _chat(url).status_code == 200


def _bytes(d: Direction) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return d.save(Path(tmp) / "d.safetensors").read_bytes()


def _raw_artifact(
    tmp: Path, lm: LoadedModel, layers: torch.Tensor, site: str = "resid_pre"
) -> bytes:
    meta = {"kind": "steerlab.direction", "site": site, "model": lm.info.to_dict()}
    n = layers.numel()
    return save_atomic(
        {"vectors": torch.ones(n, lm.info.d_model), "layers": layers}, tmp / "a.safetensors", meta
    ).read_bytes()


def test_direction_load_refuses_bad_layers_and_sites(lm: LoadedModel, tmp_path: Path) -> None:
    bad = {
        "negative": torch.tensor([-1]),
        "2-D": torch.tensor([[1], [2]]),
        "duplicate": torch.tensor([1, 1]),
        "out of range": torch.tensor([lm.info.n_layers]),
        "float": torch.tensor([1.0]),
    }
    for why, layers in bad.items():
        path = tmp_path / f"{why}.safetensors"
        path.write_bytes(_raw_artifact(tmp_path, lm, layers))
        with pytest.raises(SteerlabError):
            Direction.load(path, model_info=lm.info)
    path = tmp_path / "site.safetensors"
    path.write_bytes(_raw_artifact(tmp_path, lm, torch.tensor([1]), site="bogus"))
    with pytest.raises(SteerlabError, match="site"):
        Direction.load(path)


def test_uploads_are_validated_namespaced_and_capped(
    open_srv: Live, lm: LoadedModel, tmp_path: Path
) -> None:
    url = open_srv.url + "/directions"
    for layers, site in (
        (torch.tensor([-1]), "resid_pre"),
        (torch.tensor([[1], [2]]), "resid_pre"),
        (torch.tensor([1]), "bogus"),
    ):
        files = {"file": ("bad.safetensors", _raw_artifact(tmp_path, lm, layers, site))}
        _err(httpx.post(url, files=files), 400)
    # an upload named like a file-backed direction neither replaces nor shadows it
    mine = make_direction(lm, (1,), 11)
    r = httpx.post(
        url, files={"file": ("m.safetensors", _bytes(mine))}, data={"name": "steer/happy"}
    )
    assert r.status_code == 200 and r.json()["name"] == "upload:steer/happy"
    happy = Direction.load(open_srv.app.state.directions.runs_dir / "steer/happy.safetensors")
    assert torch.equal(open_srv.app.state.directions.get("steer/happy").vectors, happy.vectors)
    again = httpx.post(
        url, files={"file": ("m.safetensors", _bytes(mine))}, data={"name": "steer/happy"}
    )
    _err(again, 409)
    names = httpx.get(url).json()["directions"]
    assert "steer/happy" in names and "upload:steer/happy" in names
    # the count cap (3 uploads here)
    for i in range(2):
        r = httpx.post(url, files={"file": ("m.safetensors", _bytes(mine))}, data={"name": f"n{i}"})
        assert r.status_code == 200, r.text
    _err(httpx.post(url, files={"file": ("m.safetensors", _bytes(mine))}, data={"name": "n9"}), 413)


def test_upload_bytes_in_all_are_capped(lm: LoadedModel, runs: Path) -> None:
    from steerlab.serve.directions import DirectionRegistry, UploadTooLarge

    data = _bytes(make_direction(lm, (1,), 12))
    reg = DirectionRegistry(runs, lm.info, total=len(data) * 3 // 2)
    assert reg.add_upload(data, "a", None) == "upload:a"
    with pytest.raises(UploadTooLarge, match="limit"):
        reg.add_upload(data, "b", None)
    assert reg.names()[0] == "upload:a"


def test_cli_flags_set_the_access_rules(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from steerlab.cli import app as cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    args = ["serve", "--model", str(tiny_dir), "--runs", str(tiny_dir), "-q"]
    flags = ["--api-key", KEY, "--allowed-hosts", "testserver,api.example", "--max-body-mb", "0.01"]
    res = CliRunner().invoke(cli, [*args, *flags, "--cors-origins", "https://app.example"])
    assert res.exit_code == 0, res.output
    with TestClient(seen["app"]) as client:  # Host: testserver, allowed by the flag
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=AUTH).status_code == 200
        assert client.get("/v1/models", headers={**AUTH, "Host": "api.example"}).status_code == 200
        r = client.get("/v1/models", headers={**AUTH, "Host": "other.example"})
        assert r.status_code == 421
        big = {"prompt": "a" * 20_000}
        assert client.post("/v1/completions", json=big, headers=AUTH).status_code == 413
        pre = client.options(
            "/v1/models",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
    # the key from the environment; a non-loopback bind without one is warned about
    monkeypatch.setenv("STEERLAB_API_KEY", "from-env")
    res = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0", "--allowed-hosts", "testserver"])
    assert res.exit_code == 0 and "warning" not in res.output
    with TestClient(seen["app"]) as client:
        ok = client.get("/v1/models", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200
    monkeypatch.delenv("STEERLAB_API_KEY")
    res = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0"])
    assert "--api-key" in res.output
