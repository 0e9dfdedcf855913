"""Property-based tests (hypothesis) of the validation layer, the closed form and ``ufm predict``.

Valid configurations (K in 2..12, n in 1..200, L in 1..12, every λ log-uniform in
[1e-10, 1], λ_W one number or one per layer, d in K..K+20) must give, through
:func:`ufmlib.optimum.dnc_optimum` (R1, v1 Eq. (2)) either

* a global DNC minimiser: γ finite in ((L-1)/(2L), 1) - indeed γ > (L-1)/L, where the loss drops
  below 1/2 - solving (★) γ^{L-1}(1-γ)^{L+1} = K^{L+1} n λ_H Π_l λ_l to 1e-10 in log form, with
  loss (1-γ)(1+Lγ)/2 < 1/2, t = γ(1-γ)/K = λ_l s_l² = λ_H s_H², layer-Hessian outliers
  λ_l γ/(1-γ) (R2, v1 Thm 4.1), Gram eigenvalues s_l² (R5, v1 Thm 4.4) and a logit class mean
  ||μ^{(L+1)}|| = s_H/√n · Π_l s_l = γ; or
* no DNC minimiser (loss 1/2, every DNC quantity NaN),

in agreement with condition (2) away from its boundary; ``ufm predict --json`` (run in process
through :func:`ufmlib.cli.main`) prints strict JSON (no NaN/Infinity tokens) with the same
numbers. Invalid values (K < 2, non-integers, λ that are negative, zero, infinite or NaN, a λ_W
list of the wrong length, d < K, garbage strings) give :class:`ufmlib.config.ConfigError` /
exit status 2 with one line naming the parameter - never another exception.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

from ufmlib.cli import main
from ufmlib.config import ConfigError, UFMConfig
from ufmlib.optimum import NoDNCMinimiserError, condition, dnc_optimum

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REL = 1e-12  # relative tolerance of identities that are a few float64 operations
LOG_STAR = 1e-10  # (★) in log form, relative to max(1, |log rhs|)

# ----------------------------------------------------------------------------------------
# strategies

exponents = st.floats(min_value=-10.0, max_value=0.0, allow_nan=False, allow_infinity=False)
lambdas = exponents.map(lambda e: 10.0**e)  # log-uniform in [1e-10, 1]


@st.composite
def valid_configs(draw) -> dict:
    K = draw(st.integers(2, 12))
    n = draw(st.integers(1, 200))
    L = draw(st.integers(1, 12))
    d = draw(st.integers(K, K + 20))
    if draw(st.booleans()):
        lambda_W = draw(lambdas)
    else:
        lambda_W = tuple(draw(st.lists(lambdas, min_size=L, max_size=L)))
    return {"K": K, "n": n, "L": L, "d": d, "lambda_W": lambda_W, "lambda_H": draw(lambdas)}


@st.composite
def near_threshold_configs(draw) -> dict:
    """Valid configurations whose condition (2) misses equality by a factor 1 ± 10^-12..10^-3."""
    cfg = draw(valid_configs())
    L = cfg["L"]
    lhs, rhs = condition(cfg["K"], cfg["n"], L, cfg["lambda_W"], cfg["lambda_H"])
    ratio = draw(st.sampled_from([-1.0, 1.0])) * 10.0 ** draw(st.floats(min_value=-12.0, max_value=-3.0))
    # lhs scales as lambda_H^(1/L): move lambda_H so that lhs = rhs * (1 + ratio)
    lambda_H = cfg["lambda_H"] * ((rhs / lhs) * (1.0 + ratio)) ** L
    assume(1e-300 < lambda_H < 1e300)
    return {**cfg, "lambda_H": lambda_H}


def _flag_args(cfg: dict) -> list[str]:
    lw = cfg["lambda_W"]
    lw_text = ",".join(repr(x) for x in lw) if isinstance(lw, tuple) else repr(lw)
    return ["predict", "--K", str(cfg["K"]), "--n", str(cfg["n"]), "--L", str(cfg["L"]), "--d", str(cfg["d"]),
            "--lambda-W", lw_text, "--lambda-H", repr(cfg["lambda_H"])]


def _strict_json(text: str):
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token!r}")

    return json.loads(text, parse_constant=reject)


def _close(a: float, b: float, rel: float = REL) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel * max(abs(a), abs(b))


# ----------------------------------------------------------------------------------------
# the closed form


def _check_optimum(cfg: dict) -> None:
    conf = UFMConfig(**cfg)
    opt = dnc_optimum(conf)
    K, n, L, lws, lam_H = conf.K, conf.n, conf.L, conf.lambda_Ws, conf.lambda_H
    lhs, rhs = condition(K, n, L, lws, lam_H)
    assert (opt.condition_lhs, opt.condition_rhs) == (lhs, rhs)
    event("DNC minimiser" if opt.is_global else "no DNC minimiser")
    if lhs < rhs * (1 - 1e-9):
        assert opt.is_global, (lhs, rhs)
    if lhs > rhs * (1 + 1e-9):
        assert not opt.is_global, (lhs, rhs)
    if not opt.is_global:
        assert opt.optimal_loss == 0.5
        assert opt.as_dict()["layer_hessian_outlier"] == [None] * L and opt.as_dict()["gamma"] is None
        with pytest.raises(NoDNCMinimiserError):
            opt.gamma
        return
    g, u = opt.gamma, opt.one_minus_gamma
    assert math.isfinite(g) and (L - 1) / (2 * L) < g < 1 and 0 < u < 1
    assert g > (L - 1) / L - 1e-12  # the DNC point beats zero only above (L-1)/L
    assert abs((g + u) - 1.0) <= 4e-16
    # (★) in log form: (L-1) log γ + (L+1) log(1-γ) = (L+1) log K + log n + log λ_H + Σ log λ_l
    log_rhs = (L + 1) * math.log(K) + math.log(n) + math.log(lam_H) + sum(math.log(x) for x in lws)
    log_lhs = (L - 1) * math.log(g) + (L + 1) * math.log(u)
    assert abs(log_lhs - log_rhs) <= LOG_STAR * max(1.0, abs(log_rhs)), (log_lhs, log_rhs)
    assert opt.optimal_loss <= 0.5 and g * (1 - L * u) > 0  # the loss may round to 1/2 at the threshold
    assert _close(opt.optimal_loss, u * (1 + L * g) / 2)
    t = g * u / K
    assert _close(opt.t, t)
    for lam, s, out, gram in zip(lws, opt.weight_singular_values, opt.layer_hessian_outlier, opt.gram_eigenvalue):
        assert _close(lam * s * s, t)
        assert _close(out, lam * g / u)
        assert _close(gram, s * s)
    assert _close(lam_H * opt.feature_singular_value**2, t)
    assert _close(opt.feature_norms[-1], g, rel=1e-10)  # the logit class mean is γ
    assert len(opt.feature_norms) == L + 1


@SETTINGS
@given(valid_configs())
def test_valid_configurations_give_the_closed_form_or_no_dnc_minimiser(cfg):
    _check_optimum(cfg)


@settings(max_examples=25, deadline=None)
@given(near_threshold_configs())
def test_near_the_threshold_the_closed_form_stays_consistent(cfg):
    _check_optimum(cfg)


# ----------------------------------------------------------------------------------------
# ufm predict


@SETTINGS
@given(valid_configs())
def test_predict_json_is_strict_finite_and_matches_the_closed_form(capsys, cfg):
    capsys.readouterr()
    assert main([*_flag_args(cfg), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = _strict_json(captured.out)
    opt = dnc_optimum(UFMConfig(**cfg))
    assert out["condition_holds"] is opt.is_global
    event("DNC minimiser" if opt.is_global else "no DNC minimiser")
    assert (out["K"], out["n"], out["L"], out["d"]) == (cfg["K"], cfg["n"], cfg["L"], cfg["d"])
    if not opt.is_global:
        assert out["optimal_loss"] == 0.5
        assert out["layer_hessian_outlier"] == [None] * cfg["L"]
        return
    assert out["gamma"] == opt.gamma and out["optimal_loss"] == opt.optimal_loss
    assert out["layer_hessian_outlier"] == list(opt.layer_hessian_outlier)
    numbers = []

    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, float):
            numbers.append((path, x))
        elif x is None:
            assert path.endswith(".split"), f"{path} is null at a DNC minimiser"

    walk(out, "")
    assert all(math.isfinite(x) for _, x in numbers)
    for layer, lam in zip(out["layers"], UFMConfig(**cfg).lambda_Ws):
        assert _close(layer["layer_hessian"]["outlier"], lam * opt.gamma / opt.one_minus_gamma)
        assert _close(layer["weight_gram"]["value"], layer["weight_singular_value"] ** 2)
    assert all(lev["level"] > 0 for lev in out["full_hessian_levels"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_configs())
def test_predict_text_output_runs(capsys, cfg):
    capsys.readouterr()
    assert main(_flag_args(cfg)) == 0
    text = capsys.readouterr().out
    assert text.startswith("deep linear UFM") and ("gamma" in text or "no neural collapse" in text)


# ----------------------------------------------------------------------------------------
# invalid input


FLAGS = {"K": "--K", "n": "--n", "L": "--L", "d": "--d", "lambda_W": "--lambda-W", "lambda_H": "--lambda-H"}
bad_lambda_values = st.one_of(
    st.floats(max_value=0.0, allow_nan=False),  # zero and negative (including -inf)
    st.sampled_from([math.inf, math.nan, -math.nan]),
)
no_digits = st.characters(blacklist_categories=("Nd", "Cs"))
garbage = st.text(alphabet=no_digits, max_size=12)  # no decimal digit: only "inf"/"nan" can read as a number


@st.composite
def invalid_configs(draw) -> tuple[dict, str]:
    """A valid configuration with exactly one parameter made invalid, and that parameter."""
    cfg = dict(draw(valid_configs()))
    kind = draw(st.sampled_from(["K", "n", "L", "d", "int_type", "lambda_W", "lambda_W_item", "lambda_W_len", "lambda_H"]))
    if kind == "K":
        cfg["K"] = draw(st.integers(-5, 1))
        cfg["d"] = max(cfg["d"], 1)
        return cfg, "K"
    if kind == "n":
        cfg["n"] = draw(st.integers(-5, 0))
        return cfg, "n"
    if kind == "L":
        cfg["L"], cfg["lambda_W"] = draw(st.integers(-5, 0)), 0.01
        return cfg, "L"
    if kind == "d":
        cfg["d"] = draw(st.integers(1, cfg["K"] - 1)) if cfg["K"] > 1 else 0
        return cfg, "d"
    if kind == "int_type":
        name = draw(st.sampled_from(["K", "n", "L", "d"]))
        cfg[name] = draw(st.one_of(st.floats().filter(lambda x: not math.isfinite(x) or x != int(x)),
                                   st.booleans(), st.text(alphabet=no_digits, max_size=4)))
        return cfg, name
    if kind == "lambda_W":
        cfg["lambda_W"] = draw(bad_lambda_values)
        return cfg, "lambda_W"
    if kind == "lambda_W_item":
        values = [0.01] * cfg["L"]
        values[draw(st.integers(0, cfg["L"] - 1))] = draw(bad_lambda_values)
        cfg["lambda_W"] = tuple(values)
        return cfg, "lambda_W"
    if kind == "lambda_W_len":
        length = draw(st.integers(2, 14).filter(lambda m: m != cfg["L"]))
        cfg["lambda_W"] = tuple([0.01] * length)
        return cfg, "lambda_W"
    cfg["lambda_H"] = draw(bad_lambda_values)
    return cfg, "lambda_H"


@SETTINGS
@given(invalid_configs())
def test_invalid_configurations_raise_config_error_naming_the_parameter(case):
    cfg, name = case
    with pytest.raises(ConfigError) as err:
        UFMConfig(**cfg)
    assert err.value.parameter.split("[")[0] == name
    assert str(err.value).startswith(f"{err.value.parameter} must be")


def _cli_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(repr(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


@SETTINGS
@given(invalid_configs())
def test_invalid_predict_input_exits_2_with_one_line_naming_the_flag(capsys, case):
    cfg, name = case
    args = ["predict"] + [f"{FLAGS[key]}={_cli_text(cfg[key])}" for key in ("K", "n", "L", "d", "lambda_W", "lambda_H")]
    _expect_usage_error(capsys, args, FLAGS[name])


@SETTINGS
@given(st.sampled_from(sorted(FLAGS)), garbage)
def test_garbage_strings_exit_2_naming_the_flag(capsys, key, text):
    # "--K=<text>" keeps texts that start with "-" a value of the flag
    _expect_usage_error(capsys, ["predict", f"{FLAGS[key]}={text}"], FLAGS[key])


def _expect_usage_error(capsys, args: list[str], flag: str) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args)
    captured = capsys.readouterr()
    assert exit_.value.code == 2, (args, captured)
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], (args, captured.err)
    assert "Traceback" not in captured.err
