"""Lanczos eigensolvers and stochastic Lanczos quadrature for symmetric linear operators.

Every routine sees the matrix only through ``matvec``, a function mapping a 1-D tensor of
length ``dim`` to ``A @ v`` (a Hessian-vector product, or :func:`dense_matvec` for a dense
matrix), and counts how many times it was called, so that methods can be compared by cost.
The eigensolvers return a :class:`ufmlib.spectrum.Spectrum` (eigenvalues descending) with
``converged``, ``residual_norms`` and ``num_matvecs``; one that stops before its convergence test
passed (restart or iteration limit) returns ``converged=False`` and issues a
:class:`ufmlib.spectrum.NotConvergedWarning`. Stochastic Lanczos quadrature is in
:mod:`ufmlib.slq`.

* :func:`lanczos_tridiag` -- the Lanczos three-term recurrence (Lanczos 1950) that builds an
  orthonormal Krylov basis ``Q`` with ``Q A Q^T = T`` tridiagonal. In floating point the basis
  loses orthogonality as Ritz values converge, which produces spurious "ghost" copies of
  eigenvalues (Paige 1972; Parlett, *The Symmetric Eigenvalue Problem*, ch. 13), so by default
  every new vector is re-orthogonalised against the whole basis, twice ("twice is enough",
  Giraud et al. 2005). A tiny ``beta`` means an invariant subspace was found: the recurrence
  stops early and returns fewer steps.
* :func:`top_eigenpairs` -- extreme eigenpairs by *block* Lanczos (Golub & Underwood 1977)
  with full re-orthogonalisation and thick restarts (Wu & Simon 2000; Stewart's Krylov-Schur,
  2001). A single starting vector has no component along all but one direction of a repeated
  eigenvalue's eigenspace, so single-vector Lanczos finds one copy per distinct eigenvalue in
  exact arithmetic; a block of ``b`` starting vectors recovers multiplicities up to ``b``. The
  deep-UFM Hessians of Garrod & Keating (arXiv 2404.06106) have ``K^2`` exactly equal outliers,
  hence the default ``block_size = k``.
* :func:`power_iteration_deflation` -- power iteration with deflation by orthogonalisation
  against the eigenvectors already found, as in PyHessian (Yao et al. 2020); a baseline.
* :func:`eigsh_reference` -- SciPy's ARPACK ``eigsh`` (Lehoucq, Sorensen & Yang 1998) on the
  same ``matvec``, for comparisons.

Random vectors are drawn on the CPU in float64 from ``torch.Generator().manual_seed(seed)`` and
then cast, so a seed gives the same start vectors on every device and dtype. Small projected
eigenproblems are solved in float64 on the CPU.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from .spectrum import NotConvergedWarning, Spectrum
from .validation import check_int

MatVec = Callable[[Tensor], Tensor]
Which = Literal["LA", "SA", "LM"]
_WHICH = ("LA", "SA", "LM")

__all__ = [
    "LanczosTridiag", "dense_matvec", "eigsh_reference", "lanczos_tridiag", "power_iteration_deflation",
    "top_eigenpairs",
]


def _check_which(which) -> None:
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}")


def _generator(seed: int) -> torch.Generator:
    check_int("seed", seed, 0)
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _randn(gen: torch.Generator, shape, dtype, device) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


class _Operator:
    """Wraps ``matvec``: checks the output shape and counts calls."""

    def __init__(self, matvec: MatVec, dim: int):
        if not callable(matvec):
            raise ValueError(f"matvec must be callable; got {type(matvec).__name__}")
        self.matvec, self.dim, self.count = matvec, dim, 0

    def __call__(self, v: Tensor) -> Tensor:
        out = self.matvec(v)
        if not isinstance(out, Tensor) or out.shape != (self.dim,):
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"matvec must map shape ({self.dim},) to ({self.dim},); got {shape}")
        self.count += 1
        return out.to(dtype=v.dtype, device=v.device)

    def block(self, V: Tensor) -> Tensor:
        return torch.stack([self(V[:, i]) for i in range(V.shape[1])], dim=1)


def dense_matvec(A: Tensor) -> MatVec:
    """Return ``v -> A @ v`` for a dense symmetric matrix ``A`` (checked to rounding level)."""
    if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square 2-D tensor; got {getattr(A, 'shape', A)!r}")
    scale = A.abs().max().item() if A.numel() else 0.0
    if (A - A.mT).abs().max().item() > 100 * torch.finfo(A.dtype).eps * max(scale, 1e-300):
        raise ValueError("A must be symmetric")
    return lambda v: A @ v


def _eigh64(M: Tensor) -> tuple[Tensor, Tensor]:
    M = M.detach().to(dtype=torch.float64, device="cpu")
    return torch.linalg.eigh((M + M.mT) / 2)


# ----------------------------------------------------------------------------- Lanczos
@dataclass(frozen=True)
class LanczosTridiag:
    """Output of :func:`lanczos_tridiag`: ``T = tridiag(beta, alpha, beta)`` of size ``m``.

    ``basis`` holds the Lanczos vectors as rows (``m x dim``, ``basis @ A @ basis.T == T``),
    or is ``None`` without re-orthogonalisation. ``breakdown`` is True when an invariant
    subspace stopped the recurrence before ``num_steps``.
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor | None
    num_matvecs: int
    breakdown: bool

    @property
    def num_steps(self) -> int:
        return int(self.alpha.shape[0])

    def matrix(self) -> Tensor:
        """The dense tridiagonal matrix ``T``."""
        return torch.diag(self.alpha) + torch.diag(self.beta, 1) + torch.diag(self.beta, -1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        """Gauss rule (Golub & Welsch 1969): Ritz values and squared first eigenvector entries."""
        theta, U = _eigh64(self.matrix())
        out = dict(dtype=self.alpha.dtype, device=self.alpha.device)
        return theta.to(**out), (U[0, :] ** 2).to(**out)


def lanczos_tridiag(matvec: MatVec, *, dim: int, num_steps: int, seed: int = 0,
                    dtype=torch.float64, device="cpu", v0: Tensor | None = None,
                    reorthogonalize: bool = True) -> LanczosTridiag:
    """Run ``num_steps`` Lanczos steps from ``v0`` (default: seeded Gaussian) and return ``T``.

    With ``reorthogonalize`` each new vector is Gram-Schmidt-orthogonalised against all
    previous ones twice; otherwise only the three-term recurrence is used (O(dim) memory).
    The recurrence stops early when ``beta <= 100 eps ||A||`` (invariant subspace).
    """
    dim = check_int("dim", dim, 1)
    num_steps = check_int("num_steps", num_steps, 1, dim)
    op = _Operator(matvec, dim)
    if v0 is None:
        v = _randn(_generator(seed), (dim,), dtype, device)
    else:
        if not isinstance(v0, Tensor) or v0.shape != (dim,):
            got = getattr(v0, "shape", v0)
            raise ValueError(f"v0 must be a tensor of shape ({dim},); got {got}")
        v = v0.detach().to(dtype=dtype, device=device)
    norm = torch.linalg.vector_norm(v).item()
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError("v0 must be finite and non-zero")
    q, q_prev, beta_prev = v / norm, None, 0.0
    Q = torch.empty(num_steps, dim, dtype=dtype, device=device) if reorthogonalize else None
    alphas, betas, anorm, breakdown = [], [], 0.0, False
    eps = torch.finfo(dtype).eps
    for j in range(num_steps):
        if Q is not None:
            Q[j] = q
        w = op(q)
        alpha = torch.dot(q, w)
        w = w - alpha * q
        if q_prev is not None:
            w = w - beta_prev * q_prev
        if Q is not None:
            for _ in range(2):
                w = w - Q[: j + 1].mT @ (Q[: j + 1] @ w)
        alphas.append(alpha)
        if j == num_steps - 1:
            break
        beta = torch.linalg.vector_norm(w).item()
        anorm = max(anorm, abs(alpha.item()) + beta + beta_prev)
        if beta <= 100 * eps * anorm:
            breakdown = True
            break
        betas.append(beta)
        q_prev, q, beta_prev = q, w / beta, beta
    m = len(alphas)
    return LanczosTridiag(
        alpha=torch.stack(alphas),
        beta=torch.tensor(betas, dtype=dtype, device=device),
        basis=None if Q is None else Q[:m].clone(),
        num_matvecs=op.count, breakdown=breakdown)


# ----------------------------------------------------------------------------- eigenpairs
def _result(vals: Tensor, vecs: Tensor, res: Tensor, *, which: str, count: int, converged: bool, method: str,
            dim: int) -> Spectrum:
    """The solver's answer as a :class:`Spectrum`: eigenvalues descending, with what it reports.

    ``which`` selects the eigenvalues (largest, smallest or largest in magnitude); they are
    listed in descending order whatever ``which`` is. A solve that did not converge warns.
    """
    order = torch.argsort(vals, descending=True, stable=True)
    if not converged:
        warnings.warn(f"{method} stopped before its convergence test passed (which={which!r}); the result "
                      "carries converged=False", NotConvergedWarning, stacklevel=3)
    return Spectrum(eigenvalues=vals[order], dim=dim, method=method, explicit_vectors=vecs[:, order.to(vecs.device)],
                    residual_norms=res[order.to(res.device)], num_matvecs=count, converged=converged)


def _order(theta: Tensor, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    return torch.argsort(theta.abs(), descending=True, stable=True)


def _orth_columns(W: Tensor, basis: Tensor, *, target: int, gen, thresh: float) -> Tensor:
    """Orthonormal columns spanning ``W`` modulo ``basis``; deficient columns are replaced by
    random directions (so the block keeps ``target`` columns while the space has room)."""
    dim, c = W.shape[0], 0
    want = min(target, dim - basis.shape[1])
    out = torch.empty(dim, want, dtype=W.dtype, device=W.device)
    candidates = [W[:, i] for i in range(W.shape[1])]
    while c < want:
        fresh = not candidates
        w = _randn(gen, (dim,), W.dtype, W.device) if fresh else candidates.pop(0)
        for _ in range(2):
            w = w - basis @ (basis.mT @ w)
            w = w - out[:, :c] @ (out[:, :c].mT @ w)
        norm = torch.linalg.vector_norm(w).item()
        if norm > (1e-8 if fresh else thresh):
            out[:, c] = w / norm
            c += 1
    return out


def top_eigenpairs(matvec: MatVec, *, dim: int, k: int, which: Which = "LA",
                   block_size: int | None = None, num_steps: int | None = None,
                   tol: float | None = None, max_restarts: int = 100, seed: int = 0,
                   dtype=torch.float64, device="cpu", verify: bool = True) -> Spectrum:
    """``k`` extreme eigenpairs by thick-restarted block Lanczos with full re-orthogonalisation.

    A block of ``block_size`` (default ``k``) seeded Gaussian vectors grows the orthonormal
    basis ``Q``; each new block ``A P`` is projected out of ``Q`` twice and the projections
    fill ``H = Q^T A Q`` (dense, so no tridiagonal structure is assumed). Ritz pairs
    ``(theta, Q s)`` of ``H`` have residual ``||B s_last||`` where ``B`` couples the newest
    block to the next one. Iteration stops when all wanted residuals are
    ``<= max(tol |theta|, 100 eps ||A||)``. When the basis reaches ``num_steps`` vectors
    (default ``min(dim, max(2k + 6 block_size, 20))``) it is restarted with the best Ritz
    vectors (thick restart); a basis of ``dim`` vectors gives the exact answer. Multiplicities
    up to ``block_size`` are recovered. (Single-vector Lanczos can pick further copies up from
    rounding errors, but nothing makes that happen before the convergence test passes: on
    ``diag(1 x 9, bulk)`` it stops with 5 copies; a warning is issued when a cluster among the
    wanted Ritz values is at least as large as a block smaller than ``k``.) ``tol`` defaults to
    1e-10 in float64 and 1e-5 otherwise.
    With ``verify`` the returned residuals are recomputed with ``k`` extra products.
    """
    dim = check_int("dim", dim, 1)
    k = check_int("k", k, 1, dim)
    _check_which(which)
    b = min(k, dim) if block_size is None else check_int("block_size", block_size, 1, dim)
    if num_steps is None:
        m_max = min(dim, max(2 * k + 6 * b, 20))
    else:
        m_max = check_int("num_steps", num_steps, 1)
        if m_max < min(dim, k + b):
            raise ValueError(f"num_steps must be >= min(dim, k + block_size) = "
                             f"{min(dim, k + b)}; got {m_max}")
        m_max = min(m_max, dim)
    eps = torch.finfo(dtype).eps
    tol = (1e-10 if dtype == torch.float64 else 1e-5) if tol is None else float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number; got {tol!r}")
    max_restarts = check_int("max_restarts", max_restarts, 0)
    op, gen = _Operator(matvec, dim), _generator(seed)
    Q = torch.zeros(dim, m_max, dtype=dtype, device=device)
    H = torch.zeros(m_max, m_max, dtype=torch.float64)
    P = _orth_columns(_randn(gen, (dim, b), dtype, device), Q[:, :0], target=b, gen=gen,
                      thresh=0.0)
    m, restarts, anorm, converged = 0, 0, 0.0, False
    while True:
        r = P.shape[1]
        if m + r > m_max:  # thick restart: keep the p best Ritz vectors
            if restarts == max_restarts:
                break
            restarts += 1
            p = max(k, (m_max - r + k) // 2)
            keep = sel_all[:p]
            Q[:, :p] = Q[:, :m] @ S[:, keep].to(dtype=dtype, device=device)
            H.zero_()
            H[:p, :p] = torch.diag(theta[keep])
            m = p
        Q[:, m : m + r] = P
        W = op.block(P)
        anorm = max(anorm, torch.linalg.vector_norm(W, dim=0).max().item())
        basis = Q[:, : m + r]
        C = basis.mT @ W
        W = W - basis @ C
        C2 = basis.mT @ W
        W, C = W - basis @ C2, (C + C2).to(dtype=torch.float64, device="cpu")
        H[: m + r, m : m + r] = C
        H[m : m + r, : m + r] = C.mT
        H[m : m + r, m : m + r] = (C[m:] + C[m:].mT) / 2
        last, m = slice(m, m + r), m + r
        P = _orth_columns(W, Q[:, :m], target=b, gen=gen, thresh=10 * eps * anorm)
        coupling = (P.mT @ W).to(dtype=torch.float64, device="cpu")
        theta, S = _eigh64(H[:m, :m])
        sel_all = _order(theta, which)
        sel = sel_all[:k]
        res = torch.linalg.vector_norm(coupling @ S[last][:, sel], dim=0)
        thresh = torch.clamp(tol * theta[sel].abs(), min=100 * eps * anorm)
        if (m >= k and bool((res <= thresh).all())) or m == dim:
            converged = True
            break
    vals = theta[sel].to(dtype=dtype, device=device)
    V = Q[:, :m] @ S[:, sel].to(dtype=dtype, device=device)
    if verify:
        res = torch.linalg.vector_norm(op.block(V) - V * vals, dim=0)
    if b < k:  # a cluster as large as the block may hide further copies
        gaps = (theta[sel][1:] - theta[sel][:-1]).abs() <= math.sqrt(eps) * max(anorm, 1e-300)
        run = longest = 1
        for g in gaps.tolist():
            run = run + 1 if g else 1
            longest = max(longest, run)
        if longest >= max(b, 2):
            warnings.warn(f"top_eigenpairs found a cluster of {longest} equal eigenvalues with "
                          f"block_size={b}; its multiplicity may be larger (raise block_size)",
                          RuntimeWarning, stacklevel=2)
    return _result(vals, V, res.to(dtype=dtype, device=device), which=which, count=op.count, converged=converged,
                   method=f"block Lanczos (b={b}, restarts={restarts})", dim=dim)


def power_iteration_deflation(matvec: MatVec, *, dim: int, k: int, tol: float = 1e-6,
                              max_iter: int = 1000, seed: int = 0, dtype=torch.float64,
                              device="cpu") -> Spectrum:
    """``k`` largest-magnitude eigenpairs by power iteration with deflation (PyHessian).

    Each eigenvector is found by iterating ``v <- (I - V V^T) A v / ||.||`` against the
    eigenvectors ``V`` found before, until the Rayleigh quotient changes by at most
    ``tol |theta|`` (PyHessian's stopping rule) or ``max_iter`` products were spent on it.
    Convergence is linear in ``|lambda_{i+1} / lambda_i|``: slow without a spectral gap.
    """
    dim = check_int("dim", dim, 1)
    k = check_int("k", k, 1, dim)
    max_iter = check_int("max_iter", max_iter, 1)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number; got {tol!r}")
    op, gen = _Operator(matvec, dim), _generator(seed)
    tiny = torch.finfo(dtype).tiny
    vecs, vals, res, converged = [], [], [], True

    def deflate(x: Tensor) -> Tensor:
        for _ in range(2):
            for u in vecs:
                x = x - torch.dot(u, x) * u
        return x

    for _ in range(k):
        v = deflate(_randn(gen, (dim,), dtype, device))
        v = v / torch.linalg.vector_norm(v)
        prev, done, nxt = None, False, v
        for _ in range(max_iter):
            v = nxt
            w = op(v)
            theta = torch.dot(v, w).item()
            r = torch.linalg.vector_norm(w - theta * v).item()
            nxt = deflate(w)
            nrm = torch.linalg.vector_norm(nxt).item()
            if nrm <= tiny or (prev is not None and abs(theta - prev) <= tol * abs(prev)):
                done = True
                break
            prev, nxt = theta, nxt / nrm
        converged &= done
        vecs.append(v)
        vals.append(theta)
        res.append(r)
    return _result(torch.tensor(vals, dtype=dtype).to(device), torch.stack(vecs, dim=1),
                   torch.tensor(res, dtype=dtype).to(device), which="LM", count=op.count, converged=converged,
                   method="power iteration with deflation", dim=dim)


def eigsh_reference(matvec: MatVec, *, dim: int, k: int, which: Which = "LA",
                    tol: float = 0.0, num_steps: int | None = None, seed: int = 0,
                    dtype=torch.float64, device="cpu") -> Spectrum:
    """SciPy ``eigsh`` (ARPACK implicitly restarted Lanczos) on ``matvec``, for comparison.

    ``num_steps`` is ARPACK's ``ncv``; ``tol=0`` means machine precision. Needs ``k < dim``.
    Residuals are recomputed with ``k`` extra products (counted).
    """
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    dim = check_int("dim", dim, 2)
    k = check_int("k", k, 1, dim - 1)
    _check_which(which)
    op = _Operator(matvec, dim)

    def mv(x):
        v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1)).to(dtype=dtype,
                                                                             device=device)
        return op(v).detach().to(dtype=torch.float64, device="cpu").numpy()

    v0 = _randn(_generator(seed), (dim,), torch.float64, "cpu").numpy()
    lin = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    try:
        vals, vecs = eigsh(lin, k=k, which=which, tol=tol, v0=v0, ncv=num_steps)
        converged = True
    except ArpackNoConvergence as err:
        vals, vecs, converged = err.eigenvalues, err.eigenvectors, False
    vals = torch.as_tensor(vals).to(dtype=dtype, device=device)
    V = torch.as_tensor(vecs).to(dtype=dtype, device=device)
    res = torch.linalg.vector_norm(op.block(V) - V * vals, dim=0)
    return _result(vals, V, res, which=which, count=op.count, converged=converged, method="scipy eigsh (ARPACK)",
                   dim=dim)
