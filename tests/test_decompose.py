"""Tests for ufmlib.decompose: the Gauss-Newton split of a layer Hessian (R3, v1 Thm 4.2).

Reference numbers (the companion's float64 evaluation of the closed forms of R3; book chapter
``gauss_newton``): ranks G_within / G_cross / G_class = 0 / K(K-1) / K at the
global minimiser (0/6/3 for K=3; 0/90/10 for K=10, n=5, L=3, d=12, λ=2^-10, all non-zero
eigenvalues 0.0654037323), orthogonal ranges, exact sum identity.

Every quantity of the split is computed from the Jacobian rows (small Gram matrices) and a
block of autodiff Hessian products; :func:`dense_reference` rebuilds the dense float64
construction (``D x D`` parts, ``eigvalsh``, the dense autodiff Hessian) it is compared with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.decompose import GNSplit, GramPart, gauss_newton_split, jacobian_rows
from ufmlib.dynamics import split_snapshot
from ufmlib.hessian import layer_hessian_autodiff, layer_operator_autodiff
from ufmlib.model import forward, init_params
from ufmlib.operators import gram_operator
from ufmlib.optimum import construct_ce_critical_point, construct_minimiser, dnc_optimum
from ufmlib.train import train

F64 = torch.float64


def projector(M: torch.Tensor, *, rtol: float = 1e-9, scale: float | None = None) -> torch.Tensor:
    """Orthogonal projector onto the range of the symmetric PSD ``M`` (dense): the reference the range bases are compared with.

    Eigen-directions with eigenvalue ``> rtol * scale`` count (``scale`` defaults to the largest
    eigenvalue magnitude of ``M``).
    """
    w, U = torch.linalg.eigh((M + M.mT) / 2)
    scale = w.abs().max().item() if scale is None else scale
    keep = U[:, w > rtol * scale]
    return keep @ keep.mT


def _class_means(X: torch.Tensor, K: int) -> torch.Tensor:
    return X.reshape(X.shape[0], K, -1).mean(dim=2)  # d x K (class-ordered columns)


def dense_reference(params, cfg: UFMConfig, layer: int) -> dict[str, torch.Tensor]:
    """The dense D x D construction: the four parts from the Jacobian rows and the autodiff Hessian."""
    v = jacobian_rows(params, cfg, layer)
    K, n, _, D = v.shape
    v_cc = v.mean(dim=1)
    v_c = v_cc.mean(dim=1)
    dev_cross = (v_cc - v_c[:, None, :]).reshape(-1, D)
    dev_within = (v - v_cc[:, None, :, :]).reshape(-1, D)
    flat = v.reshape(-1, D)
    sym = lambda M: (M + M.mT) / 2  # noqa: E731
    return {"class": sym(v_c.mT @ v_c), "cross": sym(dev_cross.mT @ dev_cross / K),
            "within": sym(dev_within.mT @ dev_within / (K * n)), "G": sym(flat.mT @ flat / (K * n)),
            "hessian": layer_hessian_autodiff(params, cfg, layer)}


def _desc(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh((M + M.mT) / 2).flip(0)


def _gd_point(cfg: UFMConfig, epochs: int = 30, lr: float = 0.3):
    return train(cfg, lr=lr, epochs=epochs, snapshot_epochs=[], progress=False).params.to(dtype=F64)


POINTS = {
    "linear-mse-minimiser": (UFMConfig(K=3, n=2, d=8, L=3, lambda_W=0.01, lambda_H=0.01, seed=2),
                             lambda c: construct_minimiser(c, frames="random")),
    "linear-mse-descent": (UFMConfig(K=3, n=2, d=8, L=3, lambda_W=0.01, lambda_H=0.01, seed=2), _gd_point),
    "relu-mse-descent": (UFMConfig(K=3, n=2, d=8, L=3, activation="relu", lambda_W=0.01, lambda_H=0.01, seed=5),
                         _gd_point),
    "linear-ce-descent": (UFMConfig(K=3, n=2, d=8, L=3, loss="ce", lambda_W=0.005, lambda_H=0.005, seed=6), _gd_point),
    "relu-ce-init": (UFMConfig(K=3, n=2, d=8, L=3, activation="relu", loss="ce", seed=7), init_params),
}


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("layer", [2, 3])
def test_every_structured_quantity_matches_the_dense_construction(point, layer):
    """Eigenvalues, ranks, ranges, orthogonality, largest entries, identity, residual, Hessian and
    knock-out spectra from the factors agree with dense D x D matrices + eigvalsh + dense autodiff.

    Layer 2 (D = 64) is measured on a proper subspace (K²n + 16 = 34 directions); layer 3
    (D = K d = 24) on the whole space.
    """
    cfg, make = POINTS[point]
    cfg = cfg.replace(dtype="float64")
    params = make(cfg)
    split = gauss_newton_split(params, cfg, layer)
    ref = dense_reference(params, cfg, layer)
    D = ref["G"].shape[0]
    s = split.scale
    assert split.dim == D and s == pytest.approx(_desc(ref["G"])[0].item(), rel=1e-13)
    assert split.subspace_dim == (34 if layer == 2 else D)
    Q = split.subspace
    assert (Q.mT @ Q - torch.eye(Q.shape[1], dtype=F64)).abs().max().item() <= 1e-14
    # the four parts: matrices, spectra, ranks, ranges, largest entries
    for name in ("class", "cross", "within", "G"):
        part, M = split.part(name), ref[name]
        assert isinstance(part, GramPart) and part.dim == D
        assert (part.dense() - M).abs().max().item() <= 1e-15 * s, name
        ev, dense_ev = split.eigenvalues(name), _desc(M)
        assert ev.shape == (D,)
        assert (ev - dense_ev).abs().max().item() <= 1e-13 * s, name
        assert split.ranks()[name] == int((dense_ev.abs() > 1e-9 * s).sum()), name
        assert part.max_abs() == pytest.approx(M.abs().max().item(), rel=1e-12, abs=1e-15 * s), name
        U = split.basis(name)
        assert (U @ U.mT - projector(M, scale=s)).abs().max().item() <= 1e-10, name
        assert (part.operator().dense() - M).abs().max().item() <= 1e-15 * s, name
    dense_orth = torch.linalg.matrix_norm(projector(ref["class"], scale=s) @ projector(ref["cross"], scale=s), ord=2)
    assert split.range_orthogonality() == pytest.approx(dense_orth.item(), abs=1e-10)
    # the identity and the residual E = Hess_l - G, both at rounding level here (piecewise-linear networks)
    dense_identity = (ref["class"] + ref["cross"] + ref["within"] - ref["G"]).abs().max().item()
    assert split.identity_error <= 1e-14 * s and dense_identity <= 1e-14 * s
    assert split.residual_error <= 1e-13 * s and (ref["hessian"] - ref["G"]).abs().max().item() <= 1e-13 * s
    assert split.eigenvalues("residual").abs().max().item() <= 1e-13 * s
    # the autodiff operator is the dense autodiff Hessian; its Rayleigh-Ritz values on S are its top eigenvalues
    assert (split.operator("hessian").dense() - ref["hessian"]).abs().max().item() <= 1e-14 * s
    m = split.subspace_dim
    assert (split.eigenvalues("hessian") - _desc(ref["hessian"])[:m]).abs().max().item() <= 1e-13 * s
    for name in ("class", "cross"):
        knocked = split.without(name)
        assert knocked.shape == (m,)
        assert (knocked - _desc(ref["hessian"] - ref[name])[:m]).abs().max().item() <= 1e-13 * s, name
    # the per-snapshot summary of the dynamics module
    k = cfg.K**2 + 3
    out = split_snapshot(params, cfg, layer)
    for key, M in (("class", ref["class"]), ("cross", ref["cross"]), ("within", ref["within"]),
                   ("hessian", ref["hessian"]), ("without_class", ref["hessian"] - ref["class"]),
                   ("without_cross", ref["hessian"] - ref["cross"])):
        np.testing.assert_allclose(out[key], _desc(M)[:k].numpy(), rtol=0, atol=1e-13 * s, err_msg=key)
    assert out["ranks"] == split.ranks() and out["orthogonality"] == pytest.approx(dense_orth.item(), abs=1e-10)
    assert out["identity"] <= 1e-14 * s and out["residual"] <= 1e-13 * s


def test_a_residual_off_the_range_of_G_is_measured():
    """E = c u u^T with a unit u fixed before the probes: (Hess_l - G) Q = c u (u^T Q) is seen on S."""
    cfg = UFMConfig(K=3, n=2, d=8, L=3, lambda_W=0.01, lambda_H=0.01, seed=2).replace(dtype="float64")
    params = construct_minimiser(cfg, frames="random")
    D = 64
    u = torch.randn(D, generator=torch.Generator().manual_seed(11), dtype=F64)
    u = u / u.norm()
    c = 0.5
    H = layer_operator_autodiff(params, cfg, 2) + gram_operator(u[None], scale=c)
    split = gauss_newton_split(params, cfg, 2, hessian=H)
    Q = split.subspace
    expected = (c * u[:, None] * (u @ Q)[None]).abs().max().item()
    assert split.residual_error == pytest.approx(expected, rel=1e-10)
    assert split.residual_error > 1e-3 * c
    assert split.eigenvalues("residual")[0].item() == pytest.approx(c * (u @ Q).pow(2).sum().item(), rel=1e-10)
    assert split.identity_error <= 1e-14 * split.scale  # the identity does not involve the Hessian


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
    assert split.G_within.max_abs() <= 1e-14
    assert split.range_orthogonality() <= 1e-12
    assert split.identity_error <= 1e-14
    assert split.residual_error <= 1e-12  # linear layer block: E = 0
    assert (split.G.dense() - layer_hessian_autodiff(params, cfg, layer)).abs().max().item() <= 1e-12


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
    # together the two ranges span the K² outlier space of the (dense autodiff) Hessian (R2)
    s = split.scale
    both = torch.cat([split.basis("class"), split.basis("cross")], dim=1)
    H = layer_hessian_autodiff(params, cfg, 2)
    assert (both @ both.mT - projector(H, scale=s)).abs().max().item() <= 1e-10


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
    Gc, Gx = split.G_class, split.G_cross
    for c in range(3):
        v = torch.kron(mu_G, M_in[:, c])[:, None]
        assert (Gc.matmat(v) - lam_out * v).norm().item() <= 1e-12 * v.norm().item()
        assert Gx.matmat(v).norm().item() <= 1e-12 * v.norm().item()
        for c2 in range(3):
            w = torch.kron(M_out[:, c2] - mu_G, M_in[:, c])[:, None]
            assert (Gx.matmat(w) - lam_out * w).norm().item() <= 1e-12 * w.norm().item()
            assert Gc.matmat(w).norm().item() <= 1e-12 * w.norm().item()


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
        assert split.residual_error <= 1e-12
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
    assert split.residual_error <= 1e-12
    assert split.ranks()["G"] == 9  # (K-1)² (R9, book chapter cross_entropy)
    assert split.ranks()["within"] == 0  # DNC1


def test_the_probes_are_seeded_and_the_split_is_frozen():
    cfg = UFMConfig(K=3, n=2, d=8, L=3, seed=1)
    params = init_params(cfg)
    a, b = gauss_newton_split(params, cfg, 2), gauss_newton_split(params, cfg, 2)
    assert torch.equal(a.subspace, b.subspace) and torch.equal(a.hessian_block, b.hessian_block)
    c = gauss_newton_split(params, cfg, 2, seed=1, probes=4)
    assert c.subspace_dim == 18 + 4 and not torch.equal(a.subspace[:, -1], c.subspace[:, -1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.layer = 1


def test_bad_arguments():
    cfg = UFMConfig(K=3, n=2, d=4, L=2)
    params = init_params(cfg)
    with pytest.raises(ValueError, match="layer"):
        gauss_newton_split(params, cfg, 3)
    with pytest.raises(ValueError, match="probes"):
        gauss_newton_split(params, cfg, 1, probes=-1)
    with pytest.raises(ValueError, match="hessian"):
        gauss_newton_split(params, cfg, 1, hessian=gram_operator(torch.ones(1, 5, dtype=F64)))
    split = gauss_newton_split(params, cfg, 1)
    with pytest.raises(ValueError, match="name"):
        split.eigenvalues("bulk")
    with pytest.raises(ValueError, match="name"):
        split.without("hessian")
