"""Lanczos eigensolvers and stochastic Lanczos quadrature for symmetric linear operators.

Every routine sees the matrix only through ``matvec``, a function mapping a 1-D tensor of
length ``dim`` to ``A @ v`` (a Hessian-vector product, or :func:`dense_matvec` for a dense
matrix), and counts how many times it was called, so that methods can be compared by cost.

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
* :func:`slq_density` -- stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): for a probe
  ``v``, the eigenvalues ``theta_j`` of ``T`` and the squared *first* components ``w_j`` of its
  eigenvectors are the Gauss quadrature rule (Golub & Welsch 1969) of the spectral measure
  ``sum_i (u_i.v)^2/|v|^2 delta(x - lambda_i)``, exact for polynomials of degree ``2m - 1``.
  Averaging over Rademacher probes estimates the spectral density ``(1/dim) sum_i
  delta(x - lambda_i)``, as used for neural-network Hessians by Ghorbani, Krishnan & Xiao (2019)
  and Papyan (2020). PyHessian squared the whole eigenvector matrix instead of its first row
  until PR #23 (2024); :attr:`SpectralDensity.weights` is tested against dense spectra.
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
from numbers import Integral
from typing import Callable, Literal

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]
Which = Literal["LA", "SA", "LM"]
_WHICH = ("LA", "SA", "LM")

__all__ = [
    "Eigenpairs", "LanczosTridiag", "SpectralDensity", "dense_matvec", "eigsh_reference",
    "lanczos_tridiag", "power_iteration_deflation", "rademacher", "slq_density",
    "top_eigenpairs",
]


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    bad = isinstance(value, bool) or not isinstance(value, Integral)
    if bad or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}; got {value!r}")
    return int(value)


def _check_which(which) -> None:
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}; got {which!r}")


def _generator(seed: int) -> torch.Generator:
    _check_int("seed", seed, 0)
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


def rademacher(*, num_probes: int, dim: int, seed: int = 0, dtype=torch.float64,
               device="cpu") -> Tensor:
    """Seeded Rademacher (+-1) probe vectors, shape ``(num_probes, dim)``."""
    _check_int("num_probes", num_probes, 1)
    _check_int("dim", dim, 1)
    bits = torch.randint(0, 2, (num_probes, dim), generator=_generator(seed))
    return (2.0 * bits - 1.0).to(dtype=dtype, device=device)


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
    dim = _check_int("dim", dim, 1)
    num_steps = _check_int("num_steps", num_steps, 1, dim)
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
@dataclass(frozen=True)
class Eigenpairs:
    """Approximate eigenpairs ``A v_i = lambda_i v_i``.

    Ordering: descending for ``"LA"`` and ``"LM"`` (by ``|lambda|``), ascending for ``"SA"``.
    ``eigenvectors`` is ``dim x k`` (columns); ``residual_norms[i] = ||A v_i - lambda_i v_i||``;
    ``num_matvecs`` counts every product made by the call (including the residual check).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residual_norms: Tensor
    num_matvecs: int
    converged: bool
    method: str


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
                   dtype=torch.float64, device="cpu", verify: bool = True) -> Eigenpairs:
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
    dim = _check_int("dim", dim, 1)
    k = _check_int("k", k, 1, dim)
    _check_which(which)
    b = min(k, dim) if block_size is None else _check_int("block_size", block_size, 1, dim)
    if num_steps is None:
        m_max = min(dim, max(2 * k + 6 * b, 20))
    else:
        m_max = _check_int("num_steps", num_steps, 1)
        if m_max < min(dim, k + b):
            raise ValueError(f"num_steps must be >= min(dim, k + block_size) = "
                             f"{min(dim, k + b)}; got {m_max}")
        m_max = min(m_max, dim)
    eps = torch.finfo(dtype).eps
    tol = (1e-10 if dtype == torch.float64 else 1e-5) if tol is None else float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number; got {tol!r}")
    max_restarts = _check_int("max_restarts", max_restarts, 0)
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
    return Eigenpairs(eigenvalues=vals, eigenvectors=V, residual_norms=res.to(dtype=dtype,
                      device=device), num_matvecs=op.count, converged=converged,
                      method=f"block Lanczos (b={b}, restarts={restarts})")


def power_iteration_deflation(matvec: MatVec, *, dim: int, k: int, tol: float = 1e-6,
                              max_iter: int = 1000, seed: int = 0, dtype=torch.float64,
                              device="cpu") -> Eigenpairs:
    """``k`` largest-magnitude eigenpairs by power iteration with deflation (PyHessian).

    Each eigenvector is found by iterating ``v <- (I - V V^T) A v / ||.||`` against the
    eigenvectors ``V`` found before, until the Rayleigh quotient changes by at most
    ``tol |theta|`` (PyHessian's stopping rule) or ``max_iter`` products were spent on it.
    Convergence is linear in ``|lambda_{i+1} / lambda_i|``: slow without a spectral gap.
    """
    dim = _check_int("dim", dim, 1)
    k = _check_int("k", k, 1, dim)
    max_iter = _check_int("max_iter", max_iter, 1)
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
    order = torch.argsort(torch.tensor(vals).abs(), descending=True, stable=True)
    return Eigenpairs(
        eigenvalues=torch.tensor(vals, dtype=dtype)[order].to(device),
        eigenvectors=torch.stack(vecs, dim=1)[:, order.to(device)],
        residual_norms=torch.tensor(res, dtype=dtype)[order].to(device),
        num_matvecs=op.count, converged=converged, method="power iteration with deflation")


