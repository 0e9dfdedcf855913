"""The maps of the book chapter ``validity`` (ufmlib.validity): theory against gradient descent."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from ufmlib.config import ConfigError, UFMConfig
from ufmlib.hessian import layer_spectrum
from ufmlib.model import UFMParams, labels
from ufmlib.optimum import common_lambda_threshold, construct_minimiser, dnc_optimum
from ufmlib.plotting import add_boundary_steps, figure, plot_grid_map
from ufmlib.train import loss_and_grad
from ufmlib.validity import (MSE_OUTCOMES, ce_level_map, ce_levels, class_mean_share, descend, lower_rank_loss,
                             lower_rank_outliers, mse_map, mse_point, relu_map)

SMALL = dict(n=2, d=4, L=2)


def test_inside_the_region_gradient_descent_reaches_the_closed_form():
    lam = 0.03
    assert lam < common_lambda_threshold(2, 2, 2)
    p = mse_point(2, lam=lam, seed=0, lr=0.5, max_epochs=6000, **SMALL)
    assert p.is_global and p.converged and p.outcome == "collapsed" and p.rank == 2
    assert p.grad_max <= 1e-10
    assert p.outlier_error < 1e-8 and len(p.outlier_errors) == 2
    assert p.share < 1e-8
    assert p.final_loss == pytest.approx(dnc_optimum(2, 2, 2, lam, lam).optimal_loss, rel=1e-9)
    assert p.predicted_loss == pytest.approx(p.final_loss, rel=1e-9)


def test_beyond_the_boundary_gradient_descent_reaches_the_zero_minimiser():
    lam = 0.3
    assert lam > common_lambda_threshold(2, 2, 2)
    p = mse_point(2, lam=lam, seed=0, lr=0.5, max_epochs=3000, **SMALL)
    assert not p.is_global and p.optimal_loss == 0.5
    assert p.outcome == "zero" and p.rank == 0 and p.param_max <= 1e-8
    assert p.final_loss == pytest.approx(0.5, abs=1e-12)
    assert p.outlier_errors == () and p.shares == () and math.isnan(p.outlier_error)
    assert p.predicted_loss == 0.5


def test_a_short_run_is_reported_as_not_converged():
    p = mse_point(3, lam=0.01, seed=0, lr=0.5, max_epochs=20, n=2, d=4, L=3)
    assert not p.converged and p.outcome == "not converged" and p.epochs == 20
    assert p.grad_max > 1e-10 and p.outlier_errors == ()
    assert math.isnan(p.predicted_loss)


def test_descend_stops_when_converged_and_repeats_one_run():
    cfg = UFMConfig(K=2, n=2, d=4, L=2, lambda_W=0.05, lambda_H=0.05, seed=1)
    a = descend(cfg, lr=0.5, max_epochs=5000, grad_tol=1e-10, chunk=500)
    assert a.converged and a.epochs < 5000 and a.epochs % 500 == 0
    b = descend(cfg, lr=0.5, max_epochs=a.epochs, grad_tol=1e-30, chunk=a.epochs)  # one chunk, same steps
    torch.testing.assert_close(a.params.H1, b.params.H1, rtol=0, atol=1e-13)


def test_lower_rank_critical_point_of_the_remark():
    """A minimiser with one class direction removed is a critical point with loss L_r and r² outliers."""
    K, lam = 3, 0.01
    cfg = UFMConfig(K=K, n=2, d=5, L=3, lambda_W=lam, lambda_H=lam)
    opt = dnc_optimum(cfg)
    T = [t.clone() for t in construct_minimiser(cfg, frames="canonical").tensors()]
    T[0][0] = 0.0  # H_1: the first class direction (canonical frames: the first coordinate) is unused
    for W in T[1:]:
        W[0, 0] = 0.0
    loss, grads = loss_and_grad(T, cfg, labels(cfg))
    assert max(float(g.abs().max()) for g in grads) < 1e-14
    assert float(loss) == pytest.approx(lower_rank_loss(K, K - 1, opt.optimal_loss), rel=1e-13)
    assert float(loss) > opt.optimal_loss
    point = UFMParams.from_tensors(T)
    for l in range(1, cfg.L + 1):
        count = lower_rank_outliers(K, K - 1, cfg.L, l)
        assert count == ((K - 1) ** 2 if l < cfg.L else K * (K - 1))
        top = layer_spectrum(point, cfg, l, k=count + 1).eigenvalues
        torch.testing.assert_close(top[:-1], torch.full((count,), opt.layer_hessian_outlier[l - 1],
                                                        dtype=torch.float64), rtol=1e-12, atol=0)
        assert abs(float(top[-1])) < 1e-14
        assert class_mean_share(point, cfg, l) < 1e-12


def test_lower_rank_loss_limits_and_errors():
    assert lower_rank_loss(4, 4, 0.2) == pytest.approx(0.2)
    assert lower_rank_loss(4, 0, 0.2) == 0.5
    with pytest.raises(ConfigError) as info:
        lower_rank_loss(3, 4, 0.2)
    assert info.value.parameter == "rank"


def test_class_mean_share_is_zero_at_the_minimiser_and_not_elsewhere():
    cfg = UFMConfig(K=3, n=2, d=5, L=3, lambda_W=0.01, lambda_H=0.01)
    point = construct_minimiser(cfg, frames="random")
    assert max(class_mean_share(point, cfg, l) for l in range(1, 4)) < 1e-12
    noisy = UFMParams.from_tensors([t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0),
                                                          dtype=t.dtype) for t in point.tensors()])
    assert class_mean_share(noisy, cfg, 2) > 1e-4
    zero = UFMParams.from_tensors([torch.zeros_like(t) for t in point.tensors()])
    assert math.isnan(class_mean_share(zero, cfg, 1))


def test_mse_map_shapes_thresholds_and_labels():
    m = mse_map(Ks=[3, 2], Ls=[2], lambdas=np.array([0.3, 0.02]), n=2, d=4, seed=0, lr=0.5, max_epochs=4000)
    assert m.Ks == (2, 3) and m.lambdas == (0.02, 0.3)
    assert m.thresholds[(2, 2)] == common_lambda_threshold(2, 2, 2)
    assert m.grid(2, "is_global").tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert m.labels(2)[1] == ["0", "0"]
    assert all(p.outcome in MSE_OUTCOMES for p in m.points.values())
    assert len(m.select(inside=False)) == 2 and len(m.panel(2)) == 4


@pytest.mark.parametrize("kwargs, name", [
    (dict(Ks=[2, 5]), "d"),
    (dict(lambdas=[]), "lambdas"),
    (dict(lambdas=[0.1, 0.1]), "lambdas"),
    (dict(lambdas=[-0.1]), "lambdas"),
    (dict(Ks=[1]), "Ks"),
    (dict(Ls=[0]), "Ls"),
    (dict(lr=0.0), "lr"),
    (dict(grad_tol=-1.0), "grad_tol"),
])
def test_bad_map_parameters_name_the_parameter(kwargs, name):
    args = dict(Ks=[2], Ls=[2], lambdas=[0.1], n=2, d=4, seed=0, lr=0.5, max_epochs=10, **{})
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        mse_map(**args)


def test_descend_rejects_bad_arguments():
    cfg = UFMConfig(K=2, n=2, d=4, L=2)
    with pytest.raises(ConfigError, match="max_epochs"):
        descend(cfg, lr=0.1, max_epochs=-1, grad_tol=1e-10)
    with pytest.raises(ValueError, match="cfg"):
        descend("cfg", lr=0.1, max_epochs=1, grad_tol=1e-10)


def test_relu_map_counts_every_seed():
    m = relu_map(K=3, n=2, ds=[3, 6], Ls=[2], lam=0.01, seeds=[0, 1, 2], lr=0.2, epochs=30)
    assert set(m.cells) == {(2, 3), (2, 6)}
    for cell in m.cells.values():
        assert len(cell.kinds) == 3 and len(cell.grad_max) == 3
        assert cell.count("dnc", "clipped-dnc", "merged", "low-rank", "other") == 3
        assert cell.bound == dnc_optimum(3, 2, 2, 0.01, 0.01).optimal_loss
        assert not any(cell.converged)  # 30 steps are far from a critical point
    grid = m.grid("dnc", "clipped-dnc", "merged", "low-rank", "other")
    assert grid.shape == (1, 2) and np.all(grid == 1.0)
    with pytest.raises(ValueError, match="ds"):
        relu_map(K=3, n=2, ds=[2], Ls=[2], lam=0.01, seeds=[0], lr=0.2, epochs=1)


def test_ce_levels_at_the_constructed_point_and_after_descent():
    c = ce_levels(3, n=2, d=4, L=2, lam=0.005, layer=1, seed=0, run_seeds=[0], lr=1.0, epochs=1500)
    assert c.counts[:3] == c.multiplicities == (1, 2, 1) and c.unmatched == 0
    assert c.error < 1e-12
    np.testing.assert_allclose(c.measured, c.predicted, rtol=1e-12)
    assert len(c.runs) == 1 and c.at_dnc == (c.runs[0].at_dnc,)
    if c.runs[0].at_dnc:
        assert c.run_errors[0] < 1e-7 and c.run_counts[0][:3] == (1, 2, 1)
    else:
        assert c.run_measured[0] is None and math.isnan(c.run_errors[0])


def test_ce_level_map_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="layer"):
        ce_level_map(Ks=[3], Ls=[2], n=2, d=4, lam=0.005, layer=3, seed=0)
    with pytest.raises(ValueError, match="d must"):
        ce_level_map(Ks=[3, 5], Ls=[2], n=2, d=4, lam=0.005, layer=1, seed=0)
    with pytest.raises(ConfigError, match="Ks"):
        ce_level_map(Ks=[2], Ls=[2], n=2, d=4, lam=0.005, layer=1, seed=0)


def test_grid_map_hatches_unmeasured_cells_and_draws_the_boundary():
    fig, ax = figure()
    values = np.array([[1e-15, np.nan], [1e-12, 1e-14]])
    plot_grid_map(values, x=[2, 3], y=[0.01, 0.1], ax=ax, vmin=1e-16, vmax=1e-6, labels=[["", "0"], ["r=1", ""]],
                  colourbar="error")
    assert sum(p.get_hatch() == "//" for p in ax.patches) == 1
    assert [t.get_text() for t in ax.texts] == ["0", "r=1"]
    add_boundary_steps(ax, [2, 3], [0.05, 0.02])
    with pytest.raises(ValueError, match="boundary"):
        add_boundary_steps(ax, [2, 3], [0.05])
    with pytest.raises(ValueError, match="values"):
        plot_grid_map(values[:1], x=[2, 3], y=[0.01, 0.1], ax=ax)
    import matplotlib.pyplot as plt

    plt.close(fig)
