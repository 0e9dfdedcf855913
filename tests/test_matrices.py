"""Tests for ufmlib.matrices: weights, features, back-propagated errors, gradients, H_1-Hessian.

Reference numbers: the companion's float64 evaluation of the closed forms of R5 (weights, v1 Thm
4.4) and R6 (back-prop errors, gradient moments, and the Hessian w.r.t. H_1 with K²n equal
eigenvalues λ_H γ/(1-γ); book chapter ``other_matrices``).
"""

from __future__ import annotations

import math

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.full_hessian import fit_gradient
from ufmlib.matrices import (
    backprop_errors,
    feature_hessian,
    feature_hessian_factor,
    feature_singular_values,
    gradient_covariance,
    gradient_second_moment,
    per_sample_gradients,
    weight_gram_spectrum,
)
from ufmlib.model import fit_loss, fit_loss_from_logits, forward, init_params, labels
from ufmlib.optimum import construct_minimiser, dnc_optimum

F64 = torch.float64
T5 = UFMConfig(K=3, n=5, d=7, L=4, lambda_W=0.01, lambda_H=0.01)


def _class_means(X: torch.Tensor, K: int) -> torch.Tensor:
    return X.reshape(X.shape[0], K, -1).mean(dim=2)


def test_T4_weight_gram_eigenvalues_and_vectors():
    """R5: eig(W_l^T W_l) = 1.8130214 ×3 (K=3, n=40, d=60, L=5, λ=0.01), rest 0; vectors μ_c^{(l)}."""
    cfg = UFMConfig(K=3, n=40, d=60, L=5)
    params = construct_minimiser(cfg, frames="random")
    expected = dnc_optimum(cfg).gram_eigenvalue
    X = forward(params).inputs
    for layer, W in enumerate(params.Ws, start=1):
        spec = weight_gram_spectrum(W)
        assert spec.dim == 60 and spec.k == 60
        ev = spec.eigenvalues
        assert torch.allclose(ev[:3], torch.full((3,), 1.8130214, dtype=F64), atol=5e-8, rtol=0)
        assert torch.allclose(ev[:3], torch.full((3,), expected[layer - 1], dtype=F64), rtol=1e-12)
        assert ev[3:].abs().max().item() <= 1e-12
        U = spec.vectors(3)
        Mq, _ = torch.linalg.qr(_class_means(X[layer - 1], 3))
        assert (U @ U.mT - Mq @ Mq.mT).abs().max().item() <= 1e-12


def test_feature_singular_values_sqrt_n_mu():
    cfg = UFMConfig(K=3, n=40, d=60, L=5)
    params = construct_minimiser(cfg, frames="random")
    norms = dnc_optimum(cfg).feature_norms
    for layer, X in enumerate(forward(params).inputs, start=1):
        s = feature_singular_values(X)
        expected = math.sqrt(cfg.n) * norms[layer - 1]
        assert torch.allclose(s[:3], torch.full((3,), expected, dtype=F64), rtol=1e-12)
        assert s[3:].max().item() <= 1e-12
    with pytest.raises(ValueError, match="X"):
        feature_singular_values(torch.zeros(3))


def test_T5_backprop_error_singular_values():
    """R6 (b): singular values 0.011645, 0.010000, 0.008588, 0.007375 for h^{(1..4)} = inputs of W_1..W_4."""
    params = construct_minimiser(T5, frames="random")
    opt = dnc_optimum(T5)
    g, u = opt.gamma, opt.one_minus_gamma
    for layer, ref in zip(range(1, 5), (0.011645, 0.010000, 0.008588, 0.007375)):
        be = backprop_errors(params, T5, layer)
        assert be.errors.shape == (T5.N, T5.d) and be.layer == layer
        s = be.singular_values
        closed = u * g * math.sqrt(T5.n) / (T5.N * opt.feature_norms[layer - 1])
        assert torch.allclose(s[:3], torch.full((3,), closed, dtype=F64), rtol=1e-11)
        assert abs(s[0].item() - ref) <= 5e-7
        assert s[3:].max().item() <= 1e-14
    # logits (layer L+1): ∂ℓ/∂z = (Z - Y)/N = -(1-γ) Y / N
    top = backprop_errors(params, T5, T5.L + 1).errors
    assert torch.allclose(top, -u * labels(T5).mT / T5.N, atol=1e-15)


@pytest.mark.parametrize("activation,loss", [("linear", "mse"), ("relu", "ce")])
def test_backprop_errors_match_autograd_chain(activation, loss):
    cfg = UFMConfig(K=3, n=3, d=5, L=3, activation=activation, loss=loss, seed=2)
    params = init_params(cfg)
    H1 = params.H1.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(fit_loss([H1, *params.Ws], cfg), H1)
    assert torch.allclose(backprop_errors(params, cfg, 1).errors, g1.mT, atol=1e-15)
    pre = forward(params, activation).preacts
    for layer in (2, 3):  # δ_l = (δ_{l+1} W_l) ⊙ σ'(h_l)
        d_next = backprop_errors(params, cfg, layer + 1).errors
        mask = (pre[layer - 1] > 0).to(F64).mT if activation == "relu" else 1.0
        expected = (d_next @ params.Ws[layer - 1]) * mask
        assert torch.allclose(backprop_errors(params, cfg, layer).errors, expected, atol=1e-15)


