"""The weights and the other "deep-learning matrices" of the deep UFM, measured (R5-R6).

At the global minimiser of the linear MSE model each of them has exactly ``K`` (or ``K-1``)
outliers built from class means (closed forms in :mod:`ufmlib.theory.closed_form`):

* weights ``W_l^T W_l``: ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` (R5, v1 Thm 4.4) --
  :func:`weight_gram_spectrum`; the weights are balanced and their singular subspaces are the
  class-mean spans -- :func:`balancedness`, :func:`singular_subspace_overlaps`;
* features ``H_l``: ``K`` singular values ``sqrt(n) ||μ^{(l)}||`` -- :func:`feature_singular_values`;
* back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}``: ``K`` singular values
  ``(1-γ)γ sqrt(n)/(N ||μ^{(l)}||)`` -- :func:`backprop_errors`;
* per-sample gradients: uncentred second moment with ``K`` eigenvalues ``γ(1-γ)λ_{W_l}``,
  centred covariance with ``K-1`` -- :func:`per_sample_gradients`,
  :func:`gradient_second_moment`, :func:`gradient_covariance`;
* the Hessian w.r.t. the features ``H_1``: ``K²n`` eigenvalues ``λ_H γ/(1-γ)`` --
  :func:`feature_hessian` (autodiff) and :func:`feature_hessian_factor` (``F`` with Hessian
  ``F ⊗ I_N``, exact for the linear MSE model).

Layer indices: ``h^{(l)}`` is the **pre-activation** ``H_l`` that enters ``W_l`` (through a ReLU
for ``l >= 2`` in the ReLU model; ``H_1`` are the free features), ``l = 1..L``; ``l = L+1``
denotes the logits ``Z``. In the linear model ``H_l`` is the input of ``W_l``. All matrices are
of the **fit term** (v1 Eq. (1)). Functions of the parameters also take a
:class:`ufmlib.state.UFMState`, whose forward pass is reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .alignment import subspace_overlap
from .autodiff import dense_hessian
from .config import UFMConfig
from .model import UFMParams, fit_loss, fit_loss_from_logits, forward, sample_losses
from .spectrum import Spectrum
from .state import UFMState, state_of
from .validation import check_layer, check_matrix

F64 = torch.float64
Point = UFMState | UFMParams | Sequence[Tensor]

__all__ = [
    "weight_gram_spectrum",
    "feature_singular_values",
    "BackpropErrors",
    "backprop_errors",
    "per_sample_gradients",
    "per_sample_gradients_autograd",
    "gradient_second_moment",
    "gradient_covariance",
    "feature_hessian",
    "feature_hessian_factor",
    "balancedness",
    "singular_subspace_overlaps",
]


def weight_gram_spectrum(W: Tensor) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of ``W^T W`` (R5, v1 Thm 4.4).

    At the minimiser: ``K`` eigenvalues ``γ(1-γ)/(Kλ_{W_l})`` with eigenvectors the normalised
    class means ``μ_c^{(l)}`` of the input of ``W_l``, the rest 0.
    """
    W = check_matrix("W", W)
    G = W.mT @ W
    vals, vecs = torch.linalg.eigh((G + G.mT) / 2)
    return Spectrum(eigenvalues=vals.flip(0), dim=G.shape[0], method="dense", explicit_vectors=vecs.flip(1))


def feature_singular_values(X: Tensor) -> Tensor:
    """Singular values (descending) of a feature matrix ``H_l`` (``d x N``) (R6).

    At the minimiser ``H_l`` has rank ``K`` with singular values ``sqrt(n) ||μ^{(l)}||``.
    """
    return torch.linalg.svdvals(check_matrix("X", X))


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


