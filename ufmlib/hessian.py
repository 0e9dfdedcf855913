"""Layer-wise Hessians of the deep UFM fit term, exact and matrix-free (R2, v1 Thm 4.1).

Everything here concerns the **fit term** ``ℓ`` of v1 Eq. (1);
``regularised=True`` adds the penalty Hessian (``λ_{W_l} I`` on the ``W_l`` block, ``λ_H I`` on
the ``H_1`` block) and nothing else. Layers are numbered ``1..L`` (``layer=3`` means ``W_3``)
and every weight matrix is flattened **row-major**, ``vec(W) = W.reshape(-1)``, so that
``vec(a b^T) = a ⊗ b`` (the book's notation page).

Routes to the layer Hessian ``Hess_l = ∂²ℓ/∂vec(W_l)²``:

* :func:`layer_hessian_autodiff` -- dense, by ``torch.func`` (forward-over-reverse), for any
  model; the reference every other route is tested against.
* :func:`layer_hessian_factors` + :func:`kronecker_eigh` -- the linear MSE model, where
  ``Hess_l = (A^{(l+1)T} A^{(l+1)}) ⊗ Σ^{(l)}`` at *every* point (R2, v1 Thm 4.1),
  so the ``d_{l+1} d_l`` eigenpairs follow from two small eigendecompositions.
* :func:`layer_hvp` / :func:`layer_operator` / :func:`layer_hessian_dense` -- any model
  (linear/ReLU, MSE/CE) as a sum of per-sample Kronecker terms
  ``Hess_l = Σ_i (B_i^T Q_i B_i) ⊗ x_i x_i^T``, matrix-free (a function, or an operator object
  whose block products are one batched call) or dense.
* :func:`layer_spectrum` -- chooses among the above (``method="auto"``) and returns a
  :class:`ufmlib.spectrum.Spectrum` (with the solver's ``converged`` flag on the Lanczos route).

Every function takes the parameters or a :class:`ufmlib.state.UFMState` (whose forward pass is
reused). The full Hessian over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``) is in
:mod:`ufmlib.full_hessian`.

**Why the layer Hessian is a Gauss-Newton matrix.** Write ``h_{l+1,i} = W_l x_i`` for the
pre-activation that ``W_l`` produces from its (fixed) input ``x_i`` and ``z_i = f(h_{l+1,i})``
for the rest of the network. Then
``Hess_l = Σ_i J_i^T (∂²ℓ/∂z_i²) J_i + Σ_{i,k} (∂ℓ/∂z_{ik}) ∂²z_{ik}/∂vec(W_l)²``. The map
``f`` is a product of weight matrices and ReLUs, hence piecewise linear, and ``h_{l+1,i}`` is
linear in ``W_l``, so the second sum vanishes wherever the ReLU pattern is locally constant:
the layer-wise block equals its Gauss-Newton part, ``J_i = B_i ⊗ x_i^T`` with
``B_i = ∂z_i/∂h_{l+1,i}``. (Cross-layer blocks of the *full* Hessian do not vanish: there
``z`` is multilinear in the weights; see :mod:`ufmlib.full_hessian`.)

**Convention at ReLU kinks.** Exactly at ``h = 0`` the ReLU is not differentiable. Like
PyTorch's autograd (whose ReLU backward passes a gradient only where the output is positive)
we use ``ReLU'(0) = 0`` and ``ReLU'' = 0`` by default, so :func:`layer_hvp` agrees with
:func:`layer_hessian_autodiff` even at the exactly-sparse ReLU optimum (R8).
``relu_prime_at_zero`` selects another value ``c₀ ∈ [0, 1]``
(:func:`ufmlib.model.relu_derivative`); the number of outliers at the optimum depends on it
(``c₀ = 0``: K, ``c₀ = 1``: K²; :func:`ufmlib.theory.relu_optimum_layer_hessian`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from .autodiff import auto_chunk, dense_hessian, load_forward_ad
from .config import UFMConfig
from .model import UFMParams, fit_loss, logit_hessian_apply, relu_derivative
from .operators import LinearOperator
from .spectrum import KroneckerFactors, Spectrum
from .state import UFMState, state_of
from .validation import check_c0, check_int, check_layer

__all__ = [
    "layer_dims",
    "layer_hessian_autodiff",
    "layer_hessian_factors",
    "kronecker_eigh",
    "downstream_jacobians",
    "layer_hvp",
    "layer_operator",
    "layer_operator_autodiff",
    "layer_hessian_dense",
    "layer_spectrum",
    "KinkHessian",
    "measure_kink_hessian",
]

MatVec = Callable[[Tensor], Tensor]
DENSE_LIMIT = 2500  # method="auto": largest non-Kronecker layer Hessian diagonalised densely
Point = UFMState | UFMParams | Sequence[Tensor]


# ----------------------------------------------------------------------------- checks
def _labels_like(st: UFMState, Y: Tensor | None) -> Tensor:
    if Y is None:
        return st.labels
    cfg = st.cfg
    if tuple(Y.shape) != (cfg.K, cfg.N):
        raise ValueError(f"Y must have shape ({cfg.K}, {cfg.N}); got {tuple(Y.shape)}")
    ref = st.params.H1
    return Y.to(dtype=ref.dtype, device=ref.device)


def layer_dims(cfg: UFMConfig, layer: int) -> tuple[int, int]:
    """``(d_out, d_in)`` of ``W_layer``: ``(d, d)`` for ``layer < L``, ``(K, d)`` for ``W_L``."""
    return cfg.layer_shapes()[check_layer(layer, cfg.L) - 1]


# ----------------------------------------------------------------------------- layer Hessian
def _layer_fit_term(st: UFMState, layer: int, Y: Tensor, c0: float | None) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The fit term as a function of ``vec(W_layer)`` alone (every other parameter fixed, the ReLU
    convention ``c0`` as in :func:`ufmlib.model.forward`), and the point ``vec(W_layer)``: what the
    autodiff routes differentiate."""
    tensors = [t.detach() for t in st.tensors()]
    shape = tensors[layer].shape

    def f(w: Tensor) -> Tensor:
        ts = list(tensors)
        ts[layer] = w.reshape(shape)
        return fit_loss(ts, st.cfg, Y, relu_prime_at_zero=c0)

    return f, tensors[layer].reshape(-1)


