"""``steerlab discover``: unsupervised steering vectors (MELBO) beside a random control."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import DataError, SteerlabError, VectorError
from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command, num, pct, print_notes


def _number_or(text: str, flag: str, word: str, above: float) -> float | None:
    """``text`` as a finite number > ``above``, or None when it is ``word``."""
    if text.lower() == word:
        return None
    try:
        v = float(text)
    except ValueError:
        msg = f"{flag} must be a number > {above:g} or {word}, got {text!r}"
        raise SteerlabError(msg) from None
    if not (math.isfinite(v) and v > above):
        raise VectorError(f"{flag} must be a finite number > {above:g}, got {text}")
    return v


def _radius(text: str) -> float | str:
    r = _number_or(text, "--radius", "auto", 0.0)
    return "auto" if r is None else r


@command
def discover(
    opts: ModelOptions,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="a prompt (repeatable)")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="prompt file or builtin:NAME")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    source_layer: Annotated[
        int | None, typer.Option(help="S: vectors are added at resid_pre[S] (default ~L/4)")
    ] = None,
    target_layer: Annotated[
        int | None, typer.Option(help="T > S: the change is maximized at resid_pre[T]")
    ] = None,
    radius: Annotated[str, typer.Option(help="R, the norm of every vector, or auto")] = "auto",
    num_vectors: Annotated[int, typer.Option(min=1, help="K learned (and K random) vectors")] = 8,
    steps: Annotated[int, typer.Option(min=0, help="optimization steps")] = 200,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (default 1e-3 * R)")] = None,
    p: Annotated[float, typer.Option("--p", help="exponent of the per-token change")] = 2.0,
    q: Annotated[float, typer.Option("--q", help="per-prompt sum raised to 1/q")] = 1.0,
    orthogonal: Annotated[bool, typer.Option(help="keep the K vectors orthogonal")] = False,
    token_positions: Annotated[str, typer.Option(help="all | last:N")] = "all",
    massive_ratio: Annotated[
        str,
        typer.Option(
            help="leave target tokens with ||Z_T|| > this x the prompt median (attention "
            "sinks) out of the objective; none keeps them"
        ),
    ] = "10",
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="run directory (vectors, report, cache)")] = Path(
        "runs/discover"
    ),
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    batch_size: Annotated[int, typer.Option(min=1, help="rows per generation batch")] = 32,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="vectors per resumable training chunk")
    ] = 4,
    fluency_margin: Annotated[
        float,
        typer.Option(
            min=0.0, help="--radius auto: nats/token the learned completions may add to the loss"
        ),
    ] = 1.5,
    sweep_vectors: Annotated[int, typer.Option(min=1, help="--radius auto: vectors per R")] = 4,
    sweep_steps: Annotated[
        int | None, typer.Option(min=0, help="--radius auto: steps per R (default steps/4)")
    ] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="raw prompts, no template")] = False,
) -> None:
    """Find steering vectors without labels (MELBO), beside random ones, and show what they do.

    Writes vectors.safetensors, vectors/vec_K.safetensors (for generate --vector),
    completions.json, report.json and report.html into --out; rerun to resume.
    """
    from ..io.prompts import read_prompts
    from ..melbo.config import MelboConfig, parse_positions
    from ..melbo.discover import DiscoverConfig, run_discover
    from ..ui import progress_bar, status

    texts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    if not texts:
        raise DataError("give at least one --prompt or a --prompts file")
    if any(not t.strip() for t in texts):
        raise DataError("the prompt set contains an empty prompt")
    parse_positions(token_positions)
    melbo = MelboConfig(
        source_layer=source_layer,
        target_layer=target_layer,
        num_vectors=num_vectors,
        steps=steps,
        lr=lr,
        p=p,
        q=q,
        orthogonal=orthogonal,
        token_positions=token_positions,
        massive_ratio=_number_or(massive_ratio, "--massive-ratio", "none", 1.0),
        seed=seed,
        chat=False if no_chat else None,
    )
    cfg = DiscoverConfig(
        melbo=melbo,
        radius=_radius(radius),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        chunk_size=chunk_size,
        fluency_margin=fluency_margin,
        sweep_vectors=sweep_vectors,
        sweep_steps=sweep_steps,
    )
    lm = opts.load(model)
    report = run_discover(lm, texts, out, cfg, progress=progress_bar, status=status)
    _print_summary(report, out)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rad, mel = report["radius"], report["config"]["melbo"]
    t = Table(
        title=f"MELBO: {mel['num_vectors']} vectors, R = {rad['value']:.4g} ({rad['mode']}), "
        f"layer {mel['source_layer']} -> {mel['target_layer']}"
    )
    cols = ("vectors", "changed", "edit distance", "best new opening", "loss", "loss increase")
    for col in cols:
        t.add_column(col)
    for kind, m in report["summary"].items():
        t.add_row(
            kind,
            pct(m["changed"]),
            num(m["edit_distance"]),
            pct(m["new_opening_max"]),
            num(m["loss"]),
            num(m["loss_increase"]),
        )
    con = Console()
    con.print(t)
    con.print(f"unsteered loss {num(report['unsteered_loss'])}; {len(report['clusters'])} groups")
    print_notes(report["notes"])
    con.print(f"report: {out / 'report.html'} (and report.json, completions.json, vectors/)")
