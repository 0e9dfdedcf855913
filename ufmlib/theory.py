"""Predicted spectra of the deep UFM: eigenvalues, multiplicities and eigenvectors (digest §4-§5).

Every result of digest §4 (R2-R9) and §5 (R7) is available in two forms.

**(a) From class means, at any DNC-like point** (functions ``*_from_means`` and
:func:`layer_hessian_at`). The inputs are *measured* quantities: the class means ``M_l`` of
the input of ``W_l`` (``d_l x K``), the downstream products ``A^{(l+1)} = W_L⋯W_{l+1}``
(``K x d_{l+1}``; class-wise Jacobians ``B_c`` in the ReLU model) and the class-mean logits.
They assume DNC1 (every sample equals its class mean), so that e.g. the layer Hessian is

    Hess_l = (1/K) Σ_c (B_c^T Q_c B_c) ⊗ μ_c μ_c^T          (digest §2.4, §4.1, §4.7, §4.9)

(``B_c = A^{(l+1)}`` and ``Q_c = I_K`` for the linear MSE model). When the class means of
layer ``l`` are mutually orthogonal and the candidate output directions (rows of
``A^{(l+1)}``, or any ``out_frame``) are eigenvectors of every ``B_c^T Q_c B_c``, the eigenpairs
are labelled by classes: ``(||a_c||² ||μ_{c'}||²/K ; a_c ⊗ μ_{c'})`` for the linear model
(digest §4.1, "general DNC-point version"). **When the frames are not orthogonal** (a finite
training time, the CE simplex, ...) we do not force that form: the eigenpairs of the *same*
class-mean formula are computed exactly from the ``K k x K k`` Gram matrix of its factor
``F = [R_c ⊗ μ_c]/√K`` (``R_c R_c^T = B_c^T Q_c B_c``), and the labels are then plain
indices. The within-class part of the feature second moment is *not* included: these are
predictions from class means, to be compared with the measured matrices, which contain it.

**(b) Closed form at the global minimiser** (functions ``optimum_*``, :func:`predict_all`),
from :func:`ufmlib.optimum.dnc_optimum`. Eigenvectors are built from the class frames of
:func:`ufmlib.optimum.construct_minimiser` (``frames=`` the same keyword; ``frames=None`` skips
them); the spectra themselves are rotation invariant (digest pitfall 5). When condition (2)
fails the global minimiser is zero and these functions raise :class:`NoDNCMinimiserError`.

Result numbering (digest §1.4): R2 = v1 Thm 4.1 (layer Hessian), R3 = v1 Thm 4.2 (Gauss-Newton
split), R4 = v1 Thm 4.3 (fit gradient), R5 = v1 Thm 4.4 (weights); R6 (other matrices), R7
(full Hessian), R8 (ReLU) and R9 (cross-entropy) are derived in the digest, not quoted.

Conventions. Layers are numbered ``1..L``; ``W_l`` has shape ``d_out x d_in`` (``d_out = K``
for ``l = L``); vectors are **row-major** vecs, ``vec(a b^T) = a ⊗ b`` (digest §2.4, pitfall
1). All matrices are of the **fit term** (pitfall 2); :meth:`PredictedSpectrum.shifted` adds
the penalty. Everything is computed in float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from .alignment import class_mean_kronecker_basis, gradient_coefficients
from .config import ConfigError, UFMConfig, _check_int
from .model import Forward, UFMParams, fit_loss_from_logits, forward, labels
from .optimum import (
    DNCOptimum,
    ce_critical_point,
    construct_ce_critical_point,
    construct_minimiser,
    dnc_optimum,
)

__all__ = [
    "NoDNCMinimiserError",
    "PredictedSpectrum",
    "GNSplitPrediction",
    "GradientPrediction",
    "ClassMeanState",
    "class_mean_state",
    "layer_hessian_from_means",
    "layer_hessian_at",
    "gauss_newton_split_from_means",
    "fit_gradient_from_means",
    "weight_gram_from_means",
    "feature_singular_values_from_means",
    "backprop_errors_from_means",
    "gradient_moments_from_means",
    "feature_hessian_from_means",
    "ce_layer_hessian_from_means",
    "optimum_layer_hessian",
    "optimum_gauss_newton_split",
    "optimum_fit_gradient",
    "optimum_weight_gram",
    "optimum_feature_singular_values",
    "optimum_backprop_singular_values",
    "optimum_gradient_moments",
    "optimum_feature_hessian",
    "optimum_full_hessian",
    "full_hessian_bulk_multiplicities",
    "optimum_full_gauss_newton",
    "relu_with_kink",
    "forward_with_kink",
    "fit_loss_with_kink",
    "relu_optimum_layer_hessian",
    "ce_critical_layer_hessian",
    "predict_all",
]

F64 = torch.float64
RTOL = 1e-8  # relative tolerance for "equal" eigenvalues and for orthogonality checks
ZERO_RTOL = 1e-12  # eigenvalues below this fraction of the largest are predicted zeros


class NoDNCMinimiserError(ValueError):
    """Condition (2) fails: the global minimiser is zero and there is no DNC spectrum (pitfall 6)."""


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class PredictedSpectrum:
    """A predicted spectrum: distinct levels, their multiplicities, eigenvectors and the bulk.

    ``values``: the distinct predicted levels, descending (float64). ``multiplicities``: one
    int per level. ``vectors``: ``dim x r`` unit columns (row-major vecs), grouped level by
    level in the order of ``values``; ``r = sum(multiplicities)`` unless stated (for the full
    Hessian only the ``n_outliers`` outlier vectors are given); ``None`` when not requested.
    ``labels``: one label per column, e.g. ``(c, c')`` for ``a_c ⊗ μ_{c'}``. ``bulk_value``:
    the value of the remaining ``dim - sum(multiplicities)`` eigenvalues (``0`` for the fit
    term). ``n_outliers``: how many of the top eigenvalues the result calls outliers.
    ``kind`` is ``"eigenvalues"`` or ``"singular values"``.
    """

    values: Tensor
    multiplicities: tuple[int, ...]
    vectors: Tensor | None = field(default=None, repr=False)
    labels: tuple | None = field(default=None, repr=False)
    bulk_value: float | None = 0.0
    dim: int | None = None
    name: str = ""
    n_outliers: int | None = None
    kind: str = "eigenvalues"

    def __post_init__(self) -> None:
        if len(self.multiplicities) != self.values.shape[0]:
            raise ValueError("multiplicities must have one entry per value")
        if self.n_outliers is None:
            object.__setattr__(self, "n_outliers", int(sum(self.multiplicities)))

    @property
    def rank(self) -> int:
        """Number of listed eigenvalues, ``sum(multiplicities)``."""
        return int(sum(self.multiplicities))

    def expanded(self, dim: int | None = None) -> Tensor:
        """The whole predicted spectrum (length ``dim``), descending, bulk included."""
        dim = self.dim if dim is None else dim
        if dim is None:
            raise ValueError("dim is unknown: pass dim=")
        parts = [torch.full((m,), float(v), dtype=F64) for v, m in zip(self.values.tolist(), self.multiplicities)]
        rest = dim - self.rank
        if rest < 0:
            raise ValueError(f"dim must be >= {self.rank}; got {dim}")
        if rest and self.bulk_value is None:
            raise ValueError("this spectrum has no bulk value")
        parts.append(torch.full((rest,), float(self.bulk_value or 0.0), dtype=F64))
        return torch.sort(torch.cat(parts), descending=True).values

    def level_vectors(self, i: int) -> Tensor:
        """The eigenvector columns of level ``i`` (``dim x multiplicities[i]``)."""
        if self.vectors is None:
            raise ValueError("this prediction was made without eigenvectors")
        start = sum(self.multiplicities[:i])
        stop = start + self.multiplicities[i]
        if stop > self.vectors.shape[1]:
            raise ValueError(f"no vectors are given for level {i}")
        return self.vectors[:, start:stop]

    def shifted(self, delta: float) -> "PredictedSpectrum":
        """Spectrum of the matrix plus ``delta I``: e.g. the regularised Hessian (pitfall 2)."""
        bulk = None if self.bulk_value is None else self.bulk_value + delta
        return replace(self, values=self.values + delta, bulk_value=bulk)

    def as_dict(self) -> dict:
        """JSON-friendly summary (no vectors)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "levels": [{"value": float(v), "multiplicity": int(m)} for v, m in zip(self.values.tolist(), self.multiplicities)],
            "bulk_value": None if self.bulk_value is None else float(self.bulk_value),
            "dim": self.dim,
            "n_outliers": self.n_outliers,
        }


