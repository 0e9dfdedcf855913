"""The whole run: plan, execute every notebook serially, write the status page, build the book.

:func:`regenerate` is what ``ufm regenerate`` calls (:mod:`ufmlib.book.cli`); its steps are
described in :mod:`ufmlib.book`. A notebook whose inputs are unchanged since its last good
output is "up to date" and not executed again (unless ``force``); a failed notebook does not
stop the run; Ctrl-C stops it after writing the status of what finished.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import build
from .execute import Outcome, execute_job, read_metadata, write_failure_page
from .profiles import OUTPUTS, find_root, load_profile, plan
from .status import write_status

__all__ = ["Report", "regenerate"]


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
    """Run the notebooks under ``profile`` (serially) and build the book; see :mod:`ufmlib.book`.

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
        meta = read_metadata(job.output) if job.output.exists() else {}
        if not force and meta.get("provenance", {}).get("input_hash") == job.input_hash:
            outcomes.append(Outcome(job.name, "up to date", 0.0))
            continue
        start = time.perf_counter()
        try:
            outcome = execute_job(job, root=root, out_dir=out, profile=prof.name)
            outcomes.append(outcome)
            if outcome.status == "failed" and (not job.output.exists() or meta.get("placeholder")):
                write_failure_page(job, outcome, profile=prof.name)  # no earlier good run: the page shows the error
        except KeyboardInterrupt:
            # Ctrl-C: the notebook keeps its previous output; report, write the status, then stop
            outcomes.append(Outcome(job.name, "interrupted", time.perf_counter() - start,
                                    "interrupted (Ctrl-C); a second run resumes with what is missing"))
            interrupted = True
            break
    bar.close()
    write_status(root, out_dir=out, runs=outcomes, profile=prof.name)
    print(Report(prof.name, tuple(outcomes), None).table(), file=stream)
    if interrupted:
        stream.flush()
        raise KeyboardInterrupt
    book_status = None
    if build_book:
        print("building the book: jupyter-book build . -W -n --keep-going", file=stream, flush=True)
        book_status = build.build_book(root)
    report = Report(prof.name, tuple(outcomes), book_status)
    for o in report.failed:
        page = read_metadata(next(j.output for j in jobs if j.name == o.name))
        kept = "no earlier good run: its page shows the error" if page.get("placeholder") else "previous output kept"
        print(f"\nFAILED {o.name} ({kept}):\n{o.error}", file=stream)
    if book_status not in (None, 0):
        print(f"\nthe book build failed (exit status {book_status})", file=stream)
    if report.exit_code == 0:
        print(f"\nall {len(outcomes)} notebook(s) ok" + (", book built in _build/html" if build_book else ""), file=stream)
    stream.flush()
    return report
