"""Alignment metrics (ufmlib.alignment) on exact optima and on hand-made cases (R4, v1 Thm 4.3).

Measurement conventions: book appendix *How each statement was rebuilt* (sources-conventions).

Reference Hessians and gradients are built here with ``torch.func`` from
``ufmlib.model.fit_loss`` (row-major flattened weights, float64, d <= 12).
"""

from __future__ import annotations

import math

import pytest
import torch

from ufmlib.alignment import (
    KroneckerBasis,
    class_mean_kronecker_basis,
    count_outliers,
    eigvec_test,
    gradient_coefficients,
    kronecker_eigvec_test,
    orthonormal_basis,
    outlier_equalisation,
    outlier_gap,
    projector_distance,
    subspace_overlap,
    top_overlap,
)
from ufmlib.config import UFMConfig
from ufmlib.model import UFMParams, fit_loss, forward, regularised_loss
from ufmlib.optimum import construct_minimiser
from ufmlib import theory as T

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The matrices here are tiny: one intra-op thread avoids oversubscribing a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def layer_hessian(params, cfg, layer, loss=fit_loss):
    ts = [t.detach().clone() for t in params.tensors()]
    shape = ts[layer].shape

    def f(x):
        tt = list(ts)
        tt[layer] = x.reshape(shape)
        return loss(tt, cfg)

    return torch.func.hessian(f)(ts[layer].reshape(-1))


def layer_grad(params, cfg, layer, loss=fit_loss):
    ts = [t.detach().clone() for t in params.tensors()]
    return torch.func.grad(lambda W: loss(ts[:layer] + [W] + ts[layer + 1 :], cfg))(ts[layer])


def means(params, cfg, layer):
    """(M_next, M_this) class means around W_layer (logit directions I_K after W_L)."""
    X = forward(params).inputs
    cm = lambda A: A.reshape(A.shape[0], cfg.K, cfg.n).mean(-1)
    nxt = torch.eye(cfg.K, dtype=F64) if layer == cfg.L else cm(X[layer])
    return nxt, cm(X[layer - 1])


OPTIMA = [
    (UFMConfig(K=3, n=4, d=6, L=3), "random"),
    (UFMConfig(K=4, n=2, d=7, L=4, lambda_W=(0.01, 0.02, 0.005, 0.015), lambda_H=0.02), "random"),
    (UFMConfig(K=2, n=3, d=4, L=2, lambda_W=0.02, lambda_H=0.01), "canonical"),
]


# ----------------------------------------------------------------------------- basis and coefficients
def test_kronecker_basis_is_row_major_and_orthonormal_at_the_optimum():
    cfg, frames = OPTIMA[0]
    params = construct_minimiser(cfg, frames=frames)
    Mn, Mt = means(params, cfg, 2)
    basis = class_mean_kronecker_basis(Mn, Mt)
    assert isinstance(basis, KroneckerBasis) and basis.K == 3 and basis.shape == (6, 6)
    assert basis.labels[5] == (1, 2)
    a, b = Mn[:, 1] / Mn[:, 1].norm(), Mt[:, 2] / Mt[:, 2].norm()
    assert torch.allclose(basis.vectors[:, 5], torch.kron(a, b), atol=1e-15, rtol=0)  # vec(a b^T) = a ⊗ b
    assert torch.allclose(basis.vectors[:, 5], torch.outer(a, b).reshape(-1), atol=1e-15, rtol=0)
    assert torch.allclose(basis.vectors.T @ basis.vectors, torch.eye(9, dtype=F64), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="M_next"):
        class_mean_kronecker_basis(Mn[:, :2], Mt)
    with pytest.raises(ValueError, match="zero class mean"):
        class_mean_kronecker_basis(torch.zeros(6, 3, dtype=F64), Mt)


@pytest.mark.parametrize("idx", range(len(OPTIMA)))
def test_t3_gradient_coefficients_are_identity_over_K(idx):
    cfg, frames = OPTIMA[idx]
    params = construct_minimiser(cfg, frames=frames)
    for layer in range(1, cfg.L + 1):
        g = layer_grad(params, cfg, layer)
        basis = class_mean_kronecker_basis(*means(params, cfg, layer))
        table = gradient_coefficients(g, basis)
        assert torch.allclose(table, torch.eye(cfg.K, dtype=F64) / cfg.K, atol=1e-13, rtol=0)
        assert torch.equal(table, gradient_coefficients(g.reshape(-1), basis.vectors))  # matrix or vec
        assert float(table.sum()) == pytest.approx(1.0, abs=1e-13)


