"""The arithmetic of every hook-applied treatment, written once.

Every executor calls these: the hooks on a Hugging Face model (:mod:`.execute`), the per-row
engine (the same hooks with a row mask) and the hooks inside vLLM's workers
(:mod:`steerlab.engines.vllm_worker`). ``mask`` is None (every row or token) or a 0/1 tensor
that broadcasts against ``h`` ((B, 1, 1) for HF batches, (T, 1) for vLLM's flattened tokens):
a masked-out row is left bit-identical (it gets ``h + 0``, even where ``d`` overflowed: a
``0 * inf`` would be NaN) and a masked-in row gets exactly the unmasked result, so a treatment
computes the same numbers whether it runs alone or as one group of a mixed batch.

Vectors arrive placed on ``h``'s device (moved once at registration); the casts here are free
when the dtype already matches.
"""

from __future__ import annotations

import torch

__all__ = ["clamp_delta", "project_out", "scaled", "shift", "span_coef"]


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else torch.where(mask != 0, x, 0.0)


def shift(h: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``h + delta`` (ActAdd / CAA addition), on the rows of ``mask``."""
    return h + _masked(delta.to(h.device, h.dtype), mask)


def scaled(coeff: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Per-row deltas ``coeff * vector`` from (R, 1) float32 coefficients and a float32 (D,)
    vector: each row is bit for bit the delta ``c * vector`` of a scalar ``c`` (a float32
    product either way), so a row steered by its own coefficient gets what the same steer
    alone would add."""
    return coeff * vector


def span_coef(basis: torch.Tensor) -> torch.Tensor:
    """(K, D) rows ``(Q Q^T)^-1 Q``, computed in float64 once per placement, so that removing
    the span of the rows *as cast* is idempotent (the cast rows are not exactly orthonormal)."""
    qd = basis.double()
    return torch.linalg.solve(qd @ qd.T, qd).to(basis.dtype)


def project_out(
    h: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
    coef: torch.Tensor | None = None,
) -> torch.Tensor:
    """``h`` with the direction ``basis`` (D,) or the span of its rows (K, D) removed.

    One direction divides by ``r . r`` in ``h``'s dtype, so the projector is idempotent although
    the cast unit vector is not exactly unit (hooks apply it several times per forward); a span
    uses :func:`span_coef` (pass it precomputed; computed here otherwise).
    """
    r = basis.to(h.device, h.dtype)
    if r.ndim == 1:
        return h - _masked(((h @ r) / (r @ r)).unsqueeze(-1) * r, mask)
    c = (span_coef(basis) if coef is None else coef).to(h.device, h.dtype)
    return h - _masked((h @ c.T) @ r, mask)


def clamp_delta(x: torch.Tensor, unit: torch.Tensor, value: float) -> torch.Tensor:
    """What to add to a stream whose value is ``x`` so that its projection on ``unit`` becomes
    ``value``: ``(value - x . r) / (r . r) r`` (every orthogonal component is kept)."""
    r = unit.to(x.device, x.dtype)
    return ((value - x @ r) / (r @ r)).unsqueeze(-1) * r
