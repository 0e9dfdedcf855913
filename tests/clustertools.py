"""Helpers of the tests that run many notebooks at once (``test_parallel.py``, ``test_sweep.py``).

:func:`dask_cluster` starts a Dask scheduler and workers on 127.0.0.1 as separate processes
(``dask scheduler``, ``dask worker --no-nanny``: a killed worker stays dead) and stops them all
afterwards; :func:`tiny_repo` writes a repository of three small notebooks: ``quick1``,
``gate`` (which waits until the file named by its ``flag`` parameter exists, so that a test
decides when it ends) and ``quick2``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from booktools import SEED_AND_DEVICE, notebook_text

__all__ = ["dask_cluster", "tiny_repo", "glued_and_checks"]


def _dask_command() -> list[str]:
    here = Path(sys.executable).parent / "dask"
    return [str(here)] if here.is_file() else [shutil.which("dask") or "dask"]


@contextlib.contextmanager
def dask_cluster(folder: Path, *, workers: int, allowed_failures: int | None = None) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A scheduler and ``workers`` single-threaded workers on 127.0.0.1: yields the scheduler's
    address and the worker processes; everything is stopped on exit."""
    from ufmlib.book.worker import stop_tree

    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "scheduler.json"
    env = dict(os.environ)
    if allowed_failures is not None:
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
    logs = []
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> subprocess.Popen:
        handle = open(folder / log, "wb")
        logs.append(handle)
        proc = subprocess.Popen([*_dask_command(), *args], stdout=handle, stderr=subprocess.STDOUT, env=env,
                                cwd=folder, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
              "scheduler.log")
        deadline = time.monotonic() + 60
        while not info.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        started = [start(["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                          "--name", f"w{i}"], f"worker{i}.log") for i in range(workers)]
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        yield address, started
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                stop_tree(proc.pid)
        for handle in logs:
            handle.close()


def _chapter(title: str, params: str, body: str) -> str:
    return notebook_text(title, params + "\n" + SEED_AND_DEVICE, body, prose="Some prose.")


QUICK = """
from ufmlib.notebook import check, glue
from ufmlib.plotting import save_figure
import matplotlib.pyplot as plt
value = 0.25 * (seed + 1) * scale
if value > limit:
    raise ValueError(f"value {value} is over the limit {limit}")
glue("value", value)
glue("doubled", 2 * value)
check("double", 2 * value, value + value, rtol=1e-15, result="R1", kind="identity", description="2v is v + v")
fig, ax = plt.subplots()
ax.plot([0, 1], [0, value])
save_figure(fig, "line")
plt.close(fig)
"""

GATE = """
import pathlib
import time
from ufmlib.notebook import glue
deadline = time.monotonic() + timeout_s
while flag and not pathlib.Path(flag).exists() and time.monotonic() < deadline:
    time.sleep(0.1)
if flag and not pathlib.Path(flag).exists():
    raise TimeoutError(f"{flag} did not appear within {timeout_s} s")
glue("opened", 1)
"""


def tiny_repo(tmp_path: Path, *, flag: Path) -> Path:
    """A repository of the notebooks ``quick1``, ``gate`` and ``quick2`` and the profile ``p``
    (``gate`` waits for ``flag``); it has no ``ufmlib`` of its own (kernels use the installed one)."""
    import jupytext

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "profiles").mkdir()
    quick_params = "scale: float = 1.0  # scales the value\nlimit: float = 100.0  # larger values fail"
    gate_params = "flag: str = \"\"  # file to wait for\ntimeout_s: float = 120.0  # longest wait"
    for name, text in {"quick1": _chapter("Quick one", quick_params, QUICK),
                       "gate": _chapter("Gate", gate_params, GATE),
                       "quick2": _chapter("Quick two", quick_params, QUICK)}.items():
        md = root / "notebooks" / f"{name}.md"
        md.write_text(text)
        jupytext.write(jupytext.read(md), md.with_suffix(".ipynb"), fmt="ipynb")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   "  - file: book/chapters/quick1\n  - file: book/chapters/gate\n  - file: book/chapters/quick2\n")
    (root / "profiles" / "p.yaml").write_text(f"notebooks:\n  gate: {{flag: {json.dumps(str(flag))}}}\n")
    return root


def glued_and_checks(path: Path) -> tuple[dict, list]:
    """The glued values and the check records of an executed notebook."""
    from ufmlib.book.provenance import checks_from_notebook, glued_from_notebook

    nb = json.loads(Path(path).read_text())
    return glued_from_notebook(nb), [c.as_dict() for c in checks_from_notebook(nb)]
