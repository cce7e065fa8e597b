"""MELBO settings: defaults scaled from the paper, validated against a model's shape; and the
settings of the discover pipeline (:class:`DiscoverConfig`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import DataError, LayerError, SteerlabError, VectorError

__all__ = ["DiscoverConfig", "MelboConfig", "parse_positions"]


@dataclass(frozen=True)
class MelboConfig:
    """How to train unsupervised steering vectors (Mack & Turner 2024).

    Attributes:
        source_layer: ``S``: vectors are added to ``resid_pre[S]`` (the input of block S) at
            every token. Default: about a quarter of the depth, ``round(n_layers / 4)``.
        target_layer: ``T > S``: the change is measured at ``resid_pre[T]``. Default
            ``n_layers - 8`` as in the reference code, at least ``S + 1``.
        radius: ``R``, the norm of every vector (the paper's most important knob: too small
            changes nothing, too large breaks the model).
        num_vectors: ``K`` vectors, trained together in one batch.
        steps: projected gradient-ascent steps.
        lr: Adam learning rate; default ``1e-3 * R`` (Adam moves each coordinate by about
            ``lr`` per step, so the angular speed on the sphere does not depend on R).
        p: exponent of the per-token distance ``||Z_T(theta)[t] - Z_T(0)[t]||_2 ** p``.
        q: the per-prompt sum over tokens is raised to ``1 / q``.
        orthogonal: keep the K vectors mutually orthogonal (Gram-Schmidt in index order after
            every step, so vector k is orthogonal to vectors ``0..k-1``).
        token_positions: ``all`` real (non-padding) tokens, or ``last:N`` the last N tokens of
            each prompt, as target positions in the objective.
        massive_ratio: target positions whose unsteered ``||Z_T||`` exceeds this multiple of
            their prompt's median are left out of the objective; None keeps them. These are the
            "massive activations" of attention-sink tokens (Sun et al. 2024): on smollm2-135m
            the first token's norm at layer 22 is ~93x the median, so the plain objective is
            dominated by changing that one token, which barely changes the text.
        seed: vector k starts from a Gaussian drawn with seed ``seed + k``
            (see :func:`~steerlab.melbo.random_vectors`).
        batch_size: prompts per forward (gradients are summed over batches).
        chat: apply the chat template (default: when the tokenizer has one).
    """

    source_layer: int | None = None
    target_layer: int | None = None
    radius: float = 8.0
    num_vectors: int = 8
    steps: int = 200
    lr: float | None = None
    p: float = 2.0
    q: float = 1.0
    orthogonal: bool = False
    token_positions: str = "all"
    massive_ratio: float | None = 10.0
    seed: int = 0
    batch_size: int = 16
    chat: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, n_layers: int, d_model: int) -> MelboConfig:
        """Fill in the defaults for a model and validate everything.

        Raises:
            VectorError: radius not > 0, or more orthogonal vectors than dimensions.
            LayerError: layers out of range or ``S >= T``.
            DataError: an unknown ``token_positions``.
            SteerlabError: other out-of-range settings.
        """
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise VectorError(f"radius must be a finite number > 0, got {self.radius}")
        if self.num_vectors < 1:
            raise SteerlabError(f"num_vectors must be at least 1, got {self.num_vectors}")
        if self.orthogonal and self.num_vectors > d_model:
            raise VectorError(
                f"cannot make {self.num_vectors} orthogonal vectors in {d_model} dimensions; "
                f"ask for at most {d_model} or drop orthogonal"
            )
        if self.steps < 0:
            raise SteerlabError(f"steps must be >= 0, got {self.steps}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SteerlabError(f"lr must be a finite number > 0, got {self.lr}")
        for name, v in (("p", self.p), ("q", self.q)):
            if not (math.isfinite(v) and v > 0):
                raise SteerlabError(f"{name} must be a finite number > 0, got {v}")
        if self.batch_size < 1:
            raise SteerlabError(f"batch_size must be at least 1, got {self.batch_size}")
        parse_positions(self.token_positions)
        m = self.massive_ratio
        if m is not None and not (math.isfinite(m) and m > 1):
            raise SteerlabError(f"massive_ratio must be a finite number > 1 or None, got {m}")
        if n_layers < 2:
            raise LayerError(f"MELBO needs at least 2 layers; the model has {n_layers}")
        s = self.source_layer
        if s is None:
            s = min(int(n_layers / 4 + 0.5), n_layers - 2)
        t = self.target_layer if self.target_layer is not None else max(n_layers - 8, s + 1)
        if not 0 <= s < n_layers - 1:
            raise LayerError(
                f"source layer {s} is out of range: the model has blocks 0..{n_layers - 1} and "
                f"the target must come after the source, so use 0..{n_layers - 2}"
            )
        if not 0 < t < n_layers:
            raise LayerError(
                f"target layer {t} is out of range: resid_pre[T] needs 1 <= T <= {n_layers - 1}"
            )
        if s >= t:
            raise LayerError(f"the source layer ({s}) must come before the target layer ({t})")
        lr = self.lr if self.lr is not None else 1e-3 * self.radius
        return replace(self, source_layer=s, target_layer=t, lr=lr)


def parse_positions(spec: str) -> int | None:
    """``all`` -> None; ``last:N`` -> N (N >= 1). Raises :class:`DataError` otherwise."""
    if spec == "all":
        return None
    if spec.startswith("last:"):
        try:
            n = int(spec[5:])
        except ValueError:
            n = 0
        if n >= 1:
            return n
    raise DataError(f"unknown token_positions {spec!r}: use all or last:N (N >= 1)")


@dataclass(frozen=True)
class DiscoverConfig:
    """Settings of :func:`run_discover`.

    Attributes:
        melbo: MELBO settings (layers, K, steps, lr, p, q, orthogonal, positions, seed, chat);
            its ``radius`` is ignored: set ``radius`` here.
        radius: ``R`` (> 0), or ``"auto"`` to choose it by the sweep (``RADIUS_RULE``).
        max_new_tokens: greedy tokens per completion.
        batch_size: rows per ``generate`` batch (prompts x (vector, sign) pairs).
        chunk_size: vectors trained per resumable chunk (orthogonal: all K in one).
        sweep_factors: the auto grid, as multiples of the median ``||resid_pre[S]||``.
        sweep_vectors, sweep_steps: the short sweep runs, on the first 8 prompts and 16 new
            tokens (``sweep_steps`` default: a quarter of ``melbo.steps``, at least 1).
        fluency_margin: nats/token a radius may add to the unsteered loss (see the rule).
    """

    melbo: MelboConfig = field(default_factory=MelboConfig)
    radius: float | str = "auto"
    max_new_tokens: int = 32
    batch_size: int = 32
    chunk_size: int = 4
    sweep_factors: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5, 1.0)
    sweep_vectors: int = 4
    sweep_steps: int | None = None
    fluency_margin: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
