"""Stochastic Lanczos quadrature of a spectral density, and the weight it puts on predicted levels.

:func:`slq_density` -- stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): for a probe
``v``, the eigenvalues ``theta_j`` of the Lanczos tridiagonal ``T`` and the squared *first*
components ``w_j`` of its eigenvectors are the Gauss quadrature rule (Golub & Welsch 1969) of
the spectral measure ``sum_i (u_i.v)^2/|v|^2 delta(x - lambda_i)``, exact for polynomials of
degree ``2m - 1``. Averaging over Rademacher probes (:func:`rademacher`) estimates the spectral
density ``(1/dim) sum_i delta(x - lambda_i)``, as used for neural-network Hessians by Ghorbani,
Krishnan & Xiao (2019) and Papyan (2020). PyHessian squared the whole eigenvector matrix instead
of its first row until PR #23 (2024); :attr:`SpectralDensity.weights` is tested against dense
spectra. :func:`slq_level_weights` and :func:`slq_weight_tolerance` give the weight on each
predicted level and its Rademacher sampling error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Callable, Sequence

import torch
from torch import Tensor

from .lanczos import MatVec, lanczos_tridiag
from .operators import LinearOperator, as_operator
from .validation import check_int, check_tol, f64_vector

__all__ = ["rademacher", "SpectralDensity", "slq_density", "slq_level_weights", "slq_weight_tolerance"]

F64 = torch.float64


def rademacher(*, num_probes: int, dim: int, seed: int = 0, dtype=torch.float64,
               device="cpu") -> Tensor:
    """Seeded Rademacher (+-1) probe vectors, shape ``(num_probes, dim)``."""
    check_int("num_probes", num_probes, 1)
    check_int("dim", dim, 1)
    gen = torch.Generator(device="cpu").manual_seed(check_int("seed", seed, 0))
    bits = torch.randint(0, 2, (num_probes, dim), generator=gen)
    return (2.0 * bits - 1.0).to(dtype=dtype, device=device)




@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the spectral density ``(1/dim) sum_i delta(x - lambda_i)``.

    Row ``p`` of ``nodes``/``weights`` is the Gauss rule of probe ``p``: weights are
    non-negative and sum to 1 (rows shortened by breakdown are padded with zero weight).
    """

    nodes: Tensor
    weights: Tensor
    dim: int
    num_matvecs: int

    def expectation(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        """Estimate of ``tr f(A) / dim`` (exact per probe for polynomials of degree < 2m)."""
        return (self.weights * f(self.nodes)).sum(dim=1).mean()

    def _scale(self, normalize: str) -> float:
        if normalize not in ("density", "count"):
            raise ValueError(f"normalize must be 'density' or 'count'; got {normalize!r}")
        return float(self.dim) if normalize == "count" else 1.0

    def histogram(self, bins: int = 100, range: tuple[float, float] | None = None, *,
                  normalize: str = "density") -> tuple[Tensor, Tensor]:
        """Probe-averaged weighted histogram; returns ``(values, edges)``.

        ``"density"``: values integrate to 1 over ``range`` (default: all nodes with weight);
        ``"count"``: expected number of eigenvalues per bin (sums to ``dim``).
        """
        bins = check_int("bins", bins, 1)
        scale = self._scale(normalize)
        x = self.nodes.reshape(-1)
        w = self.weights.reshape(-1) / self.nodes.shape[0]
        if range is None:
            live = x[w > 0]
            lo, hi = live.min().item(), live.max().item()
        else:
            lo, hi = float(range[0]), float(range[1])
            if not hi > lo:
                raise ValueError(f"range must satisfy range[0] < range[1]; got {range!r}")
        if hi == lo:
            lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
        edges = torch.linspace(lo, hi, bins + 1, dtype=x.dtype, device=x.device)
        inside = (x >= lo) & (x <= hi)
        idx = torch.clamp(torch.bucketize(x[inside], edges, right=True) - 1, 0, bins - 1)
        mass = torch.zeros(bins, dtype=x.dtype, device=x.device).index_add_(0, idx, w[inside])
        if normalize == "count":
            return mass * scale, edges
        return mass / (edges[1:] - edges[:-1]), edges

    def smoothed(self, grid: Tensor, sigma: float, *, normalize: str = "density") -> Tensor:
        """Gaussian-broadened density on ``grid`` (Ghorbani et al. 2019; Papyan 2020)."""
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number; got {sigma!r}")
        scale = self._scale(normalize)
        grid = torch.as_tensor(grid, dtype=self.nodes.dtype, device=self.nodes.device)
        x = self.nodes.reshape(-1)
        w = self.weights.reshape(-1) / self.nodes.shape[0]
        z = (grid.reshape(-1, 1) - x) / sigma
        dens = (torch.exp(-0.5 * z**2) * w).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))
        return (dens * scale).reshape(grid.shape)


def slq_density(matvec: MatVec | LinearOperator, *, num_steps: int, num_probes: int, dim: int | None = None, seed: int = 0,
                dtype=torch.float64, device="cpu", reorthogonalize: bool = True
                ) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) with Rademacher probes.

    Probe ``p`` is row ``p`` of ``rademacher(num_probes=..., dim=..., seed=seed)``; it starts
    ``num_steps`` Lanczos steps whose tridiagonal ``T = U diag(theta) U^T`` gives nodes
    ``theta`` and weights ``U[0, :]**2`` (Golub & Welsch 1969). ``matvec`` is a
    :class:`ufmlib.operators.LinearOperator` (``dim`` then optional) or a function of ``(dim,)``.
    """
    op = as_operator(matvec, dim=dim, dtype=dtype, device=device)
    dim = op.dim
    num_steps = check_int("num_steps", num_steps, 1, dim)
    probes = rademacher(num_probes=num_probes, dim=dim, seed=seed, dtype=dtype, device=device)
    nodes = torch.zeros(num_probes, num_steps, dtype=dtype, device=device)
    weights = torch.zeros_like(nodes)
    count = 0
    for p in range(num_probes):
        tri = lanczos_tridiag(op, num_steps=num_steps, dtype=dtype, device=device,
                              v0=probes[p], reorthogonalize=reorthogonalize)
        theta, w = tri.quadrature()
        m = theta.shape[0]
        nodes[p, :m], nodes[p, m:] = theta, theta[-1]
        weights[p, :m] = w
        count += tri.num_matvecs
    return SpectralDensity(nodes=nodes, weights=weights, dim=dim, num_matvecs=count)


def slq_level_weights(density, values: Sequence[float], *, atol: float) -> Tensor:
    """Quadrature weight per probe on each predicted level: a ``num_probes x (levels + 1)`` tensor.

    Column ``i`` sums the weights of the nodes within ``atol`` of ``values[i]``; the last
    column holds the weight of all other nodes. For a Rademacher probe ``v`` and a Lanczos run
    that reaches an invariant subspace, the weight on an exact eigenvalue is
    ``||P v||²/||v||²`` (``P`` the projector on its eigenspace), whose mean over probes is
    ``multiplicity/dim`` (Ubaru, Chen & Saad 2017). ``density`` is a :class:`SpectralDensity`.
    """
    if not (hasattr(density, "nodes") and hasattr(density, "weights")):
        raise ValueError(f"density must be a SpectralDensity; got {type(density).__name__}")
    atol = check_tol("atol", atol)
    v = f64_vector("values", values)
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
    sigmas = check_tol("sigmas", sigmas)
    return sigmas * math.sqrt(2 * multiplicity / num_probes) / dim
