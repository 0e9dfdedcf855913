"""Papyan-style Gauss-Newton decomposition of a layer Hessian (R3, v1 Thm 4.2).

For the MSE fit term the layer Hessian splits as ``Hess_l = G + E`` with the Gauss-Newton
(Fisher) part ``G = Av_{ic} Σ_{c'} v_{icc'} v_{icc'}^T`` built from the Jacobian rows (v1
App. B)

    v_{icc'} = ∂z_{ic,c'}/∂vec(W_l) = a_{c'}^{(l+1)} ⊗ h_{ic}^{(l)}     (linear model),

the row ``c'`` of ``B_i ⊗ x_i^T`` in general (``B_i = ∂z_i/∂h_{l+1,i}``, ``x_i`` the input of
``W_l``; see :mod:`ufmlib.hessian`). With ``v_{cc'} = Av_i v_{icc'}`` and
``v_c = Av_{c'} v_{cc'}`` the exact identity ``G = G_class + G_cross + G_within`` holds for

    G_class  = Σ_c v_c v_c^T,
    G_cross  = Av_c Σ_{c'} (v_{cc'} - v_c)(v_{cc'} - v_c)^T,
    G_within = Av_c Σ_{c'} Av_i (v_{icc'} - v_{cc'})(v_{icc'} - v_{cc'})^T.

At the global minimiser of the linear MSE model (R3): ``G_within = 0``, ``G_cross`` has rank
``K(K-1)`` (the mini-bulk), ``G_class`` rank ``K`` (the class outliers), all non-zero
eigenvalues equal ``λ_{W_l} γ/(1-γ)`` and the two ranges are orthogonal. The
residual ``E = Hess_l - G`` vanishes for every layer block of a piecewise-linear network
(module docstring of :mod:`ufmlib.hessian`); it is computed here from the autodiff Hessian.

**Cross-entropy.** The loss Hessian w.r.t. the logits is then ``Q_i = diag(p_i) - p_i p_i^T``
instead of ``I_K``. Following Papyan (2019, 2020) we write
``Q_i = Σ_{c'} p_{ic'} (e_{c'} - p_i)(e_{c'} - p_i)^T`` and use the weighted, centred rows

    v_{icc'} = sqrt(p_{ic'}) (B_i[c'] - Σ_{c''} p_{ic''} B_i[c'']) ⊗ x_i,

so that ``G = Av Σ_{c'} v v^T`` is again the Gauss-Newton matrix, ``c'`` still labels a logit
and the identity above stays exact. (The symmetric square root ``Q_i^{1/2}`` would also factor
``Q_i`` but annihilates ``Σ_{c'} v_{icc'}``, i.e. makes ``G_class`` identically zero.) R3's
ranks and levels are statements about MSE; for CE the split is a measurement only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .hessian import downstream_jacobians, layer_dims, layer_hessian_autodiff
from .model import UFMParams
from .state import UFMState, state_of
from .validation import check_layer

Point = UFMState | UFMParams | Sequence[Tensor]

__all__ = ["jacobian_rows", "GNSplit", "gauss_newton_split", "projector"]

PARTS = ("class", "cross", "within", "G", "hessian", "residual")


def jacobian_rows(params: Point, cfg: UFMConfig, layer: int) -> Tensor:
    """The vectors ``v_{icc'}`` as a ``K x n x K x d_out d_in`` tensor indexed ``[c, i, c', :]``.

    ``c`` is the class of the sample (columns are class-ordered), ``i`` its index
    within the class, ``c'`` the logit. Row-major vec: ``v_{icc'} = B_i[c'] ⊗ x_i`` (MSE);
    probability-weighted and centred for CE (module docstring).
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    d_out, d_in = layer_dims(cfg, layer)
    K, n, N = cfg.K, cfg.n, cfg.N
    fwd = st.forward
    X = fwd.inputs[layer - 1]  # d_in x N
    B = downstream_jacobians(st, cfg, layer)
    if B.ndim == 2:
        B = B.expand(N, *B.shape)
    if cfg.loss == "ce":  # rows sqrt(p_c') (B_i[c'] - p_i^T B_i): Σ_c' of their outer products is B^T Q_i B
        p = torch.softmax(fwd.logits, dim=0).mT  # N x K
        B = p.sqrt()[:, :, None] * (B - (p[:, :, None] * B).sum(dim=1, keepdim=True))
    v = torch.einsum("nka,bn->nkab", B, X).reshape(N, K, d_out * d_in)
    return v.reshape(K, n, K, d_out * d_in)


def projector(M: Tensor, *, rtol: float = 1e-9, scale: float | None = None) -> Tensor:
    """Orthogonal projector onto the range of the symmetric PSD ``M``.

    Eigen-directions with eigenvalue ``> rtol * scale`` count (``scale`` defaults to the largest
    eigenvalue magnitude of ``M``).
    """
    w, U = torch.linalg.eigh((M + M.mT) / 2)
    scale = w.abs().max().item() if scale is None else scale
    keep = U[:, w > rtol * scale]
    return keep @ keep.mT


@dataclass(frozen=True, eq=False)
class GNSplit:
    """``Hess_l = G_class + G_cross + G_within + E`` at one point (R3, v1 Thm 4.2).

    ``G`` is the Gauss-Newton matrix computed directly as ``Av Σ_{c'} v v^T`` (so
    :attr:`identity_error` checks the split), ``hessian`` the autodiff layer Hessian and
    :attr:`residual` ``E = hessian - G``.
    """

    G_class: Tensor
    G_cross: Tensor
    G_within: Tensor
    G: Tensor
    hessian: Tensor
    layer: int

    @property
    def residual(self) -> Tensor:
        return self.hessian - self.G

    @property
    def identity_error(self) -> float:
        """``max |G_class + G_cross + G_within - G|``."""
        return (self.G_class + self.G_cross + self.G_within - self.G).abs().max().item()

    @property
    def scale(self) -> float:
        """Largest eigenvalue magnitude of ``G``: the reference for relative rank tolerances."""
        return torch.linalg.eigvalsh(self.G).abs().max().item()

    def part(self, name: str) -> Tensor:
        """One of ``"class", "cross", "within", "G", "hessian", "residual"``."""
        table = {"class": self.G_class, "cross": self.G_cross, "within": self.G_within,
                 "G": self.G, "hessian": self.hessian}
        if name == "residual":
            return self.residual
        if name not in table:
            raise ValueError(f"name must be one of {PARTS}; got {name!r}")
        return table[name]

    def eigenvalues(self, name: str) -> Tensor:
        """Eigenvalues of :meth:`part` ``name``, descending."""
        M = self.part(name)
        return torch.linalg.eigvalsh((M + M.mT) / 2).flip(0)

    def ranks(self, *, rtol: float = 1e-9) -> dict[str, int]:
        """Numerical ranks of the three parts and of ``G``: eigenvalues ``> rtol * scale``."""
        s = self.scale
        return {name: int((self.eigenvalues(name).abs() > rtol * s).sum()) for name in ("within", "cross", "class", "G")}

    def range_orthogonality(self, *, rtol: float = 1e-9) -> float:
        """``||P_class P_cross||_2``, 0 when the ranges of G_class and G_cross are orthogonal (R3)."""
        s = self.scale
        Pc = projector(self.G_class, rtol=rtol, scale=s)
        Px = projector(self.G_cross, rtol=rtol, scale=s)
        return torch.linalg.matrix_norm(Pc @ Px, ord=2).item()


def gauss_newton_split(params: Point, cfg: UFMConfig, layer: int) -> GNSplit:
    """The class / cross-class / within-class split of the layer-``layer`` Gauss-Newton matrix.

    See the module docstring for the definitions (R3, v1 Thm 4.2; Papyan 2020).
    MSE gives R3's split; CE uses Papyan's probability-weighted rows (module docstring).
    Dense ``d_out d_in``-square matrices; the Hessian is computed by autodiff.
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    v = jacobian_rows(st, cfg, layer)  # K x n x K x D
    K, n, _, D = v.shape
    v_cc = v.mean(dim=1)  # K x K x D
    v_c = v_cc.mean(dim=1)  # K x D
    dev_cross = (v_cc - v_c[:, None, :]).reshape(-1, D)
    dev_within = (v - v_cc[:, None, :, :]).reshape(-1, D)
    flat = v.reshape(-1, D)
    G_class = v_c.mT @ v_c
    G_cross = dev_cross.mT @ dev_cross / K
    G_within = dev_within.mT @ dev_within / (K * n)
    G = flat.mT @ flat / (K * n)
    H = layer_hessian_autodiff(st, cfg, layer)
    sym = lambda M: (M + M.mT) / 2  # noqa: E731
    return GNSplit(sym(G_class), sym(G_cross), sym(G_within), sym(G), H, layer)
