"""Tests for ufmlib.hessian: layer-wise (R2, v1 Thm 4.1) and full (R7) Hessians of the fit term.

Reference numbers: the companion's float64 evaluation of the closed forms of R2 (layer Hessian),
R7 (full Hessian) and R8 (ReLU kink); the conventions row-major vec and fit-term Hessian of the
book appendix *How each statement was rebuilt* (sources-conventions). Dense autodiff Hessians
are only formed for small widths (d <= 12); the d = 60 check of R2 goes through the Kronecker
factors.
"""

from __future__ import annotations

import math

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.full_hessian import fit_gradient, full_hessian_autodiff, full_hvp
from ufmlib.spectrum import Spectrum
from ufmlib.hessian import (
    downstream_jacobians,
    kronecker_eigh,
    layer_dims,
    layer_hessian_autodiff,
    layer_hessian_dense,
    layer_hessian_factors,
    layer_hvp,
    layer_spectrum,
)
from ufmlib.model import UFMParams, fit_loss, init_params
from ufmlib.optimum import construct_ce_critical_point, construct_minimiser, dnc_optimum
from ufmlib.theory import full_hessian_outliers

F64 = torch.float64
TOL = 1e-10


def _random_symmetric(n: int, seed: int, *, psd: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=F64)
    return A @ A.mT / n if psd else (A + A.mT) / 2


def _points(cfg: UFMConfig):
    """A random point and an optimal (or critical) point of the model described by ``cfg``."""
    yield "random", init_params(cfg)
    if cfg.loss == "ce":
        yield "ce-critical", construct_ce_critical_point(cfg, frames="random")
    else:  # the linear MSE minimiser; non-negative frames make it a (kinked) ReLU point too
        yield "optimal", construct_minimiser(cfg, frames="nonnegative" if cfg.activation == "relu" else "random")


