"""Collapse metrics: zero at the closed-form optimum, positive away from it (Papyan et al. 2020; R1)."""

import pytest
import torch

from ufmlib.collapse import (
    class_means,
    collapse_metrics,
    dnc3_alignment,
    nc1,
    nc1_relative,
    nc2_etf,
    nc2_orthogonal,
    nc3_self_duality,
)
from ufmlib.config import UFMConfig
from ufmlib.model import init_params
from ufmlib.optimum import construct_ce_critical_point, construct_minimiser


def test_zero_at_global_minimiser():
    cfg = UFMConfig(K=4, n=3, d=7, L=3)
    for m in collapse_metrics(construct_minimiser(cfg, frames="random"), cfg):
        assert m.nc1 < 1e-25 and m.nc1_relative < 1e-13
        assert m.nc2_orthogonal < 1e-13 and m.nc2_etf < 1e-13  # centred orthogonal frame = simplex ETF
        assert m.dnc3 < 1e-13


def test_positive_at_random_point():
    cfg = UFMConfig(K=4, n=3, d=7, L=3)
    for m in collapse_metrics(init_params(cfg), cfg):
        assert m.nc1 > 0.1 and m.nc2_orthogonal > 0.05 and m.dnc3 > 0.1


def test_ce_point_is_an_etf_not_an_orthogonal_frame():
    cfg = UFMConfig(K=4, n=4, d=6, L=3, loss="ce", lambda_W=5e-3, lambda_H=5e-3)
    params = construct_ce_critical_point(cfg, frames="random")
    M = class_means(params.H1, cfg.K)
    assert nc2_etf(M) < 1e-13
    assert nc2_orthogonal(M) > 0.1
    assert dnc3_alignment(params.Ws[0], M, centred=True) < 1e-13
    last_in = class_means(params.Ws[1] @ params.Ws[0] @ params.H1, cfg.K)
    assert nc3_self_duality(params.Ws[-1], last_in) < 1e-13


def test_nc1_matches_definition():
    torch.manual_seed(0)
    K, n, d = 3, 5, 4
    X = torch.randn(d, K * n, dtype=torch.float64)
    Xs = X.reshape(d, K, n)
    M = Xs.mean(2)
    Sw = sum(torch.outer(X[:, i] - M[:, i // n], X[:, i] - M[:, i // n]) for i in range(K * n)) / (K * n)
    Mc = M - M.mean(1, keepdim=True)
    Sb = Mc @ Mc.T / K
    assert nc1(X, K) == pytest.approx(float(torch.trace(Sw @ torch.linalg.pinv(Sb)) / K), rel=1e-10)
    assert 0 < nc1_relative(X, K) < 1


def test_bad_class_count():
    with pytest.raises(ValueError, match="K"):
        class_means(torch.zeros(3, 10), 3)
