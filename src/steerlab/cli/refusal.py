"""``steerlab refusal``: the command line of the refusal-direction pipeline.

The pipeline's options are the ``cli`` fields of :class:`~steerlab.refusal.RefusalConfig`; one
left out takes the config's default (or the ``--quick`` preset's), and the config validates
the values, its messages naming the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..refusal.config import QUICK, RefusalConfig
from ..refusal.result import RefusalReport
from .common import ModelOptions, command, num, pct, print_notes
from .options import Given


@command(config=RefusalConfig, presets={"--quick": QUICK})
def refusal(
    opts: ModelOptions,
    given: Given,
    out: Annotated[Path, typer.Option(help="run directory (report, direction, cache)")] = Path(
        "runs/refusal"
    ),
    export: Annotated[Path | None, typer.Option(help="write the orthogonalized model here")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an export dir that steerlab made")
    ] = False,
    quick: Annotated[bool, typer.Option(help="smaller preset for a laptop CPU")] = False,
    template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
) -> None:
    """Find the refusal direction, evaluate every intervention, optionally export the model."""
    from ..errors import SteerlabError
    from ..refusal import run_refusal
    from ..runs import check_new_dir
    from ..ui import progress_bar, status

    if out.exists() and not out.is_dir():
        raise SteerlabError(f"--out {out} exists and is not a directory")
    if export is not None:
        check_new_dir(export, overwrite=overwrite, keep=(out,), what="--export")
    if template is not None and not template.is_file():
        raise SteerlabError(f"--template file not found: {template}")
    # options typed override the preset, which overrides the config's defaults
    cfg = given.build(RefusalConfig, **(QUICK if quick else {}))
    lm = opts.load(cfg.model)
    if template is not None:
        lm.tokenizer.chat_template = template.read_text()
    engine = opts.make_engine(lm)
    try:
        report = run_refusal(
            lm,
            cfg,
            out,
            export_dir=export,
            overwrite=overwrite,
            progress=progress_bar,
            status=status,
            engine=engine,
        )
    finally:
        engine.close()
    _print_summary(report, out)


def _print_summary(report: RefusalReport, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sel = report.selected
    assert sel is not None and sel.coeff is not None  # a complete run selected one
    t = Table(
        title=f"refusal direction: layer {sel.layer}, position {sel.position}, coeff {sel.coeff:g}"
    )
    cols = (
        "variant",
        "harmful refusal",
        "strict",
        "harmless refusal",
        "strict",
        "KL harmless",
        "CE completions",
    )
    for col in cols:
        t.add_column(col)

    for name, m in report.variants.items():
        t.add_row(
            name,
            pct(m.harmful.refusal_rate),
            pct(m.harmful.refusal_rate_strict),
            pct(m.harmless.refusal_rate),
            pct(m.harmless.refusal_rate_strict),
            num(m.kl_harmless),
            num(m.ce_loss_completions),
        )
    con = Console()
    con.print(t)
    span = report.directions or {}  # None with one direction in older runs
    if span.get("k", 1) > 1:
        where = "; ".join(
            f"layer {c['layer']} position {c['position']}" for c in span["candidates"]
        )
        con.print(
            f"{span['k']} directions ablated together ({where}): ablation, orthogonalized and "
            "the export remove their span; addition, subtraction and clamp use the first.",
            highlight=False,
        )
    for v in report.verdicts:
        mark = "[green]ok[/green]" if v.level == "ok" else "[yellow]warning[/yellow]"
        con.print(f"{mark}: {v.text}", highlight=False)
    print_notes(report.notes)
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in report.timings.items())
    con.print(f"timings (this run): {timing}")
    if report.resumed_steps:
        total = report.compute_seconds["total"]
        con.print(f"resumed {', '.join(report.resumed_steps)}: {total:.0f}s of compute in all")
    con.print(f"report: {out / 'report.html'} (and report.json, direction.safetensors)")
    if report.export and report.export.get("error") is None:
        con.print(f"exported model: {report.export['dir']}")
