"""mkdocs hooks: the pages generated from the code and the committed results at build time.

* ``reference/cli.md``: typer's own Markdown for the ``steerlab`` app (every command, option,
  default), from :func:`cli_markdown`; ``tests/test_docs.py`` compares it with ``--help``.
* ``results/index.md``: ``docs/gen_results.py`` over ``benchmarks/results/*.json``.

Nothing here is written by hand, so neither page can drift from what it describes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

CLI_INTRO = """# Command line

Generated at build time from the `steerlab` typer app (typer's own Markdown writer), so every
command, option and default here is what `steerlab COMMAND --help` prints. Conventions shared
by every command: layer indices on [The residual stream and layers](../concepts/residual-stream.md),
prompt files and `--model` on [Your own model, dataset or scorer](../how-to/bring-your-own.md),
the options that load a model on [GPUs and big models](../how-to/gpus.md), exit codes on
[Troubleshooting](../troubleshooting.md).

"""


def cli_markdown() -> str:
    """Every ``steerlab`` command and option as Markdown (typer's ``utils docs`` output)."""
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from steerlab.cli.app import app

    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd, info_name="steerlab")
    body = get_docs_for_click(obj=cmd, ctx=ctx, name="steerlab")
    # typer titles the page "# `steerlab`"; the page has its own title, so shift one level down
    lines = [("#" + line) if line.startswith("#") else line for line in body.splitlines()]
    return CLI_INTRO + "\n".join(lines) + "\n"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def results_markdown() -> str:
    """The Results page (``docs/gen_results.py``)."""
    return _load("gen_results").page()


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site (mkdocs >= 1.6: ``File.generated``)."""
    from mkdocs.structure.files import File

    for uri, text in (
        ("reference/cli.md", cli_markdown()),
        ("results/index.md", results_markdown()),
    ):
        files.append(File.generated(config, uri, content=text))
    return files
