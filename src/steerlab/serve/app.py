"""The HTTP application: OpenAI-compatible completions with steering, directions, readings.

Routes: ``POST /v1/chat/completions`` and ``/v1/completions`` (OpenAI's bodies plus a
``steerlab`` field, streamed with ``stream: true``), ``GET /v1/models``, ``GET|POST
/directions``, ``POST /read``, ``GET /runs`` and ``/runs/{path}`` (reports, read-only),
``GET /health`` and the playground at ``/``. Errors are one line:
``{"error": {"message": ..., "type": ..., "code": status}}``.

Example::

    app = create_app(steerlab.load_model("smollm2-135m"), "runs")
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import SteerlabError, first_line
from ..models.load import LoadedModel
from .batcher import Batcher, Call, GenJob
from .directions import (
    DEFAULT_UPLOAD_LIMIT,
    DirectionRegistry,
    UploadTooLarge,
    safe_path,
)
from .protocol import BadRequest, NotFound, chat_prompt, options, treatment
from .responses import Pipe, error_response, status_of, stream_events, usage, wait_result
from .views import projections, run_list

__all__ = ["REPORT_SUFFIXES", "create_app"]

STATIC = Path(__file__).parent / "static"
REPORT_SUFFIXES = {".html", ".json", ".png", ".md", ".txt"}
_PLACEHOLDER = (
    "<!doctype html><title>steerlab serve</title><h1>steerlab serve</h1>"
    "<p>The playground page is not installed. The API: <code>POST /v1/chat/completions</code>, "
    "<code>GET /directions</code>, <code>POST /read</code>, <code>GET /runs</code>.</p>"
)


@dataclass(frozen=True)
class _Server:
    """What the routes share: the model, its directions, the batcher and the limits."""

    lm: LoadedModel
    runs: Path
    reg: DirectionRegistry
    batcher: Batcher
    name: str
    upload_limit: int
    default_max_tokens: int
    max_tokens_limit: int


def create_app(
    lm: LoadedModel,
    runs_dir: str | os.PathLike[str] = "runs",
    *,
    max_queue: int = 64,
    max_batch: int = 32,
    batch_wait_s: float = 0.01,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    default_max_tokens: int = 128,
    max_tokens_limit: int = 2048,
    model_name: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``lm``; its batcher is ``app.state.batcher`` (stop it with
    ``app.state.batcher.close()``, which the app's shutdown does).

    Args:
        runs_dir: directions (``*.safetensors`` artifacts, by relative name) and reports.
        max_queue: requests waiting at once before 429.
        max_batch: most requests decoded together.
        batch_wait_s: how long an idle worker waits after a request for others to batch with.
        upload_limit: largest direction upload in bytes (413 beyond).
    """
    runs = Path(runs_dir)
    srv = _Server(
        lm=lm,
        runs=runs,
        reg=DirectionRegistry(runs, lm.info, upload_limit=upload_limit),
        batcher=Batcher(lm, max_queue=max_queue, max_batch=max_batch, gather_s=batch_wait_s),
        name=model_name or lm.info.model_id,
        upload_limit=upload_limit,
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        srv.batcher.close()

    app = FastAPI(title="steerlab serve", lifespan=lifespan)
    app.state.batcher = srv.batcher
    app.state.directions = srv.reg
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _error_handlers(app)
    # registration order is matching order: keep the fixed paths before /runs/{path}
    _info_routes(app, srv)
    _completion_routes(app, srv)
    _direction_routes(app, srv)
    _run_routes(app, runs)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as the one-line JSON error body."""

    @app.exception_handler(Exception)
    async def _any(_r: Request, e: Exception) -> Any:
        return error_response(status_of(e), first_line(e))

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, e: HTTPException) -> Any:
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> Any:
        errs = e.errors()
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errs[:3])
        return error_response(400, msg or "invalid request")

    app.add_exception_handler(SteerlabError, _any)  # handled here, not re-raised as a 500


async def _body_of(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _info_routes(app: FastAPI, srv: _Server) -> None:
    """The playground page, ``/health`` and ``/v1/models``."""

    @app.get("/", response_class=HTMLResponse)
    def index() -> Any:
        page = STATIC / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(_PLACEHOLDER)

    @app.get("/health")
    def health() -> dict[str, Any]:
        b = srv.batcher
        return {"status": "ok", "model": srv.name, "waiting": b.waiting, **b.stats}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        info = {"id": srv.name, "object": "model", "created": 0, "owned_by": "steerlab"}
        return {"object": "list", "data": [{**info, "steerlab": srv.lm.info.to_dict()}]}


def _prompt_of(body: dict[str, Any], chat: bool) -> tuple[str, Any]:
    """The prompt text and its chat format (None for a plain completion)."""
    if chat:
        return chat_prompt(body.get("messages"))
    p = body.get("prompt")
    p = p[0] if isinstance(p, list) and len(p) == 1 else p
    if not isinstance(p, str) or not p:
        raise BadRequest("prompt must be a non-empty string (or a list of one)")
    return p, None


def _completion(meta: dict[str, Any], res: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The non-streamed response body for a finished generation."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": res["finish_reason"]}
    if chat:
        choice["message"] = {"role": "assistant", "content": res["text"]}
        choice["logprobs"] = None
    else:
        choice |= {"text": res["text"], "logprobs": None}
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": usage(res),
    }


async def _complete(srv: _Server, request: Request, chat: bool) -> Any:
    body = await _body_of(request)
    opts = options(body, max_tokens=srv.default_max_tokens, limit=srv.max_tokens_limit)
    prompt, fmt = _prompt_of(body, chat)
    tr = treatment(srv.lm, srv.reg, body.get("steerlab"))
    pipe = Pipe()
    job = GenJob(
        prompt=prompt,
        emit=pipe.emit,
        chat=None if chat else False,
        fmt=fmt,
        treatment=tr,
        max_tokens=opts["max_tokens"],
        temperature=opts["temperature"],
        top_p=opts["top_p"],
        seed=opts["seed"],
        stop=opts["stop"],
    )
    srv.batcher.submit(job)
    meta = {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": srv.name,
    }
    if opts["stream"]:
        events = stream_events(pipe, job, meta, chat, opts["usage_chunk"])
        return StreamingResponse(events, media_type="text/event-stream")
    res = await wait_result(pipe, job, request)
    if res is None:  # the client went away
        return error_response(499, "client closed the request")
    return _completion(meta, res, chat)


def _completion_routes(app: FastAPI, srv: _Server) -> None:
    """OpenAI's chat and text completions, with the ``steerlab`` field."""

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _complete(srv, request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _complete(srv, request, chat=False)


async def _upload(srv: _Server, request: Request) -> dict[str, Any]:
    data = await _capped(request, srv.upload_limit + 2**20)  # the multipart envelope too
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    form = await Request(request.scope, receive=replay).form(max_part_size=srv.upload_limit + 1)
    f = form.get("file")
    if f is None or isinstance(f, str):
        raise BadRequest("send the artifact as a multipart file field named 'file'")
    given = form.get("name")
    content = await f.read()
    out = await run_in_threadpool(
        srv.reg.add_upload, content, str(given) if given else None, f.filename
    )
    return {"name": out}


async def _read(srv: _Server, request: Request) -> Any:
    body = await _body_of(request)
    text, dname, layer = body.get("text"), body.get("direction"), body.get("layer")
    if not isinstance(text, str) or not text:
        raise BadRequest("text must be a non-empty string")
    if not isinstance(dname, str):
        raise BadRequest("direction must be a direction name")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise BadRequest("layer must be an integer")
    from ..capture import resolve_layers

    lay = resolve_layers(layer, srv.lm.info.n_layers)[0]
    try:
        d = srv.reg.get(dname)
    except KeyError:
        raise NotFound(f"unknown direction {dname!r}: GET /directions lists them") from None
    row = lay if lay in d.layers else (d.layers[0] if len(d.layers) == 1 else None)
    if row is None:
        raise BadRequest(f"direction {dname!r} has no row for layer {lay} (has {d.layers})")
    unit = d.unit(row)
    chat = bool(body.get("chat", False))
    pipe = Pipe()
    job = Call(lambda m: projections(m, text, lay, unit, chat), pipe.emit)
    srv.batcher.submit(job)
    res = await wait_result(pipe, job, request)
    return res if res is not None else error_response(499, "client closed the request")


def _direction_routes(app: FastAPI, srv: _Server) -> None:
    """List and upload directions; read a text's projections on one."""

    @app.get("/directions")
    def directions() -> dict[str, Any]:
        return {"directions": srv.reg.names()}

    @app.post("/directions")
    async def upload(request: Request) -> Any:
        return await _upload(srv, request)

    @app.post("/read")
    async def read(request: Request) -> Any:
        return await _read(srv, request)


def _run_routes(app: FastAPI, runs: Path) -> None:
    """The runs directory's reports, read-only."""

    @app.get("/runs")
    def list_runs() -> dict[str, Any]:
        return {"runs": run_list(runs)}

    @app.get("/runs/{path:path}")
    def run_file(path: str) -> Any:
        p = safe_path(runs, path)
        if p.suffix not in REPORT_SUFFIXES:
            raise BadRequest(f"only report files are served ({', '.join(sorted(REPORT_SUFFIXES))})")
        if not p.is_file():
            raise NotFound(f"no such file under the runs directory: {path}")
        return FileResponse(p)


async def _capped(request: Any, cap: int) -> bytes:
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > cap:
        raise UploadTooLarge(f"request body of {n} bytes is over the limit of {cap} bytes")
    chunks, size = [], 0
    async for c in request.stream():
        size += len(c)
        if size > cap:
            raise UploadTooLarge(f"request body is over the limit of {cap} bytes")
        chunks.append(c)
    return b"".join(chunks)
