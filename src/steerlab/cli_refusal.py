"""``steerlab refusal``: the command line of the refusal-direction pipeline."""

from __future__ import annotations

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
from .errors import SteerlabError


@user_errors
def refusal(
    model: ModelOpt = "qwen2.5-coder-0.5b",
    harmful: Annotated[str | None, typer.Option(help="harmful train prompts")] = None,
    harmless: Annotated[str | None, typer.Option(help="harmless train prompts")] = None,
    harmful_val: Annotated[str | None, typer.Option(help="harmful selection prompts")] = None,
    harmless_val: Annotated[str | None, typer.Option(help="harmless selection prompts")] = None,
    eval_harmful: Annotated[str | None, typer.Option(help="held-out harmful prompts")] = None,
    eval_harmless: Annotated[str | None, typer.Option(help="held-out harmless prompts")] = None,
    out: Annotated[Path, typer.Option(help="run directory (report, direction, cache)")] = Path(
        "runs/refusal"
    ),
    export: Annotated[Path | None, typer.Option(help="write the orthogonalized model here")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing export dir")] = False,
    quick: Annotated[bool, typer.Option(help="small preset for a laptop CPU")] = False,
    positions: Annotated[int | None, typer.Option(help="post-instruction positions to try")] = None,
    prune_last: Annotated[
        float | None, typer.Option(help="deepest layer fraction excluded")
    ] = None,
    kl_max: Annotated[float | None, typer.Option(help="KL bound under ablation")] = None,
    induce_min: Annotated[float | None, typer.Option(help="induce-score threshold")] = None,
    induce_coeff: Annotated[float | None, typer.Option(help="coefficient for induce")] = None,
    on_empty: Annotated[str | None, typer.Option(help="relax | error")] = None,
    coeff: Annotated[
        str | None, typer.Option(help="addition coefficient: auto or a number")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(help="candidates fully scored after screening")
    ] = None,
    screen: Annotated[str | None, typer.Option(help="layers (fast) | all")] = None,
    n_train: Annotated[int | None, typer.Option(help="train prompts per class (cap)")] = None,
    n_val: Annotated[int | None, typer.Option(help="val prompts per class (cap)")] = None,
    n_eval: Annotated[int | None, typer.Option(help="eval prompts per class (cap)")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="tokens generated in evaluation")
    ] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="drop longer prompts")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    no_filter: Annotated[bool, typer.Option("--no-filter", help="skip the refusal filter")] = False,
    filter_rule: Annotated[str | None, typer.Option(help="score (paper) | argmax")] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="raw prompts, no template")] = False,
    seed: Annotated[int | None, typer.Option()] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    adapter: AdapterOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Find the refusal direction, evaluate every intervention, optionally export the model."""
    from .refusal import QUICK, RefusalConfig, run_refusal
    from .ui import progress_bar, set_quiet, status

    set_quiet(quiet)
    if export is not None and export.exists() and not overwrite:
        raise SteerlabError(f"export dir {export} exists; pass --overwrite to replace it")
    if filter_rule not in (None, "score", "argmax"):
        raise SteerlabError("--filter-rule must be score or argmax")
    if screen not in (None, "layers", "all"):
        raise SteerlabError("--screen must be layers or all")
    if on_empty not in (None, "relax", "error"):
        raise SteerlabError("--on-empty must be relax or error")
    if coeff not in (None, "auto"):
        try:
            float(coeff)
        except ValueError:
            raise SteerlabError("--coeff must be auto or a number") from None
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
    )
    lm = load_for_cli(model, device, dtype, device_map, trust_remote_code, adapter)
    if template is not None:
        if not template.is_file():
            raise SteerlabError(f"template file not found: {template}")
        lm.tokenizer.chat_template = template.read_text()
    report = run_refusal(
        lm, cfg, out, export_dir=export, overwrite=overwrite, progress=progress_bar, status=status
    )
    _print_refusal_summary(report, out)


def _print_refusal_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sel = report["selected"]
    t = Table(
        title=f"refusal direction: layer {sel['layer']}, position {sel['position']}, "
        f"coeff {sel['coeff']:g}"
    )
    for col in (
        "variant",
        "harmful refusal",
        "strict",
        "harmless refusal",
        "strict",
        "KL harmless",
        "CE completions",
    ):
        t.add_column(col)

    def pct(v: Any) -> str:
        return "—" if v is None else f"{v:.0%}"

    def num(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

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
    for note in report["notes"]:
        con.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in report["timings"].items())
    con.print(f"timings: {timing}")
    con.print(f"report: {out / 'report.html'} (and report.json, direction.safetensors)")
    if report.get("export"):
        con.print(f"exported model: {report['export']['dir']}")
