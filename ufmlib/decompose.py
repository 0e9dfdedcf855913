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
(module docstring of :mod:`ufmlib.hessian`); it is measured here with the autodiff Hessian.

**From the factors.** Every part is a Gram matrix of few rows, ``c R^T R`` (:class:`GramPart`):
``G_class`` of the ``K`` rows ``v_c``, ``G_cross`` of the ``K²`` rows ``v_{cc'} - v_c`` (``c =
1/K``), ``G_within`` of the ``K²n`` rows ``v_{icc'} - v_{cc'}`` and ``G`` of the ``K²n`` rows
``v_{icc'}`` (``c = 1/(Kn)``), while the matrices are ``D x D`` with ``D = d_out d_in`` (3600
for ``d = 60``). The non-zero eigenvalues of ``c R^T R`` are those of the ``r x r`` matrix
``c R R^T`` (eigenvectors ``R^T u / ||R^T u||``); the other ``D - r`` are exactly zero. So
eigenvalues, ranks and orthonormal bases of the ranges (hence ``||P_class P_cross||_2 =
||U_class^T U_cross||_2``) come from eigendecompositions of size ``min(r, D)``, with the same
absolute accuracy (``ε ||c R^T R||``) as a dense ``eigvalsh``. The largest entry of a positive
semi-definite matrix is its largest diagonal entry, ``c max_j ||R[:, j]||²``.

**The Hessian is measured.** ``Hess_l`` is applied by automatic differentiation of ``ℓ`` in
``vec(W_l)`` (forward-over-reverse products, batched; never a dense ``D x D`` matrix) to an
orthonormal basis ``Q`` of the subspace ``S`` spanned by the ``K²n`` Jacobian rows and
``probes`` seeded Gaussian directions (all of ``R^D`` when that is not smaller). ``S`` contains
the range of ``G`` and of every part, so

* :attr:`GNSplit.residual_error` ``= max |(Hess_l - G) Q|`` measures ``E`` on ``S``. For a
  symmetric ``E`` fixed before the random directions are drawn, ``E Q = 0`` implies ``E = 0``
  with probability one (a non-zero ``E`` moves a random direction);
* :attr:`GNSplit.identity_error` ``= max |(G_class + G_cross + G_within - G) Q|``: ``Q`` spans
  a subspace containing the ranges of all four matrices, so this is the full comparison in an
  orthonormal basis;
