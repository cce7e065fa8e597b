"""``steerlab models``: the built-in offline models and whether they are installed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import command


@command
def models(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the built-in offline models and whether each is installed and cached."""
    from rich.console import Console
    from rich.table import Table

    from ..models.fetch import builtin_status
    from ..models.registry import BUILTIN_MODELS, DEFAULT_MODEL

    rows = [builtin_status(m) for m in BUILTIN_MODELS.values()]
    for r in rows:
        r["default"] = r["name"] == DEFAULT_MODEL
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="built-in models (any --model also takes an HF id, a local dir or a .gguf)")
    for col in ("name", "installed", "cached", "description"):
        t.add_column(col)
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else str(r["name"])
        t.add_row(
            name,
            "yes" if r["installed"] else "no",
            "yes" if r["cached"] else "no",
            str(r["description"]),
        )
    Console().print(t)
