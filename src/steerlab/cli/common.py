"""What every command shares: the model options (declared once), loading, error handling.

``@command`` adds ``--device``, ``--dtype``, ``--device-map``, ``--trust-remote-code``,
``--adapter`` and ``--quiet`` to a command's signature (typer reads them from there) and hands
them to the command as one :class:`ModelOptions` (the ``opts`` parameter). With
``config=SomeConfig`` it also adds an option per ``cli`` field of the config, where the
command's ``given`` parameter stands, and hands over what the user typed as a
:class:`~.options.Given` (see :mod:`.options`). It turns steerlab's user-facing errors into one
line and exit code 2, and Ctrl-C into exit code 130.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import typer

from ..configs import MODEL_HELP, ConfigError, flag
from ..errors import SteerlabError
from .options import given, option_fields, option_params

__all__ = [
    "ModelOpt",
    "ModelOptions",
    "checked_behavior",
    "command",
    "fail",
    "num",
    "pct",
    "print_notes",
]

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
ADAPTER_HELP = (
    "JSON override of where the layers are, for architectures steerlab does not know: keys "
    "blocks, embeddings, attn_write, mlp_write, attn_proj, mlp_proj, final_norm, sandwich, "
    "norm_offset (dotted module paths; the docs' 'Your own model' page has an example)"
)
INTERRUPTED = 130
# commands whose run cache resumes them
RESUMABLE = ("refusal", "discover", "backdoor", "sweep", "probe", "compare")


@dataclass(frozen=True)
class ModelOptions:
    """The options shared by every command that loads a model."""

    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps")] = "cpu"
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto")] = "float32"
    device_map: Annotated[
        str | None, typer.Option(help='e.g. "auto" to span several GPUs (accelerate)')
    ] = None
    trust_remote_code: Annotated[
        bool, typer.Option(help="allow model code from the hub (off by default)")
    ] = False
    adapter: Annotated[str | None, typer.Option(help=ADAPTER_HELP)] = None
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False
    # generating commands only (GENERATING): where decoding runs
    engine: Annotated[
        str, typer.Option(help="hf (the loaded model) or vllm (stock vLLM; steerlab[vllm])")
    ] = "hf"
    tensor_parallel_size: Annotated[
        int, typer.Option(min=1, help="vLLM: GPUs per model replica (tensor parallel)")
    ] = 1
    pipeline_parallel_size: Annotated[
        int, typer.Option(min=1, help="vLLM: pipeline stages (e.g. one per node)")
    ] = 1
    max_model_len: Annotated[
        int | None, typer.Option(min=16, help="vLLM: longest prompt + reply (default 2048)")
    ] = None

    def load(self, model: str) -> Any:
        """Load ``model`` with these options (status lines unless quiet)."""
        from ..models.load import load_model
        from ..ui import status

        override = None
        if self.adapter:
            try:
                override = json.loads(self.adapter)
            except json.JSONDecodeError as e:
                raise SteerlabError(f"--adapter is not valid JSON: {e}") from None
            if not isinstance(override, dict):
                raise SteerlabError("--adapter must be a JSON object, e.g. '{\"blocks\": ...}'")
        if self.engine not in ("hf", "vllm"):
            raise SteerlabError(f"--engine must be hf or vllm, not {self.engine!r}")
        try:
            lm = load_model(
                model,
                device=self.device,
                dtype=self.dtype,
                device_map=self.device_map,
                trust_remote_code=self.trust_remote_code,
                adapter=override,
                progress=status,
            )
        except ValueError as e:  # e.g. an unknown dtype
            msg = str(e)
            if msg.startswith("unknown dtype"):
                msg = "unknown --dtype" + msg[len("unknown dtype") :]
            raise SteerlabError(msg) from None
        return lm

    def make_engine(self, lm: Any) -> Any:
        """The engine ``--engine`` names, for ``lm`` (passed to what decodes)."""
        from ..engines import make_engine
        from ..ui import status

        if self.engine == "hf":
            return make_engine(lm, "hf")
        status("starting vLLM")
        return make_engine(
            lm,
            "vllm",
            tensor_parallel_size=self.tensor_parallel_size,
            pipeline_parallel_size=self.pipeline_parallel_size,
            max_model_len=self.max_model_len,
        )


_SHARED = [f.name for f in fields(ModelOptions)]
_ENGINE = ("engine", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len")
# commands whose decoding can run on another engine (--engine)
GENERATING = ("generate", "refusal", "sweep", "compare", "serve")


def fail(message: str, code: int = 2) -> typer.Exit:
    from ..ui import console

    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _message(e: SteerlabError, flags: Mapping[str, str] | None = None) -> str:
    msg = str(e)
    if isinstance(e, ConfigError) and msg.startswith(e.field):
        # say it the way the user typed it (``filter_train`` is typed ``--no-filter``)
        name = (flags or {}).get(e.field) or flag(e.field)
        msg = name + msg[len(e.field) :]
    report = getattr(e, "steerlab_report", None)
    return f"{msg} (report: {report})" if report else msg


def command(
    fn: F | None = None,
    *,
    config: type | tuple[type, ...] = (),
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """Give ``fn`` the shared model options (as ``opts``) and the CLI's error handling.

    Args:
        config: config dataclass(es) whose ``cli`` fields become options, placed where ``fn``'s
            ``given`` parameter is; ``fn`` receives the typed values there as a ``Given``.
        presets: ``{"--quick": QUICK}``, named in the help of the options they set.
    """
    if fn is None:
        return functools.partial(command, config=config, presets=presets)
    classes = config if isinstance(config, tuple) else (config,)
    opt_fields = option_fields(*classes)
    flags = {o.name: o.flag for o in opt_fields}
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    wants_opts = "opts" in sig.parameters
    if classes and "given" not in sig.parameters:
        raise TypeError(f"{fn.__name__} takes config options: give it a `given` parameter")
    resumable = fn.__name__ in RESUMABLE
    # keyword-only: typer passes everything by name, and the options added here have
    # defaults while fn's own parameters before them may not
    params = []
    for p in sig.parameters.values():
        if p.name == "given":
            params += option_params(opt_fields, presets)
            params.append(
                inspect.Parameter("_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            )
        elif p.name != "opts":
            ann = hints.get(p.name, p.annotation)
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=ann))
    taken = {p.name for p in params}
    if wants_opts:
        shared = typing.get_type_hints(ModelOptions, include_extras=True)
        for f in fields(ModelOptions):
            if f.name in _ENGINE and fn.__name__ not in GENERATING:
                continue
            if f.name in taken:
                raise TypeError(f"{fn.__name__}: option {f.name} is also a model option")
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=f.default,
                    annotation=shared[f.name],
                )
            )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..ui import quiet_transformers, set_quiet

        quiet_transformers()
        if wants_opts:
            kwargs["opts"] = ModelOptions(**{k: kwargs.pop(k) for k in _SHARED if k in kwargs})
            set_quiet(kwargs["opts"].quiet)
        try:
            if classes:
                kwargs["given"] = given(kwargs.pop("_ctx"), opt_fields, kwargs)
            return fn(*args, **kwargs)
        except SteerlabError as e:
            raise fail(_message(e, flags)) from None
        except KeyboardInterrupt:
            tail = ": rerun the same command to resume" if resumable else ""
            raise fail(f"interrupted{tail}", INTERRUPTED) from None

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    if "return" in hints:
        wrapper.__annotations__["return"] = hints["return"]
    return wrapper  # type: ignore[return-value]


def pct(v: Any) -> str:
    return "—" if v is None else f"{v:.0%}"


def num(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def checked_behavior(spec: str) -> Any:
    """Load a behaviour and check, before any model is loaded, that its scorer's library is
    installed and that its selection and test splits are large enough."""
    from ..behaviors.behavior import load_behavior
    from ..behaviors.scorers import make_scorer

    beh = load_behavior(spec)
    make_scorer(beh.scorer, description=beh.description)
    beh.check_splits()
    return beh


def print_notes(notes: list[str]) -> None:
    from rich.console import Console

    con = Console()
    for note in notes:
        con.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def main_guard(app: typer.Typer) -> None:
    try:
        app()
    except SteerlabError as e:  # raised outside a command body (e.g. in a callback)
        print(f"error: {_message(e)}", file=sys.stderr)
        sys.exit(2)
