"""``steerlab export gguf|hf`` and ``steerlab import gguf``: directions where stock engines run
them (llama.cpp control vectors; a plain transformers checkpoint with the steering built in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command

export_app = typer.Typer(
    no_args_is_help=True,
    help="Write a direction for another engine: a llama.cpp control vector (gguf) or a plain "
    "Hugging Face checkpoint with the steering in its weights (hf).",
)
import_app = typer.Typer(
    no_args_is_help=True, help="Read a direction made elsewhere (llama.cpp / repeng GGUF)."
)

VecArg = Annotated[Path, typer.Argument(help="a steerlab direction (.safetensors)")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="where to write")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace an existing output steerlab made")]
LAYERS_HELP = (
    "steerlab layers A:B (end excluded), L or L1,L2, in the direction's site convention; "
    "default: the direction's own layers"
)


@export_app.command("gguf")
@command
def export_gguf(
    vector: VecArg,
    output: OutOpt,
    layers: Annotated[str | None, typer.Option(help=LAYERS_HELP)] = None,
    coeff: Annotated[float, typer.Option(help="multiplier baked into the file")] = 1.0,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="only for an artifact that does not record its model"),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="print what was written as JSON")
    ] = False,
) -> None:
    """Write a llama.cpp control vector (use it with llama-cli --control-vector F.gguf)."""
    from ..directions.artifact import Direction
    from ..export.gguf import write_control_vector
    from ..ui import status

    d = Direction.load(vector)
    n_layers = model_type = None
    if model is not None:
        from ..models.load import load_model

        mi = load_model(model).info
        n_layers, model_type = mi.n_layers, mi.model_type
    info = write_control_vector(
        d,
        output,
        layers=layers,
        coeff=coeff,
        n_layers=n_layers,
        model_type=model_type,
        overwrite=overwrite,
    )
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    status(
        f"wrote {output}: {len(info['llamacpp_layers'])} layer(s), {d.site} "
        f"{_span(info['steerlab_layers'])} -> llama.cpp direction."
        f"{_span(info['llamacpp_layers'])}, coeff {coeff:g}; llama.cpp: --control-vector "
        f"{output}"
    )


@export_app.command("hf")
@command
def export_hf(
    vector: VecArg,
    output: OutOpt,
    opts: ModelOptions,
    layer: Annotated[int, typer.Option(help="steerlab layer (the direction's site)")],
    model: ModelOpt = DEFAULT_MODEL,
    coeff: Annotated[float, typer.Option(help="multiplier of the vector")] = 1.0,
    check_prompts: Annotated[
        str, typer.Option(help="prompts the logit check runs on")
    ] = "builtin:harmless:test",
    n_check: Annotated[int, typer.Option(min=1, help="how many of them")] = 8,
    force: Annotated[bool, typer.Option(help="use an artifact made for another model")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a plain checkpoint that steers with no hook (a bias on the block's output)."""
    from ..directions.artifact import Direction
    from ..errors import SteerlabError
    from ..export.hf import export_hf as run_export
    from ..interventions import check_coeff
    from ..io.prompts import read_prompts
    from ..ui import status

    check_coeff(coeff, "--coeff")
    if output.exists() and not overwrite:
        raise SteerlabError(f"export dir {output} exists; pass --overwrite to replace it")
    prompts = read_prompts(check_prompts)[:n_check]
    lm = opts.load(model)
    d = Direction.load(vector, model_info=lm.info, strict=not force)
    rec = run_export(lm, d, layer, coeff, output, prompts, source=str(vector), overwrite=overwrite)
    ch = rec["check"]
    status(
        f"wrote {output}: reloaded with plain transformers, max |logit diff| vs runtime steering "
        f"{ch['max_abs_diff']:.2e} ({ch['max_rel_diff']:.2e} of the logit scale; steering "
        f"moves them by {ch['effect_rel']:.2e}) on {ch['prompts']} prompts"
    )


@import_app.command("gguf")
@command
def import_gguf(
    file: Annotated[Path, typer.Argument(help="a control-vector GGUF (llama.cpp, repeng)")],
    output: OutOpt,
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    overwrite: OverwriteOpt = False,
) -> None:
    """Read a llama.cpp / repeng control vector into a steerlab direction (resid_post)."""
    from ..errors import SteerlabError
    from ..export.gguf import import_control_vector, read_control_vector
    from ..ui import status

    if output.exists() and not overwrite:
        raise SteerlabError(f"{output} exists; pass --overwrite to replace it")
    read_control_vector(file)  # a foreign or broken file fails before the model loads
    lm = opts.load(model)
    d = import_control_vector(file, lm.info)
    d.save(output)
    status(
        f"wrote {output}: {len(d.layers)} layer(s) {_span(list(d.layers))} (resid_post = "
        "llama.cpp's direction index); steer with coefficient 1 to match llama.cpp"
    )


def _span(layers: list[int]) -> str:
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])
