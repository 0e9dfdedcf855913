"""Executing one notebook: papermill in a prepared environment, then the finished output.

A run has two halves, so that the first can happen anywhere (this process, a child process,
a Dask worker on another machine) and the second always here:

* :func:`run_notebook` executes a :class:`RunSpec` (plain data: the notebook, the values to
  inject, where to run) with papermill into a temporary file and returns a :class:`RunResult`:
  the executed notebook, or the failing cell and the end of its traceback;
* :func:`finish_job` writes the output of a :class:`~ufmlib.book.profiles.Job` from its result:
  only when every cell succeeded does the executed notebook - with its provenance (including
  where it ran) and checks in ``metadata.ufm``, the provenance box under its title and the
  injected parameters hidden - replace the previous output, atomically. A failure is returned
  as an :class:`Outcome` with the error; the old output stays.

:func:`execute_job` is both halves in this process (``ufm regenerate`` without ``--jobs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ufmlib.notebook import BOOK_BUILD_ENV
from ufmlib.runtime import thread_environment

from .parameters import read_notebook
from .profiles import KERNEL, Job
from .provenance import checks_from_notebook, collect, markdown_box, required_from_notebook, utc_time

__all__ = ["Outcome", "RunSpec", "RunResult", "figure_folder", "run_spec", "run_notebook", "finish_job", "execute_job",
           "read_metadata", "write_failure_page"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one notebook: ``ok``, ``failed``, ``interrupted`` or ``up to date``."""

    name: str
    status: str
    seconds: float
    error: str | None = None
    finished: str | None = None
    """When the run ended (``YYYY-MM-DD HH:MM UTC``); set by :func:`finish_job`."""
    worker: str | None = None
    """Where it ran: ``local`` or a Dask worker's address and host (see :func:`run_notebook`)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _format_error(exc: BaseException) -> str:
    """The error of a failed run in a few lines: the failing cell and the end of its traceback."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        tb = [_ANSI.sub("", line) for line in (exc.traceback or [])]
        tail = "\n".join("\n".join(tb).splitlines()[-12:])
        first = (exc.source or "").strip().splitlines()
        where = f"cell {exc.cell_index} (In [{exc.exec_count}]" + (f": {first[0][:60]}" if first else "") + ")"
        return f"{exc.ename}: {exc.evalue}\n  in {where}\n{tail}"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _kernel_environment(root: Path | None, figures: Path) -> Iterator[None]:
    """Environment inherited by the kernel: the repository's ufmlib first on the path (when
    ``root`` holds one), the figure folder, matplotlib's inline backend (a global
    ``MPLBACKEND`` is not passed on), and one CPU thread for torch/BLAS unless
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` are set (the models are small: on a busy 2-core
    machine two spinning OpenMP threads made gradient descent 40 times slower than one, and one
    thread gives the same floating-point results on every machine)."""
    saved = dict(os.environ)
    try:
        if root is not None and (root / "ufmlib").is_dir():
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), saved.get("PYTHONPATH", "")]))
        os.environ["UFM_FIGURE_DIR"] = str(figures)
        os.environ.pop("MPLBACKEND", None)
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        os.environ[BOOK_BUILD_ENV] = "1"  # glue stores values without showing them (the book shows them)
        for key, value in thread_environment(1).items():
            os.environ.setdefault(key, value)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _client_config():
    """Kernel-manager configuration of every run: CurveZMQ transport encryption.

    Without it, ipykernel (7.4, ``IPKernelApp.init_sockets``) logs "Kernel is running over
    TCP without encryption..." to the terminal for every notebook. The documented
    ``KernelManager.transport_encryption = "auto"`` (jupyter_client 8.10) provisions
    CurveZMQ keys when the kernelspec declares ``supported_encryption: [curve]`` (``ipykernel
    install`` writes that); with another kernel or a libzmq without CURVE it stays off."""
    import zmq
    from traitlets.config import Config

    policy = "auto" if zmq.has("curve") else "disabled"
    return Config({"KernelManager": {"transport_encryption": policy}})


