"""Train MELBO steering vectors: projected gradient ascent on the sphere, K vectors at once.

Mack & Turner 2024, "Mechanistically Eliciting Latent Behaviors in Language Models": a vector
``theta`` of fixed norm ``R`` added at an early layer ``S`` that maximally changes the
activations at a later layer ``T`` tends to elicit a coherent, often unexpected behaviour. For
each vector we maximize, over prompts ``i`` and target positions ``t``::

    f(theta) = sum_i ( sum_t || Z_T(theta)[i, t] - Z_T(0)[i, t] ||_2 ** p ) ** (1 / q)

with Adam (AMSGrad, betas 0.9/0.98, as the reference code), the gradient projected on the
sphere's tangent space before each step and ``theta`` renormalized to ``R`` after it.

Cost: ``resid_pre[S]``, ``Z_T(0)`` and the per-block arguments are recorded in one stock forward
(see :mod:`steerlab.melbo.blocks`); each step then runs only blocks ``S..T-1``, forward and
backward, on a ``(K * B, T, D)`` batch holding all K vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._version import __version__
from ..directions.extract import data_hash
from ..errors import DataError
from ..models.adapter import blocks_of
from ..models.chat import encode
from ..models.load import LoadedModel
from .blocks import PrefixCache, capture_prefix, frozen, run_slice
from .config import MelboConfig, parse_positions
from .result import MelboResult
from .sphere import gram_schmidt, project_tangent, random_vectors

__all__ = ["melbo_objective", "train_melbo"]


@dataclass
class _Chunk:
    cache: PrefixCache
    mask: torch.Tensor  # (B, T) bool: target positions
    massive: torch.Tensor  # (B, T) bool: left out as massive activations


def _safe_pow(x: torch.Tensor, e: float, keep: torch.Tensor) -> torch.Tensor:
    """``x ** e`` where ``keep`` (and x != 0), else 0, with finite gradients at 0.

    ``x ** e`` has an infinite derivative at 0 for ``e < 1``; masking after the fact would still
    multiply that infinity by zero in the backward pass.
    """
    sel = keep & (x != 0)  # NaN and inf pass through: they must be seen
    safe = torch.where(sel, x, torch.ones_like(x))
    return torch.where(sel, safe.pow(e), torch.zeros_like(x))


def melbo_objective(
    z: torch.Tensor, z0: torch.Tensor, mask: torch.Tensor, p: float = 2.0, q: float = 1.0
) -> torch.Tensor:
    """The MELBO objective per vector.

    Args:
        z: (K * B, T, D) steered target activations, vector k in rows ``k*B .. (k+1)*B - 1``.
        z0: (B, T, D) unsteered target activations.
        mask: (B, T) bool, the target positions.
        p, q: exponents (see :class:`MelboConfig`).

    Returns:
        (K,) float32: ``sum_b (sum_t ||z - z0||_2 ** p) ** (1 / q)``.
    """
    b, t, d = z0.shape
    diff = z.float().view(-1, b, t, d) - z0.float()  # (K, B, T, D)
    sq = diff.pow(2).sum(-1)  # (K, B, T)
    per_prompt = _safe_pow(sq, p / 2, mask).sum(-1)  # (K, B)
    return _safe_pow(per_prompt, 1 / q, torch.ones_like(per_prompt, dtype=torch.bool)).sum(-1)


def _prepare(
    lm: LoadedModel, blocks: nn.ModuleList, prompts: Sequence[str], cfg: MelboConfig
) -> _Chunk:
    assert cfg.source_layer is not None and cfg.target_layer is not None
    batch = encode(lm.tokenizer, prompts, chat=cfg.chat).to(lm.device)
    cache = capture_prefix(
        lm.model, blocks, batch, cfg.source_layer, cfg.target_layer, cfg.num_vectors
    )
    real = batch.attention_mask.bool()
    mask = real
    last = parse_positions(cfg.token_positions)
    if last is not None:
        t = mask.shape[1]
        mask = mask & (torch.arange(t, device=mask.device) >= t - last)
    massive = torch.zeros_like(mask)
    if cfg.massive_ratio is not None:
        massive = mask & massive_positions(cache.target, real, cfg.massive_ratio)
    return _Chunk(cache, mask & ~massive, massive)


def massive_positions(z: torch.Tensor, real: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, T) bool: real tokens whose ``||z||`` exceeds ``ratio`` x their prompt's median norm."""
    norms = z.float().norm(dim=-1)  # (B, T)
    pairs = zip(norms, real, strict=True)
    med = [n[r].median() if r.any() else n.new_tensor(0.0) for n, r in pairs]
    return real & (norms > ratio * torch.stack(med)[:, None])


