"""``steerlab refusal``: the command line of the refusal-direction pipeline.

Every option left out takes the value of :class:`~steerlab.refusal.RefusalConfig` (or of the
``--quick`` preset); the config validates the values, and its messages name the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..configs import choices
from ..refusal.config import QUICK, RefusalConfig
from .common import ModelOpt, ModelOptions, command, num, pct, print_notes

_FIELDS = RefusalConfig.__dataclass_fields__


def _opt(name: str, text: str, *flags: str) -> Any:
    """A typer option whose help shows the config's choices, its default and the quick
    preset's, all read from :class:`RefusalConfig`."""
    allowed = choices(RefusalConfig, name)
    if allowed:
        text = f"{text}: {' | '.join(map(str, allowed))}"
    default = _FIELDS[name].default
    quick = f"; --quick: {QUICK[name]}" if name in QUICK else ""
    return typer.Option(*flags, help=f"{text} (default: {default}{quick})", show_default=False)


@command
def refusal(
    opts: ModelOptions,
    model: ModelOpt = "qwen2.5-coder-0.5b",
    harmful: Annotated[str | None, _opt("harmful", "harmful train prompts")] = None,
    harmless: Annotated[str | None, _opt("harmless", "harmless train prompts")] = None,
    harmful_val: Annotated[str | None, _opt("harmful_val", "harmful selection prompts")] = None,
    harmless_val: Annotated[str | None, _opt("harmless_val", "harmless selection prompts")] = None,
    eval_harmful: Annotated[str | None, _opt("eval_harmful", "held-out harmful prompts")] = None,
    eval_harmless: Annotated[str | None, _opt("eval_harmless", "held-out harmless prompts")] = None,
    out: Annotated[Path, typer.Option(help="run directory (report, direction, cache)")] = Path(
        "runs/refusal"
    ),
    export: Annotated[Path | None, typer.Option(help="write the orthogonalized model here")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an export dir that steerlab made")
    ] = False,
    quick: Annotated[bool, typer.Option(help="smaller preset for a laptop CPU")] = False,
    positions: Annotated[
        int | None, _opt("positions", "post-instruction positions to try (0: all, at most 5)")
    ] = None,
    prune_last: Annotated[
        float | None, _opt("prune_last", "deepest layer fraction never selected")
    ] = None,
    kl_max: Annotated[
        float | None, _opt("kl_max", "KL bound on harmless val under ablation")
    ] = None,
    induce_min: Annotated[float | None, _opt("induce_min", "induce-score threshold")] = None,
    induce_coeff: Annotated[
        float | None, _opt("induce_coeff", "coefficient of the addition for the induce score")
    ] = None,
    on_empty: Annotated[
        str | None, _opt("on_empty", "when no candidate passes both filters")
    ] = None,
    coeff: Annotated[
        str | None, _opt("coeff", "addition coefficient for evaluation: auto or a number")
    ] = None,
    keep: Annotated[int | None, _opt("keep", "candidates fully scored after screening")] = None,
    screen: Annotated[
        str | None, _opt("screen", "which candidates the few-prompt screen scores")
    ] = None,
    n_train: Annotated[int | None, _opt("n_train", "train prompts per class (cap)")] = None,
    n_val: Annotated[int | None, _opt("n_val", "val prompts per class (cap)")] = None,
    n_eval: Annotated[int | None, _opt("n_eval", "eval prompts per class (cap)")] = None,
    max_new_tokens: Annotated[
        int | None, _opt("max_new_tokens", "tokens generated in evaluation")
    ] = None,
    max_prompt_tokens: Annotated[
        int | None, _opt("max_prompt_tokens", "drop longer prompts")
    ] = None,
    batch_size: Annotated[int | None, _opt("batch_size", "prompts per forward")] = None,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="skip the refusal filter")] = False,
    filter_rule: Annotated[
        str | None, _opt("filter_rule", "which train prompts count as refused/answered")
    ] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="raw prompts, no template")] = False,
    seed: Annotated[int | None, _opt("seed", "shuffles and the random control")] = None,
    directions: Annotated[
        int | None,
        _opt(
            "directions",
            "best candidates ablated together as one orthonormalized span (addition and clamp "
            "use the first)",
        ),
    ] = None,
) -> None:
    """Find the refusal direction, evaluate every intervention, optionally export the model."""
    from ..errors import SteerlabError
    from ..refusal import run_refusal
    from ..runs import check_new_dir
    from ..ui import progress_bar, status

    if out.exists() and not out.is_dir():
        raise SteerlabError(f"--out {out} exists and is not a directory")
    if export is not None:
        check_new_dir(export, overwrite=overwrite, keep=(out,), what="--export")
    if template is not None and not template.is_file():
        raise SteerlabError(f"--template file not found: {template}")
    cfg = RefusalConfig(model=model)
    if quick:
        cfg = cfg.with_overrides(**QUICK)
    cfg = cfg.with_overrides(
        harmful=harmful,
        harmless=harmless,
        harmful_val=harmful_val,
        harmless_val=harmless_val,
        eval_harmful=eval_harmful,
        eval_harmless=eval_harmless,
        positions=positions,
        prune_last=prune_last,
        kl_max=kl_max,
        induce_min=induce_min,
        induce_coeff=induce_coeff,
        on_empty=on_empty,
        coeff=coeff,
        keep=keep,
        screen=screen,
        n_train=n_train,
        n_val=n_val,
        n_eval=n_eval,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        batch_size=batch_size,
        seed=seed,
        chat=False if no_chat else None,
        filter_train=False if no_filter else None,
        filter_rule=filter_rule,
        directions=directions,
    )
    lm = opts.load(model)
    if template is not None:
        lm.tokenizer.chat_template = template.read_text()
    engine = opts.make_engine(lm)
    try:
        report = run_refusal(
            lm,
            cfg,
            out,
            export_dir=export,
            overwrite=overwrite,
            progress=progress_bar,
            status=status,
            engine=engine,
        )
    finally:
        engine.close()
    _print_summary(report, out)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sel = report["selected"]
    t = Table(
        title=f"refusal direction: layer {sel['layer']}, position {sel['position']}, "
        f"coeff {sel['coeff']:g}"
    )
    cols = (
        "variant",
        "harmful refusal",
        "strict",
        "harmless refusal",
        "strict",
        "KL harmless",
        "CE completions",
    )
    for col in cols:
        t.add_column(col)

    for name, m in report["variants"].items():
        t.add_row(
            name,
            pct(m["harmful_refusal_rate"]),
            pct(m["harmful_refusal_rate_strict"]),
            pct(m["harmless_refusal_rate"]),
            pct(m["harmless_refusal_rate_strict"]),
            num(m["kl_harmless"]),
            num(m["ce_loss_completions"]),
        )
    con = Console()
    con.print(t)
    span = report.get("directions") or {}
    if span.get("k", 1) > 1:
        where = "; ".join(
            f"layer {c['layer']} position {c['position']}" for c in span["candidates"]
        )
        con.print(
            f"{span['k']} directions ablated together ({where}): ablation, orthogonalized and "
            "the export remove their span; addition, subtraction and clamp use the first.",
            highlight=False,
        )
    for v in report.get("verdicts") or []:
        mark = "[green]ok[/green]" if v["level"] == "ok" else "[yellow]warning[/yellow]"
        con.print(f"{mark}: {v['text']}", highlight=False)
    print_notes(report["notes"])
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in report["timings"].items())
    con.print(f"timings (this run): {timing}")
    if report.get("resumed_steps"):
        total = report["compute_seconds"]["total"]
        con.print(f"resumed {', '.join(report['resumed_steps'])}: {total:.0f}s of compute in all")
    con.print(f"report: {out / 'report.html'} (and report.json, direction.safetensors)")
    if report.get("export") and report["export"].get("error") is None:
        con.print(f"exported model: {report['export']['dir']}")
