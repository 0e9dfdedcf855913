"""The other "deep-learning matrices" of the deep UFM, measured (digest §4.4-§4.5, R5-R6).

At the global minimiser of the linear MSE model each of them has exactly ``K`` (or ``K-1``)
outliers built from class means (digest §4.8 table; closed forms in :mod:`ufmlib.optimum`):

* weights ``W_l^T W_l``: ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` (R5, v1 Thm 4.4) --
  :func:`weight_gram_spectrum`;
* features ``H_l``: ``K`` singular values ``sqrt(n) ||μ^{(l)}||`` -- :func:`feature_singular_values`;
* back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}``: ``K`` singular values
  ``(1-γ)γ sqrt(n)/(N ||μ^{(l)}||)`` -- :func:`backprop_errors`;
* per-sample gradients: uncentred second moment with ``K`` eigenvalues ``γ(1-γ)λ_{W_l}``,
  centred covariance with ``K-1`` -- :func:`per_sample_gradients`,
  :func:`gradient_second_moment`, :func:`gradient_covariance`;
* the Hessian w.r.t. the features ``H_1``: ``K²n`` eigenvalues ``λ_H γ/(1-γ)`` --
  :func:`feature_hessian`, :func:`feature_hessian_closed_form`.

Layer indices: ``h^{(l)}`` is the **pre-activation** ``H_l`` that enters ``W_l`` (through a ReLU
for ``l >= 2`` in the ReLU model; ``H_1`` are the free features), ``l = 1..L``; ``l = L+1``
denotes the logits ``Z``. In the linear model ``H_l`` is the input of ``W_l``. All matrices are
of the **fit term** (digest §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .hessian import Spectrum, _check_layer, dense_hessian, _tensors
from .model import UFMParams, fit_loss, fit_loss_from_logits, forward, labels

__all__ = [
    "weight_gram_spectrum",
    "feature_singular_values",
    "BackpropErrors",
    "backprop_errors",
    "per_sample_gradients",
    "gradient_second_moment",
    "gradient_covariance",
    "feature_hessian",
    "feature_hessian_closed_form",
]


def _check_matrix(name: str, M) -> Tensor:
    if not isinstance(M, Tensor) or M.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor; got {getattr(M, 'shape', type(M).__name__)}")
    return M


def weight_gram_spectrum(W: Tensor) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of ``W^T W`` (R5, v1 Thm 4.4; digest T4).

    At the minimiser: ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` with eigenvectors the normalised
    class means ``μ_c^{(l)}`` of the input of ``W_l``, the rest 0.
    """
    W = _check_matrix("W", W)
    G = W.mT @ W
    vals, vecs = torch.linalg.eigh((G + G.mT) / 2)
    return Spectrum(eigenvalues=vals.flip(0), dim=G.shape[0], method="dense", explicit_vectors=vecs.flip(1))


def feature_singular_values(X: Tensor) -> Tensor:
    """Singular values (descending) of a feature matrix ``H_l`` (``d x N``) (R6).

    At the minimiser ``H_l`` has rank ``K`` with singular values ``sqrt(n) ||μ^{(l)}||``.
    """
    return torch.linalg.svdvals(_check_matrix("X", X))


@dataclass(frozen=True, eq=False)
class BackpropErrors:
    """``errors[i] = ∂ℓ/∂h^{(l)}_i`` (``N x d``, samples class-ordered) and its singular values."""

    errors: Tensor
    singular_values: Tensor
    layer: int


def _loss_from(h: Tensor, tensors: list[Tensor], cfg: UFMConfig, layer: int, Y: Tensor) -> Tensor:
    """The fit term as a function of ``h^{(layer)}`` (pre-activation ``H_layer``; logits if L+1)."""
    Ws = tensors[1:]
    if layer == cfg.L + 1:
        return fit_loss_from_logits(h, Y, cfg.loss)
    relu = cfg.activation == "relu"
    x = torch.relu(h) if relu and layer >= 2 else h
    for W in Ws[layer - 1 : -1]:
        hh = W @ x
        x = torch.relu(hh) if relu else hh
    return fit_loss_from_logits(Ws[-1] @ x, Y, cfg.loss)