@dataclass(frozen=True, eq=False)
class GNSplitPrediction:
    """Predicted ``G_class``, ``G_cross``, ``G_within`` of a layer Hessian (R3, v1 Thm 4.2)."""

    class_: PredictedSpectrum
    cross: PredictedSpectrum
    within: PredictedSpectrum


@dataclass(frozen=True, eq=False)
class GradientPrediction:
    """Predicted fit-term gradient of ``W_l`` (R4, v1 Thm 4.3).

    ``matrix`` is ``∇_{W_l} ℓ`` (``d_out x d_in``); ``coefficients`` the ``K x K`` table
    ``c_{cc'} = <b_{cc'}, g>²/||g||²`` in the normalised class-mean basis
    ``b_{cc'} = μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (``None`` if no next-layer means were given);
    ``beta`` the closed-form ``β^{(l+1)} = γ(1-γ)/||μ^{(l+1)}||²`` (``None`` away from the optimum).
    """

    matrix: Tensor
    coefficients: Tensor | None
    beta: float | None = None

    @property
    def vector(self) -> Tensor:
        return self.matrix.reshape(-1)


# ----------------------------------------------------------------------------- helpers
def _f64(t: Tensor) -> Tensor:
    return t.detach().to(dtype=F64, device="cpu")


def _class_means(X: Tensor, K: int) -> Tensor:
    """Class means of the class-ordered columns of ``X`` (``d x N`` -> ``d x K``)."""
    d, N = X.shape
    if N % K:
        raise ValueError(f"the number of columns ({N}) must be a multiple of K = {K}")
    return X.reshape(d, K, N // K).mean(dim=2)


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """Row-major ``vec(a b^T) = a ⊗ b`` for vectors, column by column for matrices."""
    if a.ndim == 1:
        return torch.outer(a, b).reshape(-1)
    return torch.einsum("ij,kj->ikj", a, b).reshape(a.shape[0] * b.shape[0], -1)


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=0, keepdim=True).clamp_min(torch.finfo(F64).tiny)


def _is_orthogonal(M: Tensor, rtol: float) -> bool:
    """Columns mutually orthogonal (zero columns allowed), relative to the largest norm²."""
    G = M.T @ M
    scale = float(torch.diagonal(G).abs().max()) if G.numel() else 0.0
    if scale == 0.0:
        return True
    off = G - torch.diag(torch.diagonal(G))
    return float(off.abs().max()) <= rtol * scale


def _check_rtol(rtol) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, Real) or not (0 < float(rtol) < 1):
        raise ValueError(f"rtol must be a number in (0, 1); got {rtol!r}")
    return float(rtol)


def _check_matrix(name: str, M, rows: int | None = None, cols: int | None = None) -> Tensor:
    if not isinstance(M, Tensor) or M.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor; got {getattr(M, 'shape', type(M).__name__)}")
    if rows is not None and M.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows; got shape {tuple(M.shape)}")
    if cols is not None and M.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns; got shape {tuple(M.shape)}")
    return _f64(M)


def _class_wise(name: str, A, K: int) -> list[Tensor]:
    """``A`` as a list of ``K`` class-wise ``K x d`` matrices (one shared tensor is repeated)."""
    if isinstance(A, Tensor):
        A = _check_matrix(name, A, rows=K)
        return [A] * K
    A = list(A)
    if len(A) != K:
        raise ValueError(f"{name} must be one K x d tensor or a sequence of K = {K} of them; got {len(A)}")
    out = [_check_matrix(f"{name}[{c}]", a, rows=K) for c, a in enumerate(A)]
    if len({a.shape for a in out}) != 1:
        raise ValueError(f"{name}: all class-wise matrices must have the same shape")
    return out


def _group(
    values: Tensor,
    vectors: Tensor | None,
    labels: Sequence | None,
    *,
    rtol: float,
    dim: int,
    name: str,
    kind: str = "eigenvalues",
    zero_rtol: float = ZERO_RTOL,
) -> PredictedSpectrum:
    """Sort descending, drop (relative) zeros into the bulk, merge equal values into levels."""
    values = _f64(values).reshape(-1)
    scale = float(values.abs().max()) if values.numel() else 0.0
    keep = values.abs() > zero_rtol * scale if scale > 0 else torch.zeros_like(values, dtype=torch.bool)
    idx = torch.nonzero(keep).reshape(-1)
    idx = idx[torch.argsort(values[idx], descending=True, stable=True)]
    vals = values[idx]
    levels, mults = [], []
    start = 0
    for i in range(1, len(vals) + 1):
        if i == len(vals) or abs(float(vals[i]) - float(vals[start])) > rtol * scale:
            levels.append(float(vals[start:i].mean()))
            mults.append(i - start)
            start = i
    vecs = None if vectors is None else vectors[:, idx]
    labs = None if labels is None else tuple(labels[int(i)] for i in idx)
    return PredictedSpectrum(
        values=torch.tensor(levels, dtype=F64),
        multiplicities=tuple(mults),
        vectors=vecs,
        labels=labs,
        bulk_value=0.0,
        dim=dim,
        name=name,
        kind=kind,
    )


def _gram_eigh(F: Tensor, *, zero_rtol: float = ZERO_RTOL) -> tuple[Tensor, Tensor]:
    """Non-zero eigenpairs of ``F F^T`` through the small Gram matrix ``F^T F``."""
    G = F.T @ F
    G = 0.5 * (G + G.T)
    w, U = torch.linalg.eigh(G)
    scale = float(w.abs().max()) if w.numel() else 0.0
    keep = w > zero_rtol * scale if scale > 0 else torch.zeros_like(w, dtype=torch.bool)
    w, U = w[keep], U[:, keep]
    V = (F @ U) / torch.sqrt(w)
    return w, V


def _psd_sqrt(Q: Tensor) -> Tensor:
    w, U = torch.linalg.eigh(0.5 * (Q + Q.T))
    return (U * torch.sqrt(w.clamp_min(0.0))) @ U.T


def _class_block_spectrum(
    Rs: Sequence[Tensor],
    M: Tensor,
    *,
    out_frame: Tensor | None,
    out_labels: Sequence | None,
    rtol: float,
    name: str,
) -> PredictedSpectrum:
    """Eigenpairs of ``(1/K) Σ_c (R_c R_c^T) ⊗ μ_c μ_c^T`` (``μ_c`` = column ``c`` of ``M``).

    Labelled route (orthogonal ``μ_c`` and an ``out_frame`` whose orthonormal columns are
    eigenvectors of every ``P_c = R_c R_c^T`` spanning its range): the matrix is block diagonal
    over the input class, eigenpairs ``(f_j^T P_c f_j ||μ_c||²/K ; f_j ⊗ μ̂_c)`` labelled
    ``(out_labels[j], c)``. Otherwise the exact eigenpairs follow from the Gram matrix of
    ``F = [R_c ⊗ μ_c]/√K`` and are labelled by their index.
    """
    K = M.shape[1]
    d_out, d_in = Rs[0].shape[0], M.shape[0]
    dim = d_out * d_in
    norms = torch.linalg.vector_norm(M, dim=0)
    if out_frame is not None and _is_orthogonal(M, rtol):
        Fh = _unit(out_frame)
        ok = bool((Fh.T @ Fh - torch.eye(Fh.shape[1], dtype=F64)).abs().max() <= rtol)
        ev_all = []
        if ok:
            for c in range(K):
                P = Rs[c] @ Rs[c].T
                PF = P @ Fh
                ev = torch.einsum("ij,ij->j", Fh, PF)
                pn = float(torch.linalg.matrix_norm(P))
                resid = float(torch.linalg.matrix_norm(PF - Fh * ev))
                missing = float(torch.trace(P) - ev.sum())
                if resid > rtol * max(pn, 1e-300) or missing > rtol * max(float(torch.trace(P)), 1e-300):
                    ok = False
                    break
                ev_all.append(ev)
        if ok:
            vals, cols, labs = [], [], []
            Mh = _unit(M)
            for c in range(K):
                for j in range(Fh.shape[1]):
                    vals.append(float(ev_all[c][j]) * float(norms[c]) ** 2 / K)
                    cols.append(_kron(Fh[:, j], Mh[:, c]))
                    labs.append((out_labels[j] if out_labels is not None else j, c))
            V = torch.stack(cols, dim=1) if cols else torch.zeros(dim, 0, dtype=F64)
            return _group(torch.tensor(vals, dtype=F64), V, labs, rtol=rtol, dim=dim, name=name)
    F = torch.cat([_kron(R, M[:, c : c + 1].expand(-1, R.shape[1])) for c, R in enumerate(Rs)], dim=1) / math.sqrt(K)
    w, V = _gram_eigh(F)
    return _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=dim, name=name)