* the eigenvalues of ``Hess_l`` and of the knock-out matrices ``Hess_l - G_class``,
  ``Hess_l - G_cross`` (:meth:`GNSplit.without`) are the Rayleigh-Ritz values of the measured
  ``Q^T Hess_l Q`` (minus the part's compression). When ``(Hess_l - G) Q = 0``, ``S`` is an
  invariant subspace of ``Hess_l`` on which it equals ``G``, so these are eigenvalues of
  ``Hess_l`` (of ``Hess_l - G_class``, ...), among them all the non-zero ones of ``G``
  (of ``G - G_class``, ...).

The cost is one batched autodiff product with ``K²n + probes`` columns and matrix products
with ``K²n`` rows, not ``D`` Hessian-vector products and dense ``D x D`` eigendecompositions.

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
from functools import cached_property
from typing import Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .hessian import downstream_jacobians, layer_dims, layer_operator_autodiff
from .model import UFMParams
from .operators import LinearOperator, gram_operator
from .state import UFMState, state_of
from .validation import check_int, check_layer

Point = UFMState | UFMParams | Sequence[Tensor]

__all__ = ["jacobian_rows", "GramPart", "GNSplit", "gauss_newton_split"]

GRAM_PARTS = ("class", "cross", "within", "G")
PARTS = (*GRAM_PARTS, "hessian", "residual")


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


def _eigvalsh_desc(M: Tensor) -> Tensor:
    return torch.linalg.eigvalsh((M + M.mT) / 2).flip(0)


@dataclass(frozen=True, eq=False)
class GramPart:
    """``weight R^T R`` for the ``r x D`` rows ``R``: one part of the split (R3, v1 Thm 4.2).

    Never formed as a ``D x D`` matrix unless :meth:`dense` is called. Its eigendecomposition is
    that of the smaller of ``weight R R^T`` (``r x r``) and ``weight R^T R`` (module docstring).
    """

    rows: Tensor
    weight: float
    name: str

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    @property
    def num_rows(self) -> int:
        return self.rows.shape[0]

    @cached_property
    def _eigh(self) -> tuple[Tensor, Tensor, bool]:
        """Eigenvalues (descending), eigenvectors of the small side, and whether it is ``R R^T``."""
        R = self.rows
        by_rows = R.shape[0] <= R.shape[1]
        M = self.weight * (R @ R.mT if by_rows else R.mT @ R)
        vals, vecs = torch.linalg.eigh((M + M.mT) / 2)
        return vals.flip(0), vecs.flip(1), by_rows

    def eigenvalues(self, k: int | None = None) -> Tensor:
        """The ``D`` eigenvalues, descending (or the ``k`` largest); all but ``min(r, D)`` are exactly 0."""
        vals = self._eigh[0]
        if vals.numel() < self.dim:
            vals = torch.cat([vals, vals.new_zeros(self.dim - vals.numel())]).sort(descending=True).values
        return vals if k is None else vals[:k]

    def rank(self, threshold: float) -> int:
        """Number of eigenvalues of magnitude ``> threshold``."""
        return int((self._eigh[0].abs() > threshold).sum())

    def basis(self, threshold: float) -> Tensor:
        """Orthonormal basis (``D x rank``) of the span of the eigenvectors with eigenvalue ``> threshold``."""
        vals, vecs, by_rows = self._eigh
        keep = vals > threshold
        if not by_rows:
            return vecs[:, keep]
        U = self.rows.mT @ vecs[:, keep]  # R^T u has norm sqrt(σ / weight)
        U = U / torch.sqrt(vals[keep] / self.weight)
        return torch.linalg.qr(U).Q if U.shape[1] else U

    def max_abs(self) -> float:
        """Largest entry magnitude: for a PSD matrix the largest diagonal entry, ``weight max_j ||R[:, j]||²``."""
        return self.weight * self.rows.pow(2).sum(dim=0).max().item()

    def matmat(self, V: Tensor) -> Tensor:
        """``weight R^T (R V)``, by :meth:`operator`."""
        return self._operator.matmat(V)

    def compress(self, Q: Tensor) -> Tensor:
        """``Q^T (weight R^T R) Q`` for a ``D x m`` block ``Q``."""
        RQ = self.rows @ Q
        return self.weight * (RQ.mT @ RQ)

    @cached_property
    def _operator(self) -> LinearOperator:
        return gram_operator(self.rows, scale=self.weight, name=f"G_{self.name}")

    def operator(self) -> LinearOperator:
        """The part as a :func:`ufmlib.operators.gram_operator` (one operator per part, counting its products)."""
        return self._operator

    def dense(self) -> Tensor:
        """The ``D x D`` matrix (for small sizes and tests)."""
        M = self.weight * (self.rows.mT @ self.rows)
        return (M + M.mT) / 2


@dataclass(frozen=True, eq=False)
class GNSplit:
    """``Hess_l = G_class + G_cross + G_within + E`` at one point (R3, v1 Thm 4.2).

    The four Gauss-Newton matrices are :class:`GramPart` objects built from the Jacobian rows
    (``G`` directly as ``Av Σ_{c'} v v^T``, so :attr:`identity_error` checks the split).
    ``subspace`` is the orthonormal basis ``Q`` of the span of the Jacobian rows and the seeded
    random directions, and ``hessian_block`` the autodiff product ``Hess_l Q``; ``hessian`` is
    the autodiff operator itself. See the module docstring for what each quantity measures.
    """

    G_class: GramPart
    G_cross: GramPart
    G_within: GramPart
    G: GramPart
    layer: int
    subspace: Tensor
    hessian_block: Tensor
    hessian: LinearOperator

    @property
    def dim(self) -> int:
        """``D = d_out d_in``, the size of every matrix of the split."""
        return self.G.dim

    @property
    def subspace_dim(self) -> int:
        """Dimension of the subspace ``S`` on which the Hessian is measured."""
        return self.subspace.shape[1]

    def part(self, name: str) -> GramPart:
        """The Gram part ``"class"``, ``"cross"``, ``"within"`` or ``"G"``."""
        table = {"class": self.G_class, "cross": self.G_cross, "within": self.G_within, "G": self.G}
        if name not in table:
            raise ValueError(f"name must be one of {GRAM_PARTS}; got {name!r}")
        return table[name]

    @property
    def scale(self) -> float:
        """Largest eigenvalue magnitude of ``G``: the reference for relative rank tolerances."""
        return self.G.eigenvalues(1).abs().max().item()

    @cached_property
    def _G_block(self) -> Tensor:
        return self.G.matmat(self.subspace)

    @cached_property
    def _hessian_compressed(self) -> Tensor:
        T = self.subspace.mT @ self.hessian_block
        return (T + T.mT) / 2

    @cached_property
    def residual_error(self) -> float:
        """``max |(Hess_l - G) Q|``: the residual ``E`` measured on ``S`` with the autodiff Hessian."""
        return (self.hessian_block - self._G_block).abs().max().item()

    @cached_property
    def identity_error(self) -> float:
        """``max |(G_class + G_cross + G_within - G) Q|`` (``S`` contains every part's range)."""
        Q = self.subspace
        total = self.G_class.matmat(Q) + self.G_cross.matmat(Q) + self.G_within.matmat(Q)
        return (total - self._G_block).abs().max().item()

    def eigenvalues(self, name: str, k: int | None = None) -> Tensor:
        """Eigenvalues of ``name``, descending (the ``k`` largest when ``k`` is given).

        A Gram part gives all ``D`` (:meth:`GramPart.eigenvalues`). ``"hessian"`` gives the
        ``subspace_dim`` Rayleigh-Ritz values of the autodiff ``Q^T Hess_l Q``; ``"residual"`` those
        of ``Q^T (Hess_l - G) Q``.
        """
        if name == "hessian":
            vals = _eigvalsh_desc(self._hessian_compressed)
        elif name == "residual":
            vals = _eigvalsh_desc(self._hessian_compressed - self.G.compress(self.subspace))
        elif name in GRAM_PARTS:
            return self.part(name).eigenvalues(k)
        else:
            raise ValueError(f"name must be one of {PARTS}; got {name!r}")
        return vals if k is None else vals[:k]

    def without(self, name: str, k: int | None = None) -> Tensor:
        """Eigenvalues of ``Hess_l - G_name`` (Papyan's knock-out), descending: Rayleigh-Ritz on ``S``.

        ``Q^T Hess_l Q`` is the autodiff measurement and ``Q^T G_name Q`` the part's compression;
        with ``(Hess_l - G) Q = 0`` (:attr:`residual_error`) these are eigenvalues of
        ``Hess_l - G_name``, among them all the non-zero ones of ``G - G_name``.
        """
        vals = _eigvalsh_desc(self._hessian_compressed - self.part(name).compress(self.subspace))
        return vals if k is None else vals[:k]

    def ranks(self, *, rtol: float = 1e-9) -> dict[str, int]:
        """Numerical ranks of the three parts and of ``G``: eigenvalues ``> rtol * scale``."""
        s = self.scale
        return {name: self.part(name).rank(rtol * s) for name in ("within", "cross", "class", "G")}

    def basis(self, name: str, *, rtol: float = 1e-9) -> Tensor:
        """Orthonormal basis of the range of a Gram part (eigenvalues ``> rtol * scale``), ``D x rank``."""
        return self.part(name).basis(rtol * self.scale)

    def range_orthogonality(self, *, rtol: float = 1e-9) -> float:
        """``||P_class P_cross||_2 = ||U_class^T U_cross||_2``, 0 when the two ranges are orthogonal (R3)."""
        Uc, Ux = self.basis("class", rtol=rtol), self.basis("cross", rtol=rtol)
        if Uc.shape[1] == 0 or Ux.shape[1] == 0:
            return 0.0
        return torch.linalg.matrix_norm(Uc.mT @ Ux, ord=2).item()

    def operator(self, name: str) -> LinearOperator:
        """``name`` as a :class:`ufmlib.operators.LinearOperator`: a Gram part, ``"hessian"`` (autodiff)
        or ``"residual"`` (``Hess_l - G``), e.g. for :func:`ufmlib.lanczos.top_eigenpairs`."""
        if name == "hessian":
            return self.hessian
        if name == "residual":
            return self.hessian - self.G.operator()
        return self.part(name).operator()


def _subspace(rows: Tensor, probes: int, seed: int) -> Tensor:
    """Orthonormal basis of the span of ``rows`` (``r x D``) and ``probes`` seeded Gaussian directions."""
    r, D = rows.shape
    if r + probes >= D:
        return torch.eye(D, dtype=rows.dtype, device=rows.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    P = torch.randn(D, probes, generator=gen, dtype=torch.float64).to(dtype=rows.dtype, device=rows.device)
    scale = torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
    return torch.linalg.qr(torch.cat([(rows / scale).mT, P], dim=1)).Q


def gauss_newton_split(params: Point, cfg: UFMConfig, layer: int, *, probes: int = 16, seed: int = 0,
                       hessian: LinearOperator | None = None) -> GNSplit:
    """The class / cross-class / within-class split of the layer-``layer`` Gauss-Newton matrix.

    See the module docstring for the definitions (R3, v1 Thm 4.2; Papyan 2020) and for how each
    quantity is computed. MSE gives R3's split; CE uses Papyan's probability-weighted rows.
    The parts are kept as rows (:class:`GramPart`); the Hessian is measured on the span of the
    Jacobian rows and ``probes`` Gaussian directions drawn with ``seed``. ``hessian`` is the
    operator measured against ``G`` (default :func:`layer_operator_autodiff`; any
    :class:`ufmlib.operators.LinearOperator` of size ``d_out d_in``, e.g. a diagonal block of
    :func:`ufmlib.full_hessian.block_hvp`).
    """
    st = state_of(params, cfg)
    layer = check_layer(layer, cfg.L)
    probes = check_int("probes", probes, 0)
    seed = check_int("seed", seed, 0)
    v = jacobian_rows(st, cfg, layer)  # K x n x K x D
    K, n, _, D = v.shape
    v_cc = v.mean(dim=1)  # K x K x D
    v_c = v_cc.mean(dim=1)  # K x D
    flat = v.reshape(-1, D)
    G_class = GramPart(v_c, 1.0, "class")
    G_cross = GramPart((v_cc - v_c[:, None, :]).reshape(-1, D), 1.0 / K, "cross")
    G_within = GramPart((v - v_cc[:, None, :, :]).reshape(-1, D), 1.0 / (K * n), "within")
    G = GramPart(flat, 1.0 / (K * n), "G")
    Q = _subspace(flat, probes, seed)
    H = layer_operator_autodiff(st, cfg, layer) if hessian is None else hessian
    if not isinstance(H, LinearOperator) or H.dim != D:
        raise ValueError(f"hessian must be a LinearOperator of size {D}; got {H!r}")
    return GNSplit(G_class, G_cross, G_within, G, layer, Q, H @ Q, H)
