"""Layer-wise and full Hessians of the deep UFM fit term, exact and matrix-free (digest §2.4, §4.1, §5).

Everything here concerns the **fit term** ``ℓ`` of v1 Eq. (1) (digest §2.3, pitfall 2);
``regularised=True`` adds the penalty Hessian (``λ_{W_l} I`` on the ``W_l`` block, ``λ_H I`` on
the ``H_1`` block) and nothing else. Layers are numbered ``1..L`` (``layer=3`` means ``W_3``)
and every weight matrix is flattened **row-major**, ``vec(W) = W.reshape(-1)``, so that
``vec(a b^T) = a ⊗ b`` (digest §2.4).

Routes to the layer Hessian ``Hess_l = ∂²ℓ/∂vec(W_l)²``:

* :func:`layer_hessian_autodiff` -- dense, by ``torch.func`` (forward-over-reverse), for any
  model; the reference every other route is tested against.
* :func:`layer_hessian_factors` + :func:`kronecker_eigh` -- the linear MSE model, where
  ``Hess_l = (A^{(l+1)T} A^{(l+1)}) ⊗ Σ^{(l)}`` at *every* point (digest §2.4; R2, v1 Thm 4.1),
  so the ``d_{l+1} d_l`` eigenpairs follow from two small eigendecompositions.
* :func:`layer_hvp` / :func:`layer_hessian_dense` -- any model (linear/ReLU, MSE/CE) as a sum of
  per-sample Kronecker terms ``Hess_l = Σ_i (B_i^T Q_i B_i) ⊗ x_i x_i^T``, matrix-free or dense.
* :func:`layer_spectrum` -- chooses among the above (``method="auto"``) and returns a
  :class:`Spectrum`.

The full Hessian over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``) of digest §5 (R7) is available
densely (:func:`full_hessian_autodiff`) and as a matrix-free product (:func:`full_hvp`).

**Why the layer Hessian is a Gauss-Newton matrix.** Write ``h_{l+1,i} = W_l x_i`` for the
pre-activation that ``W_l`` produces from its (fixed) input ``x_i`` and ``z_i = f(h_{l+1,i})``
for the rest of the network. Then
``Hess_l = Σ_i J_i^T (∂²ℓ/∂z_i²) J_i + Σ_{i,k} (∂ℓ/∂z_{ik}) ∂²z_{ik}/∂vec(W_l)²``. The map
``f`` is a product of weight matrices and ReLUs, hence piecewise linear, and ``h_{l+1,i}`` is
linear in ``W_l``, so the second sum vanishes wherever the ReLU pattern is locally constant:
the layer-wise block equals its Gauss-Newton part, ``J_i = B_i ⊗ x_i^T`` with
``B_i = ∂z_i/∂h_{l+1,i}``. (Cross-layer blocks of the *full* Hessian do not vanish: there
``z`` is multilinear in the weights; digest §5, item 3.)

**Convention at ReLU kinks.** Exactly at ``h = 0`` the ReLU is not differentiable. Like
PyTorch's autograd (whose ReLU backward passes a gradient only where the output is positive)
we use ``ReLU'(0) = 0`` and ``ReLU'' = 0`` by default, so :func:`layer_hvp` agrees with
:func:`layer_hessian_autodiff` even at the exactly-sparse ReLU optimum of digest §4.7 (R8).
``relu_prime_at_zero`` selects another value ``c₀ ∈ [0, 1]``; digest §4.7 and T8 show that
the number of outliers at the optimum depends on it (``c₀ = 0``: K, ``c₀ = 1``: K²).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from numbers import Integral, Real
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .model import UFMParams, fit_loss, forward, labels

__all__ = [
    "KroneckerFactors",
    "Spectrum",
    "layer_dims",
    "dense_hessian",
    "load_forward_ad",
    "layer_hessian_autodiff",
    "layer_hessian_factors",
    "kronecker_eigh",
    "downstream_jacobians",
    "logit_hessian_apply",
    "layer_hvp",
    "layer_hessian_dense",
    "layer_spectrum",
    "full_hessian_autodiff",
    "full_hvp",
    "fit_gradient",
]

MatVec = Callable[[Tensor], Tensor]
DENSE_LIMIT = 2500  # method="auto": largest non-Kronecker layer Hessian diagonalised densely


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class KroneckerFactors:
    """Eigenpairs of the two factors of ``P ⊗ Q`` and which pair makes each eigenvalue.

    ``pairs[j] = (a, b)`` means eigenvalue ``j`` of the Kronecker product is
    ``P_eigenvalues[a] * Q_eigenvalues[b]`` with eigenvector ``u_a ⊗ v_b`` (the row-major vec of
    the rank-one matrix ``u_a v_b^T``).
    """

    P_eigenvalues: Tensor
    P_eigenvectors: Tensor
    Q_eigenvalues: Tensor
    Q_eigenvectors: Tensor
    pairs: Tensor

    def vectors(self, k: int | None = None) -> Tensor:
        """The first ``k`` (default: all listed) eigenvectors as columns, ``p q x k``."""
        pairs = self.pairs if k is None else self.pairs[:k]
        U = self.P_eigenvectors[:, pairs[:, 0]]
        V = self.Q_eigenvectors[:, pairs[:, 1]]
        return torch.einsum("aj,bj->abj", U, V).reshape(U.shape[0] * V.shape[0], -1)


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigenvalues (descending) and eigenvectors (columns, row-major vec) of a symmetric matrix.

    ``dim`` is the size of the matrix; ``eigenvalues`` may hold only the top ``k``. Vectors are
    stored explicitly (``explicit_vectors``) or, for a Kronecker product, as the factors'
    eigenpairs (``kronecker``) and built on first access of :attr:`eigenvectors` or by
    :meth:`vectors`. ``num_matvecs`` counts Hessian-vector products (iterative methods only);
    ``residual_norms`` are ``||A v - θ v||`` where the method reports them.
    """

    eigenvalues: Tensor
    dim: int
    method: str
    explicit_vectors: Tensor | None = field(default=None, repr=False)
    kronecker: KroneckerFactors | None = field(default=None, repr=False)
    num_matvecs: int | None = None
    residual_norms: Tensor | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return int(self.eigenvalues.shape[0])

    @cached_property
    def eigenvectors(self) -> Tensor:
        """All ``k`` eigenvectors as columns (``dim x k``); materialised once."""
        return self.vectors()

    def vectors(self, k: int | None = None) -> Tensor:
        """The eigenvectors of the ``k`` largest eigenvalues (columns), built only as needed."""
        if k is not None:
            k = _check_k(k, self.k)
        if self.explicit_vectors is not None:
            return self.explicit_vectors if k is None else self.explicit_vectors[:, :k]
        if self.kronecker is not None:
            return self.kronecker.vectors(k)
        raise ValueError("this spectrum was computed without eigenvectors")

    def shifted(self, shift: float) -> "Spectrum":
        """The spectrum of ``A + shift I`` (same eigenvectors)."""
        return replace(self, eigenvalues=self.eigenvalues + shift)


