"""Tests for ufmlib.lanczos: every iterative result is checked against a dense float64
eigendecomposition (torch.linalg.eigh) of a small seeded matrix."""

from __future__ import annotations

import math

import pytest
import torch

from ufmlib.lanczos import dense_matvec, eigsh_reference, lanczos_tridiag, power_iteration_deflation, top_eigenpairs
from ufmlib.slq import SpectralDensity, rademacher, slq_density

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _with_spectrum(lam: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A = U diag(lam) U^T with a seeded Haar-like orthogonal U."""
    n = lam.shape[0]
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=F64))
    A = (U * lam) @ U.T
    return (A + A.T) / 2, U


def _wishart(n: int, p: int, seed: int) -> torch.Tensor:
    X = torch.randn(n, p, generator=_gen(seed), dtype=F64)
    return X.T @ X / n


def _goe(n: int, seed: int) -> torch.Tensor:
    G = torch.randn(n, n, generator=_gen(seed), dtype=F64)
    return (G + G.T) / math.sqrt(2 * n)


def _outliers_plus_bulk(dim: int, groups, seed: int, bulk: float = 0.01):
    """Exactly repeated outliers ``groups = [(value, multiplicity), ...]`` + uniform bulk."""
    outl = [torch.full((m,), v, dtype=F64) for v, m in groups]
    n_out = sum(m for _, m in groups)
    lam = torch.cat(outl + [bulk * torch.rand(dim - n_out, generator=_gen(seed + 1), dtype=F64)])
    return _with_spectrum(lam, seed)


def _projector_distance(V: torch.Tensor, U: torch.Tensor) -> float:
    """Spectral norm of V V^T - U U^T for orthonormal columns (sine of the largest angle)."""
    return torch.linalg.matrix_norm(V @ V.T - U @ U.T, ord=2).item()


# ----------------------------------------------------------------------------- top_eigenpairs
@pytest.mark.parametrize(
    "matrix, which",
    [("wishart", "LA"), ("wishart", "SA"), ("goe", "LA"), ("goe", "SA"), ("goe", "LM")],
)
def test_top_eigenpairs_match_eigvalsh(matrix, which):
    A = _wishart(300, 150, seed=1) if matrix == "wishart" else _goe(160, seed=2)
    k = 10
    ev = torch.linalg.eigvalsh(A)
    ref = {"LA": ev.flip(0), "SA": ev, "LM": ev[ev.abs().argsort(descending=True)]}[which][:k]
    ref = ref.sort(descending=True).values  # every spectrum lists its eigenvalues in descending order
    res = top_eigenpairs(dense_matvec(A), dim=A.shape[0], k=k, which=which, seed=3)
    assert res.converged
    assert res.eigenvalues.shape == (k,) and res.eigenvectors.shape == (A.shape[0], k)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-9, atol=1e-12)
    assert res.num_matvecs > 0


def test_eigenvector_residuals_and_orthonormality():
    A = _wishart(200, 120, seed=4)
    res = top_eigenpairs(dense_matvec(A), dim=120, k=8, seed=0)
    V, lam = res.eigenvectors, res.eigenvalues
    true_res = torch.linalg.vector_norm(A @ V - V * lam, dim=0)
    anorm = torch.linalg.matrix_norm(A, ord=2).item()
    assert (true_res <= 1e-9 * anorm).all()
    torch.testing.assert_close(res.residual_norms, true_res, rtol=0, atol=1e-13)
    torch.testing.assert_close(V.T @ V, torch.eye(8, dtype=F64), rtol=0, atol=1e-12)
    # each eigenvector is close to the true one (simple, gapped top eigenvalues of a Wishart)
    _, U = torch.linalg.eigh(A)
    assert _projector_distance(V[:, :1], U[:, -1:]) < 1e-8


def test_degenerate_outliers_all_copies_recovered():
    """Nine exactly equal outliers at 0.163 over a bulk in [0, 0.01]: all nine are returned
    and their span is the true eigenspace."""
    A, U = _outliers_plus_bulk(200, [(0.163, 9)], seed=5)
    res = top_eigenpairs(dense_matvec(A), dim=200, k=9, seed=0)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, torch.full((9,), 0.163, dtype=F64),
                               rtol=0, atol=1e-12)
    assert _projector_distance(res.eigenvectors, U[:, :9]) < 1e-8


def test_degenerate_outliers_with_bulk_edge():
    """k larger than the multiplicity: the nine copies plus the top of the bulk."""
    A, _ = _outliers_plus_bulk(200, [(0.163, 9)], seed=6)
    res = top_eigenpairs(dense_matvec(A), dim=200, k=12, block_size=10, seed=1)
    ref = torch.linalg.eigvalsh(A).flip(0)[:12]
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-9, atol=1e-13)


def test_k_squared_outlier_structure():
    """K = 4: K 'class' outliers (multiplicity 4) and K(K-1) 'cross-class' ones
    (multiplicity 12), as in the deep-UFM Hessian; both eigenspaces are recovered."""
    A, U = _outliers_plus_bulk(300, [(1.0, 4), (0.5, 12)], seed=7, bulk=0.1)
    res = top_eigenpairs(dense_matvec(A), dim=300, k=16, seed=2)
    assert res.converged
    expected = torch.tensor([1.0] * 4 + [0.5] * 12, dtype=F64)
    torch.testing.assert_close(res.eigenvalues, expected, rtol=0, atol=1e-12)
    assert _projector_distance(res.eigenvectors[:, :4], U[:, :4]) < 1e-8
    assert _projector_distance(res.eigenvectors[:, 4:], U[:, 4:16]) < 1e-8


def test_fewer_wanted_than_multiplicity_stay_in_eigenspace():
    A, U = _outliers_plus_bulk(150, [(0.163, 9)], seed=8)
    res = top_eigenpairs(dense_matvec(A), dim=150, k=5, seed=0)
    V, U9 = res.eigenvectors, U[:, :9]
    assert torch.linalg.matrix_norm(V - U9 @ (U9.T @ V), ord=2).item() < 1e-8
    torch.testing.assert_close(res.eigenvalues, torch.full((5,), 0.163, dtype=F64),
                               rtol=0, atol=1e-12)


def test_block_recovers_copies_that_single_vector_lanczos_misses():
    """A diagonal operator with nine outliers equal to 1.0: ``1.0 * x`` is exact, so only
    orthogonalisation rounding can seed the missing copies. Single-vector Lanczos
    (``block_size=1``) then reports a 'converged' top-9 with fewer copies (5 observed here;
    the count depends on rounding, so it is not asserted) and warns; a block of 9 finds all."""
    lam = torch.cat([torch.ones(9, dtype=F64), 0.5 * torch.rand(191, generator=_gen(0), dtype=F64)])
    mv = dense_matvec(torch.diag(lam))
    res = top_eigenpairs(mv, dim=200, k=9, block_size=9, seed=0)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, torch.ones(9, dtype=F64), rtol=0, atol=1e-12)
    assert _projector_distance(res.eigenvectors, torch.eye(200, dtype=F64)[:, :9]) < 1e-8
    with pytest.warns(RuntimeWarning, match="block_size"):
        top_eigenpairs(mv, dim=200, k=9, block_size=1, seed=0)


def test_small_block_warns_about_hidden_multiplicity():
    A, _ = _outliers_plus_bulk(120, [(0.163, 9)], seed=9)
    with pytest.warns(RuntimeWarning, match="block_size"):
        top_eigenpairs(dense_matvec(A), dim=120, k=9, block_size=3, seed=0)


def test_full_space_and_low_rank_are_exact():
    A = _goe(6, seed=10)
    res = top_eigenpairs(dense_matvec(A), dim=6, k=6, seed=0)
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigvalsh(A).flip(0),
                               rtol=0, atol=1e-13)
    # rank 3: the Krylov space becomes invariant; zero eigenvalues come from fresh directions
    lam = torch.cat([torch.tensor([3.0, 2.0, 1.0], dtype=F64), torch.zeros(47, dtype=F64)])
    B, _ = _with_spectrum(lam, seed=11)
    with pytest.warns(RuntimeWarning, match="block_size"):  # zero has multiplicity 47
        res = top_eigenpairs(dense_matvec(B), dim=50, k=5, block_size=1, seed=0)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, lam[:5], rtol=0, atol=1e-12)


def test_eigsh_reference_agrees():
    A = _wishart(200, 100, seed=12)
    ours = top_eigenpairs(dense_matvec(A), dim=100, k=5, seed=0)
    ref = eigsh_reference(dense_matvec(A), dim=100, k=5, seed=0)
    assert ref.converged and ref.num_matvecs > 5
    torch.testing.assert_close(ours.eigenvalues, ref.eigenvalues, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- power iteration
def test_power_iteration_deflation_on_gapped_matrix():
    lam = torch.cat([torch.tensor([10.0, -6.0, 3.0], dtype=F64),
                     0.5 * torch.rand(77, generator=_gen(13), dtype=F64)])
    A, U = _with_spectrum(lam, seed=14)
    res = power_iteration_deflation(dense_matvec(A), dim=80, k=3, tol=1e-14, max_iter=500,
                                    seed=0)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, lam[:3].sort(descending=True).values, rtol=1e-10, atol=0)
    assert (res.residual_norms <= 1e-5).all()
    assert _projector_distance(res.eigenvectors, U[:, :3]) < 1e-5
    assert 3 < res.num_matvecs <= 1500


# ----------------------------------------------------------------------------- lanczos_tridiag
def test_lanczos_tridiag_basis_and_projection():
    A = _wishart(100, 60, seed=15)
    tri = lanczos_tridiag(dense_matvec(A), dim=60, num_steps=25, seed=0)
    Q = tri.basis
    assert tri.num_steps == 25 and tri.num_matvecs == 25 and not tri.breakdown
    assert tri.beta.shape == (24,) and Q.shape == (25, 60)
    torch.testing.assert_close(Q @ Q.T, torch.eye(25, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(Q @ A @ Q.T, tri.matrix(), rtol=0, atol=1e-12)
    plain = lanczos_tridiag(dense_matvec(A), dim=60, num_steps=25, seed=0,
                            reorthogonalize=False)
    assert plain.basis is None
    torch.testing.assert_close(plain.alpha[:5], tri.alpha[:5], rtol=1e-10, atol=0)


def test_lanczos_tridiag_breakdown_on_invariant_subspace():
    lam = torch.tensor([1.0, 2.0, 5.0], dtype=F64).repeat_interleave(20)
    A, _ = _with_spectrum(lam, seed=16)
    tri = lanczos_tridiag(dense_matvec(A), dim=60, num_steps=10, seed=0)
    assert tri.breakdown and tri.num_steps == 3 and tri.num_matvecs == 3
    theta, _ = tri.quadrature()
    torch.testing.assert_close(theta, torch.tensor([1.0, 2.0, 5.0], dtype=F64),
                               rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- SLQ
@pytest.mark.parametrize("name, f", [("x", lambda x: x), ("x^2", lambda x: x**2),
                                     ("exp", torch.exp)])
def test_slq_quadrature_is_exact_with_full_krylov_space(name, f):
    """num_steps = dim: the Gauss rule is the probe's spectral measure, so
    sum_j w_j f(theta_j) = v^T f(A) v / |v|^2 for any f."""
    A = _goe(30, seed=17)
    lam, U = torch.linalg.eigh(A)
    fA = (U * f(lam)) @ U.T
    dens = slq_density(dense_matvec(A), dim=30, num_steps=30, num_probes=3, seed=4)
    probes = rademacher(num_probes=3, dim=30, seed=4)
    quad = (dens.weights * f(dens.nodes)).sum(dim=1)
    exact = torch.einsum("pi,ij,pj->p", probes, fA, probes) / 30
    torch.testing.assert_close(quad, exact, rtol=0, atol=1e-10)


def test_slq_gauss_rule_exact_to_degree_2m_minus_1():
    A = _wishart(120, 80, seed=18)
    m = 8
    dens = slq_density(dense_matvec(A), dim=80, num_steps=m, num_probes=2, seed=5)
    v = rademacher(num_probes=2, dim=80, seed=5)
    for deg in (1, 3, 2 * m - 1):
        Ak = torch.linalg.matrix_power(A, deg)
        exact = torch.einsum("pi,ij,pj->p", v, Ak, v) / 80
        quad = (dens.weights * dens.nodes**deg).sum(dim=1)
        torch.testing.assert_close(quad, exact, rtol=1e-9, atol=0)


def test_slq_weights_nonnegative_and_normalised():
    A = _wishart(150, 100, seed=19)
    dens = slq_density(dense_matvec(A), dim=100, num_steps=20, num_probes=5, seed=0)
    assert dens.nodes.shape == dens.weights.shape == (5, 20)
    assert (dens.weights >= 0).all()
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(5, dtype=F64),
                               rtol=0, atol=1e-12)
    ev = torch.linalg.eigvalsh(A)
    assert dens.nodes.min() >= ev[0] - 1e-10 and dens.nodes.max() <= ev[-1] + 1e-10
    assert dens.num_matvecs == 5 * 20


def test_slq_moments_match_dense_spectrum():
    """Hutchinson-type estimates of tr(A)/dim and tr(A^2)/dim, within 5 standard deviations
    (Var v^T B v = 2 sum_{i != j} B_ij^2 for Rademacher v)."""
    dim, probes = 200, 40
    A = _wishart(300, dim, seed=20)
    dens = slq_density(dense_matvec(A), dim=dim, num_steps=30, num_probes=probes, seed=1)
    for deg in (1, 2):
        B = torch.linalg.matrix_power(A, deg)
        off = B - torch.diag(torch.diag(B))
        sd = math.sqrt(2 * (off**2).sum().item() / probes) / dim
        est = dens.expectation(lambda x: x**deg).item()
        assert abs(est - torch.trace(B).item() / dim) < 5 * sd


def test_slq_histogram_and_smoothing_normalisation():
    A = _wishart(150, 100, seed=21)
    dens = slq_density(dense_matvec(A), dim=100, num_steps=20, num_probes=4, seed=0)
    vals, edges = dens.histogram(bins=40)
    assert vals.shape == (40,) and edges.shape == (41,)
    assert abs((vals * torch.diff(edges)).sum().item() - 1) < 1e-12
    counts, _ = dens.histogram(bins=40, normalize="count")
    assert abs(counts.sum().item() - 100) < 1e-9
    grid = torch.linspace(-2.0, 6.0, 4001, dtype=F64)
    smooth = dens.smoothed(grid, sigma=0.05)
    assert (smooth >= 0).all()
    assert abs(torch.trapezoid(smooth, grid).item() - 1) < 1e-6


def test_slq_breakdown_rows_are_padded_with_zero_weight():
    lam = torch.tensor([1.0, 4.0], dtype=F64).repeat_interleave(10)
    A, _ = _with_spectrum(lam, seed=22)
    dens = slq_density(dense_matvec(A), dim=20, num_steps=6, num_probes=2, seed=0)
    assert dens.num_matvecs == 4  # two steps per probe
    assert (dens.weights[:, 2:] == 0).all()
    torch.testing.assert_close(dens.expectation(lambda x: x), torch.tensor(2.5, dtype=F64),
                               rtol=0, atol=0.5)


# ----------------------------------------------------------------------------- reproducibility
def test_same_seed_same_output_and_different_seed_differs():
    A = _wishart(120, 80, seed=23)
    mv = dense_matvec(A)
    a = slq_density(mv, dim=80, num_steps=10, num_probes=3, seed=7)
    b = slq_density(mv, dim=80, num_steps=10, num_probes=3, seed=7)
    c = slq_density(mv, dim=80, num_steps=10, num_probes=3, seed=8)
    assert torch.equal(a.nodes, b.nodes) and torch.equal(a.weights, b.weights)
    assert not torch.equal(a.nodes, c.nodes)
    e1 = top_eigenpairs(mv, dim=80, k=4, seed=3)
    e2 = top_eigenpairs(mv, dim=80, k=4, seed=3)
    assert torch.equal(e1.eigenvectors, e2.eigenvectors) and e1.num_matvecs == e2.num_matvecs
    p1 = power_iteration_deflation(mv, dim=80, k=2, tol=1e-8, max_iter=200, seed=3)
    p2 = power_iteration_deflation(mv, dim=80, k=2, tol=1e-8, max_iter=200, seed=3)
    assert torch.equal(p1.eigenvectors, p2.eigenvectors)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_respected(dtype, device):
    A = _wishart(120, 60, seed=24).to(dtype=dtype, device=device)
    mv = dense_matvec(A)
    tri = lanczos_tridiag(mv, dim=60, num_steps=10, dtype=dtype, device=device)
    eig = top_eigenpairs(mv, dim=60, k=3, dtype=dtype, device=device)
    pw = power_iteration_deflation(mv, dim=60, k=2, tol=1e-4, dtype=dtype, device=device)
    den = slq_density(mv, dim=60, num_steps=10, num_probes=2, dtype=dtype, device=device)
    for t in (tri.alpha, tri.beta, tri.basis, eig.eigenvalues, eig.eigenvectors,
              eig.residual_norms, pw.eigenvalues, pw.eigenvectors, den.nodes, den.weights):
        assert t.dtype == dtype and t.device.type == device
    ref = torch.linalg.eigvalsh(A.double().cpu()).flip(0)[:3]
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(eig.eigenvalues.double().cpu(), ref, rtol=rtol, atol=0)


# ----------------------------------------------------------------------------- validation
MV = dense_matvec(torch.eye(5, dtype=F64))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: top_eigenpairs(MV, dim=5, k=6), "k"),
        (lambda: top_eigenpairs(MV, dim=5, k=0), "k"),
        (lambda: top_eigenpairs(MV, dim=0, k=1), "dim"),
        (lambda: top_eigenpairs(MV, dim=5, k=2, which="BE"), "which"),
        (lambda: top_eigenpairs(MV, dim=5, k=2, block_size=0), "block_size"),
        (lambda: top_eigenpairs(MV, dim=5, k=2, num_steps=2), "num_steps"),
        (lambda: top_eigenpairs(MV, dim=5, k=2, tol=0.0), "tol"),
        (lambda: top_eigenpairs(MV, dim=5, k=2, seed=-1), "seed"),
        (lambda: lanczos_tridiag(MV, dim=5, num_steps=0), "num_steps"),
        (lambda: lanczos_tridiag(MV, dim=5, num_steps=6), "num_steps"),
        (lambda: lanczos_tridiag(MV, dim=5, num_steps=2, v0=torch.ones(4)), "v0"),
        (lambda: lanczos_tridiag(MV, dim=5, num_steps=2, v0=torch.zeros(5)), "v0"),
        (lambda: power_iteration_deflation(MV, dim=5, k=6), "k"),
        (lambda: power_iteration_deflation(MV, dim=5, k=1, max_iter=0), "max_iter"),
        (lambda: slq_density(MV, dim=5, num_steps=0, num_probes=1), "num_steps"),
        (lambda: slq_density(MV, dim=5, num_steps=2, num_probes=0), "num_probes"),
        (lambda: eigsh_reference(MV, dim=5, k=5), "k"),
        (lambda: lanczos_tridiag(lambda v: v[:3], dim=5, num_steps=2), "matvec"),
        (lambda: dense_matvec(torch.ones(3, 4)), "A"),
        (lambda: dense_matvec(torch.triu(torch.ones(3, 3))), "symmetric"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_histogram_options_validated():
    dens = SpectralDensity(nodes=torch.zeros(1, 2, dtype=F64),
                           weights=torch.tensor([[0.5, 0.5]], dtype=F64), dim=2, num_matvecs=0)
    with pytest.raises(ValueError, match="normalize"):
        dens.histogram(normalize="pdf")
    with pytest.raises(ValueError, match="range"):
        dens.histogram(range=(1.0, 0.0))
    with pytest.raises(ValueError, match="sigma"):
        dens.smoothed(torch.zeros(3), sigma=0.0)


# ----------------------------------------------------------------------------- non-convergence is reported
def test_a_solve_stopped_at_its_restart_limit_is_reported_never_silent():
    """max_restarts=0 on a spectrum without a gap: the result says converged=False and a warning
    names the solver; every caller passes the flag on (layer_spectrum) or raises on request."""
    import warnings as _warnings

    from ufmlib.config import UFMConfig
    from ufmlib.hessian import layer_spectrum
    from ufmlib.model import init_params
    from ufmlib.spectrum import NotConvergedError, NotConvergedWarning

    A = _goe(300, seed=21)  # semicircle spectrum: slow convergence of the top eigenvalues
    with pytest.warns(NotConvergedWarning, match="block Lanczos"):
        res = top_eigenpairs(dense_matvec(A), dim=300, k=4, block_size=1, num_steps=8, max_restarts=0, seed=0)
    assert res.converged is False
    assert float(res.residual_norms.max()) > 1e-10 * float(res.eigenvalues.abs().max())
    with pytest.raises(NotConvergedError, match="did not converge"):
        res.require_converged()
    # converged solves say so, silently
    with _warnings.catch_warnings():
        _warnings.simplefilter("error", NotConvergedWarning)
        ok = top_eigenpairs(dense_matvec(A), dim=300, k=4, seed=0)
    assert ok.converged and ok.require_converged() is ok
    # layer_spectrum's Lanczos route passes the flag on
    cfg = UFMConfig(K=3, n=20, d=20, L=3, activation="relu", seed=2)
    with pytest.warns(NotConvergedWarning):
        spec = layer_spectrum(init_params(cfg), cfg, 2, k=9, method="lanczos", num_steps=12, max_restarts=0)
    assert spec.converged is False and spec.method.startswith("lanczos")
    # the other solvers report it the same way
    with pytest.warns(NotConvergedWarning, match="power iteration"):
        pw = power_iteration_deflation(dense_matvec(A), dim=300, k=2, tol=1e-15, max_iter=3, seed=0)
    assert pw.converged is False


# ----------------------------------------------------------------------------- block matched to clusters
def _directions(res) -> int:
    return int(res.method.split("adaptive, ")[1].split(" directions")[0])


@pytest.mark.parametrize("mult, k", [(25, 25), (25, 30), (9, 5), (36, 40)])
def test_default_block_grows_to_the_multiplicity_of_equal_outliers(mult, k):
    """K² exactly equal outliers (K = 5, 3, 6) over a bulk: the default solver starts from two
    random directions and grows its block until every returned cluster is smaller than the
    directions it searched with; all copies are found and span the eigenspace."""
    A, U = _outliers_plus_bulk(400, [(0.5, mult)], seed=30 + mult)
    res = top_eigenpairs(dense_matvec(A), k=k, seed=0)
    ref = torch.linalg.eigvalsh(A).flip(0)[:k]
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, ref, rtol=0, atol=1e-12)
    copies = min(mult, k)
    assert copies < _directions(res)
    V = res.eigenvectors[:, :copies]
    assert torch.linalg.matrix_norm(V - U[:, :mult] @ (U[:, :mult].T @ V), ord=2).item() < 1e-8


def test_default_stays_at_two_directions_without_repeated_eigenvalues():
    """A spectrum without repeated eigenvalues: no fresh directions are added, and the solver
    needs far fewer products than a block of k."""
    A = _wishart(600, 300, seed=40)
    default = top_eigenpairs(dense_matvec(A), k=20, seed=0)
    big_block = top_eigenpairs(dense_matvec(A), k=20, block_size=20, seed=0)
    ref = torch.linalg.eigvalsh(A).flip(0)[:20]
    for res in (default, big_block):
        assert res.converged
        torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-10, atol=0)
    assert _directions(default) == 2
    assert default.num_matvecs < big_block.num_matvecs


@pytest.mark.parametrize("block_size", [None, 10, 12])
def test_low_rank_operator_with_a_block_wider_than_its_rank(block_size):
    """Nine equal outliers and an exactly zero rest (the layer Hessian at the linear minimiser is
    such a matrix): a block wider than the rank makes the second Krylov block rank-deficient, and
    the deficient direction must still come out orthogonal to the basis (a QR of it alone does
    not), so the Ritz values stay those of the matrix."""
    lam = torch.cat([torch.full((9,), 0.163, dtype=F64), torch.zeros(391, dtype=F64)])
    A, U = _with_spectrum(lam, seed=41)
    res = top_eigenpairs(dense_matvec(A), k=10, block_size=block_size, seed=0)
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, lam[:10], rtol=0, atol=1e-12)
    assert _projector_distance(res.eigenvectors[:, :9], U[:, :9]) < 1e-8
