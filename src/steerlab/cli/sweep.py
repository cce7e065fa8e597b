"""``steerlab sweep``: which layer, which strength and which positions steer a behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, checked_behavior, command, num, print_notes

LAYERS_HELP = "A:B (end excluded) | L1,L2 | all; default: the middle 80% of the blocks"


@command
def sweep(
    behavior: Annotated[
        str, typer.Option("--behavior", "-b", help="builtin:NAME or a behaviour JSON file")
    ],
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[
        Path | None, typer.Option(help="a direction .safetensors (default: extract one)")
    ] = None,
    method: Annotated[
        str, typer.Option(help="mean_diff | pca | logistic | leace (when extracting)")
    ] = "mean_diff",
    layers: Annotated[str | None, typer.Option(help=LAYERS_HELP)] = None,
    coeffs: Annotated[
        str, typer.Option(help="auto, or multiples of the layer's residual norm: 0.25,0.5,1")
    ] = "auto",
    positions: Annotated[
        str, typer.Option(help="all | prompt | generated (comma list to sweep several)")
    ] = "all",
    search: Annotated[
        str, typer.Option(help="grid (every cell) | auto (successive halving)")
    ] = "grid",
    max_ce_increase: Annotated[
        float, typer.Option(help="fluency bound on the chosen cell, nats/token over unsteered")
    ] = 1.0,
    pairs: Annotated[
        int, typer.Option(help="K >= 2: every pair of the K best layers, and the layer profile")
    ] = 0,
    profile: Annotated[
        bool, typer.Option("--profile", help="per-layer sufficiency vs necessity")
    ] = False,
    random_control: Annotated[
        bool,
        typer.Option("--random-control", help="a norm-matched random vector at every grid cell"),
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    batch_rows: Annotated[int, typer.Option(min=1, help="rows per batched forward")] = 64,
    seed: int = 0,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="raw prompts, no template")] = False,
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
    from ..sweep.config import SweepConfig
    from ..sweep.pipeline import run_sweep
    from ..ui import progress_bar, status

    cfg = SweepConfig(
        layers=layers,
        coeffs=coeffs,
        positions=positions,
        method=method,  # type: ignore[arg-type]
        search=search,  # type: ignore[arg-type]
        max_ce_increase=max_ce_increase,
        max_new_tokens=max_new_tokens,
        batch_rows=batch_rows,
        pairs=pairs,
        profile=profile,
        random_control=random_control,
        seed=seed,
        chat=False if no_chat else None,
    )
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


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    ch = report["chosen"]
    t = Table(
        title=f"{report['behavior']['name']}: layer {ch['layer']}, coefficient {ch['coeff']:g} "
        f"({ch['positions']}), test split"
    )
    for col in ("", "score", "95% CI", "CE", "distinct-2", "n"):
        t.add_column(col)
    for name in ("steered", "unsteered", "random"):
        r = report["test"][name]
        lo, hi = r["ci"]
        t.add_row(
            name,
            num(r["score"]),
            f"[{num(lo)}, {num(hi)}]",
            num(r["ce"]),
            num(r["distinct2"]),
            str(r["n"]),
        )
    con = Console()
    con.print(t)
    s = report["search"]
    con.print(
        f"{s['cells_run']} of {s['full_grid_cells']} cells run ({s['mode']}); "
        f"{report['cost']['tokens_generated']} tokens generated"
    )
    notes = [report["verdict"]["text"]]
    if not ch["within_bound"]:
        notes.append("no cell met the fluency bound: the chosen cell is the best score regardless")
    print_notes(notes)
    con.print(f"report: {out / 'report.html'} (and sweep.json)")
