"""A minimal OpenAI-compatible chat server over a steerlab model, for end-to-end judge tests.

Serves ``POST /v1/chat/completions`` (system + user messages, greedy or sampled) and
``GET /health``. Real generation, nothing canned::

    python tests/servers/chat_server.py --port 8765 --model smollm2-135m
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str = "default"
    messages: list[Message]
    temperature: float = 0.0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


def create_app(lm: Any, *, default_max_tokens: int = 128) -> FastAPI:
    from steerlab.generation import generate
    from steerlab.models.chat import format_prompt

    app = FastAPI()
    lock = threading.Lock()  # one generation at a time: the model is shared across requests

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        system = "\n".join(m.content for m in req.messages if m.role == "system") or None
        turns = [m for m in req.messages if m.role != "system"]
        if len(turns) != 1 or turns[0].role != "user":
            raise HTTPException(400, "this test server takes one user message (and system ones)")
        budget = req.max_completion_tokens or req.max_tokens or default_max_tokens
        with lock:
            outs = generate(
                lm.model,
                lm.tokenizer,
                [turns[0].content],
                max_new_tokens=min(budget, 1024),
                temperature=req.temperature,
                system=system,
            )
        text = outs[0]
        rendered = format_prompt(lm.tokenizer, turns[0].content, system=system)
        n_in = len(lm.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        n_out = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if n_out >= budget else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": n_in,
                "completion_tokens": n_out,
                "total_tokens": n_in + n_out,
            },
        }

    return app


def main() -> None:
    import uvicorn

    import steerlab

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    lm = steerlab.load_model(args.model)
    uvicorn.run(create_app(lm), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
