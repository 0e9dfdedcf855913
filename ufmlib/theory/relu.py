"""The ReLU deep UFM at its non-negative DNC optimum (R8): the layer Hessian and the kink.

Among deep-neural-collapse solutions the global optima of the ReLU model have non-negative
class means with disjoint supports and coincide with the global minimiser of the linear model
(R8; v2 Thm 8 as described in the public ICLR-2025 reviews). At such a point every
pre-activation outside the class supports is exactly 0, on the ReLU's kink, so the layer
Hessian depends on the convention ``ReLU'(0) = c0`` (:func:`ufmlib.model.relu_derivative`);
the forward pass with that convention is :func:`ufmlib.model.forward` with
``relu_prime_at_zero=c0``.
"""

from __future__ import annotations

import torch

from ..config import UFMConfig
from ..spectrum import Spectrum
from ..validation import check_c0, check_layer
from ._blocks import F64, _frames, _kron, _layer_dim, _require_optimum

__all__ = ["relu_kink_levels", "relu_optimum_layer_hessian"]


def relu_kink_levels(cfg: UFMConfig, layer: int, *, c0: float) -> tuple[float, float]:
    """``(λ_out(l), c0^{2 r_l} λ_out(l))``: the class level (``K``-fold) and the cross level
    (``K(K-1)``-fold) of the ReLU layer Hessian at the optimum, ``r_l = L - l`` (``0^0 = 1``)."""
    c0 = check_c0(c0, name="c0")
    opt = _require_optimum(cfg)
    layer = check_layer(layer, cfg.L)
    r = cfg.L - layer
    lam = opt.layer_hessian_outlier[layer - 1]
    return lam, lam * (c0 ** (2 * r) if r > 0 else 1.0)


def relu_optimum_layer_hessian(
    cfg: UFMConfig, layer: int, *, c0: float, frames: str | None = "nonnegative"
) -> Spectrum:
    """Layer Hessian of the ReLU model at the exact non-negative DNC optimum (R8).

    With ``ReLU'(0) = c0`` and ``r_l = L - l`` ReLUs between the output of ``W_l`` and the
    logits: ``K`` eigenvalues ``λ_out(l)`` (eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}``, the R4
    gradient directions) and ``K(K-1)`` eigenvalues ``c0^{2 r_l} λ_out(l)`` (``c ≠ c'``;
    ``0^0 = 1`` for ``l = L``), the rest 0. ``c0 = 1`` gives the linear ``K²`` picture,
    ``c0 = 0`` only ``K`` outliers. The class means must have disjoint non-negative supports
    (``frames="nonnegative"`` or ``"canonical"``); this is the point the ReLU model shares with
    the linear one.
    """
    if frames not in (None, "nonnegative", "canonical"):
        raise ValueError(f"frames must be 'nonnegative', 'canonical' or None for the ReLU optimum; got {frames!r}")
    lam, low = relu_kink_levels(cfg, layer, c0=c0)
    K = cfg.K
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
    return Spectrum.from_levels(
        torch.tensor(values, dtype=F64), mults, vectors=vectors, labels=labs, bulk_value=0.0,
        dim=_layer_dim(cfg, layer), name=f"ReLU layer Hessian W_{layer}, ReLU'(0)={c0:g} (optimum)",
    )
