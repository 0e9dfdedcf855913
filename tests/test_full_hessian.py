"""Full-Hessian measurements (ufmlib.full_hessian), level matching (ufmlib.levels), the agreement
table (ufmlib.notebook), the H_1-Hessian factor (ufmlib.matrices) and SLQ level weights (ufmlib.slq).

Reference numbers (full Hessian, R7: K=4, n=3, L=4, d=6, λ=0.01 gives 0.7677079 ×6,
0.7077079 ×10, +0.01 ×54, 0 ×20, -0.01 ×42; Gauss-Newton part 0.7377079 ×16; R6: the H_1-Hessian
has K²n equal eigenvalues λ_H γ/(1-γ)) come from an independent float64 computation.
"""

from __future__ import annotations

import math

import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.full_hessian import frame_coefficients, full_gauss_newton, full_hessian_autodiff, full_hvp, layer_blocks
from ufmlib.hessian import kronecker_eigh
from ufmlib.lanczos import dense_matvec
from ufmlib.levels import match_levels, match_spectrum
from ufmlib.matrices import feature_hessian, feature_hessian_factor
from ufmlib.model import init_params
from ufmlib.notebook import agreement_table as agreement_markdown
from ufmlib.optimum import construct_minimiser, dnc_optimum
from ufmlib.slq import slq_density, slq_level_weights, slq_weight_tolerance
from ufmlib.theory import optimum_full_hessian

F64 = torch.float64
T6 = UFMConfig(K=4, n=3, d=6, L=4, lambda_W=0.01, lambda_H=0.01)


@pytest.fixture(scope="module")
def t6():
    params = construct_minimiser(T6, frames="random")
    H = full_hessian_autodiff(params, T6)
    w, V = torch.linalg.eigh(H)
    return params, H, w.flip(0), V.flip(1)


def test_match_levels_counts_and_errors():
    x = torch.tensor([1.0, 1.0 + 1e-9, 0.5, 0.0, 0.0, 0.0, 0.3], dtype=F64)
    tab = match_levels(x, [1.0, 0.5, 0.0], [2, 1, 3], atol=1e-6, labels=["top", "mid", "bulk"])
    assert tab.counts == (2, 1, 3)
    assert tab.unmatched == 1 and not tab.agrees  # 0.3 belongs to no level
    assert tab.rows[0].max_error == pytest.approx(1e-9, rel=1e-6)
    assert tab.assignment.tolist() == [0, 0, 1, 2, 2, 2, -1]
    assert tab.indices(2).tolist() == [3, 4, 5]
    md = tab.markdown(digits=4)
    assert md.count("\n") == 5 and "| top | 1 | 2 | 2 |" in md and "unmatched" in md
    ok = match_levels(x[:-1], [1.0, 0.5, 0.0], [2, 1, 3], atol=1e-6)
    assert ok.agrees and ok.max_error == pytest.approx(1e-9, rel=1e-6)
    wrong = match_levels(x[:-1], [1.0, 0.5, 0.0], [3, 1, 2], atol=1e-6)
    assert not wrong.agrees and [r.count_agrees for r in wrong.rows] == [False, True, False]


def test_match_levels_rejects_bad_arguments():
    with pytest.raises(ValueError, match="atol"):
        match_levels([1.0], [1.0, 1.1], [1, 1], atol=0.06)  # levels closer than 2 atol
    with pytest.raises(ValueError, match="atol"):
        match_levels([1.0], [1.0], [1], atol=0.0)
    with pytest.raises(ValueError, match="multiplicities"):
        match_levels([1.0], [1.0, 2.0], [1], atol=1e-3)
    with pytest.raises(ValueError, match="multiplicities"):
        match_levels([1.0], [1.0], [-1], atol=1e-3)
    with pytest.raises(ValueError, match="labels"):
        match_levels([1.0], [1.0], [1], atol=1e-3, labels=["a", "b"])
    with pytest.raises(ValueError, match="digits"):
        match_levels([1.0], [1.0], [1], atol=1e-3).markdown(digits=0)


def test_match_spectrum_T6_full_hessian(t6):
    """R7: the dense full weight Hessian matches 0.7677 ×6, 0.7077 ×10, ±0.01, 0 exactly."""
    _, _, w, _ = t6
    pred = optimum_full_hessian(T6)
    tab = match_spectrum(w, pred, atol=1e-9)
    assert tab.agrees, tab.markdown()
    assert [r.label for r in tab.rows] == ["1", "2", "3", "4", "bulk"]
    assert tab.counts == (6, 10, 54, 42, 20)
    assert tab.rows[0].measured_mean == pytest.approx(0.7677079, abs=5e-8)
    assert tab.rows[1].measured_mean == pytest.approx(0.7077079, abs=5e-8)
    assert tab.max_error <= 1e-12
    # only the top of the spectrum: the bulk level is not added
    top = match_spectrum(w[:16], pred, atol=1e-9)
    assert top.counts == (6, 10, 0, 0) and top.unmatched == 0
    with pytest.raises(ValueError, match="Spectrum"):
        match_spectrum(w, [1.0], atol=1e-9)


