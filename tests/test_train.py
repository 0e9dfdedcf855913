"""Gradient descent reaches the analytic optimum; runs are deterministic; divergence is named."""

import numpy as np
import pytest
import torch

from ufmlib.collapse import collapse_metrics
from ufmlib.config import ConfigError, UFMConfig
from ufmlib.model import init_params, regularised_loss
from ufmlib.optimum import dnc_optimum
from ufmlib.train import TrainingDivergedError, log_epochs, loss_and_grad, train

SMALL = UFMConfig(K=3, n=5, d=8, L=3, lambda_W=0.01, lambda_H=0.01)


@pytest.mark.parametrize(
    "cfg",
    [SMALL, SMALL.replace(activation="relu"), SMALL.replace(loss="ce"), SMALL.replace(loss="ce", activation="relu"),
     SMALL.replace(lambda_W=(0.01, 0.03, 0.002))],
)
def test_explicit_backward_equals_autograd(cfg):
    params = init_params(cfg)
    loss, grads = loss_and_grad(params.tensors(), cfg, torch.kron(torch.eye(3, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64)))
    ps = [t.clone().requires_grad_(True) for t in params.tensors()]
    ref = regularised_loss(ps, cfg)
    ref_grads = torch.autograd.grad(ref, ps)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-14)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-15)


def test_gd_reaches_analytic_optimum_and_collapses():
    result = train(SMALL, lr=0.2, epochs=6000, snapshot_epochs=[0, 6000], progress=False,
                   callback=lambda e, p: collapse_metrics(p, SMALL))
    target = dnc_optimum(SMALL).optimal_loss
    assert abs(result.final_loss - target) / target <= 1e-8
    nc1_start = [m.nc1 for m in result.snapshots[0].value]
    nc1_end = [m.nc1 for m in result.snapshots[-1].value]
    assert min(nc1_start) > 1e-2
    assert max(nc1_end) < 1e-12
    assert max(m.nc2_orthogonal for m in result.snapshots[-1].value) < 1e-6


def test_paper_scale_linear_run_reaches_optimum():
    """Linear run at the paper's sizes (v1 Sec. 5.1; loss only): K=3, n=40, d=60, L=5, λ=0.01, lr 0.2."""
    cfg = UFMConfig()
    result = train(cfg, lr=0.2, epochs=6000, snapshot_epochs=[], progress=False)
    target = dnc_optimum(cfg).optimal_loss
    assert abs(result.final_loss - target) / target <= 1e-8


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = train(SMALL, lr=0.1, epochs=300, progress=False)
    b = train(SMALL, lr=0.1, epochs=300, progress=False)
    c = train(SMALL.replace(seed=1), lr=0.1, epochs=300, progress=False)
    assert np.array_equal(a.losses, b.losses)
    for x, y in zip(a.params.tensors(), b.params.tensors()):
        assert torch.equal(x, y)
    assert not np.array_equal(a.losses, c.losses)


def test_snapshots_are_log_spaced_and_detached():
    epochs = log_epochs(1000, 10)
    assert epochs[0] == 0 and epochs[-1] == 1000 and epochs == sorted(set(epochs))
    result = train(SMALL, lr=0.1, epochs=1000, snapshot_epochs=10, progress=False)
    assert list(result.snapshot_epochs()) == epochs
    first = result.snapshots[0].value
    torch.testing.assert_close(first.H1, init_params(SMALL).H1, rtol=0, atol=0)
    assert result.losses.shape == (1001,)
    assert result.snapshots[-1].loss == pytest.approx(result.losses[-1], rel=1e-15)


def test_divergence_names_learning_rate():
    with pytest.raises(TrainingDivergedError, match=r"lr=50\.0"):
        train(SMALL, lr=50.0, epochs=500, progress=False, check_every=10)


@pytest.mark.parametrize("kwargs, name", [({"lr": 0.0, "epochs": 3}, "lr"), ({"lr": float("nan"), "epochs": 3}, "lr"),
                                           ({"lr": 0.1, "epochs": -1}, "epochs"), ({"lr": 0.1, "epochs": 2.5}, "epochs")])
def test_bad_training_arguments(kwargs, name):
    with pytest.raises(ConfigError) as info:
        train(SMALL, progress=False, **kwargs)
    assert info.value.parameter == name


def test_float32_runs_and_stays_float32():
    cfg = SMALL.replace(dtype="float32")
    result = train(cfg, lr=0.1, epochs=50, progress=False)
    assert result.params.H1.dtype == torch.float32
    assert np.isfinite(result.losses).all()
