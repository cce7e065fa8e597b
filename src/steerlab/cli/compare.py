"""``steerlab compare``: steering against prompting and finetuning on the same N examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL
from .common import ModelOpt, ModelOptions, checked_behavior, command, print_notes


def _coeffs(text: str) -> tuple[float, ...]:
    from ..configs import ConfigError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError("coeffs", f"coeffs must be numbers like 0.25,0.5; got {text!r}") from None


@command
def compare(
    behavior: Annotated[
        str, typer.Option("--behavior", "-b", help="builtin:NAME or a behaviour JSON file")
    ],
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    methods: Annotated[
        str,
        typer.Option(
            help="all, or a comma list of unsteered, mean_diff, pca, random, zero_shot, "
            "system_prompt, few_shot, contrast_prompt, lora, dpo, lora+mean_diff, "
            "few_shot+mean_diff"
        ),
    ] = "all",
    train_sizes: Annotated[
        str | None, typer.Option(help="training pairs per method, e.g. 1,2,4,8,16,32")
    ] = None,
    draws: Annotated[int | None, typer.Option(help="random nested subsets of the pairs")] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="steering layers searched on selection (default: one, at 40% depth)"),
    ] = None,
    coeffs: Annotated[
        str, typer.Option(help="steering strengths searched, x the layer's median norm")
    ] = "0.125,0.25",
    max_ce_increase: Annotated[
        float, typer.Option(help="fluency bound of every choice, nats/token over unsteered")
    ] = 1.0,
    lora_steps: Annotated[int | None, typer.Option(help="LoRA/DPO optimizer steps")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    max_context: Annotated[
        int | None,
        typer.Option(min=16, help="prompt tokens few-shot and contrast prompts may fill"),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="N = 1,8, one draw, shorter completions and prompts")
    ] = False,
    seed: int = 0,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="raw prompts, no template")] = False,
    out: Annotated[
        Path, typer.Option(help="run directory (compare.json, report.html, cache)")
    ] = Path("runs/compare"),
) -> None:
    """Compare steering (mean difference, PCA, a random control) with prompting (zero-shot,
    system prompt, few-shot, contrast prompt), LoRA SFT, DPO and their combinations, each
    given the same N training pairs, on held-out prompts with intervals. Writes compare.json
    and report.html into --out; rerun the same command to resume."""
    from ..compare import QUICK, CompareConfig, run_compare
    from ..ui import progress_bar, status

    preset: dict[str, Any] = dict(QUICK) if quick else {}
    given = {
        "train_sizes": train_sizes,
        "draws": draws,
        "lora_steps": lora_steps,
        "max_new_tokens": max_new_tokens,
        "max_context": max_context,
    }
    preset |= {k: v for k, v in given.items() if v is not None}
    cfg = CompareConfig(
        methods=methods,
        layers=layers,
        coeffs=_coeffs(coeffs),
        max_ce_increase=max_ce_increase,
        seed=seed,
        chat=False if no_chat else None,
        **preset,
    )
    beh = checked_behavior(behavior)
    lm = opts.load(model)
    engine = opts.make_engine(lm)
    try:
        report = run_compare(lm, beh, cfg, out, progress=progress_bar, status=status, engine=engine)
    finally:
        engine.close()
    _print_summary(report, out)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sizes = report["train_sizes"]
    t = Table(title=f"{report['behavior']['name']}: test score [95% CI] by training pairs N")
    t.add_column("method")
    for n in sizes:
        t.add_column(f"N={n}", justify="right")
    win = {w["n"]: w for w in report["winners"]}
    for m in report["methods"]:
        cells = []
        for n in sizes:
            r = next((x for x in report["summary"] if x["method"] == m and x["n"] == n), None)
            if r is None:
                cells.append("—")
                continue
            lo, hi = r["ci"]
            text = f"{r['score']:.3f} [{lo:.2f},{hi:.2f}]"
            w = win.get(n) or {}
            if w.get("method") == m and w.get("separated"):
                text = f"[bold]{text} *[/bold]"
            cells.append(text)
        t.add_row(m, *cells)
    con = Console()
    con.print(t)
    notes = [f"{k} not run: {v}" for k, v in (report.get("skipped") or {}).items()] + [
        "* best at that N with an interval separated from every other method's"
        if any(w.get("separated") for w in report["winners"])
        else "no method's interval separates from all others at any N"
    ]
    print_notes(notes)
    con.print(f"report: {out / 'report.html'} (and compare.json)")
