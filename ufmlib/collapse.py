"""Neural-collapse metrics per layer.

Every function takes features as a ``d x N`` matrix whose columns are in class order
(``n`` samples of class 1, then class 2, ...), the project's convention. Which variant of each
metric the paper plots is not stated in its public versions; each docstring names the variant
used here and the paper it comes from (references.bib).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .model import class_means
from .state import UFMState, state_of

__all__ = [
    "class_means",
    "within_between_covariances",
    "nc1",
    "nc1_relative",
    "nc2_etf",
    "nc2_orthogonal",
    "nc3_self_duality",
    "dnc3_alignment",
    "LayerCollapse",
    "collapse_metrics",
]


def _split(X: Tensor, K: int) -> Tensor:
    d, N = X.shape
    if N % K:
        raise ValueError(f"K must divide the number of columns N = {N}; got K = {K}")
    return X.reshape(d, K, N // K)


def within_between_covariances(X: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """``Σ_W = (1/N) Σ_ic (h_ic - μ_c)(h_ic - μ_c)^T`` and ``Σ_B = (1/K) Σ_c (μ_c - μ_G)(μ_c - μ_G)^T``."""
    Xs = _split(X, K)
    M = Xs.mean(dim=2)
    D = (Xs - M[:, :, None]).reshape(X.shape[0], -1)
    Sigma_W = D @ D.T / X.shape[1]
    Mc = M - M.mean(dim=1, keepdim=True)
    Sigma_B = Mc @ Mc.T / K
    return Sigma_W, Sigma_B


def nc1(X: Tensor, K: int) -> float:
    """NC1 = ``tr(Σ_W Σ_B^†)/K`` (Papyan, Han & Donoho 2020, PNAS); 0 at variability collapse.

    The pseudo-inverse keeps eigenvalues of ``Σ_B`` above ``1e-12`` (float64) relative to the
    largest, so a collapsed between-class matrix of rank ``K-1`` is handled exactly.
    """
    Sigma_W, Sigma_B = within_between_covariances(X.double(), K)
    rtol = 1e-12 if X.dtype == torch.float64 else 1e-6
    return float(torch.trace(Sigma_W @ torch.linalg.pinv(Sigma_B, rtol=rtol, hermitian=True)) / K)


def nc1_relative(X: Tensor, K: int) -> float:
    """``||X - M ⊗ 1_n^T||_F / ||X||_F``: the share of the features not explained by class means.

    An alternative NC1 (companion's choice) that stays finite when the class means collapse to zero.
    """
    Xs = _split(X, K)
    M = Xs.mean(dim=2, keepdim=True)
    return float((Xs - M).norm() / X.norm().clamp_min(torch.finfo(X.dtype).tiny))


def _normalised_gram(M: Tensor) -> Tensor:
    G = M.T @ M
    return G / G.norm().clamp_min(torch.finfo(M.dtype).tiny)


def nc2_etf(M: Tensor) -> float:
    """NC2 (simplex ETF, Papyan et al. 2020): ``|| G/||G||_F - S/||S||_F ||_F`` with ``G`` the Gram
    matrix of the globally centred means and ``S = I - 11^T/K``; 0 for a simplex ETF.
    """
    K = M.shape[1]
    Mc = M - M.mean(dim=1, keepdim=True)
    S = torch.eye(K, dtype=M.dtype, device=M.device) - 1.0 / K
    return float((_normalised_gram(Mc) - S / S.norm()).norm())


def nc2_orthogonal(M: Tensor) -> float:
    """NC2 for the bias-free MSE UFM (orthogonal frame, Dang et al. 2023):
    ``|| M^T M/||M^T M||_F - I_K/sqrt(K) ||_F``; 0 when the uncentred means are orthogonal with
    equal norms (the global minimiser of R1: Dang et al. 2023, Thm 3.1; v1 Eq. (2)).
    """
    K = M.shape[1]
    eye = torch.eye(K, dtype=M.dtype, device=M.device)
    return float((_normalised_gram(M) - eye / K**0.5).norm())


def nc3_self_duality(W: Tensor, M: Tensor) -> float:
    """NC3 (self-duality, Papyan et al. 2020): ``|| W/||W||_F - (M - μ_G 1^T)^T/||·||_F ||_F`` for the
    last layer ``W`` (``K x d``) and its input class means ``M`` (``d x K``).
    """
    Mc = (M - M.mean(dim=1, keepdim=True)).T
    return float((W / W.norm() - Mc / Mc.norm()).norm())


def dnc3_alignment(W: Tensor, M: Tensor, *, centred: bool = False) -> float:
    """DNC3 for any layer: ``||W (I - P_M)||_F / ||W||_F``, the share of the rows of ``W`` outside the
    span of the input class means (DNC3 of Garrod & Keating, arXiv 2410.23169, Definition 1;
    Súkeník et al. 2023 use the centred means).

    ``centred=False`` uses the uncentred means, the right span for the bias-free MSE model whose
    global mean is not zero; 0 means every row of ``W`` is a combination of class means.
    """
    B = M - M.mean(dim=1, keepdim=True) if centred else M
    Q, R = torch.linalg.qr(B)
    keep = torch.abs(torch.diagonal(R)) > 1e-10 * torch.abs(torch.diagonal(R)).max().clamp_min(1e-300)
    Q = Q[:, keep]
    resid = W - (W @ Q) @ Q.T
    return float(resid.norm() / W.norm().clamp_min(torch.finfo(W.dtype).tiny))


@dataclass(frozen=True)
class LayerCollapse:
    """Collapse metrics of the input ``X_l`` of layer ``l`` and of ``W_l`` (``layer`` is 1-based)."""

    layer: int
    nc1: float
    nc1_relative: float
    nc2_etf: float
    nc2_orthogonal: float
    dnc3: float


def collapse_metrics(params: UFMState | Sequence[Tensor], cfg: UFMConfig) -> list[LayerCollapse]:
    """:class:`LayerCollapse` for every layer ``l = 1..L`` (features ``X_l`` = input of ``W_l``).

    ``params`` may be a :class:`ufmlib.state.UFMState`, whose forward pass and class means are reused.
    """
    st = state_of(params, cfg)
    out = []
    for l, (X, M, W) in enumerate(zip(st.forward.inputs, st.input_means, st.weights), start=1):
        K = cfg.K
        out.append(LayerCollapse(l, nc1(X, K), nc1_relative(X, K), nc2_etf(M), nc2_orthogonal(M), dnc3_alignment(W, M)))
    return out