# ----------------------------------------------------------------------------- R2, v1 Thm 4.1
def test_T1_layer3_outliers_from_factors_at_paper_scale():
    """R2 at the paper's sizes (v1 Sec. 5.1): K=3, n=40, d=60, L=5, λ=0.01, layer 3 - 9 eigenvalues 0.16324256978, 10th ≤ 1e-12."""
    cfg = UFMConfig(K=3, n=40, d=60, L=5, lambda_W=0.01, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    spec = layer_spectrum(params, cfg, 3, method="kronecker")
    assert spec.method == "kronecker" and spec.dim == 3600 and spec.k == 3600
    ev = spec.eigenvalues
    assert torch.allclose(ev[:9], torch.full((9,), 0.16324256978, dtype=F64), rtol=1e-9, atol=0)
    assert abs(ev[9].item()) <= 1e-12 and ev[9:].abs().max().item() <= 1e-12
    # the closed form of the optimum module agrees to rounding
    assert abs(ev[0].item() - dnc_optimum(cfg).layer_hessian_outlier[2]) <= 1e-13
    # lazily built top-9 vectors are orthonormal eigenvectors of P ⊗ Q (checked matrix-free)
    V = spec.vectors(9)
    assert V.shape == (3600, 9)
    assert torch.allclose(V.mT @ V, torch.eye(9, dtype=F64), atol=1e-12)
    matvec, dim = layer_hvp(params, cfg, 3)
    assert dim == 3600
    assert (matvec(V) - V * ev[:9]).abs().max().item() <= 1e-12


def test_T1_every_layer_and_per_layer_lambda():
    """R2: outlier λ_{W_l} γ/(1-γ) in every layer; ∝ λ_{W_l} when λ varies by layer."""
    lams = (0.01, 0.02, 0.005, 0.01)
    cfg = UFMConfig(K=3, n=6, d=10, L=4, lambda_W=lams, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    opt = dnc_optimum(cfg)
    for layer in range(1, 5):
        ev = layer_spectrum(params, cfg, layer, k=10).eigenvalues
        expected = lams[layer - 1] * opt.gamma / opt.one_minus_gamma
        assert torch.allclose(ev[:9], torch.full((9,), expected, dtype=F64), rtol=1e-10, atol=0)
        assert abs(ev[9].item()) <= 1e-12


def test_T1_K10_hundred_equal_outliers():
    """R2 (K=10, n=5, L=3, λ=2^-10): 100 equal outliers 0.0654037323."""
    lam = 2.0**-10
    cfg = UFMConfig(K=10, n=5, d=12, L=3, lambda_W=lam, lambda_H=lam)
    params = construct_minimiser(cfg, frames="random")
    ev = layer_spectrum(params, cfg, 2, k=101).eigenvalues
    assert torch.allclose(ev[:100], torch.full((100,), 0.0654037323, dtype=F64), rtol=1e-9, atol=0)
    assert abs(ev[100].item()) <= 1e-12


@pytest.mark.parametrize(
    "cfg",
    [
        UFMConfig(K=3, n=4, d=8, L=2, seed=1),
        UFMConfig(K=4, n=3, d=9, L=3, lambda_W=0.005, lambda_H=0.002, seed=2),
        UFMConfig(K=3, n=5, d=8, L=5, lambda_W=(0.01, 0.02, 0.005, 0.01, 0.03), seed=3),
        UFMConfig(K=4, n=2, d=10, L=4, seed=4),
    ],
    ids=["K3L2", "K4L3", "K3L5-perlayer", "K4L4"],
)
def test_kronecker_factors_equal_autodiff_everywhere(cfg):
    """R2 (a): Hess_l = (A^{(l+1)T}A^{(l+1)}) ⊗ Σ^{(l)} at random and optimal points (≤1e-10)."""
    for _, params in _points(cfg):
        for layer in range(1, cfg.L + 1):
            P, Q = layer_hessian_factors(params, cfg, layer)
            d_out, d_in = layer_dims(cfg, layer)
            assert P.shape == (d_out, d_out) and Q.shape == (d_in, d_in)
            H = layer_hessian_autodiff(params, cfg, layer)
            assert (torch.kron(P, Q) - H).abs().max().item() <= TOL
            assert H.abs().max().item() > 1e-3  # not trivially zero


def test_kronecker_eigh_matches_dense_eigh():
    P, Q = _random_symmetric(5, 0), _random_symmetric(7, 1, psd=False)
    spec = kronecker_eigh(P, Q)
    dense = torch.linalg.eigvalsh(torch.kron(P, Q)).flip(0)
    assert torch.allclose(spec.eigenvalues, dense, atol=1e-12, rtol=0)
    assert bool((spec.eigenvalues[:-1] >= spec.eigenvalues[1:]).all())
    V = spec.eigenvectors
    assert V.shape == (35, 35)
    assert torch.allclose(V.mT @ V, torch.eye(35, dtype=F64), atol=1e-12)
    assert (torch.kron(P, Q) @ V - V * spec.eigenvalues).abs().max().item() <= 1e-12
    top = kronecker_eigh(P, Q, k=4)
    assert top.k == 4 and top.dim == 35
    assert torch.equal(top.eigenvalues, spec.eigenvalues[:4])
    assert torch.allclose(top.vectors(), V[:, :4], atol=0, rtol=0)
    # an eigenvector is the row-major vec of the rank-one matrix u_a v_b^T
    a, b = top.kronecker.pairs[0].tolist()
    u, v = top.kronecker.P_eigenvectors[:, a], top.kronecker.Q_eigenvectors[:, b]
    assert torch.allclose(top.vectors(1)[:, 0], torch.outer(u, v).reshape(-1), atol=0)


def test_pitfall_column_major_vec_swaps_kronecker_factors():
    """Row-major vec (sources-conventions): Hessian w.r.t. the column-major vec of W_l is Q ⊗ P, not P ⊗ Q."""
    cfg = UFMConfig(K=3, n=4, d=8, L=3, seed=5)
    params = init_params(cfg)
    layer = 2
    P, Q = layer_hessian_factors(params, cfg, layer)
    tensors = params.tensors()
    W = tensors[layer]

    def f(w_colmajor):  # w = vec_col(W) = W^T.reshape(-1)
        ts = list(tensors)
        ts[layer] = w_colmajor.reshape(W.shape[1], W.shape[0]).mT
        return fit_loss(ts, cfg)

    H_col = torch.func.hessian(f)(W.mT.reshape(-1))
    assert (H_col - torch.kron(Q, P)).abs().max().item() <= TOL
    assert (H_col - torch.kron(P, Q)).abs().max().item() > 1e-3
    # and the row-major Hessian is the other order
    H_row = layer_hessian_autodiff(params, cfg, layer)
    assert (H_row - torch.kron(Q, P)).abs().max().item() > 1e-3


def test_pitfall_fit_vs_regularised_differ_by_lambda_identity():
    """Fit-term Hessian (sources-conventions): regularised Hessian = fit Hessian + λ_{W_l} I (per-layer λ)."""
    cfg = UFMConfig(K=3, n=4, d=8, L=3, lambda_W=(0.01, 0.03, 0.07), activation="relu", seed=6)
    params = init_params(cfg)
    for layer in (1, 3):
        lam = cfg.lambda_Ws[layer - 1]
        H = layer_hessian_autodiff(params, cfg, layer)
        Hr = layer_hessian_autodiff(params, cfg, layer, regularised=True)
        eye = torch.eye(H.shape[0], dtype=F64)
        assert (Hr - H - lam * eye).abs().max().item() <= 1e-14
        mv, dim = layer_hvp(params, cfg, layer, regularised=True)
        assert (mv(torch.eye(dim, dtype=F64)) - Hr).abs().max().item() <= TOL
        s, sr = layer_spectrum(params, cfg, layer), layer_spectrum(params, cfg, layer, regularised=True)
        assert torch.allclose(sr.eigenvalues - s.eigenvalues, torch.full_like(s.eigenvalues, lam), atol=1e-14)
    lin = cfg.replace(activation="linear")
    s = layer_spectrum(params, lin, 2, method="kronecker")
    sr = layer_spectrum(params, lin, 2, method="kronecker", regularised=True)
    assert torch.allclose(sr.eigenvalues, s.eigenvalues + 0.03, atol=1e-15, rtol=0)


# ----------------------------------------------------------------------------- layer_hvp
@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_layer_hvp_equals_autodiff_all_model_kinds(activation, loss):
    """Kronecker-sum HVP = autodiff layer Hessian (≤1e-10, float64), every layer, two points."""
    cfg = UFMConfig(K=3, n=4, d=8, L=4, activation=activation, loss=loss, lambda_W=0.01, lambda_H=0.01, seed=7)
    for name, params in _points(cfg):
        for layer in range(1, cfg.L + 1):
            H = layer_hessian_autodiff(params, cfg, layer)
            mv, dim = layer_hvp(params, cfg, layer)
            assert dim == H.shape[0]
            E = torch.eye(dim, dtype=F64)
            assert (mv(E) - H).abs().max().item() <= TOL, (name, layer)
            v = E[:, 3] + 0.5 * E[:, -1]
            assert (mv(v) - H @ v).abs().max().item() <= TOL
            assert (layer_hessian_dense(params, cfg, layer) - H).abs().max().item() <= TOL
            assert H.abs().max().item() > 1e-4 or (name == "optimal" and activation == "relu")


def test_relu_downstream_jacobian_has_masks():
    cfg = UFMConfig(K=3, n=4, d=8, L=3, activation="relu", seed=8)
    params = init_params(cfg)
    B = downstream_jacobians(params, cfg, 1)
    assert B.shape == (cfg.N, cfg.K, cfg.d)
    # finite-difference-free check: z_i = W_3 relu(W_2 relu(h_2,i)) is linear in h_2,i near it
    h2 = params.Ws[0] @ params.H1
    i = 5
    J = torch.func.jacrev(lambda h: params.Ws[2] @ torch.relu(params.Ws[1] @ torch.relu(h)))(h2[:, i])
    assert torch.allclose(B[i], J, atol=1e-14)
    assert downstream_jacobians(params, cfg, 3).shape == (3, 3)


def test_T8_relu_kink_convention_changes_outlier_count():
    """R8 kink check (K=3, n=4, L=4, d=6, λ=0.01, exact non-negative optimum).

    ReLU'(0)=0 (PyTorch) -> 3 eigenvalues 0.2364175; =1/2 -> 3 + 6 at 0.0591044 (layer 3) /
    0.0147761 (layer 2); =1 -> 9 at 0.2364175.
    """
    cfg = UFMConfig(K=3, n=4, d=6, L=4, activation="relu")
    params = construct_minimiser(cfg, frames="nonnegative")
    top = dnc_optimum(cfg).layer_hessian_outlier[0]
    assert abs(top - 0.2364175) <= 5e-8
    for layer, low in ((3, 0.0591044), (2, 0.0147761)):
        torch_conv = layer_hessian_autodiff(params, cfg, layer)
        assert (layer_hessian_dense(params, cfg, layer) - torch_conv).abs().max().item() <= TOL
        ev0 = layer_spectrum(params, cfg, layer, k=10).eigenvalues
        assert torch.allclose(ev0[:3], torch.full((3,), top, dtype=F64), rtol=1e-10)
        assert ev0[3:].abs().max().item() <= 1e-12
        evh = layer_spectrum(params, cfg, layer, k=10, relu_prime_at_zero=0.5).eigenvalues
        assert torch.allclose(evh[:3], torch.full((3,), top, dtype=F64), rtol=1e-10)
        assert torch.allclose(evh[3:9], torch.full((6,), low, dtype=F64), atol=5e-8, rtol=0)
        assert abs(evh[3].item() - top * 0.25 ** (cfg.L - layer)) <= 1e-12  # c0^{2 r_l} λ_out
        ev1 = layer_spectrum(params, cfg, layer, k=10, relu_prime_at_zero=1.0).eigenvalues
        assert torch.allclose(ev1[:9], torch.full((9,), top, dtype=F64), rtol=1e-10)
        assert abs(ev1[9].item()) <= 1e-12


def test_layer_spectrum_methods_agree():
    cfg = UFMConfig(K=3, n=4, d=8, L=3, seed=9)
    params = init_params(cfg)
    kron = layer_spectrum(params, cfg, 2, k=6)
    dense = layer_spectrum(params, cfg, 2, k=6, method="dense")
    lanc = layer_spectrum(params, cfg, 2, k=6, method="lanczos", seed=1)
    assert kron.method == "kronecker" and dense.method == "dense" and lanc.method.startswith("lanczos")
    assert torch.allclose(kron.eigenvalues, dense.eigenvalues, atol=1e-13, rtol=0)
    assert torch.allclose(lanc.eigenvalues, dense.eigenvalues, atol=1e-11, rtol=0)
    assert lanc.num_matvecs is not None and lanc.num_matvecs > 0
    H = layer_hessian_autodiff(params, cfg, 2)
    for s in (kron, dense, lanc):
        V = s.eigenvectors
        assert (H @ V - V * s.eigenvalues).abs().max().item() <= 1e-9
    for act, loss in (("relu", "mse"), ("linear", "ce"), ("relu", "ce")):
        c = cfg.replace(activation=act, loss=loss)
        d = layer_spectrum(params, c, 1, k=5)
        lz = layer_spectrum(params, c, 1, k=5, method="lanczos")
        assert d.method == "dense"
        assert torch.allclose(d.eigenvalues, lz.eigenvalues, atol=1e-11, rtol=0)


def test_layer_spectrum_auto_uses_lanczos_for_large_relu_layers():
    cfg = UFMConfig(K=3, n=4, d=52, L=3, activation="relu", loss="ce", seed=10)
    params = init_params(cfg)
    spec = layer_spectrum(params, cfg, 2, k=4)
    assert spec.method.startswith("lanczos") and spec.dim == 52 * 52
    mv, _ = layer_hvp(params, cfg, 2)
    V = spec.eigenvectors
    assert (mv(V) - V * spec.eigenvalues).abs().max().item() <= 1e-9 * spec.eigenvalues[0].item()


# ----------------------------------------------------------------------------- R7 (full Hessian)
def _counts(ev: torch.Tensor, levels: list[float], atol: float) -> list[int]:
    return [int(((ev - lev).abs() <= atol).sum()) for lev in levels]


def test_T6_full_weight_hessian_levels():
    """R7: K=4, n=3, L=4, d=6, λ=0.01: 0.7677079 ×6, 0.7077079 ×10, +0.01 ×54, 0 ×20, −0.01 ×42."""
    cfg = UFMConfig(K=4, n=3, d=6, L=4, lambda_W=0.01, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    H = full_hessian_autodiff(params, cfg)
    assert H.shape == (132, 132)
    ev = torch.linalg.eigvalsh(H).flip(0)
    assert _counts(ev, [0.7677079, 0.7077079, 0.01, 0.0, -0.01], 5e-8) == [6, 10, 54, 20, 42]
    up, down = full_hessian_outliers(cfg)
    assert (ev[:6] - up["level"]).abs().max().item() <= 1e-12
    assert (ev[6:16] - down["level"]).abs().max().item() <= 1e-12
    # diagonal blocks are the layer Hessians, in [W_1..W_L] row-major order
    start = 0
    for layer in range(1, cfg.L + 1):
        size = math.prod(layer_dims(cfg, layer))
        block = H[start : start + size, start : start + size]
        assert (block - layer_hessian_autodiff(params, cfg, layer)).abs().max().item() <= 1e-12
        start += size
    Hr = full_hessian_autodiff(params, cfg, regularised=True)
    assert (Hr - H - 0.01 * torch.eye(132, dtype=F64)).abs().max().item() <= 1e-15


def test_T6_full_hessian_with_features():
    """R7 (d), all parameters: 0.9621349 ×6, 0.8821349 ×10 (split ±Lλ around (L+1)λγ/(1-γ))."""
    cfg = UFMConfig(K=4, n=3, d=6, L=4, lambda_W=0.01, lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    H = full_hessian_autodiff(params, cfg, include_H=True)
    assert H.shape == (204, 204)
    ev = torch.linalg.eigvalsh(H).flip(0)
    assert _counts(ev, [0.9621349, 0.8821349], 5e-8) == [6, 10]
    opt = dnc_optimum(cfg)
    gn = (cfg.L + 1) * 0.01 * opt.gamma / opt.one_minus_gamma
    assert abs(ev[0].item() - (gn + cfg.L * 0.01)) <= 1e-12
    assert abs(ev[15].item() - (gn - cfg.L * 0.01)) <= 1e-12
    assert abs(ev[16].item() - opt.feature_hessian_outlier) <= 1e-12  # the K²(n-1) feature level
    Hr = full_hessian_autodiff(params, cfg, include_H=True, regularised=True)
    assert (torch.diagonal(Hr - H)[:72] - 0.01).abs().max().item() <= 1e-15


@pytest.mark.parametrize("include_H", [False, True])
def test_full_hvp_equals_dense(include_H):
    cfg = UFMConfig(K=3, n=3, d=5, L=3, activation="relu", loss="ce", seed=11)
    params = init_params(cfg)
    H = full_hessian_autodiff(params, cfg, include_H=include_H)
    mv, dim = full_hvp(params, cfg, include_H=include_H)
    assert dim == H.shape[0] == (5 * 9 if include_H else 0) + 25 * 2 + 15
    E = torch.eye(dim, dtype=F64)
    assert (mv(E) - H).abs().max().item() <= TOL
    assert (mv(E[:, 7]) - H[:, 7]).abs().max().item() <= TOL
    mvr, _ = full_hvp(params, cfg, include_H=include_H, regularised=True)
    Hr = full_hessian_autodiff(params, cfg, include_H=include_H, regularised=True)
    assert (mvr(E) - Hr).abs().max().item() <= TOL
    assert (Hr - H).abs().max().item() >= 0.01 - 1e-15


# ----------------------------------------------------------------------------- gradient
def test_fit_gradient_layer_and_flat():
    cfg = UFMConfig(K=3, n=4, d=6, L=3, lambda_W=(0.01, 0.02, 0.03))
    params = construct_minimiser(cfg, frames="random")
    flat = fit_gradient(params, cfg)
    parts = [fit_gradient(params, cfg, layer) for layer in range(1, 4)]
    assert torch.equal(flat, torch.cat(parts))
    for layer, g in enumerate(parts, start=1):  # R4: fit gradient = -λ_{W_l} W_l at the minimiser
        W = params.Ws[layer - 1]
        assert (g + cfg.lambda_Ws[layer - 1] * W.reshape(-1)).abs().max().item() <= 1e-13
        assert g.abs().max().item() > 1e-3
    withH = fit_gradient(params, cfg, include_H=True)
    assert (withH[: 6 * 12] + 0.01 * params.H1.reshape(-1)).abs().max().item() <= 1e-13
    rnd = init_params(cfg.replace(activation="relu"))
    tensors = [t.clone().requires_grad_(True) for t in rnd.tensors()]
    grads = torch.autograd.grad(fit_loss(tensors, cfg.replace(activation="relu")), tensors)
    ours = fit_gradient(rnd, cfg.replace(activation="relu"), include_H=True)
    assert torch.allclose(ours, torch.cat([g.reshape(-1) for g in grads]), atol=1e-15)


# ----------------------------------------------------------------------------- arguments
def test_bad_arguments_raise_value_error_naming_parameter():
    cfg = UFMConfig(K=3, n=2, d=4, L=2)
    params = init_params(cfg)
    relu = cfg.replace(activation="relu")
    with pytest.raises(ValueError, match="layer"):
        layer_hvp(params, cfg, 0)
    with pytest.raises(ValueError, match="layer"):
        layer_hessian_autodiff(params, cfg, 3)
    with pytest.raises(ValueError, match="cfg"):
        layer_hessian_factors(params, relu, 1)
    with pytest.raises(ValueError, match="method"):
        layer_spectrum(params, cfg, 1, method="arnoldi")
    with pytest.raises(ValueError, match="k"):
        layer_spectrum(params, cfg, 1, k=17)
    with pytest.raises(ValueError, match="k must be given"):
        layer_spectrum(params, relu, 1, method="lanczos")
    with pytest.raises(ValueError, match="relu_prime_at_zero"):
        layer_hvp(params, relu, 1, relu_prime_at_zero=2.0)
    with pytest.raises(ValueError, match="params"):
        layer_hvp(UFMParams(params.H1[:, :3], params.Ws), cfg, 1)
    with pytest.raises(ValueError, match="P"):
        kronecker_eigh(torch.zeros(2, 3, dtype=F64), torch.eye(2, dtype=F64))
    mv, dim = layer_hvp(params, cfg, 1)
    with pytest.raises(ValueError, match="v must have shape"):
        mv(torch.zeros(dim + 1, dtype=F64))
    with pytest.raises(ValueError, match="include_H"):
        fit_gradient(params, cfg, 1, include_H=True)
    with pytest.raises(ValueError, match="without eigenvectors"):
        Spectrum(eigenvalues=torch.zeros(2), dim=2, method="x").vectors()
