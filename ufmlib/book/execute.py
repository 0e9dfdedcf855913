"""Executing one notebook: papermill in a prepared environment, then the finished output.

:func:`execute_job` runs a :class:`~ufmlib.book.profiles.Job` with papermill into a temporary
file; only when every cell succeeded does the executed notebook - with its provenance and
checks in ``metadata.ufm``, the provenance box under its title and the injected parameters
hidden - replace the previous output, atomically. A failure is returned as an
:class:`Outcome` with the failing cell and the end of its traceback; the old output stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ufmlib.notebook import BOOK_BUILD_ENV
from ufmlib.runtime import thread_environment

from .parameters import read_notebook
from .profiles import KERNEL, Job
from .provenance import checks_from_notebook, collect, markdown_box, required_from_notebook, utc_time

__all__ = ["Outcome", "execute_job", "read_metadata", "write_failure_page"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one notebook: ``ok``, ``failed``, ``interrupted`` or ``up to date``."""

    name: str
    status: str
    seconds: float
    error: str | None = None
    finished: str | None = None
    """When the run ended (``YYYY-MM-DD HH:MM UTC``); set by :func:`execute_job`."""


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


def _write_atomic(nb, path: Path) -> None:
    """Write ``nb`` to ``path`` through a ``.partial`` file, so that ``path`` is never half written."""
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    nbformat.write(nb, str(partial))
    os.replace(partial, path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata.ufm`` of an executed notebook (notebook, provenance, checks); ``{}`` when
    ``path`` cannot be read or is no executed notebook."""
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("ufm", {})
    except (OSError, ValueError):
        return {}


def execute_job(job: Job, *, root: str | Path, out_dir: str | Path, profile: str) -> Outcome:
    """Execute one notebook with papermill; on success replace its output, else keep the old one."""
    import nbformat
    import papermill as pm

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
                    config=_client_config(),  # encrypted transport: no warning per kernel
                )
        except Exception as exc:  # noqa: BLE001 - any failure of one notebook is reported, the run goes on
            return Outcome(job.name, "failed", time.perf_counter() - start, _format_error(exc), utc_time())
        seconds = time.perf_counter() - start
        executed = nbformat.read(str(tmp_out), as_version=4)
    checks = checks_from_notebook(executed)
    provenance = collect(
        notebook=job.name, profile=profile, device=job.device, parameters=job.parameters,
        defaults=job.defaults, wall_time_s=seconds, root=root, input_hash=job.input_hash,
    )
    _finalize(executed, job, provenance, checks, required_from_notebook(executed))
    _write_atomic(executed, job.output)
    return Outcome(job.name, "ok", seconds, finished=utc_time())


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
