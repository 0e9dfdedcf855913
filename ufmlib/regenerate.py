"""Regenerate the book: run every notebook under a parameter profile, then build the book.

Layout (relative to the repository root)::

    notebooks/<name>.md        the notebook (jupytext MyST markdown; the file that is edited)
    notebooks/<name>.ipynb     its paired copy without outputs (committed, opened by Colab)
    profiles/<profile>.yaml    parameters per notebook: smoke (tests), ci (<= 10 min), paper
    outputs/notebooks/<name>.ipynb   the executed notebook (ignored by git; the book page)
    outputs/status.md          the table of every check, included by book/status.md
    outputs/status.json        the outcome of the last run of every notebook
    outputs/figures/           files written by ufmlib.plotting.save_figure

A run (:func:`regenerate`, ``ufm regenerate``) does, in order:

1. reads the profile and the selected notebooks with ``jupytext.read`` and validates the
   profile's parameters against each notebook's ``parameters`` cell (annotated assignments, parsed with
   :mod:`ast`): an unknown parameter, a value of the wrong type or an unavailable device is
   rejected (:class:`ProfileError`, naming the notebook, the parameter and what is allowed)
   before any kernel starts;
2. executes the selected notebooks **serially** with ``papermill`` (kernel ``python3``, working
   directory ``notebooks/``), each into a temporary file that replaces the previous output only
   on success - a failed notebook keeps its last good output; a notebook whose inputs (text,
   parameters, profile, ufmlib sources) are unchanged since its last good output is skipped
   unless ``force``;
3. records the provenance (:mod:`ufmlib.provenance`) in the executed notebook's metadata
   (``metadata.ufm``) and as a small box under the page title, collects the notebook's
   theory-versus-measurement checks, writes ``outputs/status.md``;
4. prints a table (notebook, status, seconds) and the error of every failed cell, and builds
   the book with ``jupyter-book build . -W -n --keep-going`` (unless ``build_book=False``).

The book renders these outputs as they are (``execute_notebooks: off``). Its pages are named
``outputs/notebooks/<name>``; this module is also a Sphinx extension (loaded from
``_config.yml``) that points the page's launch buttons (Colab) at the committed paired
notebook ``notebooks/<name>.ipynb`` instead of the page's own path, see :func:`setup`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .runtime import thread_environment

__all__ = [
    "ProfileError",
    "Parameter",
    "Profile",
    "Job",
    "Outcome",
    "Report",
    "find_root",
    "list_notebooks",
    "read_notebook",
    "parameters_cell",
    "parse_parameters",
    "notebook_parameters",
    "load_profile",
    "plan",
    "execute_job",
    "write_status",
    "build_book",
    "pair_problems",
    "regenerate",
    "add_arguments",
    "register",
    "run",
    "main",
    "repository_path",
    "setup",
]

NOTEBOOKS = "notebooks"
PROFILES = "profiles"
OUTPUTS = "outputs"
EXECUTED = "notebooks"
KERNEL = "python3"
REQUIRED_PARAMETERS = ("seed", "device")
PROFILE_KEYS = ("description", "defaults", "notebooks")


class ProfileError(ValueError):
    """A profile or a notebook's parameters cell is invalid; the message names what and where."""


# ----------------------------------------------------------------------------------------
# notebooks and their parameters


def find_root(root: str | Path | None = None) -> Path:
    """The repository root: ``root`` if given, else the first folder at or above the current
    directory holding ``notebooks/`` and ``profiles/``, else the folder above the package."""
    if root is not None:
        path = Path(root).resolve()
        if not (path / NOTEBOOKS).is_dir():
            raise ProfileError(f"root: {path} has no {NOTEBOOKS}/ folder")
        return path
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / NOTEBOOKS).is_dir() and (candidate / PROFILES).is_dir():
            return candidate
    return Path(__file__).resolve().parents[1]


def _toc_order(root: Path) -> list[str]:
    toc = root / "_toc.yml"
    if not toc.exists():
        return []
    pattern = re.compile(rf"{OUTPUTS}/{EXECUTED}/([A-Za-z0-9_\-]+)")
    return list(dict.fromkeys(pattern.findall(toc.read_text())))


