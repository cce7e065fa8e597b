"""``steerlab extract``: fit a direction per layer from two contrast sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, command

LAYERS_HELP = "all | L | A:B (end excluded) | L1,L2; negative numbers count from the end"


@command
def extract(
    positive: Annotated[str, typer.Option("--positive", "-p", help="prompt file or builtin:NAME")],
    negative: Annotated[str, typer.Option("--negative", "-n", help="prompt file or builtin:NAME")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the .safetensors")],
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    method: Annotated[str, typer.Option(help="mean_diff | pca | logistic | leace")] = "mean_diff",
    layers: Annotated[str, typer.Option(help=LAYERS_HELP)] = "all",
    position: Annotated[str, typer.Option(help="last | instruction-end | mean | -K")] = "last",
    site: Annotated[str, typer.Option(help="resid_pre | resid_post")] = "resid_pre",
    column: Annotated[str | None, typer.Option(help="field/column holding the text")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    no_chat: Annotated[
        bool, typer.Option("--no-chat", help="do not apply the chat template")
    ] = False,
    allow_unbalanced: Annotated[
        bool, typer.Option(help="accept sets of very different sizes")
    ] = False,
) -> None:
    """Fit a direction per layer from two contrast sets and save it as an artifact."""
    from ..capture import Site, resolve_layers
    from ..directions.extract import check_sets
    from ..directions.extract import extract as run_extract
    from ..directions.methods import METHODS
    from ..errors import SteerlabError
    from ..io.prompts import read_prompts
    from ..ui import progress_bar, status

    if method not in METHODS:
        raise SteerlabError(f"unknown --method {method!r}: use one of {', '.join(METHODS)}")
    if site not in get_args(Site):
        raise SteerlabError(f"unknown --site {site!r}: use resid_pre or resid_post")
    pos_spec: str | int = int(position) if position.lstrip("-").isdigit() else position
    if pos_spec not in ("last", "instruction-end", "mean") and not (
        isinstance(pos_spec, int) and pos_spec < 0
    ):
        raise SteerlabError(
            f"unknown --position {position!r}: use last, instruction-end, mean or -K (K >= 1)"
        )
    pos_set = read_prompts(positive, column=column)
    neg_set = read_prompts(negative, column=column)
    check_sets(pos_set, neg_set, paired=METHODS[method].paired, allow_unbalanced=allow_unbalanced)
    lm = opts.load(model)
    chosen = resolve_layers(layers, lm.info.n_layers)  # fail before any compute
    with progress_bar("capturing activations", len(pos_set) + len(neg_set)) as advance:
        d = run_extract(
            lm,
            pos_set,
            neg_set,
            method=method,
            layers=chosen,
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
        f"wrote {output}: {method} at {len(d.layers)} layer(s) ({_span(d.layers)}), site {site}, "
        f"position {position}; largest norm {norms[best]:.3g} at layer {d.layers[best]}"
    )


def _span(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])