def backprop_errors(params: Point, cfg: UFMConfig, layer: int) -> BackpropErrors:
    """Back-propagated errors ``∂ℓ/∂h^{(l)}_{ic}`` of the fit term at ``h^{(l)} = H_l`` (R6).

    ``layer`` in ``1..L`` is the pre-activation entering ``W_layer``; ``L+1`` the logits. At the
    linear MSE minimiser ``∂ℓ/∂h^{(l)}_{ic} = -(1-γ) a_c^{(l)}/N`` and the ``N x d`` error matrix
    has rank ``K`` with singular values ``(1-γ)γ sqrt(n)/(N ||μ^{(l)}||)`` (R6).
    The ReLU derivative at 0 is PyTorch's (0).
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L + 1)
    h = st.forward.logits if layer == cfg.L + 1 else st.forward.preacts[layer - 1]
    g = torch.func.grad(_loss_from)(h, st.tensors(), cfg, layer, st.labels)
    errors = g.mT.contiguous()
    return BackpropErrors(errors=errors, singular_values=torch.linalg.svdvals(errors), layer=layer)


def per_sample_gradients(params: Point, cfg: UFMConfig, layer: int) -> Tensor:
    """Per-sample fit gradients ``g_i = vec(∂ℓ_i/∂W_l)`` as rows of an ``N x d_out d_in`` matrix.

    ``ℓ_i`` is sample ``i``'s loss (``ℓ = Av_i ℓ_i``: ``½||z_i - y_i||²`` for MSE), so the fit
    gradient is the row mean. Row-major vec: ``g_i = δ_i ⊗ x_i`` with ``δ_i = N ∂ℓ/∂h_{l+1,i}``
    (the back-propagated error at the output of ``W_l``) and ``x_i`` the input of ``W_l``
    (``g_{ic} = (A^{(l+1)T} r_c) ⊗ h_{ic}`` at the minimiser).
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    delta = backprop_errors(st, cfg, layer + 1).errors * cfg.N  # N x d_out
    X = st.forward.inputs[layer - 1].mT  # N x d_in
    return (delta[:, :, None] * X[:, None, :]).reshape(cfg.N, -1)


