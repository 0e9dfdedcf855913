"""Level matching, agreement tables and a few measured matrices for the spectra chapters.

The chapters on the other deep-learning matrices (R6, digest §4.5/§4.8), the full Hessian (R7,
digest §5) and the cross-entropy layer Hessian (R9, digest §4.9) compare whole measured spectra
with predicted *levels with multiplicities*. This module holds what they share:

* :func:`match_levels` / :func:`match_spectrum` -- assign every measured eigenvalue to the
  nearest predicted level (within an explicit absolute tolerance) and count the eigenvalues
  per level; :class:`LevelTable` renders the comparison as a Markdown table (no pandas);
* :func:`agreement_markdown` -- a "quantity | predicted | measured | relative error" table;
* :func:`full_gauss_newton` -- the dense Gauss-Newton part ``J^T (∂²ℓ/∂z²) J`` of the full
  fit-term Hessian over ``[W_1..W_L]`` (or ``[H_1, W_1..W_L]``), digest §5 item 2;
* :func:`feature_hessian_factor` -- ``F = A^{(1)T} A^{(1)}/N`` with ``∂²ℓ/∂vec(H_1)² = F ⊗ I_N``
  (row-major vec) for the linear MSE model (R6, digest §4.5), so that the ``dN`` eigenvalues
  follow from a ``d x d`` eigendecomposition;
* :func:`layer_blocks` and :func:`frame_coefficients` -- cut a flat full-Hessian vector into its
  layer blocks and express each block in the class-mean frames, ``C_l = Û_{l+1}^T V_l Û_l``
  (the outlier eigenvectors of R7 are stacks of layer-wise eigenvectors with antisymmetric or
  symmetric ``C``);
* :func:`slq_level_weights` and :func:`slq_weight_tolerance` -- the quadrature weight that a
  stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) puts on each predicted level, and the
  Rademacher sampling error of that weight.

Everything is float64 on the CPU; layers are numbered ``1..L`` and matrices are flattened
row-major (``vec(a b^T) = a ⊗ b``, digest §2.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

import torch
from torch import Tensor

from .config import UFMConfig
from .hessian import _tensors, logit_hessian_apply
from .model import UFMParams, forward

__all__ = [
    "LevelRow",
    "LevelTable",
    "match_levels",
    "match_spectrum",
    "agreement_markdown",
    "full_gauss_newton",
    "feature_hessian_factor",
    "layer_blocks",
    "frame_coefficients",
    "slq_level_weights",
    "slq_weight_tolerance",
]

F64 = torch.float64


def _f64(t: Any, name: str) -> Tensor:
    if hasattr(t, "detach"):
        t = t.detach()
    try:
        out = torch.as_tensor(t, dtype=F64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a sequence of numbers; got {type(t).__name__}") from None
    return out.reshape(-1)


def _check_tol(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- level tables
@dataclass(frozen=True)
class LevelRow:
    """One predicted level and what was measured there.

    ``count`` is the number of measured eigenvalues within the tolerance of ``predicted``;
    ``measured_mean`` their mean (``nan`` if none) and ``max_error`` the largest
    ``|measured - predicted|`` among them (``0`` if none).
    """

    label: str
    predicted: float
    multiplicity: int
    count: int
    measured_mean: float
    max_error: float

    @property
    def count_agrees(self) -> bool:
        return self.count == self.multiplicity


@dataclass(frozen=True, eq=False)
class LevelTable:
    """Measured eigenvalues matched to predicted levels (see :func:`match_levels`).

    ``rows`` follow the order of the levels given; ``assignment[j]`` is the row index of
    measured value ``j`` (in the order given) or ``-1`` when no level is within ``atol``;
    ``unmatched`` counts those values, ``atol`` is the matching tolerance.
    """

    rows: tuple[LevelRow, ...]
    assignment: Tensor
    unmatched: int
    atol: float

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(r.count for r in self.rows)

    @property
    def multiplicities(self) -> tuple[int, ...]:
        return tuple(r.multiplicity for r in self.rows)

    @property
    def agrees(self) -> bool:
        """Every level holds exactly its multiplicity and no measured value is left over."""
        return self.unmatched == 0 and all(r.count_agrees for r in self.rows)

    @property
    def max_error(self) -> float:
        """Largest ``|measured - predicted|`` over all matched values."""
        return max((r.max_error for r in self.rows), default=0.0)

    def indices(self, i: int) -> Tensor:
        """Positions (in the measured input) of the values matched to row ``i``."""
        if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < len(self.rows):
            raise ValueError(f"i must be an integer in 0..{len(self.rows) - 1}; got {i!r}")
        return torch.nonzero(self.assignment == int(i)).reshape(-1)

    def markdown(self, *, digits: int = 8) -> str:
        """The table as Markdown: level, predicted value, multiplicity, count, mean, error."""
        if isinstance(digits, bool) or not isinstance(digits, Integral) or not 1 <= digits <= 17:
            raise ValueError(f"digits must be an integer in 1..17; got {digits!r}")
        head = ("| level | predicted | multiplicity | measured count | measured mean | max abs. error |\n"
                "|---|---|---|---|---|---|\n")
        body = "\n".join(
            f"| {r.label} | {r.predicted:.{digits}g} | {r.multiplicity} | {r.count} | "
            f"{r.measured_mean:.{digits}g} | {r.max_error:.1e} |"
            for r in self.rows
        )
        tail = f"\n| unmatched | | 0 | {self.unmatched} | | |" if self.unmatched else ""
        return head + body + tail


def match_levels(
    measured,
    values: Sequence[float],
    multiplicities: Sequence[int],
    *,
    atol: float,
    labels: Sequence[str] | None = None,
) -> LevelTable:
    """Match measured eigenvalues to predicted levels and count them per level.

    Each measured value is assigned to the nearest predicted value when the distance is at
    most ``atol`` (an absolute tolerance, in the units of the eigenvalues), otherwise it is
    "unmatched". ``atol`` must be smaller than half the smallest gap between two levels, so
    that the assignment is unambiguous (else :class:`ValueError`). The result agrees with the
    prediction (:attr:`LevelTable.agrees`) when every level holds exactly its multiplicity.
    """
    x = _f64(measured, "measured")
    v = _f64(values, "values")
    atol = _check_tol("atol", atol)
    mults = list(multiplicities)
    if len(mults) != v.numel() or v.numel() == 0:
        raise ValueError(f"multiplicities must give one entry per value ({v.numel()}, at least one); got {len(mults)}")
    for m in mults:
        if isinstance(m, bool) or not isinstance(m, Integral) or m < 0:
            raise ValueError(f"multiplicities must be integers >= 0; got {m!r}")
    if labels is None:
        labels = [f"{i + 1}" for i in range(v.numel())]
    labels = [str(s) for s in labels]
    if len(labels) != v.numel():
        raise ValueError(f"labels must give one entry per value ({v.numel()}); got {len(labels)}")
    if v.numel() > 1:
        gaps = (v[:, None] - v[None, :]).abs().masked_fill(torch.eye(v.numel(), dtype=torch.bool), math.inf)
        if float(gaps.min()) <= 2 * atol:
            raise ValueError(f"atol must be smaller than half the smallest gap between levels "
                             f"({float(gaps.min()) / 2:.3g}); got {atol:.3g}")
    if x.numel() == 0:
        assign = torch.zeros(0, dtype=torch.long)
    else:
        dist = (x[:, None] - v[None, :]).abs()
        best = dist.min(dim=1)
        assign = torch.where(best.values <= atol, best.indices, torch.full_like(best.indices, -1))
    rows = []
    for i, (val, m, lab) in enumerate(zip(v.tolist(), mults, labels)):
        got = x[assign == i]
        rows.append(LevelRow(
            label=lab, predicted=val, multiplicity=int(m), count=int(got.numel()),
            measured_mean=float(got.mean()) if got.numel() else math.nan,
            max_error=float((got - val).abs().max()) if got.numel() else 0.0,
        ))
    return LevelTable(rows=tuple(rows), assignment=assign, unmatched=int((assign < 0).sum()), atol=atol)


def match_spectrum(measured, predicted, *, atol: float, labels: Sequence[str] | None = None) -> LevelTable:
    """:func:`match_levels` against a :class:`ufmlib.theory.PredictedSpectrum`.

    When ``measured`` holds the whole spectrum (``predicted.dim`` values) the bulk value is
    added as a last level with multiplicity ``dim - rank`` (label ``"bulk"``) unless it
    coincides with a listed level, in which case that level's multiplicity is increased.
    When it holds fewer values (the top of the spectrum), only the listed levels are used.
    """
    for attr in ("values", "multiplicities", "bulk_value", "dim"):
        if not hasattr(predicted, attr):
            raise ValueError(f"predicted must be a PredictedSpectrum; got {type(predicted).__name__}")
    x = _f64(measured, "measured")
    values = [float(t) for t in predicted.values.tolist()]
    mults = [int(m) for m in predicted.multiplicities]
    labs = list(labels) if labels is not None else [f"{i + 1}" for i in range(len(values))]
    if len(labs) != len(values):
        raise ValueError(f"labels must give one entry per level of predicted ({len(values)}); got {len(labs)}")
    if predicted.dim is not None and x.numel() == predicted.dim:
        rest = predicted.dim - sum(mults)
        if rest > 0:
            bulk = float(predicted.bulk_value or 0.0)
            same = [i for i, val in enumerate(values) if abs(val - bulk) <= atol]
            if same:
                mults[same[0]] += rest
            else:
                values.append(bulk)
                mults.append(rest)
                labs.append("bulk")
    return match_levels(x, values, mults, atol=atol, labels=labs)


def agreement_markdown(rows: Sequence[Sequence[Any]], *, digits: int = 10,
                       headers: Sequence[str] = ("quantity", "predicted", "measured", "relative error")) -> str:
    """A Markdown agreement table from ``(quantity, predicted, measured)`` rows.

    The last column is ``|measured - predicted|/|predicted|``; for a predicted value of 0 it
    is the absolute error, marked "(abs)". Extra entries of a row (after the first three) are
    shown between "measured" and the error; ``headers`` names every column in display order.
    """
    if isinstance(digits, bool) or not isinstance(digits, Integral) or not 1 <= digits <= 17:
        raise ValueError(f"digits must be an integer in 1..17; got {digits!r}")
    rows = [tuple(r) for r in rows]
    if not rows or any(len(r) < 3 for r in rows):
        raise ValueError("rows must be a non-empty sequence of (quantity, predicted, measured, ...) tuples")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("rows must all have the same length")
    headers = list(headers)
    if len(headers) != width + 1:
        raise ValueError(f"headers must name {width + 1} columns; got {len(headers)}")

    def fmt(v) -> str:
        if isinstance(v, Real) and not isinstance(v, bool):
            return f"{float(v):.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "---|" * (width + 1)]
    for r in rows:
        name, p, m = r[0], float(r[1]), float(r[2])
        err = abs(m - p) / abs(p) if p != 0 else abs(m - p)
        note = "" if p != 0 else " (abs)"
        cells = [str(name), fmt(p), fmt(m)] + [fmt(e) for e in r[3:]] + [f"{err:.1e}{note}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- measured matrices
def layer_blocks(cfg: UFMConfig, *, include_H: bool = False) -> list[slice]:
    """Slices of the flat parameter vector ``[H_1,] W_1..W_L`` (order of ``ufmlib.hessian.full_hvp``)."""
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    sizes = ([cfg.d * cfg.N] if include_H else []) + [a * b for a, b in cfg.layer_shapes()]
    out, start = [], 0
    for s in sizes:
        out.append(slice(start, start + s))
        start += s
    return out


def full_gauss_newton(params: UFMParams | Sequence[Tensor], cfg: UFMConfig, *, include_H: bool = False) -> Tensor:
    """Dense Gauss-Newton part of the full fit-term Hessian (R7, digest §5 item 2).

    ``G = Σ_i J_i^T Q_i J_i`` with ``J_i = ∂z_i/∂θ`` (logits of sample ``i``) and
    ``Q_i = ∂²ℓ/∂z_i²`` (``I_K/N`` for MSE, ``(diag p_i - p_i p_i^T)/N`` for CE), over
    ``θ = [W_1..W_L]`` or ``[H_1, W_1..W_L]`` flattened row-major in that order (the order of
    :func:`ufmlib.hessian.full_hessian_autodiff`). At the linear MSE minimiser ``G`` has
    ``K²`` eigenvalues ``Σ_l λ_{W_l} γ/(1-γ)`` and is 0 elsewhere (weights only).
    The Jacobian is formed densely (``K N x dim``): for small models only.
    """
    tensors = [t.detach().to(dtype=F64, device="cpu") for t in _tensors(params, cfg)]
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


def feature_hessian_factor(params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> Tensor:
    """``F = A^{(1)T} A^{(1)}/N`` (``d x d``) with ``∂²ℓ/∂vec(H_1)² = F ⊗ I_N`` (R6, digest §4.5).

    ``A^{(1)} = W_L ⋯ W_1``; row-major vec of the ``d x N`` matrix ``H_1`` (the column-major
    order would give ``I_N ⊗ F``). Exact at every point of the linear MSE model, because the
    fit term is quadratic in ``H_1``. The ``dN`` eigenvalues of the Hessian are those of
    ``F``, each ``N`` times (:func:`ufmlib.hessian.kronecker_eigh` with ``I_N``); at the
    minimiser ``F`` has ``K`` eigenvalues ``λ_H γ/(1-γ)``.
    """
    if cfg.activation != "linear" or cfg.loss != "mse":
        raise ValueError("cfg must describe the linear MSE model (activation='linear', loss='mse'); "
                         f"got activation={cfg.activation!r}, loss={cfg.loss!r}")
    tensors = [t.detach().to(dtype=F64, device="cpu") for t in _tensors(params, cfg)]
    A = tensors[-1]
    for W in reversed(tensors[1:-1]):
        A = A @ W
    F = A.mT @ A / cfg.N
    return (F + F.mT) / 2


def frame_coefficients(vectors: Tensor, params: UFMParams | Sequence[Tensor], cfg: UFMConfig) -> Tensor:
    """Coefficient matrices ``C_l = Û_{l+1}^T V_l Û_l`` of flat weight-space vectors (R7).

    ``vectors`` is ``dim x k`` over ``[W_1..W_L]`` (flat, row-major; a 1-D vector is one
    column); ``V_l`` is the block of ``W_l`` reshaped to ``d_out x d_in``; ``Û_l`` holds the
    normalised class means of the input of ``W_l`` measured at ``params`` (``Û_{L+1} = I_K``,
    the logit directions). Returns a ``k x L x K x K`` tensor. When every block lies in its
    frames, ``Σ_l ||C_l||_F² = ||v||²``; at the minimiser the upper outlier level of the full
    Hessian has antisymmetric ``C_l``, the lower one symmetric ``C_l`` (digest §5 item 3). The
    class means must be mutually orthogonal (as at the minimiser), else :class:`ValueError`.
    """
    tensors = [t.detach().to(dtype=F64, device="cpu") for t in _tensors(params, cfg)]
    V = vectors.detach().to(dtype=F64, device="cpu")
    if V.ndim == 1:
        V = V[:, None]
    blocks = layer_blocks(cfg)
    if V.ndim != 2 or V.shape[0] != blocks[-1].stop:
        raise ValueError(f"vectors must have {blocks[-1].stop} rows (the weights of cfg); got shape {tuple(V.shape)}")
    K = cfg.K
    frames = []
    for X in forward(tensors, cfg.activation).inputs:
        M = X.reshape(X.shape[0], K, -1).mean(dim=2)
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


# ----------------------------------------------------------------------------- SLQ
def slq_level_weights(density, values: Sequence[float], *, atol: float) -> Tensor:
    """Quadrature weight per probe on each predicted level: a ``num_probes x (levels + 1)`` tensor.

    Column ``i`` sums the weights of the nodes within ``atol`` of ``values[i]``; the last
    column holds the weight of all other nodes. For a Rademacher probe ``v`` and a Lanczos run
    that reaches an invariant subspace, the weight on an exact eigenvalue is
    ``||P v||²/||v||²`` (``P`` the projector on its eigenspace), whose mean over probes is
    ``multiplicity/dim`` (Ubaru, Chen & Saad 2017). ``density`` is a
    :class:`ufmlib.lanczos.SpectralDensity`.
    """
    if not (hasattr(density, "nodes") and hasattr(density, "weights")):
        raise ValueError(f"density must be a SpectralDensity; got {type(density).__name__}")
    atol = _check_tol("atol", atol)
    v = _f64(values, "values")
    nodes = density.nodes.detach().to(dtype=F64, device="cpu")
    weights = density.weights.detach().to(dtype=F64, device="cpu")
    out = torch.zeros(nodes.shape[0], v.numel() + 1, dtype=F64)
    taken = torch.zeros_like(nodes, dtype=torch.bool)
    for i, val in enumerate(v.tolist()):
        near = (nodes - val).abs() <= atol
        out[:, i] = (weights * near).sum(dim=1)
        taken |= near
    out[:, -1] = (weights * ~taken).sum(dim=1)
    return out


def slq_weight_tolerance(multiplicity: int, dim: int, num_probes: int, *, sigmas: float = 5.0) -> float:
    """``sigmas`` standard deviations of the probe-averaged SLQ weight of one exact level.

    For a Rademacher probe ``||v||² = dim`` exactly and ``Var(v^T P v) = 2(||P||_F² - Σ_i P_ii²)
    <= 2m`` for a rank-``m`` projector ``P``, so the weight ``v^T P v/dim`` has standard
    deviation at most ``sqrt(2m)/dim`` per probe and ``sqrt(2m/num_probes)/dim`` on average.
    """
    for name, val, lo in (("multiplicity", multiplicity, 0), ("dim", dim, 1), ("num_probes", num_probes, 1)):
        if isinstance(val, bool) or not isinstance(val, Integral) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {val!r}")
    sigmas = _check_tol("sigmas", sigmas)
    return sigmas * math.sqrt(2 * multiplicity / num_probes) / dim