def test_agreement_markdown():
    md = agreement_markdown([("a", 2.0, 2.002), ("b", 0.0, 1e-17)], digits=4)
    lines = md.splitlines()
    assert lines[0] == "| quantity | predicted | measured | relative error |"
    assert lines[2] == "| a | 2 | 2.002 | 1.0e-03 |"
    assert lines[3].endswith("1.0e-17 (abs) |")
    md = agreement_markdown([("a", 1.0, 1.0, 7)], headers=("q", "p", "m", "count", "err"))
    assert md.splitlines()[0] == "| q | p | m | count | err |" and md.splitlines()[2] == "| a | 1 | 1 | 7 | 0.0e+00 |"
    with pytest.raises(ValueError, match="headers"):
        agreement_markdown([("a", 1.0, 1.0, 7)])
    with pytest.raises(ValueError, match="rows"):
        agreement_markdown([("a", 1.0)])


def test_full_gauss_newton_T6(t6):
    """R7 (b): G has K² = 16 eigenvalues Σ_l λ_out(l) = 0.7377079, the rest 0."""
    params, H, _, _ = t6
    G = full_gauss_newton(params, T6)
    assert G.shape == H.shape
    w = torch.linalg.eigvalsh(G).flip(0)
    opt = dnc_optimum(T6)
    assert torch.allclose(w[:16], torch.full((16,), sum(opt.layer_hessian_outlier), dtype=F64), rtol=1e-12, atol=0)
    assert w[:16].mean().item() == pytest.approx(0.7377079, abs=5e-8)
    assert w[16:].abs().max().item() <= 1e-13
    # diagonal blocks of G are the layer Hessians = diagonal blocks of the full Hessian (layer blocks are GN)
    for sl in layer_blocks(T6):
        assert torch.allclose(G[sl, sl], H[sl, sl], atol=1e-13, rtol=0)


def test_full_gauss_newton_equals_hessian_for_one_layer_at_random_point():
    """With L = 1 and H_1 fixed the fit term is quadratic in W_1, so the Hessian is exactly G."""
    cfg = UFMConfig(K=3, n=2, d=4, L=1, seed=3)
    params = init_params(cfg)
    assert torch.allclose(full_gauss_newton(params, cfg), full_hessian_autodiff(params, cfg), atol=1e-13, rtol=0)
    ce = cfg.replace(loss="ce")
    assert torch.allclose(full_gauss_newton(params, ce), full_hessian_autodiff(params, ce), atol=1e-13, rtol=0)
    # with H_1 included the bilinear coupling is not a Gauss-Newton term: they differ
    G = full_gauss_newton(params, cfg, include_H=True)
    H = full_hessian_autodiff(params, cfg, include_H=True)
    assert G.shape == H.shape and (G - H).abs().max().item() > 1e-3


def test_feature_hessian_factor_matches_autodiff():
    """R6: ∂²ℓ/∂vec(H_1)² = F ⊗ I_N (row-major) at any point; K·N eigenvalues λ_H γ/(1-γ) at the optimum."""
    cfg = UFMConfig(K=3, n=5, d=7, L=4, seed=2)
    rand = init_params(cfg)
    F = feature_hessian_factor(rand, cfg)
    assert F.shape == (7, 7)
    eye = torch.eye(cfg.N, dtype=F64)
    assert torch.allclose(torch.kron(F, eye), feature_hessian(rand, cfg), atol=1e-14, rtol=0)
    opt_params = construct_minimiser(cfg, frames="random")
    spec = kronecker_eigh(feature_hessian_factor(opt_params, cfg), eye)
    lam = dnc_optimum(cfg).feature_hessian_outlier
    assert torch.allclose(spec.eigenvalues[: 3 * cfg.N], torch.full((3 * cfg.N,), lam, dtype=F64), rtol=1e-12, atol=0)
    assert spec.eigenvalues[3 * cfg.N :].abs().max().item() <= 1e-14
    with pytest.raises(ValueError, match="linear MSE"):
        feature_hessian_factor(rand, cfg.replace(loss="ce"))


def test_layer_blocks():
    blocks = layer_blocks(T6)
    assert [(s.start, s.stop) for s in blocks] == [(0, 36), (36, 72), (72, 108), (108, 132)]
    withH = layer_blocks(T6, include_H=True)
    assert withH[0] == slice(0, 72) and withH[-1].stop == 204
    with pytest.raises(ValueError, match="cfg"):
        layer_blocks("T6")


