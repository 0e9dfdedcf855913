"""Per-snapshot measurements of the R2-R5 chapters (ufmlib.dynamics, ufmlib.matrices), their axes
(ufmlib.plotting) and the agreement table (ufmlib.notebook)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.dynamics import gradient_snapshot, record_dynamics, snapshot_checkpoints, split_snapshot, weight_snapshot
from ufmlib.matrices import balancedness, singular_subspace_overlaps
from ufmlib.model import init_params
from ufmlib.notebook import agreement_table, check
from ufmlib.optimum import construct_minimiser, dnc_optimum
from ufmlib.plotting import add_theory_trajectories, figure, plot_coefficient_table
from ufmlib.state import UFMState

TINY = UFMConfig(K=2, n=3, d=4, L=3, lambda_W=0.01, lambda_H=0.01, seed=3)
SMALL = UFMConfig(K=3, n=2, d=5, L=3, lambda_W=0.02, lambda_H=0.01, seed=1)


@pytest.fixture(scope="module")
def minimiser():
    return construct_minimiser(SMALL, frames="random")


def test_record_dynamics_with_a_measurement_keeps_the_snapshots_and_adds_it():
    kw = dict(lr=0.3, epochs=40, layer=2, snapshots=6, progress=False)
    plain = record_dynamics(TINY, **kw)
    seen = []

    def measure(st, c):
        seen.append(st)
        return {"w1": float(st.Ws[0].norm()), "K": c.K}

    dyn = record_dynamics(TINY, measure=measure, **kw)
    assert plain.extra == () and np.array_equal(dyn.epochs, plain.epochs)
    for a, b in zip(dyn.snapshots, plain.snapshots):
        np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
        np.testing.assert_array_equal(a.f_table, b.f_table)
    assert len(dyn.extra) == len(dyn.snapshots)
    assert np.all(dyn.series("K") == TINY.K)
    # the measurement receives the snapshot's state (one forward pass per snapshot, float64 on the CPU)
    assert all(isinstance(st, UFMState) and st.params.H1.dtype == torch.float64 for st in seen)
    # the last measurement sees the final parameters
    assert dyn.series("w1")[-1] == pytest.approx(float(dyn.run.params.Ws[0].norm()), rel=1e-15)
    assert dyn.converged and all(s.method == "kronecker" for s in dyn.snapshots)
    with pytest.raises(ValueError, match="key"):
        dyn.series("missing")


def test_record_dynamics_rejects_bad_arguments():
    with pytest.raises(ValueError, match="measure"):
        record_dynamics(TINY, lr=0.1, epochs=2, layer=1, measure=3, progress=False)
    with pytest.raises(ValueError, match="layer"):
        record_dynamics(TINY, lr=0.1, epochs=2, layer=4, measure=lambda st, c: 0, progress=False)


def test_snapshot_checkpoints_spread_in_log_epoch():
    epochs = [0, 1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    idx = snapshot_checkpoints(epochs, 4)
    assert idx[0] == 0 and idx[-1] == len(epochs) - 1 and len(idx) == 4
    assert idx == sorted(set(idx))
    assert snapshot_checkpoints(epochs, 1) == [len(epochs) - 1]
    assert snapshot_checkpoints([0, 1], 5) == [0, 1]
    with pytest.raises(ValueError, match="count"):
        snapshot_checkpoints(epochs, 0)
    with pytest.raises(ValueError, match="epochs"):
        snapshot_checkpoints([3, 2], 2)


def test_balancedness_and_singular_subspaces_at_the_minimiser_and_at_random(minimiser):
    assert balancedness(minimiser, SMALL).max() <= 1e-12
    right, left = singular_subspace_overlaps(minimiser, SMALL)
    np.testing.assert_allclose(right, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(left, 1.0, rtol=0, atol=1e-12)
    rand = init_params(SMALL)
    assert balancedness(rand, SMALL).min() > 0.1
    r2, _ = singular_subspace_overlaps(rand, SMALL)
    assert r2.shape == (SMALL.L,) and r2[1:].min() < 1 - 1e-3  # hidden weights are not aligned at random


def test_split_snapshot_at_the_minimiser_has_ranks_0_KK1_K_and_one_level(minimiser):
    K = SMALL.K
    out = split_snapshot(minimiser, SMALL, 2)
    lam = dnc_optimum(SMALL).layer_hessian_outlier[1]
    assert out["ranks"] == {"within": 0, "cross": K * (K - 1), "class": K, "G": K * K}
    np.testing.assert_allclose(out["class"][:K], lam, rtol=1e-12)
    np.testing.assert_allclose(out["cross"][: K * (K - 1)], lam, rtol=1e-12)
    np.testing.assert_allclose(out["hessian"][: K * K], lam, rtol=1e-12)
    # knock-out: removing G_class leaves the K(K-1) cross outliers, removing G_cross the K class ones
    np.testing.assert_allclose(out["without_class"][: K * (K - 1)], lam, rtol=1e-12)
    np.testing.assert_allclose(out["without_cross"][:K], lam, rtol=1e-12)
    assert abs(out["without_class"][K * (K - 1)]) <= 1e-14 and abs(out["without_cross"][K]) <= 1e-14
    assert out["class"].shape == (K * K + 3,)
    assert abs(out["within"]).max() <= 1e-14 and out["orthogonality"] <= 1e-10
    assert out["identity"] <= 1e-14 and out["residual"] <= 1e-12
    with pytest.raises(ValueError, match="top"):
        split_snapshot(minimiser, SMALL, 2, top=0)


def test_gradient_snapshot_at_the_minimiser(minimiser):
    opt = dnc_optimum(SMALL)
    out = gradient_snapshot(minimiser, SMALL, 2)
    assert out["total_over_fit"] <= 1e-10
    # ||∇ℓ_{W_l}||_F = λ_{W_l} ||W_l||_F = sqrt(λ γ(1-γ)) at the minimiser (R4)
    assert out["fit_norm"] == pytest.approx(math.sqrt(SMALL.lambda_Ws[1] * opt.gamma * opt.one_minus_gamma), rel=1e-12)
    assert 0.0 <= out["f_top_K"] <= 1.0 + 1e-12


def test_weight_snapshot_at_the_minimiser(minimiser):
    opt = dnc_optimum(SMALL)
    out = weight_snapshot(minimiser, SMALL)
    assert out["gram"].shape == (SMALL.L, SMALL.K)
    expected = np.broadcast_to(np.array(opt.gram_eigenvalue)[:, None], (SMALL.L, SMALL.K))
    np.testing.assert_allclose(out["gram"], expected, rtol=1e-12)
    np.testing.assert_allclose(out["gram_from_means"], expected, rtol=1e-12)
    assert out["balancedness"].max() <= 1e-12


def test_add_theory_trajectories_draws_black_dashed_lines():
    fig, ax = figure()
    add_theory_trajectories(ax, [0, 1, 10], np.ones((3, 2)), label="predicted")
    lines = ax.get_lines()
    assert len(lines) == 2 and all(l.get_linestyle() == "--" and l.get_color() == "black" for l in lines)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["predicted"]
    add_theory_trajectories(ax, [0, 1, 10], np.zeros(3), label=None, linestyle=":")
    assert ax.get_lines()[-1].get_linestyle() == ":"
    with pytest.raises(ValueError, match="one row per epoch"):
        add_theory_trajectories(ax, [0, 1], np.ones((3, 2)))


def test_plot_coefficient_table_writes_every_entry():
    fig, ax = figure()
    T = torch.eye(3, dtype=torch.float64) / 3
    plot_coefficient_table(T, ax=ax, title="c")
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts.count("0.333") == 3 and texts.count("0.000") == 6
    with pytest.raises(ValueError, match="square"):
        plot_coefficient_table(np.ones((2, 3)), ax=ax)


def test_agreement_table_lists_every_check():
    a = check("a", 1.0 + 1e-13, 1.0, rtol=1e-12, result="R2", kind="reproduction", description="top eigenvalue", record=False)
    b = check("b", 3e-17, 0.0, atol=1e-12, result="R2", kind="reproduction", description="next eigenvalue", record=False)
    text = agreement_table([a, b])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| check |")
    assert "top eigenvalue" in lines[2] and "(rel.)" in lines[2] and "✓" in lines[2]
    assert "next eigenvalue" in lines[3] and "(abs.)" in lines[3]
    with pytest.raises(ValueError, match="Check"):
        agreement_table([1.0])
    with pytest.raises(ValueError, match="digits"):
        agreement_table([a], digits=0)
