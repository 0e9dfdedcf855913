"""Benchmark: one profile serially, with ``--jobs N`` and through a Dask cluster of N workers.

Runs :func:`ufmlib.book.regenerate.regenerate` (``force=True``, no book build) three times in
this process, on the repository's notebooks, each into its own temporary output folder (the
repository's ``outputs/`` and ``book/chapters/`` are never touched):

1. serially (the baseline);
2. with ``jobs=N``;
3. with ``scheduler=`` the address of a ``distributed.LocalCluster`` of N single-threaded
   worker processes started by this script (and closed afterwards);

and prints the wall time of each, its ratio to the serial run, and whether every notebook's
glued values and checks equal the serial run's. Run from the repository root:

    python benchmarks/parallel.py                       # profile smoke, N = 2
    python benchmarks/parallel.py --profile ci --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MPLBACKEND", "Agg")

from ufmlib.book.provenance import checks_from_notebook, glued_from_notebook  # noqa: E402
from ufmlib.book.regenerate import regenerate  # noqa: E402


def _results(folder: Path, names: list[str]) -> dict[str, tuple]:
    import json

    out = {}
    for name in names:
        nb = json.loads((folder / "notebooks" / f"{name}.ipynb").read_text())
        out[name] = (glued_from_notebook(nb), [c.as_dict() for c in checks_from_notebook(nb)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--workers", type=int, default=2, help="N: jobs and Dask workers (default 2)")
    parser.add_argument("--only", default=None, help="notebooks to run (as ufm regenerate --only)")
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    rows, serial = [], None
    with tempfile.TemporaryDirectory(prefix="ufm-bench-parallel-") as tmp:
        ways = [("serial", {}), (f"--jobs {args.workers}", {"jobs": args.workers}), (f"{args.workers} Dask workers", None)]
        for label, options in ways:
            out = Path(tmp) / label.replace(" ", "-")
            cluster = None
            if options is None:
                cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", host="127.0.0.1")
                options = {"scheduler": cluster.scheduler_address}
            try:
                start = time.perf_counter()
                report = regenerate(args.profile, root=REPO, only=args.only, out_dir=out, build_book=False,
                                    force=True, progress=False, stream=open(os.devnull, "w"), **options)
                seconds = time.perf_counter() - start
            finally:
                if cluster is not None:
                    cluster.close()
            ran = [o.name for o in report.outcomes]
            results = _results(out, ran) if report.exit_code == 0 else None
            if serial is None:
                serial = (seconds, results)
            same = "(baseline)" if label == "serial" else ("yes" if results == serial[1] else "NO")
            rows.append((label, seconds, serial[0] / seconds, report.exit_code, same, len(ran)))
    print(f"profile {args.profile}, {rows[0][5]} notebooks; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'how':<18} {'wall s':>8} {'speed-up':>9} {'exit':>5}  same glued values and checks as serial")
    for label, seconds, ratio, code, same, _ in rows:
        print(f"{label:<18} {seconds:8.1f} {ratio:8.2f}x {code:5d}  {same}")
    return 0 if all(r[3] == 0 and r[4] in ("yes", "(baseline)") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
