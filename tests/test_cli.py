"""``ufm predict``: the issue's reference output, JSON keys and one-line errors (exit 2)."""

import json
import subprocess
import sys

import pytest

from ufmlib.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "ufmlib.cli", *args], capture_output=True, text=True)


def test_predict_json_reference(capsys):
    assert main(["predict", "--K", "3", "--n", "40", "--L", "5", "--d", "60", "--lambda-W", "0.01", "--lambda-H", "0.01", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert round(out["gamma"], 12) == 0.942277466718
    assert round(out["optimal_loss"], 14) == 0.16483787272448
    for key in ("condition_lhs", "condition_rhs", "weight_singular_values", "layer_hessian_outlier", "full_hessian_levels"):
        assert key in out
    assert len(out["weight_singular_values"]) == 5 and len(out["layer_hessian_outlier"]) == 5
    assert out["layer_hessian_outlier"][0] == pytest.approx(0.01 * out["gamma"] / (1 - out["gamma"]), rel=1e-12)
    levels = {lev["multiplicity"]: lev["level"] for lev in out["full_hessian_levels"]}
    assert levels[3] == pytest.approx(5 * 0.16324256978 + 4 * 0.01, rel=1e-10)
    assert levels[6] == pytest.approx(5 * 0.16324256978 - 4 * 0.01, rel=1e-10)


def test_per_layer_lambda(capsys):
    assert main(["predict", "--L", "3", "--lambda-W", "0.01,0.02,0.04", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    a, b, c = out["layer_hessian_outlier"]
    assert b / a == pytest.approx(2, rel=1e-12) and c / a == pytest.approx(4, rel=1e-12)


def test_condition_violated_is_reported_not_invented(capsys):
    assert main(["predict", "--lambda-W", "0.1", "--lambda-H", "0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["condition_holds"] is False and out["optimal_loss"] == 0.5
    assert out["layer_hessian_outlier"] == [None] * 5


@pytest.mark.parametrize(
    "args, flag",
    [(["--K", "1"], "--K"), (["--K", "x"], "--K"), (["--n", "0"], "--n"), (["--d", "2"], "--d"), (["--L", "0"], "--L"),
     (["--lambda-W", "-1"], "--lambda-W"), (["--lambda-W", "0.1,0.2"], "--lambda-W"), (["--lambda-W", "abc"], "--lambda-W"),
     (["--lambda-H", "nan"], "--lambda-H"), (["--lambda-H", "inf"], "--lambda-H")],
)
def test_invalid_input_one_line_exit_2(args, flag):
    proc = _run("predict", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
    assert "Traceback" not in proc.stderr


def test_console_script_text_output():
    proc = _run("predict")
    assert proc.returncode == 0 and "gamma" in proc.stdout and "0.942277466718" in proc.stdout
