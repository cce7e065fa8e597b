"""Progress bars and status lines (rich), all switchable off with ``quiet``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["console", "progress_bar", "quiet_transformers", "set_quiet", "status"]

console = Console(stderr=True)
_QUIET = {"on": False}


def set_quiet(quiet: bool) -> None:
    """Turn steerlab's own progress bars and status lines off (or on); quiet also silences the
    hub's download bars and transformers' warnings."""
    _QUIET["on"] = quiet
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass


def quiet_transformers() -> None:
    """On the command line steerlab reports progress itself: hide transformers' own bars
    ("Loading weights", "Writing model shards") and the deprecation warnings of its and torch's
    internals, which name nothing the user typed. Its other warnings (e.g. weights missing from
    a checkpoint) and the hub's download bars stay."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch)\b")
    warnings.filterwarnings("ignore", message=r".*past_key_values.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a bar unless quiet."""
    if _QUIET["on"]:
        yield lambda _n: None
        return
    cols = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, console=console, transient=False) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


def status(message: str) -> None:
    if not _QUIET["on"]:
        console.print(f"[dim]·[/dim] {message}")
