"""Spectral alignment metrics: eigenvector tests, gradient coefficients, overlaps.

* :func:`class_mean_kronecker_basis` -- the normalised candidate eigenvectors
  ``b_{cc'} = μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` of the layer Hessian (R2, v1 Thm 4.1), row-major vec.
* :func:`gradient_coefficients` -- the ``K x K`` table ``c_{cc'} = <b_{cc'}, g>²/||g||²``
  (v1 Table 2 style; ``I_K/K`` at the optimum, R4, v1 Thm 4.3).
* :func:`top_overlap` -- Gur-Ari et al. (2018): ``f_top(k) = ||P_k g||²/||g||²``.
* :func:`eigvec_test` / :func:`kronecker_eigvec_test` -- the v1 metric
  ``f = (v^T H v)²/(||v||² ||H v||²)`` (1 iff ``v`` is an eigenvector).
* :func:`outlier_equalisation`, :func:`outlier_gap`, :func:`count_outliers` -- shape of the top
  of a spectrum.
* :func:`orthonormal_basis`, :func:`subspace_overlap`, :func:`projector_distance` -- compare
  eigen*spaces*, never individual eigenvectors: with degenerate eigenvalues (all ``K²``
  outliers are equal at the optimum) the eigenvectors returned by ``eigh`` are an arbitrary
  basis of the eigenspace, while the projector is unique.

Use the **fit-term** gradient for every gradient metric: at the optimum
the total gradient (fit + weight decay) vanishes and near it is dominated by ``λW`` on the bulk.
All computations are in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable

import torch
from torch import Tensor

from .validation import check_int, check_matrix, check_rtol, f64

__all__ = [
    "KroneckerBasis",
    "class_mean_kronecker_basis",
    "gradient_coefficients",
    "top_overlap",
    "eigvec_test",
    "kronecker_eigvec_test",
    "outlier_equalisation",
    "outlier_gap",
    "orthonormal_basis",
    "subspace_overlap",
    "projector_distance",
    "count_outliers",
]

F64 = torch.float64


def _matrix(name: str, M) -> Tensor:
    return f64(check_matrix(name, M))


def _vector(name: str, v) -> Tensor:
    if not isinstance(v, Tensor) or v.ndim not in (1, 2):
        raise ValueError(f"{name} must be a vector or a matrix tensor; got {getattr(v, 'shape', type(v).__name__)}")
    return f64(v).reshape(-1)


def _eigs(name: str, eigs) -> Tensor:
    if not isinstance(eigs, Tensor):
        eigs = torch.as_tensor(eigs, dtype=F64)
    if eigs.ndim != 1 or eigs.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of eigenvalues")
    return torch.sort(f64(eigs), descending=True).values


def _check_K(K) -> int:
    return check_int("K", K, 1)


# ----------------------------------------------------------------------------- bases and coefficients
@dataclass(frozen=True, eq=False)
class KroneckerBasis:
    """Normalised ``b_{cc'} = vec(μ̂_c^{(l+1)} μ̂_{c'}^{(l)T})`` as columns, ``labels[j] = (c, c')``.

    Column ``j = c K + c'``; ``shape = (d_out, d_in)`` is the shape of ``W_l``.
    """

    vectors: Tensor
    labels: tuple[tuple[int, int], ...]
    shape: tuple[int, int]
    K: int


def class_mean_kronecker_basis(M_next: Tensor, M_this: Tensor) -> KroneckerBasis:
    """The ``K²`` candidate eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` of the layer Hessian (R2).

    ``M_next`` (``d_out x K``) holds the class means of the output of ``W_l`` (the logit
    directions ``I_K`` for ``W_L``), ``M_this`` (``d_in x K``) those of its input. Each column
    is normalised; row-major vec (``vec(a b^T) = a ⊗ b``; column-major would swap the factors).
    """
    M_next, M_this = _matrix("M_next", M_next), _matrix("M_this", M_this)
    K = M_this.shape[1]
    if M_next.shape[1] != K:
        raise ValueError(f"M_next must have K = {K} columns like M_this; got {M_next.shape[1]}")
    for name, M in (("M_next", M_next), ("M_this", M_this)):
        if bool((torch.linalg.vector_norm(M, dim=0) == 0).any()):
            raise ValueError(f"{name} has a zero class mean; the basis is undefined")
    a = M_next / torch.linalg.vector_norm(M_next, dim=0)
    b = M_this / torch.linalg.vector_norm(M_this, dim=0)
    V = torch.einsum("ic,jd->ijcd", a, b).reshape(a.shape[0] * b.shape[0], K * K)
    labels = tuple((c, cp) for c in range(K) for cp in range(K))
    return KroneckerBasis(V, labels, (a.shape[0], b.shape[0]), K)


def gradient_coefficients(g: Tensor, basis: KroneckerBasis | Tensor) -> Tensor:
    """``K x K`` table ``c_{cc'} = <b_{cc'}, g>²/||g||²`` (R4, v1 Thm 4.3).

    ``g`` is the (fit-term) gradient of ``W_l`` as a ``d_out x d_in`` matrix or its row-major
    vec; ``basis`` a :class:`KroneckerBasis` or a ``dim x K²`` matrix of unit columns ordered
    ``c K + c'``. At the global minimiser the table is ``I_K/K``. The entries sum to the
    fraction of ``g`` inside the span of the basis when the basis is orthonormal.
    """
    V = basis.vectors if isinstance(basis, KroneckerBasis) else _matrix("basis", basis)
    K = int(round(math.sqrt(V.shape[1])))
    if K * K != V.shape[1]:
        raise ValueError(f"basis must have K² columns; got {V.shape[1]}")
    g = _vector("g", g)
    if g.shape[0] != V.shape[0]:
        raise ValueError(f"g has {g.shape[0]} entries but the basis vectors have {V.shape[0]}")
    gg = float(g @ g)
    if gg == 0.0:
        raise ValueError("g is zero: the coefficient table is undefined")
    return ((V.T @ g) ** 2 / gg).reshape(K, K)


def top_overlap(g: Tensor, eigvecs: Tensor, k: int, *, eigvals: Tensor | None = None) -> float:
    """Gur-Ari overlap ``f_top(k) = ||P_k g||²/||g||²`` (Gur-Ari et al. 2018).

    ``P_k`` projects on the span of the top ``k`` eigenvectors: the ``k`` columns of
    ``eigvecs`` with the largest ``eigvals`` if these are given, else its **first** ``k``
    columns (note that ``torch.linalg.eigh`` returns ascending eigenvalues). The columns are
    re-orthonormalised. With ``k`` cutting through a degenerate level the value depends on the
    arbitrary basis inside it and is meaningless; use ``k = K²`` for the linear UFM.
    """
    V = _matrix("eigvecs", eigvecs)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= V.shape[1]:
        raise ValueError(f"k must be an integer in 1..{V.shape[1]}; got {k!r}")
    if eigvals is not None:
        w = f64(torch.as_tensor(eigvals)).reshape(-1)
        if w.shape[0] != V.shape[1]:
            raise ValueError(f"eigvals must have one entry per column of eigvecs ({V.shape[1]}); got {w.shape[0]}")
        V = V[:, torch.argsort(w, descending=True)[:k]]
    else:
        V = V[:, :k]
    g = _vector("g", g)
    if g.shape[0] != V.shape[0]:
        raise ValueError(f"g has {g.shape[0]} entries but the eigenvectors have {V.shape[0]}")
    gg = float(g @ g)
    if gg == 0.0:
        raise ValueError("g is zero: the overlap is undefined")
    Q = orthonormal_basis(V)
    return float(((Q.T @ g) ** 2).sum() / gg)


# ----------------------------------------------------------------------------- eigenvector tests
def eigvec_test(H: Tensor | Callable[[Tensor], Tensor], v: Tensor) -> float:
    """``f = (v^T H v)²/(||v||² ||H v||²)`` (the v1 metric): 1 iff ``v`` is an eigenvector.

    ``H`` is a dense symmetric matrix or a Hessian-vector product ``v ↦ H v``. ``f`` is the
    squared cosine between ``v`` and ``Hv``; it is ``nan`` when ``Hv = 0`` (``v`` in the null
    space, where the cosine is undefined).
    """
    v = _vector("v", v)
    if float(v @ v) == 0.0:
        raise ValueError("v must be non-zero")
    if callable(H) and not isinstance(H, Tensor):
        Hv = f64(H(v)).reshape(-1)
    else:
        Hm = _matrix("H", H)
        if Hm.shape != (v.shape[0], v.shape[0]):
            raise ValueError(f"H must be {v.shape[0]} x {v.shape[0]}; got {tuple(Hm.shape)}")
        Hv = Hm @ v
    hh = float(Hv @ Hv)
    if hh == 0.0:
        return float("nan")
    return float((v @ Hv) ** 2 / (float(v @ v) * hh))


def kronecker_eigvec_test(P: Tensor, Q: Tensor, M_next: Tensor, M_this: Tensor) -> Tensor:
    """``K x K`` table of ``f_{cc'}`` for ``Hess_l = P ⊗ Q`` and ``v = μ_c^{(l+1)} ⊗ μ_{c'}^{(l)}``.

    ``P = A^{(l+1)T} A^{(l+1)}``, ``Q = Σ^{(l)}`` (R2, v1 Thm 4.1). With
    ``M = μ_c μ_{c'}^T`` one has ``H v = vec(P M Q)``; since ``P M Q = (Pμ_c)(Qμ_{c'})^T`` the
    metric factorises, ``f_{cc'} = cos²(μ_c, Pμ_c) · cos²(μ_{c'}, Qμ_{c'})``, so the table costs
    two matrix products. Entries are ``nan`` where ``Pμ_c`` or ``Qμ_{c'}`` vanishes.
    """
    P, Q = _matrix("P", P), _matrix("Q", Q)
    M_next, M_this = _matrix("M_next", M_next), _matrix("M_this", M_this)
    if P.shape != (M_next.shape[0],) * 2:
        raise ValueError(f"P must be {M_next.shape[0]} x {M_next.shape[0]}; got {tuple(P.shape)}")
    if Q.shape != (M_this.shape[0],) * 2:
        raise ValueError(f"Q must be {M_this.shape[0]} x {M_this.shape[0]}; got {tuple(Q.shape)}")

    def cos2(S: Tensor, M: Tensor) -> Tensor:
        SM = S @ M
        num = torch.einsum("ij,ij->j", M, SM) ** 2
        den = (M * M).sum(0) * (SM * SM).sum(0)
        return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.nan)

    return torch.outer(cos2(P, M_next), cos2(Q, M_this))


# ----------------------------------------------------------------------------- shape of the top
def outlier_equalisation(eigs, K: int) -> float:
    """``max/min`` of the top ``K²`` eigenvalues: 1 when the outliers are equal.

    ``inf`` if the smallest of them is ``<= 0``.
    """
    K = _check_K(K)
    w = _eigs("eigs", eigs)
    if w.shape[0] < K * K:
        raise ValueError(f"eigs must hold at least K² = {K * K} values; got {w.shape[0]}")
    top = w[: K * K]
    lo = float(top[-1])
    return float(top[0]) / lo if lo > 0 else math.inf


def outlier_gap(eigs, K: int, *, floor: float = 1e-300) -> float:
    """``λ_{K²}/λ_{K²+1}``; ``inf`` when ``λ_{K²+1} <= floor`` (zero or negative bulk)."""
    K = _check_K(K)
    w = _eigs("eigs", eigs)
    if w.shape[0] <= K * K:
        raise ValueError(f"eigs must hold more than K² = {K * K} values; got {w.shape[0]}")
    a, b = float(w[K * K - 1]), float(w[K * K])
    if b <= floor:
        return math.inf
    return a / b


def count_outliers(
    eigs, *, rule: str = "ratio_gap", floor: float = 1e-3, min_ratio: float = 2.0,
    max_count: int | None = None, threshold: float | None = None,
) -> int:
    """Number of outlier eigenvalues at the top of a spectrum.

    ``rule="ratio_gap"`` (default): sort descending, clip every eigenvalue from below at
    ``floor · λ_max`` (so the bulk -- small, zero, negative and round-off values -- becomes one
    level) and cut at the largest ratio ``λ_i/λ_{i+1}`` among ``i = 1..m`` (``m = max_count``,
    default all); the count is that ``i`` if the ratio is at least ``min_ratio``, else 0 (no
    separated outliers). ``floor`` must sit between the smallest eigenvalue to be called an
    outlier and the bulk: too small a floor lets the step from a small bulk down to exact zeros
    win. Examples (default floor): ``K²`` equal outliers over an exactly zero bulk give ``K²``;
    the ReLU kink spectrum ``3 ×0.236, 6 ×0.0148, 0`` (R8, ``c0 = ½``, layer 2) gives 9 (ratio
    ``0.0148/2.4e-4 = 62 > 16``). ``rule="threshold"``: the number of eigenvalues
    ``> threshold``.
    """
    w = _eigs("eigs", eigs)
    if rule == "threshold":
        if threshold is None or isinstance(threshold, bool) or not isinstance(threshold, Real):
            raise ValueError(f"threshold must be a number for rule='threshold'; got {threshold!r}")
        return int((w > threshold).sum())
    if rule != "ratio_gap":
        raise ValueError(f"rule must be 'ratio_gap' or 'threshold'; got {rule!r}")
    floor = check_rtol(floor, name="floor")
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, Real) or min_ratio <= 1:
        raise ValueError(f"min_ratio must be a number > 1; got {min_ratio!r}")
    top = float(w[0])
    if top <= 0 or w.shape[0] < 2:
        return 0
    c = w.clamp_min(floor * top)
    m = w.shape[0] - 1 if max_count is None else max_count
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= w.shape[0] - 1:
        raise ValueError(f"max_count must be an integer in 1..{w.shape[0] - 1}; got {max_count!r}")
    ratios = c[:m] / c[1 : m + 1]
    i = int(torch.argmax(ratios))
    return i + 1 if float(ratios[i]) >= min_ratio else 0


# ----------------------------------------------------------------------------- subspaces
def orthonormal_basis(U: Tensor, *, rtol: float = 1e-10) -> Tensor:
    """Orthonormal basis of the column span of ``U`` (SVD; singular values ``<= rtol σ_max`` dropped)."""
    U = _matrix("U", U)
    rtol = check_rtol(rtol, name="rtol")
    if U.shape[1] == 0:
        return U
    Q, S, _ = torch.linalg.svd(U, full_matrices=False)
    if float(S[0]) == 0.0:
        return Q[:, :0]
    return Q[:, : int((S > rtol * S[0]).sum())]


def subspace_overlap(U: Tensor, V: Tensor, *, rtol: float = 1e-10) -> float:
    """``||Q_U^T Q_V||_F² / k_U = tr(P_U P_V)/k_U ∈ [0, 1]``.

    ``Q_U``, ``Q_V`` are orthonormal bases of the spans (``k_U = rank U``). It is the average
    squared cosine of the principal angles: the fraction of ``span U`` inside ``span V``;
    1 iff ``span U ⊆ span V`` (equal spans for equal ranks). It depends only on the projectors,
    so any basis of a degenerate eigenspace gives the same value.
    """
    QU, QV = orthonormal_basis(U, rtol=rtol), orthonormal_basis(V, rtol=rtol)
    if QU.shape[0] != QV.shape[0]:
        raise ValueError(f"U and V must have the same number of rows; got {QU.shape[0]} and {QV.shape[0]}")
    if QU.shape[1] == 0:
        raise ValueError("U spans the zero space")
    return float((QU.T @ QV).pow(2).sum() / QU.shape[1])


def projector_distance(U: Tensor, V: Tensor, *, rtol: float = 1e-10) -> float:
    """Spectral-norm distance ``||P_U - P_V||_2`` of the orthogonal projectors on the spans.

    Equals ``sin`` of the largest principal angle for equal ranks (computed as
    ``||Q_U - Q_V Q_V^T Q_U||_2``, accurate near 0), and 1 when the ranks differ.
    """
    QU, QV = orthonormal_basis(U, rtol=rtol), orthonormal_basis(V, rtol=rtol)
    if QU.shape[0] != QV.shape[0]:
        raise ValueError(f"U and V must have the same number of rows; got {QU.shape[0]} and {QV.shape[0]}")
    if QU.shape[1] != QV.shape[1]:
        return 1.0
    if QU.shape[1] == 0:
        return 0.0
    R = QU - QV @ (QV.T @ QU)
    return float(torch.linalg.matrix_norm(R, ord=2))