def _forward(
    theta: torch.Tensor, chunk: _Chunk, blocks: Sequence[nn.Module], cfg: MelboConfig
) -> torch.Tensor:
    """(K,) objective of one prompt batch; differentiable in ``theta``."""
    src = chunk.cache.source  # (B, T, D)
    k = theta.shape[0]
    h = src.unsqueeze(0) + theta.to(src.device, src.dtype)[:, None, None, :]  # (K, B, T, D)
    z = run_slice(blocks, chunk.cache.calls, h.reshape(k * src.shape[0], *src.shape[1:]))
    return melbo_objective(z, chunk.cache.target, chunk.mask, cfg.p, cfg.q)


def train_melbo(
    lm: LoadedModel,
    prompts: Sequence[str],
    cfg: MelboConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> MelboResult:
    """Learn ``cfg.num_vectors`` unsupervised steering vectors (MELBO).

    The model is left exactly as it was (parameters, ``requires_grad`` flags, train/eval
    modes, hooks), also when an exception interrupts training. A vector whose objective or
    gradient becomes NaN/inf is stopped at its last finite value and reported in
    ``result.failed``; the others go on.

    Args:
        lm: from :func:`steerlab.load_model`.
        prompts: user instructions (the chat template is applied when the model has one).
        cfg: settings; defaults scaled from the paper (see :class:`MelboConfig`).
        progress: called with 1 after each optimization step.

    Returns:
        A :class:`MelboResult`; ``result.to_direction(k)`` steers with vector k.

    Example:
        >>> lm = steerlab.load_model("smollm2-135m")  # doctest: +SKIP
        >>> cfg = MelboConfig(radius=8.0, steps=50)  # doctest: +SKIP
        >>> res = train_melbo(lm, ["Tell me a story."], cfg)  # doctest: +SKIP
        >>> with steerlab.steer(lm.model, res.to_direction(0)):  # doctest: +SKIP
        ...     print(steerlab.generate(lm.model, lm.tokenizer, ["Tell me a story."]))
    """
    prompts = list(prompts)
    if not prompts:
        raise DataError("MELBO needs at least one prompt")
    if any(not str(x).strip() for x in prompts):
        raise DataError("the prompt set contains an empty prompt")
    cfg = (cfg or MelboConfig()).resolved(lm.info.n_layers, lm.info.d_model)
    assert cfg.source_layer is not None and cfg.target_layer is not None and cfg.lr is not None
    k, radius = cfg.num_vectors, cfg.radius
    all_blocks = blocks_of(lm.model, lm.adapter)
    blocks = list(all_blocks)[cfg.source_layer : cfg.target_layer]
    theta0 = random_vectors(lm.info.d_model, k, radius, cfg.seed)
    if cfg.orthogonal:
        theta0 = gram_schmidt(theta0, radius)

    with torch.inference_mode(False), frozen(lm.model):
        chunks = [
            _prepare(lm, all_blocks, prompts[i : i + cfg.batch_size], cfg)
            for i in range(0, len(prompts), cfg.batch_size)
        ]
        theta = theta0.to(lm.device).requires_grad_(True)  # (K, D) float32 leaf
        opt = torch.optim.Adam([theta], lr=cfg.lr, betas=(0.9, 0.98), amsgrad=True)
        book = _Book(theta.detach().clone(), k)
        for step in range(cfg.steps + 1):
            learn = step < cfg.steps and bool(book.alive.any())
            obj = _objective(theta, chunks, blocks, cfg, book.alive, learn)
            book.record(theta, obj, step, learn)
            if not learn or not book.alive.any():
                break
            _step(theta, opt, book.alive, cfg, book.good, book.failed)
            if progress:
                progress(1)

    return MelboResult(
        vectors=book.good.detach().float().cpu(),
        losses=book.good_obj,
        history=torch.stack(book.history),
        config=cfg,
        failed=book.failed,
        meta=_meta(lm, prompts, chunks),
    )


def _objective(
    theta: torch.Tensor,
    chunks: list[_Chunk],
    blocks: list[nn.Module],
    cfg: MelboConfig,
    alive: torch.Tensor,
    learn: bool,
) -> torch.Tensor:
    """(K,) float64 objective over all prompts; when ``learn``, the gradient of the live
    vectors' objectives is accumulated into ``theta.grad`` (zeroed first)."""
    obj = torch.zeros(theta.shape[0], dtype=torch.float64)
    if theta.grad is not None:
        theta.grad.zero_()
    for chunk in chunks:
        with torch.enable_grad():
            f = _forward(theta, chunk, blocks, cfg)
            if learn:
                (-f[alive.to(f.device)]).sum().backward()
        obj += f.detach().double().cpu()
    return obj


class _Book:
    """Per-vector bookkeeping: the last vectors whose objective was finite, their objectives,
    which vectors still learn, why the others stopped, and every step's objectives."""

    def __init__(self, good: torch.Tensor, k: int) -> None:
        self.good = good  # last vectors whose objective was finite
        self.good_obj = torch.full((k,), float("nan"), dtype=torch.float64)
        self.alive = torch.ones(k, dtype=torch.bool)
        self.failed: dict[int, str] = {}
        self.history: list[torch.Tensor] = []

    def stop(self, idx: torch.Tensor, what: str, step: int, kept: int) -> None:
        for i in idx.nonzero().flatten().tolist():
            self.failed[i] = (
                f"vector {i}: the {what} became non-finite at step {step}; stopped and "
                f"kept at its value from step {kept}"
            )
        self.alive.masked_fill_(idx, False)

    def record(self, theta: torch.Tensor, obj: torch.Tensor, step: int, learn: bool) -> None:
        """Keep this step's finite results; stop the vectors whose objective or gradient is
        not finite, and put every stopped vector back at its last good value."""
        alive = self.alive
        self.history.append(obj)
        self.stop(alive & ~torch.isfinite(obj), "objective", step, max(step - 1, 0))
        with torch.no_grad():
            on = alive.to(theta.device)
            self.good[on] = theta[on]  # these vectors' objectives are finite
            self.good_obj[alive] = obj[alive]
            if learn and theta.grad is not None:
                bad_grad = ~torch.isfinite(theta.grad).all(-1).cpu()
                self.stop(alive & bad_grad, "gradient", step, step)
            theta[~on] = self.good[~on]


def _step(
    theta: torch.Tensor,
    opt: torch.optim.Optimizer,
    alive: torch.Tensor,
    cfg: MelboConfig,
    good: torch.Tensor,
    failed: dict[int, str],
) -> None:
    """One projected Adam step; stopped vectors are put back where they were."""
    dead = (~alive).to(theta.device)
    fixed = sorted(failed)
    with torch.no_grad():
        assert theta.grad is not None
        g = theta.grad
        g[dead] = 0.0
        if cfg.orthogonal:
            g.copy_(gram_schmidt(theta.detach(), cfg.radius, fixed=fixed, grads=g))
        g.copy_(project_tangent(g, theta.detach()))
    opt.step()
    with torch.no_grad():
        theta[dead] = good[dead]
        if cfg.orthogonal:
            theta.copy_(gram_schmidt(theta.detach(), cfg.radius, fixed=fixed))
        else:
            theta.mul_(cfg.radius / theta.norm(dim=-1, keepdim=True))


def _meta(lm: LoadedModel, prompts: list[str], chunks: list[_Chunk]) -> dict[str, object]:
    n_tok = sum(int(c.mask.sum()) for c in chunks)
    n_massive = sum(int(c.massive.sum()) for c in chunks)
    norm_sum = sum(float(c.cache.target.float().norm(dim=-1)[c.mask].sum()) for c in chunks)
    return {
        "model": lm.info.to_dict(),
        "data_hash": data_hash(prompts),
        "n_prompts": len(prompts),
        "n_target_tokens": n_tok,
        "n_massive_tokens_skipped": n_massive,
        "target_norm": norm_sum / max(n_tok, 1),
        "steerlab_version": __version__,
    }
