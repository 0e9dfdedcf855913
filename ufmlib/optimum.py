"""The closed-form global minimiser of the bias-free MSE deep linear UFM (R1).

The global minimiser is due to Dang et al. (ICML 2023, Thm 3.1); its existence condition is
v1 Eq. (2):

    (K n λ_H Π_l λ_{W_l})^{1/L}  <  (L-1)^{(L-1)/L} / (K L^2).

When it holds, every global minimiser exhibits deep neural collapse and is described by one
number γ ∈ ((L-1)/(2L), 1), the **largest** root of (★)

    γ^{L-1} (1-γ)^{L+1} = K^{L+1} n λ_H Π_l λ_{W_l}.

When it fails the global minimiser is zero (loss 1/2): :class:`DNCOptimum` says so, and every
DNC quantity of it (``γ`` and everything built from it) raises :class:`NoDNCMinimiserError`.

The root is found for ``u = 1 - γ`` in log space, so that λ down to 1e-10 and L up to 12 keep
full relative precision in ``1 - γ`` (the quantity every eigenvalue depends on).

This module also holds the cross-entropy DNC critical point (R9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from scipy.optimize import brentq

from .config import UFMConfig
from .model import UFMParams
from .validation import ConfigError, check_int, check_positive

__all__ = [
    "NoDNCMinimiserError",
    "condition",
    "solve_gamma",
    "DNCOptimum",
    "dnc_optimum",
    "construct_minimiser",
    "common_lambda_threshold",
    "phase_curves",
    "CECriticalPoint",
    "ce_critical_point",
    "construct_ce_critical_point",
]


class NoDNCMinimiserError(ValueError):
    """Condition (2) fails: the global minimiser is zero and has no deep-neural-collapse structure."""


def _lambdas(L: int, lambda_W: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(lambda_W, (list, tuple)):
        if len(lambda_W) != L:
            raise ConfigError("lambda_W", f"one number or a list of L = {L} numbers", lambda_W)
        return tuple(check_positive(f"lambda_W[{i}]", v) for i, v in enumerate(lambda_W))
    return (check_positive("lambda_W", lambda_W),) * L


def condition(K: int, n: int, L: int, lambda_W: float | Sequence[float], lambda_H: float) -> tuple[float, float]:
    """Both sides ``(lhs, rhs)`` of v1 Eq. (2); the DNC minimiser is global iff ``lhs < rhs``.

    For ``L = 1`` this is the standard UFM condition ``K sqrt(n λ_W λ_H) < 1``.
    """
    lws = _lambdas(L, lambda_W)
    log_prod = math.log(K) + math.log(n) + math.log(lambda_H) + sum(math.log(v) for v in lws)
    lhs = math.exp(log_prod / L)
    rhs = (L - 1) ** ((L - 1) / L) / (K * L**2) if L > 1 else 1.0 / K
    return lhs, rhs


def _log_star_rhs(K: int, n: int, lws: Sequence[float], lambda_H: float) -> float:
    L = len(lws)
    return (L + 1) * math.log(K) + math.log(n) + math.log(lambda_H) + sum(math.log(v) for v in lws)


def solve_gamma(K: int, n: int, L: int, lambda_W: float | Sequence[float], lambda_H: float) -> tuple[float, float] | None:
    """The largest root of (★) as ``(γ, 1-γ)``, or ``None`` when (★) has no root.

    ``1-γ`` is returned separately because it is computed directly (no cancellation).
    A root can exist while condition (2) fails (then it is a non-global critical point).
    """
    lws = _lambdas(L, lambda_W)
    log_c = _log_star_rhs(K, n, lws, lambda_H)
    if L == 1:  # (1-γ)^2 = c: the standard UFM, 1 - γ = K sqrt(n λ_W λ_H)
        u = math.exp(0.5 * log_c)
        return (1.0 - u, u) if u < 1.0 else None
    u_max = 1.0 - (L - 1) / (2 * L)  # 1 - γ at the maximum of γ^{L-1}(1-γ)^{L+1}

    def h(u: float) -> float:
        return (L - 1) * math.log1p(-u) + (L + 1) * math.log(u) - log_c

    if h(u_max) < 0:
        return None
    if h(u_max) == 0:
        return 1.0 - u_max, u_max
    # h is increasing on (0, u_max]; h -> -inf as u -> 0.  Bracket the root from below.
    lo = u_max
    while h(lo) >= 0:
        lo *= 0.5
        if lo < 1e-300:
            return None
    u = brentq(h, lo, u_max, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    return 1.0 - u, u


@dataclass(frozen=True)
class DNCOptimum:
    """Closed-form description of the global minimiser (R1) and its spectra (R2-R6).

    ``is_global`` is ``False`` when condition (2) fails: then the global minimiser is zero and its
    loss is 1/2 (both true numbers); every DNC quantity (``gamma``, ``one_minus_gamma`` and
    everything derived from them) raises :class:`NoDNCMinimiserError` instead of returning a
    number. :meth:`require_global` raises the same error up front.
    """

    K: int
    n: int
    L: int
    lambda_W: tuple[float, ...]
    lambda_H: float
    condition_lhs: float
    condition_rhs: float
    is_global: bool
    optimal_loss: float
    root: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def N(self) -> int:
        return self.K * self.n

    def require_global(self) -> "DNCOptimum":
        """``self`` when the minimiser has DNC structure, else :class:`NoDNCMinimiserError`."""
        if not self.is_global:
            raise NoDNCMinimiserError(
                f"no DNC minimiser: condition (2) fails (lhs {self.condition_lhs:.6g} >= rhs {self.condition_rhs:.6g}), "
                "so the global minimiser is zero (loss 1/2); lower lambda_W or lambda_H"
            )
        return self

    @property
    def gamma(self) -> float:
        """``γ``, the largest root of (★)."""
        return self.require_global().root[0]

    @property
    def one_minus_gamma(self) -> float:
        """``1 - γ``, computed directly (no cancellation)."""
        return self.require_global().root[1]

    @property
    def t(self) -> float:
        """``t = γ(1-γ)/K = λ_{W_l} s_{W_l}^2 = λ_H s_H^2``."""
        return self.gamma * self.one_minus_gamma / self.K

    @property
    def weight_singular_values(self) -> tuple[float, ...]:
        """``s_{W_l} = sqrt(γ(1-γ)/(K λ_{W_l}))`` (K-fold, rest 0), one per layer."""
        return tuple(math.sqrt(self.t / lw) for lw in self.lambda_W)

    @property
    def feature_singular_value(self) -> float:
        """Singular value of ``H_1`` (K-fold): ``sqrt(t/λ_H) = sqrt(n) ||μ^{(1)}||``."""
        return math.sqrt(self.t / self.lambda_H)

    @property
    def feature_norms(self) -> tuple[float, ...]:
        """``||μ_c^{(l)}||`` for ``l = 1..L+1`` (the last one is the logit mean, ``= γ``)."""
        norms = [self.feature_singular_value / math.sqrt(self.n)]
        for s in self.weight_singular_values:
            norms.append(norms[-1] * s)
        return tuple(norms)

    @property
    def layer_hessian_outlier(self) -> tuple[float, ...]:
        """``λ_out(l) = λ_{W_l} γ/(1-γ)``: the K² equal outliers of Hess_l (R2, v1 Thm 4.1)."""
        return tuple(lw * self.gamma / self.one_minus_gamma for lw in self.lambda_W)

    @property
    def feature_hessian_outlier(self) -> float:
        """``λ_H γ/(1-γ)``: the K²n equal eigenvalues of the Hessian w.r.t. ``H_1`` (R6)."""
        return self.lambda_H * self.gamma / self.one_minus_gamma

    @property
    def gram_eigenvalue(self) -> tuple[float, ...]:
        """Non-zero eigenvalue of ``W_l^T W_l`` (K-fold): ``γ(1-γ)/(K λ_{W_l})`` (R5, v1 Thm 4.4)."""
        return tuple(s * s for s in self.weight_singular_values)

    def as_dict(self) -> dict:
        """Plain-Python summary used by ``ufm predict --json`` (``None`` for the DNC quantities of a zero minimiser)."""
        out = {
            "K": self.K, "n": self.n, "L": self.L,
            "lambda_W": list(self.lambda_W), "lambda_H": self.lambda_H,
            "condition_lhs": self.condition_lhs, "condition_rhs": self.condition_rhs,
            "condition_holds": self.is_global,
            "optimal_loss": self.optimal_loss,
        }
        if not self.is_global:
            none, per_layer = None, [None] * self.L
            return {**out, "gamma": none, "one_minus_gamma": none, "t": none,
                    "weight_singular_values": per_layer, "feature_singular_value": none,
                    "feature_norms": [None] * (self.L + 1), "layer_hessian_outlier": per_layer,
                    "feature_hessian_outlier": none, "weight_gram_eigenvalue": per_layer}
        return {
            **out,
            "gamma": self.gamma, "one_minus_gamma": self.one_minus_gamma, "t": self.t,
            "weight_singular_values": list(self.weight_singular_values),
            "feature_singular_value": self.feature_singular_value,
            "feature_norms": list(self.feature_norms),
            "layer_hessian_outlier": list(self.layer_hessian_outlier),
            "feature_hessian_outlier": self.feature_hessian_outlier,
            "weight_gram_eigenvalue": list(self.gram_eigenvalue),
        }


def dnc_optimum(
    K: int | UFMConfig,
    n: int | None = None,
    L: int | None = None,
    lambda_W: float | Sequence[float] | None = None,
    lambda_H: float | None = None,
) -> DNCOptimum:
    """Closed-form global minimiser of the bias-free MSE deep linear UFM (R1; Dang et al. 2023, Thm 3.1).

    Accepts a :class:`UFMConfig` or the numbers ``K, n, L, lambda_W, lambda_H``.
    Optimal loss: ``(1-γ)²/2 + (L+1)γ(1-γ)/2`` when condition (2) holds, else ``1/2``.
    """
    if isinstance(K, UFMConfig):
        cfg = K
        K, n, L, lambda_W, lambda_H = cfg.K, cfg.n, cfg.L, cfg.lambda_Ws, cfg.lambda_H
    K = check_int("K", K, 2)
    n = check_int("n", n, 1)
    L = check_int("L", L, 1)
    lws = _lambdas(L, lambda_W)
    lambda_H = check_positive("lambda_H", lambda_H)
    lhs, rhs = condition(K, n, L, lws, lambda_H)
    root = solve_gamma(K, n, L, lws, lambda_H)
    if root is not None:
        g, u = root
        dnc_loss = 0.5 * u * u + 0.5 * (L + 1) * g * u
        # 1/2 - dnc_loss = γ(1 - Lu)/2 without the cancellation: it decides "below the zero
        # minimiser" even where the loss itself rounds to 1/2 (within ~1e-8 of condition (2))
        below_zero = g * (1.0 - L * u) > 0
    is_global = root is not None and lhs < rhs and below_zero
    if not is_global:
        return DNCOptimum(K, n, L, lws, lambda_H, lhs, rhs, False, 0.5)
    return DNCOptimum(K, n, L, lws, lambda_H, lhs, rhs, True, dnc_loss, root=(g, u))


def _frames(cfg: UFMConfig, rank: int, kind: str) -> list[torch.Tensor]:
    """Orthonormal ``d x rank`` frames for the L feature layers, in float64 on the CPU."""
    d = cfg.d
    g = cfg.generator(offset=1_000_003)
    frames = []
    for _ in range(cfg.L):
        if kind == "canonical":
            U = torch.eye(d, dtype=torch.float64)[:, :rank]
        elif kind == "nonnegative":
            perm = torch.randperm(d, generator=g)[:rank]
            U = torch.eye(d, dtype=torch.float64)[:, perm]
        elif kind == "random":
            Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            U = (Q * torch.sign(torch.diagonal(R)))[:, :rank]
        else:
            raise ValueError(f"frames must be 'canonical', 'nonnegative' or 'random'; got {kind!r}")
        frames.append(U.contiguous())
    return frames


def construct_minimiser(
    cfg: UFMConfig, *, frames: Literal["canonical", "nonnegative", "random"] = "canonical"
) -> UFMParams:
    """An explicit global minimiser (R1), built from orthogonal class frames.

    Layer ``l`` has class means ``μ_c^{(l)} = ||μ^{(l)}|| U_l e_c`` for an orthonormal frame
    ``U_l`` (``d x K``); ``H_1 = M_1 ⊗ 1_n^T``, ``W_l = s_{W_l} U_{l+1} U_l^T`` (l < L) and
    ``W_L = s_{W_L} U_L^T``, so that the logits are ``γ Y``.

    ``frames="canonical"`` uses the first K coordinate axes, ``"nonnegative"`` random axes
    (class means with disjoint non-negative supports: the ReLU model sees the same point, R8),
    ``"random"`` random rotations (any rotation of a minimiser is a minimiser).
    Raises :class:`NoDNCMinimiserError` when condition (2) fails (the minimiser is zero).
    """
    opt = dnc_optimum(cfg).require_global()
    U = _frames(cfg, cfg.K, frames)
    norms = opt.feature_norms
    ones = torch.ones(1, cfg.n, dtype=torch.float64)
    H1 = torch.kron(norms[0] * U[0], ones)
    Ws = [s * U[l + 1] @ U[l].T for l, s in enumerate(opt.weight_singular_values[:-1])]
    Ws.append(opt.weight_singular_values[-1] * U[-1].T)
    return UFMParams(H1, tuple(Ws)).to(dtype=cfg.torch_dtype, device=cfg.torch_device)


def common_lambda_threshold(K: int, n: int, L: int) -> float:
    """The weight decay ``λ*`` at which condition (2) (v1 Eq. (2)) becomes an equality for a common
    ``λ = λ_{W_l} = λ_H`` (R1 (c)).

    The left side of (2) is ``(K n λ^{L+1})^{1/L}``: it grows like ``λ^{(L+1)/L}``, so (2) holds
    exactly for ``λ < λ*``, where the global minimiser is collapsed; above ``λ*`` it is zero.
    """
    K, n, L = check_int("K", K, 2), check_int("n", n, 1), check_int("L", L, 1)
    lhs1, rhs1 = condition(K, n, L, 1.0, 1.0)  # left side at λ = 1
    return (rhs1 / lhs1) ** (L / (L + 1))


def phase_curves(K: int, n: int, L: int, lambdas: Sequence[float]) -> dict[str, np.ndarray]:
    """The global minimiser along a common weight decay ``λ = λ_{W_l} = λ_H`` (R1, phase diagram).

    Keys, one value per entry of ``lambdas``: ``"gamma"`` (``γ`` of the global minimiser, ``0``
    where it is zero), ``"loss"`` (its loss, ``1/2`` where it is zero), and ``"gamma_branch"``,
    ``"loss_branch"``: the collapsed critical point (largest root of (★), loss
    ``(1-γ)(1+Lγ)/2``) continued past :func:`common_lambda_threshold`, where it exists but is not
    global (NaN below the threshold and where (★) has no root).
    """
    lam = np.asarray(lambdas, dtype=float).ravel()
    if lam.size == 0 or not np.all(np.isfinite(lam) & (lam > 0)):
        raise ValueError("lambdas must be a non-empty sequence of positive numbers")
    opts = [dnc_optimum(K, n, L, float(x), float(x)) for x in lam]
    roots = [solve_gamma(K, n, L, float(x), float(x)) for x in lam]
    branch = np.array([r[0] if r is not None else np.nan for r in roots])
    branch[lam < common_lambda_threshold(K, n, L) * (1 - 1e-6)] = np.nan  # only where the collapsed point is not global
    return {
        "gamma": np.array([o.gamma if o.is_global else 0.0 for o in opts]),
        "loss": np.array([o.optimal_loss for o in opts]),
        "gamma_branch": branch,
        "loss_branch": (1 - branch) * (1 + L * branch) / 2,
    }


# ----------------------------------------------------------------------------------------
# Cross-entropy DNC critical point (R9)


@dataclass(frozen=True)
class CECriticalPoint:
    """The DNC critical point of the CE deep linear UFM with one common λ (R9).

    Logits ``Z = α S ⊗ 1_n^T`` with ``S = I - 11^T/K``; every factor has ``K-1`` equal
    singular values ``s = (α sqrt(n))^{1/(L+1)}``; class means form a simplex ETF.
    """

    K: int
    n: int
    L: int
    lam: float
    alpha: float

    @property
    def singular_value(self) -> float:
        return (self.alpha * math.sqrt(self.n)) ** (1.0 / (self.L + 1))


def ce_critical_point(K: int, n: int, L: int, lam: float) -> CECriticalPoint | None:
    """α as the larger root of ``1/(e^α + K - 1) = λ n^{1/(L+1)} α^{(1-L)/(L+1)}`` (R9).

    Returns ``None`` when the equation has no root (no DNC critical point for this λ).
    """
    K = check_int("K", K, 2)
    n = check_int("n", n, 1)
    L = check_int("L", L, 1)
    lam = check_positive("lambda", lam)
    p = (L - 1) / (L + 1)
    log_rhs0 = math.log(lam) + math.log(n) / (L + 1)

    def h(a: float) -> float:  # log LHS - log RHS; a root is a critical point
        return -(a + math.log1p((K - 1) * math.exp(-a))) + p * math.log(a) - log_rhs0

    if L == 1:
        a_peak = 1e-300
        if h(a_peak) <= 0:
            return None
    else:
        # h' = -e^a/(e^a+K-1) + p/a vanishes once: bracket on (tiny, big)
        dh = lambda a: -1.0 / (1.0 + (K - 1) * math.exp(-a)) + p / a
        a_peak = brentq(dh, 1e-12, 1e3)
        if h(a_peak) < 0:
            return None
    hi = max(2 * a_peak, 1.0)
    while h(hi) > 0:
        hi *= 2
    alpha = brentq(h, a_peak, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    return CECriticalPoint(K, n, L, lam, alpha)


def construct_ce_critical_point(cfg: UFMConfig, *, frames: Literal["canonical", "random"] = "canonical") -> UFMParams:
    """Explicit parameters at the CE DNC critical point (needs one common λ = λ_W = λ_H).

    ``H_1 = (s/sqrt(n)) U_1 E^T ⊗ 1_n^T``, ``W_l = s U_{l+1} U_l^T``, ``W_L = s E U_L^T`` with
    ``E`` an orthonormal basis of ``1^⊥ ⊂ R^K`` and ``U_l`` orthonormal ``d x (K-1)`` frames.
    """
    lams = set(cfg.lambda_Ws) | {cfg.lambda_H}
    if len(lams) != 1:
        raise ConfigError("lambda_W", "equal to lambda_H in every layer for the CE critical point", cfg.lambda_W)
    cp = ce_critical_point(cfg.K, cfg.n, cfg.L, cfg.lambda_H)
    if cp is None:
        raise NoDNCMinimiserError(f"no cross-entropy DNC critical point exists for lambda = {cfg.lambda_H:g}")
    K = cfg.K
    Q, _ = torch.linalg.qr(torch.cat([torch.ones(K, 1, dtype=torch.float64), torch.eye(K, dtype=torch.float64)[:, : K - 1]], 1))
    E = Q[:, 1:]  # orthonormal basis of the complement of the all-ones vector
    U = _frames(cfg, K - 1, frames)
    s = cp.singular_value
    ones = torch.ones(1, cfg.n, dtype=torch.float64)
    H1 = torch.kron((s / math.sqrt(cfg.n)) * U[0] @ E.T, ones)
    Ws = [s * U[l + 1] @ U[l].T for l in range(cfg.L - 1)] + [s * E @ U[-1].T]
    return UFMParams(H1, tuple(Ws)).to(dtype=cfg.torch_dtype, device=cfg.torch_device)
