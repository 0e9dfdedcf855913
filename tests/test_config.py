"""Every validation rule of UFMConfig names the parameter (issue: foundation)."""

import math

import pytest
import torch

from ufmlib.config import ConfigError, UFMConfig, resolve_device


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"K": 1}, "K"),
        ({"K": 2.5}, "K"),
        ({"K": True}, "K"),
        ({"n": 0}, "n"),
        ({"n": "4"}, "n"),
        ({"L": 0}, "L"),
        ({"d": 2, "K": 3}, "d"),
        ({"d": -1}, "d"),
        ({"activation": "tanh"}, "activation"),
        ({"loss": "hinge"}, "loss"),
        ({"lambda_W": 0.0}, "lambda_W"),
        ({"lambda_W": -1e-3}, "lambda_W"),
        ({"lambda_W": math.inf}, "lambda_W"),
        ({"lambda_W": math.nan}, "lambda_W"),
        ({"lambda_W": (0.01, 0.01)}, "lambda_W"),
        ({"lambda_W": (0.01, 0.01, 0.01, 0.01, -1.0)}, "lambda_W[4]"),
        ({"lambda_H": 0}, "lambda_H"),
        ({"lambda_H": "big"}, "lambda_H"),
        ({"dtype": "float16"}, "dtype"),
        ({"seed": -1}, "seed"),
        ({"device": 3}, "device"),
    ],
)
def test_bad_value_names_parameter(kwargs, name):
    with pytest.raises(ConfigError) as info:
        UFMConfig(**kwargs)
    assert info.value.parameter == name
    assert str(info.value).startswith(f"{name} must be")


def test_per_layer_lambda_and_defaults():
    cfg = UFMConfig(L=3, lambda_W=[0.1, 0.2, 0.3])
    assert cfg.lambda_Ws == (0.1, 0.2, 0.3)
    assert UFMConfig(L=4, lambda_W=0.5).lambda_Ws == (0.5,) * 4
    assert UFMConfig(K=4, n=7).N == 28
    assert UFMConfig().layer_shapes() == [(60, 60)] * 4 + [(3, 60)]
    assert UFMConfig(dtype=torch.float32).dtype == "float32"


def test_unavailable_device_is_a_named_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda")
    assert info.value.parameter == "device"
    with pytest.raises(ConfigError):
        resolve_device("not-a-device")
    assert resolve_device("auto").type in {"cpu", "cuda"}