def test_gradient_coefficients_bad_inputs():
    basis = torch.eye(9, dtype=F64)
    with pytest.raises(ValueError, match="g is zero"):
        gradient_coefficients(torch.zeros(9, dtype=F64), basis)
    with pytest.raises(ValueError, match="K²"):
        gradient_coefficients(torch.ones(8, dtype=F64), torch.eye(8, dtype=F64))
    with pytest.raises(ValueError, match="entries"):
        gradient_coefficients(torch.ones(10, dtype=F64), basis)


# ----------------------------------------------------------------------------- Gur-Ari overlap
@pytest.mark.parametrize("idx", range(len(OPTIMA)))
def test_top_overlap_of_fit_gradient_is_one(idx):
    cfg, frames = OPTIMA[idx]
    params = construct_minimiser(cfg, frames=frames)
    K2 = cfg.K**2
    for layer in range(1, cfg.L + 1):
        g = layer_grad(params, cfg, layer)
        w, U = torch.linalg.eigh(layer_hessian(params, cfg, layer))  # ascending
        assert top_overlap(g, U, K2, eigvals=w) == pytest.approx(1.0, abs=1e-12)
        assert top_overlap(g, U.flip(1), K2) == pytest.approx(1.0, abs=1e-12)  # first k columns
        # eigh returns ascending eigenvalues: its first dim - K² columns are the bulk, no overlap
        nb = U.shape[1] - K2
        assert top_overlap(g, U, nb) <= 1e-20


def test_top_k_overlap_inside_a_degenerate_level_is_basis_dependent():
    """R4: with K² equal outliers f_top(K) depends on the basis, f_top(K²) does not."""
    cfg, frames = OPTIMA[0]
    params = construct_minimiser(cfg, frames=frames)
    g = layer_grad(params, cfg, 2)
    V = T.optimum_layer_hessian(cfg, 2, frames=frames).eigenvectors  # labels (c, c') in row-major order
    diag_first = V[:, [0, 4, 8, 1, 2, 3, 5, 6, 7]]  # the K gradient directions first
    off_first = V[:, [1, 2, 3, 0, 4, 8, 5, 6, 7]]
    assert top_overlap(g, diag_first, 3) == pytest.approx(1.0, abs=1e-12)
    assert top_overlap(g, off_first, 3) <= 1e-24
    assert top_overlap(g, diag_first, 9) == pytest.approx(top_overlap(g, off_first, 9), abs=1e-13)


def test_pitfall_fit_vs_total_gradient():
    """Fit-term convention (sources-conventions): the total gradient vanishes at the optimum; near it it lives in the bulk."""
    cfg, frames = OPTIMA[0]
    params = construct_minimiser(cfg, frames=frames)
    layer = 2
    g_fit = layer_grad(params, cfg, layer)
    g_tot = layer_grad(params, cfg, layer, loss=regularised_loss)
    assert float(g_tot.norm()) <= 1e-13 * float(g_fit.norm())
    # move W_2 along a bulk direction (output and input outside the class frames)
    Mn, Mt = means(params, cfg, layer)
    Pn = torch.eye(6, dtype=F64) - Mn @ torch.linalg.pinv(Mn)
    Pt = torch.eye(6, dtype=F64) - Mt @ torch.linalg.pinv(Mt)
    D = Pn @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=F64) @ Pt
    Ws = list(params.Ws)
    Ws[layer - 1] = Ws[layer - 1] + 1e-3 * D
    moved = UFMParams(params.H1, tuple(Ws))
    V = class_mean_kronecker_basis(*means(moved, cfg, layer)).vectors
    g_fit = layer_grad(moved, cfg, layer)
    g_tot = layer_grad(moved, cfg, layer, loss=regularised_loss)
    assert top_overlap(g_fit, V, 9) == pytest.approx(1.0, abs=1e-12)
    assert top_overlap(g_tot, V, 9) <= 1e-20
    assert torch.allclose(g_tot, cfg.lambda_Ws[layer - 1] * 1e-3 * D, atol=1e-14, rtol=0)  # = λ δW


