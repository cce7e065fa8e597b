"""What ``steerlab serve`` lets in: access rules and limits, declared once for the CLI.

Imports nothing heavy: the CLI reads the options from here before FastAPI is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configs import Checked, bounds, cli

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig(Checked):
    """Access and limits of the server (``--api-key`` may come from ``STEERLAB_API_KEY``)."""

    api_key: str | None = field(
        default=None,
        metadata=cli("require 'Authorization: Bearer KEY' (default: $STEERLAB_API_KEY if set)"),
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata=cli("host names the Host header may carry, besides loopback ('*': any)"),
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata=cli("other origins whose pages may call the API (https://a.example)")
    )
    max_body_mb: float = field(
        default=4.0, metadata=bounds(gt=0) | cli("largest request body (MB); more get HTTP 413")
    )
    max_items: int = field(
        default=16, metadata=bounds(ge=1) | cli("most steer/ablate/clamp items per request")
    )
    max_uploads: int = field(
        default=32, metadata=bounds(ge=0) | cli("most uploaded directions kept in memory")
    )
