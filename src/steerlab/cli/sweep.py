"""``steerlab sweep``: which layer, which strength and which positions steer a behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..models.registry import DEFAULT_MODEL
from ..sweep.config import SweepConfig
from .common import ModelOpt, ModelOptions, checked_behavior, command, num, print_notes
from .options import Given

if TYPE_CHECKING:
    from ..sweep.result import SweepReport


@command(config=SweepConfig)
def sweep(
    behavior: Annotated[
        str, typer.Option("--behavior", "-b", help="builtin:NAME or a behaviour JSON file")
    ],
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[
        Path | None, typer.Option(help="a direction .safetensors (default: extract one)")
    ] = None,
    *,
    given: Given,
    force: Annotated[
        bool, typer.Option(help="use a --vector made for another model of the same width")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="run directory (sweep.json, report.html, cache)")
    ] = Path("runs/sweep"),
) -> None:
    """Evaluate a layer x coefficient x positions grid on selection prompts, pick a cell under a
    fluency bound, and re-score it on test prompts beside the unsteered model and a random vector
    of the same norm. Writes sweep.json and report.html into --out; rerun to resume."""
    from ..directions.artifact import Direction
    from ..sweep.pipeline import run_sweep
    from ..ui import progress_bar, status

    cfg = given.build(SweepConfig)
    beh = checked_behavior(behavior)
    lm = opts.load(model)
    vec = Direction.load(vector, model_info=lm.info, strict=not force) if vector else None
    engine = opts.make_engine(lm)
    try:
        report = run_sweep(
            lm, beh, cfg, out, vector=vec, progress=progress_bar, status=status, engine=engine
        )
    finally:
        engine.close()
    _print_summary(report, out)


def _print_summary(report: SweepReport, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    ch, test = report.chosen, report.test
    t = Table(
        title=f"{report.behavior['name']}: layer {ch.layer}, coefficient {ch.coeff:g} "
        f"({ch.positions}), test split"
    )
    for col in ("", "score", "95% CI", "CE", "distinct-2", "n"):
        t.add_column(col)
    for label, r in (
        ("steered", test.steered),
        ("unsteered", test.unsteered),
        (f"random (mean of {test.random.n_directions})", test.random),
    ):
        lo, hi = r.ci
        t.add_row(label, num(r.score), f"[{num(lo)}, {num(hi)}]", num(r.ce), num(r.distinct2),
                  str(r.n))  # fmt: skip
    con = Console()
    con.print(t)
    s = report.search
    con.print(
        f"{s['cells_run']} of {s['full_grid_cells']} cells run ({s['mode']}); "
        f"{report.cost['tokens_generated']} tokens generated"
    )
    notes = [report.verdict.text]
    if not ch.within_bound:
        notes.append("no cell met the fluency bound: the chosen cell is the best score regardless")
    print_notes(notes)
    con.print(f"report: {out / 'report.html'} (and sweep.json)")
