"""``ufm sweep``: every grid point runs once into one tidy table; bad grids are refused before
any kernel starts; a failing point is a row with its error; points are cached like chapters."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from booktools import ROOT
from clustertools import tiny_repo
from ufmlib.book.parameters import ProfileError
from ufmlib.book.sweep import parse_grid, parse_value, sweep
from ufmlib.cli import main
from ufmlib.optimum import dnc_optimum


@pytest.mark.slow
def test_the_optimum_over_K_and_L_is_a_table_of_six_rows_with_the_theory_at_each_point(tmp_path, capsys):
    out = tmp_path / "s"
    code = main(["sweep", "optimum", "--grid", "K=2,3,4", "--grid", "L=2,3", "--profile", "smoke", "--jobs", "2",
                 "--out", str(out), "--root", str(ROOT), "--no-progress"])
    assert code == 0, capsys.readouterr()
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 6 and list(table.columns[:3]) == ["point", "K", "L"]
    assert [tuple(r) for r in table[["K", "L"]].itertuples(index=False)] == [(2, 2), (2, 3), (3, 2), (3, 3), (4, 2), (4, 3)]
    assert set(table["status"]) == {"ok"} and (table["checks"] > 0).all() and (table["checks"] == table["checks_passed"]).all()
    for row in table.itertuples(index=False):  # each point ran at its own K and L
        expected = dnc_optimum(int(row.K), 5, int(row.L), 0.01, 0.01).gamma  # smoke: n = 5
        assert math.isclose(row.gamma, expected, rel_tol=1e-12)
    assert pd.read_csv(out / "results.csv")["gamma"].tolist() == pytest.approx(table["gamma"].tolist(), rel=1e-12)
    again = sweep("optimum", ["K=2,3,4", "L=2,3"], profile="smoke", out=out, root=ROOT, jobs=2, progress=False)
    assert {r["status"] for r in again.rows} == {"up to date"}
    assert [r["gamma"] for r in again.rows] == table["gamma"].tolist()


def test_a_failing_point_is_a_row_with_its_error(tmp_path):
    root = tiny_repo(tmp_path, flag=tmp_path / "unused")
    report = sweep("quick1", {"scale": [1.0, 1000.0], "seed": [0, 1]}, profile="p", out=tmp_path / "out", root=root,
                   progress=False, jobs=2)
    assert report.exit_code == 1
    rows = report.rows
    assert [(r["scale"], r["seed"], r["status"]) for r in rows] == [
        (1.0, 0, "ok"), (1.0, 1, "ok"), (1000.0, 0, "failed"), (1000.0, 1, "failed")]
    assert rows[0]["value"] == 0.25 and rows[1]["value"] == 0.5 and rows[1]["check:double"] is True
    assert rows[2]["error"].startswith("ValueError: value 250.0 is over the limit 100.0")
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert table["status"].tolist() == ["ok", "ok", "failed", "failed"] and math.isnan(table["value"][2])
    assert (tmp_path / "out" / "figures").is_dir() and len(list((tmp_path / "out" / "figures").iterdir())) == 2


@pytest.mark.parametrize("grid, message", [
    (["K=2,3"], "--grid K: notebook 'quick1' has no parameter 'K'; allowed: scale \\(float\\)"),
    (["seed=1,two"], "--grid seed: value 'two' must be int"),
    (["scale=1.0,true"], "--grid scale: value True must be float"),
    (["scale"], "expected NAME=V1,V2"),
    (["scale=1,"], "expected comma-separated values"),
    (["seed=1", "seed=2"], "given twice"),
])
def test_a_bad_grid_is_refused_naming_it_before_any_kernel_starts(tmp_path, grid, message):
    root = tiny_repo(tmp_path, flag=tmp_path / "unused")
    with pytest.raises(ProfileError, match=message):
        sweep("quick1", grid, profile="p", out=tmp_path / "out", root=root, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_unknown_notebook_is_refused_from_the_command_line(tmp_path, capsys):
    root = tiny_repo(tmp_path, flag=tmp_path / "unused")
    code = main(["sweep", "nosuch", "--grid", "seed=1", "--profile", "p", "--out", str(tmp_path / "o"), "--root", str(root)])
    assert code == 2
    assert "notebook 'nosuch' does not exist; notebooks: quick1, gate, quick2" in capsys.readouterr().err


def test_grid_values_are_read_as_numbers_booleans_lists_or_text():
    assert [parse_value(v) for v in ("2", "1e-2", "0.5", "true", "null", "[1, 2]", "cuda")] == [2, 0.01, 0.5, True, None, [1, 2], "cuda"]
    assert parse_grid(["phase_L=[1,2],[1,2,3]", "lr=0.1"]) == {"phase_L": [[1, 2], [1, 2, 3]], "lr": [0.1]}


def test_the_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "ufm sweep optimum --grid K=2,3,4 --grid L=2,3 --profile smoke --jobs 2 --out /tmp/s" in text