def _title_index(nb) -> int:
    """Index of the cell after the first Markdown cell holding a ``# `` title (0 without one)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and re.search(r"^# ", cell.source, flags=re.M):
            return i + 1
    return 0


def _finalize(nb, job: Job, provenance, checks, required=()) -> None:
    """Metadata, provenance box and tags of an executed notebook (in place)."""
    import nbformat

    nb.metadata.pop("jupytext", None)  # the executed copy is not paired with any text file
    nb.metadata["ufm"] = {
        "notebook": job.name,
        "provenance": provenance.as_dict(),
        "checks": [c.as_dict() for c in checks],
        "required": list(required),
    }
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    box = nbformat.v4.new_markdown_cell(markdown_box(provenance), metadata={"tags": ["ufm-provenance"]})
    nb.cells.insert(_title_index(nb), box)


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a ``.partial`` file, so that ``path`` is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _write_atomic(nb, path: Path) -> None:
    """Write the notebook ``nb`` to ``path`` atomically (:func:`_write_bytes_atomic`)."""
    import nbformat

    _write_bytes_atomic(nbformat.writes(nb).encode("utf-8"), path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata.ufm`` of an executed notebook (notebook, provenance, checks); ``{}`` when
    ``path`` cannot be read or is no executed notebook."""
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("ufm", {})
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to execute one notebook anywhere ufmlib is installed: in this process,
    in a child process (``ufm regenerate --jobs N``) or on a Dask worker (``--scheduler``).

    It holds plain data only (:meth:`as_dict` is JSON): the notebook itself as ``.ipynb`` text,
    the values to inject, the working directory and repository root the run should use when
    they exist where it runs, the figure folder (``None``: a temporary one whose files come back
    in :attr:`RunResult.figures`) and the fingerprint of the ufmlib sources the plan was made
    with (a runner with other sources refuses, so the content cache keeps its meaning).
    """

    name: str
    notebook: str
    parameters: dict[str, Any]
    cwd: str
    root: str | None = None
    figures: str | None = None
    library: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`run_notebook`: ``ok`` with the executed notebook (``.ipynb`` text),
    or ``failed`` with the error; ``figures`` maps file names to their bytes (base64) when the
    spec asked for a temporary figure folder; ``worker`` says where it ran."""

    name: str
    status: str
    seconds: float
    notebook: str | None = None
    error: str | None = None
    worker: str = "local"
    figures: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def figure_folder(job: Job, out_dir: Path) -> Path:
    """Where a job's figures go: ``<out_dir>/figures`` for a chapter, a folder of its own (named
    like its output) for a point of ``ufm sweep``."""
    return Path(out_dir) / "figures" / (job.output.stem if job.point else "")


def run_spec(job: Job, *, root: Path, out_dir: Path, library: str | None = None, ship_figures: bool = False) -> RunSpec:
    """The :class:`RunSpec` of ``job``: figures into ``<out_dir>/figures``, or shipped back
    with the result (``ship_figures``, for runs on other machines)."""
    import nbformat

    return RunSpec(
        name=job.name, notebook=nbformat.writes(read_notebook(job.source)), parameters=dict(job.parameters),
        cwd=str(job.source.parent), root=str(root), figures=None if ship_figures else str(figure_folder(job, out_dir)),
        library=library,
    )


def _library_problem(spec: RunSpec) -> str | None:
    """Why this machine must not run ``spec`` (other ufmlib sources than the plan's), or ``None``."""
    if spec.library is None:
        return None
    from .profiles import installed_library_hash, library_hash

    root = Path(spec.root) if spec.root else None
    here = library_hash(root) if root is not None else installed_library_hash()
    if here != spec.library:
        return ("the ufmlib sources here differ from those the run was planned with (fingerprint "
                f"{here[:12]} here, {spec.library[:12]} planned): they changed during the run, or this worker "
                "has another version installed (install the same commit on every worker)")
    return None