def backprop_errors(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int) -> BackpropErrors:
    """Back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}`` of the fit term at ``h^{(l)} = H_l`` (R6).

    ``layer`` in ``1..L`` is the pre-activation entering ``W_layer``; ``L+1`` the logits. At the
    linear MSE minimiser ``∂ℓ/∂h^{(l)}_{ic} = -(1-γ) a_c^{(l)}/N`` and the ``N x d`` error matrix
    has rank ``K`` with singular values ``(1-γ)γ sqrt(n)/(N ||μ^{(l)}||)`` (digest §4.5, T5).
    The ReLU derivative at 0 is PyTorch's (0).
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer, top=cfg.L + 1)
    fwd = forward(tensors, cfg.activation)
    h = fwd.logits if layer == cfg.L + 1 else fwd.preacts[layer - 1]
    Y = labels(cfg, dtype=h.dtype, device=h.device)
    g = torch.func.grad(_loss_from)(h, tensors, cfg, layer, Y)
    errors = g.mT.contiguous()
    return BackpropErrors(errors=errors, singular_values=torch.linalg.svdvals(errors), layer=layer)


def per_sample_gradients(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int) -> Tensor:
    """Per-sample fit gradients ``g_i = vec(∂ℓ_i/∂W_l)`` as rows of an ``N x d_out d_in`` matrix.

    ``ℓ_i`` is sample ``i``'s loss (``ℓ = Av_i ℓ_i``: ``½||z_i - y_i||²`` for MSE), so the fit
    gradient is the row mean. Row-major vec: ``g_i = δ_i ⊗ x_i`` with ``δ_i = N ∂ℓ/∂h_{l+1,i}``
    (the back-propagated error at the output of ``W_l``) and ``x_i`` the input of ``W_l``
    (digest §4.5: ``g_{ic} = (A^{(l+1)T} r_c) ⊗ h_{ic}`` at the minimiser).
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer)
    delta = backprop_errors(tensors, cfg, layer + 1).errors * cfg.N  # N x d_out
    X = forward(tensors, cfg.activation).inputs[layer - 1].mT  # N x d_in
    return (delta[:, :, None] * X[:, None, :]).reshape(cfg.N, -1)


def _moment_spectrum(G: Tensor, method: str) -> Spectrum:
    N, D = G.shape
    _, S, Vh = torch.linalg.svd(G / N**0.5, full_matrices=False)
    return Spectrum(eigenvalues=S**2, dim=D, method=method, explicit_vectors=Vh.mT)


def gradient_second_moment(G: Tensor) -> Spectrum:
    """Spectrum of the uncentred second moment ``Av_i g_i g_i^T`` of per-sample gradients (R6).

    ``G`` is the ``N x D`` matrix of :func:`per_sample_gradients`. Computed from the thin SVD of
    ``G/sqrt(N)``: the ``min(N, D)`` returned eigenvalues (descending) include every non-zero
    one; the remaining ``D - min(N, D)`` are exactly 0. At the linear MSE minimiser: ``K``
    eigenvalues ``γ(1-γ)λ_{W_l}`` with eigenvectors ``μ_c^{(l+1)} ⊗ μ_c^{(l)}`` (digest T5).
    """
    return _moment_spectrum(_check_matrix("G", G), "second moment (svd)")


def gradient_covariance(G: Tensor) -> Spectrum:
    """Spectrum of the centred covariance ``Av_i (g_i - ḡ)(g_i - ḡ)^T`` (R6; digest T5: ``K-1``
    eigenvalues ``γ(1-γ)λ_{W_l}`` at the minimiser). Same conventions as
    :func:`gradient_second_moment`."""
    G = _check_matrix("G", G)
    return _moment_spectrum(G - G.mean(dim=0, keepdim=True), "covariance (svd)")


def feature_hessian(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, regularised: bool = False) -> Tensor:
    """Dense Hessian of ``ℓ`` w.r.t. the features ``H_1`` (row-major vec of the ``d x N`` matrix).

    Autodiff (forward-over-reverse), any model. ``regularised=True`` adds ``λ_H I``. At the
    linear MSE minimiser it has ``K²n`` equal eigenvalues ``λ_H γ/(1-γ)`` (R6; digest §4.5).
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    H1 = tensors[0]
    Y = labels(cfg, dtype=H1.dtype, device=H1.device)

    def f(x: Tensor) -> Tensor:
        return fit_loss([x.reshape(H1.shape), *tensors[1:]], cfg, Y)

    H = dense_hessian(f, H1.reshape(-1), chunk_size=None)
    if regularised:
        H = H + cfg.lambda_H * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


def feature_hessian_closed_form(params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> Tensor:
    """``(A^{(1)T} A^{(1)}) ⊗ I_N / N`` with ``A^{(1)} = W_L ⋯ W_1``: the exact ``H_1``-Hessian of
    the linear MSE model at every point (row-major vec of ``H_1``: index ``a N + j`` for entry
    ``(a, j)``; the column-major order would give ``I_N ⊗ P/N`` instead). Raises ValueError for
    other models."""
    if cfg.activation != "linear" or cfg.loss != "mse":
        raise ValueError(
            "cfg must describe the linear MSE model for the closed form "
            f"(activation='linear', loss='mse'); got activation={cfg.activation!r}, loss={cfg.loss!r}"
        )
    tensors = [t.detach() for t in _tensors(params, cfg)]
    A = tensors[-1]
    for W in reversed(tensors[1:-1]):
        A = A @ W
    P = A.mT @ A
    eye = torch.eye(cfg.N, dtype=P.dtype, device=P.device)
    return torch.kron((P + P.mT) / 2, eye) / cfg.N
