"""One notebook in a child process of its own, and how to stop it with everything it started.

``python -m ufmlib.book.worker SPEC.json RESULT.json`` reads a
:class:`~ufmlib.book.execute.RunSpec`, executes it with :func:`~ufmlib.book.execute.run_notebook`
and writes the :class:`~ufmlib.book.execute.RunResult` as JSON (atomically). :func:`run_in_subprocess`
is how ``ufm regenerate --jobs N`` and the Dask workers (:mod:`ufmlib.book.cluster`) run a notebook:
in its own process group, so that Ctrl-C in the terminal reaches only ``ufm``, which then stops
every running notebook with :func:`stop_tree` (the process, its Jupyter kernel and whatever the
kernel started). A child whose parent dies (a Dask worker killed mid-notebook) stops itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from .execute import RunResult, RunSpec, run_notebook

__all__ = ["WORKER_ENV", "run_in_subprocess", "stop_tree", "main"]

WORKER_ENV = "UFM_WORKER"
"""Environment variable naming the worker a child process runs for (recorded in the provenance)."""


def stop_tree(pid: int, *, grace_s: float = 3.0) -> None:
    """Terminate process ``pid`` and all its descendants (SIGTERM, then SIGKILL after ``grace_s``).

    The Jupyter kernel is a descendant in a session of its own (jupyter_client starts it so),
    which is why the tree is collected first instead of signalling a process group."""
    import psutil

    try:
        top = psutil.Process(pid)
        procs = [*top.children(recursive=True), top]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def _child_environment() -> dict[str, str]:
    """The child's environment: this process's, with the ufmlib it imported first on the path."""
    import ufmlib

    env = dict(os.environ)
    package_root = str(Path(ufmlib.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
    return env


def run_in_subprocess(spec: RunSpec, *, worker: str = "local",
                      started: Callable[[subprocess.Popen], None] | None = None) -> RunResult:
    """Execute ``spec`` in a child process (``python -m ufmlib.book.worker``) and return its result.

    ``started`` is called with the child's :class:`subprocess.Popen` as soon as it runs (to stop
    it with :func:`stop_tree`). A child that ends without writing a result - killed, out of
    memory - gives a ``failed`` result naming its exit status and the end of its stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ufm-worker-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec.as_dict()))
        env = {**_child_environment(), WORKER_ENV: worker}
        with open(Path(tmp) / "stderr.txt", "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ufmlib.book.worker", str(spec_path), str(result_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True,
            )
            if started is not None:
                started(proc)
            code = proc.wait()
            err.seek(0)
            tail = err.read().decode("utf-8", "replace").strip().splitlines()[-8:]
        if result_path.is_file():
            return RunResult.from_dict(json.loads(result_path.read_text()))
        how = f"was stopped by signal {-code}" if code < 0 else f"exited with status {code}"
        detail = ("\n" + "\n".join(tail)) if tail else ""
        return RunResult(spec.name, "failed", time.perf_counter() - start, worker=worker,
                         error=f"RuntimeError: the process running {spec.name} {how} before it finished{detail}")


def _stop_with_parent() -> None:
    """Stop this process (and its kernel) as soon as its parent is gone: a notebook whose Dask
    worker was killed must not go on using the machine."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                import psutil

                for child in psutil.Process().children(recursive=True):
                    try:
                        child.kill()
                    except psutil.NoSuchProcess:
                        pass
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ufm-parent-watch").start()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ufmlib.book.worker SPEC.json RESULT.json``: run one spec, write its result."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m ufmlib.book.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    _stop_with_parent()
    spec = RunSpec.from_dict(json.loads(Path(args[0]).read_text()))
    result = run_notebook(spec, worker=os.environ.get(WORKER_ENV, "local"))
    out = Path(args[1])
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(result.as_dict()))
    os.replace(partial, out)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())
