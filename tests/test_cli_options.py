"""Options declared once, on config fields: every ``cli`` field is an option showing the
dataclass default, its bounds end in one ``error:`` line, and presets fill only what was left
out."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.cli.options import option_fields
from steerlab.compare.config import CompareConfig
from steerlab.melbo.config import DiscoverConfig, MelboConfig
from steerlab.organism.config import BackdoorConfig
from steerlab.probe.config import ProbeConfig
from steerlab.refusal.config import RefusalConfig
from steerlab.serve.config import ServeConfig
from steerlab.sweep.config import SweepConfig

# command -> (its configs, the fields kept off the command line on purpose, the options the
# command needs to get as far as building its config)
COMMANDS: dict[str, tuple[tuple[type, ...], set[str], list[str]]] = {
    "refusal": (
        (RefusalConfig,),
        {"early_prompts", "coeff_grid", "induce_target"},
        [],
    ),
    "sweep": ((SweepConfig,), {"neutral_prompts", "necessity_prompts"}, ["-b", "x"]),
    "compare": (
        (CompareConfig,),
        {"selection_prompts", "batch_rows", "lora_rank", "dpo_beta"}
        | {"train_batch", "neutral_prompts"},
        ["-b", "x"],
    ),
    "probe": ((ProbeConfig,), {"val_fraction", "batch_size", "steer_layers"}, []),
    "discover": (
        (MelboConfig, DiscoverConfig),
        {"radius", "batch_size", "melbo", "sweep_factors"},  # Melbo's radius and batch_size
        ["--prompt", "x"],
    ),
    "serve": ((ServeConfig,), set(), []),
    "organism backdoor": (
        (BackdoorConfig,),
        {"clean_tokens", "alpha", "target_modules", "batch_size", "eval_tokens"},
        ["--out", "never"],
    ),
}


def _click(cmd: str) -> Any:
    c = typer.main.get_command(app)
    for part in cmd.split():
        c = c.commands[part]  # type: ignore[attr-defined]
    return c


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_config_field_is_an_option_with_its_default(cmd: str) -> None:
    classes, off, _ = COMMANDS[cmd]
    params = {p.name: p for p in _click(cmd).params}
    fields = option_fields(*classes)
    for o in fields:
        p = params[o.name]
        assert o.flag in p.opts, (o.name, p.opts)
        if o.switch is not None:  # --no-chat, --profile: off unless typed, then changes it
            assert p.is_flag and p.default is False and o.switch != o.default
            continue
        assert p.default == o.cli_default, o.name
        # the shown default, typed back in, is the dataclass default
        typed = o.spec.parse(p.default) if o.spec.parse else p.default
        if isinstance(typed, list):
            typed = tuple(typed)
        if typed is not None:
            built = o.cls(**{o.name: typed})
            assert getattr(built, o.name) == getattr(o.cls(), o.name), o.name
    kept_off = {
        f.name for cls in classes for f in dataclasses.fields(cls) if "cli" not in f.metadata
    }
    assert kept_off == off  # a new field is exposed or kept off on purpose


def _violation(b: dict[str, float]) -> str:
    """The first value just outside the bounds, as typed."""
    k, lim = next(iter(b.items()))
    return f"{lim + {'ge': -1, 'gt': 0, 'le': 1, 'lt': 0}[k]:g}"


CASES = [
    (cmd, o.flag, _violation(b))
    for cmd, (classes, _, _) in COMMANDS.items()
    for o in option_fields(*classes)
    for f in dataclasses.fields(o.cls)
    if f.name == o.name and (b := f.metadata.get("bounds"))
]


@pytest.mark.parametrize(("cmd", "flag", "value"), CASES)
def test_bounds_end_in_one_error_line(cmd: str, flag: str, value: str) -> None:
    r = _invoke(*cmd.split(), *COMMANDS[cmd][2], "--model", "no-such-model", flag, value)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert flag in lines[0] and "must be" in lines[0], r.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["discover", "--prompt", "x", "--radius", "0"], "--radius"),
        (["discover", "--prompt", "x", "--radius", "big"], "--radius"),
        (["discover", "--prompt", "x", "--massive-ratio", "lots"], "--massive-ratio"),
        (["discover", "--prompt", "x", "--massive-ratio", "1"], "--massive-ratio"),
        (["sweep", "-b", "x", "--method", "magic"], "--method"),
        (["probe", "--position", "first"], "--position"),
        (["compare", "-b", "x", "--coeffs", "a,b"], "--coeffs"),
        (["refusal", "--directions", "9"], "--directions"),  # a cross-field check: > keep
    ],
)
def test_bad_text_names_the_flag(args: list[str], flag: str) -> None:
    r = _invoke(*args, "--model", "no-such-model")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert flag in lines[0], r.output


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run refusal and compare up to their pipelines, keeping the config they got."""
    import steerlab.compare as compare_pkg
    import steerlab.refusal as refusal_pkg
    from steerlab.cli import common
    from steerlab.errors import SteerlabError

    got: dict[str, Any] = {}

    def fake(lm: Any, *args: Any, **kw: Any) -> None:
        got["cfg"] = next(a for a in args if dataclasses.is_dataclass(a))
        raise SteerlabError("stopped")

    monkeypatch.setattr(common.ModelOptions, "load", lambda self, model: object())
    monkeypatch.setattr(refusal_pkg, "run_refusal", fake)
    monkeypatch.setattr(compare_pkg, "run_compare", fake)
    # the function steerlab.cli.compare shadows its module's name
    monkeypatch.setattr(sys.modules["steerlab.cli.compare"], "checked_behavior", lambda s: None)
    return got


def test_quick_fills_only_what_was_left_out(captured: dict[str, Any], tmp_path: Any) -> None:
    from steerlab.compare.config import QUICK as CQ
    from steerlab.refusal.config import QUICK

    out = tmp_path / "run"
    _invoke("refusal", "--out", out, "--quick", "--n-eval", "50", "--no-filter", "--no-chat")
    cfg = captured["cfg"]
    assert cfg == RefusalConfig(**{**QUICK, "n_eval": 50, "filter_train": False, "chat": False})
    _invoke("refusal", "--out", out, "--n-eval", "100", "-m", "tiny")
    assert captured["cfg"] == RefusalConfig(model="tiny")
    _invoke("compare", "-b", "x", "--out", out, "--quick", "--draws", "3", "--coeffs", "0.5")
    assert captured["cfg"] == CompareConfig(**{**CQ, "draws": 3, "coeffs": (0.5,)})


def test_config_modules_do_not_import_torch() -> None:
    # --help builds every option from these modules. (sweep and compare's packages still
    # import their pipelines, and so torch, on import; so does steerlab.models, which the
    # commands import for DEFAULT_MODEL.)
    code = (
        "import sys; import steerlab.refusal.config, steerlab.probe.config, "
        "steerlab.melbo.config, steerlab.organism.config, steerlab.serve.config; "
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
