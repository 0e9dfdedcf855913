"""Helpers added for the weights, other-matrices and full-Hessian chapters (R5-R7)."""

import numpy as np
import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.dynamics import late_decay_rate, matrices_snapshot
from ufmlib.full_hessian import block_hvp, full_hessian_autodiff, layer_blocks
from ufmlib.hessian import layer_hessian_dense
from ufmlib.matrices import feature_hessian_factor, per_sample_gradients, per_sample_gradients_autograd
from ufmlib.model import init_params
from ufmlib.optimum import construct_minimiser, dnc_optimum


@pytest.fixture(scope="module")
def cfg():
    return UFMConfig(K=3, n=4, d=5, L=3, lambda_W=0.01, lambda_H=0.01, seed=2)


def test_late_decay_rate_reads_the_last_two_values_above_the_floor():
    epochs = np.array([0, 10, 20, 40, 80])
    q = 0.99
    values = np.stack([q ** epochs, 2 * q ** (2 * epochs)], axis=1)
    values[-1, 1] = 1e-30  # below the floor: the pair (20, 40) is used for that column
    rates = late_decay_rate(epochs, values, floor=1e-20)
    np.testing.assert_allclose(rates, [np.log(q), 2 * np.log(q)], rtol=1e-12)
    assert np.isnan(late_decay_rate(epochs, np.full(5, 1e-30), floor=1e-20)[0])
    with pytest.raises(ValueError):
        late_decay_rate(epochs, values[:3], floor=1e-20)
    with pytest.raises(ValueError):
        late_decay_rate(epochs, values, floor=0.0)


@pytest.mark.parametrize("activation,loss", [("linear", "mse"), ("relu", "mse"), ("linear", "ce")])
def test_per_sample_gradients_autograd_equals_the_chain_rule(cfg, activation, loss):
    c = cfg.replace(activation=activation, loss=loss)
    params = init_params(c)
    for layer in range(1, c.L + 1):
        G = per_sample_gradients_autograd(params, c, layer)
        assert G.shape == per_sample_gradients(params, c, layer).shape
        torch.testing.assert_close(G, per_sample_gradients(params, c, layer), rtol=1e-12, atol=1e-14)


def test_block_hvp_is_the_diagonal_block_of_the_autodiff_hessian(cfg):
    params = init_params(cfg)
    H = full_hessian_autodiff(params, cfg, include_H=True)
    blocks = layer_blocks(cfg, include_H=True)
    for index, sl in enumerate(blocks):
        matvec, dim = block_hvp(params, cfg, index, include_H=True)
        assert dim == sl.stop - sl.start
        torch.testing.assert_close(matvec(torch.eye(dim, dtype=torch.float64)), H[sl, sl], rtol=1e-10, atol=1e-12)
    F = feature_hessian_factor(params, cfg)
    torch.testing.assert_close(H[blocks[0], blocks[0]], torch.kron(F, torch.eye(cfg.N, dtype=torch.float64)),
                               rtol=1e-10, atol=1e-12)
    matvec, dim = block_hvp(params, cfg, 1)  # W_2 without H_1
    torch.testing.assert_close(matvec(torch.eye(dim, dtype=torch.float64)), layer_hessian_dense(params, cfg, 2),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        block_hvp(params, cfg, cfg.L)
    with pytest.raises(ValueError):
        matvec(torch.zeros(dim + 1, dtype=torch.float64))


def test_matrices_snapshot_at_the_minimiser(cfg):
    opt = dnc_optimum(cfg)
    snap = matrices_snapshot(construct_minimiser(cfg, frames="random"), cfg, 2)
    K, moment = cfg.K, opt.gamma * opt.one_minus_gamma * cfg.lambda_Ws[1]
    np.testing.assert_allclose(snap["features"][:K], np.sqrt(cfg.n) * opt.feature_norms[1], rtol=1e-10)
    np.testing.assert_allclose(snap["second_moment"][:K], moment, rtol=1e-10)
    np.testing.assert_allclose(snap["covariance"][: K - 1], moment, rtol=1e-10)
    np.testing.assert_allclose(snap["hess_H"], opt.feature_hessian_outlier, rtol=1e-10)
    np.testing.assert_allclose(snap["gram"][:K], opt.gram_eigenvalue[1], rtol=1e-10)
    assert snap["features"][K] < 1e-10 and snap["second_moment"][K] < 1e-20 and snap["gram"][K] < 1e-10