# ----------------------------------------------------------------------------- eigenvector tests
@pytest.mark.parametrize("idx", range(len(OPTIMA)))
def test_eigvec_test_f_cc_is_one_at_the_optimum(idx):
    cfg, frames = OPTIMA[idx]
    params = construct_minimiser(cfg, frames=frames)
    ts = [t.clone() for t in params.tensors()]
    for layer in range(1, cfg.L + 1):
        H = layer_hessian(params, cfg, layer)
        Mn, Mt = means(params, cfg, layer)
        basis = class_mean_kronecker_basis(Mn, Mt)

        def hvp(v, layer=layer):
            f = lambda x: fit_loss(ts[:layer] + [x.reshape(ts[layer].shape)] + ts[layer + 1 :], cfg)
            return torch.func.jvp(torch.func.grad(f), (ts[layer].reshape(-1),), (v,))[1]

        for j in range(cfg.K**2):
            v = basis.vectors[:, j]
            assert eigvec_test(H, v) == pytest.approx(1.0, abs=1e-12)
        assert eigvec_test(hvp, 3.0 * basis.vectors[:, 0]) == pytest.approx(1.0, abs=1e-12)  # scale-free
        # Kronecker shortcut (R2, v1 Thm 4.1): P = A^T A, Q = Σ
        A = torch.eye(cfg.K, dtype=F64)
        for W in reversed(ts[layer + 1 :]):
            A = A @ W
        X = forward(params).inputs[layer - 1]
        table = kronecker_eigvec_test(A.T @ A, X @ X.T / cfg.N, Mn, Mt)
        assert torch.allclose(table, torch.ones(cfg.K, cfg.K, dtype=F64), atol=1e-12, rtol=0)


def test_kronecker_eigvec_test_matches_dense_away_from_the_optimum():
    cfg = UFMConfig(K=3, n=3, d=5, L=3)
    g = torch.Generator().manual_seed(2)
    tensors = [torch.randn(5, 9, generator=g, dtype=F64)] + [torch.randn(5, 5, generator=g, dtype=F64) / 2 for _ in range(2)]
    tensors.append(torch.randn(3, 5, generator=g, dtype=F64))
    params = UFMParams(tensors[0], tuple(tensors[1:]))
    for layer in (1, 2, 3):
        H = layer_hessian(params, cfg, layer)
        Mn, Mt = means(params, cfg, layer)
        A = torch.eye(3, dtype=F64)
        for W in reversed(tensors[layer + 1 :]):
            A = A @ W
        X = forward(params).inputs[layer - 1]
        table = kronecker_eigvec_test(A.T @ A, X @ X.T / cfg.N, Mn, Mt)
        dense = torch.tensor([[eigvec_test(H, torch.outer(Mn[:, c], Mt[:, cp]).reshape(-1)) for cp in range(3)] for c in range(3)], dtype=F64)
        assert torch.allclose(table, dense, atol=1e-12, rtol=0)
        assert float(table.max()) < 1.0 - 1e-6  # not eigenvectors away from collapse


def test_eigvec_test_edge_cases():
    H = torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=F64))
    assert eigvec_test(H, torch.tensor([0.0, 1.0, 0.0], dtype=F64)) == 1.0
    assert math.isnan(eigvec_test(H, torch.tensor([0.0, 0.0, 1.0], dtype=F64)))
    v = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    assert eigvec_test(H, v) == pytest.approx(9 / (2 * 5), abs=1e-15)  # (v^T H v)² / (|v|²|Hv|²)
    with pytest.raises(ValueError, match="non-zero"):
        eigvec_test(H, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="H must be"):
        eigvec_test(torch.eye(4, dtype=F64), v)


# ----------------------------------------------------------------------------- top of the spectrum
@pytest.mark.parametrize("idx", range(len(OPTIMA)))
def test_equalisation_gap_and_count_at_the_optimum(idx):
    cfg, frames = OPTIMA[idx]
    params = construct_minimiser(cfg, frames=frames)
    K = cfg.K
    for layer in range(1, cfg.L + 1):
        w = torch.linalg.eigvalsh(layer_hessian(params, cfg, layer))
        assert outlier_equalisation(w, K) == pytest.approx(1.0, abs=1e-12)
        assert outlier_gap(w, K) >= 1e12  # bulk is round-off (or exactly 0 -> inf)
        assert count_outliers(w) == K * K
        assert count_outliers(w, rule="threshold", threshold=1e-8) == K * K


@pytest.mark.parametrize("c0, expected", [(0.0, 3), (0.5, 9), (1.0, 9)])
def test_count_outliers_relu_kink(c0, expected):
    cfg = UFMConfig(K=3, n=4, d=6, L=4, activation="relu")
    params = construct_minimiser(cfg, frames="nonnegative")
    w = torch.linalg.eigvalsh(layer_hessian(params, cfg, 2, loss=lambda tt, c: fit_loss(tt, c, relu_prime_at_zero=c0)))
    assert count_outliers(w) == expected
    assert outlier_equalisation(w, 3) == (pytest.approx(1.0, abs=1e-12) if c0 == 1.0 else math.inf if c0 == 0.0 else pytest.approx(16.0, rel=1e-12))


