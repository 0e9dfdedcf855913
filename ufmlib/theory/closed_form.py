"""Closed forms at the global minimiser of the deep linear MSE UFM (R2-R6; v1 Thms 4.1-4.4).

Every function takes a :class:`ufmlib.config.UFMConfig` whose condition (2) holds (else
:class:`ufmlib.optimum.NoDNCMinimiserError`: the global minimiser is zero and has no DNC
spectrum) and returns the prediction built from :func:`ufmlib.optimum.dnc_optimum` alone, never
from a measured point. Eigenvectors are built from the class frames of
:func:`ufmlib.optimum.construct_minimiser` (``frames=`` the same keyword; ``frames=None`` skips
them); the spectra themselves do not depend on the frames, since any rotation of a minimiser is
a minimiser. All matrices are of the **fit term** (v1 Eq. (1)); :meth:`ufmlib.spectrum.Spectrum.shifted`
adds the penalty. Vectors are row-major vecs (``vec(a b^T) = a ⊗ b``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..config import UFMConfig
from ..spectrum import Spectrum
from ..validation import check_layer
from ._blocks import F64, _frames, _kron, _layer_dim, _require_optimum, _unit

__all__ = [
    "GNSplitPrediction",
    "GradientPrediction",
    "optimum_layer_hessian",
    "optimum_gauss_newton_split",
    "optimum_fit_gradient",
    "optimum_weight_gram",
    "optimum_feature_singular_values",
    "optimum_backprop_singular_values",
    "optimum_gradient_moments",
    "optimum_feature_hessian",
]


@dataclass(frozen=True, eq=False)
class GNSplitPrediction:
    """Predicted ``G_class``, ``G_cross``, ``G_within`` of a layer Hessian (R3, v1 Thm 4.2)."""

    class_: Spectrum
    cross: Spectrum
    within: Spectrum


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


def optimum_layer_hessian(
    cfg: UFMConfig, layer: int, *, frames: str | None = "canonical", regularised: bool = False
) -> Spectrum:
    """Closed-form layer Hessian at the global minimiser (R2, v1 Thm 4.1).

    ``K²`` eigenvalues ``λ_out(l) = λ_{W_l} γ/(1-γ)`` with eigenvectors
    ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (labels ``(c, c')``; ``e_c`` for the logits), bulk 0.
    ``regularised=True`` adds the penalty (outliers ``λ/(1-γ)``, bulk ``λ``): the Hessian of the
    regularised loss rather than of the fit term the theorem is about.
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
    K = cfg.K
    vectors = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        vectors = _kron(U[layer].repeat_interleave(K, dim=1), U[layer - 1].repeat(1, K))
        labs = tuple((c, cp) for c in range(K) for cp in range(K))
    out = Spectrum.from_levels(
        torch.tensor([opt.layer_hessian_outlier[layer - 1]], dtype=F64),
        (K * K,),
        vectors=vectors,
        labels=labs,
        bulk_value=0.0,
        dim=_layer_dim(cfg, layer),
        name=f"layer Hessian W_{layer} (optimum)",
    )
    return out.shifted(cfg.lambda_Ws[layer - 1]) if regularised else out


def optimum_gauss_newton_split(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> GNSplitPrediction:
    """Closed-form Gauss-Newton split at the global minimiser (R3, v1 Thm 4.2).

    ``G_class``: ``K`` eigenvalues ``λ_out(l)``, eigenvectors ``μ̂_G^{(l+1)} ⊗ μ̂_c^{(l)}``
    (labels ``("G", c)``); ``G_cross``: ``K(K-1)`` eigenvalues ``λ_out(l)``, eigenvectors an
    orthonormal basis ``e_j`` of ``span{μ_{c'}^{(l+1)} - μ_G^{(l+1)}}`` times ``μ̂_c^{(l)}``
    (labels ``(j, c)``); ``G_within``: 0. The two ranges are orthogonal and together span the
    ``K²`` outlier space of R2.
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
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
    cls = Spectrum.from_levels(
        lam_out, (K,), vectors=vc, labels=lc, bulk_value=0.0, dim=dim, name=f"G_class W_{layer} (optimum)"
    )
    cross = Spectrum.from_levels(
        lam_out, (K * (K - 1),), vectors=vx, labels=lx, bulk_value=0.0, dim=dim, name=f"G_cross W_{layer} (optimum)"
    )
    within = Spectrum.from_levels(
        torch.zeros(0, dtype=F64),
        (),
        vectors=None,
        labels=None,
        bulk_value=0.0,
        dim=dim,
        name=f"G_within W_{layer} (optimum)",
    )
    return GNSplitPrediction(cls, cross, within)


def optimum_fit_gradient(cfg: UFMConfig, layer: int, *, frames: str = "canonical") -> GradientPrediction:
    """Closed-form fit-term gradient at the global minimiser (R4, v1 Thm 4.3).

    ``∇_{W_l} ℓ = -(β/K) Σ_c μ_c^{(l+1)} μ_c^{(l)T}``, ``β = γ(1-γ)/||μ^{(l+1)}||²``
    (``||μ^{(L+1)}|| = γ``); it equals ``-λ_{W_l} W_l`` and its coefficient table in the
    normalised basis ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` is ``I_K/K``.
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
    K = cfg.K
    norms = opt.feature_norms  # ||μ^{(1)}|| .. ||μ^{(L+1)}||
    beta = opt.gamma * opt.one_minus_gamma / norms[layer] ** 2
    U = _frames(cfg, frames)
    Mn, Mt = norms[layer] * U[layer], norms[layer - 1] * U[layer - 1]
    g = -(beta / K) * (Mn @ Mt.T)
    return GradientPrediction(g, torch.eye(K, dtype=F64) / K, beta)


def optimum_weight_gram(
    cfg: UFMConfig, layer: int, *, side: Literal["right", "left"] = "right", frames: str | None = "canonical"
) -> Spectrum:
    """Closed-form ``W_l^T W_l`` (right) or ``W_l W_l^T`` (left) at the minimiser (R5, v1 Thm 4.4).

    ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` with eigenvectors ``μ̂_c^{(l)}`` (right) or
    ``μ̂_c^{(l+1)}`` (left; ``e_c`` for ``W_L``), the rest 0.
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left'; got {side!r}")
    K = cfg.K
    dim = cfg.d if side == "right" or layer < cfg.L else K
    V = labs = None
    if frames is not None:
        U = _frames(cfg, frames)
        V = U[layer - 1] if side == "right" else U[layer]
        labs = tuple(range(K))
    return Spectrum.from_levels(
        torch.tensor([opt.gram_eigenvalue[layer - 1]], dtype=F64),
        (K,),
        vectors=V,
        labels=labs,
        bulk_value=0.0,
        dim=dim,
        name=f"W_{layer}^T W_{layer}" if side == "right" else f"W_{layer} W_{layer}^T",
    )


def optimum_feature_singular_values(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> Spectrum:
    """Singular values of the features ``H_l`` (``l = 1..L+1``; ``L+1`` = logits) at the minimiser (R6).

    ``K`` singular values ``√n ||μ^{(l)}||`` with left singular vectors ``μ̂_c^{(l)}``.
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L + 1)
    K = cfg.K
    V = labs = None
    if frames is not None:
        V, labs = _frames(cfg, frames)[layer - 1], tuple(range(K))
    rows = cfg.d if layer <= cfg.L else K
    return Spectrum.from_levels(
        torch.tensor([math.sqrt(cfg.n) * opt.feature_norms[layer - 1]], dtype=F64),
        (K,),
        vectors=V,
        labels=labs,
        bulk_value=0.0,
        dim=min(rows, cfg.N),
        name=f"singular values of H_{layer}",
        kind="singular values",
    )


def optimum_backprop_singular_values(cfg: UFMConfig, layer: int, *, frames: str | None = "canonical") -> Spectrum:
    """Singular values of the back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}`` (``N x d``) at the minimiser (R6).

    ``K`` singular values ``(1-γ)γ√n/(N ||μ^{(l)}||)``; right singular vectors ``μ̂_c^{(l)}``
    (the error of class ``c`` is ``-(1-γ)a_c^{(l)}/N``, ``a_c^{(l)} ∝ μ_c^{(l)}``).
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
    K = cfg.K
    V = labs = None
    if frames is not None:
        V, labs = _frames(cfg, frames)[layer - 1], tuple(range(K))
    val = opt.one_minus_gamma * opt.gamma * math.sqrt(cfg.n) / (cfg.N * opt.feature_norms[layer - 1])
    return Spectrum.from_levels(
        torch.tensor([val], dtype=F64),
        (K,),
        vectors=V,
        labels=labs,
        bulk_value=0.0,
        dim=min(cfg.d, cfg.N),
        name=f"back-propagated errors at the input of W_{layer}",
        kind="singular values",
    )


def optimum_gradient_moments(
    cfg: UFMConfig, layer: int, *, frames: str | None = "canonical"
) -> tuple[Spectrum, Spectrum]:
    """Per-sample gradient second moment and covariance of ``W_l`` at the minimiser (R6).

    Second moment: ``K`` eigenvalues ``γ(1-γ)λ_{W_l}``, eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}``
    (labels ``(c, c)``). Covariance: ``K-1`` eigenvalues ``γ(1-γ)λ_{W_l}``, eigenvectors an
    orthonormal basis of the centred span of those ``K`` vectors (index labels).
    """
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
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
        Spectrum.from_levels(
            val, (K,), vectors=V2, labels=l2, bulk_value=0.0, dim=dim, name=f"gradient second moment W_{layer}"
        ),
        Spectrum.from_levels(
            val, (K - 1,), vectors=Vc, labels=lc, bulk_value=0.0, dim=dim, name=f"gradient covariance W_{layer}"
        ),
    )


def optimum_feature_hessian(cfg: UFMConfig, *, frames: str | None = "canonical") -> Spectrum:
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
    return Spectrum.from_levels(
        torch.tensor([opt.feature_hessian_outlier], dtype=F64),
        (K * N,),
        vectors=V,
        labels=labs,
        bulk_value=0.0,
        dim=cfg.d * N,
        name="Hessian w.r.t. H_1 (optimum)",
    )
