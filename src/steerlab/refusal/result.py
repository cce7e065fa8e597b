"""What ``steerlab refusal`` returns and writes to ``report.json``, field by field.

:meth:`RefusalReport.to_dict` is the JSON contract: the keys, order and values the pipeline
has always written (other scripts read them). :meth:`RefusalReport.from_dict` reads a report
back; it tolerates older and partial ones (a missing key reads as None or empty), so the page
parses once and then reads attributes. Stdlib only: the report page and the CLI import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "BaselineScores",
    "CandidateRow",
    "Example",
    "Failure",
    "FilterCounts",
    "RefusalReport",
    "SelectedCandidate",
    "SetMetrics",
    "VariantMetrics",
    "Verdict",
]

SETS = ("harmful", "harmless")
KIND = "steerlab.refusal"


def _mapping(x: Any) -> Mapping[str, Any]:
    """``x`` when it is a mapping, else empty: a partial report may hold None or junk."""
    return x if isinstance(x, Mapping) else {}


def _take(cls: Any, d: Any) -> Any:
    """``cls`` from the keys of ``d`` that name its fields; absent ones None."""
    d = _mapping(d)
    return cls(**{f.name: d.get(f.name) for f in fields(cls)})


def _flat(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass(frozen=True)
class SetMetrics:
    """One prompt set's measures under one variant (None: not measured there). Rates are
    substring / strict refusal with Wilson intervals; the score is the mean first-token refusal
    score with a bootstrap interval."""

    score_mean: float | None = None
    score_ci: list[float] | None = None
    refusal_rate: float | None = None
    refusal_ci: list[float] | None = None
    refusal_k: int | None = None
    n: int | None = None
    refusal_rate_strict: float | None = None
    refusal_ci_strict: list[float] | None = None
    refusal_k_strict: int | None = None
    disagreement: float | None = None  # share of completions where the two measures differ

    def flat(self, which: str) -> dict[str, Any]:
        """As ``report.json`` spells them: ``{which}_{field}``."""
        return {f"{which}_{k}": v for k, v in _flat(self).items()}

    @classmethod
    def from_flat(cls, d: Mapping[str, Any], which: str) -> SetMetrics:
        return cls(**{f.name: d.get(f"{which}_{f.name}") for f in fields(cls)})


@dataclass(frozen=True)
class VariantMetrics:
    """One row of the evaluation: KL and cross-entropy on harmless prompts, what was applied
    (the intervention's spec), and the measures per prompt set."""

    kl_harmless: float | None
    ce_loss_harmless: float | None
    ce_loss_completions: float | None
    intervention: dict[str, Any] | None
    harmful: SetMetrics
    harmless: SetMetrics

    def of(self, which: str) -> SetMetrics:
        return self.harmful if which == "harmful" else self.harmless

    def to_dict(self) -> dict[str, Any]:
        head = ("kl_harmless", "ce_loss_harmless", "ce_loss_completions", "intervention")
        out = {k: getattr(self, k) for k in head}
        return out | self.harmful.flat("harmful") | self.harmless.flat("harmless")

    @classmethod
    def from_dict(cls, d: Any) -> VariantMetrics:
        d = _mapping(d)
        spec = d.get("intervention")
        return cls(
            d.get("kl_harmless"),
            d.get("ce_loss_harmless"),
            d.get("ce_loss_completions"),
            dict(spec) if isinstance(spec, Mapping) else None,
            *(SetMetrics.from_flat(d, w) for w in SETS),
        )


@dataclass(frozen=True)
class Verdict:
    """One sentence on what the numbers say; ``level`` is "ok" or "warning"."""

    check: str
    level: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class Failure:
    """The step a failed run stopped at, and its error."""

    step: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class SelectedCandidate:
    """The chosen (layer, position), its scores and the addition coefficient."""

    layer: int | None
    position: int | None
    bypass_score: float | None
    induce_score: float | None
    kl_score: float | None
    coeff: float | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class CandidateRow:
    """One (layer, position) candidate: full scores, pre-screen scores and its status."""

    layer: int
    position: int
    bypass_score: float | None = None
    induce_score: float | None = None
    kl_score: float | None = None
    screen_bypass: float | None = None
    screen_kl: float | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)

    @classmethod
    def from_dict(cls, c: Mapping[str, Any]) -> CandidateRow:
        """From a candidate record of the selection (scores not computed are absent)."""
        return _take(cls, c)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class FilterCounts:
    """How many train prompts the filter kept of each set (harmful ones the model refuses,
    harmless ones it answers)."""

    harmful_kept: int | None
    harmful_total: int | None
    harmless_kept: int | None
    harmless_total: int | None

    def share(self, which: str) -> float | None:
        """The share kept of ``which``; None where a count is missing."""
        kept, total = getattr(self, f"{which}_kept"), getattr(self, f"{which}_total")
        return kept / total if isinstance(kept, int) and total else None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class BaselineScores:
    """The unchanged model's mean refusal score on harmful and harmless val prompts."""

    harmful_val_mean: float | None
    harmless_val_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class Example:
    """A held-out prompt and each variant's completion of it."""

    set: str | None
    prompt: str | None
    completions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(frozen=True)
