"""The helpers added for the R1-R4 chapters: the phase diagram of R1 and the convergence snapshot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ufmlib.config import UFMConfig
from ufmlib.dynamics import convergence_snapshot
from ufmlib.optimum import common_lambda_threshold, condition, construct_minimiser, dnc_optimum, phase_curves


@pytest.mark.parametrize("K, n, L", [(3, 40, 1), (3, 40, 2), (3, 5, 3), (4, 3, 5)])
def test_threshold_is_where_condition_2_is_an_equality(K, n, L):
    star = common_lambda_threshold(K, n, L)
    lhs, rhs = condition(K, n, L, star, star)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert dnc_optimum(K, n, L, 0.999 * star, 0.999 * star).is_global
    assert not dnc_optimum(K, n, L, 1.001 * star, 1.001 * star).is_global


def test_threshold_of_the_classical_ufm():
    K, n = 3, 40
    assert common_lambda_threshold(K, n, 1) == pytest.approx(1 / (K * math.sqrt(n)), rel=1e-12)


def test_threshold_rejects_bad_sizes():
    with pytest.raises(ValueError):
        common_lambda_threshold(1, 40, 2)
    with pytest.raises(ValueError):
        common_lambda_threshold(3, 0, 2)


def test_phase_curves_match_the_closed_form():
    K, n, L = 3, 5, 3
    star = common_lambda_threshold(K, n, L)
    lam = np.array([star / 10, star / 2, 0.999 * star, 1.001 * star, 2 * star, 10 * star])
    ph = phase_curves(K, n, L, lam)
    assert set(ph) == {"gamma", "loss", "gamma_branch", "loss_branch"}
    assert all(v.shape == lam.shape for v in ph.values())
    for x, g, loss in zip(lam, ph["gamma"], ph["loss"]):
        opt = dnc_optimum(K, n, L, x, x)
        assert loss == opt.optimal_loss
        assert g == (opt.gamma if opt.is_global else 0.0)
    above = lam > star
    assert np.all(ph["gamma"][above] == 0.0) and np.all(ph["loss"][above] == 0.5)
    # the continued branch: NaN below the threshold, a root of (star) just above it with loss above 1/2
    assert np.all(np.isnan(ph["gamma_branch"][~above]))
    assert np.isfinite(ph["gamma_branch"][3]) and ph["loss_branch"][3] > 0.5
    g = ph["gamma_branch"][3]
    assert ph["loss_branch"][3] == pytest.approx((1 - g) * (1 + L * g) / 2, rel=1e-14)


def test_phase_curves_reject_bad_lambdas():
    for bad in ([], [0.0], [-1e-3], [np.nan]):
        with pytest.raises(ValueError):
            phase_curves(3, 5, 3, bad)


def test_convergence_snapshot_at_the_minimiser():
    cfg = UFMConfig(K=3, n=5, d=8, L=3, lambda_W=0.01, lambda_H=0.01, seed=0)
    opt = dnc_optimum(cfg)
    snap = convergence_snapshot(construct_minimiser(cfg, frames="random"), cfg)
    assert snap["top"].shape == (cfg.L, cfg.K)
    np.testing.assert_allclose(snap["top"], np.array(opt.weight_singular_values)[:, None] * np.ones(cfg.K), rtol=1e-12)
    assert 0.0 <= snap["rest"] < 1e-12
    assert snap["gamma"] == pytest.approx(opt.gamma, rel=1e-12)


def test_convergence_snapshot_without_extra_singular_values():
    cfg = UFMConfig(K=3, n=2, d=3, L=1, lambda_W=0.01, lambda_H=0.01, seed=0)  # W_1 is K x d = 3 x 3
    snap = convergence_snapshot(construct_minimiser(cfg), cfg)
    assert snap["rest"] == 0.0
