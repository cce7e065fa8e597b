"""Command line: a thin layer over the Python API. Heavy imports happen inside commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .errors import SteerlabError
from .models.registry import DEFAULT_MODEL

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="steerlab: find, read, steer with and erase directions in language models.",
)

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="built-in name, HF id, local dir or .gguf")
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps")]
DtypeOpt = Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto")]
DeviceMapOpt = Annotated[str | None, typer.Option(help='e.g. "auto" to span several GPUs')]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
TrustOpt = Annotated[bool, typer.Option(help="allow model code from the hub (off by default)")]
AdapterOpt = Annotated[str | None, typer.Option(help="JSON adapter override, see docs")]


def _fail(msg: str) -> None:
    from .ui import console

    console.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn steerlab's user-facing errors into one line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SteerlabError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted")

    return wrapper  # type: ignore[return-value]


def _load(
    model: str, device: str, dtype: str, device_map: str | None, trust: bool, adapter: str | None
) -> Any:
    from .models.load import load_model
    from .ui import status

    override = None
    if adapter:
        try:
            override = json.loads(adapter)
        except json.JSONDecodeError as e:
            raise SteerlabError(f"--adapter is not valid JSON: {e}") from None
    try:
        return load_model(
            model,
            device=device,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust,
            adapter=override,
            progress=status,
        )
    except ValueError as e:
        raise SteerlabError(str(e)) from None


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
    lm = _load(model, device, dtype, device_map, trust_remote_code, adapter)
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
    lm = _load(model, device, dtype, device_map, trust_remote_code, adapter)
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


@app.command()
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
    )
    lm = _load(model, device, dtype, device_map, trust_remote_code, adapter)
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


def main() -> None:
    try:
        app()
    except SteerlabError as e:  # raised outside a command body (e.g. in a callback)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
