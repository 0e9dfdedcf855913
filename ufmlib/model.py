"""Parameters, forward pass and losses of the deep unconstrained feature model (v1 Eq. (1)).

Shapes (the book's notation page): the unconstrained features ``H_1`` are a ``d x N`` matrix
whose columns are stored **in class order** (all ``n`` samples of class 1, then class 2, ...),
``W_1..W_{L-1}`` are ``d x d`` and ``W_L`` is ``K x d``. The label matrix is
``Y = I_K ⊗ 1_n^T`` (``K x N``).

Forward pass. Linear model: ``X_1 = H_1``, ``X_{l+1} = W_l X_l``, logits ``Z = W_L X_L``.
ReLU model: the pre-activations ``H_{l+1} = W_l X_l`` pass through a ReLU,
``X_{l+1} = relu(H_{l+1})`` for ``l + 1 <= L``; there is no ReLU on ``H_1`` and none after
``W_L``. :class:`Forward` keeps every layer's pre-activation ``H_l`` and input ``X_l``.

ReLU kinks. Exactly at ``h = 0`` the ReLU has no derivative; :func:`relu_derivative` is the one
place that fixes the value ``ReLU'(0) = c0`` used everywhere (Hessians, Jacobians, class-mean
predictions). :func:`forward` uses ``torch.relu`` (PyTorch's convention, ``ReLU'(0) = 0``) unless
``relu_prime_at_zero`` is given; then the ReLU is ``h * relu_derivative(h, c0)`` with a mask made
by comparisons, a constant for autograd and ``torch.func``: first derivative ``c0`` at the kink,
second derivative 0.

Losses (v1 Eq. (1)): :func:`fit_loss_from_logits` is the fit term (:func:`sample_losses` its per-sample terms), :func:`logit_hessians` and
:func:`logit_hessian_apply` its Hessian with respect to one sample's logits (``I_K`` for MSE,
``diag(p) - p p^T`` for cross-entropy), written once here.

Vectorisation convention (the book's notation page): wherever a weight matrix is flattened we use
**row-major** ``vec`` (``W.reshape(-1)``), so that ``vec(a b^T) = a ⊗ b`` and the layer-wise
Hessian of the linear MSE model reads ``(A^{(l+1)T} A^{(l+1)}) ⊗ Σ^{(l)}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .validation import check_c0


@dataclass(frozen=True)
class UFMParams:
    """The free parameters ``H_1, W_1..W_L`` of a deep UFM (v1 Eq. (1))."""

    H1: Tensor
    Ws: tuple[Tensor, ...]

    @property
    def L(self) -> int:
        return len(self.Ws)

    def tensors(self) -> list[Tensor]:
        """``[H_1, W_1, ..., W_L]``, the order used by the full Hessian."""
        return [self.H1, *self.Ws]

    @classmethod
    def from_tensors(cls, tensors: Sequence[Tensor]) -> "UFMParams":
        return cls(H1=tensors[0], Ws=tuple(tensors[1:]))

    def detach(self) -> "UFMParams":
        return UFMParams(self.H1.detach().clone(), tuple(W.detach().clone() for W in self.Ws))

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "UFMParams":
        return UFMParams(self.H1.to(device=device, dtype=dtype), tuple(W.to(device=device, dtype=dtype) for W in self.Ws))


@dataclass(frozen=True)
class Forward:
    """Everything the forward pass computes.

    ``inputs[l-1]`` is ``X_l`` (the input of ``W_l``), ``preacts[l-1]`` is ``H_l``
    (equal to ``X_l`` in the linear model and for ``l = 1``), ``logits`` is ``Z``.
    """

    inputs: tuple[Tensor, ...]
    preacts: tuple[Tensor, ...]
    logits: Tensor


def labels(cfg: UFMConfig, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """The one-hot label matrix ``Y = I_K ⊗ 1_n^T`` (``K x N``, class-ordered)."""
    dtype = dtype or cfg.torch_dtype
    device = device if device is not None else cfg.torch_device
    eye = torch.eye(cfg.K, dtype=dtype, device=device)
    return torch.kron(eye, torch.ones(1, cfg.n, dtype=dtype, device=device))


def class_means(X: Tensor, K: int) -> Tensor:
    """Class means ``M = [μ_1, ..., μ_K]`` (``rows x K``) of the class-ordered columns of ``X``."""
    d, N = X.shape
    if N % K:
        raise ValueError(f"K must divide the number of columns N = {N}; got K = {K}")
    return X.reshape(d, K, N // K).mean(dim=2)


def init_params(cfg: UFMConfig, *, std: float | None = None) -> UFMParams:
    """Seeded random initialisation, every entry i.i.d. ``N(0, std^2)`` with ``std = 1/sqrt(d)``.

    The draw is made on the CPU with ``cfg.seed`` and then moved to ``cfg.device``, so that
    the same seed gives the same starting point on every device.
    """
    std = (1.0 / cfg.d) ** 0.5 if std is None else float(std)
    g = cfg.generator()
    shapes = [(cfg.d, cfg.N)] + cfg.layer_shapes()
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) * std for s in shapes]
    tensors = [t.to(dtype=cfg.torch_dtype, device=cfg.torch_device) for t in tensors]
    return UFMParams.from_tensors(tensors)


def relu_derivative(h: Tensor, c0: float = 0.0, *, zero_tol: float = 0.0) -> Tensor:
    """``ReLU'(h)`` with the value ``c0`` at the kink: ``1[h > tol] + c0 1[|h| <= tol]`` (``h``'s dtype).

    ``zero_tol`` (default 0, an exact zero) lets values within ``tol`` of the kink count as on it,
    for class means that are zero up to rounding. Made by comparisons: a constant for autograd.
    ``c0 = 0`` is PyTorch's convention, ``c0 = 1/2`` the symmetric smoothing limit, ``c0 = 1`` the
    linear one.
    """
    above = (h > zero_tol).to(h.dtype)
    if c0 == 0.0:
        return above
    return above + c0 * (h.abs() <= zero_tol).to(h.dtype)


def forward(
    params: UFMParams | Sequence[Tensor], activation: str = "linear", *, relu_prime_at_zero: float | None = None
) -> Forward:
    """Run the deep UFM forward, keeping every layer (see the module docstring).

    ``relu_prime_at_zero=None`` applies ``torch.relu`` (its derivative at 0 is 0 under autograd);
    a number ``c0`` in ``[0, 1]`` applies ``h * relu_derivative(h, c0)`` instead, so that autograd and
    ``torch.func`` see ``ReLU'(0) = c0`` (the values are the same).
    """
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    if relu_prime_at_zero is None:
        act = torch.relu
    else:
        c0 = check_c0(relu_prime_at_zero)

        def act(h: Tensor) -> Tensor:
            return h * relu_derivative(h, c0)

    H1, Ws = tensors[0], tensors[1:]
    inputs, preacts = [H1], [H1]
    x = H1
    for W in Ws[:-1]:
        h = W @ x
        x = act(h) if activation == "relu" else h
        preacts.append(h)
        inputs.append(x)
    Z = Ws[-1] @ x
    return Forward(tuple(inputs), tuple(preacts), Z)


def fit_loss_from_logits(Z: Tensor, Y: Tensor, loss: str = "mse") -> Tensor:
    """The fit term ``ℓ`` of v1 Eq. (1): ``(1/2N)||Z - Y||_F^2`` (MSE) or mean cross-entropy.

    ``Z`` and ``Y`` are ``K x N`` with samples as columns.
    """
    N = Z.shape[1]
    if loss == "mse":
        return 0.5 * (Z - Y).pow(2).sum() / N
    if loss == "ce":
        return -(torch.log_softmax(Z, dim=0) * Y).sum() / N
    raise ValueError(f"loss must be 'mse' or 'ce'; got {loss!r}")


def sample_losses(Z: Tensor, Y: Tensor, loss: str = "mse") -> Tensor:
    """The ``N`` per-sample terms ``ℓ_i`` of the fit term, whose mean is :func:`fit_loss_from_logits`:
    ``½||z_i - y_i||²`` (MSE) or ``-log softmax(z_i)_{y_i}`` (cross-entropy); ``Z``, ``Y`` are ``K x N``."""
    if loss == "mse":
        return 0.5 * (Z - Y).pow(2).sum(dim=0)
    if loss == "ce":
        return -(torch.log_softmax(Z, dim=0) * Y).sum(dim=0)
    raise ValueError(f"loss must be 'mse' or 'ce'; got {loss!r}")


def _softmax_hessian_times(p: Tensor, R: Tensor) -> Tensor:
    """``(diag(p_i) - p_i p_i^T) r_i`` for the rows ``p_i`` of ``p`` and ``r_i`` of ``R`` (``(..., N, K)``)."""
    return p * R - p * (p * R).sum(-1, keepdim=True)


def logit_hessian_apply(Z: Tensor, loss: str) -> Callable[[Tensor], Tensor]:
    """``R ↦ (Q_i r_i)_i`` with ``Q_i = ∂²ℓ/∂z_i²`` (the ``1/N`` included), rows ``r_i`` of ``R``.

    MSE: ``Q_i = I_K / N``. CE: ``Q_i = (diag(p_i) - p_i p_i^T) / N`` with ``p_i = softmax(z_i)``.
    ``R`` has shape ``(..., N, K)``; ``Z`` is ``K x N``.
    """
    N = Z.shape[1]
    if loss == "mse":
        return lambda R: R / N
    if loss == "ce":
        p = torch.softmax(Z.detach(), dim=0).mT  # N x K
        return lambda R: _softmax_hessian_times(p, R) / N
    raise ValueError(f"loss must be 'mse' or 'ce'; got {loss!r}")


def logit_hessians(Z: Tensor, loss: str) -> Tensor:
    """The per-column loss Hessians ``Q_c`` (without ``1/N``) at the logits ``Z`` (``K x C``): ``C x K x K``.

    ``I_K`` for MSE; ``diag(p_c) - p_c p_c^T`` with ``p_c = softmax(z_c)`` for cross-entropy.
    Used at class-mean logits (one column per class) by the predictions from class means.
    """
    K, C = Z.shape
    eye = torch.eye(K, dtype=Z.dtype, device=Z.device)
    if loss == "mse":
        return eye.expand(C, K, K).clone()
    if loss == "ce":
        p = torch.softmax(Z.detach(), dim=0).mT  # C x K
        # row c of Q_c e_k, for every k at once: Q_c is symmetric
        return _softmax_hessian_times(p[:, None, :], eye[None, :, :])
    raise ValueError(f"loss must be 'mse' or 'ce'; got {loss!r}")


def fit_loss(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, Y: Tensor | None = None, *,
    relu_prime_at_zero: float | None = None,
) -> Tensor:
    """Fit term ``ℓ(θ)`` at the parameters (v1 Eq. (1)); the theorems concern this term.

    ``relu_prime_at_zero`` is passed to :func:`forward` (the ReLU-kink convention seen by autograd).
    """
    Y = labels(cfg, dtype=_first(params).dtype, device=_first(params).device) if Y is None else Y
    Z = forward(params, cfg.activation, relu_prime_at_zero=relu_prime_at_zero).logits
    return fit_loss_from_logits(Z, Y, cfg.loss)


def penalty(params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> Tensor:
    """``Σ_l (λ_{W_l}/2)||W_l||_F^2 + (λ_H/2)||H_1||_F^2`` (v1 Eq. (1))."""
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    total = 0.5 * cfg.lambda_H * tensors[0].pow(2).sum()
    for lam, W in zip(cfg.lambda_Ws, tensors[1:]):
        total = total + 0.5 * lam * W.pow(2).sum()
    return total


def regularised_loss(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, Y: Tensor | None = None) -> Tensor:
    """The training objective ``𝓛 = ℓ + penalty`` of v1 Eq. (1)."""
    return fit_loss(params, cfg, Y) + penalty(params, cfg)


def _first(params: UFMParams | Sequence[Tensor]) -> Tensor:
    return params.H1 if isinstance(params, UFMParams) else params[0]
