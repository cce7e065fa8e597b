"""Settings of ``steerlab probe``; torch-free, so the command line can read them for --help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..configs import bounds, cli
from ..errors import DataError

__all__ = ["PROBE_METHODS", "ProbeConfig", "parse_train_sizes"]

PROBE_METHODS = ("mean_diff", "pca", "logistic", "lda", "leace")


def parse_train_sizes(text: str | tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A comma list of numbers, ``all`` and ``auto`` (``8,all``); a tuple passes through."""
    if not isinstance(text, str):
        return tuple(text)
    out: list[int | str] = []
    for x in (t.strip() for t in text.split(",") if t.strip()):
        if x in ("all", "auto"):
            out.append(x)
            continue
        try:
            out.append(int(x))
        except ValueError:
            raise DataError(f"--train-sizes takes numbers, 'all' and 'auto', got {x!r}") from None
    if not out:
        raise DataError("--train-sizes is empty")
    return tuple(out)


@dataclass(frozen=True)
class ProbeConfig:
    """What ``steerlab probe`` reads and how (methods and train sizes also take comma lists)."""

    layers: str = field(default="all", metadata=cli("all | L | A:B | L1,L2"))
    position: Literal["last", "mean", "instruction-end"] = field(
        default="last", metadata=cli("which token positions are read")
    )
    methods: str | tuple[str, ...] = field(
        default=PROBE_METHODS, metadata=cli(f"comma list of {', '.join(PROBE_METHODS)}")
    )
    # "auto": 4, 8, 16, ... below the smaller class's training count, then all of it.
    train_sizes: str | tuple[int | str, ...] = field(
        default=("auto",),
        metadata=cli(
            "examples per class for the sample-efficiency curves; auto = 4, 8, 16, ... and all"
        ),
    )
    draws: int = field(default=20, metadata=bounds(ge=1) | cli("random subsets per training size"))
    # nulls per layer (probe.nulls): each permutation refits the logistic probe and its C on
    # permuted train labels; each random direction is a unit vector signed on train
    permutations: int = field(
        default=20,
        metadata=bounds(ge=1) | cli("label permutations per layer (each refits its own C)"),
    )
    random_directions: int = field(
        default=20, metadata=bounds(ge=1) | cli("random unit directions per layer (the null)")
    )
    val_fraction: float = 0.2
    seed: int = field(default=0, metadata=cli("random seed"))
    chat: bool | None = field(default=None, metadata=cli("raw prompts, no template", "--no-chat"))
    batch_size: int = 16
    steer_coeff: float = field(
        default=0.25,
        metadata=cli("read-vs-steer strength, x the layer's median residual norm"),
    )
    steer_layers: int = 1
    max_new_tokens: int = field(
        default=32, metadata=bounds(ge=1) | cli("tokens generated per completion")
    )

    def __post_init__(self) -> None:
        methods = self.methods
        if isinstance(methods, str):
            methods = tuple(m.strip() for m in methods.split(",") if m.strip())
        object.__setattr__(self, "methods", tuple(methods))
        object.__setattr__(self, "train_sizes", parse_train_sizes(self.train_sizes))
        bad = [m for m in self.methods if m not in PROBE_METHODS]
        if bad or not self.methods:
            raise DataError(f"unknown --methods {bad}: use some of {', '.join(PROBE_METHODS)}")
        for name in ("draws", "permutations", "random_directions"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1")
