"""The whole run: plan, execute the notebooks, write the status page, build the book.

:func:`regenerate` is what ``ufm regenerate`` calls (:mod:`ufmlib.book.cli`); its steps are
described in :mod:`ufmlib.book`. A notebook whose inputs are unchanged since its last good
output is "up to date" and not executed again (unless ``force``); the others run serially,
``jobs`` at a time or on a Dask cluster (:mod:`ufmlib.book.executors`); a failed notebook does
not stop the run; Ctrl-C stops it after writing the status of what finished.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import build
from .execute import Outcome, read_metadata, write_failure_page
from .executors import check_parallelism, run_jobs
from .profiles import OUTPUTS, Job, find_root, load_profile, plan
from .status import write_status

__all__ = ["Report", "regenerate", "up_to_date"]


@dataclass(frozen=True)
class Report:
    """Outcome of :func:`regenerate`; ``exit_code`` is 0 only if every notebook and the book passed."""

    profile: str
    outcomes: tuple[Outcome, ...]
    book_status: int | None

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """The notebooks that failed or were interrupted."""
        return tuple(o for o in self.outcomes if o.status in ("failed", "interrupted"))

    @property
    def exit_code(self) -> int:
        """0 when every notebook and the book passed, else 1."""
        return 1 if self.failed or (self.book_status not in (None, 0)) else 0

    def table(self) -> str:
        """The outcomes as a plain-text table: notebook, status, seconds."""
        width = max([len("notebook")] + [len(o.name) for o in self.outcomes])
        lines = [f"{'notebook':<{width}}  {'status':<10}  {'seconds':>8}", "-" * (width + 22)]
        lines += [f"{o.name:<{width}}  {o.status:<10}  {o.seconds:8.1f}" for o in self.outcomes]
        return "\n".join(lines)


def up_to_date(job: Job) -> bool:
    """Whether ``job``'s output came from a good run with exactly its inputs (the content cache)."""
    meta = read_metadata(job.output) if job.output.exists() else {}
    return meta.get("provenance", {}).get("input_hash") == job.input_hash


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
    jobs: int = 1,
    scheduler: str | None = None,
) -> Report:
    """Run the notebooks under ``profile`` and build the book; see :mod:`ufmlib.book`.

    The notebooks run serially in this process, ``jobs`` at a time in child processes, or as
    tasks on the Dask cluster at ``scheduler`` (:func:`ufmlib.book.executors.run_jobs`); the
    outputs are the same. Raises :class:`ProfileError` (or :class:`ValueError` for ``jobs`` /
    ``scheduler``, :class:`OSError` for an unreachable scheduler) before any kernel starts.
    Failed notebooks do not stop the run; they are listed in the returned :class:`Report`
    (and printed with their error), and keep their previous output. ``out_dir`` (default
    ``<root>/outputs``) must be ``<root>/outputs`` when the book is built.
    """
    stream = stream or sys.stdout
    check_parallelism(jobs, scheduler)
    root = find_root(root)
    out = Path(out_dir).resolve() if out_dir is not None else root / OUTPUTS
    if build_book and out != (root / OUTPUTS).resolve():
        raise ValueError(f"out_dir: the book reads {root / OUTPUTS}; pass build_book=False to write to {out}")
    prof = load_profile(profile, root=root)
    planned = plan(prof, root=root, out_dir=out, only=only, device=device)
    todo = [job for job in planned if force or not up_to_date(job)]
    placeholders = {job.name for job in todo if not job.output.exists() or read_metadata(job.output).get("placeholder")}

    def on_outcome(job: Job, outcome: Outcome) -> None:
        if outcome.status == "failed" and job.name in placeholders:
            write_failure_page(job, outcome, profile=prof.name)  # no earlier good run: the page shows the error

    batch = run_jobs(todo, root=root, out_dir=out, profile=prof.name, jobs=jobs, scheduler=scheduler,
                     progress=progress, desc=f"regenerate [{prof.name}]", on_outcome=on_outcome)
    ran, to_run = {o.name: o for o in batch.outcomes}, {job.name for job in todo}
    outcomes = [Outcome(job.name, "up to date", 0.0) if job.name not in to_run else ran[job.name]
                for job in planned if job.name not in to_run or job.name in ran]  # not started: no outcome
    write_status(root, out_dir=out, runs=outcomes, profile=prof.name)
    print(Report(prof.name, tuple(outcomes), None).table(), file=stream)
    if batch.interrupted:
        stream.flush()
        raise KeyboardInterrupt
    book_status = None
    if build_book:
        print("building the book: jupyter-book build . -W -n --keep-going", file=stream, flush=True)
        book_status = build.build_book(root)
    report = Report(prof.name, tuple(outcomes), book_status)
    for o in report.failed:
        page = read_metadata(next(j.output for j in planned if j.name == o.name))
        kept = "no earlier good run: its page shows the error" if page.get("placeholder") else "previous output kept"
        print(f"\nFAILED {o.name} ({kept}):\n{o.error}", file=stream)
    if book_status not in (None, 0):
        print(f"\nthe book build failed (exit status {book_status})", file=stream)
    if report.exit_code == 0:
        print(f"\nall {len(outcomes)} notebook(s) ok" + (", book built in _build/html" if build_book else ""), file=stream)
    stream.flush()
    return report
