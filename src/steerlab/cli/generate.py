"""``steerlab generate``: completions, optionally steered, ablated or clamped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command
from .extract import LAYERS_HELP


@command
def generate(
    opts: ModelOptions,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="a prompt (repeatable)")
    ] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", help="prompt file")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[Path | None, typer.Option(help="direction artifact to add")] = None,
    layer: Annotated[str | None, typer.Option(help=f"layer(s) to steer at: {LAYERS_HELP}")] = None,
    coeff: Annotated[float, typer.Option(help="steering coefficient (finite)")] = 1.0,
    steer_positions: Annotated[str, typer.Option("--positions", help="all | generated")] = "all",
    ablate: Annotated[Path | None, typer.Option(help="direction artifact to ablate")] = None,
    clamp: Annotated[Path | None, typer.Option(help="direction artifact to clamp")] = None,
    value: Annotated[float | None, typer.Option(help="projection value for --clamp")] = None,
    direction_layer: Annotated[
        int | None,
        typer.Option(
            help="row of a multi-layer artifact used by --ablate/--clamp (default: --layer)"
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    seed: int = 0,
    compare: Annotated[bool, typer.Option(help="also show the unsteered output")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    no_chat: Annotated[
        bool, typer.Option("--no-chat", help="do not apply the chat template")
    ] = False,
    force: Annotated[bool, typer.Option(help="use an artifact made for another model")] = False,
) -> None:
    """Generate, optionally with steering (--vector), ablation (--ablate) or clamping (--clamp)."""
    from ..capture import resolve_layers
    from ..directions.artifact import Direction
    from ..errors import SteerlabError
    from ..generation import generate as run_generate
    from ..interventions import Ablate, Clamp, Intervention, Steer, apply, check_coeff
    from ..io.prompts import read_prompts
    from ..ui import progress_bar, set_quiet

    set_quiet(opts.quiet or json_out)
    texts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    if not texts:
        raise SteerlabError("give at least one --prompt or a --prompts file")
    if clamp is not None and value is None:
        raise SteerlabError("--clamp needs --value")
    if steer_positions not in ("all", "generated"):
        raise SteerlabError(f"--positions must be all or generated, got {steer_positions!r}")
    check_coeff(coeff, "--coeff")
    if value is not None:
        check_coeff(value, "--value")
    lm = opts.load(model)
    layers = resolve_layers(layer, lm.info.n_layers) if layer is not None else None
    row = direction_layer if direction_layer is not None else (layers[0] if layers else None)

    def load(p: Path) -> Direction:
        return Direction.load(p, model_info=lm.info, strict=not force)

    def row_of(d: Direction) -> int | None:
        r = row if row is not None or len(d.layers) != 1 else d.layers[0]
        d.vector(r)  # fail early if the row is missing
        return r

    treatments: list[Intervention] = []
    if vector is not None:
        treatments.append(
            Steer(load(vector), layers=layers, coeff=coeff, positions=steer_positions)
        )  # type: ignore[arg-type]
    if ablate is not None:
        da = load(ablate)
        treatments.append(Ablate(da, layer=row_of(da)))
    if clamp is not None:
        dc = load(clamp)
        treatments.append(Clamp(dc, float(value), layer=row_of(dc)))  # type: ignore[arg-type]
    gen_kw: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        seed=seed,
        chat=False if no_chat else None,
    )
    baseline: list[str] | None = None
    if compare or not treatments:
        with progress_bar("generating (unsteered)", len(texts)) as advance:
            baseline = run_generate(lm.model, lm.tokenizer, texts, progress=advance, **gen_kw)
    steered: list[str] | None = None
    if treatments:
        with apply(lm, treatments) as m, progress_bar("generating (intervened)", len(texts)) as adv:
            steered = run_generate(m.model, m.tokenizer, texts, progress=adv, **gen_kw)
    _print_generations(texts, baseline, steered, json_out)


def _print_generations(
    texts: list[str], base: list[str] | None, steered: list[str] | None, json_out: bool
) -> None:
    rows = []
    for i, t in enumerate(texts):
        row: dict[str, str] = {"prompt": t}
        if base is not None:
            row["unsteered"] = base[i]
        if steered is not None:
            row["steered"] = steered[i]
        rows.append(row)
    if json_out:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=True)
    t.add_column("prompt", ratio=1)
    if base is not None:
        t.add_column("unsteered", ratio=2)
    if steered is not None:
        t.add_column("steered", ratio=2)
    for row in rows:
        t.add_row(*row.values())
    Console().print(t)
