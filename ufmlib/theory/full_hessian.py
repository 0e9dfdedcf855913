"""The full fit-term Hessian over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``) at the global minimiser (R7).

The whole spectrum, the two outlier levels that hold the ``K²`` outliers and the Gauss-Newton
part, in closed form from :func:`ufmlib.optimum.dnc_optimum`. The derivation is the companion's
own (in :func:`optimum_full_hessian`; the full Hessian is not among the theorems of the paper's
public versions): the Gauss-Newton part has ``K²`` equal eigenvalues, and the cross-layer
residual term splits them into a symmetric and an antisymmetric level and creates the
``±√(λ_k λ_{k+1})`` bulk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..config import UFMConfig
from ..optimum import DNCOptimum
from ..spectrum import Spectrum
from ..validation import check_rtol
from ._blocks import F64, RTOL, ZERO_RTOL, _frames, _require_optimum

__all__ = [
    "full_hessian_bulk_multiplicities",
    "optimum_full_hessian",
    "full_hessian_outliers",
    "optimum_full_gauss_newton",
]


def _chain_lambdas(cfg: UFMConfig, include_H: bool) -> list[float]:
    return ([cfg.lambda_H] if include_H else []) + list(cfg.lambda_Ws)


def _frame_blocks(cfg: UFMConfig, opt: DNCOptimum, include_H: bool):
    """``λ`` of the chain of factors and the eigenpairs of ``S`` and ``A`` (see :func:`optimum_full_hessian`)."""
    g, u = opt.gamma, opt.one_minus_gamma
    lams = torch.tensor(_chain_lambdas(cfg, include_H), dtype=F64)
    v = torch.sqrt(lams)
    S = torch.diag(lams) + ((2 * g - 1) / u) * torch.outer(v, v)
    Amat = torch.outer(v, v) / u - torch.diag(lams)
    return lams, torch.linalg.eigh(S), torch.linalg.eigh(Amat)


def full_hessian_bulk_multiplicities(K: int, L: int, d: int, n: int = 1, *, include_H: bool = False) -> dict[str, int]:
    """Multiplicities of ``+λ``, ``-λ``, ``0`` (and ``λ_Hγ/(1-γ)``) in the full Hessian (R7, common λ).

    Derived in :func:`optimum_full_hessian` (``m = L`` factors, ``m = L+1`` with ``H_1``):

    * ``+λ``: ``(m-1) K(d-K) + (m-1) K(K+1)/2``;  ``-λ``: ``(m-1) K(d-K) + (m-1) K(K-1)/2``;
    * ``0``: ``(L-1)(d-K)²`` plus ``K(d-K)`` (weights only) or ``(d-K)(N-K)`` (with ``H_1``);
    * ``λ_Hγ/(1-γ)``: ``K(N-K) = K²(n-1)`` (with ``H_1`` only).

    Example (K=4, L=4, d=6, weights only): ``+λ ×54, 0 ×20, -λ ×42``.
    """
    m = L + 1 if include_H else L
    N = K * n
    out = {
        "plus_lambda": (m - 1) * (K * (d - K) + K * (K + 1) // 2),
        "minus_lambda": (m - 1) * (K * (d - K) + K * (K - 1) // 2),
        "zero": (L - 1) * (d - K) ** 2 + ((d - K) * (N - K) if include_H else K * (d - K)),
    }
    if include_H:
        out["feature_level"] = K * (N - K)
    return out


def optimum_full_hessian(
    cfg: UFMConfig, *, include_H: bool = False, frames: str | None = None, rtol: float = RTOL
) -> Spectrum:
    """The whole spectrum of the full fit-term Hessian at the global minimiser (R7).

    Parameters ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]`` with ``include_H``), flattened row-major
    in that order. Write the chain of factors ``F_0 = H_1`` (if included), ``F_l = W_l`` with
    penalties ``λ_k`` and ``v = (√λ_k)_k`` (length ``m``). Split every ``δW_l`` into blocks
    relative to the class frames ``U_l`` (input) and ``U_{l+1}`` (output):

    * the frame-frame blocks ``C_l = U_{l+1}^T δW_l U_l`` (``K x K`` each). On them the
      Gauss-Newton quadratic form is ``(γ/(1-γ)) ||Σ_k √λ_k C_k||_F²`` and the residual term
      adds ``-2 Σ_{k<k'} √(λ_k λ_k') tr(C_k' C_k)``; splitting ``C`` into symmetric and
      antisymmetric parts gives, for each of the ``K(K+1)/2`` symmetric directions, the ``m``
      eigenvalues of ``S = diag(λ) + ((2γ-1)/(1-γ)) v v^T`` and, for each of the
      ``K(K-1)/2`` antisymmetric ones, the ``m`` eigenvalues of ``A = v v^T/(1-γ) - diag(λ)``.
      The top eigenvalues of ``S`` and ``A`` are the ``K²`` outliers; for a common ``λ`` they
      are ``mλγ/(1-γ) ∓ (m-1)λ`` and the others are ``+λ`` (symmetric) and ``-λ`` (antisymmetric);
    * consecutive factors couple "output outside the frame" of ``F_k`` with "input outside the
      frame" of ``F_{k+1}``: ``K(d-K)`` pairs with eigenvalues ``±√(λ_k λ_{k+1})``;
    * the within-class part of ``δH_1`` inside the frame: ``K(N-K)`` eigenvalues
      ``λ_H γ/(1-γ)``; everything else is 0 (see :func:`full_hessian_bulk_multiplicities`).

    ``n_outliers = K²``. ``frames`` (default ``None``) returns the ``K²`` outlier eigenvectors:
    stacks ``w_k vec(U_{k+1} E U_k^T)`` over the factors with ``E`` running over an orthonormal
    basis of the antisymmetric / symmetric ``K x K`` matrices and ``w`` the top eigenvector of
    ``A`` / ``S`` (equal weights for a common ``λ``); the ``H_1`` slot is
    ``w_0 vec(U_1 E (I_K ⊗ 1_n^T))/√n``.
    """
    opt = _require_optimum(cfg)
    rtol = check_rtol(rtol)
    K, L, d, N = cfg.K, cfg.L, cfg.d, cfg.N
    lams, (wS, VS), (wA, VA) = _frame_blocks(cfg, opt, include_H)
    m = lams.shape[0]
    n_sym, n_anti = K * (K + 1) // 2, K * (K - 1) // 2
    entries: list[tuple[float, int]] = []
    entries += [(float(x), n_sym) for x in wS]
    entries += [(float(x), n_anti) for x in wA] if n_anti else []
    for k in range(m - 1):
        c = math.sqrt(float(lams[k] * lams[k + 1]))
        entries += [(c, K * (d - K)), (-c, K * (d - K))]
    if include_H:
        entries.append((opt.feature_hessian_outlier, K * (N - K)))
    dim = (L - 1) * d * d + K * d + (d * N if include_H else 0)
    # merge equal levels
    entries = [e for e in entries if e[1] > 0]
    entries.sort(key=lambda e: -e[0])
    scale = max(abs(e[0]) for e in entries)
    levels: list[list] = []
    for val, mult in entries:
        if levels and abs(levels[-1][0] - val) <= rtol * scale:
            levels[-1][1] += mult
        else:
            levels.append([val, mult])
    levels = [lev for lev in levels if abs(lev[0]) > ZERO_RTOL * scale]
    vectors = labs = None
    if frames is not None:
        vectors, labs = _full_outlier_vectors(cfg, include_H, frames, VS[:, -1], VA[:, -1], float(wS[-1]) >= float(wA[-1]))
    name = "full Hessian [H_1, W_1..W_L]" if include_H else "full Hessian [W_1..W_L]"
    return Spectrum.from_levels(
        torch.tensor([lev[0] for lev in levels], dtype=F64), [int(lev[1]) for lev in levels], vectors=vectors,
        labels=labs, bulk_value=0.0, dim=dim, name=name, n_outliers=K * K,
    )


def full_hessian_outliers(cfg: UFMConfig, *, include_H: bool = False) -> list[dict]:
    """The two outlier levels of the full fit-term Hessian at the minimiser (R7), largest first.

    ``[{"level", "multiplicity", "kind"}, ...]`` with ``kind`` ``"antisymmetric"`` (multiplicity
    ``K(K-1)/2``, the top eigenvalue of ``A`` in :func:`optimum_full_hessian`) and ``"symmetric"``
    (``K(K+1)/2``, the top eigenvalue of ``S``); for a common ``λ`` over ``m`` factors they are
    ``mλγ/(1-γ) ± (m-1)λ``. Together they hold the ``K²`` outliers.
    """
    opt = _require_optimum(cfg)
    K = cfg.K
    _, (wS, _), (wA, _) = _frame_blocks(cfg, opt, include_H)
    out = [
        {"level": float(wA[-1]), "multiplicity": K * (K - 1) // 2, "kind": "antisymmetric"},
        {"level": float(wS[-1]), "multiplicity": K * (K + 1) // 2, "kind": "symmetric"},
    ]
    return sorted(out, key=lambda lev: -lev["level"])


def _coefficient_bases(K: int) -> tuple[list, list, list, list]:
    """Orthonormal bases of the symmetric and antisymmetric ``K x K`` matrices, with labels."""
    sym, anti, lsym, lanti = [], [], [], []
    r = 1 / math.sqrt(2)
    for i in range(K):
        for j in range(i, K):
            E = torch.zeros(K, K, dtype=F64)
            if i == j:
                E[i, i] = 1.0
            else:
                E[i, j] = E[j, i] = r
                Ea = torch.zeros(K, K, dtype=F64)
                Ea[i, j], Ea[j, i] = r, -r
                anti.append(Ea)
                lanti.append(("antisymmetric", i, j))
            sym.append(E)
            lsym.append(("symmetric", i, j))
    return sym, anti, lsym, lanti


def _stacked(cfg: UFMConfig, include_H: bool, U: list[Tensor], E: Tensor, w: Tensor) -> Tensor:
    """``[w_0 vec(U_1 E (I_K ⊗ 1_n^T))/√n ;] w_l vec(U_{l+1} E U_l^T), l = 1..L`` (row-major)."""
    K, L, n = cfg.K, cfg.L, cfg.n
    parts, k = [], 0
    if include_H:
        ones = torch.ones(1, n, dtype=F64) / math.sqrt(n)
        parts.append(w[0] * (U[0] @ E @ torch.kron(torch.eye(K, dtype=F64), ones)).reshape(-1))
        k = 1
    for l in range(1, L + 1):
        parts.append(w[k + l - 1] * (U[l] @ E @ U[l - 1].T).reshape(-1))
    return torch.cat(parts)


def _full_outlier_vectors(
    cfg: UFMConfig, include_H: bool, frames: str, wS: Tensor, wA: Tensor, sym_first: bool
) -> tuple[Tensor, tuple]:
    U = _frames(cfg, frames)
    basis_sym, basis_anti, lab_sym, lab_anti = _coefficient_bases(cfg.K)
    sym = [_stacked(cfg, include_H, U, E, wS) for E in basis_sym]
    anti = [_stacked(cfg, include_H, U, E, wA) for E in basis_anti]
    cols, labs = (sym + anti, lab_sym + lab_anti) if sym_first else (anti + sym, lab_anti + lab_sym)
    return torch.stack(cols, dim=1), tuple(labs)


def optimum_full_gauss_newton(cfg: UFMConfig, *, include_H: bool = False, frames: str | None = None) -> Spectrum:
    """Gauss-Newton part ``J^T J/N`` of the full fit-term Hessian at the minimiser (R7).

    Every factor's Jacobian maps onto the same ``K²``-dimensional space of class-constant logit
    perturbations, so ``G`` has ``K²`` eigenvalues ``Σ_l λ_out(l) = (γ/(1-γ)) Σ_l λ_{W_l}``
    (plus ``λ_H γ/(1-γ)`` with ``H_1``) with eigenvectors the stacks
    ``Σ_k √λ_k vec(U_{k+1} E_{cc'} U_k^T)/||√λ||`` (equal weights for a common λ; labels
    ``(c, c')`` for ``E_{cc'} = e_c e_{c'}^T``); with ``H_1`` also ``K(N-K) = K²(n-1)``
    eigenvalues ``λ_H γ/(1-γ)`` (within-class directions of ``H_1``); the rest 0.
    Example (K=4, L=4, d=6): ``0.7377079 ×16``.
    """
    opt = _require_optimum(cfg)
    K, L, d, N = cfg.K, cfg.L, cfg.d, cfg.N
    lams = torch.tensor(_chain_lambdas(cfg, include_H), dtype=F64)
    top = float(lams.sum()) * opt.gamma / opt.one_minus_gamma
    values, mults = [top], [K * K]
    if include_H and N > K:
        values.append(opt.feature_hessian_outlier)
        mults.append(K * (N - K))
    vectors = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        w = torch.sqrt(lams) / torch.linalg.vector_norm(torch.sqrt(lams))
        cols, labs = [], []
        for c in range(K):
            for cp in range(K):
                E = torch.zeros(K, K, dtype=F64)
                E[c, cp] = 1.0
                cols.append(_stacked(cfg, include_H, U, E, w))
                labs.append((c, cp))
        vectors, labs = torch.stack(cols, dim=1), tuple(labs)
    dim = (L - 1) * d * d + K * d + (d * N if include_H else 0)
    name = "Gauss-Newton part of the full Hessian" + (" [H_1, W_1..W_L]" if include_H else " [W_1..W_L]")
    return Spectrum.from_levels(
        torch.tensor(values, dtype=F64), mults, vectors=vectors, labels=labs, bulk_value=0.0, dim=dim, name=name,
        n_outliers=K * K,
    )