def test_count_outliers_rules_on_synthetic_spectra():
    w = torch.tensor([5.0, 4.8, 4.9, 0.004, 0.002, 0.001, 0.0], dtype=F64)  # any order
    assert count_outliers(w) == 3
    # a floor below the bulk's lower tail lets the step down to an exact zero win
    assert count_outliers(w, floor=1e-8) == 6
    assert count_outliers(w, max_count=2) == 0  # ratios 5/4.9, 4.9/4.8: no gap within the top 2
    assert count_outliers(torch.linspace(1.0, 2.0, 20, dtype=F64)) == 0  # no separated outliers
    assert count_outliers(w, rule="threshold", threshold=0.0015) == 5
    assert count_outliers(-w) == 0
    with pytest.raises(ValueError, match="rule"):
        count_outliers(w, rule="elbow")
    with pytest.raises(ValueError, match="threshold"):
        count_outliers(w, rule="threshold")
    with pytest.raises(ValueError, match="min_ratio"):
        count_outliers(w, min_ratio=1.0)
    with pytest.raises(ValueError, match="max_count"):
        count_outliers(w, max_count=7)


def test_equalisation_and_gap_values():
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 0.5], dtype=F64)  # any order
    assert outlier_equalisation(w, 2) == pytest.approx(4.0, abs=1e-15)
    assert outlier_gap(w, 2) == pytest.approx(1.0 / 0.5, abs=1e-15)
    assert outlier_gap(torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0], dtype=F64), 2) == math.inf
    assert outlier_gap(torch.tensor([2.0, 2.0, 2.0, 2.0, -0.01], dtype=F64), 2) == math.inf
    assert outlier_equalisation(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64), 2) == math.inf
    with pytest.raises(ValueError, match="more than"):
        outlier_gap(w, 3)
    with pytest.raises(ValueError, match="K"):
        outlier_equalisation(w, 0)


# ----------------------------------------------------------------------------- subspaces
def test_subspace_overlap_and_projector_distance_known_cases():
    e = torch.eye(4, dtype=F64)
    assert subspace_overlap(e[:, :2], e[:, :2]) == 1.0
    assert subspace_overlap(e[:, :2], e[:, 2:]) == 0.0
    assert subspace_overlap(e[:, [0, 1]], e[:, [0, 2]]) == pytest.approx(0.5, abs=1e-15)
    assert subspace_overlap(e[:, :1], e[:, :3]) == pytest.approx(1.0, abs=1e-15)  # containment
    assert subspace_overlap(e[:, :3], e[:, :1]) == pytest.approx(1 / 3, abs=1e-15)
    theta = 0.3
    u = torch.tensor([[1.0], [0.0], [0.0], [0.0]], dtype=F64)
    v = torch.tensor([[math.cos(theta)], [math.sin(theta)], [0.0], [0.0]], dtype=F64)
    assert projector_distance(u, v) == pytest.approx(math.sin(theta), abs=1e-15)
    assert subspace_overlap(u, v) == pytest.approx(math.cos(theta) ** 2, abs=1e-15)
    assert projector_distance(e[:, :2], e[:, :3]) == 1.0  # different dimensions
    # redundant spanning sets are reduced to a basis
    assert orthonormal_basis(torch.cat([e[:, :2], e[:, :1] + e[:, 1:2]], dim=1)).shape == (4, 2)
    with pytest.raises(ValueError, match="rows"):
        subspace_overlap(e[:, :2], torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="zero space"):
        subspace_overlap(torch.zeros(4, 1, dtype=F64), e)


def test_pitfall_degenerate_eigenspace_basis_independence():
    """Degenerate eigenspaces (sources-conventions): eigh's individual vectors are basis-dependent; the projector metrics are not."""
    cfg, frames = OPTIMA[1]
    params = construct_minimiser(cfg, frames=frames)
    H = layer_hessian(params, cfg, 2)
    w, U = torch.linalg.eigh(H)
    top = U[:, -16:]
    pred = T.optimum_layer_hessian(cfg, 2, frames=frames).eigenvectors
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(4), dtype=F64))
    for basis in (top, top @ Q):
        assert subspace_overlap(basis, pred) == pytest.approx(1.0, abs=1e-12)
        assert projector_distance(basis, pred) <= 1e-8
    best = ((top @ Q).T @ pred).pow(2).max(dim=1).values
    assert float(best.min()) < 0.9  # a rotated eigenbasis does not match vector by vector
