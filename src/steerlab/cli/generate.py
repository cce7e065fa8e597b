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
    vector: Annotated[
        list[Path] | None,
        typer.Option(
            help="direction artifact to add; repeat to add several (each with its own --layer "
            "and --coeff, in the same order, or one --layer / --coeff for all)"
        ),
    ] = None,
    layer: Annotated[
        list[str] | None,
        typer.Option(help=f"layer(s) to steer at: {LAYERS_HELP}; once per --vector, or once"),
    ] = None,
    coeff: Annotated[
        list[float] | None,
        typer.Option(help="steering coefficient (finite; default 1); once per --vector, or once"),
    ] = None,
    steer_positions: Annotated[str, typer.Option("--positions", help="all | generated")] = "all",
    ablate: Annotated[
        list[Path] | None,
        typer.Option(
            help="direction artifact to ablate; repeat to ablate the span of several "
            "(orthonormalized)"
        ),
    ] = None,
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
    """Generate, optionally with steering (--vector), ablation (--ablate) or clamping (--clamp).

    Several vectors: ``--vector a --layer 10 --coeff 4 --vector b --layer 14 --coeff -2`` adds
    both; ``--ablate a --ablate b`` removes the span of both."""
    from ..capture import resolve_layers
    from ..io.prompts import read_prompts
    from ..ui import progress_bar, set_quiet

    set_quiet(opts.quiet or json_out)
    texts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    vectors, layer_specs, coeffs = list(vector or []), list(layer or []), list(coeff or [])
    _check_args(texts, clamp, value, steer_positions, vectors, layer_specs, coeffs)
    lm = opts.load(model)
    per_layers = [resolve_layers(x, lm.info.n_layers) for x in layer_specs]
    treatment = _treatment(
        lm, vectors, per_layers, coeffs, steer_positions, list(ablate or []), clamp, value,
        direction_layer, force,
    )  # fmt: skip
    gen_kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    gen_kw |= dict(temperature=temperature, seed=seed, chat=False if no_chat else None)
    treated = bool(vectors or ablate or clamp is not None)
    baseline: list[str] | None = None
    steered: list[str] | None = None
    engine = opts.make_engine(lm)
    try:
        if compare or not treated:
            with progress_bar("generating (unsteered)", len(texts)) as advance:
                baseline = engine.generate(lm, texts, None, progress=advance, **gen_kw)
        if treated:
            with progress_bar("generating (intervened)", len(texts)) as adv:
                steered = engine.generate(lm, texts, treatment, progress=adv, **gen_kw)
    finally:
        engine.close()
    _print_generations(texts, baseline, steered, json_out)


def _check_args(
    texts: list[str],
    clamp: Path | None,
    value: float | None,
    steer_positions: str,
    vectors: list[Path],
    layer_specs: list[str],
    coeffs: list[float],
) -> None:
    """Refuse inconsistent flags before the model loads."""
    from ..errors import SteerlabError
    from ..interventions import check_coeff

    if not texts:
        raise SteerlabError("give at least one --prompt or a --prompts file")
    if clamp is not None and value is None:
        raise SteerlabError("--clamp needs --value")
    if steer_positions not in ("all", "generated"):
        raise SteerlabError(f"--positions must be all or generated, got {steer_positions!r}")
    for c in coeffs:
        check_coeff(c, "--coeff")
    if value is not None:
        check_coeff(value, "--value")
    n_vec = max(1, len(vectors))
    for flag, given in (("--layer", layer_specs), ("--coeff", coeffs)):
        if len(given) not in (0, 1, n_vec):
            raise SteerlabError(
                f"{len(given)} {flag} values for {len(vectors)} --vector: give one {flag} per "
                f"--vector (in the same order), or one for all"
            )


def _treatment(
    lm: Any,
    vectors: list[Path],
    per_layers: list[list[int]],
    coeffs: list[float],
    steer_positions: str,
    ablate: list[Path],
    clamp: Path | None,
    value: float | None,
    direction_layer: int | None,
    force: bool,
) -> Any:
    """The intervention the flags ask for (additions, then ablation, then clamp), through the
    one spec parser the server uses too."""
    from ..directions.artifact import Direction
    from ..interventions.spec import treatment_from_spec

    layers = per_layers[0] if per_layers else None
    row = direction_layer if direction_layer is not None else (layers[0] if layers else None)
    loaded: dict[str, Direction] = {}

    def load(p: str) -> Direction:
        if p not in loaded:
            loaded[p] = Direction.load(Path(p), model_info=lm.info, strict=not force)
        return loaded[p]

    spec: dict[str, list[dict[str, Any]]] = {"steer": [], "ablate": [], "clamp": []}
    for i, path in enumerate(vectors):  # several: composed in order (their sum)
        lays = per_layers[i] if len(per_layers) > 1 else layers
        c = coeffs[i] if len(coeffs) > 1 else (coeffs[0] if coeffs else 1.0)
        item: dict[str, Any] = {"direction": str(path), "coeff": c, "positions": steer_positions}
        if lays is not None:
            item["layers"] = lays
        spec["steer"].append(item)
    spec["ablate"] = [{"direction": str(p), "layer": row} for p in ablate]
    if clamp is not None:
        spec["clamp"] = [{"direction": str(clamp), "layer": row, "value": float(value)}]  # type: ignore[arg-type]
    return treatment_from_spec(
        spec, load, n_layers=lm.info.n_layers, width=lm.info.d_model, where="treatment"
    )


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