# ----------------------------------------------------------------------------- measured state
@dataclass(frozen=True, eq=False)
class ClassMeanState:
    """Class means and downstream Jacobians of one parameter point (inputs of every (a) function).

    ``inputs[l-1]``: class means of the input ``X_l`` of ``W_l`` (``d x K``); ``preacts[l-1]``:
    class means of ``H_l``; ``logits``: class-mean logits (``K x K``, column ``c``);
    ``within[l-1]``: ``||X_l - M_l ⊗ 1_n^T||_F / ||X_l||_F`` (0 under DNC1). ``c0`` is the
    ReLU'(0) convention and ``zero_tol`` the size below which a class-mean pre-activation
    counts as an exact zero (ReLU model only).
    """

    K: int
    n: int
    activation: str
    loss: str
    weights: tuple[Tensor, ...]
    inputs: tuple[Tensor, ...]
    preacts: tuple[Tensor, ...]
    logits: Tensor
    within: tuple[float, ...]
    c0: float = 0.0
    zero_tol: float = 0.0

    @property
    def L(self) -> int:
        return len(self.weights)

    def _check(self, l: int, top: int) -> int:
        if isinstance(l, bool) or not isinstance(l, int) or not 1 <= l <= top:
            raise ValueError(f"layer must be an integer in 1..{top}; got {l!r}")
        return l

    def M(self, l: int) -> Tensor:
        """Class means of the input of ``W_l`` (``l = 1..L``); ``l = L+1``: class-mean logits."""
        l = self._check(l, self.L + 1)
        return self.logits if l == self.L + 1 else self.inputs[l - 1]

    def A(self, l: int) -> Tensor:
        """``A^{(l)} = W_L⋯W_l`` (``K x d_l``), ``A^{(L+1)} = I_K`` (no ReLU masks)."""
        l = self._check(l, self.L + 1)
        out = torch.eye(self.K, dtype=F64)
        for W in reversed(self.weights[l - 1 :]):
            out = out @ W
        return out

    def mask(self, l: int) -> Tensor:
        """``ReLU'`` at the class-mean pre-activations of layer ``l`` (``d x K``; ones if linear)."""
        l = self._check(l, self.L)
        H = self.preacts[l - 1]
        if self.activation != "relu" or l == 1:
            return torch.ones_like(H)
        zero = H.abs() <= self.zero_tol
        return (H > self.zero_tol).to(F64) + self.c0 * zero.to(F64)

    def jacobians(self, l: int) -> list[Tensor]:
        """``B_c^{(l)} = ∂z/∂h^{(l)}`` at the mean of class ``c`` (``K`` matrices ``K x d_l``).

        ``B^{(L+1)} = I_K``, ``B^{(l)} = B^{(l+1)} W_l D_l`` with ``D_l = diag(ReLU'(μ_c(H_l)))``
        (``D = I`` in the linear model and for ``l = 1``). The Hessian of ``W_l`` uses
        ``B^{(l+1)}``; in the linear model ``B_c^{(l)} = A^{(l)}`` for every class.
        """
        l = self._check(l, self.L + 1)
        Bs = [torch.eye(self.K, dtype=F64) for _ in range(self.K)]
        for k in range(self.L, l - 1, -1):
            D = self.mask(k)
            Bs = [B @ self.weights[k - 1] * D[:, c] for c, B in enumerate(Bs)]
        return Bs

    def input_jacobians(self, l: int) -> list[Tensor]:
        """``∂z/∂x^{(l)}`` for the input ``X_l`` of ``W_l`` at each class mean: ``B_c^{(l+1)} W_l`` (``l = 1..L``)."""
        l = self._check(l, self.L)
        return [B @ self.weights[l - 1] for B in self.jacobians(l + 1)]

    def residuals(self) -> Tensor:
        """``∂(per-sample loss)/∂z`` at each class mean, column ``c``: ``z̄_c - e_c`` (MSE) or ``p_c - e_c`` (CE)."""
        eye = torch.eye(self.K, dtype=F64)
        if self.loss == "ce":
            return torch.softmax(self.logits, dim=0) - eye
        return self.logits - eye

    def logit_hessians(self) -> list[Tensor] | None:
        """``Q_c = diag(p_c) - p_c p_c^T`` (CE) or ``None`` (MSE: ``Q_c = I``)."""
        if self.loss != "ce":
            return None
        P = torch.softmax(self.logits, dim=0)
        return [torch.diag(P[:, c]) - torch.outer(P[:, c], P[:, c]) for c in range(self.K)]


def class_mean_state(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, c0: float = 0.0, zero_tol: float = 0.0
) -> ClassMeanState:
    """Measure everything the (a) predictions need at ``params`` (float64 copy, CPU)."""
    c0 = _check_c0(c0)
    if isinstance(zero_tol, bool) or not isinstance(zero_tol, Real) or zero_tol < 0:
        raise ValueError(f"zero_tol must be a number >= 0; got {zero_tol!r}")
    tensors = [_f64(t) for t in (params.tensors() if isinstance(params, UFMParams) else params)]
    if len(tensors) != cfg.L + 1:
        raise ValueError(f"params must hold H_1 and L = {cfg.L} weight matrices; got {len(tensors)} tensors")
    fw = forward(tensors, cfg.activation)
    K = cfg.K
    inputs = tuple(_class_means(X, K) for X in fw.inputs)
    within = []
    for X, M in zip(fw.inputs, inputs):
        dev = X - M.repeat_interleave(cfg.n, dim=1)
        nx = float(torch.linalg.matrix_norm(X))
        within.append(float(torch.linalg.matrix_norm(dev)) / nx if nx > 0 else 0.0)
    return ClassMeanState(
        K=K,
        n=cfg.n,
        activation=cfg.activation,
        loss=cfg.loss,
        weights=tuple(tensors[1:]),
        inputs=inputs,
        preacts=tuple(_class_means(H, K) for H in fw.preacts),
        logits=_class_means(fw.logits, K),
        within=tuple(within),
        c0=c0,
        zero_tol=float(zero_tol),
    )


# ----------------------------------------------------------------------------- (a) from class means
def layer_hessian_from_means(
    M: Tensor,
    A: Tensor | Sequence[Tensor],
    *,
    Q: Sequence[Tensor] | None = None,
    out_frame: Tensor | None = None,
    rtol: float = RTOL,
) -> PredictedSpectrum:
    """Layer Hessian predicted from class means (R2, v1 Thm 4.1; R8 and R9 forms).

    ``Hess_l = (1/K) Σ_c (B_c^T Q_c B_c) ⊗ μ_c μ_c^T`` with ``M = [μ_1..μ_K]`` the class means
    of the input of ``W_l`` (``d_in x K``), ``A`` either ``A^{(l+1)}`` (``K x d_out``, linear)
    or the ``K`` class-wise Jacobians ``B_c^{(l+1)}`` (ReLU), ``Q`` the per-class logit
    Hessians (CE; default ``I_K``, MSE). For the linear MSE model with orthogonal class means
    and orthogonal rows ``a_c`` of ``A`` the result is the labelled form of digest §4.1:
    ``(||a_c||² ||μ_{c'}||²/K ; â_c ⊗ μ̂_{c'})``, labels ``(c, c')``; the K² values coincide at
    the global minimiser (``λ_{W_l} γ/(1-γ)``). ``out_frame`` (``d_out x m``) overrides the
    candidate output directions (default: the rows of the class-averaged ``A``). The bulk
    (everything else) is predicted to be 0.
    """
    rtol = _check_rtol(rtol)
    M = _check_matrix("M", M)
    K = M.shape[1]
    Bs = _class_wise("A", A, K)
    if Q is None:
        Rs = [B.T for B in Bs]
    else:
        Q = list(Q)
        if len(Q) != K:
            raise ValueError(f"Q must hold K = {K} matrices; got {len(Q)}")
        Rs = [B.T @ _psd_sqrt(_check_matrix(f"Q[{c}]", q, rows=K, cols=K)) for c, (B, q) in enumerate(zip(Bs, Q))]
    if out_frame is None:
        out_frame = torch.stack(Bs).mean(dim=0).T
        out_labels = list(range(K))
    else:
        out_frame = _check_matrix("out_frame", out_frame, rows=Bs[0].shape[1])
        out_labels = list(range(out_frame.shape[1]))
    return _class_block_spectrum(Rs, M, out_frame=out_frame, out_labels=out_labels, rtol=rtol, name="layer Hessian (class means)")


