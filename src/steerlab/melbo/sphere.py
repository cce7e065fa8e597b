"""Vectors on the sphere of radius R: random draws, tangent projection, Gram-Schmidt."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import VectorError

__all__ = ["gram_schmidt", "project_tangent", "random_vectors"]


def random_vectors(d: int, k: int, radius: float, seed: int = 0) -> torch.Tensor:
    """K random directions of norm ``radius``: the control MELBO vectors must beat.

    Row ``j`` is a standard Gaussian drawn on the CPU with seed ``seed + j``, rescaled, so the
    draws do not depend on the device or on K, and ``train_melbo`` with the same seed starts
    from exactly these vectors.

    Args:
        d: width of the residual stream.
        k: number of vectors.
        radius: norm of every vector (> 0).
        seed: base seed.

    Returns:
        (k, d) float32.

    Example:
        >>> v = random_vectors(16, 3, 4.0, seed=1)
        >>> [round(float(n), 4) for n in v.norm(dim=1)]
        [4.0, 4.0, 4.0]
    """
    if not radius > 0:
        raise VectorError(f"radius must be > 0, got {radius}")
    if d < 1 or k < 0:
        raise VectorError(f"cannot draw {k} vectors of width {d}")
    rows = []
    for j in range(k):
        g = torch.Generator().manual_seed(seed + j)
        x = torch.randn(d, generator=g, dtype=torch.float64)
        rows.append(x / x.norm() * radius)
    return torch.stack(rows).float() if rows else torch.zeros(0, d)


def project_tangent(grad: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Remove from each row of ``grad`` its component along the same row of ``theta``.

    (K, D), (K, D) -> (K, D). On the sphere only tangent moves change the direction; the radial
    part would be undone by the renormalization anyway, but Adam's moment estimates would
    remember it.
    """
    tt = (theta * theta).sum(-1, keepdim=True)
    return grad - (grad * theta).sum(-1, keepdim=True) / tt * theta


def gram_schmidt(
    vectors: torch.Tensor,
    radius: float,
    *,
    fixed: Sequence[int] = (),
    grads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Orthogonalize the rows in order and rescale them to norm ``radius``.

    Rows listed in ``fixed`` are kept as they are and come first in the order (they must be
    mutually orthogonal already: they are vectors frozen after a failure); the others follow in
    index order, each made orthogonal to every row before it. Computed in float64.

    Args:
        vectors: (K, D).
        radius: target norm.
        fixed: rows that must not change.
        grads: when given, (K, D) gradients whose free rows are instead projected off the
            earlier rows (unit directions) -- the same subspace constraint, for the update.

    Returns:
        (K, D) in the dtype of the input: the orthogonalized vectors, or the projected
        gradients when ``grads`` is given.
    """
    fixed_set = set(fixed)
    order = [i for i in fixed] + [i for i in range(vectors.shape[0]) if i not in fixed_set]
    v = vectors.double()
    out = (grads if grads is not None else vectors).double().clone()
    basis: list[torch.Tensor] = []
    for i in order:
        if i in fixed_set:
            basis.append(v[i] / v[i].norm())
            continue
        x = out[i]
        for b in basis:  # modified Gram-Schmidt: subtract one projection at a time
            x = x - (x @ b) * b
        if grads is None:
            n = x.norm()
            if not n > 0:
                raise VectorError("Gram-Schmidt produced a zero vector (degenerate set)")
            x = x / n * radius
            basis.append(x / radius)
        else:
            basis.append(v[i] / v[i].norm())
        out[i] = x
    return out.to(vectors.dtype if grads is None else grads.dtype)
