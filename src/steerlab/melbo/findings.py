"""What ``steerlab discover`` returns and writes to ``report.json``, field by field.

:meth:`DiscoverReport.to_dict` is the JSON contract (keys, order and values as always written);
:meth:`DiscoverReport.from_dict` reads a report back, tolerating partial ones (a missing key
reads as None or empty), so the page parses once and then reads attributes. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Cluster", "DiscoverReport", "GroupSummary", "Radius", "VectorRow"]

KIND = "steerlab.melbo.discover"


def _mapping(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _flat(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _take(cls: Any, d: Any) -> Any:
    """``cls`` from the keys of ``d`` that name its fields; absent ones None."""
    d = _mapping(d)
    return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class GroupSummary:
    """The mean of each per-vector metric over a group's (vector, sign) pairs, and the best
    pair's new opening (:func:`~steerlab.melbo.metrics.group_summary`)."""

    n: int | None = None
    changed: float | None = None
    edit_distance: float | None = None
    new_opening: float | None = None
    loss: float | None = None
    loss_increase: float | None = None
    new_opening_max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Any) -> GroupSummary:
        return _take(cls, d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Cluster:
    """One group of learned (vector, sign) pairs with similar completions."""

    id: int
    size: int
    members: list[list[int]]  # [index, sign]
    terms: list[str]  # top TF-IDF terms
    silhouette: float | None  # of the split; None for a single group

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cluster:
        return cls(d["id"], d["size"], d["members"], d["terms"], d["silhouette"])


@dataclass(frozen=True)
class VectorRow:
    """One (kind, index, sign) of ``report.json``'s ``vectors`` (``completions.json`` adds the
    completions): its metrics against the unsteered texts, its group, its norm, and for a
    learned vector its MELBO objective and any failure."""

    index: int
    kind: str
    sign: int
    cluster: int | None
    metrics: dict[str, float | None]
    norm: float | None
    objective: float | None
    failed: str | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VectorRow:
        return _take(cls, d)  # type: ignore[no-any-return]


# the sweep's extra keys, in the order report.json has them
_SWEEP_KEYS = (
    "chosen_index",
    "fluency_margin",
    "median_source_norm",
    "sweep_vectors",
    "sweep_steps",
    "sweep_prompts",
    "sweep_new_tokens",
    "unsteered_loss",
    "rule",
    "sweep",
    "note",
)


@dataclass(frozen=True)
class Radius:
    """The steering radius R: given (``mode`` "fixed"), or chosen by a short sweep ("auto"),
    whose settings, rule, grid points and note are kept (None when fixed)."""

    mode: str | None
    value: float | None
    chosen_index: int | None = None
    fluency_margin: float | None = None
    median_source_norm: float | None = None
    sweep_vectors: int | None = None
    sweep_steps: int | None = None
    sweep_prompts: int | None = None
    sweep_new_tokens: int | None = None
    unsteered_loss: float | None = None
    rule: str | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)  # grid points, as journaled
    note: str | None = None

    @property
    def auto(self) -> bool:
        return self.mode == "auto"

    def to_dict(self) -> dict[str, Any]:
        out = {"mode": self.mode, "value": self.value}
        return (out | {k: getattr(self, k) for k in _SWEEP_KEYS}) if self.auto else out

    @classmethod
    def from_dict(cls, d: Any) -> Radius:
        d = _mapping(d)
        rest = {k: d.get(k) for k in _SWEEP_KEYS if k != "sweep"}
        return cls(d.get("mode"), d.get("value"), sweep=list(d.get("sweep") or []), **rest)


@dataclass(frozen=True)
class DiscoverReport:
    """What a discover run found (``report.json``)."""

    model: dict[str, Any]
    config: dict[str, Any]
    radius: Radius
    summary: dict[str, GroupSummary]  # "learned" and "random"
    vectors: list[VectorRow]
    clusters: list[Cluster]
    identity: dict[str, Any] | None = None
    steerlab_version: str | None = None
    n_prompts: int | None = None
    unsteered_loss: float | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    compute_seconds: dict[str, float] = field(default_factory=dict)
    resumed_steps: list[str] | None = None
    kind: str = KIND

    @property
    def melbo(self) -> Mapping[str, Any]:
        """The resolved MELBO settings (layers, number of vectors)."""
        return _mapping(self.config.get("melbo"))

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "kind": self.kind,
            "model": self.model,
            "identity": self.identity,
            "steerlab_version": self.steerlab_version,
            "config": self.config,
            "n_prompts": self.n_prompts,
            "radius": self.radius.to_dict(),
            "unsteered_loss": self.unsteered_loss,
            "summary": {k: s.to_dict() for k, s in self.summary.items()},
            "vectors": [v.to_dict() for v in self.vectors],
            "clusters": [c.to_dict() for c in self.clusters],
            "notes": self.notes,
            "timings": self.timings,
            "compute_seconds": self.compute_seconds,
            "resumed_steps": self.resumed_steps,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoverReport:
        """A report read back (``report.json``, or a partial one)."""
        summary = _mapping(d.get("summary"))
        return cls(
            kind=str(d.get("kind") or KIND),
            model=dict(_mapping(d.get("model"))),
            identity=d.get("identity"),
            steerlab_version=d.get("steerlab_version"),
            config=dict(_mapping(d.get("config"))),
            n_prompts=d.get("n_prompts"),
            radius=Radius.from_dict(d.get("radius")),
            unsteered_loss=d.get("unsteered_loss"),
            summary={k: GroupSummary.from_dict(s) for k, s in summary.items()},
            vectors=[VectorRow.from_dict(v) for v in d.get("vectors") or []],
            clusters=[Cluster.from_dict(c) for c in d.get("clusters") or []],
            notes=list(d.get("notes") or []),
            timings=dict(_mapping(d.get("timings"))),
            compute_seconds=dict(_mapping(d.get("compute_seconds"))),
            resumed_steps=d.get("resumed_steps"),
        )
