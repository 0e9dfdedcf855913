"""Tests for ufmlib.decompose: the Gauss-Newton split of a layer Hessian (R3, v1 Thm 4.2).

Reference numbers (the companion's float64 evaluation of the closed forms of R3; book chapter
``gauss_newton``): ranks G_within / G_cross / G_class = 0 / K(K-1) / K at the
global minimiser (0/6/3 for K=3; 0/90/10 for K=10, n=5, L=3, d=12, λ=2^-10, all non-zero
eigenvalues 0.0654037323), orthogonal ranges, exact sum identity.
"""

from __future__ import annotations

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.decompose import GNSplit, gauss_newton_split, jacobian_rows, projector
from ufmlib.hessian import layer_hessian_autodiff
from ufmlib.model import forward, init_params
from ufmlib.optimum import construct_ce_critical_point, construct_minimiser, dnc_optimum

F64 = torch.float64


def _class_means(X: torch.Tensor, K: int) -> torch.Tensor:
    return X.reshape(X.shape[0], K, -1).mean(dim=2)  # d x K (class-ordered columns)


def test_T2_K3_ranks_levels_orthogonality():
    """R3 (K=3): ranks 0/6/3, non-zero eigenvalues λγ/(1-γ), orthogonal ranges, exact identity."""
    cfg = UFMConfig(K=3, n=5, d=8, L=4, lambda_W=0.01, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    layer = 2
    split = gauss_newton_split(params, cfg, layer)
    assert isinstance(split, GNSplit) and split.layer == layer
    assert split.ranks() == {"within": 0, "cross": 6, "class": 3, "G": 9}
    lam_out = dnc_optimum(cfg).layer_hessian_outlier[layer - 1]
    for name, r in (("cross", 6), ("class", 3), ("G", 9), ("hessian", 9)):
        ev = split.eigenvalues(name)
        assert torch.allclose(ev[:r], torch.full((r,), lam_out, dtype=F64), rtol=1e-10, atol=0), name
        assert ev[r:].abs().max().item() <= 1e-12
    assert split.G_within.abs().max().item() <= 1e-14
    assert split.range_orthogonality() <= 1e-12
    assert split.identity_error <= 1e-14
    assert split.residual.abs().max().item() <= 1e-12  # linear layer block: E = 0
    assert (split.G - layer_hessian_autodiff(params, cfg, layer)).abs().max().item() <= 1e-12


def test_T2_K10_ranks_0_90_10():
    """R3 (K=10, n=5, L=3, d=12, λ=2^-10): ranks 0/90/10, all non-zero eigenvalues 0.0654037323."""
    lam = 2.0**-10
    cfg = UFMConfig(K=10, n=5, d=12, L=3, lambda_W=lam, lambda_H=lam)
    params = construct_minimiser(cfg, frames="random")
    split = gauss_newton_split(params, cfg, 2)
    assert split.ranks() == {"within": 0, "cross": 90, "class": 10, "G": 100}
    for name, r in (("cross", 90), ("class", 10)):
        ev = split.eigenvalues(name)
        assert torch.allclose(ev[:r], torch.full((r,), 0.0654037323, dtype=F64), rtol=1e-9, atol=0)
    assert split.range_orthogonality() <= 1e-12
    assert split.identity_error <= 1e-14
    # together the two ranges span the K² outlier space of the Hessian (R2)
    s = split.scale
    P_both = projector(split.G_class + split.G_cross, scale=s)
    assert (P_both - projector(split.hessian, scale=s)).abs().max().item() <= 1e-10


def test_T2_eigenvectors_class_and_cross():
    """R3(b),(c): G_class eigenvectors μ_G^{(l+1)} ⊗ μ_c^{(l)}; G_cross (μ_{c'}^{(l+1)} - μ_G^{(l+1)}) ⊗ μ_c^{(l)}."""
    cfg = UFMConfig(K=3, n=4, d=7, L=3, lambda_W=0.01, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    layer = 2
    split = gauss_newton_split(params, cfg, layer)
    lam_out = dnc_optimum(cfg).layer_hessian_outlier[layer - 1]
    X = forward(params).inputs
    M_in, M_out = _class_means(X[layer - 1], 3), _class_means(X[layer], 3)
    mu_G = M_out.mean(dim=1)
    for c in range(3):
        v = torch.kron(mu_G, M_in[:, c])
        assert (split.G_class @ v - lam_out * v).norm().item() <= 1e-12 * v.norm().item()
        assert (split.G_cross @ v).norm().item() <= 1e-12 * v.norm().item()
        for c2 in range(3):
            w = torch.kron(M_out[:, c2] - mu_G, M_in[:, c])
            assert (split.G_cross @ w - lam_out * w).norm().item() <= 1e-12 * w.norm().item()
            assert (split.G_class @ w).norm().item() <= 1e-12 * w.norm().item()


def test_jacobian_rows_are_a_cprime_kron_h():
    """v_{icc'} = a_{c'}^{(l+1)} ⊗ h_{ic}^{(l)} in the linear model (v1 App. B), any point."""
    cfg = UFMConfig(K=3, n=4, d=6, L=3, seed=3)
    params = init_params(cfg)
    layer = 2
    v = jacobian_rows(params, cfg, layer)
    assert v.shape == (3, 4, 3, 36)
    A = params.Ws[2]  # A^{(3)} = W_3 for L = 3
    X = forward(params).inputs[layer - 1]
    for c, i, c2 in ((0, 0, 0), (1, 3, 2), (2, 1, 0)):
        expected = torch.kron(A[c2], X[:, c * cfg.n + i])
        assert torch.allclose(v[c, i, c2], expected, atol=1e-15)


@pytest.mark.parametrize("activation,loss", [("linear", "mse"), ("relu", "mse"), ("relu", "ce"), ("linear", "ce")])
def test_split_identity_and_zero_residual_at_random_points(activation, loss):
    """Away from the optimum all three parts are non-zero; G + 0 = Hess_l for piecewise-linear nets."""
    cfg = UFMConfig(K=3, n=4, d=6, L=3, activation=activation, loss=loss, seed=4)
    params = init_params(cfg)
    for layer in (1, 3):
        split = gauss_newton_split(params, cfg, layer)
        assert split.identity_error <= 1e-14
        assert split.residual.abs().max().item() <= 1e-12
        ranks = split.ranks()
        assert ranks["within"] > 0 and ranks["cross"] > 0 and ranks["class"] > 0
        for name in ("class", "cross", "within"):
            assert split.eigenvalues(name).min().item() >= -1e-14  # each part is PSD


def test_ce_split_at_critical_point_matches_hessian():
    """CE (Papyan's probability-weighted rows): G equals the CE layer Hessian at the DNC critical point."""
    cfg = UFMConfig(K=4, n=4, d=6, L=3, loss="ce", lambda_W=5e-3, lambda_H=5e-3)
    params = construct_ce_critical_point(cfg)
    split = gauss_newton_split(params, cfg, 2)
    assert split.identity_error <= 1e-14
    assert split.residual.abs().max().item() <= 1e-12
    assert split.ranks()["G"] == 9  # (K-1)² (R9, book chapter cross_entropy)
    assert split.ranks()["within"] == 0  # DNC1


def test_bad_arguments():
    cfg = UFMConfig(K=3, n=2, d=4, L=2)
    params = init_params(cfg)
    with pytest.raises(ValueError, match="layer"):
        gauss_newton_split(params, cfg, 3)
    split = gauss_newton_split(params, cfg, 1)
    with pytest.raises(ValueError, match="name"):
        split.eigenvalues("bulk")
