"""The ``steerlab`` typer app: every command module registered under its name."""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from .common import main_guard
from .compare import compare
from .discover import discover
from .export import export_app, import_app
from .extract import extract
from .generate import generate
from .models import models
from .organism import organism_app
from .probe import probe
from .refusal import refusal
from .serve import serve
from .sweep import sweep

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="steerlab: find, read, steer with and erase directions in language models.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steerlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """steerlab: find, read, steer with and erase directions in language models."""


app.command("models")(models)
app.command("extract")(extract)
app.command("generate")(generate)
app.command("refusal")(refusal)
app.command("discover")(discover)
app.command("sweep")(sweep)
app.command("probe")(probe)
app.command("compare")(compare)
app.command("serve")(serve)
app.add_typer(organism_app, name="organism")
app.add_typer(export_app, name="export")
app.add_typer(import_app, name="import")


def main() -> None:
    main_guard(app)


if __name__ == "__main__":
    main()