# ----------------------------------------------------------------------------- checks
def _check_layer(cfg: UFMConfig, layer, *, name: str = "layer", top: int | None = None) -> int:
    top = cfg.L if top is None else top
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= layer <= top:
        raise ValueError(f"{name} must be an integer in 1..{top}; got {layer!r}")
    return int(layer)


def _check_k(k, dim: int) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k <= dim:
        raise ValueError(f"k must be an integer in 1..{dim}; got {k!r}")
    return int(k)


def _check_c0(c0) -> float:
    if isinstance(c0, bool) or not isinstance(c0, Real) or not 0.0 <= float(c0) <= 1.0:
        raise ValueError(f"relu_prime_at_zero must be a number in [0, 1]; got {c0!r}")
    return float(c0)


def _tensors(params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> list[Tensor]:
    tensors = params.tensors() if isinstance(params, UFMParams) else list(params)
    shapes = [(cfg.d, cfg.N)] + cfg.layer_shapes()
    got = [tuple(t.shape) for t in tensors]
    if got != shapes:
        raise ValueError(f"params must have shapes {shapes} (H_1, W_1..W_L) for this cfg; got {got}")
    return tensors


def _labels_like(cfg: UFMConfig, ref: Tensor, Y: Tensor | None) -> Tensor:
    if Y is None:
        return labels(cfg, dtype=ref.dtype, device=ref.device)
    if tuple(Y.shape) != (cfg.K, cfg.N):
        raise ValueError(f"Y must have shape ({cfg.K}, {cfg.N}); got {tuple(Y.shape)}")
    return Y.to(dtype=ref.dtype, device=ref.device)


def layer_dims(cfg: UFMConfig, layer: int) -> tuple[int, int]:
    """``(d_out, d_in)`` of ``W_layer``: ``(d, d)`` for ``layer < L``, ``(K, d)`` for ``W_L``."""
    return cfg.layer_shapes()[_check_layer(cfg, layer) - 1]


_forward_ad_loaded = False


def load_forward_ad() -> None:
    """Trigger PyTorch's one-time loading of forward-mode decompositions quietly.

    The first ``torch.func.jvp`` of a process scripts a few decompositions and emits
    PyTorch's own ``torch.jit.script`` deprecation warning; it concerns PyTorch, not the caller.
    """
    global _forward_ad_loaded
    if _forward_ad_loaded:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        x = torch.zeros(1, dtype=torch.float64)
        torch.func.jvp(torch.sin, (x,), (torch.ones_like(x),))
    _forward_ad_loaded = True


def dense_hessian(func: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Dense Hessian of a scalar ``func`` at the flat point ``x``: ``vmap`` of jvp-of-grad."""
    load_forward_ad()
    grad = torch.func.grad(func)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (x,), (v,))[1]

    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    H = torch.func.vmap(hvp, chunk_size=chunk_size)(eye)
    return (H + H.mT) / 2


def _auto_chunk(dim: int, per_column: int) -> int:
    """Chunk of basis vectors so that one chunk's intermediates stay near 256 MB."""
    budget = 256 * 2**20 // 8
    return max(1, min(dim, budget // max(per_column, 1)))


# ----------------------------------------------------------------------------- layer Hessian
def layer_hessian_autodiff(
    params: UFMParams | Sequence[Tensor],
    cfg: UFMConfig,
    layer: int,
    *,
    regularised: bool = False,
    Y: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Dense ``Hess_l = ∂²ℓ/∂vec(W_l)²`` (row-major vec) by automatic differentiation.

    Forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``) applied to the identity
    basis with ``vmap`` (in chunks of ``chunk_size`` columns; default keeps memory near
    256 MB). Valid for every model of this package; at ReLU kinks it inherits PyTorch's
    ``ReLU'(0) = 0``. ``regularised=True`` adds ``λ_{W_l} I`` (digest pitfall 2). This is the
    reference for R2 (v1 Thm 4.1; digest T1) and costs ``d_out d_in`` HVPs.
    """
    tensors = _tensors(params, cfg)
    layer = _check_layer(cfg, layer)
    Yt = _labels_like(cfg, tensors[0], Y)
    W = tensors[layer].detach()
    shape = W.shape

    def f(w: Tensor) -> Tensor:
        ts = list(tensors)
        ts[layer] = w.reshape(shape)
        return fit_loss(ts, cfg, Yt)

    dim = W.numel()
    chunk = chunk_size or _auto_chunk(dim, 4 * cfg.d * cfg.N * cfg.L)
    H = dense_hessian(f, W.reshape(-1), chunk_size=chunk)
    if regularised:
        H = H + cfg.lambda_Ws[layer - 1] * torch.eye(dim, dtype=H.dtype, device=H.device)
    return H


def layer_hessian_factors(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int) -> tuple[Tensor, Tensor]:
    """The factors ``(P, Q)`` with ``Hess_l = P ⊗ Q`` for the linear MSE model (digest §2.4).

    ``P = A^{(l+1)T} A^{(l+1)}`` with ``A^{(l+1)} = W_L ⋯ W_{l+1}`` (``I_K`` for ``l = L``) and
    ``Q = Σ^{(l)} = X_l X_l^T / N`` (feature second moment of the input of ``W_l``). The
    identity holds at every point because ``ℓ`` is quadratic in ``W_l`` (R2, v1 Thm 4.1).
    Raises :class:`ValueError` for a ReLU or CE model, where no single Kronecker product exists.
    """
    if cfg.activation != "linear" or cfg.loss != "mse":
        raise ValueError(
            "cfg must describe the linear MSE model for the Kronecker factors "
            f"(activation='linear', loss='mse'); got activation={cfg.activation!r}, loss={cfg.loss!r}"
        )
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer)
    Ws = tensors[1:]
    A = torch.eye(cfg.K, dtype=Ws[0].dtype, device=Ws[0].device)
    for W in reversed(Ws[layer:]):
        A = A @ W
    X = forward(tensors, "linear").inputs[layer - 1]
    P = A.mT @ A
    Q = X @ X.mT / cfg.N
    return (P + P.mT) / 2, (Q + Q.mT) / 2


def kronecker_eigh(P: Tensor, Q: Tensor, *, k: int | None = None) -> Spectrum:
    """Eigenpairs of the symmetric ``P ⊗ Q`` from those of ``P`` and ``Q`` (digest §2.4).

    Eigenvalues are the products ``α_a β_b`` sorted descending (only the top ``k`` kept when
    ``k`` is given); the eigenvector of ``α_a β_b`` is ``u_a ⊗ v_b``. The big matrix is never
    formed: eigenvectors are kept as factor eigenpairs plus index pairs and built on demand
    (:meth:`Spectrum.vectors`). Cost: two eigendecompositions plus a sort of ``p q`` numbers.
    """
    for name, M in (("P", P), ("Q", Q)):
        if not isinstance(M, Tensor) or M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"{name} must be a square 2-D tensor; got {getattr(M, 'shape', M)!r}")
    a, U = torch.linalg.eigh((P + P.mT) / 2)
    b, V = torch.linalg.eigh((Q + Q.mT) / 2)
    dim = P.shape[0] * Q.shape[0]
    prods = torch.outer(a, b).reshape(-1)
    order = torch.argsort(prods, descending=True, stable=True)
    if k is not None:
        order = order[: _check_k(k, dim)]
    q = Q.shape[0]
    pairs = torch.stack([order // q, order % q], dim=1)
    factors = KroneckerFactors(a, U, b, V, pairs)
    return Spectrum(eigenvalues=prods[order], dim=dim, method="kronecker", kronecker=factors)


def downstream_jacobians(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int, *, relu_prime_at_zero: float = 0.0
) -> Tensor:
    """``B_i = ∂z_i/∂h_{l+1,i}``: Jacobian of the logits w.r.t. the pre-activation made by ``W_l``.

    Returns a ``K x d_out`` tensor shared by all samples for the linear model
    (``A^{(l+1)} = W_L ⋯ W_{l+1}``; ``I_K`` for ``l = L``) and an ``N x K x d_out`` tensor for the
    ReLU model, ``B_i = W_L D_{L,i} W_{L-1} ⋯ W_{l+1} D_{l+1,i}`` with ``D_{m,i}`` the diagonal
    of ReLU derivatives at ``h_{m,i}`` (``ReLU'(0) = relu_prime_at_zero``, PyTorch: 0).
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer)
    c0 = _check_c0(relu_prime_at_zero)
    Ws = tensors[1:]
    ref = Ws[0]
    B = torch.eye(cfg.K, dtype=ref.dtype, device=ref.device)
    if cfg.activation == "linear":
        for W in reversed(Ws[layer:]):
            B = B @ W
        return B
    fwd = forward(tensors, "relu")
    # walk back from the logits: after multiplying by W_m (m = L..l+1) apply the mask of h_m
    for m in range(cfg.L, layer, -1):
        B = B @ Ws[m - 1]
        h = fwd.preacts[m - 1].mT  # N x d, the pre-activation h_m (m >= 2 always here)
        mask = (h > 0).to(h.dtype) + c0 * (h == 0).to(h.dtype)
        B = B * mask[:, None, :] if B.ndim == 3 else B[None] * mask[:, None, :]
    return B


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
        return lambda R: (p * R - p * (p * R).sum(-1, keepdim=True)) / N
    raise ValueError(f"loss must be 'mse' or 'ce'; got {loss!r}")


def layer_hvp(
    params: UFMParams | Sequence[Tensor],
    cfg: UFMConfig,
    layer: int,
    *,
    regularised: bool = False,
    relu_prime_at_zero: float = 0.0,
) -> tuple[MatVec, int]:
    """Matrix-free ``v ↦ Hess_l v`` for any model, and the dimension ``d_out d_in``.

    ``Hess_l vec(V) = vec((1/N) Σ_i B_i^T Q̃_i B_i V x_i x_i^T)`` (module docstring: the layer
    block equals its Gauss-Newton part for piecewise-linear networks), with ``B_i`` from
    :func:`downstream_jacobians`, ``Q̃_i = N ∂²ℓ/∂z_i²`` and ``x_i`` the input of ``W_l``,
    evaluated with batched tensors (no loop over samples). ``v`` may be ``(dim,)`` or a block
    ``(dim, m)``. ``regularised=True`` adds ``λ_{W_l} v``. For the linear MSE model this is
    ``vec(P V Q)`` of :func:`layer_hessian_factors` (R2, v1 Thm 4.1).
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer)
    d_out, d_in = layer_dims(cfg, layer)
    dim = d_out * d_in
    fwd = forward(tensors, cfg.activation)
    X = fwd.inputs[layer - 1]  # d_in x N
    B = downstream_jacobians(tensors, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    apply_Q = logit_hessian_apply(fwd.logits, cfg.loss)
    lam = cfg.lambda_Ws[layer - 1] if regularised else 0.0
    shared = B.ndim == 2

    def matvec(v: Tensor) -> Tensor:
        if v.ndim not in (1, 2) or v.shape[0] != dim:
            raise ValueError(f"v must have shape ({dim},) or ({dim}, m); got {tuple(v.shape)}")
        block = v.ndim == 2
        V = (v.mT if block else v[None]).reshape(-1, d_out, d_in)  # m x d_out x d_in
        U = V @ X  # m x d_out x N: column i is V x_i
        S = torch.einsum("kd,mdn->mnk", B, U) if shared else torch.einsum("nkd,mdn->mnk", B, U)
        R = apply_Q(S)  # m x N x K
        T = torch.einsum("kd,mnk->mdn", B, R) if shared else torch.einsum("nkd,mnk->mdn", B, R)
        out = (T @ X.mT).reshape(-1, dim)  # m x dim
        out = out.mT if block else out[0]
        return out + lam * v if lam else out

    return matvec, dim


def layer_hessian_dense(
    params: UFMParams | Sequence[Tensor],
    cfg: UFMConfig,
    layer: int,
    *,
    regularised: bool = False,
    relu_prime_at_zero: float = 0.0,
) -> Tensor:
    """Dense ``Hess_l = Σ_i (B_i^T Q_i B_i) ⊗ x_i x_i^T`` assembled without autodiff.

    One matrix product ``(d_out², N) x (N, d_in²)`` instead of ``d_out d_in`` HVPs; same
    conventions as :func:`layer_hvp`.
    """
    tensors = [t.detach() for t in _tensors(params, cfg)]
    layer = _check_layer(cfg, layer)
    d_out, d_in = layer_dims(cfg, layer)
    fwd = forward(tensors, cfg.activation)
    X = fwd.inputs[layer - 1]
    N = cfg.N
    B = downstream_jacobians(tensors, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    if B.ndim == 2:
        B = B.expand(N, *B.shape)
    apply_Q = logit_hessian_apply(fwd.logits, cfg.loss)
    QB = apply_Q(B.permute(2, 0, 1)).permute(1, 2, 0)  # N x K x d_out: Q̃_i B_i / N
    M = B.mT @ QB  # N x d_out x d_out
    S = X.mT[:, :, None] * X.mT[:, None, :]  # N x d_in x d_in
    H = (M.reshape(N, -1).mT @ S.reshape(N, -1)).reshape(d_out, d_out, d_in, d_in)
    H = H.permute(0, 2, 1, 3).reshape(d_out * d_in, d_out * d_in)
    H = (H + H.mT) / 2
    if regularised:
        H = H + cfg.lambda_Ws[layer - 1] * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


def _dense_spectrum(H: Tensor, k: int | None, method: str) -> Spectrum:
    vals, vecs = torch.linalg.eigh(H)
    vals, vecs = vals.flip(0), vecs.flip(1)
    if k is not None:
        vals, vecs = vals[:k], vecs[:, :k]
    return Spectrum(eigenvalues=vals, dim=H.shape[0], method=method, explicit_vectors=vecs)


def layer_spectrum(
    params: UFMParams | Sequence[Tensor],
    cfg: UFMConfig,
    layer: int,
    *,
    k: int | None = None,
    method: Literal["auto", "kronecker", "dense", "lanczos"] = "auto",
    regularised: bool = False,
    seed: int = 0,
    relu_prime_at_zero: float = 0.0,
    tol: float | None = None,
) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of the layer Hessian ``Hess_l`` (R2, v1 Thm 4.1).

    ``method``:
      * ``"kronecker"`` -- linear MSE only: :func:`kronecker_eigh` of :func:`layer_hessian_factors`
        (``k`` may be ``None``: all ``d_out d_in`` eigenvalues; vectors built lazily);
      * ``"dense"`` -- ``eigh`` of :func:`layer_hessian_dense`;
      * ``"lanczos"`` -- ``ufmlib.lanczos.top_eigenpairs`` (block Lanczos, ``block_size = k``,
        seeded by ``seed``, relative tolerance ``tol``) on :func:`layer_hvp`; needs ``k``;
      * ``"auto"`` -- kronecker for linear MSE; otherwise dense when ``d_out d_in <= 2500`` or
        ``k`` is ``None``, else lanczos.
    ``regularised=True`` shifts every eigenvalue by ``λ_{W_l}`` (digest pitfall 2);
    ``relu_prime_at_zero`` is the ReLU-kink convention of :func:`layer_hvp` (dense and lanczos).
    """
    layer = _check_layer(cfg, layer)
    d_out, d_in = layer_dims(cfg, layer)
    dim = d_out * d_in
    if k is not None:
        k = _check_k(k, dim)
    methods = ("auto", "kronecker", "dense", "lanczos")
    if method not in methods:
        raise ValueError(f"method must be one of {methods}; got {method!r}")
    linear_mse = cfg.activation == "linear" and cfg.loss == "mse"
    if method == "auto":
        if linear_mse:
            method = "kronecker"
        elif k is None or dim <= DENSE_LIMIT:
            method = "dense"
        else:
            method = "lanczos"
    shift = cfg.lambda_Ws[layer - 1] if regularised else 0.0
    if method == "kronecker":
        P, Q = layer_hessian_factors(params, cfg, layer)
        return kronecker_eigh(P, Q, k=k).shifted(shift)
    if method == "dense":
        H = layer_hessian_dense(params, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
        return _dense_spectrum(H, k, "dense").shifted(shift)
    if k is None:
        raise ValueError("k must be given for method='lanczos' (number of top eigenpairs)")
    from .lanczos import top_eigenpairs

    matvec, _ = layer_hvp(params, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    ref = _tensors(params, cfg)[0]
    res = top_eigenpairs(matvec, dim=dim, k=k, which="LA", seed=seed, tol=tol, dtype=ref.dtype, device=ref.device)
    return Spectrum(
        eigenvalues=res.eigenvalues,
        dim=dim,
        method=f"lanczos: {res.method}",
        explicit_vectors=res.eigenvectors,
        num_matvecs=res.num_matvecs,
        residual_norms=res.residual_norms,
    ).shifted(shift)


# ----------------------------------------------------------------------------- full Hessian
def _flat_setup(params, cfg, include_H: bool):
    tensors = [t.detach() for t in _tensors(params, cfg)]
    start = 0 if include_H else 1
    shapes = [t.shape for t in tensors[start:]]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([t.reshape(-1) for t in tensors[start:]])
    Y = labels(cfg, dtype=theta.dtype, device=theta.device)

    def unflatten(x: Tensor) -> list[Tensor]:
        parts = [p.reshape(s) for p, s in zip(torch.split(x, sizes), shapes)]
        return parts if include_H else [tensors[0], *parts]

    def f(x: Tensor) -> Tensor:
        return fit_loss(unflatten(x), cfg, Y)

    lams = ([cfg.lambda_H] if include_H else []) + list(cfg.lambda_Ws)
    diag = torch.cat([torch.full((s,), lam, dtype=theta.dtype, device=theta.device) for s, lam in zip(sizes, lams)])
    return theta, f, diag


def full_hessian_autodiff(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> Tensor:
    """Dense Hessian of ``ℓ`` over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``), row-major blocks (R7, §5).

    Parameter order is that of :meth:`UFMParams.tensors` without or with ``H_1``; each block is
    the row-major vec of its matrix. ``regularised=True`` adds ``diag(λ_H I, λ_{W_1} I, ...)``.
    Its diagonal blocks are the layer Hessians of R2; digest T6 gives its spectrum at the optimum.
    """
    theta, f, diag = _flat_setup(params, cfg, include_H)
    H = dense_hessian(f, theta, chunk_size=_auto_chunk(theta.numel(), 6 * cfg.d * cfg.N * cfg.L))
    return H + torch.diag(diag) if regularised else H


def full_hvp(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> tuple[MatVec, int]:
    """Matrix-free full-Hessian product ``v ↦ ∇²ℓ v`` (jvp of grad, ``torch.func``) and its dimension.

    Same parameter order and vec convention as :func:`full_hessian_autodiff`; ``v`` may be
    ``(dim,)`` or ``(dim, m)`` (vmapped over columns). One product costs a small multiple of one gradient
    (``benchmarks/spectra.py`` part (d) measures it).
    """
    theta, f, diag = _flat_setup(params, cfg, include_H)
    load_forward_ad()
    grad = torch.func.grad(f)
    dim = theta.numel()

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (theta,), (v,))[1]

    def matvec(v: Tensor) -> Tensor:
        if v.ndim not in (1, 2) or v.shape[0] != dim:
            raise ValueError(f"v must have shape ({dim},) or ({dim}, m); got {tuple(v.shape)}")
        v = v.to(dtype=theta.dtype, device=theta.device)
        out = hvp(v) if v.ndim == 1 else torch.func.vmap(hvp, in_dims=1, out_dims=1)(v)
        if regularised:
            out = out + (diag * v if v.ndim == 1 else diag[:, None] * v)
        return out

    return matvec, dim


def fit_gradient(
    params: UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int | None = None, *, include_H: bool = False
) -> Tensor:
    """Gradient of the **fit term** ``ℓ`` (not of the regularised loss; digest §6 pitfall 3).

    ``layer=l`` gives ``vec(∇_{W_l} ℓ)`` (row-major, length ``d_out d_in``); ``layer=None`` the
    flat gradient over ``[W_1..W_L]`` (``[H_1, W_1..W_L]`` with ``include_H``), in the order of
    :func:`full_hvp`. At the global minimiser ``∇_{W_l} ℓ = -λ_{W_l} W_l`` (R4, v1 Thm 4.3).
    """
    if layer is not None:
        layer = _check_layer(cfg, layer)
        if include_H:
            raise ValueError("include_H must be False when layer is given")
    theta, f, _ = _flat_setup(params, cfg, include_H)
    g = torch.func.grad(f)(theta)
    if layer is None:
        return g
    sizes = [a * b for a, b in cfg.layer_shapes()]
    start = sum(sizes[: layer - 1])
    return g[start : start + sizes[layer - 1]]
