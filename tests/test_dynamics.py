"""Training dynamics end at the theory (≈ v1 Figs 3-4 at a CI size): K² equal outliers at
λγ/(1-γ), f_cc' = 1, fit gradient inside the outlier space with coefficients I/K."""

import numpy as np
import pytest

from ufmlib.config import UFMConfig
from ufmlib.dynamics import measure_layer, record_dynamics
from ufmlib.optimum import construct_minimiser, dnc_optimum


@pytest.fixture(scope="module")
def run():
    cfg = UFMConfig(K=3, n=4, d=8, L=3, lambda_W=0.01, lambda_H=0.01)
    return cfg, record_dynamics(cfg, lr=0.2, epochs=8000, layer=2, snapshots=8, progress=False)


def test_final_snapshot_matches_closed_form(run):
    cfg, dyn = run
    last = dyn.snapshots[-1]
    level = dnc_optimum(cfg).layer_hessian_outlier[1]
    np.testing.assert_allclose(last.eigenvalues[:9], level, rtol=1e-7)
    assert abs(last.eigenvalues[9]) < 1e-10
    np.testing.assert_allclose(last.predicted, level, rtol=1e-7)
    np.testing.assert_allclose(last.f_table, 1.0, atol=1e-9)
    np.testing.assert_allclose(last.grad_coefficients, np.eye(3) / 3, atol=1e-8)
    assert last.fit_grad_overlap == pytest.approx(1.0, abs=1e-9)
    assert last.total_grad_overlap < 1e-3  # fit-term convention (book label sources-conventions): the total gradient is not aligned


def test_start_is_far_from_the_theory(run):
    cfg, dyn = run
    first = dyn.snapshots[0]
    assert first.epoch == 0 and np.nanmean(first.f_table) < 0.9
    assert first.eigenvalues[0] / first.eigenvalues[8] > 1.5
    assert dyn.nc1()[0] > 100 * dyn.nc1()[-1]
    assert dyn.top_eigenvalues(9).shape == (len(dyn.snapshots), 9)


def test_measure_at_the_minimiser_relu_uses_lanczos():
    cfg = UFMConfig(K=3, n=4, d=6, L=4, activation="relu")
    snap = measure_layer(construct_minimiser(cfg, frames="nonnegative"), cfg, 3, top=12)
    level = dnc_optimum(cfg).layer_hessian_outlier[2]
    # ReLU'(0) = 0 at the exact non-negative optimum: K outliers only (R8, book chapter relu)
    np.testing.assert_allclose(snap.eigenvalues[:3], level, rtol=1e-8)
    assert abs(snap.eigenvalues[3]) < 1e-10
    assert len(snap.eigenvalues) == 12


def test_bad_layer():
    with pytest.raises(ValueError, match="layer"):
        record_dynamics(UFMConfig(K=3, n=2, d=4, L=2), lr=0.1, epochs=2, layer=3, progress=False)


@pytest.mark.parametrize("activation, loss", [("linear", "mse"), ("relu", "ce")])
def test_one_snapshot_is_measured_from_one_forward_pass(monkeypatch, activation, loss):
    """measure_layer builds one UFMState: its forward pass and class means serve every measurement
    (layer spectrum, HVP, eigenvector test, class-mean prediction, collapse metrics)."""
    import ufmlib.state as state_module
    from ufmlib.model import init_params
    from ufmlib.state import UFMState

    calls = []
    original = state_module.forward
    monkeypatch.setattr(state_module, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    cfg = UFMConfig(K=3, n=4, d=6, L=3, activation=activation, loss=loss)
    snap = measure_layer(UFMState(init_params(cfg), cfg), cfg, 2)
    assert len(calls) == 1
    assert snap.converged and snap.method in ("kronecker", "dense")
    # a state of another configuration is refused, never silently re-used
    with pytest.raises(ValueError, match="another configuration"):
        measure_layer(UFMState(init_params(cfg), cfg), cfg.replace(lambda_W=0.02), 2)