def _check_layer(cfg: UFMConfig, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= cfg.L:
        raise ValueError(f"layer must be an integer in 1..{cfg.L}; got {layer!r}")
    return layer


def layer_hessian_at(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int, *, c0: float = 0.0, zero_tol: float = 0.0,
    rtol: float = RTOL,
) -> PredictedSpectrum:
    """:func:`layer_hessian_from_means` with the class means measured at ``params``.

    Works for the linear and ReLU models (class-wise Jacobians with ``ReLU'(0) = c0``) and for
    MSE and CE (``Q_c`` from the class-mean logits). The output frame is the next layer's class
    means (logit directions ``e_c`` for ``W_L``), so at a DNC point labels read ``(c, c')``
    for ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}``.
    """
    layer = _check_layer(cfg, layer)
    st = class_mean_state(params, cfg, c0=c0, zero_tol=zero_tol)
    frame = torch.eye(cfg.K, dtype=F64) if layer == cfg.L else st.M(layer + 1)
    return layer_hessian_from_means(
        st.M(layer), st.jacobians(layer + 1), Q=st.logit_hessians(), out_frame=frame, rtol=rtol
    )


def gauss_newton_split_from_means(M: Tensor, A: Tensor | Sequence[Tensor], *, rtol: float = RTOL) -> GNSplitPrediction:
    """``G_class``, ``G_cross``, ``G_within`` of the MSE layer Hessian from class means (R3, v1 Thm 4.2).

    Jacobian rows ``v_{icc'} = b_{c,c'} ⊗ h_{ic}`` with ``b_{c,c'}`` row ``c'`` of ``B_c``
    (``A = A^{(l+1)}`` for every class in the linear model; class-wise Jacobians in the ReLU
    model). Under DNC1, with ``ā_c`` the mean row of ``B_c`` and ``B̄_c`` its centred rows,

    * ``G_class = Σ_c (ā_c ā_c^T) ⊗ μ_c μ_c^T``: eigenvectors ``ā ⊗ μ̂_c`` when all ``ā_c``
      are parallel (labels ``("G", c)``; at the optimum ``ā ∝ μ_G^{(l+1)}``);
    * ``G_cross = (1/K) Σ_c (B̄_c^T B̄_c) ⊗ μ_c μ_c^T``: eigenvectors ``e_j ⊗ μ̂_c`` for an
      orthonormal basis ``e_j`` of the centred rows (labels ``(j, c)``), which at the optimum
      spans the same space as ``μ_{c'}^{(l+1)} - μ_G^{(l+1)}``;
    * ``G_within = 0``.

    Unlabelled (index) eigenpairs are returned where these frames are not eigenvectors.
    """
    rtol = _check_rtol(rtol)
    M = _check_matrix("M", M)
    K = M.shape[1]
    Bs = _class_wise("A", A, K)
    abars = [B.mean(dim=0) for B in Bs]
    abar = torch.stack(abars).mean(dim=0)
    cls = _class_block_spectrum(
        [math.sqrt(K) * a[:, None] for a in abars], M, out_frame=abar[:, None], out_labels=["G"], rtol=rtol, name="G_class"
    )
    centred = [B - a for B, a in zip(Bs, abars)]
    U, S, _ = torch.linalg.svd(torch.cat(centred, dim=0).T, full_matrices=False)
    r = int((S > ZERO_RTOL * max(float(S.max()), 1e-300)).sum()) if S.numel() else 0
    cross = _class_block_spectrum(
        [Bc.T for Bc in centred], M, out_frame=U[:, :r], out_labels=list(range(r)), rtol=rtol, name="G_cross"
    )
    within = PredictedSpectrum(torch.zeros(0, dtype=F64), (), torch.zeros(cls.dim, 0, dtype=F64), (), 0.0, cls.dim, "G_within")
    return GNSplitPrediction(cls, cross, within)


def fit_gradient_from_means(
    M: Tensor, A: Tensor | Sequence[Tensor], residuals: Tensor, *, M_next: Tensor | None = None
) -> GradientPrediction:
    """Fit-term gradient of ``W_l`` from class means (R4, v1 Thm 4.3): ``(1/K) Σ_c B_c^T r_c μ_c^T``.

    ``r_c`` = column ``c`` of ``residuals`` (``z̄_c - e_c`` for MSE, see
    :meth:`ClassMeanState.residuals`). With ``M_next`` (class means of the output of ``W_l``;
    ``I_K`` for ``W_L``) the coefficient table ``c_{cc'}`` is returned too; at the global
    minimiser it is ``I_K/K`` (:func:`ufmlib.alignment.gradient_coefficients`).
    """
    M = _check_matrix("M", M)
    K = M.shape[1]
    Bs = _class_wise("A", A, K)
    R = _check_matrix("residuals", residuals, rows=K, cols=K)
    g = sum(torch.outer(B.T @ R[:, c], M[:, c]) for c, B in enumerate(Bs)) / K
    coeffs = None
    if M_next is not None:
        M_next = _check_matrix("M_next", M_next, rows=g.shape[0], cols=K)
        coeffs = gradient_coefficients(g, class_mean_kronecker_basis(M_next, M))
    return GradientPrediction(g, coeffs, None)


def weight_gram_from_means(
    M_this: Tensor, M_next: Tensor, *, side: Literal["right", "left"] = "right", rtol: float = RTOL
) -> PredictedSpectrum:
    """``W_l^T W_l`` (``side="right"``) or ``W_l W_l^T`` (``"left"``) from class means (R5, v1 Thm 4.4).

    Under DNC1 and DNC3 (``W_l`` maps ``μ_c^{(l)} ↦ μ_c^{(l+1)}`` and vanishes off
    ``span M_l``) ``W_l = M_{l+1} M_l^+``. With orthogonal frames the eigenpairs are
    ``(||μ_c^{(l+1)}||²/||μ_c^{(l)}||² ; μ̂_c^{(l)})`` (right) or ``(… ; μ̂_c^{(l+1)})`` (left),
    labels ``c``; otherwise exact eigenpairs of ``M_{l+1} M_l^+`` with index labels.
    For ``W_L`` pass the class-mean logits as ``M_next`` (``γ I_K`` at the optimum).
    """
    rtol = _check_rtol(rtol)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left'; got {side!r}")
    M_this = _check_matrix("M_this", M_this)
    K = M_this.shape[1]
    M_next = _check_matrix("M_next", M_next, cols=K)
    if _is_orthogonal(M_this, rtol) and _is_orthogonal(M_next, rtol):
        n0 = torch.linalg.vector_norm(M_this, dim=0)
        n1 = torch.linalg.vector_norm(M_next, dim=0)
        vals = (n1 / n0) ** 2
        V = _unit(M_this if side == "right" else M_next)
        return _group(vals, V, list(range(K)), rtol=rtol, dim=V.shape[0], name=f"W W^T ({side})" if side == "left" else "W^T W")
    W = M_next @ torch.linalg.pinv(M_this)
    F = W.T if side == "left" else W  # W^T W = F^T F with F = W; W W^T = F^T F with F = W^T
    w, V = _gram_eigh(F.T)
    return _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=F.shape[1], name="weight Gram (class means)")


