"""Argument checks shared by every module: one place for each rule and its message.

Every check raises :class:`ConfigError` (a :class:`ValueError`) whose message names the
parameter, says what is allowed and shows what was given, ``"<name> must be <allowed>; got
<value>"``, and returns the value converted to the plain Python type.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "epoch_series",
    "ConfigError",
    "check_int",
    "check_positive",
    "check_fraction",
    "check_nonnegative",
    "check_layer",
    "check_c0",
    "check_rtol",
    "check_tol",
    "check_matrix",
    "f64",
    "f64_vector",
]

F64 = torch.float64


class ConfigError(ValueError):
    """A parameter is out of its allowed range; the message names it, the range and the value."""

    def __init__(self, parameter: str, allowed: str, got: Any):
        self.parameter = parameter
        self.allowed = allowed
        self.got = got
        super().__init__(f"{parameter} must be {allowed}; got {got!r}")


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool) in ``minimum..maximum`` (no upper bound when ``maximum`` is None)."""
    allowed = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(name, allowed, value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(name, allowed, value)
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """A positive finite number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(name, "a positive finite number", value)
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, "a positive finite number", value)
    return value


def check_fraction(name: str, value: Any, *, upper: float = 1.0) -> float:
    """A number in ``(0, upper]``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) <= upper:
        raise ConfigError(name, f"a number in (0, {upper:g}]", value)
    return float(value)


def check_layer(layer: Any, top: int, *, name: str = "layer") -> int:
    """A 1-based layer index in ``1..top``."""
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= layer <= top:
        raise ConfigError(name, f"an integer in 1..{top}", layer)
    return int(layer)


def check_c0(value: Any, *, name: str = "relu_prime_at_zero") -> float:
    """The derivative ``ReLU'(0)`` to use at exact kinks: a number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(name, "a number in [0, 1]", value)
    return float(value)


def check_rtol(value: Any, *, name: str = "rtol") -> float:
    """A relative tolerance in the open interval ``(0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise ConfigError(name, "a number in (0, 1)", value)
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    """A number ``>= 0`` (not NaN)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise ConfigError(name, "a number >= 0", value)
    return float(value)


def check_tol(name: str, value: Any) -> float:
    """A positive finite tolerance (absolute or relative, any size)."""
    return check_positive(name, value)


def check_matrix(name: str, M: Any, rows: int | None = None, cols: int | None = None) -> Tensor:
    """A 2-D tensor (optionally with a given number of rows / columns), returned unchanged."""
    if not isinstance(M, Tensor) or M.ndim != 2:
        raise ConfigError(name, "a 2-D tensor", getattr(M, "shape", type(M).__name__))
    if rows is not None and M.shape[0] != rows:
        raise ConfigError(name, f"a tensor with {rows} rows", tuple(M.shape))
    if cols is not None and M.shape[1] != cols:
        raise ConfigError(name, f"a tensor with {cols} columns", tuple(M.shape))
    return M


def f64(t: Tensor) -> Tensor:
    """A detached float64 copy of ``t`` on the CPU (``t`` itself when it already is one)."""
    return t.detach().to(dtype=F64, device="cpu")


def f64_vector(name: str, values: Any) -> Tensor:
    """Numbers (a tensor, an array or a sequence) as a flat float64 CPU tensor."""
    if hasattr(values, "detach"):
        values = values.detach()
    try:
        out = torch.as_tensor(values, dtype=F64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(name, "a sequence of numbers", type(values).__name__) from None
    return out.reshape(-1)


def epoch_series(epochs: Any, values: Any):
    """``(epochs, values)`` as float numpy arrays: ``epochs`` flat, ``values`` with one row per
    epoch (a 1-D ``values`` is one column); ``ValueError`` naming the shapes otherwise."""
    import numpy as np

    x = np.asarray(epochs, dtype=float).ravel()
    y = np.asarray(values, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.size:
        raise ValueError(f"values must have one row per epoch ({x.size}); got shape {np.shape(values)}")
    return x, y
