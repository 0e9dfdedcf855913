"""Predicted spectra (ufmlib.theory) against dense autodiff references built here (R2-R9).

Every reference Hessian in this file is an independent ``torch.func.hessian`` of
``ufmlib.model.fit_loss`` with respect to row-major flattened parameters, in float64, on small
models (d <= 12). Predictions come in two forms: closed form at the global minimiser
(``optimum_*``) and from measured class means (``layer_hessian_at``, ``layer_hessian_from_means``,
``weight_gram_from_means``); both are compared with the reference for eigenvalues (relative 1e-9
of the largest), multiplicities and eigen*spaces* (projector distance <= 1e-8: inside a
degenerate level only the projector is defined).
"""

from __future__ import annotations

import json

import pytest
import torch

from ufmlib.alignment import (
    class_mean_kronecker_basis,
    gradient_coefficients,
    projector_distance,
    subspace_overlap,
    top_overlap,
)
from ufmlib.config import UFMConfig
from ufmlib.model import UFMParams, fit_loss, forward, regularised_loss
from ufmlib.optimum import construct_ce_critical_point, construct_minimiser, dnc_optimum
from ufmlib import theory as T
from ufmlib.cli import predictions
from ufmlib.spectrum import Spectrum
from ufmlib.state import UFMState

F64 = torch.float64
EIG_RTOL = 1e-9
SPACE_TOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The matrices here are tiny: one intra-op thread avoids oversubscribing a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- reference helpers
def dense_hessian(params, cfg, idxs, loss=fit_loss):
    """Autodiff Hessian of ``loss`` w.r.t. the concatenated row-major tensors ``tensors()[i]``, ``i in idxs``."""
    ts = [t.detach().clone().to(F64) for t in (params.tensors() if isinstance(params, UFMParams) else params)]
    shapes = [ts[i].shape for i in idxs]
    sizes = [ts[i].numel() for i in idxs]
    x0 = torch.cat([ts[i].reshape(-1) for i in idxs])

    def f(x):
        tt, off = list(ts), 0
        for i, s, n in zip(idxs, shapes, sizes):
            tt[i] = x[off : off + n].reshape(s)
            off += n
        return loss(tt, cfg)

    return torch.func.hessian(f)(x0)


def layer_hessian(params, cfg, layer, loss=fit_loss):
    return dense_hessian(params, cfg, [layer], loss)


def eigh_desc(H):
    w, U = torch.linalg.eigh(0.5 * (H + H.T))
    return w.flip(0), U.flip(1)


def assert_spectrum(w, pred, rtol=EIG_RTOL):
    exp = pred.expanded(w.shape[0])
    scale = float(w.abs().max())
    assert float((w - exp).abs().max()) <= rtol * scale


def assert_eigenspaces(w, U, pred, tol=SPACE_TOL, levels=None):
    """Each predicted level's vectors span exactly the measured eigenspace of that value."""
    scale = float(w.abs().max())
    levels = range(len(pred.multiplicities)) if levels is None else levels
    for i in levels:
        sel = (w - float(pred.values[i])).abs() <= 1e-9 * scale
        assert int(sel.sum()) == pred.multiplicities[i]
        V = pred.level_vectors(i)
        assert V.shape[1] == pred.multiplicities[i]
        assert torch.allclose(V.T @ V, torch.eye(V.shape[1], dtype=F64), atol=1e-12)
        assert projector_distance(U[:, sel], V) <= tol


def layer_check(params, cfg, layer, pred):
    H = layer_hessian(params, cfg, layer)
    w, U = eigh_desc(H)
    assert_spectrum(w, pred)
    assert_eigenspaces(w, U, pred)
    return H, w, U


# ----------------------------------------------------------------------------- R2, v1 Thm 4.1
def test_t1_paper_scale_value_and_kronecker_factors():
    """K=3, n=40, L=5, d=60, layer 3: 9 eigenvalues 0.16324256978, next <= 1e-15, f_cc' = 1."""
    cfg = UFMConfig(K=3, n=40, d=60, L=5)
    pred = T.optimum_layer_hessian(cfg, 3)
    assert pred.multiplicities == (9,) and pred.dim == 3600
    assert float(pred.values[0]) == pytest.approx(0.16324256978, abs=5e-12)
    params = construct_minimiser(cfg, frames="random")
    st = UFMState(params, cfg).cpu64()
    # the two Kronecker factors, measured independently (row-major vec, book page Setting and notation)
    X3 = forward(params).inputs[2]
    A4 = st.weights[4] @ st.weights[3]
    wP = torch.linalg.eigvalsh(A4.T @ A4)
    wQ = torch.linalg.eigvalsh(X3 @ X3.T / cfg.N)
    w = torch.sort(torch.outer(wP, wQ).reshape(-1), descending=True).values
    assert torch.allclose(w[:9], torch.full((9,), float(pred.values[0]), dtype=F64), rtol=EIG_RTOL, atol=0)
    assert float(w[9].abs()) <= 1e-15
    # f_cc' = 1 for the 9 predicted vectors, through autodiff Hessian-vector products
    ts = [t.clone() for t in params.tensors()]

    def f(x):
        tt = list(ts)
        tt[3] = x.reshape(60, 60)
        return fit_loss(tt, cfg)

    x0 = ts[3].reshape(-1)
    pv = T.optimum_layer_hessian(cfg, 3, frames="random")
    for j in range(9):
        v = pv.eigenvectors[:, j]
        Hv = torch.func.jvp(torch.func.grad(f), (x0,), (v,))[1]
        f_cc = float((v @ Hv) ** 2 / ((v @ v) * (Hv @ Hv)))
        assert f_cc == pytest.approx(1.0, abs=1e-12)
        assert float((Hv - pred.values[0] * v).norm()) <= 1e-12
    # the class-means prediction at the same point
    am = T.layer_hessian_at(params, cfg, 3)
    assert am.multiplicities == (9,)
    assert float(am.values[0]) == pytest.approx(float(pred.values[0]), rel=EIG_RTOL)
    assert projector_distance(am.eigenvectors, pv.eigenvectors) <= SPACE_TOL


