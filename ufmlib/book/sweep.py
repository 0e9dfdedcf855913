"""``ufm sweep``: one notebook over a grid of parameter values, collected into one tidy table.

Every grid point (the product of the ``--grid NAME=V1,V2,...`` lists, on top of the profile's
values for the notebook) runs the notebook once, through the same executors as ``ufm
regenerate`` (serially, ``--jobs N`` or ``--scheduler``, :func:`ufmlib.book.executors.run_jobs`)
and the same content cache: a point whose output came from a good run with the same inputs is
not run again. The out folder holds::

    DIR/points/<notebook>-<fingerprint>.ipynb   the executed notebook of each point
    DIR/figures/<notebook>-<fingerprint>/       its figures
    DIR/results.csv, DIR/results.parquet        one row per point (pandas.read_parquet reads it)

A row has the point's index, its parameter values (one column each), ``status`` (``ok``,
``up to date``, ``failed``, ``interrupted``, ``not started``), ``error`` (the first line; empty
when it ran), the ``seconds`` the run took, the number of checks run and passed, then every numeric value the
notebook glued (under its glue name; ``glue:<name>`` where that clashes with a column) and one
``check:<name>`` column per check (whether it passed). A point that fails is a row with its
error. A grid naming an unknown parameter, or a value that does not fit the parameter's
declared type, is refused (:class:`~ufmlib.book.parameters.ProfileError`) before any kernel starts.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .execute import Outcome
from .executors import check_parallelism, run_jobs
from .parameters import ProfileError, describe, notebook_parameters
from .profiles import Job, _check_devices, find_root, fingerprint, input_hash, library_hash, list_notebooks, load_profile, plan
from .provenance import checks_from_notebook, glued_from_notebook
from .regenerate import up_to_date
from .status import _one_line

__all__ = ["SweepReport", "parse_grid", "parse_value", "plan_sweep", "results_table", "sweep", "POINTS", "TABLE"]

POINTS = "points"
"""Folder (under the out folder) of the executed notebook of every point."""
TABLE = "results"
"""Stem of the result tables ``results.csv`` and ``results.parquet``."""


def _split_values(text: str) -> list[str]:
    """``"1,2,[3,4]"`` -> ``["1", "2", "[3,4]"]``: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def parse_value(text: str) -> Any:
    """One grid value from the command line: an int, a float (``1e-2`` too), ``true``/``false``,
    ``null``, a YAML list (``[1, 2]``), else the string itself."""
    import yaml

    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, list, type(None))) else text


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["K=2,3", "L=2"]`` -> ``{"K": [2, 3], "L": [2]}``; :class:`ProfileError` for a malformed item."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = str(item).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ProfileError(f"--grid {item!r}: expected NAME=V1,V2,... (for example K=2,3,4)")
        if name in grid:
            raise ProfileError(f"--grid {name}: given twice; list all its values in one --grid {name}=V1,V2,...")
        texts = _split_values(values)
        if not values.strip() or any(not t for t in texts):
            raise ProfileError(f"--grid {name}: expected comma-separated values after '=', got {values!r}")
        grid[name] = [parse_value(t) for t in texts]
    if not grid:
        raise ProfileError("--grid: give at least one NAME=V1,V2,...")
    return grid


def _point_name(notebook: str, point: Mapping[str, Any]) -> str:
    """The stem of a point's files: the notebook and a fingerprint of the point's values (the
    same point keeps its files when the grid around it changes)."""
    return f"{notebook}-{fingerprint(json.dumps(dict(point), sort_keys=True).encode())[:12]}"


def plan_sweep(
    notebook: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    profile,
    root: Path,
    out: Path,
    device: str | None = None,
) -> list[Job]:
    """One :class:`~ufmlib.book.profiles.Job` per grid point, validated before anything runs."""
    names = list_notebooks(root)
    if notebook not in names:
        raise ProfileError(f"notebook {notebook!r} does not exist; notebooks: {', '.join(names)}")
    base = next(j for j in plan(profile, root=root, out_dir=out, only=[notebook], device=device) if j.name == notebook)
    declared = notebook_parameters(base.source, notebook=notebook)
    coerced: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if name not in declared:
            raise ProfileError(f"--grid {name}: notebook {notebook!r} has no parameter {name!r}; allowed: {describe(declared)}")
        if not values:
            raise ProfileError(f"--grid {name}: no values")
        coerced[name] = []
        for value in values:
            try:
                coerced[name].append(declared[name].coerce(value))
            except TypeError:
                raise ProfileError(f"--grid {name}: value {value!r} must be {declared[name].allowed()} "
                                   f"(the declared type of {name!r} in notebook {notebook!r}; default "
                                   f"{declared[name].default!r})") from None
    if "device" in coerced:
        _check_devices({str(d) for d in coerced["device"]}, profile.name)
    library = library_hash(root)
    jobs = []
    for combo in itertools.product(*coerced.values()):
        point = dict(zip(coerced, combo))
        values = {**base.parameters, **point}
        stem = _point_name(notebook, point)
        jobs.append(replace(
            base, parameters=values, output=out / POINTS / f"{stem}.ipynb", point=point,
            device=str(values.get("device", base.device)),
            input_hash=input_hash(base.source, values, profile.name, library),
        ))
    return jobs


