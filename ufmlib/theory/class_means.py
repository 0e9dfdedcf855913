"""Predictions from class means, at any point close to deep neural collapse.

The inputs are *measured* quantities at a parameter point: the class means ``M_l`` of the
input of ``W_l`` (``d_l x K``), the downstream products ``A^{(l+1)} = W_L⋯W_{l+1}``
(``K x d_{l+1}``; class-wise Jacobians ``B_c`` in the ReLU model) and the class-mean logits,
all read off a :class:`ufmlib.state.UFMState`. The predictions assume DNC1 (every sample equals
its class mean), so that the layer Hessian is

    Hess_l = (1/K) Σ_c (B_c^T Q_c B_c) ⊗ μ_c μ_c^T

(``B_c = A^{(l+1)}`` and ``Q_c = I_K`` for the linear MSE model; v1 Thm 4.1 in its general,
class-mean form, derived in the book's derivations appendix). When the class means of layer
``l`` are mutually orthogonal and the candidate output directions (rows of ``A^{(l+1)}``, or any
``out_frame``) are eigenvectors of every ``B_c^T Q_c B_c``, the eigenpairs are labelled by
classes: ``(||a_c||² ||μ_{c'}||²/K ; a_c ⊗ μ_{c'})`` for the linear model. When the frames are
not orthogonal (a finite training time, the cross-entropy simplex, ...) that form is not
forced: the eigenpairs of the *same* class-mean formula are computed exactly from the
``K k x K k`` Gram matrix of its factor ``F = [R_c ⊗ μ_c]/√K`` (``R_c R_c^T = B_c^T Q_c B_c``),
and the labels are then plain indices. The within-class part of the feature second moment is
*not* included: these are predictions from class means, to be compared with the measured
matrices, which contain it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from ..config import UFMConfig
from ..model import UFMParams
from ..spectrum import Spectrum
from ..state import UFMState, state_of
from ..validation import check_c0, check_layer, check_rtol
from ._blocks import F64, RTOL, _class_block_spectrum, _class_wise, _gram_eigh, _group, _is_orthogonal, _matrix, _psd_sqrt, _unit

__all__ = ["layer_hessian_from_means", "layer_hessian_at", "weight_gram_from_means"]


def layer_hessian_from_means(
    M: Tensor,
    A: Tensor | Sequence[Tensor],
    *,
    Q: Sequence[Tensor] | None = None,
    out_frame: Tensor | None = None,
    rtol: float = RTOL,
) -> Spectrum:
    """Layer Hessian predicted from class means (R2, v1 Thm 4.1; R8 and R9 forms).

    ``Hess_l = (1/K) Σ_c (B_c^T Q_c B_c) ⊗ μ_c μ_c^T`` with ``M = [μ_1..μ_K]`` the class means
    of the input of ``W_l`` (``d_in x K``), ``A`` either ``A^{(l+1)}`` (``K x d_out``, linear)
    or the ``K`` class-wise Jacobians ``B_c^{(l+1)}`` (ReLU), ``Q`` the per-class logit
    Hessians (CE; default ``I_K``, MSE). For the linear MSE model with orthogonal class means
    and orthogonal rows ``a_c`` of ``A`` the result is the labelled form (module docstring):
    ``(||a_c||² ||μ_{c'}||²/K ; â_c ⊗ μ̂_{c'})``, labels ``(c, c')``; the K² values coincide at
    the global minimiser (``λ_{W_l} γ/(1-γ)``). ``out_frame`` (``d_out x m``) overrides the
    candidate output directions (default: the rows of the class-averaged ``A``). The bulk
    (everything else) is predicted to be 0.
    """
    rtol = check_rtol(rtol)
    M = _matrix("M", M)
    K = M.shape[1]
    Bs = _class_wise("A", A, K)
    if Q is None:
        Rs = [B.T for B in Bs]
    else:
        Q = list(Q)
        if len(Q) != K:
            raise ValueError(f"Q must hold K = {K} matrices; got {len(Q)}")
        Rs = [B.T @ _psd_sqrt(_matrix(f"Q[{c}]", q, rows=K, cols=K)) for c, (B, q) in enumerate(zip(Bs, Q))]
    if out_frame is None:
        out_frame = torch.stack(Bs).mean(dim=0).T
        out_labels = list(range(K))
    else:
        out_frame = _matrix("out_frame", out_frame, rows=Bs[0].shape[1])
        out_labels = list(range(out_frame.shape[1]))
    return _class_block_spectrum(Rs, M, out_frame=out_frame, out_labels=out_labels, rtol=rtol, name="layer Hessian (class means)")


def layer_hessian_at(
    params: UFMState | UFMParams | Sequence[Tensor], cfg: UFMConfig, layer: int, *, c0: float = 0.0,
    zero_tol: float = 0.0, rtol: float = RTOL,
) -> Spectrum:
    """:func:`layer_hessian_from_means` with the class means measured at ``params`` (a state or parameters).

    Works for the linear and ReLU models (class-wise Jacobians with ``ReLU'(0) = c0``; class-mean
    pre-activations within ``zero_tol`` of 0 count as on the kink) and for MSE and CE (``Q_c`` from
    the class-mean logits). The output frame is the next layer's input class means (logit
    directions ``e_c`` for ``W_L``), so at a DNC point labels read ``(c, c')`` for
    ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}``. Computed in float64 on the CPU.
    """
    layer = check_layer(layer, cfg.L)
    c0 = check_c0(c0, name="c0")
    st = state_of(params, cfg).cpu64()
    frame = torch.eye(cfg.K, dtype=F64) if layer == cfg.L else st.M(layer + 1)
    return layer_hessian_from_means(
        st.M(layer), st.class_jacobians(layer + 1, c0=c0, zero_tol=zero_tol), Q=st.class_logit_hessians(),
        out_frame=frame, rtol=rtol,
    )


def weight_gram_from_means(
    M_this: Tensor, M_next: Tensor, *, side: Literal["right", "left"] = "right", rtol: float = RTOL
) -> Spectrum:
    """``W_l^T W_l`` (``side="right"``) or ``W_l W_l^T`` (``"left"``) from class means (R5, v1 Thm 4.4).

    Under DNC1 and DNC3 (``W_l`` maps ``μ_c^{(l)} ↦ μ_c^{(l+1)}`` and vanishes off
    ``span M_l``) ``W_l = M_{l+1} M_l^+``. With orthogonal frames the eigenpairs are
    ``(||μ_c^{(l+1)}||²/||μ_c^{(l)}||² ; μ̂_c^{(l)})`` (right) or ``(… ; μ̂_c^{(l+1)})`` (left),
    labels ``c``; otherwise exact eigenpairs of ``M_{l+1} M_l^+`` with index labels.
    For ``W_L`` pass the class-mean logits as ``M_next`` (``γ I_K`` at the optimum).
    """
    rtol = check_rtol(rtol)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left'; got {side!r}")
    M_this = _matrix("M_this", M_this)
    K = M_this.shape[1]
    M_next = _matrix("M_next", M_next, cols=K)
    if _is_orthogonal(M_this, rtol) and _is_orthogonal(M_next, rtol):
        n0 = torch.linalg.vector_norm(M_this, dim=0)
        n1 = torch.linalg.vector_norm(M_next, dim=0)
        vals = (n1 / n0) ** 2
        V = _unit(M_this if side == "right" else M_next)
        return _group(vals, V, list(range(K)), rtol=rtol, dim=V.shape[0], name=f"W W^T ({side})" if side == "left" else "W^T W")
    W = M_next @ torch.linalg.pinv(M_this)
    F = W.T if side == "left" else W  # W^T W = F^T F with F = W; W W^T = F^T F with F = W^T
    w, V = _gram_eigh(F.T)
    return _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=F.shape[1], name="weight Gram (class means)")
