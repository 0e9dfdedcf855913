"""Lanczos eigensolvers and stochastic Lanczos quadrature for symmetric linear operators.

Every routine sees the matrix only through its products: a
:class:`ufmlib.operators.LinearOperator` (a Hessian as an object: shape, dtype, device, block
products issued as one batched call, a product counter), or, as before, a function ``matvec``
mapping a 1-D tensor of length ``dim`` to ``A @ v`` (applied column by column) or a dense
matrix (:func:`dense_matvec`). Each result counts the operator's products (columns), so that
methods can be compared by cost. The eigensolvers return a :class:`ufmlib.spectrum.Spectrum`
(eigenvalues descending) with ``converged``, ``residual_norms`` and ``num_matvecs``; one that
stops before its convergence test passed (restart or iteration limit) returns
``converged=False`` and issues a :class:`ufmlib.spectrum.NotConvergedWarning`. Stochastic
Lanczos quadrature is in :mod:`ufmlib.slq`.

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
  so by default the block starts from two random directions and grows by fresh ones whenever a
  converged cluster is as large as the number of directions it was searched with.
* :func:`power_iteration_deflation` -- power iteration with deflation by orthogonalisation
  against the eigenvectors already found, as in PyHessian (Yao et al. 2020); a baseline.
* :func:`eigsh_reference` -- SciPy's ARPACK ``eigsh`` (Lehoucq, Sorensen & Yang 1998) on the
  same operator, for comparisons.

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

from .operators import LinearOperator, as_operator, dense_operator
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


def dense_matvec(A: Tensor) -> LinearOperator:
    """The operator ``V -> A @ V`` of a dense symmetric matrix ``A`` (checked to rounding level)."""
    return dense_operator(A)


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


def lanczos_tridiag(matvec: MatVec | LinearOperator, *, num_steps: int, dim: int | None = None, seed: int = 0,
                    dtype=torch.float64, device="cpu", v0: Tensor | None = None,
                    reorthogonalize: bool = True) -> LanczosTridiag:
    """Run ``num_steps`` Lanczos steps from ``v0`` (default: seeded Gaussian) and return ``T``.

    With ``reorthogonalize`` each new vector is Gram-Schmidt-orthogonalised against all
    previous ones twice; otherwise only the three-term recurrence is used (O(dim) memory).
    The recurrence stops early when ``beta <= 100 eps ||A||`` (invariant subspace).
    """
    op = as_operator(matvec, dim=dim, dtype=dtype, device=device)
    dim, start_count = op.dim, op.num_products
    num_steps = check_int("num_steps", num_steps, 1, dim)
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
        w = op.matvec(q).to(dtype=dtype, device=device)
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
        num_matvecs=op.num_products - start_count, breakdown=breakdown)


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


def _orth_columns(W: Tensor, basis: Tensor, *, target: int, gen, thresh: float) -> tuple[Tensor, int]:
    """Orthonormal columns spanning ``W`` modulo the rows of ``basis``; deficient columns are
    replaced by random directions (so the block keeps ``target`` columns while the space has
    room). Returns the columns and how many random directions were drawn."""
    dim, c, fresh_count = W.shape[0], 0, 0
    want = min(target, dim - basis.shape[0])
    out = torch.empty(dim, want, dtype=W.dtype, device=W.device)
    candidates = [W[:, i] for i in range(W.shape[1])]
    while c < want:
        fresh = not candidates
        w = _randn(gen, (dim,), W.dtype, W.device) if fresh else candidates.pop(0)
        for _ in range(2):
            w = w - basis.mT @ (basis @ w)
            w = w - out[:, :c] @ (out[:, :c].mT @ w)
        norm = torch.linalg.vector_norm(w).item()
        if norm > (1e-8 if fresh else thresh):
            out[:, c] = w / norm
            c += 1
            fresh_count += fresh
    return out, fresh_count


def _next_block(W: Tensor, basis: Tensor, *, gen, thresh: float) -> tuple[Tensor, Tensor, int]:
    """The next Krylov block from ``W`` (already orthogonal to ``basis``): one QR when the block is
    well conditioned; a nearly rank-deficient block (an invariant subspace was found, or the
    operator has low rank) falls back to column-wise orthogonalisation against the basis with
    random replacements, since the QR factor of a deficient column is not orthogonal to the
    basis. Returns the block ``P``, the coupling ``P^T W`` and the number of random directions
    drawn."""
    if basis.shape[0] + W.shape[1] <= W.shape[0]:
        P, R = torch.linalg.qr(W)
        scale = torch.linalg.vector_norm(W, dim=0).max().item()
        if bool((R.diagonal().abs() > max(thresh, math.sqrt(torch.finfo(W.dtype).eps) * scale)).all()):
            return P, R, 0
    P, fresh = _orth_columns(W, basis, target=W.shape[1], gen=gen, thresh=thresh)
    return P, P.mT @ W, fresh


def _check_interval(history: list, m: int, worst: float, r: int) -> int:
    """Columns to add before the next Ritz check. The largest residual-to-threshold ratio
    ``worst`` falls about geometrically with the basis size; from the last two checks (kept in
    ``history``) the size where it reaches 1 is extrapolated and the next check placed half way
    there (at most ``m/16`` columns on), so that the solve stops within a few columns of the first size where the
    test passes while the projected eigenproblem is solved only a few dozen times."""
    history.append((m, math.log(worst)))
    step = max(r, m // 16)
    if len(history) >= 2:
        (m0, l0), (m1, l1) = history[-2], history[-1]
        if l1 < l0 and m1 > m0:
            predicted = l1 * (m1 - m0) / (l0 - l1)
            step = min(step, int(0.5 * predicted))
    return max(r, step)


def _clusters(values: Tensor, tol: float) -> int:
    """Size of the largest run of consecutive sorted ``values`` within ``tol`` of each other."""
    run = longest = 1 if values.numel() else 0
    for g in (values[1:] - values[:-1]).abs().tolist():
        run = run + 1 if g <= tol else 1
        longest = max(longest, run)
    return longest


def top_eigenpairs(operator, *, k: int, dim: int | None = None, which: Which = "LA",
                   block_size: int | None = None, num_steps: int | None = None,
                   tol: float | None = None, max_restarts: int = 100, seed: int = 0,
                   dtype=torch.float64, device="cpu", verify: bool = True) -> Spectrum:
    """``k`` extreme eigenpairs by thick-restarted block Lanczos with full re-orthogonalisation.

    ``operator`` is a :class:`ufmlib.operators.LinearOperator` (or a dense symmetric tensor, or
    a ``matvec`` function with ``dim``). The orthonormal basis ``Q`` grows by one block
    ``A P`` per step, issued as one batched product; the block is projected out of ``Q``
    with matrix-matrix products (classical Gram-Schmidt, repeated when a column lost more than
    ``1/√2`` of its norm: Daniel, Gragg, Kaufman & Stewart 1976) and the projections fill
    ``H = Q^T A Q``. Ritz pairs ``(theta, Q s)`` of ``H`` have residual ``||B s_last||`` where
    ``B`` couples the newest block to the next one; iteration stops when all wanted residuals
    are ``<= max(tol |theta|, 100 eps ||A||)`` (``tol``: 1e-10 in float64, 1e-5 otherwise).
    When the basis reaches ``num_steps`` vectors (default ``min(dim, max(4k, 2k + 200))``)
    it is restarted with the best Ritz vectors (thick restart: Wu & Simon 2000; Stewart's
    Krylov-Schur 2001); a basis of ``dim`` vectors gives the exact answer.

    **Block size and multiplicities.** A Krylov space grown from ``s`` random directions holds
    at most ``s`` copies of a repeated eigenvalue (in exact arithmetic), and the deep-UFM
    Hessians of Garrod & Keating (arXiv 2404.06106) have ``K^2`` exactly equal outliers. By
    default (``block_size=None``) the solver starts from two random directions - on a spectrum
    without repeated eigenvalues that costs a few per cent more products than single-vector
    Lanczos (``benchmarks/peers.py``), and certifies every eigenvalue found once as simple - and
    matches the block to the clusters it finds: whenever the converged wanted Ritz values hold a
    cluster of ``c >= s`` equal values (within ``sqrt(eps) ||A||``), ``c`` fresh random
    directions join the next block, the next Ritz value beyond the ``k`` wanted must converge
    too, and the iteration goes on. So a returned cluster of ``c`` copies is always smaller
    than the number of random directions ``s`` it was searched with: its multiplicity is ``c``
    (Golub & Underwood 1977; Cullum & Donath 1974). A fixed ``block_size`` keeps the block
    at that size and warns when a wanted cluster is as large as the block.
    With ``verify`` the returned residuals are recomputed with one block product (counted).
    """
    op = as_operator(operator, dim=dim, dtype=dtype, device=device)
    dim = op.dim
    k = check_int("k", k, 1, dim)
    _check_which(which)
    adaptive = block_size is None
    b = min(2, dim) if adaptive else check_int("block_size", block_size, 1, dim)
    if num_steps is None:
        m_max = min(dim, max(4 * k, 2 * k + 200))
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
    start_count, gen = op.num_products, _generator(seed)
    Qt = torch.zeros(m_max, dim, dtype=dtype, device=device)  # basis vectors as rows
    H = torch.zeros(m_max, m_max, dtype=torch.float64)
    P, _ = _orth_columns(_randn(gen, (dim, b), dtype, device), Qt[:0], target=b, gen=gen, thresh=0.0)
    directions = b  # random directions the Krylov space was grown from
    m, restarts, anorm, converged, local, next_check = 0, 0, 0.0, False, 0, 0
    theta = S = sel_all = None
    k_test, history = k, []
    while True:
        r = P.shape[1]
        if m + r > m_max:  # thick restart: keep the p best Ritz vectors
            if restarts == max_restarts or theta is None:
                break
            restarts += 1
            p = min(m, m_max - r, max(k, (m_max - r + k) // 2))
            keep = sel_all[:p]
            Qt[:p] = S[:, keep].mT.to(dtype=dtype, device=device) @ Qt[:m]
            H.zero_()
            H[:p, :p] = torch.diag(theta[keep])
            m, local, next_check = p, 0, p
            history.clear()
        Qt[m: m + r] = P.mT
        W = op.matmat(P).to(dtype=dtype, device=device)
        anorm = max(anorm, torch.linalg.vector_norm(W, dim=0).max().item())
        # the newest blocks carry the large projections (the three-term recurrence); projecting
        # them out first leaves the full pass only the rounding it corrects, so that one pass
        # over the whole basis (the memory-bound part at large dim) is usually enough
        recent = Qt[local: m + r]
        C = torch.zeros(m + r, r, dtype=dtype, device=device)
        C[local:] = recent @ W
        W = W - recent.mT @ C[local:]
        for _ in range(2):
            before = torch.linalg.vector_norm(W, dim=0)
            C2 = Qt[: m + r] @ W
            W, C = W - Qt[: m + r].mT @ C2, C + C2
            if not bool((torch.linalg.vector_norm(W, dim=0) < 0.7071 * before).any()):
                break
        C = C.to(dtype=torch.float64, device="cpu")
        H[: m + r, m: m + r] = C
        H[m: m + r, : m + r] = C.mT
        H[m: m + r, m: m + r] = (C[m:] + C[m:].mT) / 2
        last, local, m = slice(m, m + r), m, m + r
        P, coupling, fresh = _next_block(W, Qt[:m], gen=gen, thresh=10 * eps * anorm)
        directions += fresh
        if fresh and adaptive:  # an invariant subspace: young random directions join, as below
            k_test = min(k + 1, dim)
        coupling = coupling.to(dtype=torch.float64, device="cpu")
        if m < min(k, dim) or (m < next_check and m + P.shape[1] <= m_max and m < dim):
            continue
        theta, S = _eigh64(H[:m, :m])
        sel_all = _order(theta, which)
        sel, tested = sel_all[:k], sel_all[:k_test]
        res = torch.linalg.vector_norm(coupling @ S[last][:, tested], dim=0)
        thresh = torch.clamp(tol * theta[tested].abs(), min=100 * eps * anorm)
        worst = (res / thresh).max().item()
        if m < dim and worst > 1:
            next_check = m + _check_interval(history, m, worst, r)
            continue
        cluster = _clusters(theta[sel], math.sqrt(eps) * max(anorm, 1e-300))
        extra = min(cluster, dim - m - P.shape[1])
        if not adaptive or cluster < directions - fresh or extra <= 0:  # (the fresh ones in P are not multiplied yet)
            converged = True
            break
        # a cluster as large as the number of random directions may hide further copies: grow
        # the block by that many fresh directions, and from now on also require the next Ritz
        # value (the top of what the found vectors leave) to converge before stopping
        R, _ = _orth_columns(_randn(gen, (dim, extra), dtype, device), torch.cat([Qt[:m], P.mT]),
                             target=extra, gen=gen, thresh=0.0)
        P = torch.cat([P, R], dim=1)
        directions += R.shape[1]
        k_test, next_check = min(k + 1, dim), m
        history.clear()
    vals = theta[sel].to(dtype=dtype, device=device)
    V = Qt[:m].mT @ S[:, sel].to(dtype=dtype, device=device)
    if verify:
        res = torch.linalg.vector_norm(op.matmat(V).to(dtype=dtype, device=device) - V * vals, dim=0)
    else:
        res = res[:k]  # the Ritz estimates, in the order of sel
    longest = _clusters(theta[sel], math.sqrt(eps) * max(anorm, 1e-300))
    if not adaptive and b < k and longest >= max(b, 2):
        warnings.warn(f"top_eigenpairs found a cluster of {longest} equal eigenvalues with "
                      f"block_size={b}; its multiplicity may be larger (raise block_size)",
                      RuntimeWarning, stacklevel=2)
    size = b if not adaptive else f"adaptive, {directions} directions"
    return _result(vals, V, res.to(dtype=dtype, device=device), which=which, count=op.num_products - start_count,
                   converged=converged, method=f"block Lanczos (b={size}, restarts={restarts})", dim=dim)


def power_iteration_deflation(matvec: MatVec | LinearOperator, *, k: int, dim: int | None = None, tol: float = 1e-6,
                              max_iter: int = 1000, seed: int = 0, dtype=torch.float64,
                              device="cpu") -> Spectrum:
    """``k`` largest-magnitude eigenpairs by power iteration with deflation (PyHessian).

    Each eigenvector is found by iterating ``v <- (I - V V^T) A v / ||.||`` against the
    eigenvectors ``V`` found before, until the Rayleigh quotient changes by at most
    ``tol |theta|`` (PyHessian's stopping rule) or ``max_iter`` products were spent on it.
    Convergence is linear in ``|lambda_{i+1} / lambda_i|``: slow without a spectral gap.
    """
    op = as_operator(matvec, dim=dim, dtype=dtype, device=device)
    dim, start_count = op.dim, op.num_products
    k = check_int("k", k, 1, dim)
    max_iter = check_int("max_iter", max_iter, 1)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number; got {tol!r}")
    gen = _generator(seed)
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
            w = op.matvec(v).to(dtype=dtype, device=device)
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
                   torch.tensor(res, dtype=dtype).to(device), which="LM", count=op.num_products - start_count, converged=converged,
                   method="power iteration with deflation", dim=dim)


def eigsh_reference(matvec: MatVec | LinearOperator, *, k: int, dim: int | None = None, which: Which = "LA",
                    tol: float = 0.0, num_steps: int | None = None, seed: int = 0,
                    dtype=torch.float64, device="cpu", verify: bool = True) -> Spectrum:
    """SciPy ``eigsh`` (ARPACK implicitly restarted Lanczos) on the same operator, for comparison.

    The operator goes to SciPy by :meth:`LinearOperator.to_scipy` (one product per ARPACK
    request). ``num_steps`` is ARPACK's ``ncv``; ``tol=0`` means machine precision; ARPACK stops
    when every wanted Ritz estimate is ``<= tol |theta|``. Needs ``k < dim``. With ``verify`` the
    residuals are recomputed with one block product of ``k`` columns (counted), as
    :func:`top_eigenpairs` does.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    op = as_operator(matvec, dim=dim, dtype=dtype, device=device)
    dim, start_count = check_int("dim", op.dim, 2), op.num_products
    k = check_int("k", k, 1, dim - 1)
    _check_which(which)
    v0 = _randn(_generator(seed), (dim,), torch.float64, "cpu").numpy()
    try:
        vals, vecs = eigsh(op.to_scipy(), k=k, which=which, tol=tol, v0=v0, ncv=num_steps)
        converged = True
    except ArpackNoConvergence as err:
        vals, vecs, converged = err.eigenvalues, err.eigenvectors, False
    vals = torch.as_tensor(vals).to(dtype=dtype, device=device)
    V = torch.as_tensor(vecs).to(dtype=dtype, device=device)
    if verify:
        res = torch.linalg.vector_norm(op.matmat(V).to(dtype=dtype, device=device) - V * vals, dim=0)
    else:
        res = torch.full_like(vals, float("nan"))
    return _result(vals, V, res, which=which, count=op.num_products - start_count, converged=converged,
                   method="scipy eigsh (ARPACK)", dim=dim)
