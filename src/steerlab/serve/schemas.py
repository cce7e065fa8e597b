"""The request bodies in the OpenAPI document (``/openapi.json``, ``/docs``).

The routes parse their bodies themselves (one-line 400s, not FastAPI's validation lists); these
schemas only describe them, so clients, and the fuzzer in the tests, know what to send.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHAT", "COMPLETION", "READ", "UPLOAD", "body"]

_ITEM = {
    "type": "object",
    "required": ["direction"],
    "properties": {
        "direction": {"type": "string"},
        "layer": {"type": "integer"},
        "layers": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
        "coeff": {"type": "number"},
        "value": {"type": "number"},
        "positions": {"type": "string", "enum": ["all", "generated"]},
    },
}
_STEERLAB = {
    "type": "object",
    "description": "interventions for this request",
    "properties": {k: {"type": "array", "items": _ITEM} for k in ("steer", "ablate", "clamp")},
}
_SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "seed": {"type": "integer"},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "stream": {"type": "boolean"},
    "n": {"type": "integer"},
    "steerlab": _STEERLAB,
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
}
CHAT = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        **_SAMPLING,
    },
}
COMPLETION = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {"type": "string", "minLength": 1},
        "logprobs": {"type": "integer", "minimum": 0, "maximum": 5},
        **_SAMPLING,
    },
}
READ = {
    "type": "object",
    "required": ["text", "direction", "layer"],
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "direction": {"type": "string"},
        "layer": {"type": "integer"},
        "chat": {"type": "boolean"},
    },
}
UPLOAD = {
    "type": "object",
    "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string"}},
}


def body(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    """``openapi_extra`` declaring a route's request body."""
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}