def layer_hessian_autodiff(
    params: Point,
    cfg: UFMConfig,
    layer: int,
    *,
    regularised: bool = False,
    Y: Tensor | None = None,
    relu_prime_at_zero: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Dense ``Hess_l = ∂²ℓ/∂vec(W_l)²`` (row-major vec) by automatic differentiation.

    Forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``) applied to the identity
    basis with ``vmap`` (in chunks of ``chunk_size`` columns; default keeps memory near
    256 MB). Valid for every model of this package. At ReLU kinks it inherits PyTorch's
    ``ReLU'(0) = 0``, or, with ``relu_prime_at_zero=c0``, the fit term is written with the ReLU of
    :func:`ufmlib.model.forward` whose derivative at an exact zero is ``c0``, so that autodiff
    itself sees the convention: the measurement the kink prediction of R8
    (:func:`ufmlib.theory.relu_optimum_layer_hessian`, book label ``sources-r8``) is tested against
    at the exact non-negative optimum. ``regularised=True`` adds ``λ_{W_l} I`` (the regularised
    loss's Hessian). This is the reference for R2 (v1 Thm 4.1) and costs ``d_out d_in`` HVPs.
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    c0 = None if relu_prime_at_zero is None else check_c0(relu_prime_at_zero)
    f, w = _layer_fit_term(st, layer, _labels_like(st, Y), c0)
    dim = w.numel()
    chunk = chunk_size or auto_chunk(dim, 4 * cfg.d * cfg.N * cfg.L)
    H = dense_hessian(f, w, chunk_size=chunk)
    if regularised:
        H = H + cfg.lambda_Ws[layer - 1] * torch.eye(dim, dtype=H.dtype, device=H.device)
    return H


def layer_hessian_factors(params: Point, cfg: UFMConfig, layer: int) -> tuple[Tensor, Tensor]:
    """The factors ``(P, Q)`` with ``Hess_l = P ⊗ Q`` for the linear MSE model (R2, v1 Thm 4.1).

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
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    A = st.A(layer + 1)
    X = st.forward.inputs[layer - 1]
    P = A.mT @ A
    Q = X @ X.mT / cfg.N
    return (P + P.mT) / 2, (Q + Q.mT) / 2


def kronecker_eigh(P: Tensor, Q: Tensor, *, k: int | None = None) -> Spectrum:
    """Eigenpairs of the symmetric ``P ⊗ Q`` from those of ``P`` and ``Q``.

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
        order = order[: check_int("k", k, 1, dim)]
    q = Q.shape[0]
    pairs = torch.stack([order // q, order % q], dim=1)
    factors = KroneckerFactors(a, U, b, V, pairs)
    return Spectrum(eigenvalues=prods[order], dim=dim, method="kronecker", kronecker=factors)


def downstream_jacobians(params: Point, cfg: UFMConfig, layer: int, *, relu_prime_at_zero: float = 0.0) -> Tensor:
    """``B_i = ∂z_i/∂h_{l+1,i}``: Jacobian of the logits w.r.t. the pre-activation made by ``W_l``.

    Returns a ``K x d_out`` tensor shared by all samples for the linear model
    (``A^{(l+1)} = W_L ⋯ W_{l+1}``; ``I_K`` for ``l = L``) and an ``N x K x d_out`` tensor for the
    ReLU model, ``B_i = W_L D_{L,i} W_{L-1} ⋯ W_{l+1} D_{l+1,i}`` with ``D_{m,i}`` the diagonal
    of ReLU derivatives at ``h_{m,i}`` (``ReLU'(0) = relu_prime_at_zero``, PyTorch: 0;
    :func:`ufmlib.model.relu_derivative`). The class-mean counterpart is
    :meth:`ufmlib.state.UFMState.class_jacobians`.
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    c0 = check_c0(relu_prime_at_zero)
    if cfg.activation == "linear":
        return st.A(layer + 1)
    Ws = st.weights
    B = torch.eye(cfg.K, dtype=Ws[0].dtype, device=Ws[0].device)
    # walk back from the logits: after multiplying by W_m (m = L..l+1) apply the mask of h_m
    for m in range(cfg.L, layer, -1):
        B = B @ Ws[m - 1]
        mask = relu_derivative(st.forward.preacts[m - 1].mT, c0)  # N x d, at the pre-activation h_m (m >= 2)
        B = B * mask[:, None, :] if B.ndim == 3 else B[None] * mask[:, None, :]
    return B


def layer_hvp(
    params: Point,
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
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    d_out, d_in = layer_dims(cfg, layer)
    dim = d_out * d_in
    X = st.forward.inputs[layer - 1]  # d_in x N
    B = downstream_jacobians(st, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    apply_Q = logit_hessian_apply(st.forward.logits, cfg.loss)
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


def layer_operator(
    params: Point,
    cfg: UFMConfig,
    layer: int,
    *,
    regularised: bool = False,
    relu_prime_at_zero: float = 0.0,
) -> LinearOperator:
    """``Hess_l`` as a :class:`ufmlib.operators.LinearOperator`: the products of :func:`layer_hvp`,
    a block of vectors multiplied in one batched call (R2, v1 Thm 4.1)."""
    matvec, dim = layer_hvp(params, cfg, layer, regularised=regularised, relu_prime_at_zero=relu_prime_at_zero)
    ref = state_of(params, cfg).params.H1
    return LinearOperator(matvec, dim, dtype=ref.dtype, device=ref.device, name=f"layer Hessian W_{layer}")


def layer_operator_autodiff(params: Point, cfg: UFMConfig, layer: int) -> LinearOperator:
    """``Hess_l = ∂²ℓ/∂vec(W_l)²`` as a :class:`ufmlib.operators.LinearOperator` by automatic differentiation.

    Forward-over-reverse products (``torch.func.jvp`` of ``torch.func.grad`` of the fit term as a
    function of ``vec(W_l)`` alone, every other parameter fixed), a block ``(D, m)`` in one
    ``vmap`` call (in chunks that keep memory near 256 MB). The matrix-free counterpart of
    :func:`layer_hessian_autodiff`, with the same conventions (row-major vec,
    PyTorch's ``ReLU'(0) = 0``); nothing of the Gauss-Newton structure is used, so it measures
    the residual ``E`` of R3 (v1 Thm 4.2) rather than assuming it.
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    f, x = _layer_fit_term(st, layer, st.labels, None)
    load_forward_ad()
    grad = torch.func.grad(f)
    batched = torch.func.vmap(lambda v: torch.func.jvp(grad, (x,), (v,))[1], in_dims=1, out_dims=1,
                              chunk_size=auto_chunk(x.numel(), 4 * cfg.d * cfg.N * cfg.L))
    return LinearOperator(batched, x.numel(), dtype=x.dtype, device=x.device, name=f"autodiff Hess_{layer}")


def layer_hessian_dense(
    params: Point,
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
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    d_out, d_in = layer_dims(cfg, layer)
    X = st.forward.inputs[layer - 1]
    N = cfg.N
    B = downstream_jacobians(st, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    if B.ndim == 2:
        B = B.expand(N, *B.shape)
    apply_Q = logit_hessian_apply(st.forward.logits, cfg.loss)
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
    params: Point,
    cfg: UFMConfig,
    layer: int,
    *,
    k: int | None = None,
    method: Literal["auto", "kronecker", "dense", "lanczos"] = "auto",
    regularised: bool = False,
    seed: int = 0,
    relu_prime_at_zero: float = 0.0,
    tol: float | None = None,
    max_restarts: int = 100,
    num_steps: int | None = None,
) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of the layer Hessian ``Hess_l`` (R2, v1 Thm 4.1).

    ``method``:
      * ``"kronecker"`` -- linear MSE only: :func:`kronecker_eigh` of :func:`layer_hessian_factors`
        (``k`` may be ``None``: all ``d_out d_in`` eigenvalues; vectors built lazily);
      * ``"dense"`` -- ``eigh`` of :func:`layer_hessian_dense`;
      * ``"lanczos"`` -- ``ufmlib.lanczos.top_eigenpairs`` on :func:`layer_operator` (block
        Lanczos with batched block products, its block matched to clusters of equal eigenvalues,
        seeded by ``seed``, relative tolerance ``tol``, a basis of at most ``num_steps`` vectors
        and at most ``max_restarts`` thick restarts); needs ``k``;
      * ``"auto"`` -- kronecker for linear MSE; otherwise dense when ``d_out d_in <= 2500`` or
        ``k`` is ``None``, else lanczos.
    ``regularised=True`` shifts every eigenvalue by ``λ_{W_l}`` (the regularised loss's Hessian);
    ``relu_prime_at_zero`` is the ReLU-kink convention of :func:`layer_hvp` (dense and lanczos).
    The Lanczos route passes the solver's ``converged`` flag and residuals on in the result.
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    d_out, d_in = layer_dims(cfg, layer)
    dim = d_out * d_in
    if k is not None:
        k = check_int("k", k, 1, dim)
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
        P, Q = layer_hessian_factors(st, cfg, layer)
        return kronecker_eigh(P, Q, k=k).shifted(shift)
    if method == "dense":
        H = layer_hessian_dense(st, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
        return _dense_spectrum(H, k, "dense").shifted(shift)
    if k is None:
        raise ValueError("k must be given for method='lanczos' (number of top eigenpairs)")
    from .lanczos import top_eigenpairs

    op = layer_operator(st, cfg, layer, relu_prime_at_zero=relu_prime_at_zero)
    res = top_eigenpairs(op, k=k, which="LA", seed=seed, tol=tol, max_restarts=max_restarts, num_steps=num_steps,
                         dtype=op.dtype, device=op.device)
    return replace(res, method=f"lanczos: {res.method}").shifted(shift)


# ----------------------------------------------------------------------------- the ReLU kink (R8)
@dataclass(frozen=True)
class KinkHessian:
    """The layer Hessian at a ReLU kink point, measured (see :func:`measure_kink_hessian`).

    ``hessian``: dense autodiff Hessian with ``ReLU'(0) = c0``; ``eigenvalues``: its eigenvalues,
    descending; ``gauss_newton_gap``: ``max |hessian - layer_hessian_dense(...)|``, the distance
    to the Gauss-Newton sum ``Σ_i (B_i^T Q_i B_i) ⊗ x_i x_i^T`` with the same convention.
    """

    layer: int
    c0: float
    hessian: Tensor
    eigenvalues: Tensor
    gauss_newton_gap: float

    def residual(self, spectrum: Spectrum) -> float:
        """``max_j ||H v_j - λ_j v_j||`` over the eigenpairs ``(λ_j, v_j)`` that ``spectrum`` carries
        (a prediction with eigenvectors, e.g. :func:`ufmlib.theory.relu_optimum_layer_hessian`)."""
        V = spectrum.eigenvectors.to(self.hessian)
        values = spectrum.expanded()[: V.shape[1]].to(self.hessian)
        return (self.hessian @ V - V * values).norm(dim=0).max().item()


def measure_kink_hessian(params: Point, cfg: UFMConfig, layer: int, *, c0: float) -> KinkHessian:
    """Measure ``Hess_l`` with the convention ``ReLU'(0) = c0`` (R8, the kink of the ReLU model).

    Autodiff (:func:`layer_hessian_autodiff` with ``relu_prime_at_zero=c0``) gives the Hessian and its eigenvalues; the
    dense Gauss-Newton sum (:func:`layer_hessian_dense`) with the same ``c0`` is compared with it,
    which tests that the layer block of a piecewise-linear network equals its Gauss-Newton part
    (module docstring) also on the kink.
    """
    H = layer_hessian_autodiff(params, cfg, layer, relu_prime_at_zero=c0)
    H_gn = layer_hessian_dense(params, cfg, layer, relu_prime_at_zero=c0)
    return KinkHessian(
        layer=check_layer(layer, cfg.L), c0=float(c0), hessian=H,
        eigenvalues=torch.linalg.eigvalsh(H).flip(0), gauss_newton_gap=(H - H_gn).abs().max().item(),
    )