def feature_singular_values_from_means(M: Tensor, n: int, *, rtol: float = RTOL) -> PredictedSpectrum:
    """Singular values of ``H_l = M_l ⊗ 1_n^T`` (DNC1): ``√n`` times those of ``M_l`` (R6).

    With orthogonal class means: ``√n ||μ_c||`` with left singular vectors ``μ̂_c`` (labels ``c``).
    """
    rtol = _check_rtol(rtol)
    n = _check_int("n", n, 1)
    M = _check_matrix("M", M)
    K = M.shape[1]
    if _is_orthogonal(M, rtol):
        vals = math.sqrt(n) * torch.linalg.vector_norm(M, dim=0)
        return _group(vals, _unit(M), list(range(K)), rtol=rtol, dim=min(M.shape[0], K * n), name="feature singular values", kind="singular values")
    U, S, _ = torch.linalg.svd(M, full_matrices=False)
    return _group(math.sqrt(n) * S, U, list(range(K)), rtol=rtol, dim=min(M.shape[0], K * n), name="feature singular values", kind="singular values")


def backprop_errors_from_means(
    A: Tensor | Sequence[Tensor], residuals: Tensor, n: int, *, rtol: float = RTOL
) -> PredictedSpectrum:
    """Singular values of the ``N x d`` back-propagated errors ``∂ℓ/∂x_{ic}`` (R6).

    ``A`` is ``∂z/∂x`` for the input ``x`` of ``W_l`` (``A^{(l)}``, ``K x d``; class-wise in
    the ReLU model). Under DNC1 the error of every sample of class ``c`` is
    ``e_c = B_c^T r_c / N`` (``N = Kn``), so the singular values are those of
    ``√n [e_1..e_K]``; vectors are the right singular vectors (``d``-dimensional), labels ``c``
    when the ``e_c`` are orthogonal. At the optimum: ``(1-γ)γ√n/(N ||μ^{(l)}||)`` (K-fold).
    """
    rtol = _check_rtol(rtol)
    n = _check_int("n", n, 1)
    R = _check_matrix("residuals", residuals)
    K = R.shape[1]
    Bs = _class_wise("A", A, K)
    N = K * n
    E = torch.stack([B.T @ R[:, c] for c, B in enumerate(Bs)], dim=1) * (math.sqrt(n) / N)
    if _is_orthogonal(E, rtol):
        return _group(torch.linalg.vector_norm(E, dim=0), _unit(E), list(range(K)), rtol=rtol, dim=min(N, E.shape[0]), name="back-propagated errors", kind="singular values")
    U, S, _ = torch.linalg.svd(E, full_matrices=False)
    return _group(S, U, list(range(S.shape[0])), rtol=rtol, dim=min(N, E.shape[0]), name="back-propagated errors", kind="singular values")


def gradient_moments_from_means(
    M: Tensor, A: Tensor | Sequence[Tensor], residuals: Tensor, *, rtol: float = RTOL
) -> tuple[PredictedSpectrum, PredictedSpectrum]:
    """Uncentred second moment and centred covariance of per-sample gradients of ``W_l`` (R6).

    Per-sample loss ``ℓ_i = ½||z_i - y_i||²`` (so that ``ℓ = Av_i ℓ_i``); under DNC1 every
    sample of class ``c`` has gradient ``g_c = (B_c^T r_c) ⊗ μ_c``. Second moment
    ``(1/K) Σ_c g_c g_c^T`` (eigenvectors ``ĝ_c``, labels ``(c, c)`` when orthogonal),
    covariance ``(1/K) Σ_c (g_c - ḡ)(g_c - ḡ)^T`` (rank ``K-1`` at the optimum, index labels).
    At the optimum both have the value ``γ(1-γ)λ_{W_l}``.
    """
    rtol = _check_rtol(rtol)
    M = _check_matrix("M", M)
    K = M.shape[1]
    Bs = _class_wise("A", A, K)
    R = _check_matrix("residuals", residuals, rows=K, cols=K)
    G = torch.stack([_kron(B.T @ R[:, c], M[:, c]) for c, B in enumerate(Bs)], dim=1) / math.sqrt(K)
    dim = G.shape[0]
    if _is_orthogonal(G, rtol):
        second = _group(torch.linalg.vector_norm(G, dim=0) ** 2, _unit(G), [(c, c) for c in range(K)], rtol=rtol, dim=dim, name="gradient second moment")
    else:
        w, V = _gram_eigh(G)
        second = _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=dim, name="gradient second moment")
    Gc = G - G.mean(dim=1, keepdim=True)
    w, V = _gram_eigh(Gc)
    cov = _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=dim, name="gradient covariance")
    return second, cov


def feature_hessian_from_means(A1: Tensor, N: int, *, with_vectors: bool = True, rtol: float = RTOL) -> PredictedSpectrum:
    """Hessian of ``ℓ`` w.r.t. ``H_1`` (row-major ``vec``, ``d x N``): ``(A^{(1)T} A^{(1)}) ⊗ I_N / N`` (R6).

    Exact at every point of the linear MSE model. Eigenvectors ``â_c ⊗ e_i`` (labels
    ``(c, i)``, ``i`` the sample) when the rows of ``A^{(1)}`` are orthogonal.
    """
    rtol = _check_rtol(rtol)
    N = _check_int("N", N, 1)
    A1 = _check_matrix("A1", A1)
    K, d = A1.shape
    if _is_orthogonal(A1.T, rtol):
        vals, P = torch.linalg.vector_norm(A1, dim=1) ** 2 / N, _unit(A1.T)
    else:
        w, P = _gram_eigh(A1.T)
        vals = w / N
    r = P.shape[1]
    vals = vals.repeat_interleave(N)
    labs = [(j, i) for j in range(r) for i in range(N)]
    V = _kron(P.repeat_interleave(N, dim=1), torch.eye(N, dtype=F64).repeat(1, r)) if with_vectors else None
    return _group(vals, V, labs if with_vectors else None, rtol=rtol, dim=d * N, name="Hessian w.r.t. H_1")


def ce_layer_hessian_from_means(
    M: Tensor, A: Tensor | Sequence[Tensor], logits: Tensor, *, rtol: float = RTOL
) -> PredictedSpectrum:
    """Cross-entropy layer Hessian from class means (R9, digest §4.9).

    ``Hess_l = (1/K) Σ_c (A^T Q_c A) ⊗ μ_c μ_c^T`` with ``Q_c = diag(p_c) - p_c p_c^T`` and
    ``p_c = softmax`` of the class-mean logits (column ``c`` of ``logits``).
    """
    logits = _check_matrix("logits", logits)
    K = logits.shape[1]
    P = torch.softmax(logits, dim=0)
    Q = [torch.diag(P[:, c]) - torch.outer(P[:, c], P[:, c]) for c in range(K)]
    return layer_hessian_from_means(M, A, Q=Q, rtol=rtol)


# ----------------------------------------------------------------------------- ReLU kink
def _check_c0(c0) -> float:
    if isinstance(c0, bool) or not isinstance(c0, Real) or not 0.0 <= float(c0) <= 1.0:
        raise ValueError(f"c0 must be a number in [0, 1]; got {c0!r}")
    return float(c0)


def relu_with_kink(c0: float) -> Callable[[Tensor], Tensor]:
    """A ReLU whose derivative at exactly 0 is ``c0`` (digest §4.7, pitfall 7).

    ``relu(x) = x * m(x)`` with ``m = 1[x > 0] + c0 1[x == 0]`` computed by comparisons, hence
    a constant for autograd and for ``torch.func`` transforms: the value is ``max(x, 0)``, the
    first derivative ``m(x)`` (``1``, ``c0``, ``0``) and the second derivative 0. ``c0 = 0`` is
    PyTorch's convention; ``c0 = ½`` the symmetric smoothing limit; ``c0 = 1`` the linear one.
    """
    c0 = _check_c0(c0)

    def relu(x: Tensor) -> Tensor:
        return x * ((x > 0).to(x.dtype) + c0 * (x == 0).to(x.dtype))

    return relu


def forward_with_kink(params: UFMParams | Sequence[Tensor], *, c0: float) -> Forward:
    """The ReLU forward pass of :func:`ufmlib.model.forward` with ``ReLU'(0) = c0``."""
    act = relu_with_kink(c0)
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    H1, Ws = tensors[0], tensors[1:]
    inputs, preacts, x = [H1], [H1], H1
    for W in Ws[:-1]:
        h = W @ x
        x = act(h)
        preacts.append(h)
        inputs.append(x)
    return Forward(tuple(inputs), tuple(preacts), Ws[-1] @ x)