def per_sample_gradients_autograd(params: Point, cfg: UFMConfig, layer: int) -> Tensor:
    """Per-sample fit gradients ``vec(∂ℓ_i/∂W_l)`` by automatic differentiation (``N x d_out d_in``).

    The same matrix as :func:`per_sample_gradients`, measured without the chain-rule product
    ``δ_i ⊗ x_i``: the vector of the ``N`` per-sample losses (``½||z_i - y_i||²`` for MSE,
    ``-log softmax(z_i)_{y_i}`` for cross-entropy; ``ℓ = Av_i ℓ_i``) is differentiated with
    respect to ``W_l`` by ``torch.func.jacrev`` (row-major vec). At the linear MSE minimiser
    its second moment has ``K`` eigenvalues ``γ(1-γ)λ_{W_l}`` (R6), so comparing its spectrum
    with the closed form is an independent check. ReLU derivative at 0: PyTorch's (0).
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    tensors, Y = st.tensors(), st.labels

    def losses(W: Tensor) -> Tensor:
        return sample_losses(forward([*tensors[:layer], W, *tensors[layer + 1:]], cfg.activation).logits, Y, cfg.loss)

    return torch.func.jacrev(losses)(tensors[layer]).reshape(cfg.N, -1)


def _moment_spectrum(G: Tensor, method: str) -> Spectrum:
    N, D = G.shape
    _, S, Vh = torch.linalg.svd(G / N**0.5, full_matrices=False)
    return Spectrum(eigenvalues=S**2, dim=D, method=method, explicit_vectors=Vh.mT)


def gradient_second_moment(G: Tensor) -> Spectrum:
    """Spectrum of the uncentred second moment ``Av_i g_i g_i^T`` of per-sample gradients (R6).

    ``G`` is the ``N x D`` matrix of :func:`per_sample_gradients`. Computed from the thin SVD of
    ``G/sqrt(N)``: the ``min(N, D)`` returned eigenvalues (descending) include every non-zero
    one; the remaining ``D - min(N, D)`` are exactly 0. At the linear MSE minimiser: ``K``
    eigenvalues ``γ(1-γ)λ_{W_l}`` with eigenvectors ``μ_c^{(l+1)} ⊗ μ_c^{(l)}`` (R6).
    """
    return _moment_spectrum(check_matrix("G", G), "second moment (svd)")


def gradient_covariance(G: Tensor) -> Spectrum:
    """Spectrum of the centred covariance ``Av_i (g_i - ḡ)(g_i - ḡ)^T`` (R6: ``K-1``
    eigenvalues ``γ(1-γ)λ_{W_l}`` at the minimiser). Same conventions as
    :func:`gradient_second_moment`."""
    G = check_matrix("G", G)
    return _moment_spectrum(G - G.mean(dim=0, keepdim=True), "covariance (svd)")


def feature_hessian(params: Point, cfg: UFMConfig, *, regularised: bool = False) -> Tensor:
    """Dense Hessian of ``ℓ`` w.r.t. the features ``H_1`` (row-major vec of the ``d x N`` matrix).

    Autodiff (forward-over-reverse), any model. ``regularised=True`` adds ``λ_H I``. At the
    linear MSE minimiser it has ``K²n`` equal eigenvalues ``λ_H γ/(1-γ)`` (R6).
    """
    st = state_of(params, cfg)
    tensors, H1, Y = st.tensors(), st.params.H1, st.labels

    def f(x: Tensor) -> Tensor:
        return fit_loss([x.reshape(H1.shape), *tensors[1:]], cfg, Y)

    H = dense_hessian(f, H1.reshape(-1), chunk_size=None)
    if regularised:
        H = H + cfg.lambda_H * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


# ----------------------------------------------------------------------------- the features' Hessian factor
def feature_hessian_factor(params: Point, cfg: UFMConfig) -> Tensor:
    """``F = A^{(1)T} A^{(1)}/N`` (``d x d``) with ``∂²ℓ/∂vec(H_1)² = F ⊗ I_N`` (R6).

    ``A^{(1)} = W_L ⋯ W_1``; row-major vec of the ``d x N`` matrix ``H_1`` (the column-major
    order would give ``I_N ⊗ F``). Exact at every point of the linear MSE model, because the
    fit term is quadratic in ``H_1``. The ``dN`` eigenvalues of the Hessian are those of
    ``F``, each ``N`` times (:func:`ufmlib.hessian.kronecker_eigh` with ``I_N``); at the
    minimiser ``F`` has ``K`` eigenvalues ``λ_H γ/(1-γ)``.
    """
    if cfg.activation != "linear" or cfg.loss != "mse":
        raise ValueError("cfg must describe the linear MSE model (activation='linear', loss='mse'); "
                         f"got activation={cfg.activation!r}, loss={cfg.loss!r}")
    A = state_of(params, cfg).cpu64().A(1)
    F = A.mT @ A / cfg.N
    return (F + F.mT) / 2


# ----------------------------------------------------------------------------- R5 structure
def balancedness(params: Point, cfg: UFMConfig) -> np.ndarray:
    """Relative balancedness errors of the ``L`` weight matrices (R5, v1 Thm 4.4).

    Entry ``l-1`` is ``||λ_{W_l} W_l^T W_l - λ_{W_{l-1}} W_{l-1} W_{l-1}^T||_F /
    ||λ_{W_l} W_l^T W_l||_F`` with ``λ_{W_0} W_0 W_0^T := λ_H H_1 H_1^T`` for ``l = 1``;
    0 at every critical point of the regularised linear loss, in particular at the minimiser.
    """
    st = state_of(params, cfg).cpu64()
    p, c = st.params, st.cfg
    prev = c.lambda_H * p.H1 @ p.H1.T
    out = []
    for W, lam in zip(p.Ws, c.lambda_Ws):
        right = lam * W.T @ W
        out.append(float(torch.linalg.matrix_norm(right - prev) / torch.linalg.matrix_norm(right)))
        prev = lam * W @ W.T
    return np.array(out)


def singular_subspace_overlaps(params: Point, cfg: UFMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Overlaps of the top-``K`` singular subspaces of every ``W_l`` with the class means (R5).

    Returns ``(right, left)``: entry ``l-1`` of ``right`` is the subspace overlap
    (:func:`ufmlib.alignment.subspace_overlap`, 1 = equal spans) of the top-``K`` right singular
    vectors of ``W_l`` with the class means ``μ_c^{(l)}`` of its input; ``left`` compares the
    top-``K`` left singular vectors with the class means ``μ_c^{(l+1)}`` of its output (the
    class-mean logits for ``W_L``). Spans, not vectors: the ``K`` singular values are equal at
    the minimiser, so the singular vectors inside the level are an arbitrary basis).
    """
    st = state_of(params, cfg).cpu64()
    p, K = st.params, st.cfg.K
    right, left = [], []
    for l, W in enumerate(p.Ws, start=1):
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        right.append(subspace_overlap(Vh[:K].T, st.M(l)))
        left.append(subspace_overlap(U[:, :K], st.M(l + 1)))
    return np.array(right), np.array(left)
