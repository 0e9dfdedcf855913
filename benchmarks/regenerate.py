"""Benchmark: where the time of ``ufm regenerate --profile ci`` goes.

Runs :func:`ufmlib.book.regenerate.regenerate` (``force=True``) end to end on a copy of the book's
sources in a temporary folder - the repository's files, ``outputs/`` and ``_build/`` are never
touched - and prints, per notebook and in total, the seconds spent in

* **start-up**: kernel start, papermill and kernel shutdown = the notebook's wall time minus
  the sum of its cells' execution times (papermill records ``metadata.papermill.duration`` for
  every cell); an empty notebook (only a parameters cell) run through the same path
  (:func:`ufmlib.book.execute.execute_job`) is timed separately as a reference;
* **imports**: cells that import modules and call nothing of the categories below;
* **training**: cells that call gradient descent (``ufmlib.train.train``,
  ``ufmlib.networks.train_network``, ``ufmlib.dynamics.record_dynamics``,
  ``ufmlib.screening.screen_seeds``); spectra measured
  *during* training (the recorders' callbacks) count here;
* **spectra**: cells that call the spectral routines (the public functions of
  ``ufmlib.hessian``, ``full_hessian``, ``lanczos``, ``slq``, ``matrices``, ``decompose``,
  ``analysis``, ``alignment``, ``levels``, and ``eig*``/``svd*`` of ``torch.linalg``/``numpy.linalg``);
* **plotting**: cells that call ``ufmlib.plotting`` or matplotlib (``plt.``, ``ax.``/``axes[...]``
  methods);
* **other**: everything else (closed-form predictions, checks, glue, tables).

The classification is per cell, by the names the cell's source calls: a cell that matches
several categories counts for the first of training, spectra, plotting (so the shares are
estimates at cell granularity; a notebook that mixes plotting into its training cells shifts
time into training). The book build (``jupyter-book build``) is timed too unless
``--no-book``. Run from the repository root:

    python benchmarks/regenerate.py                 # profile ci, with the book
    python benchmarks/regenerate.py --profile smoke --no-book --json timings.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ufmlib.book.build import build_book  # noqa: E402
from ufmlib.book.execute import Outcome, execute_job  # noqa: E402
from ufmlib.book.profiles import Profile, executed_dir, plan  # noqa: E402
from ufmlib.book.regenerate import regenerate  # noqa: E402

SOURCES = ["_config.yml", "_toc.yml", "references.bib", "book", "notebooks", "profiles"]
CATEGORIES = ("start-up", "imports", "training", "spectra", "plotting", "other")

TRAINING = {"train", "train_network", "record_dynamics", "screen_seeds"}
SPECTRA_MODULES = ("hessian", "full_hessian", "lanczos", "slq", "matrices", "decompose", "analysis", "alignment",
                   "levels")
PLOTTING_MODULES = ("plotting",)
LINALG = re.compile(r"\blinalg\.(eig\w*|svd\w*)\s*\(")
MATPLOTLIB = re.compile(r"\b(plt|ax|axes|axs|fig)(\[[^\]]*\])*\.\w+\s*\(")
IMPORT = re.compile(r"^\s*(import|from)\s+\w", flags=re.M)


def _public_functions(module: str) -> set[str]:
    try:
        mod = importlib.import_module(f"ufmlib.{module}")
    except ImportError:
        return set()
    names = getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")])
    return {n for n in names if n[:1].islower() and callable(getattr(mod, n, None))}


def _calls(source: str, names: set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}\s*\(|\.{re.escape(n)}\s*\(", source) for n in names)


def classifier():
    """A function ``source -> category`` (see the module docstring)."""
    spectra = set().union(*(_public_functions(m) for m in SPECTRA_MODULES)) - TRAINING
    plotting = set().union(*(_public_functions(m) for m in PLOTTING_MODULES))

    def classify(source: str) -> str:
        if _calls(source, TRAINING):
            return "training"
        if _calls(source, spectra) or LINALG.search(source):
            return "spectra"
        if _calls(source, plotting) or MATPLOTLIB.search(source):
            return "plotting"
        if IMPORT.search(source):
            return "imports"
        return "other"

    return classify


@dataclass
class NotebookTiming:
    name: str
    status: str
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)


def notebook_timing(outcome: Outcome, executed: Path, classify) -> NotebookTiming:
    """Split one notebook's wall time into :data:`CATEGORIES` from its executed cells."""
    parts = dict.fromkeys(CATEGORIES, 0.0)
    if outcome.status == "ok" and executed.is_file():
        nb = json.loads(executed.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            duration = (cell.get("metadata", {}).get("papermill", {}) or {}).get("duration")
            if duration is None:
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            parts[classify(source)] += float(duration)
        parts["start-up"] = max(0.0, outcome.seconds - sum(parts.values()))
    return NotebookTiming(outcome.name, outcome.status, outcome.seconds, parts)


EMPTY = """---
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---

# Empty

```{code-cell} ipython3
:tags: [parameters]

seed: int = 0  # seed
device: str = "cpu"  # device
```
"""


def startup_probe(runs: int, work: Path) -> list[float]:
    """Wall times of an empty notebook through the papermill path of ``ufm regenerate``."""
    root = work / "probe"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "empty.md").write_text(EMPTY)
    (root / "ufmlib").symlink_to(REPO / "ufmlib", target_is_directory=True)
    prof = Profile("probe", "", {"device": "cpu"}, {})
    times = []
    for _ in range(runs):
        job = plan(prof, root=root, out_dir=root / "outputs")[0]
        outcome = execute_job(job, root=root, out_dir=root / "outputs", profile="probe")
        if outcome.status != "ok":
            raise RuntimeError(f"the empty notebook failed: {outcome.error}")
        times.append(outcome.seconds)
    return times


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy(src, dest / name)
    (dest / "ufmlib").symlink_to(REPO / "ufmlib", target_is_directory=True)
    return dest


