"""The validated description of a deep unconstrained feature model (v1 Eq. (1)).

A :class:`UFMConfig` fixes everything that defines one deep UFM: the number of classes
``K``, samples per class ``n``, width ``d``, number of weight matrices ``L``, the
activation and loss, the weight-decay strengths ``lambda_W`` (one value or one per layer)
and ``lambda_H``, and the numerical setting (``dtype``, ``device``, ``seed``).

Bad values fail at construction with a :class:`ConfigError` whose message names the
parameter and the allowed range, so that a notebook run with a wrong ``-p`` value stops
before any tensor is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .validation import ConfigError, check_int, check_positive

ACTIVATIONS = ("linear", "relu")
LOSSES = ("mse", "ce")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: Any) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` into a device.

    ``"auto"`` picks CUDA when available, else CPU. An unavailable device raises
    :class:`ConfigError` naming ``device``.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ConfigError("device", "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'", device) from None
    else:
        raise ConfigError("device", "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'", device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "an available device (CUDA is not available here)", device)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "an available device (MPS is not available here)", device)
    return dev


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes) to a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError("dtype", "one of 'float32', 'float64'", dtype)


@dataclass(frozen=True)
class UFMConfig:
    """A deep unconstrained feature model (v1 Eq. (1); notation in the book's setup page).

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    n : samples per class (balanced), ``n >= 1``; ``N = K n``.
    d : width of every hidden layer, ``d >= K``.
    L : number of weight matrices ``W_1..W_L``, ``L >= 1``.
    activation : ``"linear"`` or ``"relu"`` (a ReLU after each of ``W_1..W_{L-1}``).
    loss : ``"mse"`` (``(1/2N)||Z - Y||_F^2``) or ``"ce"`` (mean cross-entropy).
    lambda_W : weight decay of the weights; one positive number or a sequence of ``L``.
    lambda_H : weight decay of the unconstrained features ``H_1``.
    dtype : ``"float32"`` or ``"float64"``.
    device : ``"cpu"``, ``"cuda"``, ... (validated when tensors are made).
    seed : seed of every random draw made from this configuration.
    """

    K: int = 3
    n: int = 40
    d: int = 60
    L: int = 5
    activation: str = "linear"
    loss: str = "mse"
    lambda_W: float | tuple[float, ...] = 0.01
    lambda_H: float = 0.01
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    lambda_Ws: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        K = check_int("K", self.K, 2)
        n = check_int("n", self.n, 1)
        L = check_int("L", self.L, 1)
        d = check_int("d", self.d, 1)
        if d < K:
            raise ConfigError("d", f"an integer >= K = {K}", self.d)
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"one of {ACTIVATIONS}", self.activation)
        if self.loss not in LOSSES:
            raise ConfigError("loss", f"one of {LOSSES}", self.loss)
        if isinstance(self.lambda_W, (list, tuple)):
            if len(self.lambda_W) != L:
                raise ConfigError("lambda_W", f"one number or a list of L = {L} numbers", self.lambda_W)
            lws = tuple(check_positive(f"lambda_W[{i}]", v) for i, v in enumerate(self.lambda_W))
            object.__setattr__(self, "lambda_W", lws)
        else:
            lws = (check_positive("lambda_W", self.lambda_W),) * L
            object.__setattr__(self, "lambda_W", lws[0])
        lambda_H = check_positive("lambda_H", self.lambda_H)
        resolve_dtype(self.dtype)
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", {v: k for k, v in DTYPES.items()}[self.dtype])
        if not isinstance(self.device, (str, torch.device)):
            raise ConfigError("device", "a device name such as 'cpu' or 'cuda'", self.device)
        seed = check_int("seed", self.seed, 0)
        for name, value in (("K", K), ("n", n), ("L", L), ("d", d), ("lambda_H", lambda_H), ("seed", seed)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "lambda_Ws", lws)

    @property
    def N(self) -> int:
        """Number of samples ``K n``."""
        return self.K * self.n

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def layer_shapes(self) -> list[tuple[int, int]]:
        """Shapes of ``W_1..W_L``: ``(d, d)`` for ``l < L`` and ``(K, d)`` for ``W_L``."""
        return [(self.d, self.d)] * (self.L - 1) + [(self.K, self.d)]

    def replace(self, **changes: Any) -> "UFMConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset``."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed + offset)
        return g
