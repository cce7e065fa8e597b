"""``steerlab compare``: steering against prompting and finetuning on the same N examples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..compare.config import QUICK, CompareConfig
from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, checked_behavior, command, print_notes
from .options import Given

if TYPE_CHECKING:
    from ..compare.result import CompareReport


@command(config=CompareConfig, presets={"--quick": QUICK})
def compare(
    behavior: Annotated[
        str, typer.Option("--behavior", "-b", help="builtin:NAME or a behaviour JSON file")
    ],
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    *,
    given: Given,
    quick: Annotated[
        bool, typer.Option("--quick", help="N = 1,8, ONE draw, fewer candidates, shorter replies")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="run directory (compare.json, report.html, cache)")
    ] = Path("runs/compare"),
) -> None:
    """Compare steering (mean difference, PCA, a random control) with prompting (zero-shot,
    system prompt, few-shot, contrast prompt), LoRA SFT, DPO and their combinations, each
    given the same N training pairs, on held-out prompts with intervals. Writes compare.json
    and report.html into --out; rerun the same command to resume."""
    from ..compare import run_compare
    from ..ui import progress_bar, status

    # options typed override the preset, which overrides the config's defaults
    cfg = given.build(CompareConfig, **(QUICK if quick else {}))
    beh = checked_behavior(behavior)
    lm = opts.load(model)
    engine = opts.make_engine(lm)
    try:
        report = run_compare(lm, beh, cfg, out, progress=progress_bar, status=status, engine=engine)
    finally:
        engine.close()
    _print_summary(report, out)


def _print_summary(report: CompareReport, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sizes = report.train_sizes
    t = Table(title=f"{report.behavior['name']}: test score [95% CI] by training pairs N")
    t.add_column("method")
    for n in sizes:
        t.add_column(f"N={n}", justify="right")
    won = {n: w.method for n in sizes if (w := report.winner(n)) is not None}
    for m in report.methods:
        cells = []
        for n in sizes:
            r = report.row(m, n)
            if r is None:
                cells.append("—")
                continue
            lo, hi = r.ci
            text = f"{r.score:.3f} [{lo:.2f},{hi:.2f}]"
            text += " †" if not r.within_bound else ""
            text += " ‡" if r.degenerate else ""
            if won.get(n) == m:
                text = f"[bold]{text} *[/bold]"
            cells.append(text)
        t.add_row(m, *cells)
    con = Console()
    con.print(t)
    notes = [f"{k} not run: {v}" for k, v in report.skipped.items()] + [
        "* wins at that N: its family's best beats the other families' bests by paired tests "
        "(Holm p < 0.05), within the fluency bound"
        if any(won.values())
        else "no method wins at any N by the paired contrasts (within the fluency bound)",
        "† over the fluency bound on selection; ‡ one reply for every prompt (degenerate)",
    ]
    print_notes(notes)
    con.print(f"report: {out / 'report.html'} (and compare.json)")
