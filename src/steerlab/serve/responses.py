"""How the app answers: one-line JSON errors, and a worker job's events turned into a
response (awaited whole, or streamed as OpenAI's server-sent chunks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import SteerlabError, first_line
from .directions import NameError_, UploadTooLarge
from .jobs import GenJob
from .protocol import BadRequest, NotFound

__all__ = ["Pipe", "error_response", "status_of", "stream_events", "usage", "wait_result"]

_STATUS = {BadRequest: 400, NameError_: 400, NotFound: 404, UploadTooLarge: 413}


def status_of(e: BaseException) -> int:
    own = getattr(e, "http_status", None)  # errors defined where they are raised say their code
    if isinstance(own, int):
        return own
    for cls, code in _STATUS.items():
        if isinstance(e, cls):
            return code
    return 400 if isinstance(e, SteerlabError) else 500


def error_response(status: int, message: str) -> JSONResponse:
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
    }
    body = {
        "message": " ".join(message.split()),  # one line
        "type": kind.get(status, "invalid_request_error" if status < 500 else "server_error"),
        "code": status,
    }
    return JSONResponse({"error": body}, status_code=status)


class Pipe:
    """Events from the worker thread into this request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))


def usage(res: dict[str, Any]) -> dict[str, int]:
    p, c = int(res.get("prompt_tokens", 0)), int(res["completion_tokens"])
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def wait_result(pipe: Pipe, job: Any, request: Any) -> Any:
    """The job's result; None when the client disconnected first (the job is cancelled at
    once, so the worker drops its row before the next decode step)."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            got = asyncio.ensure_future(pipe.queue.get())
            await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                job.cancelled.set()
                return None
            kind, payload = got.result()
            if kind == "done":
                return payload
            if kind == "error":
                raise payload
    finally:
        gone.cancel()


async def _disconnected(request: Any) -> None:
    """Returns when the client has gone (the body was read already: what comes next is the
    disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_events(
    pipe: Pipe, job: GenJob, meta: dict[str, Any], chat: bool, usage_chunk: bool
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
                    yield _sse({**meta, "object": obj, "choices": [], "usage": usage(payload)})
                break
            else:
                msg = " ".join(first_line(payload).split())
                yield _sse({"error": {"message": msg, "code": status_of(payload)}})
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # a finished job ignores it; a running one stops at its next token