def list_notebooks(root: str | Path) -> list[str]:
    """Names of the notebooks ``notebooks/<name>.md``, in the book's order, then by name."""
    root = Path(root)
    names = sorted(p.stem for p in (root / NOTEBOOKS).glob("*.md"))
    order = [n for n in _toc_order(root) if n in names]
    return order + [n for n in names if n not in order]


def read_notebook(path: str | Path):
    """A notebook (``nbformat.NotebookNode``) from a jupytext text file or an ``.ipynb``."""
    import jupytext

    return jupytext.read(str(path))


def parameters_cell(nb, *, notebook: str = "?"):
    """The first code cell tagged ``parameters``; :class:`ProfileError` if there is none."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    raise ProfileError(f"notebook {notebook!r} has no code cell tagged 'parameters'")


@dataclass(frozen=True)
class Parameter:
    """One annotated assignment of a parameters cell: ``name: annotation = default  # help``."""

    name: str
    annotation: str
    default: Any
    help: str = ""
    node: ast.expr | None = field(default=None, repr=False, compare=False)

    def allowed(self) -> str:
        """The allowed values in words (for error messages)."""
        node = self.node
        if isinstance(node, ast.Subscript) and _subscript_base(node) == "Literal":
            return "one of " + ", ".join(repr(v) for v in _literal_choices(node))
        return self.annotation

    def coerce(self, value: Any) -> Any:
        """``value`` converted to the annotated type (``int`` to ``float``, tuples to lists).

        Raises :class:`TypeError` when ``value`` does not fit the annotation.
        """
        ok, out = _coerce(self.node, value)
        if not ok:
            raise TypeError(f"expected {self.allowed()}")
        return out


def _subscript_base(node: ast.Subscript) -> str:
    base = node.value
    if isinstance(base, ast.Attribute):
        return base.attr
    if isinstance(base, ast.Name):
        return base.id
    return ""


def _literal_choices(node: ast.Subscript) -> list[Any]:
    elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return [ast.literal_eval(e) for e in elts]


_SCALARS = ("int", "float", "bool", "str")


def _check_annotation(node: ast.expr) -> None:
    """Raise :class:`ValueError` for annotations this module cannot check."""
    if isinstance(node, ast.Name) and node.id in _SCALARS:
        return
    if isinstance(node, ast.Constant) and node.value is None:
        return
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        _check_annotation(node.left)
        _check_annotation(node.right)
        return
    if isinstance(node, ast.Subscript):
        base = _subscript_base(node)
        if base == "Literal":
            _literal_choices(node)
            return
        if base == "list":
            _check_annotation(node.slice)
            return
        if base == "tuple" and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2 \
                and isinstance(node.slice.elts[1], ast.Constant) and node.slice.elts[1].value is Ellipsis:
            _check_annotation(node.slice.elts[0])
            return
    raise ValueError(
        f"unsupported annotation {ast.unparse(node)!r} (use int, float, bool, str, list[T], "
        "tuple[T, ...], Literal[...] or 'T | None')"
    )


def _coerce(node: ast.expr | None, value: Any) -> tuple[bool, Any]:
    if node is None:
        return True, value
    if isinstance(node, ast.Name):
        if node.id == "int":
            return isinstance(value, int) and not isinstance(value, bool), value
        if node.id == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, value
            return True, float(value)
        if node.id == "bool":
            return isinstance(value, bool), value
        if node.id == "str":
            return isinstance(value, str), value
    if isinstance(node, ast.Constant) and node.value is None:
        return value is None, value
    if isinstance(node, ast.BinOp):
        ok, out = _coerce(node.left, value)
        return (ok, out) if ok else _coerce(node.right, value)
    if isinstance(node, ast.Subscript):
        base = _subscript_base(node)
        if base == "Literal":
            choices = _literal_choices(node)
            return any(type(value) is type(c) and value == c for c in choices), value
        if base in ("list", "tuple"):
            if not isinstance(value, (list, tuple)):
                return False, value
            inner = node.slice if base == "list" else node.slice.elts[0]
            items = [_coerce(inner, v) for v in value]
            return all(ok for ok, _ in items), [v for _, v in items]
    return False, value


