"""Seed screening and the DNC test for the ReLU deep UFM (R8; book chapter ``relu``)."""

import math

import numpy as np
import pytest
import torch

from ufmlib.collapse import class_means
from ufmlib.config import ConfigError, UFMConfig
from ufmlib.model import UFMParams, forward, init_params, regularised_loss
from ufmlib.optimum import construct_minimiser, dnc_optimum
from ufmlib.screening import (
    SOLUTION_KINDS,
    DNCTest,
    SolutionMetrics,
    classify_solution,
    count_kinds,
    screen_seeds,
    solution_metrics,
)
from ufmlib.train import TrainingDivergedError, train

RELU = UFMConfig(K=3, n=3, d=8, L=3, activation="relu")


def _with_class_columns(params: UFMParams, cfg: UFMConfig, c: int, column: torch.Tensor) -> UFMParams:
    H1 = params.H1.clone()
    H1[:, c * cfg.n : (c + 1) * cfg.n] = column[:, None]
    return UFMParams(H1, params.Ws)


def _flat_family_point(cfg: UFMConfig, a: float) -> UFMParams:
    """The non-negative optimum with (H_1, W_1) replaced by a balanced pair whose product is
    U_2 C, C = m (I - a (11^T - I)): the first ReLU clips the -a m entries (notebook relu, remark)."""
    p = construct_minimiser(cfg, frames="nonnegative")
    fw = forward(p, "linear")
    M2 = class_means(fw.inputs[1], cfg.K)
    m = float(M2.norm(dim=0)[0])
    U2 = M2 / m
    R = class_means(p.H1, cfg.K)
    R = R / R.norm(dim=0)
    K = cfg.K
    C = m * ((1 + a) * torch.eye(K, dtype=torch.float64) - a * torch.ones(K, K, dtype=torch.float64))
    w, Q = torch.linalg.eigh(C)
    Chalf = Q @ torch.diag(w.sqrt()) @ Q.T
    alpha = (cfg.lambda_H * cfg.n / cfg.lambda_Ws[0]) ** 0.25
    W1 = alpha * U2 @ Chalf @ R.T
    M1 = R @ Chalf / alpha
    H1 = M1.repeat_interleave(cfg.n, dim=1)
    return UFMParams(H1, (W1, *p.Ws[1:]))


def test_batched_screening_follows_train():
    for cfg in (RELU, RELU.replace(activation="linear", loss="ce")):
        outcomes = screen_seeds(cfg, [0, 3], lr=0.1, epochs=200, history=5, progress=False)
        assert [o.seed for o in outcomes] == [0, 3]
        for o in outcomes:
            run = train(cfg.replace(seed=o.seed), lr=0.1, epochs=200, snapshot_epochs=[], progress=False)
            for got, ref in zip(o.params.tensors(), run.params.tensors()):
                torch.testing.assert_close(got, ref, rtol=0.0, atol=1e-12)
            np.testing.assert_allclose(o.losses, run.losses[o.loss_epochs], rtol=1e-12)
            assert o.loss_epochs[0] == 0 and o.loss_epochs[-1] == 200
            assert o.final_loss == pytest.approx(run.final_loss, rel=1e-12)
            assert o.kind in SOLUTION_KINDS


def test_nonnegative_minimiser_is_dnc():
    p = construct_minimiser(RELU, frames="nonnegative")
    m = solution_metrics(p, RELU)
    assert m.loss == pytest.approx(dnc_optimum(RELU).optimal_loss, rel=1e-12)
    assert m.linear_bound == pytest.approx(dnc_optimum(RELU).optimal_loss, rel=1e-15)
    np.testing.assert_allclose(m.within, 0.0, atol=1e-12)
    np.testing.assert_allclose(m.max_cosine, 0.0, atol=1e-12)
    np.testing.assert_allclose(m.rank_ratio, 1.0, rtol=1e-12)
    np.testing.assert_allclose(m.clipped, 0.0, atol=0.0)
    assert classify_solution(p, RELU) == "dnc"
    assert m.below_linear_bound == pytest.approx(0.0, abs=1e-12)


def test_rotated_minimiser_is_not_collapsed_for_relu():
    # random frames are optimal for the linear model but the ReLU clips them (R8)
    p = construct_minimiser(RELU, frames="random")
    m = solution_metrics(p, RELU)
    assert max(m.clipped) > 0.1
    assert classify_solution(p, RELU) != "dnc"
    assert m.loss > m.linear_bound * (1 + 1e-3)


