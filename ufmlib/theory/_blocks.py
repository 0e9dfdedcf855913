"""Shared machinery of the predictions: class-block eigenproblems, level grouping, frames.

Private to :mod:`ufmlib.theory`. Everything is float64 on the CPU; vectors are row-major vecs,
``vec(a b^T) = a ⊗ b`` (the book's notation page).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..config import UFMConfig
from ..model import class_means, forward
from ..optimum import DNCOptimum, construct_minimiser, dnc_optimum
from ..spectrum import Spectrum, merge_levels
from ..validation import check_matrix, f64

F64 = torch.float64
RTOL = 1e-8  # relative tolerance for "equal" eigenvalues and for orthogonality checks
ZERO_RTOL = 1e-12  # eigenvalues below this fraction of the largest are predicted zeros


def _matrix(name: str, M, rows: int | None = None, cols: int | None = None) -> Tensor:
    """A 2-D tensor argument as float64 on the CPU (:func:`ufmlib.validation.check_matrix`)."""
    return f64(check_matrix(name, M, rows, cols))


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """Row-major ``vec(a b^T) = a ⊗ b`` for vectors, column by column for matrices."""
    if a.ndim == 1:
        return torch.outer(a, b).reshape(-1)
    return torch.einsum("ij,kj->ikj", a, b).reshape(a.shape[0] * b.shape[0], -1)


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=0, keepdim=True).clamp_min(torch.finfo(F64).tiny)


def _is_orthogonal(M: Tensor, rtol: float) -> bool:
    """Columns mutually orthogonal (zero columns allowed), relative to the largest norm²."""
    G = M.T @ M
    scale = float(torch.diagonal(G).abs().max()) if G.numel() else 0.0
    if scale == 0.0:
        return True
    off = G - torch.diag(torch.diagonal(G))
    return float(off.abs().max()) <= rtol * scale


def _class_wise(name: str, A, K: int) -> list[Tensor]:
    """``A`` as a list of ``K`` class-wise ``K x d`` matrices (one shared tensor is repeated)."""
    if isinstance(A, Tensor):
        A = _matrix(name, A, rows=K)
        return [A] * K
    A = list(A)
    if len(A) != K:
        raise ValueError(f"{name} must be one K x d tensor or a sequence of K = {K} of them; got {len(A)}")
    out = [_matrix(f"{name}[{c}]", a, rows=K) for c, a in enumerate(A)]
    if len({a.shape for a in out}) != 1:
        raise ValueError(f"{name}: all class-wise matrices must have the same shape")
    return out


def _group(
    values: Tensor,
    vectors: Tensor | None,
    labels: Sequence | None,
    *,
    rtol: float,
    dim: int,
    name: str,
    kind: str = "eigenvalues",
    zero_rtol: float = ZERO_RTOL,
) -> Spectrum:
    """Sort descending, drop (relative) zeros into the bulk, merge equal values into levels."""
    values = f64(values).reshape(-1)
    scale = float(values.abs().max()) if values.numel() else 0.0
    keep = values.abs() > zero_rtol * scale if scale > 0 else torch.zeros_like(values, dtype=torch.bool)
    idx = torch.nonzero(keep).reshape(-1)
    idx = idx[torch.argsort(values[idx], descending=True, stable=True)]
    levels, mults = merge_levels(values[idx], rtol=rtol, scale=scale)
    vecs = None if vectors is None else vectors[:, idx]
    labs = None if labels is None else tuple(labels[int(i)] for i in idx)
    return Spectrum.from_levels(
        torch.tensor(levels, dtype=F64), mults, vectors=vecs, labels=labs, bulk_value=0.0, dim=dim, name=name,
        kind=kind, method="class means",
    )


def _gram_eigh(F: Tensor, *, zero_rtol: float = ZERO_RTOL) -> tuple[Tensor, Tensor]:
    """Non-zero eigenpairs of ``F F^T`` through the small Gram matrix ``F^T F``."""
    G = F.T @ F
    G = 0.5 * (G + G.T)
    w, U = torch.linalg.eigh(G)
    scale = float(w.abs().max()) if w.numel() else 0.0
    keep = w > zero_rtol * scale if scale > 0 else torch.zeros_like(w, dtype=torch.bool)
    w, U = w[keep], U[:, keep]
    V = (F @ U) / torch.sqrt(w)
    return w, V


def _psd_sqrt(Q: Tensor) -> Tensor:
    w, U = torch.linalg.eigh(0.5 * (Q + Q.T))
    return (U * torch.sqrt(w.clamp_min(0.0))) @ U.T


def _class_block_spectrum(
    Rs: Sequence[Tensor],
    M: Tensor,
    *,
    out_frame: Tensor | None,
    out_labels: Sequence | None,
    rtol: float,
    name: str,
) -> Spectrum:
    """Eigenpairs of ``(1/K) Σ_c (R_c R_c^T) ⊗ μ_c μ_c^T`` (``μ_c`` = column ``c`` of ``M``).

    Labelled route (orthogonal ``μ_c`` and an ``out_frame`` whose orthonormal columns are
    eigenvectors of every ``P_c = R_c R_c^T`` spanning its range): the matrix is block diagonal
    over the input class, eigenpairs ``(f_j^T P_c f_j ||μ_c||²/K ; f_j ⊗ μ̂_c)`` labelled
    ``(out_labels[j], c)``. Otherwise the exact eigenpairs follow from the Gram matrix of
    ``F = [R_c ⊗ μ_c]/√K`` and are labelled by their index.
    """
    K = M.shape[1]
    d_out, d_in = Rs[0].shape[0], M.shape[0]
    dim = d_out * d_in
    norms = torch.linalg.vector_norm(M, dim=0)
    if out_frame is not None and _is_orthogonal(M, rtol):
        Fh = _unit(out_frame)
        ok = bool((Fh.T @ Fh - torch.eye(Fh.shape[1], dtype=F64)).abs().max() <= rtol)
        ev_all = []
        if ok:
            for c in range(K):
                P = Rs[c] @ Rs[c].T
                PF = P @ Fh
                ev = torch.einsum("ij,ij->j", Fh, PF)
                pn = float(torch.linalg.matrix_norm(P))
                resid = float(torch.linalg.matrix_norm(PF - Fh * ev))
                missing = float(torch.trace(P) - ev.sum())
                if resid > rtol * max(pn, 1e-300) or missing > rtol * max(float(torch.trace(P)), 1e-300):
                    ok = False
                    break
                ev_all.append(ev)
        if ok:
            vals, cols, labs = [], [], []
            Mh = _unit(M)
            for c in range(K):
                for j in range(Fh.shape[1]):
                    vals.append(float(ev_all[c][j]) * float(norms[c]) ** 2 / K)
                    cols.append(_kron(Fh[:, j], Mh[:, c]))
                    labs.append((out_labels[j] if out_labels is not None else j, c))
            V = torch.stack(cols, dim=1) if cols else torch.zeros(dim, 0, dtype=F64)
            return _group(torch.tensor(vals, dtype=F64), V, labs, rtol=rtol, dim=dim, name=name)
    F = torch.cat([_kron(R, M[:, c : c + 1].expand(-1, R.shape[1])) for c, R in enumerate(Rs)], dim=1) / math.sqrt(K)
    w, V = _gram_eigh(F)
    return _group(w, V, list(range(w.shape[0])), rtol=rtol, dim=dim, name=name)


def _require_optimum(cfg: UFMConfig) -> DNCOptimum:
    """The DNC global minimiser of ``cfg``; :class:`ufmlib.optimum.NoDNCMinimiserError` when it is zero."""
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    return dnc_optimum(cfg).require_global()


def _frames(cfg: UFMConfig, frames: str) -> list[Tensor]:
    """Unit class-mean frames ``U_1..U_{L+1}`` (``d x K``; ``U_{L+1} = I_K``) of the constructed minimiser."""
    # the unit frames do not depend on n (and condition (2) holding for n implies it for n = 1),
    # so build the minimiser with one sample per class: H_1 stays d x K
    params = construct_minimiser(cfg.replace(n=1, dtype="float64", device="cpu"), frames=frames)
    fw = forward(params, "linear")
    return [_unit(class_means(X, cfg.K)) for X in fw.inputs] + [torch.eye(cfg.K, dtype=F64)]


def _layer_dim(cfg: UFMConfig, layer: int) -> int:
    return (cfg.K if layer == cfg.L else cfg.d) * cfg.d