class RefusalReport:
    """What a refusal run found (``report.json``); a failed run has ``status == "failed"``,
    ``failure`` set and whatever the finished steps measured."""

    status: str
    model: str | None
    config: dict[str, Any]
    selection_rule: str | None
    failure: Failure | None = None
    identity: dict[str, Any] | None = None
    selected: SelectedCandidate | None = None
    directions: dict[str, Any] | None = None  # --directions K: the span, its hash
    candidates: list[CandidateRow] = field(default_factory=list)
    coefficient_scan: list[dict[str, float]] = field(default_factory=list)
    baseline_scores: BaselineScores | None = None
    variants: dict[str, VariantMetrics] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    disagreement: dict[str, float | None] | None = None
    examples: list[Example] = field(default_factory=list)
    filter: FilterCounts | None = None
    export: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evaluation_generation: dict[str, Any] | None = None
    compute_seconds: dict[str, float] = field(default_factory=dict)
    resumed_steps: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    steerlab_version: str | None = None
    kind: str = KIND

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` document, in the order it has always been written."""

        def opt(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return {
            "kind": self.kind,
            "status": self.status,
            "failure": opt(self.failure),
            "model": self.model,
            "identity": self.identity,
            "config": self.config,
            "selected": opt(self.selected),
            "directions": self.directions,
            "selection_rule": self.selection_rule,
            "candidates": [c.to_dict() for c in self.candidates],
            "coefficient_scan": self.coefficient_scan,
            "baseline_scores": opt(self.baseline_scores),
            "variants": {n: v.to_dict() for n, v in self.variants.items()},
            "verdicts": [v.to_dict() for v in self.verdicts],
            "disagreement": self.disagreement,
            "examples": [e.to_dict() for e in self.examples],
            "filter": opt(self.filter),
            "export": self.export,
            "timings": self.timings,
            "evaluation_generation": self.evaluation_generation,
            "compute_seconds": self.compute_seconds,
            "resumed_steps": self.resumed_steps,
            "notes": self.notes,
            "steerlab_version": self.steerlab_version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RefusalReport:
        """A report read back (``report.json``, or an older or partial one)."""
        sel, base, fail = d.get("selected"), d.get("baseline_scores"), d.get("failure")
        filt = d.get("filter")
        has_layer = isinstance(sel, Mapping) and sel.get("layer") is not None
        dis, variants = d.get("disagreement"), _mapping(d.get("variants"))
        return cls(
            kind=str(d.get("kind") or KIND),
            status=str(d.get("status") or "complete"),
            failure=_take(Failure, fail) if isinstance(fail, Mapping) and fail else None,
            model=d.get("model"),
            identity=d.get("identity"),
            config=dict(_mapping(d.get("config"))),
            selected=_take(SelectedCandidate, sel) if has_layer else None,
            directions=d.get("directions"),
            selection_rule=d.get("selection_rule"),
            candidates=[CandidateRow.from_dict(c) for c in d.get("candidates") or []],
            coefficient_scan=list(d.get("coefficient_scan") or []),
            baseline_scores=_take(BaselineScores, base) if isinstance(base, Mapping) else None,
            variants={n: VariantMetrics.from_dict(v) for n, v in variants.items()},
            verdicts=[_verdict(v) for v in d.get("verdicts") or []],
            disagreement=dict(dis) if isinstance(dis, Mapping) else None,
            examples=[_example(e) for e in d.get("examples") or []],
            filter=_take(FilterCounts, filt) if isinstance(filt, Mapping) and filt else None,
            export=d.get("export") if isinstance(d.get("export"), Mapping) else None,
            timings=dict(_mapping(d.get("timings"))),
            evaluation_generation=d.get("evaluation_generation"),
            compute_seconds=dict(_mapping(d.get("compute_seconds"))),
            resumed_steps=d.get("resumed_steps"),
            notes=list(d.get("notes") or []),
            steerlab_version=d.get("steerlab_version"),
        )


def _verdict(v: Mapping[str, Any]) -> Verdict:
    # anything but "ok" is worth a look
    level = "ok" if v.get("level") == "ok" else "warning"
    return Verdict(str(v.get("check")), level, str(v.get("text")))


def _example(e: Mapping[str, Any]) -> Example:
    return Example(e.get("set"), e.get("prompt"), dict(_mapping(e.get("completions"))))
