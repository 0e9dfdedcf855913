"""The full Hessian over all parameters, its Gauss-Newton part and the fit gradient (R7).

The flat parameter vector is ``θ = [vec(W_1); ...; vec(W_L)]`` (or ``[vec(H_1); vec(W_1); ...]``
with ``include_H``), every block the row-major vec of its matrix (:func:`layer_blocks` cuts it
back into layers). Measured routes:

* :func:`full_hessian_autodiff` -- dense, by ``torch.func`` (forward-over-reverse);
* :func:`full_hvp` / :func:`full_operator` -- matrix-free products ``v ↦ ∇²ℓ v`` (the
  R-operator written out, a block in one batched pass), for the eigensolvers;
  :func:`full_hvp_autodiff` -- the same products by automatic differentiation (jvp of grad);
* :func:`full_gauss_newton` -- the dense Gauss-Newton part ``Σ_i J_i^T Q_i J_i``;
* :func:`fit_gradient` -- the gradient of the fit term, per layer or flat;
* :func:`frame_coefficients` -- a flat vector's blocks in the class-mean frames, the coordinates
  in which the outlier eigenvectors of R7 are (anti)symmetric.

Unlike the layer blocks (:mod:`ufmlib.hessian`), the cross-layer blocks of the full Hessian have
a residual term beyond Gauss-Newton, because the logits are multilinear in the weights; at the
minimiser it splits the ``K²`` Gauss-Newton outliers into two levels
(:func:`ufmlib.theory.optimum_full_hessian`). Everything concerns the **fit term** ``ℓ``;
``regularised=True`` adds the penalty diagonal.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .autodiff import auto_chunk, dense_hessian, load_forward_ad
from .config import UFMConfig
from .model import UFMParams, fit_loss, forward, labels, logit_hessian_apply
from .operators import LinearOperator
from .state import UFMState, state_of
from .validation import check_layer

__all__ = [
    "full_hessian_autodiff",
    "full_hvp",
    "full_hvp_autodiff",
    "full_operator",
    "fit_gradient",
    "full_gauss_newton",
    "layer_blocks",
    "block_hvp",
    "frame_coefficients",
]

F64 = torch.float64
MatVec = Callable[[Tensor], Tensor]
Point = UFMState | UFMParams | Sequence[Tensor]


def _flat_setup(params: Point, cfg: UFMConfig, include_H: bool):
    """The flat point ``θ``, the fit term as a function of it and the penalty diagonal."""
    tensors = state_of(params, cfg).tensors()
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
    params: Point, cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> Tensor:
    """Dense Hessian of ``ℓ`` over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``), row-major blocks (R7).

    Parameter order is that of :meth:`UFMParams.tensors` without or with ``H_1``; each block is
    the row-major vec of its matrix. ``regularised=True`` adds ``diag(λ_H I, λ_{W_1} I, ...)``.
    Its diagonal blocks are the layer Hessians of R2; :func:`ufmlib.theory.optimum_full_hessian`
    predicts its spectrum at the minimiser.
    """
    theta, f, diag = _flat_setup(params, cfg, include_H)
    H = dense_hessian(f, theta, chunk_size=auto_chunk(theta.numel(), 6 * cfg.d * cfg.N * cfg.L))
    return H + torch.diag(diag) if regularised else H


def full_hvp_autodiff(
    params: Point, cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> tuple[MatVec, int]:
    """Matrix-free full-Hessian product ``v ↦ ∇²ℓ v`` by automatic differentiation (jvp of grad, ``torch.func``).

    The measurement that :func:`full_hvp` (the same products written out) and the layer blocks of
    :func:`block_hvp` are checked against; same parameter order and vec convention as
    :func:`full_hessian_autodiff`; ``v`` may be ``(dim,)`` or ``(dim, m)`` (vmapped over columns).
    """
    theta, f, diag = _flat_setup(params, cfg, include_H)
    load_forward_ad()
    grad = torch.func.grad(f)
    dim = theta.numel()

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (theta,), (v,))[1]

    def matvec(v: Tensor) -> Tensor:
        _check_vector(v, dim)
        v = v.to(dtype=theta.dtype, device=theta.device)
        out = hvp(v) if v.ndim == 1 else torch.func.vmap(hvp, in_dims=1, out_dims=1)(v)
        if regularised:
            out = out + (diag * v if v.ndim == 1 else diag[:, None] * v)
        return out

    return matvec, dim


def _check_vector(v: Tensor, dim: int) -> None:
    if not isinstance(v, Tensor) or v.ndim not in (1, 2) or v.shape[0] != dim:
        raise ValueError(f"v must have shape ({dim},) or ({dim}, m); got {tuple(getattr(v, 'shape', ()))}")


def full_hvp(
    params: Point, cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> tuple[MatVec, int]:
    """Matrix-free full-Hessian product ``v ↦ ∇²ℓ v`` and its dimension (R7).

    Pearlmutter's R-operator (1994) written out for the deep UFM: with ``x_1 = H_1``,
    ``h_{l+1} = W_l x_l``, ``x_{l+1} = σ(h_{l+1})``, ``Z = W_L x_L``, the gradient of the
    fit term is ``∇_{W_l} ℓ = δ_l x_l^T`` with ``δ_L = ∂ℓ/∂Z`` and
    ``δ_l = σ'(h_{l+1}) ⊙ W_{l+1}^T δ_{l+1}``. Its derivative along ``V = (V_H, V_1..V_L)`` is
    ``dδ_l x_l^T + δ_l dx_l^T`` with the forward tangent
    ``dx_{l+1} = σ'(h_{l+1}) ⊙ (V_l x_l + W_l dx_l)`` (``dx_1 = V_H``, 0 without ``H_1``),
    ``dδ_L = Q(dZ)`` (``Q`` the loss Hessian in the logits) and
    ``dδ_l = σ'(h_{l+1}) ⊙ (V_{l+1}^T δ_{l+1} + W_{l+1}^T dδ_{l+1})`` (``σ'' = 0``; ``ReLU'(0) = 0``
    as in PyTorch's autograd). The forward pass and ``δ`` are computed once; a product costs
    about six matrix products per layer, and a block ``(dim, m)`` is multiplied in one batched
    pass. Same parameter order and vec convention as :func:`full_hessian_autodiff`, tested
    against it and against :func:`full_hvp_autodiff`; ``benchmarks/spectra.py`` part (d)
    measures its cost against one gradient.
    """
    st = state_of(params, cfg)
    tensors = st.tensors()
    H1, Ws = tensors[0], tensors[1:]
    L = cfg.L
    fwd = st.forward
    xs = list(fwd.inputs)  # x_1..x_L
    relu = cfg.activation == "relu"
    masks = [(h > 0).to(H1.dtype) for h in fwd.preacts[1:]] if relu else None  # σ'(h_2)..σ'(h_L)
    Z, Y = fwd.logits, st.labels
    N = cfg.N
    gZ = (Z - Y) / N if cfg.loss == "mse" else (torch.softmax(Z, dim=0) - Y) / N
    apply_Q = logit_hessian_apply(Z, cfg.loss)  # rows: (..., N, K)
    deltas: list[Tensor] = [None] * L  # type: ignore[list-item]
    deltas[L - 1] = gZ
    for l in range(L - 2, -1, -1):
        e = Ws[l + 1].mT @ deltas[l + 1]
        deltas[l] = e * masks[l] if relu else e
    shapes = ([tuple(H1.shape)] if include_H else []) + [tuple(W.shape) for W in Ws]
    sizes = [a * b for a, b in shapes]
    dim = sum(sizes)
    lams = ([cfg.lambda_H] if include_H else []) + list(cfg.lambda_Ws)
    diag = torch.cat([torch.full((s,), lam, dtype=H1.dtype, device=H1.device) for s, lam in zip(sizes, lams)])

    def matmat(Vb: Tensor) -> Tensor:  # Vb: m x dim
        m = Vb.shape[0]
        parts = [p.reshape(m, a, b) for p, (a, b) in zip(torch.split(Vb, sizes, dim=1), shapes)]
        VH = parts.pop(0) if include_H else None
        V = parts
        dx = VH  # tangent of x_l (None: zero)
        dxs = [dx]
        for l in range(L - 1):
            dh = V[l] @ xs[l] if dx is None else V[l] @ xs[l] + Ws[l] @ dx
            dx = dh * masks[l] if relu else dh
            dxs.append(dx)
        dZ = V[L - 1] @ xs[L - 1] + Ws[L - 1] @ dx
        dd = apply_Q(dZ.mT).mT  # m x K x N
        out = [None] * L
        for l in range(L - 1, -1, -1):
            g = dd @ xs[l].mT
            if dxs[l] is not None:
                g = g + deltas[l] @ dxs[l].mT
            out[l] = g.reshape(m, -1)
            if l > 0 or include_H:
                e = V[l].mT @ deltas[l] + Ws[l].mT @ dd
                dd = (e * masks[l - 1] if relu else e) if l > 0 else e
        if include_H:
            out.insert(0, dd.reshape(m, -1))
        return torch.cat(out, dim=1)

    def matvec(v: Tensor) -> Tensor:
        _check_vector(v, dim)
        v = v.to(dtype=H1.dtype, device=H1.device)
        out = matmat(v.mT if v.ndim == 2 else v[None]).mT
        out = out if v.ndim == 2 else out[:, 0]
        if regularised:
            out = out + (diag[:, None] * v if v.ndim == 2 else diag * v)
        return out

    return matvec, dim


def full_operator(
    params: Point, cfg: UFMConfig, *, include_H: bool = False, regularised: bool = False
) -> LinearOperator:
    """The full Hessian ``∇²ℓ`` as a :class:`ufmlib.operators.LinearOperator` (products of :func:`full_hvp`,
    a block in one batched pass), for the eigensolvers of :mod:`ufmlib.lanczos` (R7)."""
    matvec, dim = full_hvp(params, cfg, include_H=include_H, regularised=regularised)
    H1 = state_of(params, cfg).params.H1
    return LinearOperator(matvec, dim, dtype=H1.dtype, device=H1.device, name="full Hessian")


def fit_gradient(
    params: Point, cfg: UFMConfig, layer: int | None = None, *, include_H: bool = False
) -> Tensor:
    """Gradient of the **fit term** ``ℓ`` (not of the regularised loss, which vanishes at a critical point).

    ``layer=l`` gives ``vec(∇_{W_l} ℓ)`` (row-major, length ``d_out d_in``); ``layer=None`` the
    flat gradient over ``[W_1..W_L]`` (``[H_1, W_1..W_L]`` with ``include_H``), in the order of
    :func:`full_hvp`. At the global minimiser ``∇_{W_l} ℓ = -λ_{W_l} W_l`` (R4, v1 Thm 4.3).
    """
    if layer is not None:
        layer = check_layer(layer, cfg.L)
        if include_H:
            raise ValueError("include_H must be False when layer is given")
    theta, f, _ = _flat_setup(params, cfg, include_H)
    g = torch.func.grad(f)(theta)
    if layer is None:
        return g
    sizes = [a * b for a, b in cfg.layer_shapes()]
    start = sum(sizes[: layer - 1])
    return g[start : start + sizes[layer - 1]]


def full_gauss_newton(params: Point, cfg: UFMConfig, *, include_H: bool = False) -> Tensor:
    """Dense Gauss-Newton part of the full fit-term Hessian (R7).

    ``G = Σ_i J_i^T Q_i J_i`` with ``J_i = ∂z_i/∂θ`` (logits of sample ``i``) and
    ``Q_i = ∂²ℓ/∂z_i²`` (``I_K/N`` for MSE, ``(diag p_i - p_i p_i^T)/N`` for CE), over
    ``θ = [W_1..W_L]`` or ``[H_1, W_1..W_L]`` flattened row-major in that order (the order of
    :func:`ufmlib.hessian.full_hessian_autodiff`). At the linear MSE minimiser ``G`` has
    ``K²`` eigenvalues ``Σ_l λ_{W_l} γ/(1-γ)`` and is 0 elsewhere (weights only).
    The Jacobian is formed densely (``K N x dim``): for small models only.
    """
    tensors = state_of(params, cfg).cpu64().tensors()
    start = 0 if include_H else 1
    shapes = [t.shape for t in tensors[start:]]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([t.reshape(-1) for t in tensors[start:]])

    def logits(x: Tensor) -> Tensor:
        parts = [p.reshape(s) for p, s in zip(torch.split(x, sizes), shapes)]
        full = parts if include_H else [tensors[0], *parts]
        return forward(full, cfg.activation).logits

    Z = logits(theta)
    J = torch.func.jacrev(logits)(theta)  # K x N x dim
    J = J.permute(1, 0, 2)  # N x K x dim
    QJ = logit_hessian_apply(Z, cfg.loss)(J.permute(2, 0, 1)).permute(1, 2, 0)  # N x K x dim
    G = torch.einsum("nkd,nke->de", J, QJ)
    return (G + G.mT) / 2


def layer_blocks(cfg: UFMConfig, *, include_H: bool = False) -> list[slice]:
    """Slices of the flat parameter vector ``[H_1,] W_1..W_L`` (the order of :func:`full_hvp`)."""
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    sizes = ([cfg.d * cfg.N] if include_H else []) + [a * b for a, b in cfg.layer_shapes()]
    out, start = [], 0
    for s in sizes:
        out.append(slice(start, start + s))
        start += s
    return out


def block_hvp(params: Point, cfg: UFMConfig, index: int, *, include_H: bool = False) -> tuple[MatVec, int]:
    """One diagonal block of the full autodiff Hessian as a matrix-free operator, and its dimension.

    ``index`` counts the blocks of :func:`layer_blocks` from 0 (``H_1`` first when ``include_H``,
    then ``W_1..W_L``). ``v`` (``(dim,)`` or ``(dim, m)``) is placed in that block of a zero
    vector, multiplied by :func:`full_hvp_autodiff` (forward-over-reverse automatic differentiation, no
    closed form) and the same block of the product is returned. For ``W_l`` this is the layer
    Hessian ``Hess_l`` (R2, v1 Thm 4.1); for ``H_1`` the features' Hessian ``F ⊗ I_N`` (R6) --
    measured, so that a Lanczos spectrum of it or a comparison with the Kronecker factors is an
    independent check of those statements.
    """
    blocks = layer_blocks(cfg, include_H=include_H)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(blocks):
        raise ValueError(f"index must be an integer in 0..{len(blocks) - 1}; got {index!r}")
    matvec, dim = full_hvp_autodiff(params, cfg, include_H=include_H)
    sl = blocks[index]
    size = sl.stop - sl.start

    def block_matvec(v: Tensor) -> Tensor:
        if v.ndim not in (1, 2) or v.shape[0] != size:
            raise ValueError(f"v must have shape ({size},) or ({size}, m); got {tuple(v.shape)}")
        full = torch.zeros((dim, *v.shape[1:]), dtype=v.dtype, device=v.device)
        full[sl] = v
        return matvec(full)[sl]

    return block_matvec, size


def frame_coefficients(vectors: Tensor, params: Point, cfg: UFMConfig) -> Tensor:
    """Coefficient matrices ``C_l = Û_{l+1}^T V_l Û_l`` of flat weight-space vectors (R7).

    ``vectors`` is ``dim x k`` over ``[W_1..W_L]`` (flat, row-major; a 1-D vector is one
    column); ``V_l`` is the block of ``W_l`` reshaped to ``d_out x d_in``; ``Û_l`` holds the
    normalised class means of the input of ``W_l`` measured at ``params`` (``Û_{L+1} = I_K``,
    the logit directions). Returns a ``k x L x K x K`` tensor. When every block lies in its
    frames, ``Σ_l ||C_l||_F² = ||v||²``; at the minimiser the upper outlier level of the full
    Hessian has antisymmetric ``C_l``, the lower one symmetric ``C_l`` (R7). The
    class means must be mutually orthogonal (as at the minimiser), else :class:`ValueError`.
    """
    st = state_of(params, cfg).cpu64()
    V = vectors.detach().to(dtype=F64, device="cpu")
    if V.ndim == 1:
        V = V[:, None]
    blocks = layer_blocks(cfg)
    if V.ndim != 2 or V.shape[0] != blocks[-1].stop:
        raise ValueError(f"vectors must have {blocks[-1].stop} rows (the weights of cfg); got shape {tuple(V.shape)}")
    K = cfg.K
    frames = []
    for M in st.input_means:
        G = M.T @ M
        if float((G - torch.diag(torch.diagonal(G))).abs().max()) > 1e-8 * float(torch.diagonal(G).max()):
            raise ValueError("the class means at params must be mutually orthogonal (a DNC point)")
        frames.append(M / torch.linalg.vector_norm(M, dim=0))
    frames.append(torch.eye(K, dtype=F64))
    out = torch.empty(V.shape[1], cfg.L, K, K, dtype=F64)
    for l, (sl, (a, b)) in enumerate(zip(blocks, cfg.layer_shapes())):
        Vl = V[sl].T.reshape(-1, a, b)
        out[:, l] = frames[l + 1].T @ Vl @ frames[l]
    return out