def test_frame_coefficients_of_outlier_eigenvectors(t6):
    """R7 (c): upper level antisymmetric, lower level symmetric, weight 1/L per layer."""
    params, _, _, V = t6
    C = frame_coefficients(V[:, :16], params, T6)
    assert C.shape == (16, 4, 4, 4)
    per_layer = C.pow(2).sum(dim=(2, 3))
    assert torch.allclose(per_layer, torch.full_like(per_layer, 0.25), atol=1e-12, rtol=0)
    upper, lower = C[:6], C[6:]
    assert (upper + upper.transpose(-1, -2)).abs().max().item() <= 1e-12
    assert (lower - lower.transpose(-1, -2)).abs().max().item() <= 1e-12
    # a bulk eigenvector has (almost) nothing inside the frames, or at least not all of its weight
    bulk = frame_coefficients(V[:, -1], params, T6).pow(2).sum().item()
    assert bulk < 1 - 1e-6
    with pytest.raises(ValueError, match="rows"):
        frame_coefficients(V[:-1, :2], params, T6)
    with pytest.raises(ValueError, match="orthogonal"):
        frame_coefficients(V[:, :2], init_params(T6), T6)


def test_slq_level_weights_match_dense_projections(t6):
    """SLQ weight on each exact level = ||P_i v||²/||v||² per probe (as in PyHessian PR #23)."""
    params, H, w, V = t6
    pred = optimum_full_hessian(T6)
    levels = pred.values.tolist() + [0.0]
    dens = slq_density(dense_matvec(H), dim=H.shape[0], num_steps=20, num_probes=4, seed=5)
    got = slq_level_weights(dens, levels, atol=1e-8)
    assert got.shape == (4, 6)
    assert torch.allclose(got.sum(dim=1), torch.ones(4, dtype=F64), atol=1e-12, rtol=0)
    assert got[:, -1].abs().max().item() <= 1e-12  # no node away from the five levels
    tab = match_spectrum(w, pred, atol=1e-9)
    order = [0, 1, 2, 3, 4]  # the rows of tab follow `levels`
    from ufmlib.slq import rademacher

    probes = rademacher(num_probes=4, dim=H.shape[0], seed=5)
    for i in order:
        Vi = V[:, tab.indices(i)]
        exact = (probes @ Vi).pow(2).sum(dim=1) / H.shape[0]
        assert torch.allclose(got[:, i], exact, atol=1e-10, rtol=0)


def test_slq_weight_tolerance():
    assert slq_weight_tolerance(50, 1000, 8) == pytest.approx(5 * math.sqrt(100 / 8) / 1000, rel=1e-15)
    assert slq_weight_tolerance(50, 1000, 8, sigmas=1.0) == pytest.approx(math.sqrt(100 / 8) / 1000, rel=1e-15)
    with pytest.raises(ValueError, match="num_probes"):
        slq_weight_tolerance(1, 10, 0)
    with pytest.raises(ValueError, match="sigmas"):
        slq_weight_tolerance(1, 10, 1, sigmas=-1.0)


def test_slq_weight_tolerance_covers_sampling_error():
    """The probe-averaged weight of a random rank-m projector stays within the 5σ bound."""
    dim, m = 400, 30
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(dim, m, generator=gen, dtype=F64))
    A = Q @ Q.T
    dens = slq_density(dense_matvec(A), dim=dim, num_steps=5, num_probes=16, seed=1)
    weights = slq_level_weights(dens, [1.0, 0.0], atol=1e-8).mean(dim=0)
    assert abs(weights[0].item() - m / dim) <= slq_weight_tolerance(m, dim, 16)
    assert weights[-1].item() <= 1e-12


def test_full_hvp_block_of_H1_matches_factor():
    """The H_1 block of the full Hessian-vector product equals (F ⊗ I_N) v (used by the R6 chapter)."""
    cfg = UFMConfig(K=3, n=4, d=6, L=3, seed=1)
    params = init_params(cfg)
    F = feature_hessian_factor(params, cfg)
    matvec, dim = full_hvp(params, cfg, include_H=True)
    blk = layer_blocks(cfg, include_H=True)[0]
    gen = torch.Generator().manual_seed(0)
    Vh = torch.randn(cfg.d, cfg.N, generator=gen, dtype=F64)
    v = torch.zeros(dim, dtype=F64)
    v[blk] = Vh.reshape(-1)
    assert torch.allclose(matvec(v)[blk], (F @ Vh).reshape(-1), atol=1e-14, rtol=0)
