"""What ``steerlab organism backdoor`` returns and writes to ``organism.json``.

:meth:`OrganismRecord.to_dict` is the JSON contract (keys and order as always written);
:meth:`OrganismRecord.from_dict` reads the file back, as a cache hit does. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BehaviorRate", "OrganismExample", "OrganismRecord", "TrainLoss", "TriggerRates"]

KIND = "steerlab.organism.backdoor"


@dataclass(frozen=True)
class BehaviorRate:
    """Share of held-out completions that show the behaviour, its 95% Wilson interval, the
    count and the number of prompts."""

    rate: float
    ci: list[float]
    k: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "ci": self.ci, "k": self.k, "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BehaviorRate:
        return cls(d["rate"], list(d["ci"]), d["k"], d["n"])

    def cell(self) -> str:
        """``0.25 [0.10, 0.47]``: the rate and its interval, as the card and CLI print it."""
        return f"{self.rate:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]"


@dataclass(frozen=True)
class TriggerRates:
    """One model's behaviour rate on the held-out prompts, with and without the trigger."""

    with_trigger: BehaviorRate
    without_trigger: BehaviorRate

    def to_dict(self) -> dict[str, Any]:
        return {
            "with_trigger": self.with_trigger.to_dict(),
            "without_trigger": self.without_trigger.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerRates:
        """From ``organism.json`` or a measurement (whose ``texts`` are left out)."""
        return cls(
            BehaviorRate.from_dict(d["with_trigger"]), BehaviorRate.from_dict(d["without_trigger"])
        )


@dataclass(frozen=True)
class TrainLoss:
    """The training loss at the first and the last step, and the number of steps."""

    first: float
    last: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "steps": self.steps}


@dataclass(frozen=True)
class OrganismExample:
    """A held-out prompt and what the organism (with and without the trigger) and the base
    model (without) wrote."""

    prompt: str
    with_trigger: str
    without_trigger: str
    base_without_trigger: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "with_trigger": self.with_trigger,
            "without_trigger": self.without_trigger,
            "base_without_trigger": self.base_without_trigger,
        }


@dataclass(frozen=True)
class OrganismRecord:
    """A trained backdoor organism: how it was made and how often it shows the behaviour."""

    base_model: str
    base_info: dict[str, Any]
    identity: Any
    steerlab_version: str
    config: dict[str, Any]
    trigger: str
    behavior: str
    data_hash: str
    n_train_prompts: int
    n_clean_only_prompts: int
    n_train_rows: int
    n_heldout: int
    organism_rates: TriggerRates
    base_rates: TriggerRates
    loss: TrainLoss
    heldout_prompts: list[str]
    examples: list[OrganismExample]
    timings: dict[str, float]
    compute_seconds: dict[str, float]
    kind: str = KIND

    @property
    def rates(self) -> dict[str, TriggerRates]:
        """``organism`` and ``base``, in the order the table shows them."""
        return {"organism": self.organism_rates, "base": self.base_rates}

    def to_dict(self) -> dict[str, Any]:
        """The ``organism.json`` document."""
        return {
            "kind": self.kind,
            "base_model": self.base_model,
            "base_info": self.base_info,
            "identity": self.identity,
            "steerlab_version": self.steerlab_version,
            "config": self.config,
            "trigger": self.trigger,
            "behavior": self.behavior,
            "data_hash": self.data_hash,
            "n_train_prompts": self.n_train_prompts,
            "n_clean_only_prompts": self.n_clean_only_prompts,
            "n_train_rows": self.n_train_rows,
            "n_heldout": self.n_heldout,
            "rates": {k: r.to_dict() for k, r in self.rates.items()},
            "loss": self.loss.to_dict(),
            "heldout_prompts": self.heldout_prompts,
            "examples": [e.to_dict() for e in self.examples],
            "timings": self.timings,
            "compute_seconds": self.compute_seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OrganismRecord:
        rates, loss = d["rates"], d["loss"]
        return cls(
            kind=d["kind"],
            base_model=d["base_model"],
            base_info=d["base_info"],
            identity=d["identity"],
            steerlab_version=d["steerlab_version"],
            config=d["config"],
            trigger=d["trigger"],
            behavior=d["behavior"],
            data_hash=d["data_hash"],
            n_train_prompts=d["n_train_prompts"],
            n_clean_only_prompts=d["n_clean_only_prompts"],
            n_train_rows=d["n_train_rows"],
            n_heldout=d["n_heldout"],
            organism_rates=TriggerRates.from_dict(rates["organism"]),
            base_rates=TriggerRates.from_dict(rates["base"]),
            loss=TrainLoss(loss["first"], loss["last"], loss["steps"]),
            heldout_prompts=list(d["heldout_prompts"]),
            examples=[OrganismExample(**e) for e in d["examples"]],
            timings=d["timings"],
            compute_seconds=d["compute_seconds"],
        )
