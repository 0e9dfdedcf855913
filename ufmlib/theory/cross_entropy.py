"""The cross-entropy deep linear UFM at its DNC critical point (R9): the layer Hessian.

With one common weight decay ``λ = λ_W = λ_H`` the cross-entropy loss has a DNC critical point
whose logits are ``α S ⊗ 1_n^T`` (``S = I - 11^T/K``, :func:`ufmlib.optimum.ce_critical_point`);
its layer Hessian has rank ``(K-1)²`` and three levels. The derivation is the companion's own
(in :func:`ce_critical_layer_hessian`); the class-mean form of the same Hessian at any point is
:func:`ufmlib.theory.layer_hessian_at` with a cross-entropy configuration.
"""

from __future__ import annotations

import math

import torch

from ..config import UFMConfig
from ..optimum import NoDNCMinimiserError, ce_critical_point, construct_ce_critical_point
from ..spectrum import Spectrum
from ..validation import ConfigError, check_layer
from ._blocks import F64, _layer_dim
from .class_means import layer_hessian_at

__all__ = ["ce_critical_layer_hessian", "ce_critical_directions"]


def ce_critical_layer_hessian(cfg: UFMConfig, layer: int, *, frames: str | None = None) -> Spectrum:
    """Closed-form CE layer Hessian at the DNC critical point (R9; the derivation is below).

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
    layer = check_layer(layer, cfg.L)
    lams = set(cfg.lambda_Ws) | {cfg.lambda_H}
    if len(lams) != 1:
        raise ConfigError("lambda_W", "equal to lambda_H in every layer for the CE critical point", cfg.lambda_W)
    K, n, L = cfg.K, cfg.n, cfg.L
    cp = ce_critical_point(K, n, L, cfg.lambda_H)
    if cp is None:
        raise NoDNCMinimiserError(f"no cross-entropy DNC critical point exists for lambda = {cfg.lambda_H:g}")
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
            raise RuntimeError(f"eigenvectors at the constructed point have multiplicities {got.multiplicities}, "
                               f"expected {tuple(mults)}")
        vectors, labs = got.eigenvectors, got.labels
    return Spectrum.from_levels(
        torch.tensor(values, dtype=F64), mults, vectors=vectors, labels=labs, bulk_value=0.0,
        dim=_layer_dim(cfg, layer), name=f"CE layer Hessian W_{layer} (DNC critical point, alpha={a:.6g})",
    )


def ce_critical_directions(params, cfg: UFMConfig, layer: int) -> torch.Tensor:
    """The ``K`` class directions ``a_c ⊗ μ^{(l)}_c`` of the CE layer Hessian at a DNC point (R9 (b)).

    Columns of the returned ``(d_out d_in) x K`` matrix (float64, CPU; row-major vec), with
    ``a_c = A^{(l+1)T} f_c``, ``f_c = (I - 11^T/K) e_c`` and ``μ^{(l)}_c`` the class means of the
    input of ``W_l``, computed from ``params`` (parameters or a :class:`ufmlib.state.UFMState`).
    At the CE DNC critical point (:func:`ufmlib.optimum.construct_ce_critical_point`) they span
    the top-``K`` eigenspace of the layer Hessian and their sum is its top eigenvector
    (:func:`ce_critical_layer_hessian`; the companion's derivation, book appendix, label
    ``sources-r9``). They are evaluated from the point's class means, not from the closed form.
    """
    from ..state import state_of

    layer = check_layer(layer, cfg.L)
    st = state_of(params, cfg).cpu64()
    K = st.cfg.K
    S = torch.eye(K, dtype=F64) - 1.0 / K
    A, M = st.A(layer + 1), st.M(layer)
    return torch.stack([torch.kron(A.T @ S[:, c], M[:, c]) for c in range(K)], dim=1)