def _cell(value: Any) -> Any:
    """A parameter value as a table cell: lists as JSON text (one type per column)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def results_table(jobs: Sequence[Job], outcomes: Mapping[str, Outcome]) -> list[dict[str, Any]]:
    """One row per point (see the module docstring), from the outcomes and the executed outputs."""
    rows = []
    for i, job in enumerate(jobs):
        outcome = outcomes.get(job.label)
        status = outcome.status if outcome else "not started"  # Ctrl-C came before it
        row: dict[str, Any] = {"point": i, **{k: _cell(v) for k, v in job.point.items()}, "status": status,
                               "error": (_one_line(outcome.error) if outcome and status != "up to date" else None) or ""}
        executed = json.loads(job.output.read_text()) if status in ("ok", "up to date") and job.output.is_file() else {}
        meta = executed.get("metadata", {}).get("ufm", {})
        row["seconds"] = float(meta.get("provenance", {}).get("wall_time_s", outcome.seconds if outcome else math.nan))
        checks = [c.as_dict() for c in checks_from_notebook(executed)] if executed else []
        ran = [c for c in checks if c.get("status", "checked") == "checked"]
        row["checks"] = len(ran)
        row["checks_passed"] = sum(bool(c.get("passed")) for c in ran)
        for name, value in (glued_from_notebook(executed) if executed else {}).items():
            if isinstance(value, (bool, int, float)):
                row["glue:" + name if name in row else name] = value
        for c in checks:
            row[f"check:{c['name']}"] = c.get("passed") if c.get("status", "checked") == "checked" else None
        rows.append(row)
    return rows


def _write_tables(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``results.csv`` and ``results.parquet`` in ``out`` (each written whole, then renamed)."""
    import pandas as pd

    columns = list(dict.fromkeys(k for row in rows for k in row))
    frame = pd.DataFrame(rows, columns=columns)
    paths = out / f"{TABLE}.csv", out / f"{TABLE}.parquet"
    for path, write in zip(paths, (lambda p: frame.to_csv(p, index=False), lambda p: frame.to_parquet(p, index=False))):
        partial = path.with_name(path.name + ".partial")
        write(partial)
        partial.replace(path)
    return paths


def _require_tables() -> None:
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("ufm sweep writes its table with pandas and pyarrow: pip install 'ufmlib[sweep]'") from None


@dataclass(frozen=True)
class SweepReport:
    """What :func:`sweep` did: one row per point and the tables written; ``exit_code`` is 0
    only when every point ran (or was up to date)."""

    notebook: str
    profile: str
    rows: tuple[dict[str, Any], ...]
    csv: Path
    parquet: Path

    @property
    def failed(self) -> tuple[dict[str, Any], ...]:
        return tuple(r for r in self.rows if r["status"] not in ("ok", "up to date"))

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def sweep(
    notebook: str,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    *,
    out: str | Path,
    profile: str | Path | Mapping[str, Any] = "ci",
    jobs: int = 1,
    scheduler: str | None = None,
    device: str | None = None,
    force: bool = False,
    root: str | Path | None = None,
    progress: bool = True,
    stream=None,
) -> SweepReport:
    """Run ``notebook`` at every point of ``grid`` (a mapping, or ``--grid`` items) and write the table.

    Raises :class:`ProfileError` / :class:`ValueError` before any kernel starts for an unknown
    notebook or parameter, a value of the wrong type or a bad option; :class:`KeyboardInterrupt`
    after writing the table of what finished when interrupted.
    """
    stream = stream or sys.stdout
    check_parallelism(jobs, scheduler)
    _require_tables()
    grid = parse_grid(grid) if not isinstance(grid, Mapping) else {k: list(v) for k, v in grid.items()}
    root = find_root(root)
    out = Path(out).resolve()
    prof = load_profile(profile, root=root)
    points = plan_sweep(notebook, grid, profile=prof, root=root, out=out, device=device)  # reads the notebook
    todo = [job for job in points if force or not up_to_date(job)]
    batch = run_jobs(todo, root=root, out_dir=out, profile=prof.name, jobs=jobs, scheduler=scheduler,
                     progress=progress, desc=f"sweep {notebook} [{prof.name}]")
    outcomes = {o.name: o for o in batch.outcomes}
    to_run = {job.label for job in todo}
    outcomes.update({job.label: Outcome(job.label, "up to date", 0.0) for job in points if job.label not in to_run})
    out.mkdir(parents=True, exist_ok=True)
    rows = results_table(points, outcomes)
    csv, parquet = _write_tables(rows, out)
    report = SweepReport(notebook, prof.name, tuple(rows), csv, parquet)
    done = sum(r["status"] in ("ok", "up to date") for r in rows)
    print(f"{done} of {len(rows)} point(s) ran; table: {csv} and {parquet}", file=stream)
    for row in report.failed:
        print(f"FAILED {points[row['point']].label}: {row['error'] or row['status']}", file=stream)
    stream.flush()
    if batch.interrupted:
        raise KeyboardInterrupt
    return report