def eigsh_reference(matvec: MatVec, *, dim: int, k: int, which: Which = "LA",
                    tol: float = 0.0, num_steps: int | None = None, seed: int = 0,
                    dtype=torch.float64, device="cpu") -> Eigenpairs:
    """SciPy ``eigsh`` (ARPACK implicitly restarted Lanczos) on ``matvec``, for comparison.

    ``num_steps`` is ARPACK's ``ncv``; ``tol=0`` means machine precision. Needs ``k < dim``.
    Residuals are recomputed with ``k`` extra products (counted).
    """
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    dim = _check_int("dim", dim, 2)
    k = _check_int("k", k, 1, dim - 1)
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
    order = _order(vals, which)
    vals = vals[order]
    V = torch.as_tensor(vecs).to(dtype=dtype, device=device)[:, order]
    res = torch.linalg.vector_norm(op.block(V) - V * vals, dim=0)
    return Eigenpairs(eigenvalues=vals, eigenvectors=V, residual_norms=res,
                      num_matvecs=op.count, converged=converged, method="scipy eigsh (ARPACK)")


# ----------------------------------------------------------------------------- SLQ
@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the spectral density ``(1/dim) sum_i delta(x - lambda_i)``.

    Row ``p`` of ``nodes``/``weights`` is the Gauss rule of probe ``p``: weights are
    non-negative and sum to 1 (rows shortened by breakdown are padded with zero weight).
    """

    nodes: Tensor
    weights: Tensor
    dim: int
    num_matvecs: int

    def expectation(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        """Estimate of ``tr f(A) / dim`` (exact per probe for polynomials of degree < 2m)."""
        return (self.weights * f(self.nodes)).sum(dim=1).mean()

    def _scale(self, normalize: str) -> float:
        if normalize not in ("density", "count"):
            raise ValueError(f"normalize must be 'density' or 'count'; got {normalize!r}")
        return float(self.dim) if normalize == "count" else 1.0

    def histogram(self, bins: int = 100, range: tuple[float, float] | None = None, *,
                  normalize: str = "density") -> tuple[Tensor, Tensor]:
        """Probe-averaged weighted histogram; returns ``(values, edges)``.

        ``"density"``: values integrate to 1 over ``range`` (default: all nodes with weight);
        ``"count"``: expected number of eigenvalues per bin (sums to ``dim``).
        """
        bins = _check_int("bins", bins, 1)
        scale = self._scale(normalize)
        x = self.nodes.reshape(-1)
        w = self.weights.reshape(-1) / self.nodes.shape[0]
        if range is None:
            live = x[w > 0]
            lo, hi = live.min().item(), live.max().item()
        else:
            lo, hi = float(range[0]), float(range[1])
            if not hi > lo:
                raise ValueError(f"range must satisfy range[0] < range[1]; got {range!r}")
        if hi == lo:
            lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
        edges = torch.linspace(lo, hi, bins + 1, dtype=x.dtype, device=x.device)
        inside = (x >= lo) & (x <= hi)
        idx = torch.clamp(torch.bucketize(x[inside], edges, right=True) - 1, 0, bins - 1)
        mass = torch.zeros(bins, dtype=x.dtype, device=x.device).index_add_(0, idx, w[inside])
        if normalize == "count":
            return mass * scale, edges
        return mass / (edges[1:] - edges[:-1]), edges

    def smoothed(self, grid: Tensor, sigma: float, *, normalize: str = "density") -> Tensor:
        """Gaussian-broadened density on ``grid`` (Ghorbani et al. 2019; Papyan 2020)."""
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number; got {sigma!r}")
        scale = self._scale(normalize)
        grid = torch.as_tensor(grid, dtype=self.nodes.dtype, device=self.nodes.device)
        x = self.nodes.reshape(-1)
        w = self.weights.reshape(-1) / self.nodes.shape[0]
        z = (grid.reshape(-1, 1) - x) / sigma
        dens = (torch.exp(-0.5 * z**2) * w).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))
        return (dens * scale).reshape(grid.shape)


def slq_density(matvec: MatVec, *, dim: int, num_steps: int, num_probes: int, seed: int = 0,
                dtype=torch.float64, device="cpu", reorthogonalize: bool = True
                ) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) with Rademacher probes.

    Probe ``p`` is row ``p`` of ``rademacher(num_probes=..., dim=..., seed=seed)``; it starts
    ``num_steps`` Lanczos steps whose tridiagonal ``T = U diag(theta) U^T`` gives nodes
    ``theta`` and weights ``U[0, :]**2`` (Golub & Welsch 1969).
    """
    dim = _check_int("dim", dim, 1)
    num_steps = _check_int("num_steps", num_steps, 1, dim)
    probes = rademacher(num_probes=num_probes, dim=dim, seed=seed, dtype=dtype, device=device)
    nodes = torch.zeros(num_probes, num_steps, dtype=dtype, device=device)
    weights = torch.zeros_like(nodes)
    count = 0
    for p in range(num_probes):
        tri = lanczos_tridiag(matvec, dim=dim, num_steps=num_steps, dtype=dtype, device=device,
                              v0=probes[p], reorthogonalize=reorthogonalize)
        theta, w = tri.quadrature()
        m = theta.shape[0]
        nodes[p, :m], nodes[p, m:] = theta, theta[-1]
        weights[p, :m] = w
        count += tri.num_matvecs
    return SpectralDensity(nodes=nodes, weights=weights, dim=dim, num_matvecs=count)
