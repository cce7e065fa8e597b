"""``POST /v1/chat/completions`` and ``/v1/completions``: a request body checked into a job.

Everything that can refuse a request runs before the job is queued, off the event loop
(directions are loaded, the prompt is tokenized): a prompt whose tokens plus ``max_tokens``
exceed the model's context gets 400 with both numbers.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..models.load import LoadedModel
from .batcher import GenJob, prompt_ids
from .directions import DirectionRegistry
from .jobs import Backend
from .protocol import BadRequest, chat_prompt, options, treatment
from .responses import Pipe, error_response, stream_events, usage, wait_result

__all__ = ["Limits", "complete", "context_of", "json_body"]


@dataclass(frozen=True)
class Limits:
    """Per-request limits: reply length (default and most), treatment items, context."""

    default_max_tokens: int = 128
    max_tokens_limit: int = 2048
    max_items: int = 16
    context: int | None = None


def context_of(lm: LoadedModel) -> int | None:
    """The model's context length in tokens (None when its config does not say)."""
    n = getattr(lm.model.config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


async def json_body(request: Request) -> dict[str, Any]:
    import json

    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or a 5000-digit number
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _prompt_of(body: dict[str, Any], chat: bool) -> tuple[str, Any]:
    """The prompt text and its chat format (None for a plain completion)."""
    if chat:
        return chat_prompt(body.get("messages"))
    p = body.get("prompt")
    p = p[0] if isinstance(p, list) and len(p) == 1 else p
    if not isinstance(p, str) or not p:
        raise BadRequest("prompt must be a non-empty string (or a list of one)")
    return p, None


def _logprobs(res: dict[str, Any], chat: bool) -> dict[str, Any] | None:
    """OpenAI's log-probability objects (chat's ``content`` list, or completions' columns)."""
    entries = res.get("logprobs")
    if entries is None:
        return None
    if chat:
        content = [
            {
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": list(e["token"].encode()),
                "top_logprobs": [
                    {"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in e["top"]
                ],
            }
            for e in entries
        ]
        return {"content": content}
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [dict(e["top"]) for e in entries],
        "text_offset": offsets,
    }


def _completion(meta: dict[str, Any], res: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The non-streamed response body for a finished generation."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": res["finish_reason"]}
    if chat:
        choice["message"] = {"role": "assistant", "content": res["text"]}
        choice["logprobs"] = _logprobs(res, chat)
    else:
        choice |= {"text": res["text"], "logprobs": _logprobs(res, chat)}
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": usage(res),
    }


async def complete(
    lm: LoadedModel,
    reg: DirectionRegistry,
    batcher: Backend,
    name: str,
    lim: Limits,
    request: Request,
    chat: bool,
) -> Any:
    body = await json_body(request)
    opts = options(body, max_tokens=lim.default_max_tokens, limit=lim.max_tokens_limit, chat=chat)
    prompt, fmt = _prompt_of(body, chat)
    pipe = Pipe()
    job = GenJob(
        prompt=prompt,
        emit=pipe.emit,
        chat=None if chat else False,
        fmt=fmt,
        max_tokens=opts["max_tokens"],
        temperature=opts["temperature"],
        top_p=opts["top_p"],
        seed=opts["seed"],
        stop=opts["stop"],
        logprobs=opts["logprobs"],
    )

    def check() -> None:  # directions load from disk, the prompt is tokenized: not on the loop
        job.treatment = treatment(lm, reg, body.get("steerlab"), lim.max_items)
        job.ids = prompt_ids(lm, job)
        batcher.prepare(job)  # what the engine cannot run is refused before it is queued
        n = len(job.ids)
        if lim.context is not None and n + job.max_tokens > lim.context:
            raise BadRequest(
                f"the prompt has {n} tokens and max_tokens is {job.max_tokens}: "
                f"{n + job.max_tokens} is over the model's context of {lim.context} tokens"
            )

    await run_in_threadpool(check)
    batcher.submit(job)
    meta = {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": name,
    }
    if opts["stream"]:
        events = stream_events(pipe, job, meta, chat, opts["usage_chunk"])
        return StreamingResponse(events, media_type="text/event-stream")
    res = await wait_result(pipe, job, request)
    if res is None:  # the client went away
        return error_response(499, "client closed the request")
    return _completion(meta, res, chat)
