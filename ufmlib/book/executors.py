"""Running many notebooks: one after another, N at a time on this machine, or on a Dask cluster.

:func:`run_jobs` executes a list of :class:`~ufmlib.book.profiles.Job` and writes each finished
output here (:func:`~ufmlib.book.execute.finish_job`), whichever way the notebooks ran:

* ``jobs=1`` (the default): serially, in this process (:func:`~ufmlib.book.execute.execute_job`);
* ``jobs=N``: up to N at once, each in a child process with its own kernel and one torch
  thread (:class:`LocalPool`, :func:`~ufmlib.book.worker.run_in_subprocess`);
* ``scheduler="tcp://HOST:PORT"``: each notebook is one task on a Dask distributed cluster
  (:class:`ufmlib.book.cluster.DaskPool`); the worker returns the executed notebook and its
  figures, and this process writes them.

The same parameters give the same outputs every way: every kernel runs one thread, and the
outputs are written by the same function. The progress bar names the notebooks running. Ctrl-C
stops every running notebook (and, on a cluster, cancels the tasks), keeps the outputs that
finished, and marks the ones that were running ``interrupted``; a second run resumes with what
is missing, because finished outputs are up to date.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .execute import Outcome, RunResult, RunSpec, execute_job, finish_job, run_spec
from .profiles import Job, library_hash

__all__ = ["Batch", "LocalPool", "run_jobs", "check_parallelism"]


@dataclass(frozen=True)
class Batch:
    """The outcomes of :func:`run_jobs`, in the order of the jobs, and whether Ctrl-C stopped it."""

    outcomes: tuple[Outcome, ...]
    interrupted: bool


def check_parallelism(jobs: int, scheduler: str | None) -> None:
    """:class:`ValueError` naming the option unless ``jobs`` is a positive int and ``scheduler``
    (if given) a ``tcp://HOST:PORT`` address used without ``jobs``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected a positive integer; got {jobs!r}")
    if scheduler is not None:
        if not isinstance(scheduler, str) or "://" not in scheduler or not scheduler.split("://", 1)[1]:
            raise ValueError(f"scheduler: expected an address such as tcp://127.0.0.1:8786; got {scheduler!r}")
        if jobs != 1:
            raise ValueError("jobs and scheduler exclude each other: the cluster's workers decide how many run at once")


class LocalPool:
    """Up to ``size`` notebooks at once on this machine, each in a child process."""

    def __init__(self, size: int):
        self._executor = cf.ThreadPoolExecutor(max_workers=size, thread_name_prefix="ufm-job")
        self._futures: dict[cf.Future, Job] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def _run(self, job: Job, spec: RunSpec) -> RunResult:
        from .worker import run_in_subprocess

        if self._stopping.is_set():
            return RunResult(job.name, "failed", 0.0, error="not started (interrupted)")

        def started(proc) -> None:
            with self._lock:
                self._running[job.label] = proc.pid
            if self._stopping.is_set():  # Ctrl-C came while it started
                self._stop_one(job.label)

        try:
            return run_in_subprocess(spec, started=started)
        finally:
            with self._lock:
                self._running.pop(job.label, None)

    def submit(self, job: Job, spec: RunSpec) -> None:
        self._futures[self._executor.submit(self._run, job, spec)] = job

    def done(self, timeout: float) -> list[tuple[Job, RunResult]]:
        """The jobs that finished within ``timeout`` seconds (possibly none)."""
        finished, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [(self._futures.pop(f), f.result()) for f in finished]

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _stop_one(self, label: str) -> None:
        from .worker import stop_tree

        with self._lock:
            pid = self._running.get(label)
        if pid is not None:
            stop_tree(pid)

    def stop(self) -> None:
        """Stop every running notebook and start no other."""
        self._stopping.set()
        for future in self._futures:
            future.cancel()
        for label in self.running():
            self._stop_one(label)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _serial(todo: Sequence[Job], *, root: Path, out_dir: Path, profile: str, bar,
            on_outcome: Callable[[Job, Outcome], None]) -> Batch:
    outcomes: list[Outcome] = []
    for job in todo:
        bar.set_postfix_str(job.label)
        start = time.perf_counter()
        try:
            outcome = execute_job(job, root=root, out_dir=out_dir, profile=profile)
        except KeyboardInterrupt:
            # Ctrl-C: the notebook keeps its previous output; the rest did not start
            outcomes.append(_interrupted(job, time.perf_counter() - start))
            return Batch(tuple(outcomes), True)  # the notebooks after it did not start: no outcome
        outcomes.append(outcome)
        on_outcome(job, outcome)
        bar.update(1)
    return Batch(tuple(outcomes), False)


