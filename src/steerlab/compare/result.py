"""What ``steerlab compare`` returns and writes to ``compare.json``, field by field.

:meth:`CompareReport.to_dict` is the JSON contract: the keys, order and values the pipeline
has always written (scripts read them; NaN is written as null). :meth:`CompareReport.from_dict`
reads the file back; only genuinely optional fields may be absent (a summary row's
``examples_used``, a contrast's ``view``, the random null of a run without random directions).
The report page and the CLI parse once and read attributes. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Budget",
    "CompareExample",
    "CompareReport",
    "Contrast",
    "NullAtN",
    "NullCell",
    "RandomNull",
    "SummaryRow",
    "Winner",
]

KIND = "compare"


@dataclass(frozen=True)
class Budget:
    """The tuning budget of a method at one N: candidates scored on the selection split (the
    most at any draw) and seconds spent fitting and choosing (mean over draws)."""

    candidates: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Budget:
        return cls(d["candidates"], d["seconds"])


@dataclass(frozen=True)
class SummaryRow:
    """One method at one N over test prompts and draws: the mean score with its two-level
    bootstrap interval, the share above ``rate_threshold`` with its Wilson interval, CE under
    the unsteered model, whether every draw's choice kept to the fluency bound, cross-prompt
    similarity and degeneracy, the mean selection score, and the cost of tuning."""

    method: str
    n: int
    score: float | None
    ci: list[float | None]
    rate: float | None
    rate_ci: list[float | None]
    rate_threshold: float
    ce: float | None
    within_bound: bool
    similarity: float | None
    degenerate: bool
    selection_score: float | None
    fit_seconds: float | None
    examples_per_second: float | None
    budget: Budget
    kl: float | None
    distinct2: float | None
    draws: int
    prompts: int
    uses_examples: bool
    examples_used: float | None = None  # few-shot: the pairs that fit the context (mean)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "n": self.n,
            "score": self.score,
            "ci": self.ci,
            "rate": self.rate,
            "rate_ci": self.rate_ci,
            "rate_threshold": self.rate_threshold,
            "ce": self.ce,
            "within_bound": self.within_bound,
            "similarity": self.similarity,
            "degenerate": self.degenerate,
            "selection_score": self.selection_score,
            "fit_seconds": self.fit_seconds,
            "examples_per_second": self.examples_per_second,
            "budget": self.budget.to_dict(),
            "kl": self.kl,
            "distinct2": self.distinct2,
            "draws": self.draws,
            "prompts": self.prompts,
            "uses_examples": self.uses_examples,
        }
        if self.examples_used is not None:
            out["examples_used"] = self.examples_used
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SummaryRow:
        keys = [k for k in cls.__dataclass_fields__ if k not in ("budget", "examples_used")]
        got = {k: d[k] for k in keys} | {"ci": list(d["ci"]), "rate_ci": list(d["rate_ci"])}
        return cls(
            **got, budget=Budget.from_dict(d["budget"]), examples_used=d.get("examples_used")
        )


@dataclass(frozen=True)
class Contrast:
    """A pre-named paired contrast: ``a`` against ``b`` at N (None: methods without
    examples), the mean per-prompt difference with its interval, the p-value (sign-flip, or
    the prediction test against the random null), the number of prompts and the
    Holm-adjusted p over the whole family. ``view`` ("constrained"/"unconstrained") only on
    the family-best contrasts."""

    a: str
    b: str
    n: int | None
    kind: str
    diff: float | None
    ci: list[float | None]
    p: float | None
    prompts: int
    p_holm: float | None
    view: str | None = None

    @property
    def significant(self) -> bool:
        """Holm-adjusted p below 0.05 (the report's star)."""
        return self.p_holm is not None and self.p_holm < 0.05

    def to_dict(self) -> dict[str, Any]:
        out = {"a": self.a, "b": self.b, "n": self.n, "kind": self.kind, "diff": self.diff}
        out |= {"ci": self.ci, "p": self.p, "prompts": self.prompts}
        if self.view is not None:
            out["view"] = self.view
        return out | {"p_holm": self.p_holm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Contrast:
        return cls(
            d["a"], d["b"], d["n"], d["kind"], d["diff"], list(d["ci"]), d["p"], d["prompts"],
            d["p_holm"], d.get("view"),
        )  # fmt: skip


@dataclass(frozen=True)
class Winner:
    """Per N and view: the family best that beats both other families' bests by the paired
    contrasts (Holm p < 0.05), or none (``method`` None, ``separated`` False)."""

    n: int
    view: str
    method: str | None
    score: float | None
    separated: bool
    beats: list[str]
    family_best: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "view": self.view,
            "method": self.method,
            "score": self.score,
            "separated": self.separated,
            "beats": self.beats,
            "family_best": self.family_best,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Winner:
        return cls(
            d["n"], d["view"], d["method"], d["score"], d["separated"], list(d["beats"]),
            dict(d["family_best"]),
        )  # fmt: skip


@dataclass(frozen=True)
class NullCell:
    """Where the random directions were added: mean_diff's chosen layer and coefficient."""

    layer: int
    coeff: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "coeff": self.coeff}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NullCell:
        return cls(d["layer"], d["coeff"])


@dataclass(frozen=True)
class NullAtN:
    """The random null at one N: each direction's mean test score and their mean CE."""

    n: int
    cell: NullCell
    scores: list[float | None]
    ce: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "cell": self.cell.to_dict(), "scores": self.scores, "ce": self.ce}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NullAtN:
        return cls(d["n"], NullCell.from_dict(d["cell"]), list(d["scores"]), d["ce"])


