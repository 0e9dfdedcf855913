"""Tests of the helpers added for the ReLU chapter (R8): the kink Hessian by autodiff and the
predicted clipping of the flat family."""

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.hessian import (
    KinkHessian,
    layer_hessian_autodiff,
    layer_hessian_dense,
    measure_kink_hessian,
)
from ufmlib.model import UFMParams, init_params
from ufmlib.optimum import construct_minimiser
from ufmlib.screening import flat_family_clipping, solution_metrics
from ufmlib.theory import relu_optimum_layer_hessian


@pytest.fixture(scope="module")
def kink_point():
    cfg = UFMConfig(K=3, n=2, d=4, L=3, activation="relu", lambda_W=0.01, lambda_H=0.01, seed=1)
    return cfg, construct_minimiser(cfg, frames="nonnegative")


def test_c0_zero_is_pytorch_relu(kink_point):
    cfg, params = kink_point
    for layer in (1, 2, 3):
        H = layer_hessian_autodiff(params, cfg, layer, relu_prime_at_zero=0.0)
        assert torch.allclose(H, layer_hessian_autodiff(params, cfg, layer), atol=1e-14)


@pytest.mark.parametrize("c0", [0.0, 0.5, 1.0])
def test_kink_measurement_matches_prediction(kink_point, c0):
    cfg, params = kink_point
    for layer in (1, 2, 3):
        m = measure_kink_hessian(params, cfg, layer, c0=c0)
        pred = relu_optimum_layer_hessian(cfg, layer, c0=c0)
        assert isinstance(m, KinkHessian) and m.layer == layer and m.c0 == c0
        assert m.gauss_newton_gap < 1e-12
        assert torch.allclose(m.eigenvalues, pred.expanded(), atol=1e-12)
        assert m.residual(pred) < 1e-12


def test_kink_convention_changes_the_hessian(kink_point):
    cfg, params = kink_point
    H0 = layer_hessian_autodiff(params, cfg, 1, relu_prime_at_zero=0.0)
    H1 = layer_hessian_autodiff(params, cfg, 1, relu_prime_at_zero=1.0)
    assert (H1 - H0).abs().max() > 1e-3
    assert torch.allclose(H1, layer_hessian_dense(params, cfg, 1, relu_prime_at_zero=1.0), atol=1e-12)


def test_residual_detects_a_wrong_prediction(kink_point):
    cfg, params = kink_point
    m = measure_kink_hessian(params, cfg, 1, c0=0.5)
    assert m.residual(relu_optimum_layer_hessian(cfg, 1, c0=1.0)) > 1e-3


def test_relu_autodiff_rejects_bad_c0(kink_point):
    cfg, params = kink_point
    with pytest.raises(ValueError):
        layer_hessian_autodiff(params, cfg, 1, relu_prime_at_zero=2.0)


def test_flat_family_clipping_orthogonal_means_is_zero(kink_point):
    cfg, params = kink_point
    assert flat_family_clipping(params, cfg.K) == pytest.approx(0.0, abs=1e-14)


def test_flat_family_clipping_on_the_family():
    # H_1 class means with Gram G, W_1 M_1 = U_2 C, C = G / s: the first ReLU clips offdiag(C)
    torch.manual_seed(0)
    K, n, d = 3, 2, 5
    G = torch.tensor([[1.0, -0.2, -0.1], [-0.2, 1.0, -0.3], [-0.1, -0.3, 1.0]], dtype=torch.float64)
    M1 = torch.linalg.cholesky(G).T  # K x K with M1^T M1 = G
    M1 = torch.cat([M1, torch.zeros(d - K, K, dtype=torch.float64)])
    H1 = M1.repeat_interleave(n, dim=1)  # class-ordered samples
    U2 = torch.eye(d, dtype=torch.float64)[:, :K]
    W1 = U2 @ G @ torch.linalg.pinv(M1)
    cfg = UFMConfig(K=K, n=n, d=d, L=2, activation="relu", lambda_W=0.01, lambda_H=0.01)
    W2 = init_params(cfg).Ws[1]
    params = UFMParams.from_tensors([H1, W1, W2])
    measured = solution_metrics(params, cfg).clipped[1]
    assert flat_family_clipping(params, K) == pytest.approx(measured, rel=1e-12)
