"""Notebooks on a Dask distributed cluster: ``ufm regenerate --scheduler tcp://HOST:PORT``.

Each notebook is one task (:func:`run_on_worker`): the worker executes it in a child process
(:func:`~ufmlib.book.worker.run_in_subprocess`, so that its kernel gets a clean environment and
can be stopped) and returns the executed notebook and its figures as plain data; the client
(:class:`DaskPool`, used by :func:`ufmlib.book.executors.run_jobs`) writes them atomically, with
the worker's address and host in the provenance, and keeps the content cache as a local run
does. A worker runs a notebook only with the same ufmlib sources as the client's plan.

A cluster is any Dask deployment that gives a scheduler address, for example::

    dask scheduler                       # prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers 2   # on each machine with the project installed

A worker that dies mid-notebook: the scheduler re-runs its task elsewhere up to
``distributed.scheduler.allowed-failures`` times (Dask's setting, default 3), then reports it
killed; the client then submits it once more and, if that fails too, reports the notebook
failed. The other notebooks go on, and no output is written for the failed one.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

from .execute import RunResult, RunSpec
from .profiles import Job

__all__ = ["DaskPool", "run_on_worker", "CLIENT_RETRIES"]

CLIENT_RETRIES = 1
"""How many times the client submits a notebook again after its worker died."""


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("scheduler: running on a Dask cluster needs dask and distributed "
                         "(pip install 'ufmlib[distributed]')") from None
    return distributed


def run_on_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of one notebook: run ``spec`` (a :class:`RunSpec` as a dict) in a child
    process on this worker, figures shipped back, and return the :class:`RunResult` as a dict."""
    from distributed import get_worker

    from .worker import run_in_subprocess

    here = f"{get_worker().address} ({socket.gethostname()})"
    run = RunSpec.from_dict({**spec, "figures": None})
    return run_in_subprocess(run, worker=here).as_dict()


class DaskPool:
    """The notebooks of one run as tasks on the cluster at ``address`` (connects at once)."""

    def __init__(self, address: str, *, timeout_s: float = 20.0):
        distributed = _import_distributed()
        try:
            self._client = distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"scheduler: cannot reach the Dask scheduler at {address} ({exc})") from None
        self._distributed = distributed
        self._futures: dict[Any, tuple[Job, RunSpec, int]] = {}

    def _submit(self, job: Job, spec: RunSpec, attempt: int) -> None:
        key = f"ufm-{job.label}-{uuid.uuid4().hex[:8]}"
        future = self._client.submit(run_on_worker, spec.as_dict(), key=key, pure=False)
        self._futures[future] = (job, spec, attempt)

    def submit(self, job: Job, spec: RunSpec) -> None:
        self._submit(job, spec, 1)

    def done(self, timeout: float) -> list[tuple[Job, RunResult]]:
        """The notebooks finished within ``timeout`` seconds; a killed one is submitted again
        (:data:`CLIENT_RETRIES` times) before it counts as failed."""
        deadline = time.monotonic() + timeout
        finished = [f for f in self._futures if f.done()]
        while self._futures and not finished and time.monotonic() < deadline:
            time.sleep(0.1)  # a future's state is local: polling it asks the scheduler nothing
            finished = [f for f in self._futures if f.done()]
        out = []
        for future in finished:
            job, spec, attempt = self._futures.pop(future)
            if future.status == "finished":
                out.append((job, RunResult.from_dict(future.result())))
                continue
            exc = future.exception() if future.status == "error" else None
            killed = isinstance(exc, self._distributed.KilledWorker)
            if killed and attempt <= CLIENT_RETRIES:
                self._submit(job, spec, attempt + 1)
                continue
            if killed:
                error = (f"KilledWorker: the Dask worker running {job.label} died, "
                         f"{attempt} time(s) from this client (and as often as the scheduler allows): {exc}")
            elif exc is not None:
                error = f"{type(exc).__name__} on the Dask worker: {exc}"
            else:
                error = f"the Dask task of {job.label} ended as {future.status!r}"
            out.append((job, RunResult(job.name, "failed", 0.0, error=error, worker="dask")))
        return out

    def running(self) -> list[str]:
        """The notebooks the workers are running now (as the scheduler sees it)."""
        try:
            processing = self._client.processing()
        except Exception:  # noqa: BLE001 - the display only; the run goes on
            return []
        keys = {str(k) for keys in processing.values() for k in keys}
        return [job.label for future, (job, _, _) in self._futures.items() if str(future.key) in keys]

    def stop(self) -> None:
        """Cancel every task (a task already running finishes on its worker; its result is dropped)."""
        self._client.cancel(list(self._futures))

    def close(self) -> None:
        self._client.close()
