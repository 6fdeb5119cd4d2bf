r"""Matrix functions of a symmetric linear operator from matrix-vector products only.

:func:`lanczos_function` approximates :math:`f(A)\,v` for a symmetric operator
:math:`A` given as a callable, batched over independent vectors (Golub & Van Loan,
*Matrix Computations*, 4th ed., sec. 10.1; Higham, *Functions of Matrices*, sec. 13.2):
after ``k`` steps of the Lanczos recurrence :math:`A Q_k = Q_k T_k + \beta_k q_{k+1}
e_k^\top`,

.. math:: f(A)\,v \approx \lVert v\rVert\, Q_k\, f(T_k)\, e_1 .

The error is bounded by twice the best uniform polynomial approximation of degree
``k - 1`` of :math:`f` on the spectrum; for :math:`f = \sqrt{\cdot}` on
:math:`[a, b]`, ``0 < a``, it decays like :math:`q^k` with
:math:`q = (\sqrt{b/a} - 1)/(\sqrt{b/a} + 1)`. :func:`power_iteration` estimates the
largest eigenvalue (from below) by Rayleigh quotients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["lanczos_function", "power_iteration"]

Operator = Callable[[Tensor], Tensor]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def lanczos_function(
    operator: Operator,
    v: Tensor,
    fn: Callable[[Tensor], Tensor],
    *,
    num_iterations: int = 40,
    reorthogonalize: bool = True,
) -> Tensor:
    r"""Approximate :math:`f(A)\,v` for every batch item of ``v`` by Lanczos.

    Each batch item ``v[i]`` (flattened) is its own starting vector; ``operator`` maps a
    batch of shape ``v.shape`` to the same shape and must act on each item
    independently with one symmetric matrix :math:`A`. Full (twice-repeated classical
    Gram-Schmidt) reorthogonalisation keeps :math:`Q_k` orthonormal in finite precision.
    An item whose Krylov space is exhausted (:math:`\beta_j \approx 0`, e.g. for a
    multiple of the identity) is continued with zero vectors, which decouples its
    tridiagonal matrix exactly.

    Args:
        operator: :math:`x \mapsto A x` on tensors of shape ``v.shape``.
        v: starting vectors, shape ``(b, ...)``.
        fn: elementwise function of the eigenvalues, e.g.
            ``lambda e: e.clamp(min=0).sqrt()``.
        num_iterations: Lanczos steps ``k >= 1`` (the Krylov dimension).
        reorthogonalize: full reorthogonalisation (recommended).

    Returns:
        :math:`f(A)\,v`, shape ``v.shape``, dtype of ``v``.

    Raises:
        ValueError: ``num_iterations < 1``, an empty batch, or an operator output of
            the wrong shape.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int):
        raise TypeError(f"num_iterations must be an int, got {type(num_iterations).__name__}")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    if v.ndim < 1 or v.shape[0] == 0 or v.numel() == 0:
        raise ValueError(f"v must be a non-empty batch of shape (b, ...), got {tuple(v.shape)}")
    shape, b = v.shape, v.shape[0]
    vf = _flat(v)
    dim = vf.shape[1]
    k = min(num_iterations, dim)
    norm0 = vf.norm(dim=1)
    tiny = torch.finfo(v.dtype).tiny
    basis = v.new_zeros(b, k, dim)
    basis[:, 0] = vf / norm0.clamp(min=tiny)[:, None]
    alphas = v.new_zeros(b, k)
    betas = v.new_zeros(b, max(k - 1, 1))
    tol = 100.0 * torch.finfo(v.dtype).eps
    beta_prev = v.new_zeros(b)
    m = k
    for j in range(k):
        q = basis[:, j]
        w = _flat(operator(q.reshape(shape)))
        if w.shape != q.shape:
            raise ValueError(
                f"operator must preserve the shape {tuple(shape)}, got {tuple(w.shape)} "
                "after flattening"
            )
        alpha = (q * w).sum(dim=1)
        alphas[:, j] = alpha
        if j == k - 1:
            break
        w = w - alpha[:, None] * q
        if j > 0:
            w = w - beta_prev[:, None] * basis[:, j - 1]
        if reorthogonalize:
            qs = basis[:, : j + 1]
            for _ in range(2):
                w = w - torch.einsum("bjn,bj->bn", qs, torch.einsum("bjn,bn->bj", qs, w))
        beta = w.norm(dim=1)
        alive = beta > tol * (alpha.abs() + beta_prev)
        if not bool(alive.any()):
            m = j + 1
            break
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas[:, j] = beta
        basis[:, j + 1] = torch.where(
            alive[:, None], w / beta.clamp(min=tiny)[:, None], torch.zeros_like(w)
        )
        beta_prev = beta
    tri = torch.diag_embed(alphas[:, :m])
    if m > 1:
        off = torch.diag_embed(betas[:, : m - 1], offset=1)
        tri = tri + off + off.transpose(1, 2)
    evals, evecs = torch.linalg.eigh(tri)
    coeff = evecs @ (fn(evals) * evecs[:, 0, :]).unsqueeze(-1)  # f(T) e_1, shape (b, m, 1)
    out: Tensor = torch.einsum("bmn,bm->bn", basis[:, :m], coeff.squeeze(-1)) * norm0[:, None]
    return out.reshape(shape)


def power_iteration(operator: Operator, v0: Tensor, *, num_iterations: int = 20) -> float:
    r"""Estimate :math:`\lambda_{\max}` of a symmetric PSD operator by power iteration.

    Returns the Rayleigh quotient :math:`v^\top A v` of the last normalised iterate,
    which never exceeds the true :math:`\lambda_{\max}` (it approaches it from below at
    the rate :math:`(\lambda_2/\lambda_1)^{2k}`).

    Args:
        operator: :math:`x \mapsto A x` on tensors of shape ``v0.shape``.
        v0: starting vector, shape ``(1, ...)``; must not be orthogonal to the top
            eigenvector (a fixed pseudo-random vector is a safe choice).
        num_iterations: number of products with :math:`A`, ``>= 1``.

    Returns:
        The estimate, a Python float ``>= 0``.

    Raises:
        ValueError: ``num_iterations < 1`` or a zero starting vector.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int):
        raise TypeError(f"num_iterations must be an int, got {type(num_iterations).__name__}")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    norm = float(v0.norm())
    if norm == 0.0:
        raise ValueError("the starting vector of the power iteration must be non-zero")
    v = v0 / norm
    lam = 0.0
    for _ in range(num_iterations):
        w = operator(v)
        lam = float((v * w).sum())
        w_norm = float(w.norm())
        if w_norm == 0.0:
            return 0.0
        v = w / w_norm
    return max(lam, 0.0)