def fit_loss_with_kink(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, c0: float) -> Tensor:
    """Fit term of the ReLU model with ``ReLU'(0) = c0`` (differentiable by ``torch.func``)."""
    Z = forward_with_kink(params, c0=c0).logits
    return fit_loss_from_logits(Z, labels(cfg, dtype=Z.dtype, device=Z.device), cfg.loss)


# ----------------------------------------------------------------------------- (b) closed form
def _require_optimum(cfg: UFMConfig) -> DNCOptimum:
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    opt = dnc_optimum(cfg)
    if not opt.is_global:
        raise NoDNCMinimiserError(
            f"no DNC minimiser: condition (2) fails (lhs {opt.condition_lhs:.6g} >= rhs "
            f"{opt.condition_rhs:.6g}), the global minimiser is zero (digest §3.2, pitfall 6)"
        )
    return opt


def _frames(cfg: UFMConfig, frames: str) -> list[Tensor]:
    """Unit class-mean frames ``U_1..U_{L+1}`` (``d x K``; ``U_{L+1} = I_K``) of the constructed minimiser."""
    # the unit frames do not depend on n (and condition (2) holding for n implies it for n = 1),
    # so build the minimiser with one sample per class: H_1 stays d x K
    params = construct_minimiser(cfg.replace(n=1, dtype="float64", device="cpu"), frames=frames)
    fw = forward(params, "linear")
    return [_unit(_class_means(X, cfg.K)) for X in fw.inputs] + [torch.eye(cfg.K, dtype=F64)]


def _layer_dim(cfg: UFMConfig, layer: int) -> int:
    return (cfg.K if layer == cfg.L else cfg.d) * cfg.d


