"""Parameters, forward pass and losses of the deep unconstrained feature model (digest §2).

Shapes follow the digest (§2.2): the unconstrained features ``H_1`` are a ``d x N`` matrix
whose columns are stored **in class order** (all ``n`` samples of class 1, then class 2, ...),
``W_1..W_{L-1}`` are ``d x d`` and ``W_L`` is ``K x d``. The label matrix is
``Y = I_K ⊗ 1_n^T`` (``K x N``).

Forward pass. Linear model: ``X_1 = H_1``, ``X_{l+1} = W_l X_l``, logits ``Z = W_L X_L``.
ReLU model: the pre-activations ``H_{l+1} = W_l X_l`` pass through a ReLU,
``X_{l+1} = relu(H_{l+1})`` for ``l + 1 <= L``; there is no ReLU on ``H_1`` and none after
``W_L``. :class:`Forward` keeps every layer's pre-activation ``H_l`` and input ``X_l``.

Vectorisation convention (digest §2.4): wherever a weight matrix is flattened we use
**row-major** ``vec`` (``W.reshape(-1)``), so that ``vec(a b^T) = a ⊗ b`` and the layer-wise
Hessian of the linear MSE model reads ``(A^{(l+1)T} A^{(l+1)}) ⊗ Σ^{(l)}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig


@dataclass(frozen=True)
class UFMParams:
    """The free parameters ``H_1, W_1..W_L`` of a deep UFM (digest §2.2)."""

    H1: Tensor
    Ws: tuple[Tensor, ...]

    @property
    def L(self) -> int:
        return len(self.Ws)

    def tensors(self) -> list[Tensor]:
        """``[H_1, W_1, ..., W_L]``, the order used by the full Hessian (digest §5)."""
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


def class_labels(cfg: UFMConfig, *, device=None) -> Tensor:
    """Integer class of each column, ``(0,..,0, 1,..,1, ...)`` (length ``N``)."""
    device = device if device is not None else cfg.torch_device
    return torch.arange(cfg.K, device=device).repeat_interleave(cfg.n)


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


def forward(params: UFMParams | Sequence[Tensor], activation: str = "linear") -> Forward:
    """Run the deep UFM forward, keeping every layer (see the module docstring)."""
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    H1, Ws = tensors[0], tensors[1:]
    inputs, preacts = [H1], [H1]
    x = H1
    for l, W in enumerate(Ws[:-1]):
        h = W @ x
        x = torch.relu(h) if activation == "relu" else h
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


def fit_loss(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, Y: Tensor | None = None) -> Tensor:
    """Fit term ``ℓ(θ)`` at the parameters (digest §2.3); the theorems concern this term."""
    Y = labels(cfg, dtype=_first(params).dtype, device=_first(params).device) if Y is None else Y
    return fit_loss_from_logits(forward(params, cfg.activation).logits, Y, cfg.loss)


def penalty(params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> Tensor:
    """``Σ_l (λ_{W_l}/2)||W_l||_F^2 + (λ_H/2)||H_1||_F^2`` (v1 Eq. (1))."""
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    total = 0.5 * cfg.lambda_H * tensors[0].pow(2).sum()
    for lam, W in zip(cfg.lambda_Ws, tensors[1:]):
        total = total + 0.5 * lam * W.pow(2).sum()
    return total


def regularised_loss(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, Y: Tensor | None = None) -> Tensor:
    """The training objective ``𝓛 = ℓ + penalty`` of v1 Eq. (1) (digest §2.3)."""
    return fit_loss(params, cfg, Y) + penalty(params, cfg)


def _first(params: UFMParams | Sequence[Tensor]) -> Tensor:
    return params.H1 if isinstance(params, UFMParams) else params[0]
