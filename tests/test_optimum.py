"""R1: the closed-form global minimiser, to machine precision (R1, v1 Eq. (2))."""

import math

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.model import regularised_loss
from ufmlib.optimum import (
    NoDNCMinimiserError,
    ce_critical_point,
    condition,
    construct_ce_critical_point,
    construct_minimiser,
    dnc_optimum,
    solve_gamma,
)

REL = 1e-12


def test_t0_reference_numbers():
    opt = dnc_optimum(3, 40, 5, 0.01, 0.01)
    assert opt.is_global
    assert opt.condition_lhs == pytest.approx(0.0103714, rel=1e-5)
    assert opt.condition_rhs == pytest.approx(0.0404191, rel=1e-5)
    assert opt.gamma == pytest.approx(0.942277466718, abs=5e-13)
    assert opt.t == pytest.approx(0.0181302141, abs=5e-11)  # digits of the companion's independent computation
    assert opt.weight_singular_values[0] == pytest.approx(1.34648484, abs=5e-9)
    assert opt.feature_norms[0] == pytest.approx(0.212897946, abs=5e-10)
    assert opt.optimal_loss == pytest.approx(0.16483787272448, abs=5e-15)
    assert opt.layer_hessian_outlier[2] == pytest.approx(0.16324256978, abs=5e-12)
    assert opt.feature_norms[-1] == pytest.approx(opt.gamma, rel=REL)  # logit mean = γ


@pytest.mark.parametrize(
    "K, n, L, lam_W, lam_H, gamma, loss",
    [  # the companion's independent computation, other configurations
        (3, 40, 5, 0.005, 0.005, 0.97172480, 0.08282689),
        (10, 5, 3, 2**-10, 2**-10, 0.98528837, 0.02909862),
        (10, 5, 2, 2**-10, 2**-10, 0.98320648, 0.02490826),
        (4, 10, 4, 0.005, 0.001, 0.97669873, 0.05716728),
        (10, 100, 3, 0.005, 1e-6, 0.98101592, 0.03742756),
    ],
)
def test_appendix_a_table(K, n, L, lam_W, lam_H, gamma, loss):
    opt = dnc_optimum(K, n, L, lam_W, lam_H)
    assert opt.gamma == pytest.approx(gamma, abs=1e-8)
    assert opt.optimal_loss == pytest.approx(loss, abs=1e-8)


@pytest.mark.parametrize("L", range(1, 13))
@pytest.mark.parametrize("lam", [1e-10, 1e-6, 1e-3])
def test_gamma_solves_star_for_all_depths(L, lam):
    K, n = 3, 40
    root = solve_gamma(K, n, L, lam, lam)
    assert root is not None
    g, u = root
    assert g + u == pytest.approx(1.0, abs=1e-15)
    lhs = (L - 1) * math.log(g) + (L + 1) * math.log(u)
    rhs = (L + 1) * math.log(K) + math.log(n) + (L + 1) * math.log(lam)
    assert lhs == pytest.approx(rhs, rel=1e-13, abs=1e-12)
    assert g > (L - 1) / (2 * L) or L == 1  # the largest root
    # small-λ asymptotics of (★) (R1; used in the proof of R7 (e)): 1-γ ≈ K (n λ^{L+1})^{1/(L+1)}
    if lam <= 1e-6:
        assert u == pytest.approx(K * (n * lam ** (L + 1)) ** (1 / (L + 1)), rel=1e-3)


def test_l1_is_the_standard_ufm():
    K, n, lw, lh = 4, 7, 1e-3, 2e-3
    opt = dnc_optimum(K, n, 1, lw, lh)
    assert opt.one_minus_gamma == pytest.approx(K * math.sqrt(n * lw * lh), rel=1e-13)
    lhs, rhs = condition(K, n, 1, lw, lh)
    assert (lhs < rhs) == (K * math.sqrt(n * lw * lh) < 1)