@pytest.mark.parametrize("activation,loss", [("linear", "mse"), ("relu", "ce")])
def test_per_sample_gradients_rows_and_mean(activation, loss):
    cfg = UFMConfig(K=3, n=3, d=5, L=3, activation=activation, loss=loss, seed=3)
    params = init_params(cfg)
    Y = labels(cfg)
    for layer in (1, 3):
        G = per_sample_gradients(params, cfg, layer)
        d_out = cfg.K if layer == cfg.L else cfg.d
        assert G.shape == (cfg.N, d_out * cfg.d)
        assert torch.allclose(G.mean(dim=0), fit_gradient(params, cfg, layer), atol=1e-15)
        for i in (0, 4, 8):  # row i = row-major vec of ∂ℓ_i/∂W_l for the one-sample loss ℓ_i
            W = params.Ws[layer - 1].clone().requires_grad_(True)
            Ws = list(params.Ws)
            Ws[layer - 1] = W
            z = forward([params.H1[:, i : i + 1], *Ws], activation).logits
            (gi,) = torch.autograd.grad(fit_loss_from_logits(z, Y[:, i : i + 1], loss), W)
            assert torch.allclose(G[i], gi.reshape(-1), atol=1e-15)


def test_T5_gradient_second_moment_and_covariance():
    """R6 (c): second moment 3 eigenvalues γ(1-γ)λ = 4.0679e-4; centred covariance 2 of them."""
    params = construct_minimiser(T5, frames="random")
    opt = dnc_optimum(T5)
    level = opt.gamma * opt.one_minus_gamma * 0.01
    assert abs(level - 4.0679e-4) <= 5e-9
    X = forward(params).inputs
    for layer in range(1, 5):
        G = per_sample_gradients(params, T5, layer)
        sm, cov = gradient_second_moment(G), gradient_covariance(G)
        assert sm.k == cov.k == min(G.shape)
        assert torch.allclose(sm.eigenvalues[:3], torch.full((3,), level, dtype=F64), rtol=1e-10)
        assert sm.eigenvalues[3:].abs().max().item() <= 1e-16
        assert torch.allclose(cov.eigenvalues[:2], torch.full((2,), level, dtype=F64), rtol=1e-10)
        assert cov.eigenvalues[2:].abs().max().item() <= 1e-16
        # eigenvectors μ_c^{(l+1)} ⊗ μ_c^{(l)} (R6 (c))
        M_in = _class_means(X[layer - 1], 3)
        M_out = _class_means(X[layer], 3) if layer < T5.L else torch.eye(3, dtype=F64)
        B = torch.stack([torch.kron(M_out[:, c], M_in[:, c]) for c in range(3)], dim=1)
        Bq, _ = torch.linalg.qr(B)
        U = sm.vectors(3)
        assert (U @ U.mT - Bq @ Bq.mT).abs().max().item() <= 1e-10
        dense = torch.linalg.eigvalsh(G.mT @ G / T5.N).flip(0)
        assert torch.allclose(sm.eigenvalues, dense[: sm.k], atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="G"):
        gradient_covariance(torch.zeros(4))


def test_feature_hessian_closed_form_and_K2n_levels():
    """R6: Hessian w.r.t. H_1 = (A^{(1)T}A^{(1)}) ⊗ I_N / N (row-major); K²n eigenvalues λ_Hγ/(1-γ)."""
    cfg = UFMConfig(K=4, n=3, d=6, L=4, lambda_W=0.01, lambda_H=0.01)
    opt = dnc_optimum(cfg)
    for params in (init_params(cfg), construct_minimiser(cfg, frames="random")):
        H = feature_hessian(params, cfg)
        C = torch.kron(feature_hessian_factor(params, cfg), torch.eye(cfg.N, dtype=F64))
        assert H.shape == (72, 72)
        assert (H - C).abs().max().item() <= 1e-12
        # the column-major order I_N ⊗ P / N is a different matrix
        A = params.Ws[3] @ params.Ws[2] @ params.Ws[1] @ params.Ws[0]
        wrong = torch.kron(torch.eye(cfg.N, dtype=F64), A.mT @ A) / cfg.N
        assert (H - wrong).abs().max().item() > 1e-3
    ev = torch.linalg.eigvalsh(H).flip(0)
    K2n = cfg.K**2 * cfg.n
    assert torch.allclose(ev[:K2n], torch.full((K2n,), opt.feature_hessian_outlier, dtype=F64), rtol=1e-10)
    assert ev[K2n:].abs().max().item() <= 1e-12
    Hr = feature_hessian(params, cfg, regularised=True)
    assert (Hr - H - 0.01 * torch.eye(72, dtype=F64)).abs().max().item() <= 1e-15
    with pytest.raises(ValueError, match="cfg"):
        feature_hessian_factor(params, cfg.replace(activation="relu"))


def test_layer_argument_checked():
    params = init_params(T5)
    with pytest.raises(ValueError, match="layer"):
        backprop_errors(params, T5, T5.L + 2)
    with pytest.raises(ValueError, match="layer"):
        per_sample_gradients(params, T5, T5.L + 1)
    with pytest.raises(ValueError, match="W"):
        weight_gram_spectrum(torch.zeros(3))