def parse_parameters(source: str, *, notebook: str = "?") -> dict[str, Parameter]:
    """The parameters declared in a parameters cell's ``source``.

    Every statement must be an annotated assignment of a literal, ``name: type = value``; the
    comment on its line is the help text. A default that does not fit its own annotation, an
    unannotated assignment or any other statement is a :class:`ProfileError`.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProfileError(f"notebook {notebook!r}: the parameters cell is not valid Python ({exc.msg}, line {exc.lineno})") from None
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), start=1):
        if line.count("=") > 1:  # papermill's own parser (--help-notebook, injection) skips such lines
            raise ProfileError(f"notebook {notebook!r}: line {number} of the parameters cell has more than one '=' "
                               f"(papermill cannot read it; keep '=' out of the comment): {line.strip()!r}")
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name = stmt.target.id
            try:
                _check_annotation(stmt.annotation)
            except ValueError as exc:
                raise ProfileError(f"notebook {notebook!r}: parameter {name!r}: {exc}") from None
            try:
                default = ast.literal_eval(stmt.value)
            except ValueError:
                raise ProfileError(f"notebook {notebook!r}: the default of parameter {name!r} must be a literal") from None
            param = Parameter(name, ast.unparse(stmt.annotation), default, comments.get(stmt.end_lineno, ""), stmt.annotation)
            try:
                param = Parameter(name, param.annotation, param.coerce(default), param.help, stmt.annotation)
            except TypeError as exc:
                raise ProfileError(f"notebook {notebook!r}: the default {default!r} of parameter {name!r} does not fit its annotation ({exc})") from None
            if name in params:
                raise ProfileError(f"notebook {notebook!r}: parameter {name!r} is declared twice")
            params[name] = param
        elif isinstance(stmt, ast.Assign):
            names = ", ".join(ast.unparse(t) for t in stmt.targets)
            raise ProfileError(f"notebook {notebook!r}: parameter {names} has no type annotation (write `name: type = value  # help`)")
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue
        else:
            raise ProfileError(f"notebook {notebook!r}: the parameters cell may only hold annotated assignments (line {stmt.lineno})")
    return params


def notebook_parameters(path: str | Path, *, notebook: str | None = None) -> dict[str, Parameter]:
    """The declared parameters of the notebook file ``path``."""
    name = notebook or Path(path).stem
    return parse_parameters(parameters_cell(read_notebook(path), notebook=name).source, notebook=name)


def _describe(params: Mapping[str, Parameter]) -> str:
    return ", ".join(f"{p.name} ({p.annotation})" for p in params.values())


# ----------------------------------------------------------------------------------------
# profiles and the run plan


@dataclass(frozen=True)
class Profile:
    """A parameter profile: ``defaults`` apply to every notebook, ``notebooks[name]`` to one."""

    name: str
    description: str
    defaults: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]
    path: Path | None = None


def available_profiles(root: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / PROFILES).glob("*.yaml"))


def load_profile(profile: str | Path | Mapping[str, Any], *, root: str | Path) -> Profile:
    """A profile by name (``profiles/<name>.yaml``), by path, or from a mapping."""
    import yaml

    root = Path(root)
    path = None
    if isinstance(profile, Mapping):
        data, name = dict(profile), str(profile.get("name", "custom"))
        data.pop("name", None)
    else:
        candidate = Path(profile)
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            path = candidate
        else:
            path = root / PROFILES / f"{profile}.yaml"
            if not path.is_file():
                raise ProfileError(f"profile {str(profile)!r} not found; available: {', '.join(available_profiles(root)) or 'none'}")
        name = path.stem
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile {name!r}: {path} is not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise ProfileError(f"profile {name!r}: expected a mapping with keys {PROFILE_KEYS}")
    unknown = [k for k in data if k not in PROFILE_KEYS]
    if unknown:
        raise ProfileError(f"profile {name!r}: unknown key {unknown[0]!r}; allowed: {', '.join(PROFILE_KEYS)}")
    defaults = data.get("defaults") or {}
    notebooks = data.get("notebooks") or {}
    if not isinstance(defaults, Mapping):
        raise ProfileError(f"profile {name!r}: 'defaults' must map parameter names to values")
    if not isinstance(notebooks, Mapping):
        raise ProfileError(f"profile {name!r}: 'notebooks' must map notebook names to parameters")
    for nb_name, params in notebooks.items():
        if params is not None and not isinstance(params, Mapping):
            raise ProfileError(f"profile {name!r}, notebook {nb_name!r}: expected a mapping of parameters, got {params!r}")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        defaults=dict(defaults),
        notebooks={str(k): dict(v or {}) for k, v in notebooks.items()},
        path=path,
    )


@dataclass(frozen=True)
class Job:
    """One notebook to execute: its source, output and the parameters injected into it."""

    name: str
    source: Path
    output: Path
    parameters: dict[str, Any]
    defaults: dict[str, Any]
    device: str
    input_hash: str


def _select(names: Sequence[str], only: str | Sequence[str] | None) -> list[str]:
    if only is None:
        return list(names)
    patterns = [p.strip() for p in (only.split(",") if isinstance(only, str) else only) if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) or (not any(c in p for c in "*?[") and p in n) for p in patterns)]
    if not chosen:
        raise ProfileError(f"--only {only!r} matches no notebook; notebooks: {', '.join(names)}")
    return chosen


def _hash_tree(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _library_hash(root: Path) -> str:
    local = root / "ufmlib"
    return _hash_tree(local if local.is_dir() else Path(__file__).resolve().parent)


def _check_devices(devices: set[str], profile: str) -> None:
    if all(d == "cpu" for d in devices):
        return
    from .config import ConfigError, resolve_device

    for dev in sorted(devices):
        try:
            resolve_device(dev)
        except ConfigError as exc:
            raise ProfileError(f"profile {profile!r}: device {dev!r} cannot be used here ({exc}); pass --device cpu") from None


def plan(
    profile: Profile,
    *,
    root: str | Path,
    out_dir: str | Path | None = None,
    only: str | Sequence[str] | None = None,
    device: str | None = None,
) -> list[Job]:
    """Validate ``profile`` against the notebooks selected by ``only`` and return their jobs.

    Everything is checked before anything runs: the notebooks named by the profile exist, every
    selected notebook declares ``seed`` and ``device``, every profile parameter is declared by
    its notebook with a value of the declared type, and the devices exist on this machine.
    """
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / OUTPUTS
    names = list_notebooks(root)
    missing = [n for n in profile.notebooks if n not in names]
    if missing:
        raise ProfileError(f"profile {profile.name!r} names notebook {missing[0]!r}, which does not exist; notebooks: {', '.join(names)}")
    if device is not None and (not isinstance(device, str) or not device):
        raise ProfileError(f"device must be a device name such as 'cpu' or 'cuda'; got {device!r}")
    selected = set(_select(names, only))
    lib = _library_hash(root)
    jobs, devices = [], set()
    for name in names:
        if name not in selected:
            continue
        source = root / NOTEBOOKS / f"{name}.md"
        declared = notebook_parameters(source, notebook=name)
        absent = [p for p in REQUIRED_PARAMETERS if p not in declared]
        if absent:
            raise ProfileError(f"notebook {name!r} must declare the parameter {absent[0]!r} in its parameters cell")
        values: dict[str, Any] = {}
        for origin, given in (("defaults", profile.defaults), (f"notebook {name!r}", profile.notebooks.get(name, {}))):
            for key, value in given.items():
                where = f"profile {profile.name!r}, {origin}"
                if key not in declared:
                    raise ProfileError(
                        f"{where}: unknown parameter {key!r} for notebook {name!r}; allowed: {_describe(declared)}"
                    )
                try:
                    values[key] = declared[key].coerce(value)
                except TypeError:
                    hint = " (YAML reads 1e-2 as a string: write 1.0e-2)" if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else ""
                    raise ProfileError(
                        f"{where}: parameter {key!r} of notebook {name!r} must be {declared[key].allowed()} "
                        f"(default {declared[key].default!r}); got {type(value).__name__} {value!r}{hint}"
                    ) from None
        if device is not None:
            values["device"] = declared["device"].coerce(device)
        dev = str(values.get("device", declared["device"].default))
        devices.add(dev)
        digest = hashlib.sha256()
        for part in (source.read_bytes(), json.dumps(values, sort_keys=True).encode(), profile.name.encode(), lib.encode(), KERNEL.encode()):
            digest.update(hashlib.sha256(part).digest())
        jobs.append(Job(
            name=name, source=source, output=out_dir / EXECUTED / f"{name}.ipynb", parameters=values,
            defaults={k: p.default for k, p in declared.items()}, device=dev, input_hash=digest.hexdigest(),
        ))
    _check_devices(devices, profile.name)
    return jobs


# ----------------------------------------------------------------------------------------
# execution


@dataclass(frozen=True)
class Outcome:
    """What happened to one notebook: ``ok``, ``failed``, ``interrupted`` or ``up to date``."""

    name: str
    status: str
    seconds: float
    error: str | None = None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _format_error(exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        tb = [_ANSI.sub("", line) for line in (exc.traceback or [])]
        tail = "\n".join("\n".join(tb).splitlines()[-12:])
        first = (exc.source or "").strip().splitlines()
        where = f"cell {exc.cell_index} (In [{exc.exec_count}]" + (f": {first[0][:60]}" if first else "") + ")"
        return f"{exc.ename}: {exc.evalue}\n  in {where}\n{tail}"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _kernel_environment(root: Path, out_dir: Path) -> Iterator[None]:
    """Environment inherited by the kernel: the repository's ufmlib first on the path, the
    figure folder, matplotlib's inline backend (a global ``MPLBACKEND`` is not passed on), and
    one CPU thread for torch/BLAS unless ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` are set (the
    models are small: on a busy 2-core machine two spinning OpenMP threads made gradient
    descent 40 times slower than one, and one thread gives the same floating-point results on
    every machine)."""
    saved = dict(os.environ)
    try:
        if (root / "ufmlib").is_dir():
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), saved.get("PYTHONPATH", "")]))
        os.environ["UFM_FIGURE_DIR"] = str(out_dir / "figures")
        os.environ.pop("MPLBACKEND", None)
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        for key, value in thread_environment(1).items():
            os.environ.setdefault(key, value)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _title_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and re.search(r"^# ", cell.source, flags=re.M):
            return i + 1
    return 0


def _finalize(nb, job: Job, provenance, checks) -> None:
    """Metadata, provenance box and tags of an executed notebook (in place)."""
    import nbformat

    from . import provenance as prov_mod

    nb.metadata.pop("jupytext", None)  # the executed copy is not paired with any text file
    nb.metadata["ufm"] = {
        "notebook": job.name,
        "provenance": provenance.as_dict(),
        "checks": [c.as_dict() for c in checks],
    }
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    box = nbformat.v4.new_markdown_cell(prov_mod.markdown_box(provenance), metadata={"tags": ["ufm-provenance"]})
    nb.cells.insert(_title_index(nb), box)


def _write_atomic(nb, path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    nbformat.write(nb, str(partial))
    os.replace(partial, path)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("ufm", {})
    except (OSError, ValueError):
        return {}


def execute_job(job: Job, *, root: str | Path, out_dir: str | Path, profile: str) -> Outcome:
    """Execute one notebook with papermill; on success replace its output, else keep the old one."""
    import nbformat
    import papermill as pm

    from . import provenance as prov_mod

    root, out_dir = Path(root), Path(out_dir)
    nb = read_notebook(job.source)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ufm-regenerate-") as tmp:
        tmp_out = Path(tmp) / f"{job.name}.ipynb"
        try:
            with _kernel_environment(root, out_dir):
                pm.execute_notebook(
                    nb, str(tmp_out), parameters=dict(job.parameters), kernel_name=KERNEL,
                    cwd=str(job.source.parent), progress_bar=False, log_output=False, start_timeout=180,
                )
        except Exception as exc:  # noqa: BLE001 - any failure of one notebook is reported, the run goes on
            return Outcome(job.name, "failed", time.perf_counter() - start, _format_error(exc))
        seconds = time.perf_counter() - start
        executed = nbformat.read(str(tmp_out), as_version=4)
    checks = prov_mod.checks_from_notebook(executed)
    provenance = prov_mod.collect(
        notebook=job.name, profile=profile, device=job.device, parameters=job.parameters,
        defaults=job.defaults, wall_time_s=seconds, root=root, input_hash=job.input_hash,
    )
    _finalize(executed, job, provenance, checks)
    _write_atomic(executed, job.output)
    return Outcome(job.name, "ok", seconds)


# ----------------------------------------------------------------------------------------
# status page


def _fmt_num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if x == 0:
        return "0"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3e}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_status(root: str | Path, *, out_dir: str | Path | None = None, runs: Sequence[Outcome] = ()) -> Path:
    """Write ``outputs/status.md`` (the table included by ``book/status.md``) and
    ``outputs/status.json`` (the last outcome of every notebook) from the executed notebooks."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / OUTPUTS
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "status.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for run_ in runs:
        if run_.status != "up to date":
            state[run_.name] = {"status": run_.status, "date": today, "error": run_.error}
    state_path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")

    summary = ["| Notebook | Profile | Device | Checks passed | Executed | Last run |", "|---|---|---|---|---|---|"]
    table = [
        "| Result | Notebook | Check | Theory | Measured | Error | Tolerance | Profile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in list_notebooks(root):
        output = out_dir / EXECUTED / f"{name}.ipynb"
        last = state.get(name, {})
        last_text = last.get("status", "-") + (f" ({last['date']})" if last.get("date") else "")
        meta = _read_metadata(output) if output.exists() else {}
        if not meta:
            summary.append(f"| {name} | - | - | - | not executed yet | {_md_cell(last_text)} |")
            continue
        prov = meta.get("provenance", {})
        checks = meta.get("checks", [])
        link = f"{{doc}}`{name} </{OUTPUTS}/{EXECUTED}/{name}>`"
        passed = sum(bool(c.get("passed")) for c in checks)
        summary.append(
            f"| {link} | {prov.get('profile', '?')} | `{prov.get('device', '?')}` | {passed} of {len(checks)} "
            f"| {prov.get('date', '?')} | {_md_cell(last_text)} |"
        )
        for c in checks:
            table.append(
                f"| {_md_cell(c['result'])} | {link} | {_md_cell(c['description'])} | {_fmt_num(c['theory'])} "
                f"| {_md_cell(_fmt_num(c['measured']))} | {_fmt_num(c['error'])} ({c['kind']}) "
                f"| {_fmt_num(c['tolerance'])} | {prov.get('profile', '?')} |"
            )
    text = "\n".join([
        "% Generated by ufmlib.regenerate from the executed notebooks; do not edit.",
        "",
        *summary,
        "",
        "Every check below passed when its notebook was executed (a failing check stops the run and the "
        "previous output is kept). *Error* is the largest absolute (abs) or relative (rel) deviation "
        "over the compared entries; *Theory* and *Measured* are the entries where it occurs.",
        "",
        *table,
        "",
    ])
    status = out_dir / "status.md"
    status.write_text(text)
    return status


# ----------------------------------------------------------------------------------------
# the book


def _jupyter_book() -> str:
    local = Path(sys.executable).with_name("jupyter-book")
    if local.exists():
        return str(local)
    found = shutil.which("jupyter-book")
    if found is None:
        raise FileNotFoundError("jupyter-book is not installed (pip install -e '.[book]')")
    return found


def build_book(root: str | Path, *, strict: bool = True) -> int:
    """``jupyter-book build <root> -W -n --keep-going`` (strict); returns its exit status."""
    root = Path(root)
    cmd = [_jupyter_book(), "build", str(root)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    return subprocess.run(cmd, cwd=str(root), env=env).returncode


build_book_fn = build_book  # ``regenerate`` has a ``build_book`` flag that shadows the function


def repository_path(pagename: str) -> str | None:
    """The committed notebook behind a book page: ``outputs/notebooks/x`` -> ``notebooks/x.ipynb``."""
    prefix = f"{OUTPUTS}/{EXECUTED}/"
    if not pagename.startswith(prefix):
        return None
    return f"{NOTEBOOKS}/{pagename[len(prefix):]}.ipynb"


def _launch_links_to_paired_notebooks(app, pagename, templatename, context, doctree) -> None:
    target = repository_path(pagename)
    if target is None:
        return
    if not (Path(app.srcdir) / target).is_file():
        from sphinx.util import logging

        logging.getLogger(__name__).warning(
            f"{pagename}: the paired notebook {target} does not exist, its launch buttons would be broken",
            type="ufm", subtype="launch",
        )
        return
    own = f"{pagename}.ipynb"
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if "url" in button:
                button["url"] = button["url"].replace(own, target)


def setup(app) -> dict[str, Any]:
    """Sphinx extension: launch buttons of an executed page open the committed paired notebook.

    sphinx-book-theme (1.3) links Colab to ``<repository>/blob/<branch>/<page>.ipynb``, i.e. to
    ``outputs/notebooks/<name>.ipynb``, which is not in the repository. This handler runs after
    the theme's (priority 900 > 500) and rewrites those links to ``notebooks/<name>.ipynb``.

    It also loads MathJax on every page (``html_assets_policy = "always"``): chapter titles in
    the navigation contain formulas, which stay raw TeX on pages without math of their own.
    """
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _launch_links_to_paired_notebooks, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


# ----------------------------------------------------------------------------------------
# paired notebooks


def pair_problems(root: str | Path | None = None) -> list[str]:
    """Differences between every ``notebooks/<name>.md`` and its paired ``.ipynb``.

    The pair is in sync when both have the same cells (type, source, metadata), the same
    kernel, and the ``.ipynb`` holds no outputs. Fix with ``jupytext --sync notebooks/<name>.md``.
    """
    import nbformat

    root = find_root(root)
    problems = []
    for name in list_notebooks(root):
        md, ipynb = root / NOTEBOOKS / f"{name}.md", root / NOTEBOOKS / f"{name}.ipynb"
        fix = f"(run: jupytext --sync {NOTEBOOKS}/{name}.md)"
        if not ipynb.exists():
            problems.append(f"{name}: {ipynb.relative_to(root)} is missing {fix}")
            continue
        text, paired = read_notebook(md), nbformat.read(str(ipynb), as_version=4)
        if text.metadata.get("kernelspec", {}).get("name") != KERNEL or paired.metadata.get("kernelspec", {}).get("name") != KERNEL:
            problems.append(f"{name}: both files must use the kernel {KERNEL!r}")
        if len(text.cells) != len(paired.cells):
            problems.append(f"{name}: {len(text.cells)} cells in the .md, {len(paired.cells)} in the .ipynb {fix}")
            continue
        for i, (a, b) in enumerate(zip(text.cells, paired.cells)):
            if a.cell_type != b.cell_type or a.source != b.source or dict(a.metadata) != dict(b.metadata):
                problems.append(f"{name}: cell {i} differs between the .md and the .ipynb {fix}")
                break
        if any(c.get("outputs") or c.get("execution_count") for c in paired.cells if c.cell_type == "code"):
            problems.append(f"{name}: {ipynb.relative_to(root)} holds outputs; commit it without outputs")
    return problems


# ----------------------------------------------------------------------------------------
# the whole run


@dataclass(frozen=True)
class Report:
    """Outcome of :func:`regenerate`; ``exit_code`` is 0 only if every notebook and the book passed."""

    profile: str
    outcomes: tuple[Outcome, ...]
    book_status: int | None

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status in ("failed", "interrupted"))

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or (self.book_status not in (None, 0)) else 0

    def table(self) -> str:
        width = max([len("notebook")] + [len(o.name) for o in self.outcomes])
        lines = [f"{'notebook':<{width}}  {'status':<10}  {'seconds':>8}", "-" * (width + 22)]
        lines += [f"{o.name:<{width}}  {o.status:<10}  {o.seconds:8.1f}" for o in self.outcomes]
        return "\n".join(lines)


def regenerate(
    profile: str | Path | Mapping[str, Any] = "ci",
    *,
    only: str | Sequence[str] | None = None,
    device: str | None = None,
    build_book: bool = True,
    force: bool = False,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    stream=None,
) -> Report:
    """Run the notebooks under ``profile`` (serially) and build the book; see the module docstring.

    Raises :class:`ProfileError` before any kernel starts when the profile does not fit the
    notebooks. Failed notebooks do not stop the run; they are listed in the returned
    :class:`Report` (and printed with their error), and keep their previous output.
    ``out_dir`` (default ``<root>/outputs``) must be ``<root>/outputs`` when the book is built.
    """
    from tqdm.auto import tqdm

    stream = stream or sys.stdout
    root = find_root(root)
    out = Path(out_dir).resolve() if out_dir is not None else root / OUTPUTS
    if build_book and out != (root / OUTPUTS).resolve():
        raise ValueError(f"out_dir: the book reads {root / OUTPUTS}; pass build_book=False to write to {out}")
    prof = load_profile(profile, root=root)
    jobs = plan(prof, root=root, out_dir=out, only=only, device=device)
    outcomes: list[Outcome] = []
    bar = tqdm(jobs, desc=f"regenerate [{prof.name}]", unit="notebook", disable=not progress, file=sys.stderr)
    interrupted = False
    for job in bar:
        bar.set_postfix_str(job.name)
        meta = _read_metadata(job.output) if job.output.exists() else {}
        if not force and meta.get("provenance", {}).get("input_hash") == job.input_hash:
            outcomes.append(Outcome(job.name, "up to date", 0.0))
            continue
        start = time.perf_counter()
        try:
            outcomes.append(execute_job(job, root=root, out_dir=out, profile=prof.name))
        except KeyboardInterrupt:
            # Ctrl-C: the notebook keeps its previous output; report, write the status, then stop
            outcomes.append(Outcome(job.name, "interrupted", time.perf_counter() - start,
                                    "interrupted (Ctrl-C); a second run resumes with what is missing"))
            interrupted = True
            break
    bar.close()
    write_status(root, out_dir=out, runs=outcomes)
    print(Report(prof.name, tuple(outcomes), None).table(), file=stream)
    if interrupted:
        stream.flush()
        raise KeyboardInterrupt
    book_status = None
    if build_book:
        print("building the book: jupyter-book build . -W -n --keep-going", file=stream, flush=True)
        book_status = build_book_fn(root)
    report = Report(prof.name, tuple(outcomes), book_status)
    for o in report.failed:
        print(f"\nFAILED {o.name} (previous output kept):\n{o.error}", file=stream)
    if book_status not in (None, 0):
        print(f"\nthe book build failed (exit status {book_status})", file=stream)
    if report.exit_code == 0:
        print(f"\nall {len(outcomes)} notebook(s) ok" + (", book built in _build/html" if build_book else ""), file=stream)
    stream.flush()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``ufm regenerate``."""
    parser.add_argument("--profile", default="ci", help="parameter profile: smoke, ci (default) or paper, or a YAML path")
    parser.add_argument("--only", default=None, metavar="PATTERN",
                        help="run only the notebooks matching PATTERN (glob or substring; comma-separated)")
    parser.add_argument("--device", default=None, help="device for every notebook (overrides the profile), e.g. cpu, cuda")
    parser.add_argument("--no-book", action="store_true", help="do not build the book afterwards")
    parser.add_argument("--force", action="store_true", help="re-run notebooks whose output is up to date")
    parser.add_argument("--root", default=None, help="repository root (default: found from the current directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``regenerate`` subcommand to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "regenerate",
        help="run every notebook under a parameter profile and build the book",
        description="Run every notebook (serially, with papermill) under a parameter profile, "
        "record provenance and build the book with jupyter-book build . -W -n --keep-going.",
    )
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ufm regenerate``: 0 ok, 1 a notebook or the book failed, 2 bad input."""
    try:
        report = regenerate(
            args.profile, only=args.only, device=args.device, build_book=not args.no_book,
            force=args.force, root=args.root, progress=not getattr(args, "no_progress", False),
        )
    except (ProfileError, ValueError, FileNotFoundError) as exc:
        print(f"ufm regenerate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ufm regenerate: interrupted; finished outputs are kept, run again to resume", file=sys.stderr)
        return 130
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ufmlib.regenerate [options]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m ufmlib.regenerate", description=register.__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
