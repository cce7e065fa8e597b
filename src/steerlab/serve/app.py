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
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import SteerlabError, first_line
from ..models.load import LoadedModel
from .batcher import Batcher, Call
from .completions import Limits, complete, context_of, json_body
from .directions import DEFAULT_UPLOAD_LIMIT, DirectionRegistry, safe_path
from .jobs import Backend
from .protocol import BadRequest, NotFound
from .responses import Pipe, error_response, status_of, wait_result
from .schemas import CHAT, COMPLETION, READ, UPLOAD, body
from .security import Access, Guard
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
    batcher: Backend
    name: str
    upload_limit: int
    limits: Limits


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
    access: Access | None = None,
    max_items: int = 16,
    max_uploads: int = 32,
    upload_total: int = 256 * 2**20,
    backend: Backend | None = None,
) -> FastAPI:
    """A FastAPI app serving ``lm``; its batcher is ``app.state.batcher`` (stop it with
    ``app.state.batcher.close()``, which the app's shutdown does).

    Args:
        runs_dir: directions (``*.safetensors`` artifacts, by relative name) and reports.
        max_queue: requests waiting at once before 429.
        max_batch: most requests decoded together.
        batch_wait_s: how long an idle worker waits after a request for others to batch with.
        upload_limit: largest direction upload in bytes (413 beyond).
        access: API key, allowed hosts, CORS origins, body cap (:mod:`.security`); the
            default allows loopback host names, no other origin, no key, 4 MB bodies.
        max_items: most steer + ablate + clamp items in one request.
        max_uploads, upload_total: most uploaded directions kept, and their bytes in all.
        backend: what decodes instead of the Hugging Face batcher (e.g. a
            :class:`~.vllm_batcher.VLLMBatcher`, which has its own queue and batch limits;
            the app closes it at shutdown).
    """
    runs = Path(runs_dir)
    if backend is None:
        backend = Batcher(lm, max_queue=max_queue, max_batch=max_batch, gather_s=batch_wait_s)
    context = context_of(lm)
    if backend.max_model_len is not None:
        context = min(context or backend.max_model_len, backend.max_model_len)
    srv = _Server(
        lm=lm,
        runs=runs,
        reg=DirectionRegistry(
            runs, lm.info, upload_limit=upload_limit, max_uploads=max_uploads, total=upload_total
        ),
        batcher=backend,
        name=model_name or lm.info.model_id,
        upload_limit=upload_limit,
        limits=Limits(default_max_tokens, max_tokens_limit, max_items, context),
    )
    access = access or Access()
    access = replace(access, upload_body=max(access.upload_body, upload_limit + 2**20))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        srv.batcher.close()

    # no /docs: its page loads scripts from a CDN, which the CSP refuses; /openapi.json stays
    app = FastAPI(title="steerlab serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = srv.batcher
    app.state.directions = srv.reg
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _error_handlers(app)
    # registration order is matching order: keep the fixed paths before /runs/{path}
    _info_routes(app, srv)
    _completion_routes(app, srv)
    _direction_routes(app, srv)
    _run_routes(app, runs)
    if access.cors_origins:  # preflights from the listed origins; the Guard refuses the rest
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(access.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(Guard, access=access)  # added last: runs first
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


async def _complete(srv: _Server, request: Request, chat: bool) -> Any:
    return await complete(srv.lm, srv.reg, srv.batcher, srv.name, srv.limits, request, chat)


def _completion_routes(app: FastAPI, srv: _Server) -> None:
    """OpenAI's chat and text completions, with the ``steerlab`` field."""

    @app.post("/v1/chat/completions", openapi_extra=body(CHAT))
    async def chat_completions(request: Request) -> Any:
        return await _complete(srv, request, True)

    @app.post("/v1/completions", openapi_extra=body(COMPLETION))
    async def completions(request: Request) -> Any:
        return await _complete(srv, request, False)


async def _upload(srv: _Server, request: Request) -> dict[str, Any]:
    # the Guard caps the body; each part is capped too
    form = await request.form(max_files=1, max_fields=2, max_part_size=srv.upload_limit + 1)
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
    body = await json_body(request)
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
        d = await run_in_threadpool(srv.reg.get, dname)  # loads and validates: off the loop
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

    @app.post("/directions", openapi_extra=body(UPLOAD, "multipart/form-data"))
    async def upload(request: Request) -> Any:
        return await _upload(srv, request)

    @app.post("/read", openapi_extra=body(READ))
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
