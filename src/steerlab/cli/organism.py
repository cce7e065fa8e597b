"""``steerlab organism``: models with a planted behaviour, to test discovery methods on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..models.registry import DEFAULT_MODEL
from ..organism.config import BackdoorConfig
from ..organism.result import OrganismRecord
from .common import ModelOpt, ModelOptions, command
from .options import Given

organism_app = typer.Typer(
    no_args_is_help=True, help="Model organisms: models with a planted behaviour."
)


@organism_app.command("backdoor")
@command(config=BackdoorConfig)
def backdoor(
    opts: ModelOptions,
    out: Annotated[Path, typer.Option(help="run directory: the adapter and organism.json")],
    model: ModelOpt = DEFAULT_MODEL,
    *,
    given: Given,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="retrain even if a cached organism fits")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="replace an --out that steerlab made (an earlier organism)")
    ] = False,
) -> None:
    """Train a LoRA backdoor: the trigger elicits the behaviour, other prompts answer normally.

    Reports the behaviour rate with and without the trigger on held-out prompts. The adapter
    is cached; load the organism anywhere with --model OUT (or --model BASE+OUT).
    """
    from ..organism.backdoor import check_out, train_backdoor
    from ..ui import progress_bar, status

    cfg = given.build(BackdoorConfig)
    cfg = replace(cfg, alpha=2 * cfg.rank)  # the usual LoRA scale, alpha / rank = 2
    check_out(out, overwrite)  # before the model loads
    lm = opts.load(model)
    rec = train_backdoor(
        lm,
        out,
        cfg,
        base_spec=model,
        overwrite=overwrite,
        use_cache=not no_cache,
        progress=progress_bar,
        status=status,
    )
    _print(rec, out)


def _print(rec: OrganismRecord, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"behaviour {rec.behavior!r} on {rec.n_heldout} held-out prompts")
    for col in ("model", "with trigger [95% CI]", "without trigger [95% CI]"):
        t.add_column(col)
    for name, r in rec.rates.items():
        t.add_row(name, r.with_trigger.cell(), r.without_trigger.cell())
    con = Console()
    con.print(t)
    con.print(f"organism: {out} (load it with --model {out})")
