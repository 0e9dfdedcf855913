"""One parameter point of a deep UFM and everything its forward pass gives, computed once.

A measurement at a snapshot of training needs the same few things again and again: the
forward pass (every layer's input ``X_l`` and pre-activation ``H_l``, the logits), the class
means of each of them, the downstream products ``A^{(l)} = W_L⋯W_l`` and, in the ReLU model,
the Jacobians at the class means. :class:`UFMState` computes each of them once, on first use,
and every measurement of :mod:`ufmlib.hessian`, :mod:`ufmlib.full_hessian`,
:mod:`ufmlib.matrices`, :mod:`ufmlib.collapse` and :mod:`ufmlib.theory` accepts it in place of
the parameters (:func:`state_of`), so that a snapshot is measured from one forward pass.

Conventions (the book's notation page): layers ``l = 1..L``; ``inputs[l-1] = X_l`` is the input
of ``W_l`` and ``preacts[l-1] = H_l`` its pre-activation (``X_l = relu(H_l)`` for ``l >= 2`` in
the ReLU model, ``X_1 = H_1``); columns are class-ordered, so class means are
``X.reshape(d, K, n).mean(2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .model import Forward, UFMParams, class_means, forward, labels, logit_hessians, relu_derivative
from .validation import check_c0, check_layer, check_nonnegative, f64

__all__ = ["UFMState", "state_of"]

F64 = torch.float64


@dataclass(frozen=True, eq=False)
class UFMState:
    """The parameters ``params`` of the model ``cfg`` with their forward pass and class means.

    Derived quantities are cached properties: computed on first access, then reused. The
    tensors keep the dtype and device of ``params``; :meth:`cpu64` gives the same point in
    float64 on the CPU (itself when it already is), which the predictions from class means use.
    """

    params: UFMParams
    cfg: UFMConfig

    def __post_init__(self) -> None:
        if not isinstance(self.cfg, UFMConfig):
            raise ValueError(f"cfg must be a UFMConfig; got {type(self.cfg).__name__}")
        params = self.params
        tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
        shapes = [(self.cfg.d, self.cfg.N)] + self.cfg.layer_shapes()
        got = [tuple(t.shape) for t in tensors]
        if got != shapes:
            raise ValueError(f"params must have shapes {shapes} (H_1, W_1..W_L) for this cfg; got {got}")
        object.__setattr__(self, "params", UFMParams.from_tensors([t.detach() for t in tensors]))

    # ------------------------------------------------------------------ the point (read like UFMParams)
    def tensors(self) -> list[Tensor]:
        """``[H_1, W_1, ..., W_L]`` (detached)."""
        return self.params.tensors()

    @property
    def H1(self) -> Tensor:
        return self.params.H1

    @property
    def Ws(self) -> tuple[Tensor, ...]:
        return self.params.Ws

    @property
    def weights(self) -> tuple[Tensor, ...]:
        """``(W_1, ..., W_L)``, the same as :attr:`Ws`."""
        return self.params.Ws

    @property
    def K(self) -> int:
        return self.cfg.K

    @property
    def L(self) -> int:
        return self.cfg.L

    @cached_property
    def forward(self) -> Forward:
        """The forward pass (``torch.relu`` in the ReLU model, :func:`ufmlib.model.forward`)."""
        return forward(self.tensors(), self.cfg.activation)

    @cached_property
    def labels(self) -> Tensor:
        """``Y = I_K ⊗ 1_n^T`` in the dtype and on the device of the parameters."""
        H1 = self.params.H1
        return labels(self.cfg, dtype=H1.dtype, device=H1.device)

    def cpu64(self) -> "UFMState":
        """This point in float64 on the CPU: ``self`` when it already is, else a copy made once."""
        return self._cpu64

    @cached_property
    def _cpu64(self) -> "UFMState":
        H1 = self.params.H1
        if H1.dtype == F64 and H1.device.type == "cpu" and self.cfg.dtype == "float64" and self.cfg.device == "cpu":
            return self
        cfg = self.cfg.replace(dtype="float64", device="cpu")
        return UFMState(UFMParams.from_tensors([f64(t) for t in self.tensors()]), cfg)

    # ------------------------------------------------------------------ class means
    @cached_property
    def input_means(self) -> tuple[Tensor, ...]:
        """Class means of the input ``X_l`` of ``W_l`` (``d x K``), ``l = 1..L``."""
        return tuple(class_means(X, self.K) for X in self.forward.inputs)

    @cached_property
    def preact_means(self) -> tuple[Tensor, ...]:
        """Class means of the pre-activations ``H_l`` (``d x K``), ``l = 1..L``."""
        return tuple(class_means(H, self.K) for H in self.forward.preacts)

    @cached_property
    def logit_means(self) -> Tensor:
        """Class-mean logits (``K x K``, column ``c``)."""
        return class_means(self.forward.logits, self.K)

    @cached_property
    def within(self) -> tuple[float, ...]:
        """``||X_l - M_l ⊗ 1_n^T||_F / ||X_l||_F`` per layer (0 under DNC1)."""
        out = []
        for X, M in zip(self.forward.inputs, self.input_means):
            dev = X - M.repeat_interleave(self.cfg.n, dim=1)
            nx = float(torch.linalg.matrix_norm(X))
            out.append(float(torch.linalg.matrix_norm(dev)) / nx if nx > 0 else 0.0)
        return tuple(out)

    def M(self, l: int) -> Tensor:
        """Class means of the input of ``W_l`` (``l = 1..L``); ``l = L+1``: the class-mean logits."""
        l = check_layer(l, self.L + 1)
        return self.logit_means if l == self.L + 1 else self.input_means[l - 1]

    def output_means(self, l: int) -> Tensor:
        """Class means of the output of ``W_l``: pre-activations ``H_{l+1}``; ``I_K`` (logit
        directions) for ``l = L``."""
        l = check_layer(l, self.L)
        if l == self.L:
            return torch.eye(self.K, dtype=self.params.H1.dtype, device=self.params.H1.device)
        return self.preact_means[l]

    # ------------------------------------------------------------------ downstream maps
    def A(self, l: int) -> Tensor:
        """``A^{(l)} = W_L⋯W_l`` (``K x d_l``); ``A^{(L+1)} = I_K`` (no ReLU masks)."""
        l = check_layer(l, self.L + 1)
        W0 = self.weights[0]
        out = torch.eye(self.K, dtype=W0.dtype, device=W0.device)
        for W in reversed(self.weights[l - 1 :]):
            out = out @ W
        return out

    def class_mask(self, l: int, *, c0: float = 0.0, zero_tol: float = 0.0) -> Tensor:
        """``ReLU'`` at the class-mean pre-activations of layer ``l`` (``d x K``; ones if linear or ``l = 1``)."""
        l = check_layer(l, self.L)
        H = self.preact_means[l - 1]
        if self.cfg.activation != "relu" or l == 1:
            return torch.ones_like(H)
        return relu_derivative(H, check_c0(c0, name="c0"), zero_tol=check_nonnegative("zero_tol", zero_tol))

    def class_jacobians(self, l: int, *, c0: float = 0.0, zero_tol: float = 0.0) -> list[Tensor]:
        """``B_c^{(l)} = ∂z/∂h^{(l)}`` at the mean of class ``c`` (``K`` matrices ``K x d_l``).

        ``B^{(L+1)} = I_K``, ``B^{(l)} = B^{(l+1)} W_l D_l`` with ``D_l = diag(ReLU'(μ_c(H_l)))``
        (:meth:`class_mask`; ``D = I`` in the linear model and for ``l = 1``). The Hessian of ``W_l``
        uses ``B^{(l+1)}``; in the linear model ``B_c^{(l)} = A^{(l)}`` for every class.
        """
        l = check_layer(l, self.L + 1)
        W0 = self.weights[0]
        Bs = [torch.eye(self.K, dtype=W0.dtype, device=W0.device) for _ in range(self.K)]
        for k in range(self.L, l - 1, -1):
            D = self.class_mask(k, c0=c0, zero_tol=zero_tol)
            Bs = [B @ self.weights[k - 1] * D[:, c] for c, B in enumerate(Bs)]
        return Bs

    def class_input_jacobians(self, l: int, *, c0: float = 0.0, zero_tol: float = 0.0) -> list[Tensor]:
        """``∂z/∂x^{(l)}`` for the input ``X_l`` of ``W_l`` at each class mean: ``B_c^{(l+1)} W_l``."""
        l = check_layer(l, self.L)
        return [B @ self.weights[l - 1] for B in self.class_jacobians(l + 1, c0=c0, zero_tol=zero_tol)]

    def class_residuals(self) -> Tensor:
        """``∂(per-sample loss)/∂z`` at each class mean, column ``c``: ``z̄_c - e_c`` (MSE) or ``p_c - e_c`` (CE)."""
        Z = self.logit_means
        eye = torch.eye(self.K, dtype=Z.dtype, device=Z.device)
        if self.cfg.loss == "ce":
            return torch.softmax(Z, dim=0) - eye
        return Z - eye

    def class_logit_hessians(self) -> list[Tensor] | None:
        """``Q_c = diag(p_c) - p_c p_c^T`` at the class-mean logits (CE) or ``None`` (MSE: ``Q_c = I``)."""
        if self.cfg.loss != "ce":
            return None
        return list(logit_hessians(self.logit_means, "ce"))


def state_of(params: "UFMState | UFMParams | Sequence[Tensor]", cfg: UFMConfig) -> UFMState:
    """``params`` as a :class:`UFMState` of ``cfg``: the state itself when one is given (its cached
    forward pass is reused), else a new one. A state of another configuration is refused."""
    if isinstance(params, UFMState):
        if params.cfg != cfg:
            raise ValueError(f"params is the state of another configuration ({params.cfg}); expected {cfg}")
        return params
    return UFMState(params, cfg)