def _fmt_row(cells, widths):
    return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def report_text(profile: str, timings: list[NotebookTiming], total: float, book: float | None, probe: list[float]) -> str:
    notebooks = sum(t.seconds for t in timings)
    width = max([len("notebook"), len("total")] + [len(t.name) for t in timings])
    widths = [width, 10] + [9] * (1 + len(CATEGORIES))
    head = ["notebook", "status", "seconds", *CATEGORIES]
    lines = [
        f"ufm regenerate --profile {profile} --force: {len(timings)} notebook(s), end to end {total:.1f} s "
        f"(notebooks {notebooks:.1f} s" + (f", book build {book:.1f} s" if book is not None else "") + ")",
        _fmt_row(head, widths), "-" * (sum(widths) + 2 * (len(widths) - 1)),
    ]
    sums = dict.fromkeys(CATEGORIES, 0.0)
    for t in timings:
        for c in CATEGORIES:
            sums[c] += t.parts.get(c, 0.0)
        lines.append(_fmt_row([t.name, t.status, f"{t.seconds:.1f}", *(f"{t.parts.get(c, 0.0):.1f}" for c in CATEGORIES)], widths))
    lines.append(_fmt_row(["total", "", f"{notebooks:.1f}", *(f"{sums[c]:.1f}" for c in CATEGORIES)], widths))
    if notebooks > 0:
        lines.append(_fmt_row(["share", "", "100%", *(f"{100 * sums[c] / notebooks:.0f}%" for c in CATEGORIES)], widths))
    lines.append("")
    lines.append("shares of the end-to-end time: " + ", ".join(
        f"{c} {100 * sums[c] / total:.0f}%" for c in CATEGORIES) + (f", book build {100 * book / total:.0f}%" if book else "")
        + f", rest {100 * max(0.0, total - notebooks - (book or 0.0)) / total:.0f}%")
    if probe:
        lines.append(f"empty notebook through papermill (kernel start-up reference): median {statistics.median(probe):.2f} s "
                     f"of {len(probe)} run(s): " + ", ".join(f"{x:.2f}" for x in probe))
    failed = [t.name for t in timings if t.status != "ok"]
    if failed:
        lines.append("FAILED notebooks (their cells are not split): " + ", ".join(failed))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="ci", help="parameter profile (default ci)")
    parser.add_argument("--only", default=None, metavar="PATTERN", help="only the notebooks matching PATTERN")
    parser.add_argument("--no-book", action="store_true", help="do not time the book build")
    parser.add_argument("--startup-runs", type=int, default=3, help="runs of the empty notebook (default 3; 0: none)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the timings as JSON to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args(argv)
    if args.startup_runs < 0:
        parser.error("--startup-runs must be >= 0")

    work = Path(tempfile.mkdtemp(prefix="ufm-bench-regenerate-"))
    try:
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (the kernels get 1)')}", flush=True)
        root = copy_sources(work / "book")
        start = time.perf_counter()
        report = regenerate(args.profile, only=args.only, build_book=False, force=True, root=root, progress=False)
        notebooks_done = time.perf_counter()
        book = None
        if not args.no_book:
            status = build_book(root)
            book = time.perf_counter() - notebooks_done
            if status != 0:
                print(f"the book build exited with {status}", flush=True)
        total = time.perf_counter() - start
        classify = classifier()
        timings = [notebook_timing(o, executed_dir(root) / f"{o.name}.ipynb", classify) for o in report.outcomes]
        probe = startup_probe(args.startup_runs, work) if args.startup_runs else []
        print()
        print(report_text(args.profile, timings, total, book, probe))
        if args.json:
            Path(args.json).write_text(json.dumps({
                "profile": args.profile, "end_to_end_s": total, "book_build_s": book, "empty_notebook_s": probe,
                "notebooks": [asdict(t) for t in timings], "load_average": list(load),
            }, indent=1) + "\n")
        if args.keep:
            print(f"\nkept: {work}")
        return 0 if report.exit_code == 0 and (book is None or status == 0) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
