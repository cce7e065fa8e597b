"""How the app answers: one-line JSON errors, and a worker job's events turned into a
response (awaited whole, or streamed as OpenAI's server-sent chunks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import SteerlabError, first_line
from .batcher import GenJob, QueueFull
from .directions import NameError_, UploadTooLarge
from .protocol import BadRequest, NotFound

__all__ = ["Pipe", "error_response", "status_of", "stream_events", "usage", "wait_result"]

_STATUS = {BadRequest: 400, NameError_: 400, NotFound: 404, UploadTooLarge: 413, QueueFull: 429}


def status_of(e: BaseException) -> int:
    for cls, code in _STATUS.items():
        if isinstance(e, cls):
            return code
    return 400 if isinstance(e, SteerlabError) else 500


def error_response(status: int, message: str) -> JSONResponse:
    kind = {404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
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
