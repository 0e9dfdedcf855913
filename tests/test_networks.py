"""Backbone + deep-UFM head networks and their training (book chapter ``real_networks``).

Small ``digits`` problems (offline), float64 unless stated. What is checked: validation names
the bad parameter; the architecture is the UFM head on a backbone; the recorded loss is exactly
the objective ``ℓ + (λ_W/2)Σ||W_l||² + (λ_H/2)Σ||θ_backbone||²`` and one step is plain gradient
descent on it (λ_W on the head, λ_H on the backbone as the UFM's feature penalty); same seed -> same curve; divergence names the lr.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ufmlib.config import ConfigError
from ufmlib.data import load_dataset
from ufmlib.networks import (
    HeadedNetwork,
    NetworkConfig,
    build_network,
    load_network_data,
    model_at,
    network_fit_loss,
    network_penalty,
    train_network,
)
from ufmlib.train import TrainingDivergedError

F64 = torch.float64
SMALL = NetworkConfig(dataset="digits", n_per_class=10, classes=(0, 1, 2, 3), widths=(16,), d=8, L=2,
                      lr=0.1, epochs=30, dtype="float64", lambda_W=5e-3, lambda_H=1e-3)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "field, value",
    [
        ("dataset", "mnist2"), ("n_per_class", 0), ("n_per_class", 2.5), ("classes", (1, 1)),
        ("classes", (0, 10)), ("classes", (3,)), ("classes", "01"), ("backbone", "vgg"),
        ("widths", (16, 0)), ("widths", 16), ("L", 0), ("L", True), ("d", 3), ("activation", "tanh"),
        ("loss", "hinge"), ("lambda_W", 0.0), ("lambda_W", math.nan), ("lambda_H", -1e-3),
        ("lr", 0), ("lr", math.inf), ("epochs", -1), ("batch_size", 0), ("batch_size", 41),
        ("momentum", 1.0), ("momentum", -0.1), ("dtype", "float16"), ("device", 3), ("seed", -1),
        ("data_root", 5),
    ],
)
def test_bad_values_raise_an_error_naming_the_parameter(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be") as err:
        SMALL.replace(**{field: value})
    assert isinstance(err.value, ValueError) and err.value.parameter == field


def test_defaults_and_derived_quantities():
    cfg = NetworkConfig()
    assert (cfg.K, cfg.N, cfg.L, cfg.d, cfg.momentum, cfg.batch_size) == (10, 300, 3, 32, 0.0, None)
    assert cfg.torch_dtype == F64
    assert (SMALL.K, SMALL.N) == (4, 40)
    assert SMALL.replace(dataset="DIGITS").dataset == "digits"
    assert SMALL.replace(classes=[3, 1]).classes == (3, 1)
    assert SMALL.replace(dtype=torch.float32).dtype == "float32"
    assert SMALL.replace(d=4).d == 4  # d = K is allowed
    with pytest.raises(ConfigError, match="^d must be an integer >= K = 4"):
        SMALL.replace(d=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_named_when_the_network_is_built():
    cfg = SMALL.replace(device="cuda")  # allowed to describe a GPU run on a CPU machine ...
    with pytest.raises(ConfigError, match="^device must be"):
        build_network(cfg)  # ... but not to build it


# ----------------------------------------------------------------------------- architecture
def test_mlp_backbone_with_a_bias_free_head_of_L_layers():
    cfg = SMALL.replace(L=3, d=8, widths=(16, 12))
    net = build_network(cfg)
    assert isinstance(net, HeadedNetwork) and net.head_layer_names == ["head.0", "head.1", "head.2"]
    assert [tuple(W.shape) for W in net.head_parameters()] == [(8, 8), (8, 8), (4, 8)]
    assert all(layer.bias is None for layer in net.head)
    modules = dict(net.named_modules())
    assert all(isinstance(modules[n], nn.Linear) for n in net.head_layer_names)
    linears = [m for m in net.backbone.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 12), (12, 8)]
    assert all(p.dtype == F64 for p in net.parameters())
    # head initialisation N(0, 1/d_in): empirical variance of all 8*8*2 + 4*8 head entries
    var = torch.cat([W.detach().reshape(-1) for W in net.head_parameters()]).var().item()
    assert 0.6 / 8 < var < 1.4 / 8


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_forward_is_the_deep_ufm_head_on_backbone_features(activation):
    cfg = SMALL.replace(L=3, activation=activation)
    net = build_network(cfg)
    data = load_network_data(cfg)
    h = net.backbone(data.x)
    W1, W2, W3 = (W.detach() for W in net.head_parameters())
    sigma = torch.relu if activation == "relu" else (lambda t: t)
    expected = sigma(sigma(h @ W1.T) @ W2.T) @ W3.T  # no activation on H_1 or after W_L
    torch.testing.assert_close(net(data.x), expected, rtol=1e-13, atol=1e-13)
    assert net(data.x).shape == (cfg.N, cfg.K)


def test_resnet_backbone_is_adapted_to_small_images_and_trains():
    cfg = SMALL.replace(backbone="resnet", n_per_class=2, classes=(0, 1, 2), d=6, L=2, epochs=1,
                        lr=0.01, dtype="float32")
    data = load_network_data(cfg)
    assert data.x.shape == (6, 1, 8, 8)  # images, not flattened, for the ResNet
    net = build_network(cfg)
    bb = net.backbone
    assert (bb.conv1.in_channels, bb.conv1.kernel_size, bb.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(bb.maxpool, nn.Identity) and bb.fc.out_features == cfg.d
    res = train_network(cfg, data=data, model=net, snapshot_epochs=[], progress=False)
    assert res.losses.shape == (2,) and np.isfinite(res.losses).all()
    assert net(data.x).shape == (6, 3)


# ----------------------------------------------------------------------------- losses and steps
def test_fit_loss_and_penalty_formulas():
    g = torch.Generator().manual_seed(3)
    Z = torch.randn(12, 4, generator=g, dtype=F64)
    labels = torch.arange(4).repeat_interleave(3)
    Y = torch.eye(4, dtype=F64)[labels]
    assert float(network_fit_loss(Z, labels, "mse")) == pytest.approx(0.5 * ((Z - Y) ** 2).sum().item() / 12, rel=1e-14)
    ce = -(torch.log_softmax(Z, dim=1) * Y).sum().item() / 12
    assert float(network_fit_loss(Z, labels, "ce")) == pytest.approx(ce, rel=1e-14)
    with pytest.raises(ValueError, match="^loss must be"):
        network_fit_loss(Z, labels, "hinge")
    net = build_network(SMALL)
    head = sum((W**2).sum().item() for W in net.head_parameters())
    back = sum((p**2).sum().item() for p in net.backbone.parameters())
    expected = 0.5 * 5e-3 * head + 0.5 * 1e-3 * back
    assert network_penalty(net, 5e-3, 1e-3).item() == pytest.approx(expected, rel=1e-13)


def test_one_epoch_is_gradient_descent_with_the_ufm_weight_decay_split():
    cfg = SMALL.replace(epochs=1, lambda_W=0.03, lambda_H=0.002, lr=0.07)
    data = load_network_data(cfg)
    net = build_network(cfg)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    fit = network_fit_loss(net(data.x), data.labels, "mse")
    grads = dict(zip(before, torch.autograd.grad(fit, list(net.parameters()))))
    train_network(cfg, data=data, model=net, snapshot_epochs=[], progress=False)
    for name, p in net.named_parameters():
        lam = 0.03 if name.startswith("head.") else 0.002  # λ_W on the head, λ_H on the backbone
        expected = before[name] - 0.07 * (grads[name] + lam * before[name])
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-14)


def test_recorded_losses_are_the_objective_at_the_snapshots():
    cfg = SMALL.replace(epochs=40)
    res = train_network(cfg, snapshot_epochs=[0, 7, 40], progress=False)
    assert res.losses.shape == (41,) and res.fit_losses.shape == (41,)
    assert list(res.snapshot_epochs()) == [0, 7, 40]
    for snap in res.snapshots:
        net = model_at(res.model, snap.value)
        fit = network_fit_loss(net(res.data.x), res.data.labels, "mse")
        total = fit + network_penalty(net, cfg.lambda_W, cfg.lambda_H)
        assert res.fit_losses[snap.epoch] == pytest.approx(fit.item(), rel=1e-12)
        assert res.losses[snap.epoch] == pytest.approx(total.item(), rel=1e-12)
        assert snap.loss == pytest.approx(total.item(), rel=1e-12)
    # the last snapshot is the returned model
    torch.testing.assert_close(model_at(res.model, res.snapshots[-1].value)(res.data.x), res.model(res.data.x),
                               rtol=0, atol=0)
    assert res.losses[-1] < 0.7 * res.losses[0]


def test_log_spaced_snapshots_and_callback_values_are_kept():
    cfg = SMALL.replace(epochs=100)
    seen = []

    def cb(epoch, model):
        seen.append(model.training)
        return epoch * 10

    res = train_network(cfg, snapshot_epochs=5, callback=cb, progress=False)
    epochs = list(res.snapshot_epochs())
    assert epochs[0] == 0 and epochs[-1] == 100 and epochs == sorted(set(epochs)) and len(epochs) >= 4
    assert [s.value for s in res.snapshots] == [10 * e for e in epochs]
    assert all(seen)


def test_same_seed_same_loss_curve_other_seed_other_curve():
    a = train_network(SMALL, progress=False, snapshot_epochs=[])
    b = train_network(SMALL, progress=False, snapshot_epochs=[])
    c = train_network(SMALL.replace(seed=1), progress=False, snapshot_epochs=[])
    assert np.array_equal(a.losses, b.losses) and np.array_equal(a.fit_losses, b.fit_losses)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert not np.allclose(a.losses, c.losses, rtol=1e-3)


def test_initialisation_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_network(SMALL)
    assert torch.equal(torch.rand(3), expected)


def test_mini_batches_are_seeded_and_the_start_is_the_full_objective():
    cfg = SMALL.replace(batch_size=16, epochs=5)
    a = train_network(cfg, progress=False, snapshot_epochs=[])
    b = train_network(cfg, progress=False, snapshot_epochs=[])
    full = train_network(cfg.replace(batch_size=None, epochs=0), progress=False, snapshot_epochs=[])
    assert np.array_equal(a.losses, b.losses) and a.losses.shape == (6,)
    assert a.losses[0] == pytest.approx(full.losses[0], rel=1e-13)
    assert not np.allclose(a.losses[1:], train_network(cfg.replace(batch_size=40), progress=False,
                                                       snapshot_epochs=[]).losses[1:], rtol=1e-6)


def test_cross_entropy_and_relu_head_train():
    cfg = SMALL.replace(loss="ce", activation="relu", epochs=150, lr=0.2)
    res = train_network(cfg, progress=False, snapshot_epochs=[])
    assert res.fit_losses[-1] < 0.3 * res.fit_losses[0]
    assert res.accuracy() >= 0.9


def test_divergence_names_the_learning_rate():
    with pytest.raises(TrainingDivergedError, match=r"learning rate lr=1000\.0"):
        train_network(SMALL.replace(lr=1000.0, epochs=200), progress=False, snapshot_epochs=[])


def test_data_is_cast_to_the_configured_dtype():
    data = load_dataset("digits", n_per_class=10, classes=(0, 1, 2, 3), dtype=torch.float32)
    res = train_network(SMALL.replace(epochs=3), data=data, progress=False, snapshot_epochs=[])
    assert res.data.x.dtype == F64 and next(res.model.parameters()).dtype == F64
    assert 0.0 <= res.accuracy(data) <= 1.0


def test_wrong_data_is_rejected():
    other = load_dataset("digits", n_per_class=10, classes=(0, 1, 2), dtype=F64)
    with pytest.raises(ValueError, match="^data must have K = 4"):
        train_network(SMALL, data=other, progress=False)
    with pytest.raises(ValueError, match="^model must be a HeadedNetwork"):
        train_network(SMALL, model=nn.Linear(64, 4), progress=False)
    with pytest.raises(ValueError, match="^check_every must be"):
        train_network(SMALL, check_every=0, progress=False)
