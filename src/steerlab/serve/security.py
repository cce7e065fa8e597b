"""Who may talk to the server, and how much: one ASGI middleware in front of every route.

In order, for each HTTP request:

1. the ``Host`` must be an allowed name (loopback names by default), so a DNS-rebound page
   (same-origin to the browser, but with its own host name) gets 421;
2. a foreign ``Origin`` (not this server's own ``scheme://host`` and not listed in
   ``cors_origins``) gets 403: a browser sends a "simple" cross-site POST without a preflight;
3. with an API key, ``Authorization: Bearer KEY`` (as vLLM's and llama.cpp's servers take it) on
   everything but the playground's static files and ``/health``, else 401;
4. a POST must say ``application/json`` (``multipart/form-data`` for uploads), else 415;
5. the body is counted as it arrives (chunked bodies too) and refused past the cap with 413.

Every response gets ``nosniff``, ``frame-ancestors 'self'`` and friends; reports under
``/runs/`` are served under ``Content-Security-Policy: sandbox`` (no script, opaque origin).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import SteerlabError
from .responses import error_response

__all__ = ["LOOPBACK_HOSTS", "Access", "BodyTooLarge", "Guard", "parse_list"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_OPEN = ("/", "/health", "/favicon.ico")  # no key needed: the page that asks for one, liveness
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_PAGE_CSP = (
    b"default-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; "
    b"frame-ancestors 'self'"
)
_REPORT_CSP = (
    b"sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    b"frame-ancestors 'self'"
)


class BodyTooLarge(SteerlabError):
    """A request body over the server's cap (HTTP 413)."""

    http_status = 413


@dataclass(frozen=True)
class Access:
    """The access rules.

    Attributes:
        api_key: required as ``Authorization: Bearer KEY`` when set.
        allowed_hosts: host names (no port) the ``Host`` header may carry; ``*`` allows any.
        cors_origins: other origins (``https://app.example``) whose pages may call the API.
        max_body: largest request body in bytes (``upload_body`` for ``POST /directions``).
    """

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    cors_origins: tuple[str, ...] = ()
    max_body: int = 4 * 2**20
    upload_body: int = 65 * 2**20


def _host_name(host: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The pure ASGI middleware enforcing :class:`Access` (see the module docstring)."""

    def __init__(self, app: App, access: Access) -> None:
        self.app, self.access = app, access
        self.hosts = {h.lower() for h in access.allowed_hosts}

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if "*" not in self.hosts and _host_name(host).lower() not in self.hosts:
            return 421, f"host {host!r} is not served here (see --allowed-hosts)"
        origin = headers.get("origin")
        if origin is not None and origin not in self.access.cors_origins:
            o = urlsplit(origin)
            if o.netloc.lower() != host.lower() or o.scheme not in ("http", "https"):
                return 403, f"origin {origin!r} may not call this server (see --cors-origins)"
        path, method = scope["path"], scope["method"]
        if method == "OPTIONS":  # a CORS preflight (never carries a key): the CORS layer answers
            return None
        key = self.access.api_key
        if key and path not in _OPEN and not path.startswith("/static/"):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), key.encode()
            ):
                return 401, "a valid API key is required: Authorization: Bearer <key>"
        if method in ("POST", "PUT", "PATCH"):
            want = "multipart/form-data" if path == "/directions" else "application/json"
            got = headers.get("content-type", "").split(";")[0].strip().lower()
            if got != want:
                return 415, f"{method} {path} takes Content-Type {want}, not {got or 'none'!r}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        extra = list(_HEADERS)
        report = scope["path"].startswith("/runs/")
        extra.append((b"content-security-policy", _REPORT_CSP if report else _PAGE_CSP))
        extra.append((b"x-frame-options", b"SAMEORIGIN"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in have),
                ]
            await send(message)

        up = scope["path"] == "/directions"
        cap = self.access.upload_body if up else self.access.max_body
        refused = self._refusal(scope, headers)
        declared = headers.get("content-length", "")
        if refused is None and declared.isdigit() and int(declared) > cap:
            refused = 413, f"request body of {declared} bytes is over the limit of {cap} bytes"
        if refused is not None:
            await error_response(*refused)(scope, receive, send_with_headers)
            return
        await self.app(scope, _capped(receive, cap), send_with_headers)


def _capped(receive: Receive, cap: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once more than ``cap`` bytes came."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise BodyTooLarge(f"request body is over the limit of {cap} bytes")
        return message

    return wrapped


def parse_list(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """Comma-separated option values (``a,b`` or repeated) as a tuple, blanks dropped."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    return tuple(x.strip() for v in items for x in v.split(",") if x.strip())