CONFIGS = {
    "K3L3": (UFMConfig(K=3, n=4, d=6, L=3), "canonical"),
    "K4-per-layer-random": (UFMConfig(K=4, n=3, d=7, L=4, lambda_W=(0.01, 0.02, 0.005, 0.015), lambda_H=0.02), "random"),
    "K2L2-random": (UFMConfig(K=2, n=5, d=5, L=2, lambda_W=0.03, lambda_H=0.004), "random"),
    "K5L1": (UFMConfig(K=5, n=2, d=6, L=1, lambda_W=0.02, lambda_H=0.01), "random"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_t1_layer_hessian_every_layer(name):
    cfg, frames = CONFIGS[name]
    params = construct_minimiser(cfg, frames=frames)
    opt = dnc_optimum(cfg)
    K = cfg.K
    for layer in range(1, cfg.L + 1):
        closed = T.optimum_layer_hessian(cfg, layer, frames=frames)
        assert closed.multiplicities == (K * K,)
        # value ∝ λ_{W_l}: λ_out(l)/λ_{W_l} = γ/(1-γ) for every layer
        assert float(closed.values[0]) / cfg.lambda_Ws[layer - 1] == pytest.approx(opt.gamma / opt.one_minus_gamma, rel=1e-13)
        H, w, U = layer_check(params, cfg, layer, closed)
        means = T.layer_hessian_at(params, cfg, layer)
        assert means.multiplicities == (K * K,)
        assert_spectrum(w, means)
        assert_eigenspaces(w, U, means)
        assert sorted(means.labels) == [(c, cp) for c in range(K) for cp in range(K)]
        assert float(w[K * K].abs()) <= 1e-14 * float(w[0])


def test_t1_k10_hundred_equal_outliers():
    cfg = UFMConfig(K=10, n=5, d=12, L=3, lambda_W=2**-10, lambda_H=2**-10)
    opt = dnc_optimum(cfg)
    assert opt.gamma == pytest.approx(0.98528837, abs=5e-9)
    params = construct_minimiser(cfg, frames="random")
    pred = T.optimum_layer_hessian(cfg, 2, frames="random")
    assert float(pred.values[0]) == pytest.approx(0.0654037, abs=5e-8)
    _, w, _ = layer_check(params, cfg, 2, pred)
    assert int((w > 1e-3).sum()) == 100


def test_general_dnc_point_unequal_norms_labelled():
    """R2 (c), collapsed point: orthogonal frames, unequal norms -> (||a_c||²||μ_c'||²/K ; a_c ⊗ μ_c')."""
    K, n, d, L = 3, 2, 5, 3
    cfg = UFMConfig(K=K, n=n, d=d, L=L)
    g = torch.Generator().manual_seed(5)
    Us = [torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0][:, :K] for _ in range(L)]
    norms1 = torch.tensor([0.7, 1.3, 0.4], dtype=F64)
    H1 = torch.kron((Us[0] * norms1).contiguous(), torch.ones(1, n, dtype=F64))
    Ws = [Us[l + 1] @ torch.diag(torch.tensor([1.0 + 0.3 * l, 0.5, 2.0 - 0.2 * l], dtype=F64)) @ Us[l].T for l in range(L - 1)]
    Ws.append(torch.diag(torch.tensor([0.9, 1.7, 0.6], dtype=F64)) @ Us[-1].T)
    params = UFMParams(H1, tuple(Ws))
    st = UFMState(params, cfg).cpu64()
    assert max(st.within) <= 1e-15
    for layer in range(1, L + 1):
        A = st.A(layer + 1)
        pred = T.layer_hessian_from_means(st.M(layer), A)
        expect = {(c, cp): float(A[c].norm() ** 2 * st.M(layer)[:, cp].norm() ** 2 / K) for c in range(K) for cp in range(K)}
        distinct = len({round(v, 9) for v in expect.values()})
        assert pred.rank == K * K and len(pred.multiplicities) == distinct == (3 if layer == L else 9)
        got = {}
        for i, lab in enumerate(pred.labels):
            lev = next(j for j in range(len(pred.multiplicities)) if sum(pred.multiplicities[: j + 1]) > i)
            got[lab] = float(pred.values[lev])
        assert got.keys() == expect.keys()
        for k in expect:
            assert got[k] == pytest.approx(expect[k], rel=1e-12)
        H, w, U = layer_check(params, cfg, layer, pred)


def test_general_dnc_point_non_orthogonal_frames():
    """DNC1 with non-orthogonal means and generic weights: the class-mean formula is still exact."""
    K, n, d, L = 3, 3, 5, 3
    cfg = UFMConfig(K=K, n=n, d=d, L=L)
    g = torch.Generator().manual_seed(11)
    M1 = torch.randn(d, K, generator=g, dtype=F64)
    Ws = [torch.randn(d, d, generator=g, dtype=F64) / 2 for _ in range(L - 1)] + [torch.randn(K, d, generator=g, dtype=F64)]
    params = UFMParams(torch.kron(M1, torch.ones(1, n, dtype=F64)), tuple(Ws))
    for layer in range(1, L + 1):
        pred = T.layer_hessian_at(params, cfg, layer)
        assert pred.rank == K * K
        assert isinstance(pred.labels[0], int)  # generic (Gram) route, index labels
        layer_check(params, cfg, layer, pred)


@pytest.mark.parametrize("activation, loss", [("linear", "mse"), ("relu", "mse"), ("linear", "ce"), ("relu", "ce")])
def test_class_mean_formulas_at_a_generic_dnc1_point(activation, loss):
    """H_1 = M ⊗ 1^T with random M and random weights: every layer is DNC1, nothing else holds.

    The class-mean form of the layer Hessian must then be exact, its K² outliers unequal.
    """
    K, n, d, L = 3, 2, 5, 3
    cfg = UFMConfig(K=K, n=n, d=d, L=L, activation=activation, loss=loss)
    g = torch.Generator().manual_seed(7)
    M1 = torch.randn(d, K, generator=g, dtype=F64)
    Ws = [torch.randn(d, d, generator=g, dtype=F64) / 2 for _ in range(L - 1)] + [torch.randn(K, d, generator=g, dtype=F64)]
    params = UFMParams(torch.kron(M1, torch.ones(1, n, dtype=F64)), tuple(Ws))
    st = UFMState(params, cfg).cpu64()
    assert max(st.within) <= 1e-15
    for layer in range(1, L + 1):
        pred = T.layer_hessian_at(st, cfg, layer)
        assert pred.rank == K * K if (activation, loss) == ("linear", "mse") else 0 < pred.rank <= K * K
        layer_check(params, cfg, layer, pred)


# ----------------------------------------------------------------------------- R3, v1 Thm 4.2
def measured_gn_split(params, cfg, layer):
    """G_class, G_cross, G_within from autodiff Jacobian rows v_icc' (v1 App. B)."""
    ts = [t.clone() for t in params.tensors()]
    shape = ts[layer].shape

    def logits(x):
        tt = list(ts)
        tt[layer] = x.reshape(shape)
        return forward(tt, cfg.activation).logits

    J = torch.func.jacrev(logits)(ts[layer].reshape(-1))  # K x N x dim, J[c', sample]
    K, n = cfg.K, cfg.n
    v = J.reshape(K, K, n, -1).permute(1, 2, 0, 3)  # [class c, i, c', :]
    v_ccp = v.mean(dim=1)  # [c, c', :]
    v_c = v_ccp.mean(dim=1)  # [c, :]
    G_class = v_c.T @ v_c
    D = v_ccp - v_c[:, None]
    G_cross = torch.einsum("abi,abj->ij", D, D) / K
    E = v - v_ccp[:, None]
    G_within = torch.einsum("aibk,aibl->kl", E, E) / (K * n)
    return G_class, G_cross, G_within


@pytest.mark.parametrize(
    "cfg, frames, layer",
    [
        (UFMConfig(K=3, n=4, d=6, L=3), "random", 2),
        (UFMConfig(K=3, n=4, d=6, L=3), "canonical", 3),
        (UFMConfig(K=10, n=5, d=12, L=3, lambda_W=2**-10, lambda_H=2**-10), "canonical", 2),
        (UFMConfig(K=4, n=2, d=6, L=3, lambda_W=(0.02, 0.01, 0.005)), "random", 1),
    ],
)
def test_t2_gauss_newton_split(cfg, frames, layer):
    params = construct_minimiser(cfg, frames=frames)
    K = cfg.K
    Gc, Gx, Gw = measured_gn_split(params, cfg, layer)
    H = layer_hessian(params, cfg, layer)
    assert float((Gc + Gx + Gw - H).abs().max()) <= 1e-15 * max(1.0, float(H.abs().max()))
    lam = dnc_optimum(cfg).layer_hessian_outlier[layer - 1]
    if K == 10:
        assert lam == pytest.approx(0.0654037323, abs=5e-11)
    closed = T.optimum_gauss_newton_split(cfg, layer, frames=frames)
    assert float(Gw.abs().max()) <= 1e-15
    assert closed.within.rank == 0
    for G, pc, mult in ((Gc, closed.class_, K), (Gx, closed.cross, K * (K - 1))):
        w, U = eigh_desc(G)
        assert pc.multiplicities == (mult,)
        assert float(pc.values[0]) == pytest.approx(lam, rel=1e-14)
        assert_spectrum(w, pc)
        assert_eigenspaces(w, U, pc)
        # residual ||G v - λ v|| for the closed-form eigenvectors
        assert float((G @ pc.eigenvectors - lam * pc.eigenvectors).norm(dim=0).max()) <= 1e-14
    # ranges orthogonal and together the K² outlier space of R2
    assert float((closed.class_.eigenvectors.T @ closed.cross.eigenvectors).abs().max()) <= 1e-15
    both = torch.cat([closed.class_.eigenvectors, closed.cross.eigenvectors], dim=1)
    assert projector_distance(both, T.optimum_layer_hessian(cfg, layer, frames=frames).eigenvectors) <= SPACE_TOL
    # G_class eigenvectors are global-mean ⊗ class-mean vectors
    assert all(lab[0] == "G" for lab in closed.class_.labels)


# ----------------------------------------------------------------------------- R4, v1 Thm 4.3
@pytest.mark.parametrize(
    "cfg, frames, layer",
    [
        (UFMConfig(K=3, n=40, d=60, L=5), "canonical", 3),
        (UFMConfig(K=3, n=40, d=60, L=5), "random", 5),
        (UFMConfig(K=4, n=3, d=7, L=4, lambda_W=(0.01, 0.02, 0.005, 0.015), lambda_H=0.02), "random", 2),
    ],
)
def test_t3_fit_gradient(cfg, frames, layer):
    params = construct_minimiser(cfg, frames=frames)
    ts = [t.clone() for t in params.tensors()]
    g = torch.func.grad(lambda W: fit_loss(ts[:layer] + [W] + ts[layer + 1 :], cfg))(ts[layer])
    lam = cfg.lambda_Ws[layer - 1]
    assert float((g + lam * ts[layer]).abs().max()) <= 1e-15 * max(1.0, float(g.abs().max()) / lam)
    pred = T.optimum_fit_gradient(cfg, layer, frames=frames)
    assert float((pred.matrix - g).abs().max()) <= 1e-13 * float(g.abs().max())
    opt = dnc_optimum(cfg)
    assert pred.beta == pytest.approx(opt.gamma * opt.one_minus_gamma / opt.feature_norms[layer] ** 2, rel=1e-14)
    assert torch.equal(pred.coefficients, torch.eye(cfg.K, dtype=F64) / cfg.K)
    st = UFMState(params, cfg).cpu64()
    M_next = torch.eye(cfg.K, dtype=F64) if layer == cfg.L else st.M(layer + 1)
    table = gradient_coefficients(g, class_mean_kronecker_basis(M_next, st.M(layer)))
    assert torch.allclose(table, torch.eye(cfg.K, dtype=F64) / cfg.K, atol=1e-13, rtol=0)
    # 100 % of the fit gradient in the K² outlier space
    assert top_overlap(g, T.optimum_layer_hessian(cfg, layer, frames=frames).eigenvectors, cfg.K**2) == pytest.approx(1.0, abs=1e-12)


def test_t3_overlap_with_measured_top_eigenspace():
    cfg = UFMConfig(K=3, n=4, d=6, L=3)
    params = construct_minimiser(cfg, frames="random")
    ts = [t.clone() for t in params.tensors()]
    g = torch.func.grad(lambda W: fit_loss([ts[0], ts[1], W, ts[3]], cfg))(ts[2])
    w, U = torch.linalg.eigh(layer_hessian(params, cfg, 2))
    assert top_overlap(g, U, 9, eigvals=w) == pytest.approx(1.0, abs=1e-12)  # R4: f_top(K²) = 1


# ----------------------------------------------------------------------------- R5, v1 Thm 4.4
@pytest.mark.parametrize("frames", ["canonical", "random"])
def test_t4_weight_gram(frames):
    cfg = UFMConfig(K=3, n=40, d=60, L=5)
    params = construct_minimiser(cfg, frames=frames)
    st = UFMState(params, cfg).cpu64()
    for layer in range(1, 6):
        W = params.Ws[layer - 1]
        for side, G in (("right", W.T @ W), ("left", W @ W.T)):
            w, U = eigh_desc(G)
            pred = T.optimum_weight_gram(cfg, layer, side=side, frames=frames)
            assert float(pred.values[0]) == pytest.approx(1.8130214, abs=5e-8)
            assert_spectrum(w, pred)
            assert_eigenspaces(w, U, pred)
            M_next = torch.eye(3, dtype=F64) * dnc_optimum(cfg).gamma if layer == 5 else st.M(layer + 1)
            means = T.weight_gram_from_means(st.M(layer), M_next, side=side)
            assert_spectrum(w, means)
            assert_eigenspaces(w, U, means)
        if layer > 1:  # balancedness λ W_l^T W_l = λ W_{l-1} W_{l-1}^T
            Wp = params.Ws[layer - 2]
            assert float((W.T @ W - Wp @ Wp.T).abs().max()) <= 1e-14


def test_weight_gram_per_layer_lambda_and_non_orthogonal_means():
    cfg = UFMConfig(K=3, n=2, d=5, L=3, lambda_W=(0.01, 0.04, 0.02), lambda_H=0.01)
    opt = dnc_optimum(cfg)
    for l in range(1, 4):
        assert float(T.optimum_weight_gram(cfg, l).values[0]) == pytest.approx(opt.gamma * opt.one_minus_gamma / (3 * cfg.lambda_Ws[l - 1]), rel=1e-14)
    g = torch.Generator().manual_seed(3)
    M0, M1 = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    W = M1 @ torch.linalg.pinv(M0)
    for side, G in (("right", W.T @ W), ("left", W @ W.T)):
        w, U = eigh_desc(G)
        pred = T.weight_gram_from_means(M0, M1, side=side)
        assert_spectrum(w, pred)
        assert_eigenspaces(w, U, pred)


# ----------------------------------------------------------------------------- R6
def test_t5_other_matrices():
    cfg = UFMConfig(K=3, n=5, d=7, L=4)
    params = construct_minimiser(cfg, frames="random")
    ts = [t.clone() for t in params.tensors()]
    fw = forward(params)
    Y = torch.kron(torch.eye(3, dtype=F64), torch.ones(1, 5, dtype=F64))
    digest_bp = [0.011645, 0.010000, 0.008588, 0.007375]
    for layer in range(1, 5):
        # back-propagated errors ∂ℓ/∂x at the input of W_layer
        def loss_from_x(X):
            for W in ts[layer:]:
                X = W @ X
            return 0.5 * (X - Y).pow(2).sum() / cfg.N

        E = torch.func.grad(loss_from_x)(fw.inputs[layer - 1]).T  # N x d
        s = torch.linalg.svdvals(E)
        pred = T.optimum_backprop_singular_values(cfg, layer, frames="random")
        assert float(pred.values[0]) == pytest.approx(digest_bp[layer - 1], abs=5e-7)
        assert torch.allclose(s[:3], pred.values[0].expand(3), rtol=EIG_RTOL, atol=0) and float(s[3]) <= 1e-16
        U, _, _ = torch.linalg.svd(E.T, full_matrices=False)
        assert projector_distance(U[:, :3], pred.eigenvectors) <= SPACE_TOL
        # features
        sf = torch.linalg.svdvals(fw.inputs[layer - 1])
        pf = T.optimum_feature_singular_values(cfg, layer)
        assert torch.allclose(sf[:3], pf.values[0].expand(3), rtol=EIG_RTOL, atol=0) and float(sf[3]) <= 1e-13
        # per-sample gradients of ℓ_i = ½||z_i - y_i||²
        def per_sample(W):
            tt = list(ts)
            tt[layer] = W.reshape(ts[layer].shape)
            return 0.5 * (forward(tt).logits - Y).pow(2).sum(0)

        Gs = torch.func.jacrev(per_sample)(ts[layer].reshape(-1))  # N x dim
        second = Gs.T @ Gs / cfg.N
        cov = (Gs - Gs.mean(0)).T @ (Gs - Gs.mean(0)) / cfg.N
        p2, pc = T.optimum_gradient_moments(cfg, layer, frames="random")
        assert float(p2.values[0]) == pytest.approx(4.0679e-4, abs=5e-8)
        assert p2.multiplicities == (3,) and pc.multiplicities == (2,)
        for G, pr in ((second, p2), (cov, pc)):
            w, Uw = eigh_desc(G)
            assert_spectrum(w, pr)
            assert_eigenspaces(w, Uw, pr)


@pytest.mark.parametrize("cfg", [UFMConfig(K=3, n=5, d=7, L=4), UFMConfig(K=2, n=3, d=4, L=2, lambda_W=0.02, lambda_H=0.005)])
def test_feature_hessian(cfg):
    params = construct_minimiser(cfg, frames="random")
    H = dense_hessian(params, cfg, [0])
    w, U = eigh_desc(H)
    pred = T.optimum_feature_hessian(cfg, frames="random")
    assert pred.multiplicities == (cfg.K**2 * cfg.n,)
    assert_spectrum(w, pred)
    assert_eigenspaces(w, U, pred)


# ----------------------------------------------------------------------------- R7, full Hessian
def test_t6_full_hessian_reference_numbers():
    cfg = UFMConfig(K=4, n=3, d=6, L=4)
    assert dnc_optimum(cfg).gamma == pytest.approx(0.948567, abs=5e-7)
    params = construct_minimiser(cfg, frames="random")
    # weights only
    H = dense_hessian(params, cfg, [1, 2, 3, 4])
    assert H.shape == (132, 132)
    w, U = eigh_desc(H)
    pred = T.optimum_full_hessian(cfg, frames="random")
    assert [round(float(v), 7) for v in pred.values] == [0.7677079, 0.7077079, 0.01, -0.01]
    assert pred.multiplicities == (6, 10, 54, 42) and pred.dim - pred.rank == 20 and pred.n_outliers == 16
    assert_spectrum(w, pred)
    assert_eigenspaces(w, U, pred, levels=[0, 1])
    # antisymmetric coefficient matrices on the upper level, symmetric on the lower one
    assert {lab[0] for lab in pred.labels[:6]} == {"antisymmetric"}
    assert {lab[0] for lab in pred.labels[6:]} == {"symmetric"}
    # Gauss-Newton part alone: 16 at 0.7377079 = Σ_l λ_out(l)
    ts = [t.clone() for t in params.tensors()]
    sizes = [t.numel() for t in ts[1:]]

    def logits(x):
        parts, off = [], 0
        for t, s in zip(ts[1:], sizes):
            parts.append(x[off : off + s].reshape(t.shape))
            off += s
        return forward([ts[0]] + parts).logits.reshape(-1)

    J = torch.func.jacrev(logits)(torch.cat([t.reshape(-1) for t in ts[1:]]))
    wg, Ug = eigh_desc(J.T @ J / cfg.N)
    pg = T.optimum_full_gauss_newton(cfg, frames="random")
    assert float(pg.values[0]) == pytest.approx(0.7377079, abs=5e-8) and pg.multiplicities == (16,)
    assert float(pg.values[0]) == pytest.approx(sum(dnc_optimum(cfg).layer_hessian_outlier), rel=1e-14)
    assert_spectrum(wg, pg)
    assert_eigenspaces(wg, Ug, pg)
    assert float(wg[16].abs()) <= 1e-14
    # the outliers of the full Hessian lie in the Gauss-Newton outlier space (E only splits them)
    assert projector_distance(pred.eigenvectors, pg.eigenvectors) <= SPACE_TOL
    # all parameters, λ_H = λ_W: split ±Lλ
    Ha = dense_hessian(params, cfg, [0, 1, 2, 3, 4])
    assert Ha.shape == (204, 204)
    wa, Ua = eigh_desc(Ha)
    pa = T.optimum_full_hessian(cfg, include_H=True, frames="random")
    assert [round(float(v), 6) for v in pa.values[:3]] == [0.962135, 0.882135, 0.184427]
    assert pa.multiplicities[:3] == (6, 10, 32)
    assert_spectrum(wa, pa)
    assert_eigenspaces(wa, Ua, pa, levels=[0, 1])


def test_full_gauss_newton_with_features_per_layer_lambda():
    cfg = UFMConfig(K=3, n=3, d=4, L=2, lambda_W=(0.02, 0.005), lambda_H=0.01)
    params = construct_minimiser(cfg, frames="random")
    ts = [t.clone() for t in params.tensors()]
    sizes = [t.numel() for t in ts]

    def logits(x):
        parts, off = [], 0
        for t, s in zip(ts, sizes):
            parts.append(x[off : off + s].reshape(t.shape))
            off += s
        return forward(parts).logits.reshape(-1)

    J = torch.func.jacrev(logits)(torch.cat([t.reshape(-1) for t in ts]))
    w, U = eigh_desc(J.T @ J / cfg.N)
    pred = T.optimum_full_gauss_newton(cfg, include_H=True, frames="random")
    assert pred.multiplicities == (9, 18)
    assert_spectrum(w, pred)
    assert_eigenspaces(w, U, pred, levels=[0])


@pytest.mark.parametrize(
    "K, L, d, n",
    [(3, 2, 4, 2), (3, 3, 5, 2), (2, 5, 3, 3), (4, 4, 6, 3), (2, 1, 4, 2), (3, 2, 3, 3)],
)
def test_t6_bulk_multiplicity_formula(K, L, d, n):
    """+λ: (m-1)(K(d-K) + K(K+1)/2), -λ: (m-1)(K(d-K) + K(K-1)/2), 0: (L-1)(d-K)² + K(d-K) | (d-K)(N-K)."""
    lam = 0.01
    cfg = UFMConfig(K=K, n=n, d=d, L=L, lambda_W=lam, lambda_H=lam)
    params = construct_minimiser(cfg, frames="random")
    opt = dnc_optimum(cfg)
    for include_H in (False, True):
        idxs = list(range(0 if include_H else 1, L + 1))
        w = torch.linalg.eigvalsh(dense_hessian(params, cfg, idxs))
        mult = T.full_hessian_bulk_multiplicities(K, L, d, n, include_H=include_H)
        tol = 1e-10
        assert int(((w - lam).abs() <= tol).sum()) == mult["plus_lambda"]
        assert int(((w + lam).abs() <= tol).sum()) == mult["minus_lambda"]
        assert int((w.abs() <= tol).sum()) == mult["zero"]
        if include_H:
            assert int(((w - opt.feature_hessian_outlier).abs() <= tol).sum()) == mult["feature_level"]
        m = L + 1 if include_H else L
        top = opt.layer_hessian_outlier[0] * m  # m λ γ/(1-γ)
        assert int(((w - (top + (m - 1) * lam)).abs() <= tol).sum()) == K * (K - 1) // 2 + (K * (K + 1) // 2 if m == 1 else 0)
        assert int(((w - (top - (m - 1) * lam)).abs() <= tol).sum()) == K * (K + 1) // 2 + (K * (K - 1) // 2 if m == 1 else 0)
        assert_spectrum(torch.sort(w, descending=True).values, T.optimum_full_hessian(cfg, include_H=include_H))


def test_t6_per_layer_lambda_full_hessian():
    cfg = UFMConfig(K=3, n=2, d=5, L=3, lambda_W=(0.01, 0.03, 0.005), lambda_H=0.02)
    params = construct_minimiser(cfg, frames="random")
    for include_H, idxs in ((False, [1, 2, 3]), (True, [0, 1, 2, 3])):
        w, U = eigh_desc(dense_hessian(params, cfg, idxs))
        pred = T.optimum_full_hessian(cfg, include_H=include_H, frames="random")
        assert_spectrum(w, pred)
        assert_eigenspaces(w, U, pred, levels=[0, 1])
        gn = sum(dnc_optimum(cfg).layer_hessian_outlier) + (dnc_optimum(cfg).feature_hessian_outlier if include_H else 0.0)
        assert float(pred.values[0]) > gn > float(pred.values[1])  # split around the GN level


@pytest.mark.parametrize("lam", [1e-3, 1e-4])
def test_t6_split_shrinks_with_lambda(lam):
    cfg = UFMConfig(K=3, n=2, d=4, L=3, lambda_W=lam, lambda_H=lam)
    params = construct_minimiser(cfg)
    w = torch.linalg.eigvalsh(dense_hessian(params, cfg, [1, 2, 3])).flip(0)
    pred = T.optimum_full_hessian(cfg)
    assert float(pred.values[0] - pred.values[1]) == pytest.approx(2 * (cfg.L - 1) * lam, rel=1e-9)
    assert float(w[0] - w[3]) == pytest.approx(2 * (cfg.L - 1) * lam, rel=1e-6)
    assert_spectrum(w, pred)


# ----------------------------------------------------------------------------- linear dynamics (≈ v1 Figs 3-4)
def test_t7_class_mean_prediction_tracks_gradient_descent():
    """K=3, n=40, d=60, L=5, λ=0.01, GD lr 0.1 from N(0, 1/d), 3000 epochs (companion's reference run).

    The layer-3 spectrum is then "0.1634 … 0.1630" with the 10th eigenvalue ~5e-9; the
    class-mean prediction (R2 general form) reproduces the measured outliers although the
    point is not yet the optimum.
    """
    from ufmlib.alignment import count_outliers, kronecker_eigvec_test
    from ufmlib.model import init_params

    cfg = UFMConfig(K=3, n=40, d=60, L=5)
    ts = [t.clone().requires_grad_(True) for t in init_params(cfg).tensors()]
    for _ in range(3000):
        grads = torch.autograd.grad(regularised_loss(ts, cfg), ts)
        with torch.no_grad():
            for x, g in zip(ts, grads):
                x -= 0.1 * g
    params = UFMParams.from_tensors([x.detach() for x in ts])
    gap = float(regularised_loss(params, cfg)) - dnc_optimum(cfg).optimal_loss
    assert 0 < gap < 1e-2
    st = UFMState(params, cfg).cpu64()
    X3 = forward(params).inputs[2]
    A4 = st.A(4)
    P, Q = A4.T @ A4, X3 @ X3.T / cfg.N
    w = torch.sort(torch.outer(torch.linalg.eigvalsh(P), torch.linalg.eigvalsh(Q)).reshape(-1), descending=True).values
    assert 1.0 < float(w[0] / w[8]) < 1.01 and float(w[9]) < 1e-7
    assert 0.162 < float(w[8]) < float(w[0]) < 0.165
    assert count_outliers(w) == 9
    assert float(kronecker_eigvec_test(P, Q, st.M(4), st.M(3)).min()) > 0.9999
    pred = T.layer_hessian_at(params, cfg, 3)
    assert pred.rank == 9 and len(pred.multiplicities) == 9  # nine distinct, unequal outliers
    assert torch.allclose(pred.expanded(3600)[:9], w[:9], rtol=1e-9, atol=0)


# ----------------------------------------------------------------------------- R8, ReLU kink
@pytest.mark.parametrize("c0", [0.0, 0.5, 1.0])
def test_t8_relu_kink_convention(c0):
    cfg = UFMConfig(K=3, n=4, d=6, L=4, activation="relu")
    params = construct_minimiser(cfg, frames="nonnegative")
    assert float(forward(params, "relu").preacts[2].min()) == 0.0  # exact kinks at the optimum
    expected = {  # independent float64 reference values
        0.0: {2: [(0.2364175, 3)], 3: [(0.2364175, 3)], 4: [(0.2364175, 9)]},
        0.5: {2: [(0.2364175, 3), (0.0147761, 6)], 3: [(0.2364175, 3), (0.0591044, 6)], 4: [(0.2364175, 9)]},
        1.0: {2: [(0.2364175, 9)], 3: [(0.2364175, 9)], 4: [(0.2364175, 9)]},
    }[c0]
    for layer in (1, 2, 3, 4):
        kink = lambda tt, cfg_: fit_loss(tt, cfg_, relu_prime_at_zero=c0)
        H = layer_hessian(params, cfg, layer, loss=kink)
        w, U = eigh_desc(H)
        pred = T.relu_optimum_layer_hessian(cfg, layer, c0=c0)
        if layer in expected:
            assert [(round(float(v), 7), m) for v, m in zip(pred.values, pred.multiplicities)] == expected[layer]
        assert pred.multiplicities[0] in (3, 9)
        assert_spectrum(w, pred)
        assert_eigenspaces(w, U, pred)
        means = T.layer_hessian_at(params, cfg, layer, c0=c0)
        assert means.multiplicities == pred.multiplicities
        assert_spectrum(w, means)
        assert_eigenspaces(w, U, means)
        # the K class-diagonal eigenvectors are the R4 gradient directions
        assert set(pred.labels[:3]) == {(0, 0), (1, 1), (2, 2)} or pred.multiplicities[0] == 9
        if c0 == 0.0:  # PyTorch's own autograd uses ReLU'(0) = 0
            assert torch.allclose(H, layer_hessian(params, cfg, layer), atol=1e-15, rtol=0)


def test_relu_r_power_law_other_config():
    """c0^{2 r_l} with r_l = L - l, for K=4, L=5 and c0 = 0.7."""
    cfg = UFMConfig(K=4, n=2, d=6, L=5, activation="relu", lambda_W=0.004, lambda_H=0.004)
    params = construct_minimiser(cfg, frames="nonnegative")
    lam = dnc_optimum(cfg).layer_hessian_outlier[0]
    for layer in (2, 4):
        pred = T.relu_optimum_layer_hessian(cfg, layer, c0=0.7)
        assert float(pred.values[1]) == pytest.approx(lam * 0.7 ** (2 * (5 - layer)), rel=1e-14)
        H = layer_hessian(params, cfg, layer, loss=lambda tt, c: fit_loss(tt, c, relu_prime_at_zero=0.7))
        w, U = eigh_desc(H)
        assert_spectrum(w, pred)
        assert_eigenspaces(w, U, pred)


def test_forward_with_a_kink_convention_has_the_stated_derivatives():
    """``forward(..., relu_prime_at_zero=c0)``: same values, first derivative c0 at 0, second 0."""
    from ufmlib.model import relu_derivative

    for c0 in (0.0, 0.25, 1.0):
        def act(x):
            return forward([x[None, :], torch.eye(1, dtype=F64), torch.eye(1, dtype=F64)], "relu",
                           relu_prime_at_zero=c0).logits[0]

        x = torch.tensor([-1.5, 0.0, 2.0], dtype=F64)
        assert torch.equal(act(x), torch.relu(x))
        d1 = torch.func.vmap(torch.func.grad(lambda t: act(t[None])[0]))(x)
        assert torch.equal(d1, torch.tensor([0.0, c0, 1.0], dtype=F64))
        assert torch.equal(relu_derivative(x, c0), torch.tensor([0.0, c0, 1.0], dtype=F64))
        d2 = torch.func.vmap(torch.func.grad(torch.func.grad(lambda t: act(t[None])[0])))(x)
        assert torch.equal(d2, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="relu_prime_at_zero"):
        forward([x[None, :], torch.eye(1, dtype=F64)], "relu", relu_prime_at_zero=1.5)
    with pytest.raises(ValueError, match="frames"):
        T.relu_optimum_layer_hessian(UFMConfig(K=3, n=4, d=6, L=4), 2, c0=0.5, frames="random")


# ----------------------------------------------------------------------------- R9, cross-entropy
def test_t9_ce_reference_numbers():
    cfg = UFMConfig(K=4, n=4, d=6, L=3, loss="ce", lambda_W=5e-3, lambda_H=5e-3)
    pred = T.ce_critical_layer_hessian(cfg, 2, frames="canonical")
    assert "alpha=5.8239" in pred.name
    assert [round(float(v), 6) for v in pred.values] == [0.028864, 0.021669, 0.00728]
    assert pred.multiplicities == (1, 3, 5)
    params = construct_ce_critical_point(cfg)
    _, w, _ = layer_check(params, cfg, 2, pred)
    assert float(w[9].abs()) <= 1e-15  # rank (K-1)² = 9


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_t9_ce_three_levels(K):
    cfg = UFMConfig(K=K, n=3, d=K + 1, L=3, loss="ce", lambda_W=4e-3, lambda_H=4e-3)
    params = construct_ce_critical_point(cfg, frames="random")
    for layer in (1, 2, 3):
        closed = T.ce_critical_layer_hessian(cfg, layer)
        assert closed.multiplicities == ((1,) if K == 2 else (1, K - 1, K * K - 3 * K + 1))
        H, w, U = layer_check(params, cfg, layer, T.layer_hessian_at(params, cfg, layer))
        assert_spectrum(w, closed)


# ----------------------------------------------------------------------------- conventions (book label sources-conventions)
def test_pitfall_row_vs_column_major():
    cfg = UFMConfig(K=3, n=4, d=6, L=3)
    params = construct_minimiser(cfg, frames="random")
    H = layer_hessian(params, cfg, 2)
    pred = T.optimum_layer_hessian(cfg, 2, frames="random")
    V = pred.eigenvectors
    swapped = V.reshape(6, 6, 9).transpose(0, 1).reshape(36, 9)  # column-major vec = μ ⊗ a
    f = lambda v: float((v @ H @ v) ** 2 / ((v @ v) * (H @ v) @ (H @ v)))
    assert all(f(V[:, j]) == pytest.approx(1.0, abs=1e-12) for j in range(9))
    assert max(f(swapped[:, j]) for j in range(9)) < 0.99
    assert subspace_overlap(swapped, V) < 0.5


def test_pitfall_fit_vs_regularised_hessian():
    cfg = UFMConfig(K=3, n=4, d=6, L=3, lambda_W=(0.01, 0.02, 0.03))
    params = construct_minimiser(cfg, frames="random")
    opt = dnc_optimum(cfg)
    for layer in (1, 3):
        lam = cfg.lambda_Ws[layer - 1]
        w, U = eigh_desc(layer_hessian(params, cfg, layer, loss=regularised_loss))
        fit = T.optimum_layer_hessian(cfg, layer, frames="random")
        reg = T.optimum_layer_hessian(cfg, layer, frames="random", regularised=True)
        assert float(reg.values[0]) == pytest.approx(lam / opt.one_minus_gamma, rel=1e-13)
        assert reg.bulk_value == lam
        assert_spectrum(w, reg)
        assert_eigenspaces(w, U, reg)
        with pytest.raises(AssertionError):
            assert_spectrum(w, fit)  # the fit-term prediction is off by λ


def test_pitfall_degenerate_eigenspaces():
    """Any rotation inside the K²-fold level is an eigenbasis: compare projectors, not vectors."""
    cfg = UFMConfig(K=3, n=4, d=6, L=3)
    params = construct_minimiser(cfg, frames="random")
    H = layer_hessian(params, cfg, 2)
    pred = T.optimum_layer_hessian(cfg, 2, frames="random")
    lam = float(pred.values[0])
    Q, _ = torch.linalg.qr(torch.randn(9, 9, generator=torch.Generator().manual_seed(0), dtype=F64))
    rotated = pred.eigenvectors @ Q
    assert float((H @ rotated - lam * rotated).abs().max()) <= 1e-14  # still eigenvectors
    best = (rotated.T @ pred.eigenvectors).pow(2).max(dim=1).values  # best single-vector match
    assert float(best.min()) < 0.9
    assert projector_distance(rotated, pred.eigenvectors) <= 1e-14
    w, U = eigh_desc(H)
    assert projector_distance(U[:, :9], pred.eigenvectors) <= SPACE_TOL


def test_pitfall_condition_violated():
    cfg = UFMConfig(K=3, n=40, d=10, L=5, lambda_W=0.05, lambda_H=0.05)  # above the threshold 0.031066
    assert not dnc_optimum(cfg).is_global
    for call in (
        lambda: T.optimum_layer_hessian(cfg, 3),
        lambda: T.optimum_gauss_newton_split(cfg, 3),
        lambda: T.optimum_fit_gradient(cfg, 3),
        lambda: T.optimum_full_hessian(cfg),
        lambda: T.relu_optimum_layer_hessian(cfg, 3, c0=0.5),
    ):
        with pytest.raises(T.NoDNCMinimiserError, match="no DNC minimiser"):
            call()
    assert issubclass(T.NoDNCMinimiserError, ValueError)
    out = predictions(cfg)
    assert out["condition_holds"] is False and out["gamma"] is None and "layers" not in out
    assert out["full_hessian_levels"] is None


# ----------------------------------------------------------------------------- ufm predict and arguments
def test_predictions_numbers_and_json():
    cfg = UFMConfig(K=4, n=3, d=6, L=4)
    out = predictions(cfg)
    json.dumps(out, allow_nan=False)
    assert out["condition_holds"] is True
    lay = out["layers"][2]
    assert lay["layer_hessian"]["multiplicity"] == 16
    assert lay["layer_hessian"]["regularised_outlier"] == pytest.approx(0.01 / dnc_optimum(cfg).one_minus_gamma, rel=1e-13)
    assert lay["gauss_newton"]["class"]["multiplicity"] == 4 and lay["gauss_newton"]["cross"]["multiplicity"] == 12
    W3 = construct_minimiser(cfg).Ws[2]
    assert lay["fit_gradient"]["norm"] == pytest.approx(0.01 * float(W3.norm()), rel=1e-13)  # ∇ℓ = -λW
    assert lay["relu_kink"]["cross_value"]["c0=0.5"] == pytest.approx(lay["layer_hessian"]["outlier"] / 4, rel=1e-14)
    levels = [(round(x["value"], 7), x["multiplicity"]) for x in out["full_hessian_weights"]["levels"]]
    assert levels == [(0.7677079, 6), (0.7077079, 10), (0.01, 54), (-0.01, 42)]
    assert [x["multiplicity"] for x in out["full_hessian_all_params"]["levels"][:3]] == [6, 10, 32]
    assert out["ce_critical_point"]["alpha"] > 0
    ce = predictions(UFMConfig(K=4, n=4, d=6, L=3, lambda_W=5e-3, lambda_H=5e-3))["ce_critical_point"]
    assert ce["alpha"] == pytest.approx(5.8239, abs=5e-5)
    assert [x["multiplicity"] for x in ce["layer_hessian"]] == [1, 3, 5]
    assert "ce_critical_point" not in predictions(UFMConfig(K=3, n=4, d=6, L=3, lambda_W=0.01, lambda_H=0.02))
    # the outlier levels of the full Hessian: mλγ/(1-γ) ± (m-1)λ for a common λ, as eigenvalues of S and A
    lam_out = dnc_optimum(cfg).layer_hessian_outlier[0]
    assert [(x["kind"], x["multiplicity"]) for x in out["full_hessian_levels"]] == [("antisymmetric", 6), ("symmetric", 10)]
    assert out["full_hessian_levels"][0]["level"] == pytest.approx(4 * lam_out + 3 * 0.01, rel=1e-13)
    assert out["full_hessian_levels"][1]["level"] == pytest.approx(4 * lam_out - 3 * 0.01, rel=1e-13)


def test_bad_arguments():
    cfg = UFMConfig(K=3, n=4, d=6, L=3)
    with pytest.raises(ValueError, match="layer"):
        T.optimum_layer_hessian(cfg, 4)
    with pytest.raises(ValueError, match="layer"):
        T.optimum_layer_hessian(cfg, 0)
    with pytest.raises(ValueError, match="side"):
        T.optimum_weight_gram(cfg, 1, side="top")
    with pytest.raises(ValueError, match="rtol"):
        T.layer_hessian_from_means(torch.eye(6, 3, dtype=F64), torch.eye(3, 6, dtype=F64), rtol=2.0)
    with pytest.raises(ValueError, match="A"):
        T.layer_hessian_from_means(torch.eye(6, 3, dtype=F64), torch.eye(4, 6, dtype=F64))
    with pytest.raises(ValueError, match="lambda_W"):
        T.ce_critical_layer_hessian(UFMConfig(K=3, n=4, d=6, L=3, lambda_W=0.01, lambda_H=0.02), 1)
    with pytest.raises(ValueError, match="c0"):
        T.layer_hessian_at(construct_minimiser(cfg), cfg, 1, c0=-0.1)
    with pytest.raises(ValueError, match="dim"):
        Spectrum.from_levels(torch.tensor([1.0], dtype=F64), (2,)).expanded()
