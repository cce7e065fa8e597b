"""``steerlab discover``: unsupervised steering vectors (MELBO) beside a random control."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import DataError
from ..melbo.config import DiscoverConfig, MelboConfig
from ..melbo.findings import DiscoverReport
from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command, num, pct, print_notes
from .options import Given


@command(config=(MelboConfig, DiscoverConfig))
def discover(
    opts: ModelOptions,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="a prompt (repeatable)")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="prompt file or builtin:NAME")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    *,
    given: Given,
    out: Annotated[Path, typer.Option(help="run directory (vectors, report, cache)")] = Path(
        "runs/discover"
    ),
) -> None:
    """Find steering vectors without labels (MELBO), beside random ones, and show what they do.

    Writes vectors.safetensors, vectors/vec_K.safetensors (for generate --vector),
    completions.json, report.json and report.html into --out; rerun to resume.
    """
    from ..io.prompts import read_prompts
    from ..melbo.config import parse_positions
    from ..melbo.discover import run_discover
    from ..ui import progress_bar, status

    texts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    if not texts:
        raise DataError("give at least one --prompt or a --prompts file")
    if any(not t.strip() for t in texts):
        raise DataError("the prompt set contains an empty prompt")
    melbo = given.build(MelboConfig)
    parse_positions(melbo.token_positions)  # before the model loads
    cfg = given.build(DiscoverConfig, melbo=melbo)
    lm = opts.load(model)
    report = run_discover(lm, texts, out, cfg, progress=progress_bar, status=status)
    _print_summary(report, out)


def _print_summary(report: DiscoverReport, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rad, mel = report.radius, report.melbo
    t = Table(
        title=f"MELBO: {mel['num_vectors']} vectors, R = {rad.value:.4g} ({rad.mode}), "
        f"layer {mel['source_layer']} -> {mel['target_layer']}"
    )
    cols = ("vectors", "changed", "edit distance", "best new opening", "loss", "loss increase")
    for col in cols:
        t.add_column(col)
    for kind, m in report.summary.items():
        t.add_row(
            kind,
            pct(m.changed),
            num(m.edit_distance),
            pct(m.new_opening_max),
            num(m.loss),
            num(m.loss_increase),
        )
    con = Console()
    con.print(t)
    con.print(f"unsteered loss {num(report.unsteered_loss)}; {len(report.clusters)} groups")
    print_notes(report.notes)
    con.print(f"report: {out / 'report.html'} (and report.json, completions.json, vectors/)")
