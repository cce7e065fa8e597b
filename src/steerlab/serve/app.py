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

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import SteerlabError, first_line
from ..models.load import LoadedModel
from .batcher import Batcher, Call, GenJob, QueueFull
from .directions import (
    DEFAULT_UPLOAD_LIMIT,
    DirectionRegistry,
    NameError_,
    UploadTooLarge,
    safe_path,
)
from .protocol import BadRequest, NotFound, chat_prompt, options, treatment
from .views import projections, run_list

__all__ = ["REPORT_SUFFIXES", "create_app"]

STATIC = Path(__file__).parent / "static"
REPORT_SUFFIXES = {".html", ".json", ".png", ".md", ".txt"}
_STATUS = {BadRequest: 400, NameError_: 400, NotFound: 404, UploadTooLarge: 413, QueueFull: 429}
_PLACEHOLDER = (
    "<!doctype html><title>steerlab serve</title><h1>steerlab serve</h1>"
    "<p>The playground page is not installed. The API: <code>POST /v1/chat/completions</code>, "
    "<code>GET /directions</code>, <code>POST /read</code>, <code>GET /runs</code>.</p>"
)


def _status(e: BaseException) -> int:
    for cls, code in _STATUS.items():
        if isinstance(e, cls):
            return code
    return 400 if isinstance(e, SteerlabError) else 500


def _error(status: int, message: str) -> JSONResponse:
    kind = {404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
    body = {
        "message": " ".join(message.split()),  # one line
        "type": kind.get(status, "invalid_request_error" if status < 500 else "server_error"),
        "code": status,
    }
    return JSONResponse({"error": body}, status_code=status)


class _Pipe:
    """Events from the worker thread into this request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))


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
    reg = DirectionRegistry(runs, lm.info, upload_limit=upload_limit)
    batcher = Batcher(lm, max_queue=max_queue, max_batch=max_batch, gather_s=batch_wait_s)
    name = model_name or lm.info.model_id

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="steerlab serve", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.directions = reg
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.exception_handler(Exception)
    async def _any(_r: Request, e: Exception) -> Any:
        return _error(_status(e), first_line(e))

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, e: HTTPException) -> Any:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> Any:
        errs = e.errors()
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errs[:3])
        return _error(400, msg or "invalid request")

    app.add_exception_handler(SteerlabError, _any)  # handled here, not re-raised as a 500

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    @app.get("/", response_class=HTMLResponse)
    def index() -> Any:
        page = STATIC / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(_PLACEHOLDER)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "waiting": batcher.waiting, **batcher.stats}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        info = {"id": name, "object": "model", "created": 0, "owned_by": "steerlab"}
        return {"object": "list", "data": [{**info, "steerlab": lm.info.to_dict()}]}

    async def complete(request: Request, chat: bool) -> Any:
        body = await body_of(request)
        opts = options(body, max_tokens=default_max_tokens, limit=max_tokens_limit)
        if chat:
            prompt, fmt = chat_prompt(body.get("messages"))
        else:
            p = body.get("prompt")
            p = p[0] if isinstance(p, list) and len(p) == 1 else p
            if not isinstance(p, str) or not p:
                raise BadRequest("prompt must be a non-empty string (or a list of one)")
            prompt, fmt = p, None
        tr = treatment(lm, reg, body.get("steerlab"))
        pipe = _Pipe()
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
        batcher.submit(job)
        meta = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": name,
        }
        if opts["stream"]:
            events = _stream(pipe, job, meta, chat, opts["usage_chunk"])
            return StreamingResponse(events, media_type="text/event-stream")
        res = await _wait(pipe, job, request)
        if res is None:  # the client went away
            return _error(499, "client closed the request")
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
            "usage": _usage(res),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await complete(request, chat=False)

    @app.get("/directions")
    def directions() -> dict[str, Any]:
        return {"directions": reg.names()}

    @app.post("/directions")
    async def upload(request: Request) -> Any:
        data = await _capped(request, upload_limit + 2**20)  # the multipart envelope too
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        form = await Request(request.scope, receive=replay).form(max_part_size=upload_limit + 1)
        f = form.get("file")
        if f is None or isinstance(f, str):
            raise BadRequest("send the artifact as a multipart file field named 'file'")
        given = form.get("name")
        content = await f.read()
        out = await run_in_threadpool(
            reg.add_upload, content, str(given) if given else None, f.filename
        )
        return {"name": out}

    @app.post("/read")
    async def read(request: Request) -> Any:
        body = await body_of(request)
        text, dname, layer = body.get("text"), body.get("direction"), body.get("layer")
        if not isinstance(text, str) or not text:
            raise BadRequest("text must be a non-empty string")
        if not isinstance(dname, str):
            raise BadRequest("direction must be a direction name")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise BadRequest("layer must be an integer")
        from ..capture import resolve_layers

        lay = resolve_layers(layer, lm.info.n_layers)[0]
        try:
            d = reg.get(dname)
        except KeyError:
            raise NotFound(f"unknown direction {dname!r}: GET /directions lists them") from None
        row = lay if lay in d.layers else (d.layers[0] if len(d.layers) == 1 else None)
        if row is None:
            raise BadRequest(f"direction {dname!r} has no row for layer {lay} (has {d.layers})")
        unit = d.unit(row)
        chat = bool(body.get("chat", False))
        pipe = _Pipe()
        job = Call(lambda m: projections(m, text, lay, unit, chat), pipe.emit)
        batcher.submit(job)
        res = await _wait(pipe, job, request)
        return res if res is not None else _error(499, "client closed the request")

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

    return app


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


def _usage(res: dict[str, Any]) -> dict[str, int]:
    p, c = int(res.get("prompt_tokens", 0)), int(res["completion_tokens"])
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _wait(pipe: _Pipe, job: Any, request: Any) -> Any:
    """The job's result; None when the client disconnected first (the job is cancelled)."""
    while True:
        try:
            kind, payload = await asyncio.wait_for(pipe.queue.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()
                return None
            continue
        if kind == "done":
            return payload
        if kind == "error":
            raise payload


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream(
    pipe: _Pipe, job: GenJob, meta: dict[str, Any], chat: bool, usage_chunk: bool
) -> AsyncIterator[str]:
    """OpenAI's chunk objects, then ``data: [DONE]``; cancels the job if the client leaves."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            c = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return {**meta, "object": obj, "choices": [c]}

    try:
        if chat:
            yield _sse(chunk("", None, first=True))
        while True:
            kind, payload = await pipe.queue.get()
            if kind == "delta":
                yield _sse(chunk(payload, None))
            elif kind == "done":
                yield _sse(chunk(None, payload["finish_reason"]))
                if usage_chunk:
                    yield _sse({**meta, "object": obj, "choices": [], "usage": _usage(payload)})
                break
            else:
                msg = " ".join(first_line(payload).split())
                yield _sse({"error": {"message": msg, "code": _status(payload)}})
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # a finished job ignores it; a running one stops at its next token