def run_notebook(spec: RunSpec, *, worker: str = "local") -> RunResult:
    """Execute ``spec`` with papermill in this process (the kernel is a child process).

    Never raises for a failure of the notebook: the result is ``failed`` with the failing cell
    and the end of its traceback (:func:`_format_error`)."""
    import base64

    import nbformat
    import papermill as pm

    problem = _library_problem(spec)
    if problem:
        return RunResult(spec.name, "failed", 0.0, error=f"RuntimeError: {problem}", worker=worker)
    root = Path(spec.root) if spec.root and Path(spec.root).is_dir() else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ufm-regenerate-") as tmp:
        tmp_out = Path(tmp) / f"{spec.name}.ipynb"
        figures = Path(spec.figures) if spec.figures else Path(tmp) / "figures"
        cwd = spec.cwd if Path(spec.cwd).is_dir() else tmp
        try:
            with _kernel_environment(root, figures):
                pm.execute_notebook(
                    nbformat.reads(spec.notebook, as_version=4), str(tmp_out), parameters=dict(spec.parameters),
                    kernel_name=KERNEL, cwd=cwd, progress_bar=False, log_output=False, start_timeout=180,
                    config=_client_config(),  # encrypted transport: no warning per kernel
                )
        except Exception as exc:  # noqa: BLE001 - any failure of one notebook is reported, the run goes on
            return RunResult(spec.name, "failed", time.perf_counter() - start, error=_format_error(exc), worker=worker)
        shipped = {} if spec.figures else {
            p.name: base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(figures.glob("*")) if p.is_file()}
        return RunResult(spec.name, "ok", time.perf_counter() - start, notebook=tmp_out.read_text(),
                         worker=worker, figures=shipped)


def finish_job(job: Job, result: RunResult, *, root: str | Path, out_dir: str | Path, profile: str) -> Outcome:
    """Write the output of a finished run (wherever it ran): on success the executed notebook
    with its provenance (including the worker) replaces the old output atomically, and shipped
    figures go to ``<out_dir>/figures``; on failure nothing is written."""
    import base64

    import nbformat

    root, out_dir = Path(root), Path(out_dir)
    if result.status != "ok" or result.notebook is None:
        return Outcome(job.label, "failed", result.seconds, result.error or "unknown error", utc_time(), result.worker)
    executed = nbformat.reads(result.notebook, as_version=4)
    provenance = collect(
        notebook=job.name, profile=profile, device=job.device, parameters=job.parameters,
        defaults=job.defaults, wall_time_s=result.seconds, root=root, input_hash=job.input_hash,
        worker=result.worker,
    )
    _finalize(executed, job, provenance, checks_from_notebook(executed), required_from_notebook(executed))
    for name, data in result.figures.items():
        _write_bytes_atomic(base64.b64decode(data), figure_folder(job, out_dir) / Path(name).name)
    _write_atomic(executed, job.output)
    return Outcome(job.label, "ok", result.seconds, finished=utc_time(), worker=result.worker)


def execute_job(job: Job, *, root: str | Path, out_dir: str | Path, profile: str) -> Outcome:
    """Execute one notebook with papermill in this process; on success replace its output, else keep the old one."""
    root, out_dir = Path(root), Path(out_dir)
    return finish_job(job, run_notebook(run_spec(job, root=root, out_dir=out_dir)), root=root, out_dir=out_dir, profile=profile)


def write_failure_page(job: Job, outcome: Outcome, *, profile: str) -> None:
    """Write the page of a notebook that failed with no earlier good run: its title and the
    error, marked ``placeholder`` in ``metadata.ufm`` (never "up to date", so the next run
    executes it again)."""
    import nbformat

    source = read_notebook(job.source)
    at = _title_index(source)
    title = next((line for line in source.cells[at - 1].source.splitlines() if line.startswith("# ")),
                 f"# {job.name}") if at else f"# {job.name}"
    when = outcome.finished or utc_time()
    error = "\n".join("    " + line for line in (outcome.error or "unknown error").splitlines())
    text = "\n".join([
        ":::{admonition} This chapter has not been computed",
        ":class: error",
        f"The run of {when} (profile **{profile}**) failed, and there is no earlier good run to show. "
        "The error:",
        "",
        error,
        "",
        "Run `ufm regenerate` again once the cause is fixed; the page is then replaced by the executed chapter.",
        ":::",
    ])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = source.metadata.get("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    nb.metadata["ufm"] = {"notebook": job.name, "placeholder": True, "checks": [], "required": []}
    nb.cells = [nbformat.v4.new_markdown_cell(title), nbformat.v4.new_markdown_cell(text, metadata={"tags": ["ufm-failure"]})]
    _write_atomic(nb, job.output)