def _interrupted(job: Job, seconds: float) -> Outcome:
    return Outcome(job.label, "interrupted", seconds, "interrupted (Ctrl-C); a second run resumes with what is missing")


def _pooled(pool, todo: Sequence[Job], *, root: Path, out_dir: Path, profile: str, bar, ship_figures: bool,
            on_outcome: Callable[[Job, Outcome], None]) -> Batch:
    library = library_hash(root)
    outcomes: dict[int, Outcome] = {}
    index = {id(job): i for i, job in enumerate(todo)}
    interrupted, was_running, shown = False, set(), ""
    try:
        for job in todo:
            pool.submit(job, run_spec(job, root=root, out_dir=out_dir, library=library, ship_figures=ship_figures))
        while len(outcomes) < len(todo):
            for job, result in pool.done(timeout=0.5):
                outcome = finish_job(job, result, root=root, out_dir=out_dir, profile=profile)
                outcomes[index[id(job)]] = outcome
                on_outcome(job, outcome)
                bar.update(1)
            running = pool.running()
            now = ("running: " + ", ".join(running)) if running else ""
            if now != shown:  # redraw only when what runs changed
                bar.set_postfix_str(shown := now)
    except KeyboardInterrupt:
        interrupted, was_running = True, set(pool.running())
        pool.stop()
    except BaseException:
        pool.stop()  # an error here: no notebook goes on running without a reader
        raise
    finally:
        pool.close()
    for i, job in enumerate(todo):  # the notebooks stopped while running; those not started have no outcome
        if i not in outcomes and job.label in was_running:
            outcomes[i] = _interrupted(job, 0.0)
    return Batch(tuple(outcomes[i] for i in sorted(outcomes)), interrupted)


def run_jobs(
    todo: Sequence[Job],
    *,
    root: str | Path,
    out_dir: str | Path,
    profile: str,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    desc: str = "regenerate",
    on_outcome: Callable[[Job, Outcome], None] | None = None,
) -> Batch:
    """Execute ``todo`` serially, ``jobs`` at a time, or on the Dask cluster at ``scheduler``.

    ``on_outcome(job, outcome)`` is called here, in order of completion, after each output was
    written. Ctrl-C returns a :class:`Batch` with ``interrupted=True`` (the caller reports, then
    raises :class:`KeyboardInterrupt`). Raises :class:`ValueError` for bad options and
    :class:`OSError` when the scheduler cannot be reached, before any notebook runs.
    """
    from tqdm.auto import tqdm

    check_parallelism(jobs, scheduler)
    root, out_dir = Path(root), Path(out_dir)
    todo = list(todo)
    on_outcome = on_outcome or (lambda job, outcome: None)
    pool = None
    if scheduler is not None:
        from .cluster import DaskPool

        pool = DaskPool(scheduler)  # connects now: an unreachable scheduler fails before anything runs
    elif jobs > 1 and len(todo) > 1:
        pool = LocalPool(min(jobs, len(todo)))
    bar = tqdm(total=len(todo), desc=desc, unit="notebook", disable=not progress, file=sys.stderr)
    try:
        if pool is None:
            return _serial(todo, root=root, out_dir=out_dir, profile=profile, bar=bar, on_outcome=on_outcome)
        return _pooled(pool, todo, root=root, out_dir=out_dir, profile=profile, bar=bar,
                       ship_figures=scheduler is not None, on_outcome=on_outcome)
    finally:
        bar.close()