@pytest.mark.parametrize("K, n, L", [(3, 40, 5), (10, 5, 3), (4, 10, 4), (2, 3, 2)])
def test_threshold_behaviour(K, n, L):
    # common λ: condition lhs = (K n)^{1/L} λ^{(L+1)/L}; solve for the threshold
    rhs = condition(K, n, L, 1.0, 1.0)[1]
    lam_star = (rhs / (K * n) ** (1 / L)) ** (L / (L + 1))
    below, above = dnc_optimum(K, n, L, 0.999 * lam_star, 0.999 * lam_star), dnc_optimum(K, n, L, 1.001 * lam_star, 1.001 * lam_star)
    assert below.is_global and below.optimal_loss < 0.5
    assert not above.is_global and above.optimal_loss == 0.5
    # the zero minimiser has no DNC quantities: each of them raises, none is a silent number
    for name in ("gamma", "one_minus_gamma", "t", "weight_singular_values", "layer_hessian_outlier",
                 "feature_norms", "gram_eigenvalue", "feature_hessian_outlier"):
        with pytest.raises(NoDNCMinimiserError, match="condition \\(2\\) fails"):
            getattr(above, name)
    with pytest.raises(NoDNCMinimiserError):
        construct_minimiser(UFMConfig(K=K, n=n, L=L, d=K + 1, lambda_W=1.001 * lam_star, lambda_H=1.001 * lam_star))
    assert above.as_dict()["gamma"] is None and above.as_dict()["layer_hessian_outlier"] == [None] * L
    # just above the threshold a non-zero critical point still exists, with loss > 1/2
    root = solve_gamma(K, n, L, 1.001 * lam_star, 1.001 * lam_star)
    if root is not None:
        g, u = root
        assert 0.5 * u * u + 0.5 * (L + 1) * g * u > 0.5
    # at the threshold γ = (L-1)/L and the loss is exactly 1/2
    g, u = solve_gamma(K, n, L, lam_star, lam_star)
    assert g == pytest.approx((L - 1) / L, abs=1e-6)
    assert 0.5 * u * u + 0.5 * (L + 1) * g * u == pytest.approx(0.5, abs=1e-10)


def test_reference_threshold_values():
    for (K, n, L), lam in {(3, 40, 5): 0.031066, (10, 5, 3): 0.018201, (4, 10, 4): 0.033183}.items():
        assert dnc_optimum(K, n, L, 0.9995 * lam, 0.9995 * lam).is_global
        assert not dnc_optimum(K, n, L, 1.0005 * lam, 1.0005 * lam).is_global


def _max_grad(params, cfg):
    ps = [t.clone().requires_grad_(True) for t in params.tensors()]
    loss = regularised_loss(ps, cfg)
    grads = torch.autograd.grad(loss, ps)
    return float(loss.detach()), max(float(g.abs().max()) for g in grads)


@pytest.mark.parametrize("frames", ["canonical", "random", "nonnegative"])
@pytest.mark.parametrize(
    "cfg",
    [
        UFMConfig(),
        UFMConfig(K=4, n=3, d=6, L=4, lambda_W=(0.01, 0.02, 0.005, 0.01), lambda_H=0.003),
        UFMConfig(K=10, n=5, d=12, L=3, lambda_W=2**-10, lambda_H=2**-10),
        UFMConfig(K=2, n=2, d=2, L=1),
    ],
)
def test_constructed_minimiser_is_critical_with_optimal_loss(cfg, frames):
    params = construct_minimiser(cfg, frames=frames)
    loss, grad = _max_grad(params, cfg)
    assert grad <= 1e-12
    assert loss == pytest.approx(dnc_optimum(cfg).optimal_loss, rel=1e-12)


def test_nonnegative_minimiser_is_also_optimal_for_relu():
    cfg = UFMConfig(K=3, n=4, d=6, L=4, activation="relu")
    params = construct_minimiser(cfg, frames="nonnegative")
    assert all(float(W.min()) >= 0 for W in params.Ws) and float(params.H1.min()) >= 0
    loss, grad = _max_grad(params, cfg)
    assert grad <= 1e-12 and loss == pytest.approx(dnc_optimum(cfg).optimal_loss, rel=1e-12)


def test_outside_condition_no_minimiser_is_built():
    cfg = UFMConfig(lambda_W=0.1, lambda_H=0.1)
    assert not dnc_optimum(cfg).is_global
    with pytest.raises(ValueError, match="condition"):
        construct_minimiser(cfg)


def test_ce_critical_point_t9():
    cp = ce_critical_point(4, 4, 3, 5e-3)
    assert cp.alpha == pytest.approx(5.8239, abs=5e-5)
    cfg = UFMConfig(K=4, n=4, d=6, L=3, loss="ce", lambda_W=5e-3, lambda_H=5e-3)
    for frames in ("canonical", "random"):
        params = construct_ce_critical_point(cfg, frames=frames)
        _, grad = _max_grad(params, cfg)
        assert grad <= 1e-13
    assert ce_critical_point(4, 4, 3, 10.0) is None  # λ too large: no DNC critical point