@dataclass(frozen=True)
class RandomNull:
    """Norm-matched random directions at mean_diff's chosen cell: the largest N's (their
    scores, central 95%, mean CE, every method's percentile among them) and every N's."""

    n_directions: int
    n: int
    cell: NullCell
    scores: list[float | None]
    ci: list[float | None]
    ce: float | None
    percentile: dict[str, float | None]
    by_n: list[NullAtN]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_directions": self.n_directions,
            "n": self.n,
            "cell": self.cell.to_dict(),
            "scores": self.scores,
            "ci": self.ci,
            "ce": self.ce,
            "percentile": self.percentile,
            "by_n": [b.to_dict() for b in self.by_n],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RandomNull:
        return cls(
            d["n_directions"], d["n"], NullCell.from_dict(d["cell"]), list(d["scores"]),
            list(d["ci"]), d["ce"], dict(d["percentile"]),
            [NullAtN.from_dict(b) for b in d["by_n"]],
        )  # fmt: skip


@dataclass(frozen=True)
class CompareExample:
    """A test prompt, a method's completion of it (draw 0, the largest N) and its score."""

    prompt: str
    completion: str
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "score": self.score}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareExample:
        return cls(d["prompt"], d["completion"], d["score"])


@dataclass(frozen=True)
class CompareReport:
    """A comparison (``compare.json``). ``runs`` are the journal's records (one per method,
    N and draw, without completions; what a method chose differs by method, so they stay
    dicts); ``random_null`` is None where no random direction was run."""

    steerlab_version: str
    model: dict[str, Any]
    provenance: dict[str, Any]
    behavior: dict[str, Any]
    scorer: dict[str, Any]
    config: dict[str, Any]
    methods: list[str]
    skipped: dict[str, str]
    train_sizes: list[int]
    layers: list[int]
    norms: dict[str, float]
    pool: dict[str, Any]  # pairs, draw_rule
    splits: dict[str, int]  # selection, test, neutral
    rule: str
    unsteered_selection: dict[str, Any]  # score, ce, similarity
    summary: list[SummaryRow]
    runs: list[dict[str, Any]]
    examples: dict[str, list[CompareExample]]
    cost: dict[str, int]  # rows_generated, tokens_generated
    timings: dict[str, Any]
    contrasts: list[Contrast]
    winners: list[Winner]
    random_null: RandomNull | None
    kind: str = KIND

    def rows(self, method: str) -> list[SummaryRow]:
        """``method``'s summary rows by increasing N."""
        return sorted((r for r in self.summary if r.method == method), key=lambda r: r.n)

    def row(self, method: str, n: int) -> SummaryRow | None:
        return next((r for r in self.summary if r.method == method and r.n == n), None)

    def winner(self, n: int, view: str = "constrained") -> Winner | None:
        return next((w for w in self.winners if w.n == n and w.view == view), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``compare.json`` document (NaN where the file has null)."""
        return {
            "kind": self.kind,
            "steerlab_version": self.steerlab_version,
            "model": self.model,
            "provenance": self.provenance,
            "behavior": self.behavior,
            "scorer": self.scorer,
            "config": self.config,
            "methods": self.methods,
            "skipped": self.skipped,
            "train_sizes": self.train_sizes,
            "layers": self.layers,
            "norms": self.norms,
            "pool": self.pool,
            "splits": self.splits,
            "rule": self.rule,
            "unsteered_selection": self.unsteered_selection,
            "summary": [r.to_dict() for r in self.summary],
            "runs": self.runs,
            "examples": {m: [e.to_dict() for e in ex] for m, ex in self.examples.items()},
            "cost": self.cost,
            "timings": self.timings,
            "contrasts": [c.to_dict() for c in self.contrasts],
            "winners": [w.to_dict() for w in self.winners],
            "random_null": None if self.random_null is None else self.random_null.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareReport:
        """A ``compare.json`` read back (or the dict :meth:`to_dict` gives)."""
        null = d.get("random_null")
        plain = (
            "steerlab_version", "model", "provenance", "behavior", "scorer", "config",
            "methods", "skipped", "train_sizes", "layers", "norms", "pool", "splits", "rule",
            "unsteered_selection", "runs", "cost", "timings",
        )  # fmt: skip
        return cls(
            **{k: d[k] for k in plain},
            kind=d["kind"],
            summary=[SummaryRow.from_dict(r) for r in d["summary"]],
            examples={
                m: [CompareExample.from_dict(e) for e in ex] for m, ex in d["examples"].items()
            },
            contrasts=[Contrast.from_dict(c) for c in d["contrasts"]],
            winners=[Winner.from_dict(w) for w in d["winners"]],
            random_null=None if null is None else RandomNull.from_dict(null),
        )
