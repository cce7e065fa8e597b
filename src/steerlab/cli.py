"""Command line: a thin layer over the Python API. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_common import (
    AdapterOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    QuietOpt,
    TrustOpt,
    load_for_cli,
    user_errors,
)
from .cli_discover import discover
from .cli_organism import organism_app
from .cli_refusal import refusal
from .errors import SteerlabError
from .models.registry import DEFAULT_MODEL

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="steerlab: find, read, steer with and erase directions in language models.",
)


@app.command()
@user_errors
def models(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the built-in offline models and whether each is installed and cached."""
    from .models.fetch import builtin_status
    from .models.registry import BUILTIN_MODELS

    rows = [builtin_status(m) for m in BUILTIN_MODELS.values()]
    for r in rows:
        r["default"] = r["name"] == DEFAULT_MODEL
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="built-in models (any --model also takes an HF id, a local dir or a .gguf)")
    for col in ("name", "installed", "cached", "description"):
        t.add_column(col)
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else str(r["name"])
        t.add_row(
            name,
            "yes" if r["installed"] else "no",
            "yes" if r["cached"] else "no",
            str(r["description"]),
        )
    Console().print(t)


@app.command()
@user_errors
def extract(
    positive: Annotated[str, typer.Option("--positive", "-p", help="prompt file or builtin:NAME")],
    negative: Annotated[str, typer.Option("--negative", "-n", help="prompt file or builtin:NAME")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the .safetensors")],
    model: ModelOpt = DEFAULT_MODEL,
    method: Annotated[str, typer.Option(help="mean_diff | pca | logistic | leace")] = "mean_diff",
    layers: Annotated[str, typer.Option(help="all | L | A:B | L1,L2")] = "all",
    position: Annotated[str, typer.Option(help="last | instruction-end | mean")] = "last",
    site: Annotated[str, typer.Option(help="resid_pre | resid_post")] = "resid_pre",
    column: Annotated[str | None, typer.Option(help="field/column holding the text")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    no_chat: Annotated[
        bool, typer.Option("--no-chat", help="do not apply the chat template")
    ] = False,
    allow_unbalanced: Annotated[
        bool, typer.Option(help="accept sets of very different sizes")
    ] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    adapter: AdapterOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fit a direction per layer from two contrast sets and save it as an artifact."""
    from .directions.extract import check_sets
    from .directions.methods import METHODS
    from .io.prompts import read_prompts
    from .ui import progress_bar, set_quiet, status

    set_quiet(quiet)
    if method not in METHODS:
        raise SteerlabError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if site not in ("resid_pre", "resid_post"):
        raise SteerlabError(f"unknown site {site!r}: use resid_pre or resid_post")
    pos_spec: str | int = int(position) if position.lstrip("-").isdigit() else position
    if pos_spec not in ("last", "instruction-end", "mean") and not (
        isinstance(pos_spec, int) and pos_spec < 0
    ):
        raise SteerlabError(f"unknown position {position!r}: use last, instruction-end, mean or -k")
    pos_set = read_prompts(positive, column=column)
    neg_set = read_prompts(negative, column=column)
    check_sets(pos_set, neg_set, paired=METHODS[method].paired, allow_unbalanced=allow_unbalanced)
    lm = load_for_cli(model, device, dtype, device_map, trust_remote_code, adapter)
    from .capture import resolve_layers
    from .directions.extract import extract as run_extract

    resolve_layers(layers, lm.info.n_layers)  # fail before any compute
    with progress_bar("capturing activations", len(pos_set) + len(neg_set)) as advance:
        d = run_extract(
            lm,
            pos_set,
            neg_set,
            method=method,
            layers=layers,
            position=pos_spec,
            site=site,
            batch_size=batch_size,
            chat=False if no_chat else None,
            allow_unbalanced=allow_unbalanced,
            progress=advance,
        )
    d.save(output)
    norms = d.meta["norms"]
    best = max(range(len(norms)), key=norms.__getitem__)
    status(
        f"wrote {output}: {method} at {len(d.layers)} layer(s), site {site}, position "
        f"{position}; largest norm {norms[best]:.3g} at layer {d.layers[best]}"
    )


@app.command()
@user_errors
def generate(
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="a prompt (repeatable)")
    ] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", help="prompt file")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    vector: Annotated[Path | None, typer.Option(help="direction artifact to add")] = None,
    layer: Annotated[str | None, typer.Option(help="layer(s) to steer at: L, A:B, L1,L2")] = None,
    coeff: Annotated[float, typer.Option(help="steering coefficient")] = 1.0,
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
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    adapter: AdapterOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate, optionally with steering (--vector), ablation (--ablate) or clamping (--clamp)."""
    from contextlib import ExitStack

    from .directions.artifact import Direction
    from .generation import generate as run_generate
    from .interventions import ablate as do_ablate
    from .interventions import clamp as do_clamp
    from .interventions import steer as do_steer
    from .io.prompts import read_prompts
    from .ui import progress_bar, set_quiet

    set_quiet(quiet or json_out)
    texts = list(prompt or []) + (read_prompts(prompts) if prompts else [])
    if not texts:
        raise SteerlabError("give at least one --prompt or a --prompts file")
    if clamp is not None and value is None:
        raise SteerlabError("--clamp needs --value")
    if steer_positions not in ("all", "generated"):
        raise SteerlabError("--positions must be all or generated")
    lm = load_for_cli(model, device, dtype, device_map, trust_remote_code, adapter)
    strict = not force
    from .capture import resolve_layers

    layers = resolve_layers(layer, lm.info.n_layers) if layer is not None else None
    row = direction_layer if direction_layer is not None else (layers[0] if layers else None)

    def load(p: Path) -> Direction:
        return Direction.load(p, model_info=lm.info, strict=strict)

    interventions: list[Callable[[], Any]] = []
    if vector is not None:
        dv = load(vector)
        interventions.append(
            lambda: do_steer(
                lm.model,
                dv,
                layers=layers,
                coeff=coeff,
                positions=steer_positions,
                adapter=lm.adapter,
            )
        )  # type: ignore[arg-type]
    if ablate is not None:
        da = load(ablate)
        r_layer = row if row is not None or len(da.layers) != 1 else da.layers[0]
        da.vector(r_layer)  # fail early if the row is missing
        interventions.append(lambda: do_ablate(lm.model, da, layer=r_layer, adapter=lm.adapter))
    if clamp is not None:
        dc = load(clamp)
        c_layer = row if row is not None or len(dc.layers) != 1 else dc.layers[0]
        dc.vector(c_layer)
        interventions.append(
            lambda: do_clamp(
                lm.model,
                dc,
                float(value),
                layer=c_layer,  # type: ignore[arg-type]
                adapter=lm.adapter,
            )
        )
    gen_kw: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        seed=seed,
        chat=False if no_chat else None,
    )
    baseline: list[str] | None = None
    if compare or not interventions:
        with progress_bar("generating (unsteered)", len(texts)) as advance:
            baseline = run_generate(lm.model, lm.tokenizer, texts, progress=advance, **gen_kw)
    steered: list[str] | None = None
    if interventions:
        with ExitStack() as stack, progress_bar("generating (intervened)", len(texts)) as advance:
            for make in interventions:
                stack.enter_context(make())
            steered = run_generate(lm.model, lm.tokenizer, texts, progress=advance, **gen_kw)
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


app.command("refusal")(refusal)
app.command("discover")(discover)
app.add_typer(organism_app, name="organism")


def main() -> None:
    try:
        app()
    except SteerlabError as e:  # raised outside a command body (e.g. in a callback)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
