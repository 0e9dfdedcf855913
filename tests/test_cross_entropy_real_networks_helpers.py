"""Helpers added for the cross-entropy (R9) and real-networks chapters.

* :func:`ufmlib.theory.cross_entropy.ce_critical_directions` -- the class directions of R9 (b);
* :func:`ufmlib.dynamics.ce_descent_run` -- one gradient-descent run against the CE DNC point;
* :func:`ufmlib.analysis.analyze_head_checkpoints` -- the head of a trained network analysed on
  its backbone's features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufmlib.alignment import subspace_overlap
from ufmlib.analysis import analyze_checkpoints, analyze_head_checkpoints
from ufmlib.config import UFMConfig
from ufmlib.dynamics import CEDescentRun, ce_descent_run
from ufmlib.hessian import layer_hessian_autodiff
from ufmlib.model import regularised_loss
from ufmlib.networks import NetworkConfig, train_network
from ufmlib.optimum import construct_ce_critical_point
from ufmlib.theory import ce_critical_layer_hessian
from ufmlib.theory.cross_entropy import ce_critical_directions

CE = UFMConfig(K=3, n=2, d=4, L=2, lambda_W=5e-3, lambda_H=5e-3, loss="ce", dtype="float64", seed=0)


# ----------------------------------------------------------------------------- R9 (b) directions
@pytest.mark.parametrize("layer", [1, 2])
def test_ce_directions_span_the_top_K_eigenspace_of_the_autodiff_layer_hessian(layer):
    params = construct_ce_critical_point(CE, frames="random")
    cand = ce_critical_directions(params, CE, layer)
    H = layer_hessian_autodiff(params, CE, layer)
    assert cand.shape == (H.shape[0], CE.K) and cand.dtype == torch.float64
    w, V = torch.linalg.eigh(H)
    w, V = w.flip(0), V.flip(1)
    assert subspace_overlap(V[:, : CE.K], cand) == pytest.approx(1.0, abs=1e-10)
    top = cand.sum(dim=1)
    assert torch.allclose(H @ top, w[0] * top, atol=1e-12 * float(w[0]) * float(top.norm()))


def test_ce_directions_reject_a_bad_layer():
    params = construct_ce_critical_point(CE)
    with pytest.raises(ValueError):
        ce_critical_directions(params, CE, CE.L + 1)


# ----------------------------------------------------------------------------- a CE gradient-descent run
def test_ce_descent_run_reports_where_gradient_descent_ends():
    run = ce_descent_run(CE, lr=1.0, epochs=200, layer=2, snapshots=4)
    assert isinstance(run, CEDescentRun)
    assert (run.K, run.seed, run.layer) == (3, 0, 2)
    dim = CE.K * CE.d  # W_2 is K x d
    assert run.eigenvalues.shape == (dim,)
    assert bool((run.eigenvalues[:-1] >= run.eigenvalues[1:] - 1e-15).all())  # descending
    assert run.track.shape == (len(run.epochs), (CE.K - 1) ** 2 + 1)
    assert run.epochs[-1] == 200
    expected = regularised_loss(construct_ce_critical_point(CE).tensors(), CE).item()
    assert run.dnc_loss == pytest.approx(expected, rel=1e-14)
    assert run.levels.multiplicities == ce_critical_layer_hessian(CE, 2).multiplicities
    assert 0 <= run.logit_rank <= CE.K - 1
    assert not (run.at_dnc and run.below)
    assert run.outcome in ("at DNC", "lower loss", "elsewhere")
    assert np.isfinite(run.final_loss)


def test_ce_descent_run_needs_the_linear_cross_entropy_model():
    with pytest.raises(ValueError, match="cross-entropy"):
        ce_descent_run(CE.replace(loss="mse"), lr=1.0, epochs=10, layer=1)
    with pytest.raises(ValueError):
        ce_descent_run(CE, lr=1.0, epochs=10, layer=3)


# ----------------------------------------------------------------------------- head on features
SMALL = NetworkConfig(dataset="digits", n_per_class=8, classes=(0, 1, 2), widths=(16,), d=6, L=2,
                      lr=0.1, epochs=40, dtype="float64", lambda_W=5e-3, lambda_H=1e-3, seed=0)


@pytest.fixture(scope="module")
def small_run():
    return train_network(SMALL, snapshot_epochs=3, progress=False)


def test_head_analysis_on_features_equals_the_whole_network(small_run):
    x, labels = small_run.data.x, small_run.data.labels
    kw = dict(K=SMALL.K, loss="mse")
    via_head = analyze_head_checkpoints(small_run.model, small_run.snapshots, x, labels, eval_batch=7, **kw)
    via_whole = analyze_checkpoints(small_run.model, small_run.snapshots, x, labels,
                                    head_layers=small_run.model.head_layer_names, **kw)
    assert via_head.epochs == via_whole.epochs
    for a, b in zip(via_head.results, via_whole.results):
        for la, lb in zip(a.layers, b.layers):
            scale = float(lb.eigenvalues.abs().max())
            assert torch.allclose(la.eigenvalues, lb.eigenvalues, atol=1e-10 * scale)
            assert la.nc1 == pytest.approx(lb.nc1, rel=1e-9)
            assert la.gradient_overlap == pytest.approx(lb.gradient_overlap, abs=1e-9)


def test_head_analysis_rejects_other_models_and_a_given_head(small_run):
    x, labels = small_run.data.x, small_run.data.labels
    with pytest.raises(ValueError, match="HeadedNetwork"):
        analyze_head_checkpoints(torch.nn.Linear(64, 3), small_run.snapshots, x, labels)
    with pytest.raises(ValueError, match="head_layers"):
        analyze_head_checkpoints(small_run.model, small_run.snapshots, x, labels, head_layers=["head.0"])
    with pytest.raises(ValueError):
        analyze_head_checkpoints(small_run.model, small_run.snapshots, x, labels, eval_batch=0)