def optimum_layer_hessian(
    cfg: UFMConfig, layer: int, *, frames: str | None = "canonical", regularised: bool = False
) -> PredictedSpectrum:
    """Closed-form layer Hessian at the global minimiser (R2, v1 Thm 4.1; digest T1).

    ``K²`` eigenvalues ``λ_out(l) = λ_{W_l} γ/(1-γ)`` with eigenvectors
    ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (labels ``(c, c')``; ``e_c`` for the logits), bulk 0.
    ``regularised=True`` adds the penalty (outliers ``λ/(1-γ)``, bulk ``λ``; pitfall 2).
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    K = cfg.K
    vectors = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        vectors = _kron(U[layer].repeat_interleave(K, dim=1), U[layer - 1].repeat(1, K))
        labs = tuple((c, cp) for c in range(K) for cp in range(K))
    out = PredictedSpectrum(
        torch.tensor([opt.layer_hessian_outlier[layer - 1]], dtype=F64), (K * K,), vectors, labs, 0.0,
        _layer_dim(cfg, layer), f"layer Hessian W_{layer} (optimum)",
    )
    return out.shifted(cfg.lambda_Ws[layer - 1]) if regularised else out


def optimum_gauss_newton_split(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> GNSplitPrediction:
    """Closed-form Gauss-Newton split at the global minimiser (R3, v1 Thm 4.2; digest T2).

    ``G_class``: ``K`` eigenvalues ``λ_out(l)``, eigenvectors ``μ̂_G^{(l+1)} ⊗ μ̂_c^{(l)}``
    (labels ``("G", c)``); ``G_cross``: ``K(K-1)`` eigenvalues ``λ_out(l)``, eigenvectors an
    orthonormal basis ``e_j`` of ``span{μ_{c'}^{(l+1)} - μ_G^{(l+1)}}`` times ``μ̂_c^{(l)}``
    (labels ``(j, c)``); ``G_within``: 0. The two ranges are orthogonal and together span the
    ``K²`` outlier space of R2.
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    K = cfg.K
    lam_out = torch.tensor([opt.layer_hessian_outlier[layer - 1]], dtype=F64)
    dim = _layer_dim(cfg, layer)
    vc = vx = lc = lx = None
    if frames is not None:
        U = _frames(cfg, frames)
        Un, Ut = U[layer], U[layer - 1]
        g = _unit(Un.mean(dim=1, keepdim=True))
        vc = _kron(g.repeat(1, K), Ut)
        lc = tuple(("G", c) for c in range(K))
        Uc, S, _ = torch.linalg.svd(Un - Un.mean(dim=1, keepdim=True), full_matrices=False)
        E = Uc[:, : K - 1]
        vx = _kron(E.repeat_interleave(K, dim=1), Ut.repeat(1, K - 1))
        lx = tuple((j, c) for j in range(K - 1) for c in range(K))
    cls = PredictedSpectrum(lam_out, (K,), vc, lc, 0.0, dim, f"G_class W_{layer} (optimum)")
    cross = PredictedSpectrum(lam_out, (K * (K - 1),), vx, lx, 0.0, dim, f"G_cross W_{layer} (optimum)")
    within = PredictedSpectrum(torch.zeros(0, dtype=F64), (), None, None, 0.0, dim, f"G_within W_{layer} (optimum)")
    return GNSplitPrediction(cls, cross, within)


def optimum_fit_gradient(cfg: UFMConfig, layer: int, *, frames: str = "canonical") -> GradientPrediction:
    """Closed-form fit-term gradient at the global minimiser (R4, v1 Thm 4.3; digest T3).

    ``∇_{W_l} ℓ = -(β/K) Σ_c μ_c^{(l+1)} μ_c^{(l)T}``, ``β = γ(1-γ)/||μ^{(l+1)}||²``
    (``||μ^{(L+1)}|| = γ``); it equals ``-λ_{W_l} W_l`` and its coefficient table in the
    normalised basis ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` is ``I_K/K``.
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    K = cfg.K
    norms = opt.feature_norms  # ||μ^{(1)}|| .. ||μ^{(L+1)}||
    beta = opt.gamma * opt.one_minus_gamma / norms[layer] ** 2
    U = _frames(cfg, frames)
    Mn, Mt = norms[layer] * U[layer], norms[layer - 1] * U[layer - 1]
    g = -(beta / K) * (Mn @ Mt.T)
    return GradientPrediction(g, torch.eye(K, dtype=F64) / K, beta)


def optimum_weight_gram(
    cfg: UFMConfig, layer: int, *, side: Literal["right", "left"] = "right", frames: str | None = "canonical"
) -> PredictedSpectrum:
    """Closed-form ``W_l^T W_l`` (right) or ``W_l W_l^T`` (left) at the minimiser (R5, v1 Thm 4.4; T4).

    ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` with eigenvectors ``μ̂_c^{(l)}`` (right) or
    ``μ̂_c^{(l+1)}`` (left; ``e_c`` for ``W_L``), the rest 0.
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left'; got {side!r}")
    K = cfg.K
    dim = cfg.d if side == "right" or layer < cfg.L else K
    V = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        V = U[layer - 1] if side == "right" else U[layer]
        labs = tuple(range(K))
    return PredictedSpectrum(
        torch.tensor([opt.gram_eigenvalue[layer - 1]], dtype=F64), (K,), V, labs, 0.0, dim,
        f"W_{layer}^T W_{layer}" if side == "right" else f"W_{layer} W_{layer}^T",
    )


def optimum_feature_singular_values(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> PredictedSpectrum:
    """Singular values of the features ``H_l`` (``l = 1..L+1``; ``L+1`` = logits) at the minimiser (R6).

    ``K`` singular values ``√n ||μ^{(l)}||`` with left singular vectors ``μ̂_c^{(l)}``.
    """
    opt = _require_optimum(cfg)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= cfg.L + 1:
        raise ValueError(f"layer must be an integer in 1..{cfg.L + 1}; got {layer!r}")
    K = cfg.K
    V = labs = None
    if frames is not None:
        V, labs = _frames(cfg, frames)[layer - 1], tuple(range(K))
    rows = cfg.d if layer <= cfg.L else K
    return PredictedSpectrum(
        torch.tensor([math.sqrt(cfg.n) * opt.feature_norms[layer - 1]], dtype=F64), (K,), V, labs, 0.0,
        min(rows, cfg.N), f"singular values of H_{layer}", kind="singular values",
    )


def optimum_backprop_singular_values(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> PredictedSpectrum:
    """Singular values of the back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}`` (``N x d``) at the minimiser (R6; T5).

    ``K`` singular values ``(1-γ)γ√n/(N ||μ^{(l)}||)``; right singular vectors ``μ̂_c^{(l)}``
    (the error of class ``c`` is ``-(1-γ)a_c^{(l)}/N``, ``a_c^{(l)} ∝ μ_c^{(l)}``).
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    K = cfg.K
    V = labs = None
    if frames is not None:
        V, labs = _frames(cfg, frames)[layer - 1], tuple(range(K))
    val = opt.one_minus_gamma * opt.gamma * math.sqrt(cfg.n) / (cfg.N * opt.feature_norms[layer - 1])
    return PredictedSpectrum(
        torch.tensor([val], dtype=F64), (K,), V, labs, 0.0, min(cfg.d, cfg.N),
        f"back-propagated errors at the input of W_{layer}", kind="singular values",
    )


def optimum_gradient_moments(
    cfg: UFMConfig, layer: int, *, frames: str | None = "canonical"
) -> tuple[PredictedSpectrum, PredictedSpectrum]:
    """Per-sample gradient second moment and covariance of ``W_l`` at the minimiser (R6; T5).

    Second moment: ``K`` eigenvalues ``γ(1-γ)λ_{W_l}``, eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}``
    (labels ``(c, c)``). Covariance: ``K-1`` eigenvalues ``γ(1-γ)λ_{W_l}``, eigenvectors an
    orthonormal basis of the centred span of those ``K`` vectors (index labels).
    """
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    K = cfg.K
    val = torch.tensor([opt.gamma * opt.one_minus_gamma * cfg.lambda_Ws[layer - 1]], dtype=F64)
    dim = _layer_dim(cfg, layer)
    V2 = Vc = l2 = lc = None
    if frames is not None:
        U = _frames(cfg, frames)
        V2 = _kron(U[layer], U[layer - 1])
        l2 = tuple((c, c) for c in range(K))
        Q, _, _ = torch.linalg.svd(V2 - V2.mean(dim=1, keepdim=True), full_matrices=False)
        Vc, lc = Q[:, : K - 1], tuple(range(K - 1))
    return (
        PredictedSpectrum(val, (K,), V2, l2, 0.0, dim, f"gradient second moment W_{layer}"),
        PredictedSpectrum(val, (K - 1,), Vc, lc, 0.0, dim, f"gradient covariance W_{layer}"),
    )


def optimum_feature_hessian(cfg: UFMConfig, *, frames: str | None = "canonical") -> PredictedSpectrum:
    """Hessian w.r.t. ``H_1`` at the minimiser (R6): ``K²n`` eigenvalues ``λ_H γ/(1-γ)``.

    Eigenvectors ``μ̂_c^{(1)} ⊗ e_i`` (row-major ``vec`` of the ``d x N`` matrix with column
    ``i`` equal to ``μ̂_c^{(1)}``), labels ``(c, i)``.
    """
    opt = _require_optimum(cfg)
    K, N = cfg.K, cfg.N
    V = labs = None
    if frames is not None:
        U1 = _frames(cfg, frames)[0]
        eye = torch.eye(N, dtype=F64)
        V = _kron(U1.repeat_interleave(N, dim=1), eye.repeat(1, K))
        labs = tuple((c, i) for c in range(K) for i in range(N))
    return PredictedSpectrum(
        torch.tensor([opt.feature_hessian_outlier], dtype=F64), (K * N,), V, labs, 0.0, cfg.d * N,
        "Hessian w.r.t. H_1 (optimum)",
    )


def _chain_lambdas(cfg: UFMConfig, include_H: bool) -> list[float]:
    return ([cfg.lambda_H] if include_H else []) + list(cfg.lambda_Ws)


def full_hessian_bulk_multiplicities(K: int, L: int, d: int, n: int = 1, *, include_H: bool = False) -> dict[str, int]:
    """Multiplicities of ``+λ``, ``-λ``, ``0`` (and ``λ_Hγ/(1-γ)``) in the full Hessian (R7, common λ).

    Derived in :func:`optimum_full_hessian` (``m = L`` factors, ``m = L+1`` with ``H_1``):

    * ``+λ``: ``(m-1) K(d-K) + (m-1) K(K+1)/2``;  ``-λ``: ``(m-1) K(d-K) + (m-1) K(K-1)/2``;
    * ``0``: ``(L-1)(d-K)²`` plus ``K(d-K)`` (weights only) or ``(d-K)(N-K)`` (with ``H_1``);
    * ``λ_Hγ/(1-γ)``: ``K(N-K) = K²(n-1)`` (with ``H_1`` only).

    T6 (K=4, L=4, d=6, weights only): ``+λ ×54, 0 ×20, -λ ×42``.
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
) -> PredictedSpectrum:
    """The whole spectrum of the full fit-term Hessian at the global minimiser (R7, digest §5; T6).

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
    rtol = _check_rtol(rtol)
    K, L, d, N = cfg.K, cfg.L, cfg.d, cfg.N
    g, u = opt.gamma, opt.one_minus_gamma
    lams = torch.tensor(_chain_lambdas(cfg, include_H), dtype=F64)
    m = lams.shape[0]
    v = torch.sqrt(lams)
    S = torch.diag(lams) + ((2 * g - 1) / u) * torch.outer(v, v)
    Amat = torch.outer(v, v) / u - torch.diag(lams)
    wS, VS = torch.linalg.eigh(S)
    wA, VA = torch.linalg.eigh(Amat)
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
    return PredictedSpectrum(
        torch.tensor([lev[0] for lev in levels], dtype=F64), tuple(int(lev[1]) for lev in levels),
        vectors, labs, 0.0, dim, name, n_outliers=K * K,
    )


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


def optimum_full_gauss_newton(cfg: UFMConfig, *, include_H: bool = False, frames: str | None = None) -> PredictedSpectrum:
    """Gauss-Newton part ``J^T J/N`` of the full fit-term Hessian at the minimiser (R7, digest §5 item 2).

    Every factor's Jacobian maps onto the same ``K²``-dimensional space of class-constant logit
    perturbations, so ``G`` has ``K²`` eigenvalues ``Σ_l λ_out(l) = (γ/(1-γ)) Σ_l λ_{W_l}``
    (plus ``λ_H γ/(1-γ)`` with ``H_1``) with eigenvectors the stacks
    ``Σ_k √λ_k vec(U_{k+1} E_{cc'} U_k^T)/||√λ||`` (equal weights for a common λ; labels
    ``(c, c')`` for ``E_{cc'} = e_c e_{c'}^T``); with ``H_1`` also ``K(N-K) = K²(n-1)``
    eigenvalues ``λ_H γ/(1-γ)`` (within-class directions of ``H_1``); the rest 0.
    T6 (K=4, L=4, d=6): ``0.7377079 ×16``.
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
    return PredictedSpectrum(torch.tensor(values, dtype=F64), tuple(mults), vectors, labs, 0.0, dim, name, n_outliers=K * K)


def relu_optimum_layer_hessian(
    cfg: UFMConfig, layer: int, *, c0: float, frames: str | None = "nonnegative"
) -> PredictedSpectrum:
    """Layer Hessian of the ReLU model at the exact non-negative DNC optimum (R8, digest §4.7; T8).

    With ``ReLU'(0) = c0`` and ``r_l = L - l`` ReLUs between the output of ``W_l`` and the
    logits: ``K`` eigenvalues ``λ_out(l)`` (eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}``, the R4
    gradient directions) and ``K(K-1)`` eigenvalues ``c0^{2 r_l} λ_out(l)`` (``c ≠ c'``;
    ``0^0 = 1`` for ``l = L``), the rest 0. ``c0 = 1`` gives the linear ``K²`` picture,
    ``c0 = 0`` only ``K`` outliers. The class means must have disjoint non-negative supports
    (``frames="nonnegative"`` or ``"canonical"``); this is the point the ReLU model shares with
    the linear one.
    """
    c0 = _check_c0(c0)
    opt = _require_optimum(cfg)
    layer = _check_layer(cfg, layer)
    if frames not in (None, "nonnegative", "canonical"):
        raise ValueError(f"frames must be 'nonnegative', 'canonical' or None for the ReLU optimum; got {frames!r}")
    K, r = cfg.K, cfg.L - layer
    lam = opt.layer_hessian_outlier[layer - 1]
    low = lam * (c0 ** (2 * r) if r > 0 else 1.0)
    pairs_diag = [(c, c) for c in range(K)]
    pairs_off = [(c, cp) for c in range(K) for cp in range(K) if c != cp]
    if low == lam:
        values, mults, pairs = [lam], [K * K], pairs_diag + pairs_off
    elif low == 0.0:
        values, mults, pairs = [lam], [K], pairs_diag
    else:
        values, mults, pairs = [lam, low], [K, K * (K - 1)], pairs_diag + pairs_off
    vectors = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        vectors = torch.stack([_kron(U[layer][:, c], U[layer - 1][:, cp]) for c, cp in pairs], dim=1)
        labs = tuple(pairs)
    return PredictedSpectrum(
        torch.tensor(values, dtype=F64), tuple(mults), vectors, labs, 0.0, _layer_dim(cfg, layer),
        f"ReLU layer Hessian W_{layer}, ReLU'(0)={c0:g} (optimum)",
    )


def ce_critical_layer_hessian(cfg: UFMConfig, layer: int, *, frames: str | None = None) -> PredictedSpectrum:
    """Closed-form CE layer Hessian at the DNC critical point (R9, digest §4.9; T9).

    One common ``λ = λ_W = λ_H``; ``α`` from :func:`ufmlib.optimum.ce_critical_point`. With
    ``p = e^α/(e^α+K-1)``, ``q = 1/(e^α+K-1)``, ``δ = p - q`` and
    ``κ = (α√n)^{2L/(L+1)}/(nK)`` (the same for every layer), the layer Hessian has rank
    ``(K-1)²`` and three levels

    * ``κ(q + δ(1-δ)(K-1)/K)`` ×1,
    * ``κ(q + δ(1-δ)(K-2)/K)`` ×(K-1),
    * ``κ q`` ×(K²-3K+1)

    (``K = 2``: the single value ``κ(q + δ(1-δ)/2)``). Derivation: on ``1^⊥ ⊗ 1^⊥`` the matrix
    is ``κ Σ_c Q_c ⊗ f_c f_c^T`` with ``f_c = (I - 11^T/K) e_c`` and
    ``(I - 11^T/K) Q_c (I - 11^T/K) = q I + δ(1-δ) f_c f_c^T``; the Gram matrix of the
    ``f_c ⊗ f_c`` is ``(1-2/K) I + 11^T/K²``. ``frames`` adds eigenvectors computed from the
    class means of :func:`ufmlib.optimum.construct_ce_critical_point`.
    """
    layer = _check_layer(cfg, layer)
    lams = set(cfg.lambda_Ws) | {cfg.lambda_H}
    if len(lams) != 1:
        raise ConfigError("lambda_W", "equal to lambda_H in every layer for the CE critical point", cfg.lambda_W)
    K, n, L = cfg.K, cfg.n, cfg.L
    cp = ce_critical_point(K, n, L, cfg.lambda_H)
    if cp is None:
        raise NoDNCMinimiserError("no CE DNC critical point exists for this λ (digest §4.9)")
    a = cp.alpha
    denom = math.exp(a) + K - 1
    p, q = math.exp(a) / denom, 1.0 / denom
    dl = p - q
    kappa = (a * math.sqrt(n)) ** (2 * L / (L + 1)) / (n * K)
    if K == 2:
        values, mults = [kappa * (q + dl * (1 - dl) / 2)], [1]
    else:
        values = [kappa * (q + dl * (1 - dl) * (K - 1) / K), kappa * (q + dl * (1 - dl) * (K - 2) / K), kappa * q]
        mults = [1, K - 1, K * K - 3 * K + 1]
    vectors = labs = None
    if frames is not None:
        params = construct_ce_critical_point(cfg.replace(dtype="float64", device="cpu", loss="ce"), frames=frames)
        got = layer_hessian_at(params, cfg.replace(loss="ce", activation="linear"), layer, rtol=1e-6)
        if got.multiplicities != tuple(mults):
            raise RuntimeError(f"eigenvectors at the constructed point have multiplicities {got.multiplicities}, expected {tuple(mults)}")
        vectors, labs = got.vectors, got.labels
    return PredictedSpectrum(
        torch.tensor(values, dtype=F64), tuple(mults), vectors, labs, 0.0, _layer_dim(cfg, layer),
        f"CE layer Hessian W_{layer} (DNC critical point, alpha={a:.6g})",
    )


# ----------------------------------------------------------------------------- all numbers
def predict_all(cfg: UFMConfig) -> dict:
    """Every closed-form number for ``cfg`` as plain Python (JSON-friendly; used by ``ufm predict``).

    Keys: ``condition_holds``, ``message`` (if it fails), ``gamma``, ``layers`` (per layer:
    ``layer_hessian`` outlier/multiplicity/dim and the regularised values, ``gauss_newton``
    class/cross/within, ``fit_gradient`` β, norm and coefficient table, ``weight_gram``,
    ``feature_singular_value``, ``backprop_singular_value``, ``gradient_moment``,
    ``relu_kink`` levels at ``c0 ∈ {0, ½, 1}``), ``feature_hessian``,
    ``full_hessian_weights`` and ``full_hessian_all_params`` (levels with multiplicities) and,
    for one common λ, ``ce_critical_point`` (``alpha`` and the three levels) when it exists.
    """
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    opt = dnc_optimum(cfg)
    out: dict = {"condition_holds": bool(opt.is_global)}
    if not opt.is_global:
        out["message"] = (
            "no DNC minimiser: condition (2) fails and the global minimiser is zero (loss 1/2); "
            "no spectrum is predicted"
        )
    else:
        K = cfg.K
        out["gamma"] = opt.gamma
        layers = []
        for l in range(1, cfg.L + 1):
            lam = cfg.lambda_Ws[l - 1]
            hess = opt.layer_hessian_outlier[l - 1]
            s_l = opt.weight_singular_values[l - 1]
            second, cov = optimum_gradient_moments(cfg, l, frames=None)
            r = cfg.L - l
            layers.append({
                "layer": l,
                "layer_hessian": {"outlier": hess, "multiplicity": K * K, "bulk": 0.0, "dim": _layer_dim(cfg, l),
                                  "regularised_outlier": hess + lam, "regularised_bulk": lam},
                "gauss_newton": {"class": {"value": hess, "multiplicity": K},
                                 "cross": {"value": hess, "multiplicity": K * (K - 1)},
                                 "within": {"value": 0.0, "multiplicity": 0}},
                "fit_gradient": {"beta": opt.gamma * opt.one_minus_gamma / opt.feature_norms[l] ** 2,
                                 "norm": opt.gamma * opt.one_minus_gamma / (math.sqrt(K) * s_l),  # = λ_l ||W_l||_F
                                 "coefficients_diagonal": 1.0 / K, "coefficients_off_diagonal": 0.0},
                "weight_gram": {"value": opt.gram_eigenvalue[l - 1], "multiplicity": K},
                "weight_singular_value": opt.weight_singular_values[l - 1],
                "feature_singular_value": math.sqrt(cfg.n) * opt.feature_norms[l - 1],
                "backprop_singular_value": float(optimum_backprop_singular_values(cfg, l, frames=None).values[0]),
                "gradient_second_moment": {"value": float(second.values[0]), "multiplicity": K},
                "gradient_covariance": {"value": float(cov.values[0]), "multiplicity": K - 1},
                "relu_kink": {"relus_after": r, "class_value": hess,
                              "cross_value": {"c0=0": hess * (0.0 if r else 1.0), "c0=0.5": hess * 0.25 ** r, "c0=1": hess},
                              "cross_multiplicity": K * (K - 1)},
            })
        out["layers"] = layers
        out["feature_hessian"] = {"value": opt.feature_hessian_outlier, "multiplicity": K * cfg.N}
        for key, inc in (("full_hessian_weights", False), ("full_hessian_all_params", True)):
            spec = optimum_full_hessian(cfg, include_H=inc)
            out[key] = {"levels": spec.as_dict()["levels"], "n_outliers": spec.n_outliers, "dim": spec.dim}
            gn = optimum_full_gauss_newton(cfg, include_H=inc)
            out[key]["gauss_newton_levels"] = gn.as_dict()["levels"]
    lams = set(cfg.lambda_Ws) | {cfg.lambda_H}
    if len(lams) == 1 and cfg.K >= 2:
        cp = ce_critical_point(cfg.K, cfg.n, cfg.L, cfg.lambda_H)
        if cp is not None:
            spec = ce_critical_layer_hessian(cfg, 1)
            out["ce_critical_point"] = {"alpha": cp.alpha, "layer_hessian": spec.as_dict()["levels"]}
    return out