def test_flat_family_has_the_linear_loss_and_is_clipped_dnc():
    a = 0.3
    p = _flat_family_point(RELU, a)
    m = solution_metrics(p, RELU)
    # the loss does not change along the family (notebook relu, remark on the first ReLU)
    assert m.loss == pytest.approx(dnc_optimum(RELU).optimal_loss, rel=1e-12)
    # class means of H_1 have cosine -a; the first ReLU clips ||offdiag G||/||G||, G = M_1^T M_1
    assert m.max_cosine[0] == pytest.approx(a, rel=1e-12)
    G = class_means(p.H1, RELU.K).T @ class_means(p.H1, RELU.K)
    share = float((G - torch.diag(torch.diagonal(G))).norm() / G.norm())
    assert m.clipped[1] == pytest.approx(share, rel=1e-12)
    assert share == pytest.approx(a * math.sqrt(6) / math.sqrt(3 + 6 * a * a), rel=1e-12)
    np.testing.assert_allclose(m.max_cosine[1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(m.clipped[2:], 0.0, atol=0.0)
    assert classify_solution(p, RELU) == "clipped-dnc"
    # a point of the family is critical, like the non-negative optimum (ReLU'(0) = 0)
    ts = [t.clone().requires_grad_(True) for t in p.tensors()]
    grads = torch.autograd.grad(regularised_loss(ts, RELU), ts)
    assert max(float(g.abs().max()) for g in grads) < 1e-12


def test_merged_low_rank_and_other_points():
    p = construct_minimiser(RELU, frames="nonnegative")
    M1 = class_means(p.H1, RELU.K)
    merged = _with_class_columns(p, RELU, 2, M1[:, 0])
    m = solution_metrics(merged, RELU)
    assert max(m.max_cosine) == pytest.approx(1.0, abs=1e-12)
    assert classify_solution(merged, RELU) == "merged"
    low = _with_class_columns(p, RELU, 2, (M1[:, 0] + M1[:, 1]) / math.sqrt(2))
    m = solution_metrics(low, RELU)
    assert m.max_cosine[0] == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert min(m.rank_ratio) < 1e-12
    assert classify_solution(low, RELU) == "low-rank"
    start = init_params(RELU)
    assert solution_metrics(start, RELU).within[0] > 0.5
    assert classify_solution(start, RELU) == "other"


def test_classification_order_on_metrics():
    base = dict(loss=0.1, linear_bound=0.1, within=(0.0, 0.0, 0.0), max_cosine=(0.0, 0.0, 0.0),
                rank_ratio=(1.0, 1.0, 1.0), clipped=(0.0, 0.0, 0.0))
    test = DNCTest()
    assert test.classify(SolutionMetrics(**base)) == "dnc"
    assert test.classify(SolutionMetrics(**{**base, "max_cosine": (0.5, 0.0, 0.0), "clipped": (0.0, 0.3, 0.0)})) == "clipped-dnc"
    # a later ReLU that clips, or a non-orthogonal later layer, is not collapsed
    assert test.classify(SolutionMetrics(**{**base, "clipped": (0.0, 0.0, 0.3)})) == "other"
    assert test.classify(SolutionMetrics(**{**base, "within": (0.0, 0.1, 0.0)})) == "other"
    assert test.classify(SolutionMetrics(**{**base, "max_cosine": (0.0, 0.995, 0.5), "rank_ratio": (1.0, 0.0, 0.1)})) == "merged"
    assert test.classify(SolutionMetrics(**{**base, "max_cosine": (0.0, 0.7, 0.7), "rank_ratio": (1.0, 0.01, 0.5)})) == "low-rank"
    assert DNCTest(cosine=0.8).classify(SolutionMetrics(**{**base, "max_cosine": (0.0, 0.7, 0.7)})) == "dnc"
    assert "clipped-dnc" in test.describe() and "0.02" in test.describe()


def test_screening_finds_both_kinds_on_both_sides_of_the_linear_bound():
    # a small model where one start collapses and one ends at the low-rank point (book chapter relu)
    cfg = UFMConfig(K=3, n=5, d=12, L=5, activation="relu")
    outcomes = screen_seeds(cfg, [1, 3], lr=0.2, epochs=5000, progress=False)
    kinds = {o.seed: o.kind for o in outcomes}
    assert kinds == {1: "low-rank", 3: "dnc"}
    bound = dnc_optimum(cfg).optimal_loss
    low, dnc = outcomes
    assert low.final_loss < 0.95 * bound  # the low-rank point beats the linear optimum
    assert bound < dnc.final_loss < 1.01 * bound  # a collapsed point cannot (R8)
    assert count_kinds(outcomes) == {"dnc": 1, "clipped-dnc": 0, "merged": 0, "low-rank": 1, "other": 0}
    assert list(count_kinds(outcomes)) == list(SOLUTION_KINDS)
    assert np.all(np.diff(low.losses) <= 1e-12)  # gradient descent with a small step decreases the loss


def test_bad_arguments():
    with pytest.raises(ValueError, match="seeds"):
        screen_seeds(RELU, [], lr=0.1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        screen_seeds(RELU, [1, 1], lr=0.1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        screen_seeds(RELU, [-1], lr=0.1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        screen_seeds(RELU, "01", lr=0.1, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        screen_seeds(RELU, [0], lr=0.0, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        screen_seeds(RELU, [0], lr=0.1, epochs=-1, progress=False)
    with pytest.raises(ValueError, match="history"):
        screen_seeds(RELU, [0], lr=0.1, epochs=1, history=0, progress=False)
    with pytest.raises(ValueError, match="test"):
        screen_seeds(RELU, [0], lr=0.1, epochs=1, test="strict", progress=False)
    with pytest.raises(ValueError, match="cosine"):
        DNCTest(cosine=1.5)
    with pytest.raises(ValueError, match="cosine"):
        DNCTest(cosine=0.995)
    with pytest.raises(ValueError, match="params"):
        solution_metrics(construct_minimiser(RELU.replace(L=2)), RELU)
    with pytest.raises(ValueError, match="cfg"):
        solution_metrics(construct_minimiser(RELU), "relu")
    with pytest.raises(TrainingDivergedError, match="lr=1000"):
        screen_seeds(RELU, [0, 1], lr=1000.0, epochs=50, progress=False)
