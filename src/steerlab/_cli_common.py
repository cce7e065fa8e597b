"""Shared pieces of the command line: option types, model loading, error handling."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from .errors import SteerlabError

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="built-in name, HF id, local dir or .gguf")
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps")]
DtypeOpt = Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto")]
DeviceMapOpt = Annotated[str | None, typer.Option(help='e.g. "auto" to span several GPUs')]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
TrustOpt = Annotated[bool, typer.Option(help="allow model code from the hub (off by default)")]
AdapterOpt = Annotated[str | None, typer.Option(help="JSON adapter override, see docs")]


def _fail(msg: str) -> None:
    from .ui import console

    console.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn steerlab's user-facing errors into one line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SteerlabError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted")

    return wrapper  # type: ignore[return-value]


def load_for_cli(
    model: str, device: str, dtype: str, device_map: str | None, trust: bool, adapter: str | None
) -> Any:
    from .models.load import load_model
    from .ui import status

    override = None
    if adapter:
        try:
            override = json.loads(adapter)
        except json.JSONDecodeError as e:
            raise SteerlabError(f"--adapter is not valid JSON: {e}") from None
    try:
        return load_model(
            model,
            device=device,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust,
            adapter=override,
            progress=status,
        )
    except ValueError as e:
        raise SteerlabError(str(e)) from None
