"""Configs refuse bad values in the library itself (not only on the command line)."""

from __future__ import annotations

import dataclasses

import pytest

from steerlab.configs import ConfigError, flag
from steerlab.organism import BackdoorConfig
from steerlab.refusal import RefusalConfig

BAD_REFUSAL = [
    ("screen", "x"),
    ("on_empty", "x"),
    ("filter_rule", "x"),
    ("kl_max", float("nan")),
    ("kl_max", float("inf")),
    ("kl_max", 0.0),
    ("kl_max", "0.1"),
    ("prune_last", 1.0),
    ("positions", -1),
    ("n_train", 0),
    ("induce_min", float("nan")),
    ("coeff", "lots"),
    ("coeff", "nan"),
    ("coeff_grid", (1.0, float("inf"))),
]


@pytest.mark.parametrize(("field", "value"), BAD_REFUSAL)
def test_refusal_config_refuses(field: str, value: object) -> None:
    # Defect: only the CLI checked these; RefusalConfig(screen="x") ran and fell through to a
    # default branch, silently doing something else.
    with pytest.raises(ConfigError) as e:
        RefusalConfig(**{field: value})
    assert e.value.field == field and field in str(e.value)
    with pytest.raises(ConfigError) as e:  # also through dataclasses.replace ...
        dataclasses.replace(RefusalConfig(), **{field: value})
    assert e.value.field == field
    with pytest.raises(ConfigError):  # ... and with_overrides
        RefusalConfig().with_overrides(**{field: value})


def test_refusal_config_accepts_good_values() -> None:
    cfg = RefusalConfig(screen="all", on_empty="error", filter_rule="argmax", coeff="2.5")
    assert (cfg.screen, cfg.coeff) == ("all", "2.5")
    assert RefusalConfig(chat=None).chat is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("rank", 0), ("alpha", 0), ("lr", 0.0), ("lr", float("nan")), ("epochs", 0), ("trigger", " ")],
)
def test_backdoor_config_refuses(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        BackdoorConfig(**{field: value})
    assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(BackdoorConfig(), **{field: value})
    assert e.value.field == field


def test_flag_names() -> None:
    assert flag("kl_max") == "--kl-max" and flag("screen") == "--screen"
