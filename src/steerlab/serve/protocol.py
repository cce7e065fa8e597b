"""Request bodies: OpenAI's fields and steerlab's ``"steerlab"`` field, checked into a job.

The interventions field::

    "steerlab": {"steer":  [{"direction": NAME, "layer": L, "coeff": C}],
                 "ablate": [{"direction": NAME}],
                 "clamp":  [{"direction": NAME, "layer": L, "value": X}]}

is parsed by the same parser as ``steerlab generate``'s flags
(:func:`~steerlab.interventions.spec.treatment_from_spec`): ``--vector NAME --layer L --coeff
C``, ``--ablate NAME`` and ``--clamp NAME --layer L --value X`` mean the same.
"""

from __future__ import annotations

import math
from typing import Any

from ..directions.artifact import Direction
from ..errors import SteerlabError
from ..interventions.base import Intervention
from ..interventions.spec import KEYS, SpecError, treatment_from_spec
from ..models.chat import PromptFormat
from ..models.load import LoadedModel
from .directions import DirectionRegistry

__all__ = ["BadRequest", "NotFound", "chat_prompt", "options", "treatment"]


class BadRequest(SteerlabError):
    """A malformed request (HTTP 400)."""

    http_status = 400


class NotFound(SteerlabError):
    """Something named in a request does not exist (HTTP 404)."""

    http_status = 404


MAX_ITEMS = 16  # steer + ablate + clamp items in one request: each is hooked on every forward
_SEED = 2**63  # torch's generators take 64-bit seeds


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{what} must be an integer, got {v!r}")
    return v


def treatment(
    lm: LoadedModel, reg: DirectionRegistry, body: Any, max_items: int = MAX_ITEMS
) -> Intervention:
    """The ``steerlab`` field checked against the model: one intervention per request (every
    request's treatment runs per row of a shared batch). Loads directions: call it off the
    event loop."""
    if isinstance(body, dict):
        n = sum(len(v) for k, v in body.items() if k in KEYS and isinstance(v, list))
        if n > max_items:
            raise BadRequest(f"steerlab: {n} steer/ablate/clamp items; at most {max_items}")

    def direction(name: str) -> Direction:
        try:
            return reg.get(name)
        except KeyError:
            raise NotFound(f"unknown direction {name!r}: GET /directions lists them") from None

    try:
        return treatment_from_spec(
            body, direction, n_layers=lm.info.n_layers, width=lm.info.d_model
        )
    except SpecError as e:
        raise BadRequest(str(e)) from None


def options(
    body: dict[str, Any], *, max_tokens: int, limit: int, chat: bool = True
) -> dict[str, Any]:
    """OpenAI's sampling fields: max_tokens, temperature (default 0: greedy), top_p, seed, stop,
    stream, n (1 only)."""
    n = body.get("n", 1)
    if n not in (1, None):
        raise BadRequest("n must be 1: steerlab serve returns one choice per request")
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    mt = max_tokens if mt is None else _int(mt, "max_tokens")
    if not 1 <= mt <= limit:
        raise BadRequest(f"max_tokens must be between 1 and {limit}, got {mt}")
    t = body.get("temperature")
    t = 0.0 if t is None else _num(t, "temperature")
    if not 0 <= t <= 2:
        raise BadRequest(f"temperature must be between 0 and 2, got {t}")
    p = body.get("top_p")
    p = 1.0 if p is None else _num(p, "top_p")
    if not 0 < p <= 1:
        raise BadRequest(f"top_p must be in (0, 1], got {p}")
    seed = body.get("seed")
    seed = 0 if seed is None else _int(seed, "seed")
    if not -_SEED <= seed < _SEED:
        raise BadRequest(f"seed must be a 64-bit integer, got {seed}")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise BadRequest("stop must be a string or a list of at most 4 strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    so = body.get("stream_options") or {}
    return {
        "max_tokens": mt,
        "temperature": t,
        "top_p": p,
        "seed": seed,
        "stop": tuple(s for s in stop if s),
        "stream": stream,
        "usage_chunk": bool(isinstance(so, dict) and so.get("include_usage")),
        "logprobs": _logprobs(body, chat, stream),
    }


def _logprobs(body: dict[str, Any], chat: bool, stream: bool) -> int | None:
    """How many alternatives to report per token (None: no log-probabilities). Chat takes
    ``logprobs: true`` and ``top_logprobs`` (0-20); completions take ``logprobs`` (0-5)."""
    lp = body.get("logprobs")
    if chat:
        if lp not in (None, True, False):
            raise BadRequest("logprobs must be true or false")
        top = body.get("top_logprobs")
        if top is not None and not lp:
            raise BadRequest("top_logprobs needs logprobs: true")
        n = None if not lp else 0 if top is None else _int(top, "top_logprobs")
        limit = 20
    else:
        n = None if lp is None else _int(lp, "logprobs")
        limit = 5
    if n is not None and not 0 <= n <= limit:
        raise BadRequest(f"top log-probabilities must be between 0 and {limit}, got {n}")
    if n is not None and stream:
        raise BadRequest("log-probabilities come with non-streamed requests only")
    return n


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadRequest(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _content(m: dict[str, Any], i: int) -> str:
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text") for p in c if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) == len(c) and all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    raise BadRequest(f"messages[{i}].content must be text")


def chat_prompt(messages: Any) -> tuple[str, PromptFormat | None]:
    """(the last user message, the system message and earlier turns) of a chat.

    The conversation must read ``[system] (user assistant)* user``; a single user message
    gives no format, so the prompt is rendered exactly as ``steerlab generate`` renders it.
    """
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise BadRequest("each message must be an object with role and content")
    system = [
        _content(m, i) for i, m in enumerate(messages) if m.get("role") in ("system", "developer")
    ]
    turns = [(m.get("role"), _content(m, i)) for i, m in enumerate(messages)]
    turns = [t for t in turns if t[0] not in ("system", "developer")]
    roles = [r for r, _ in turns]
    want = ["user", "assistant"] * (len(turns) // 2) + ["user"]
    if roles != want[: len(roles)] or len(roles) % 2 == 0:
        raise BadRequest(
            "messages must be [system] then alternating user / assistant turns ending with user"
        )
    shots = tuple((turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2))
    if not system and not shots:
        return turns[-1][1], None
    return turns[-1][1], PromptFormat(system="\n".join(system) or None, shots=shots)
