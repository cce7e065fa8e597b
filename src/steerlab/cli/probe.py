"""``steerlab probe``: where a concept is readable, every method side by side, with controls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL
from ..probe.config import ProbeConfig
from .common import ModelOpt, ModelOptions, command, print_notes
from .options import Given

SET_HELP = "prompt file or builtin:NAME (a built-in set with splits uses its train/test)"


@command(config=ProbeConfig)
def probe(
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    positive: Annotated[str | None, typer.Option("--positive", "-p", help=SET_HELP)] = None,
    negative: Annotated[str | None, typer.Option("--negative", "-n", help=SET_HELP)] = None,
    test_positive: Annotated[str | None, typer.Option(help="held-out positive set")] = None,
    test_negative: Annotated[str | None, typer.Option(help="held-out negative set")] = None,
    data: Annotated[
        Path | None, typer.Option(help="one labelled file (.csv/.json/.jsonl) instead")
    ] = None,
    label_column: Annotated[str, typer.Option(help="the binary label column of --data")] = "label",
    text_column: Annotated[str | None, typer.Option(help="the text column of --data")] = None,
    behavior: Annotated[
        str | None, typer.Option("--behavior", "-b", help="use a behaviour's contrast sets")
    ] = None,
    transfer_positive: Annotated[
        str | None, typer.Option(help="another dataset's positives")
    ] = None,
    transfer_negative: Annotated[
        str | None, typer.Option(help="another dataset's negatives")
    ] = None,
    *,
    given: Given,
    test_fraction: Annotated[
        float, typer.Option(help="held-out share when no test sets or splits are given")
    ] = 0.3,
    steer_check: Annotated[
        str | None, typer.Option(help="a behaviour: does each reading direction also steer it?")
    ] = None,
    out: Annotated[Path, typer.Option(help="run directory (probe.json, report.html)")] = Path(
        "runs/probe"
    ),
) -> None:
    """Read a concept at every layer with every method: test accuracy and AUROC with intervals,
    shuffled-label and random-direction controls, LEACE erasure, agreement between methods,
    sample efficiency, transfer, and (with --steer-check) whether each direction also steers."""
    from ..behaviors.behavior import load_behavior
    from ..behaviors.scorers import make_scorer
    from ..errors import DataError
    from ..probe import make_probe_data, read_labelled, run_probe
    from ..ui import progress_bar, status

    cfg = given.build(ProbeConfig)
    labels: dict[str, Any] | None = None
    sources = [x is not None for x in (positive or negative, data, behavior)]
    if sum(sources) != 1:
        raise DataError("give --positive/--negative, or --data, or --behavior (one of them)")
    if (positive is None) != (negative is None):
        raise DataError("give both --positive and --negative")
    if data is not None:
        pos, neg, labels = read_labelled(data, label_column=label_column, text_column=text_column)
    elif behavior is not None:
        beh = load_behavior(behavior)
        if not (beh.positive and beh.negative):
            raise DataError(f"behavior {beh.name!r} has no positive/negative prompt sets")
        pos, neg = list(beh.positive), list(beh.negative)
    else:
        pos, neg = positive, negative  # type: ignore[assignment]
    pdata = make_probe_data(
        pos,
        neg,
        test_positive=test_positive,
        test_negative=test_negative,
        transfer_positive=transfer_positive,
        transfer_negative=transfer_negative,
        test_fraction=test_fraction,
        seed=cfg.seed,
    )
    if labels is not None:  # which label was taken as positive
        pdata = replace(pdata, split={**pdata.split, "labels": labels})
    steer_beh = None
    if steer_check:
        steer_beh = load_behavior(steer_check)
        make_scorer(steer_beh.scorer, description=steer_beh.description)
        steer_beh.check_splits()
    lm = opts.load(model)
    from ..probe.pipeline import check_config

    check_config(cfg, pdata, lm)  # layers and train sizes, before anything is written
    result = run_probe(
        lm, pdata, cfg, out, steer_behavior=steer_beh, progress=progress_bar, status=status
    )
    _print_summary(result.to_dict(), out)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    layers = report["layers"]
    t = Table(
        title=f"probe: {report['model']['model_id']}, test accuracy at each method's best layer"
    )
    for col in ("method", "best layer", "accuracy", "95% CI", "AUROC"):
        t.add_column(col)
    for m, b in report["best"].items():
        r = report["methods"][m][layers.index(b["layer"])]
        lo, hi = r["accuracy_ci"]
        t.add_row(
            m, str(b["layer"]), f"{r['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]", f"{r['auroc']:.3f}"
        )
    con = Console()
    con.print(t)
    ctl = report["controls"]
    sh = max(c["accuracy"] for c in ctl["shuffled"])
    rd = max(c["accuracy"] for c in ctl["random"])
    le = max(c["accuracy"] for c in report["erasure"]["after_leace"])
    ho = max(c["accuracy"] for c in report["erasure"]["held_out"]["after_leace"])
    print_notes(
        [
            f"controls (highest per-layer mean over layers): {ctl['n_permutations']} label "
            f"permutations {sh:.3f}, {ctl['n_random_directions']} random directions "
            f"{rd:.3f}; logistic after LEACE {le:.3f} (in sample), {ho:.3f} (eraser fitted "
            "on another half of train)"
        ]
    )
    con.print(f"report: {out / 'report.html'} (and probe.json, probe_<method>.safetensors)")
