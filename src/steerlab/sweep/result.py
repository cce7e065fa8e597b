"""What ``steerlab sweep`` returns and writes to ``sweep.json``, field by field.

:meth:`SweepReport.to_dict` is the JSON contract: the keys, order and values the pipeline has
always written (scripts read them; NaN is written as null). :meth:`SweepReport.from_dict`
reads the file back; only ``maps`` (absent without ``--pairs``/``--profile``) may be missing.
The grid cells, the search record and the maps keep their dict shape (a cell's fields depend
on the options); the chosen cell, the test block and the verdict are typed. Stdlib only: the
report page and the CLI import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "ChosenCell",
    "PairedContrast",
    "RandomDirections",
    "SelectionScores",
    "SweepReport",
    "SweepTest",
    "SweepVerdict",
    "TestScores",
]

KIND = "sweep"


def _flat(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _take(cls: Any, d: Mapping[str, Any]) -> Any:
    """``cls`` from the keys of ``d`` named by its fields (every one required), lists copied."""
    return cls(**{f.name: _copy(d[f.name]) for f in fields(cls)})


def _copy(x: Any) -> Any:
    return list(x) if isinstance(x, list) else x


@dataclass(frozen=True)
class SelectionScores:
    """The chosen cell on the selection split: mean score, CE, CE increase over the unsteered
    model and the number of scored prompts."""

    score: float | None
    ce: float | None
    ce_increase: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SelectionScores:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ChosenCell:
    """The cell the rule chose on the selection split (``within_bound`` False: no cell met
    the fluency bound, the best score was taken regardless)."""

    layer: int
    coeff: float
    positions: str
    key: str
    rule: str
    within_bound: bool
    selection: SelectionScores

    def to_dict(self) -> dict[str, Any]:
        return _flat(self) | {"selection": self.selection.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChosenCell:
        return cls(
            d["layer"], d["coeff"], d["positions"], d["key"], d["rule"], d["within_bound"],
            SelectionScores.from_dict(d["selection"]),
        )  # fmt: skip


@dataclass(frozen=True)
class TestScores:
    """One setting on the test split: mean score with its bootstrap 95% interval, CE,
    scored prompts, distinct-2, longest repeat and KL (None where not measured)."""

    __test__ = False  # not a pytest class

    score: float | None
    ci: list[float | None]
    ce: float | None
    n: int
    distinct2: float | None
    longest_repeat: float | None
    kl: float | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TestScores:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RandomDirections:
    """``n_directions`` norm-matched random directions at the chosen cell on the test split:
    the mean of their mean scores, the central 95% of those (``ci``), the interval of the
    per-prompt mean (``mean_ci``), pooled CE / distinct-2 / longest repeat, mean KL, each
    direction's mean score, the steered cell's percentile among them and the prediction-test
    p-value of the steered score."""

    score: float | None
    ci: list[float | None]
    ci_kind: str
    mean_ci: list[float | None]
    ce: float | None
    n: int
    distinct2: float | None
    longest_repeat: float | None
    kl: float | None
    n_directions: int
    null_scores: list[float | None]
    percentile: float | None
    p_direction: float | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RandomDirections:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PairedContrast:
    """Steered against a reference on the same test prompts: the mean per-prompt difference,
    its bootstrap 95% interval, the sign-flip p-value, the prompts and the Holm-adjusted p."""

    diff: float | None
    ci: list[float | None]
    p: float | None
    n: int
    p_holm: float | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairedContrast:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SweepTest:
    """The test block: the chosen cell (``steered``), the unsteered model, the random
    directions, and the two pre-named paired contrasts (Holm-corrected together)."""

    __test__ = False  # not a pytest class

    steered: TestScores
    unsteered: TestScores
    random: RandomDirections
    vs_unsteered: PairedContrast
    vs_null_mean: PairedContrast

    def to_dict(self) -> dict[str, Any]:
        return {
            "steered": self.steered.to_dict(),
            "unsteered": self.unsteered.to_dict(),
            "random": self.random.to_dict(),
            "paired": {
                "vs_unsteered": self.vs_unsteered.to_dict(),
                "vs_null_mean": self.vs_null_mean.to_dict(),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepTest:
        paired = d["paired"]
        return cls(
            TestScores.from_dict(d["steered"]),
            TestScores.from_dict(d["unsteered"]),
            RandomDirections.from_dict(d["random"]),
            PairedContrast.from_dict(paired["vs_unsteered"]),
            PairedContrast.from_dict(paired["vs_null_mean"]),
        )


@dataclass(frozen=True)
class SweepVerdict:
    """What the test split says of the chosen cell, as flags and one sentence."""

    steered_beats_unsteered: bool
    steered_moves_score: bool
    beyond_random_null: bool
    random_inside_unsteered: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepVerdict:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SweepReport:
    """A sweep (``sweep.json``). ``cells`` are the grid records (selection split), ``search``
    how the grid was searched, ``examples`` the first test completions per setting,
    ``per_prompt`` the test scores per prompt, ``maps`` the multi-layer maps (None: not
    asked for)."""

    steerlab_version: str
    model: dict[str, Any]
    provenance: dict[str, Any]
    behavior: dict[str, Any]
    scorer: dict[str, Any]
    config: dict[str, Any]
    direction: dict[str, Any]
    layers: list[int]
    norms: dict[str, float]
    unsteered_selection: dict[str, Any]
    cells: list[dict[str, Any]]
    search: dict[str, Any]
    chosen: ChosenCell
    test: SweepTest
    verdict: SweepVerdict
    examples: dict[str, list[dict[str, str]]]
    per_prompt: dict[str, Any]
    cost: dict[str, int]  # rows_generated, tokens_generated
    timings: dict[str, Any]
    maps: dict[str, Any] | None = None
    kind: str = KIND

    @property
    def chosen_record(self) -> dict[str, Any] | None:
        """The grid record of the chosen cell."""
        return next((c for c in self.cells if c["key"] == self.chosen.key), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``sweep.json`` document (NaN where the file has null)."""
        out = {
            "kind": self.kind,
            "steerlab_version": self.steerlab_version,
            "model": self.model,
            "provenance": self.provenance,
            "behavior": self.behavior,
            "scorer": self.scorer,
            "config": self.config,
            "direction": self.direction,
            "layers": self.layers,
            "norms": self.norms,
            "unsteered_selection": self.unsteered_selection,
            "cells": self.cells,
            "search": self.search,
            "chosen": self.chosen.to_dict(),
            "test": self.test.to_dict(),
            "verdict": self.verdict.to_dict(),
            "examples": self.examples,
            "per_prompt": self.per_prompt,
        }
        if self.maps is not None:
            out["maps"] = self.maps
        return out | {"cost": self.cost, "timings": self.timings}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepReport:
        """A ``sweep.json`` read back (or the dict :meth:`to_dict` gives)."""
        plain = (
            "steerlab_version", "model", "provenance", "behavior", "scorer", "config",
            "direction", "layers", "norms", "unsteered_selection", "cells", "search",
            "examples", "per_prompt", "cost", "timings",
        )  # fmt: skip
        return cls(
            **{k: d[k] for k in plain},
            kind=d["kind"],
            chosen=ChosenCell.from_dict(d["chosen"]),
            test=SweepTest.from_dict(d["test"]),
            verdict=SweepVerdict.from_dict(d["verdict"]),
            maps=d.get("maps"),
        )
