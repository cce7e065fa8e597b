"""Request bodies: OpenAI's fields and steerlab's ``"steerlab"`` field, checked into a job.

The interventions field::

    "steerlab": {"steer":  [{"direction": NAME, "layer": L, "coeff": C}],
                 "ablate": [{"direction": NAME}],
                 "clamp":  [{"direction": NAME, "layer": L, "value": X}]}

means what ``steerlab generate`` means by ``--vector NAME --layer L --coeff C``, ``--ablate
NAME`` and ``--clamp NAME --layer L --value X``: ``steer`` adds ``C`` times the artifact's row
for layer ``L`` at the input of block ``L`` (``positions``: ``all`` or ``generated``);
``ablate`` removes the direction (its only row, or the row ``layer``) at every layer, several
remove their span; ``clamp`` pins the projection on the row ``layer`` at every block input
(``layers`` narrows that, e.g. ``"12"`` or ``[10, 14]``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from ..capture import resolve_layers
from ..directions.artifact import Direction
from ..errors import SteerlabError
from ..interventions import Ablate, Clamp, Steer, check_coeff
from ..interventions.per_row import RowSetting
from ..interventions.runtime import as_basis, as_vector
from ..models.chat import PromptFormat
from ..models.load import LoadedModel
from .directions import DirectionRegistry

__all__ = ["BadRequest", "NotFound", "Treatments", "chat_prompt", "options", "treatments"]

_KEYS = {"steer": {"direction", "layer", "coeff", "positions"}, "ablate": {"direction", "layer"}}
_KEYS["clamp"] = {"direction", "layer", "value", "layers"}


class BadRequest(SteerlabError):
    """A malformed request (HTTP 400)."""


class NotFound(SteerlabError):
    """Something named in a request does not exist (HTTP 404)."""


class Treatments:
    """A request's interventions, in the two forms the worker needs.

    Attributes:
        row: additions batched per row (only when the request has nothing else).
        shared: treatments hooked on the whole batch, in ``steerlab generate``'s order.
        key: which requests may share a batch (identical ``shared``).
        all: every treatment, for the sampled path.
    """

    def __init__(self) -> None:
        self.row = RowSetting()
        self.shared: tuple[Any, ...] = ()
        self.key: Hashable = ()
        self.all: tuple[Any, ...] = ()


def _items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    raw = body.get(kind) or []
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise BadRequest(f"steerlab.{kind} must be a list of objects")
    for x in raw:
        extra = set(x) - _KEYS[kind]
        if extra:
            raise BadRequest(f"steerlab.{kind}: unknown field(s) {sorted(extra)}")
        if not isinstance(x.get("direction"), str):
            raise BadRequest(f"steerlab.{kind}: each item needs a direction name (a string)")
    return raw


def _direction(reg: DirectionRegistry, name: str) -> Direction:
    try:
        return reg.get(name)
    except KeyError:
        raise NotFound(f"unknown direction {name!r}: GET /directions lists them") from None


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"{what} must be an integer, got {v!r}")
    return v


def _layer(lm: LoadedModel, v: Any, what: str) -> int:
    return resolve_layers(_int(v, what), lm.info.n_layers)[0]


def _row(lm: LoadedModel, d: Direction, item: dict[str, Any], what: str) -> int | None:
    """The artifact row an ablation or clamp uses: ``layer``, else its only one."""
    if item.get("layer") is None:
        if len(d.layers) != 1:
            raise BadRequest(f"{what}: {item['direction']!r} has several layers; say which")
        return d.layers[0]
    return _layer(lm, item["layer"], f"{what}.layer")


def treatments(lm: LoadedModel, reg: DirectionRegistry, body: Any) -> Treatments:
    """Check the ``steerlab`` field against the model; what the worker runs."""
    out = Treatments()
    if body is None:
        return out
    if not isinstance(body, dict):
        raise BadRequest("steerlab must be an object with steer, ablate and clamp lists")
    extra = set(body) - set(_KEYS)
    if extra:
        raise BadRequest(f"steerlab: unknown field(s) {sorted(extra)}; use steer, ablate, clamp")
    steers: list[Steer] = []
    adds: dict[int, Any] = {}
    key: list[Hashable] = []
    positions: set[str] = set()
    pre = True  # every addition is at a block input (resid_pre): it can be batched per row
    for i, it in enumerate(_items(body, "steer")):
        what = f"steerlab.steer[{i}]"
        d = _direction(reg, it["direction"])
        if it.get("layer") is None and len(d.layers) != 1:
            raise BadRequest(f"{what}: {it['direction']!r} has several layers; give layer")
        lay = d.layers[0] if it.get("layer") is None else _layer(lm, it["layer"], f"{what}.layer")
        c = check_coeff(it.get("coeff", 1.0), f"{what}.coeff")
        pos = it.get("positions", "all")
        if pos not in ("all", "generated"):
            raise BadRequest(f"{what}.positions must be all or generated, not {pos!r}")
        vec = c * as_vector(lm.model, d, lay)  # width, finiteness, the row exists
        if not bool(vec.isfinite().all()):
            raise BadRequest(f"{what}: coeff times the vector overflows")
        steers.append(Steer(d, layers=lay, coeff=c, positions=pos))
        key.append(("steer", id(d), lay, c, pos))
        positions.add(pos)
        pre = pre and d.site == "resid_pre"
        if d.site == "resid_pre":
            adds[lay] = vec if lay not in adds else adds[lay] + vec
    shared: list[Any] = []
    abl = _items(body, "ablate")
    if abl:
        ds = [_direction(reg, x["direction"]) for x in abl]
        rows = [
            _row(lm, d, x, f"steerlab.ablate[{i}]")
            for i, (d, x) in enumerate(zip(ds, abl, strict=True))
        ]
        as_basis(lm.model, ds if len(ds) > 1 else ds[0], rows if len(ds) > 1 else rows[0])
        shared.append(Ablate(ds[0], layer=rows[0]) if len(ds) == 1 else Ablate(ds, layer=rows))
        key.append(("ablate", tuple(id(d) for d in ds), tuple(rows)))
    for i, it in enumerate(_items(body, "clamp")):
        what = f"steerlab.clamp[{i}]"
        d = _direction(reg, it["direction"])
        row = _row(lm, d, it, what)
        if "value" not in it:
            raise BadRequest(f"{what} needs a value")
        v = check_coeff(it["value"], f"{what}.value")
        lays = it.get("layers", "all")
        if not isinstance(lays, (str, int, list)) or isinstance(lays, bool):
            raise BadRequest(f"{what}.layers must be all, L, A:B or a list of layers")
        lays = resolve_layers(lays, lm.info.n_layers)
        as_basis(lm.model, d, row)  # a zero vector cannot be clamped
        shared.append(Clamp(d, v, layers=lays, layer=row))
        key.append(("clamp", id(d), row, v, tuple(lays)))
    out.all = (*steers, *shared)
    if not shared and len(positions) <= 1 and pre:
        out.row = RowSetting(add=adds, positions=positions.pop() if positions else "all")
    else:  # hooks for the whole batch, in the command's order (steer, ablate, clamp)
        out.shared, out.key = out.all, tuple(key)
    return out


def options(body: dict[str, Any], *, max_tokens: int, limit: int) -> dict[str, Any]:
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
    }


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
