"""Real networks: a backbone followed by the deep-UFM head (the deep-network experiments of v2/v3).

Sources and settings: book appendix *How each statement was rebuilt* (sources-real-networks).

The deep unconstrained feature model (book page *Setting and notation*) replaces everything
below the last ``L`` layers of a classifier by free features ``H_1``. Here the features are real: an input ``x``
passes through a **backbone** ``h(x) ∈ ℝ^d`` (an MLP, or a torchvision ResNet adapted to small
images) whose output plays the role of ``H_1``, and then through a **head** of ``L`` bias-free
``nn.Linear`` layers ``W_1..W_L`` (``d x d``, ..., ``d x d``, ``K x d``), exactly the deep
UFM's weights; between head layers there is either nothing (``activation="linear"``) or a
ReLU (``"relu"``), and nothing after ``W_L`` (as in the UFM's ReLU model). The head layers are
``model.head[0] .. model.head[L-1]`` (module names ``"head.0" .. "head.{L-1}"``), which is all
:func:`ufmlib.analysis.analyze_classifier` needs to know.

Training objective (the UFM's v1 Eq. (1), with real features):

    𝓛 = ℓ(Z, Y) + (λ_W/2) Σ_l ||W_l||_F² + (λ_H/2) Σ_{θ ∈ backbone} ||θ||²,

``ℓ = (1/2N) ||Z - Y||_F²`` on one-hot targets (``loss="mse"``) or the mean cross-entropy
(``"ce"``). The split of weight decay is the UFM's: ``λ_W`` on the head weights, and ``λ_H`` on
*all* backbone parameters as the stand-in for the UFM's feature penalty ``(λ_H/2)||H_1||²``
(the feature penalty on ``H_1`` is the UFM's stand-in for weight decay on the backbone). The
penalty is part of the loss that is differentiated, so the recorded loss is exactly the
objective being minimised (plain SGD with ``weight_decay`` would give the same steps).

Optimiser (companion's choice; the paper's real-network settings are not known, see the book
appendix *How each statement was rebuilt*, sources-conventions): plain gradient descent
``θ ← θ - lr ∇𝓛`` - full batch by default, or mini-batches in a seeded random order each epoch
(``batch_size``); SGD momentum is available but off by default. The same authors' follow-up
paper (Garrod & Keating, arXiv 2410.23169) uses head width ``d = 64``, ``L = 3-4``,
``λ_W = 5·10⁻³`` on the head, ``λ_H = 10⁻⁶`` on the backbone and ``lr = 0.05`` with batches of 10,000 ("approximately gradient descent"). The defaults of
:class:`NetworkConfig` are sized for the offline ``digits`` data set on one CPU core (all 10
classes, 30 per class, MLP backbone 64 -> 64 -> 32, linear head ``L = 3``, ``d = 32``, MSE,
full batch, ``lr = 0.2``, 4000 epochs, float64). What a run reaches with them (training
accuracy, the fall of NC1, the ``K²`` outliers of the last layer's Hessian and their span) is
checked by ``tests/test_analysis.py`` and reported by the real-network chapter, not here.

Initialisation is seeded: the backbone is built under ``torch.manual_seed(seed)`` inside
:func:`torch.random.fork_rng` (the caller's global generator is left untouched), the head
weights are drawn ``N(0, 1/d_in)`` (the UFM's initialisation, :func:`ufmlib.model.init_params`)
from ``torch.Generator().manual_seed(seed + 1)``, and mini-batch orders from
``torch.Generator().manual_seed(seed + 2)``. The same configuration therefore gives the same
loss curve (on the same device and library versions).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # the text bar: tqdm.auto warns in kernels without ipywidgets

from .config import ConfigError, resolve_device, resolve_dtype
from .data import DATASETS, ClassData, load_dataset
from .train import Snapshot, TrainingDivergedError, log_epochs
from .validation import check_int, check_positive

__all__ = [
    "BACKBONES",
    "NetworkConfig",
    "HeadedNetwork",
    "NetworkTrainResult",
    "build_network",
    "load_network_data",
    "network_fit_loss",
    "network_penalty",
    "train_network",
    "model_at",
]

BACKBONES = ("mlp", "resnet")
ACTIVATIONS = ("linear", "relu")
LOSSES = ("mse", "ce")


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class NetworkConfig:
    """A backbone + deep-UFM-head classifier and how to train it (book chapter ``real_networks``).

    Parameters
    ----------
    dataset : a name known to :func:`ufmlib.data.load_dataset` (``"digits"`` works offline).
    n_per_class : training samples per class (balanced, class-ordered).
    classes : original class ids to keep (their order defines labels ``0..K-1``); default all.
    backbone : ``"mlp"`` (fully connected, ReLU) or ``"resnet"`` (torchvision ResNet-18 with a
        3x3 stride-1 first convolution and no max-pool, ``weights=None``: never downloaded).
    widths : hidden widths of the MLP backbone (its last linear layer maps to ``d``); ignored
        for ``"resnet"``.
    L : number of head layers ``W_1..W_L`` (``>= 1``).
    d : head width; the backbone outputs ``d`` features; ``d >= K``.
    activation : ``"linear"`` or ``"relu"`` between head layers (none after ``W_L``).
    loss : ``"mse"`` (``(1/2N)||Z - Y||_F²``, one-hot) or ``"ce"`` (mean cross-entropy).
    lambda_W : weight decay of the head weights (``> 0``).
    lambda_H : weight decay of every backbone parameter, the UFM's ``λ_H`` stand-in (``> 0``).
    lr : learning rate (``> 0``); epochs : number of passes over the data (``>= 0``).
    batch_size : ``None`` for full-batch gradient descent, else the mini-batch size (``<= N``).
    momentum : SGD momentum in ``[0, 1)``; ``0`` (default) is plain gradient descent.
    dtype : ``"float32"`` or ``"float64"``; device : ``"cpu"``, ``"cuda"``, ``"auto"``, ...
    seed : seeds the data subset, the initialisation and the batch order.
    data_root : folder of the torchvision files (unused for ``digits``).
    """

    dataset: str = "digits"
    n_per_class: int = 30
    classes: tuple[int, ...] | None = None
    backbone: str = "mlp"
    widths: tuple[int, ...] = (64,)
    L: int = 3
    d: int = 32
    activation: str = "linear"
    loss: str = "mse"
    lambda_W: float = 5e-3
    lambda_H: float = 1e-4
    lr: float = 0.2
    epochs: int = 4000
    batch_size: int | None = None
    momentum: float = 0.0
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    data_root: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or self.dataset.lower() not in DATASETS:
            raise ConfigError("dataset", f"one of {sorted(DATASETS)}", self.dataset)
        object.__setattr__(self, "dataset", self.dataset.lower())
        n_all = DATASETS[self.dataset][1]
        check_int("n_per_class", self.n_per_class, 1)
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, Iterable):
                raise ConfigError("classes", "a sequence of class ids or None", self.classes)
            cls = tuple(self.classes)
            ok = all(not isinstance(c, bool) and isinstance(c, Integral) and 0 <= c < n_all for c in cls)
            if len(cls) < 2 or not ok or len(set(cls)) != len(cls):
                raise ConfigError("classes", f"at least 2 distinct ids in 0..{n_all - 1}", self.classes)
            object.__setattr__(self, "classes", tuple(int(c) for c in cls))
        if self.backbone not in BACKBONES:
            raise ConfigError("backbone", f"one of {BACKBONES}", self.backbone)
        if isinstance(self.widths, (str, bytes)) or not isinstance(self.widths, Iterable):
            raise ConfigError("widths", "a sequence of positive integers", self.widths)
        widths = tuple(self.widths)
        for w in widths:
            check_int("widths", w, 1)
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        check_int("L", self.L, 1)
        check_int("d", self.d, 1)
        if self.d < self.K:
            raise ConfigError("d", f"an integer >= K = {self.K}", self.d)
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"one of {ACTIVATIONS}", self.activation)
        if self.loss not in LOSSES:
            raise ConfigError("loss", f"one of {LOSSES}", self.loss)
        check_positive("lambda_W", self.lambda_W)
        check_positive("lambda_H", self.lambda_H)
        check_positive("lr", self.lr)
        check_int("epochs", self.epochs, 0)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
            if self.batch_size > self.N:
                raise ConfigError("batch_size", f"None or an integer in 1..N = {self.N}", self.batch_size)
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, Real) or not 0.0 <= m < 1.0:
            raise ConfigError("momentum", "a number in [0, 1)", m)
        resolve_dtype(self.dtype)
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", str(self.dtype).replace("torch.", ""))
        if not isinstance(self.device, (str, torch.device)):
            raise ConfigError("device", "a device name such as 'cpu', 'cuda' or 'auto'", self.device)
        check_int("seed", self.seed, 0)
        if not isinstance(self.data_root, str):
            raise ConfigError("data_root", "a folder path (str)", self.data_root)

    @property
    def K(self) -> int:
        """Number of classes."""
        return DATASETS[self.dataset][1] if self.classes is None else len(self.classes)

    @property
    def N(self) -> int:
        """Number of training samples ``K n``."""
        return self.K * self.n_per_class

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def replace(self, **changes: Any) -> "NetworkConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


# ----------------------------------------------------------------------------- model
class HeadedNetwork(nn.Module):
    """``logits = W_L σ(⋯ σ(W_2 σ(W_1 h(x))))`` with ``h`` = ``backbone`` and ``W_l`` = ``head[l-1]``.

    ``σ`` is the identity (``activation="linear"``) or a ReLU, applied between head layers only
    (as in the UFM's ReLU model). ``head`` is an ``nn.ModuleList`` of bias-free ``nn.Linear`` layers, so the
    head layers are named ``"head.0" .. "head.{L-1}"`` (:attr:`head_layer_names`).
    """

    def __init__(self, backbone: nn.Module, head: Sequence[nn.Linear], activation: str = "linear"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        for i, layer in enumerate(head):
            if not isinstance(layer, nn.Linear) or layer.bias is not None:
                raise ValueError(f"head[{i}] must be a bias-free nn.Linear")
        self.backbone = backbone
        self.head = nn.ModuleList(head)
        self.activation = activation

    @property
    def L(self) -> int:
        return len(self.head)

    @property
    def head_layer_names(self) -> list[str]:
        """Module names of ``W_1..W_L`` for :func:`ufmlib.analysis.analyze_classifier`."""
        return [f"head.{i}" for i in range(len(self.head))]

    def head_parameters(self) -> list[nn.Parameter]:
        return [layer.weight for layer in self.head]

    def forward(self, x: Tensor) -> Tensor:
        h = self.backbone(x)
        for i, layer in enumerate(self.head):
            h = layer(h)
            if i < len(self.head) - 1 and self.activation == "relu":
                h = F.relu(h)
        return h


def _mlp(in_features: int, widths: Sequence[int], d: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_features
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, d))  # features h(x) = H_1: unconstrained sign, as in the UFM
    return nn.Sequential(nn.Flatten(), *layers)


def _resnet(in_channels: int, d: int) -> nn.Module:
    try:
        from torchvision.models import resnet18
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backbone='resnet' needs torchvision: pip install 'ufmlib[data]'") from exc
    net = resnet18(weights=None, num_classes=d)  # never downloads weights
    # small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR): 3x3 stride-1 stem, no max-pool
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net  # its fc (512 -> d, with bias) produces the features H_1


def build_network(cfg: NetworkConfig, *, input_shape: Sequence[int] | None = None) -> HeadedNetwork:
    """The seeded, untrained network of ``cfg`` (on ``cfg.device`` in ``cfg.dtype``).

    ``input_shape`` is the shape of one sample (default: the data set's ``(C, H, W)``); the MLP
    flattens it.
    """
    C, H, W = DATASETS[cfg.dataset][2]
    shape = tuple(input_shape) if input_shape is not None else (C, H, W)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.backbone == "mlp":
            backbone = _mlp(math.prod(shape), cfg.widths, cfg.d)
        else:
            if len(shape) != 3:
                raise ValueError(f"input_shape must be (C, H, W) for backbone='resnet'; got {shape}")
            backbone = _resnet(shape[0], cfg.d)
        dims = [cfg.d] * cfg.L + [cfg.K]
        head = [nn.Linear(dims[l], dims[l + 1], bias=False) for l in range(cfg.L)]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for l, layer in enumerate(head):  # N(0, 1/d_in), the UFM's initialisation
            layer.weight.copy_(torch.randn(dims[l + 1], dims[l], generator=gen) / math.sqrt(dims[l]))
    model = HeadedNetwork(backbone, head, cfg.activation)
    return model.to(device=cfg.torch_device, dtype=cfg.torch_dtype)


def load_network_data(cfg: NetworkConfig, *, train: bool = True, stats=None) -> ClassData:
    """The balanced, class-ordered, standardised training (or test) data of ``cfg``.

    Flattened rows for the MLP, ``(N, C, H, W)`` images for the ResNet; on ``cfg.device`` in
    ``cfg.dtype``; the subset is drawn with ``cfg.seed`` (:func:`ufmlib.data.load_dataset`).
    """
    return load_dataset(cfg.dataset, root=cfg.data_root, n_per_class=cfg.n_per_class, classes=cfg.classes,
                        train=train, flatten=cfg.backbone == "mlp", seed=cfg.seed, device=cfg.torch_device,
                        dtype=cfg.torch_dtype, stats=stats)


# ----------------------------------------------------------------------------- losses
def network_fit_loss(logits: Tensor, labels: Tensor, loss: str = "mse") -> Tensor:
    """Fit term ``ℓ``: ``(1/2N)||Z - Y||_F²`` with one-hot ``Y`` (``"mse"``) or mean cross-entropy.

    ``logits`` is ``(N, K)`` (samples as rows), ``labels`` ``(N,)`` class indices.
    """
    if loss == "mse":
        Y = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return 0.5 * (logits - Y).pow(2).sum() / logits.shape[0]
    if loss == "ce":
        return F.cross_entropy(logits, labels)
    raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")


def network_penalty(model: HeadedNetwork, lambda_W: float, lambda_H: float) -> Tensor:
    """``(λ_W/2) Σ_l ||W_l||_F² + (λ_H/2) Σ_{θ ∈ backbone} ||θ||²`` (the UFM's feature penalty, moved to the backbone)."""
    head = sum(W.pow(2).sum() for W in model.head_parameters())
    back = sum(p.pow(2).sum() for p in model.backbone.parameters())
    return 0.5 * lambda_W * head + 0.5 * lambda_H * back


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True, eq=False)
class NetworkTrainResult:
    """Outcome of :func:`train_network`.

    ``losses[e]`` / ``fit_losses[e]``: regularised loss 𝓛 / fit term ℓ after ``e`` epochs
    (``e = 0..epochs``). Full batch: exact values at the parameters after ``e`` steps.
    Mini-batch: ``e = 0`` is exact, ``e >= 1`` the mean over the batches of epoch ``e``
    (each at the parameters before its step). ``snapshots``: :class:`ufmlib.train.Snapshot`
    ``(epoch, loss, value)`` where ``value`` is the callback's return value or, without a
    callback, a CPU copy of ``model.state_dict()`` (restore with :func:`model_at`).
    ``model`` is the trained network, ``data`` the training data it saw.
    """

    model: HeadedNetwork
    data: ClassData
    config: NetworkConfig
    losses: np.ndarray
    fit_losses: np.ndarray
    snapshots: tuple[Snapshot, ...]
    lr: float
    epochs: int

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    def snapshot_epochs(self) -> np.ndarray:
        return np.array([s.epoch for s in self.snapshots])

    def accuracy(self, data: ClassData | None = None) -> float:
        """Fraction of samples of ``data`` (default the training data) classified correctly."""
        data = self.data if data is None else data
        p = next(self.model.parameters())
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            pred = self.model(data.x.to(device=p.device, dtype=p.dtype)).argmax(dim=1)
        self.model.train(was)
        return float((pred.cpu() == data.labels.cpu()).double().mean())


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def model_at(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with the parameters/buffers of a snapshot ``state`` (``state_dict``)."""
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out


def train_network(
    cfg: NetworkConfig,
    *,
    data: ClassData | None = None,
    model: HeadedNetwork | None = None,
    snapshot_epochs: Iterable[int] | int | None = None,
    callback: Callable[[int, HeadedNetwork], Any] | None = None,
    progress: bool = True,
    divergence_factor: float = 1e3,
    check_every: int = 50,
) -> NetworkTrainResult:
    """Train ``cfg``'s network by (full- or mini-batch) gradient descent into the terminal phase.

    Parameters
    ----------
    cfg : the network and its training settings (see :class:`NetworkConfig`).
    data : training data (default :func:`load_network_data` ``(cfg)``).
    model : a network to continue training, trained **in place** (default
        :func:`build_network` ``(cfg)``).
    snapshot_epochs : epochs at which a snapshot is taken; an integer ``m`` means ``m``
        log-spaced epochs (:func:`ufmlib.train.log_epochs`); default 30 log-spaced epochs.
    callback : ``callback(epoch, model)`` at each snapshot epoch; its return value is kept
        (the model is in training mode and must not be modified). Without a callback a CPU
        ``state_dict`` copy is kept.
    progress : show a tqdm progress bar.
    divergence_factor : the run fails when the loss is not finite or exceeds this factor times
        ``max(1, initial loss)``; checked at snapshots, at the end, every ``check_every`` epochs.

    Raises
    ------
    TrainingDivergedError : the message names the learning rate ``lr``.
    """
    check_every = check_int("check_every", check_every, 1)
    divergence_factor = check_positive("divergence_factor", divergence_factor)
    data = load_network_data(cfg) if data is None else data
    if not isinstance(data, ClassData):
        raise ValueError(f"data must be a ufmlib.data.ClassData; got {type(data).__name__}")
    if data.K != cfg.K:
        raise ValueError(f"data must have K = {cfg.K} classes (cfg); got {data.K}")
    data = data.to(device=cfg.torch_device, dtype=cfg.torch_dtype)
    x, y = data.x, data.labels
    if model is None:
        model = build_network(cfg, input_shape=tuple(x.shape[1:]))
    elif not isinstance(model, HeadedNetwork):
        raise ValueError(f"model must be a HeadedNetwork (see build_network); got {type(model).__name__}")
    else:
        model.to(device=cfg.torch_device, dtype=cfg.torch_dtype)
    if snapshot_epochs is None:
        snapshot_epochs = 30
    if isinstance(snapshot_epochs, (int, np.integer)):
        snapshot_epochs = log_epochs(cfg.epochs, int(snapshot_epochs))
    wanted = sorted({int(e) for e in snapshot_epochs if 0 <= int(e) <= cfg.epochs})

    params = [{"params": model.head_parameters()}, {"params": list(model.backbone.parameters())}]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    N = x.shape[0]
    batch = N if cfg.batch_size is None else cfg.batch_size
    order_gen = torch.Generator().manual_seed(cfg.seed + 2)
    losses = torch.zeros(cfg.epochs + 1, dtype=torch.float64, device=x.device)
    fits = torch.zeros_like(losses)
    snapshots: list[Snapshot] = []
    limit = math.inf

    def objective(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        fit = network_fit_loss(model(xb), yb, cfg.loss)
        return fit + network_penalty(model, cfg.lambda_W, cfg.lambda_H), fit

    def check(epoch: int, value: float) -> None:
        if not math.isfinite(value) or value > limit:
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch} (loss {value:.3g}) with learning rate lr={cfg.lr}; "
                "try a smaller lr")

    def snapshot(epoch: int, value: float) -> None:
        out = callback(epoch, model) if callback is not None else _state_copy(model)
        model.train()
        snapshots.append(Snapshot(epoch, value, out))

    model.train()
    bar = tqdm(total=cfg.epochs, disable=not progress, desc="training", unit="epoch", mininterval=0.5)
    try:
        for epoch in range(cfg.epochs + 1):
            if batch == N:  # full batch: the loss at the current parameters, then the step
                loss, fit = objective(x, y)
                losses[epoch], fits[epoch] = loss.detach(), fit.detach()
                if epoch == 0:
                    limit = divergence_factor * max(1.0, loss.item())
                    check(0, loss.item())
                if wanted and wanted[0] == epoch:
                    wanted.pop(0)
                    check(epoch, loss.item())
                    snapshot(epoch, loss.item())
                if epoch == cfg.epochs:
                    check(epoch, loss.item())
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                if epoch == 0:  # the starting objective; batch-norm running statistics are restored
                    buffers = {k: b.clone() for k, b in model.named_buffers()}
                    with torch.no_grad():
                        loss, fit = objective(x, y)
                    for k, b in model.named_buffers():
                        b.copy_(buffers[k])
                    losses[0], fits[0] = loss, fit
                    limit = divergence_factor * max(1.0, loss.item())
                    check(0, loss.item())
                else:
                    perm = torch.randperm(N, generator=order_gen).to(x.device)
                    tot = torch.zeros((), dtype=torch.float64, device=x.device)
                    tot_fit = torch.zeros_like(tot)
                    for start in range(0, N, batch):
                        idx = perm[start : start + batch]
                        loss, fit = objective(x[idx], y[idx])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        w = idx.numel() / N
                        tot += w * loss.detach()
                        tot_fit += w * fit.detach()
                    losses[epoch], fits[epoch] = tot, tot_fit
                if wanted and wanted[0] == epoch:
                    wanted.pop(0)
                    check(epoch, float(losses[epoch]))
                    snapshot(epoch, float(losses[epoch]))
                if epoch == cfg.epochs:
                    check(epoch, float(losses[epoch]))
                    break
            if epoch % check_every == 0:
                value = float(losses[epoch])
                check(epoch, value)
                bar.set_postfix(loss=f"{value:.6g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    model.eval()
    return NetworkTrainResult(model=model, data=data, config=cfg, losses=losses.cpu().numpy(),
                              fit_losses=fits.cpu().numpy(), snapshots=tuple(snapshots), lr=float(cfg.lr),
                              epochs=cfg.epochs)
