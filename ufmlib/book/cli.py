"""The command line of the book machinery: ``ufm regenerate``, ``ufm sweep`` and ``python -m ufmlib.book``.

:func:`register` and :func:`register_sweep` are the entry points ``regenerate`` and ``sweep`` of
group ``ufmlib.commands`` (see ``pyproject.toml``), through which :mod:`ufmlib.cli` adds the
subcommands without importing this package; :func:`main` is ``python -m ufmlib.book`` (the same
as ``ufm regenerate``). Exit status: 0 when every notebook (and the book) passed, 1 when one
failed, 2 for invalid input (one line on stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from .parameters import ProfileError
from .regenerate import regenerate

__all__ = ["add_arguments", "add_execution_arguments", "register", "run", "register_sweep", "run_sweep", "main"]

DESCRIPTION = ("Run every notebook (with papermill; serially, N at a time, or on a Dask cluster) under a "
               "parameter profile, record provenance and build the book with jupyter-book build . -W -n --keep-going.")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_execution_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that say where notebooks run (shared by ``ufm regenerate`` and ``ufm sweep``)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N",
                       help="run up to N notebooks at once on this machine, each in its own kernel (default 1: serially)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run every notebook as a task on the Dask cluster at ADDRESS, e.g. tcp://127.0.0.1:8786 "
                            "(needs the 'distributed' extra on this machine and the workers)")
    parser.add_argument("--device", default=None, help="device for every notebook (overrides the profile), e.g. cpu, cuda")
    parser.add_argument("--force", action="store_true", help="re-run notebooks whose output is up to date")
    parser.add_argument("--root", default=None, help="repository root (default: found from the current directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``ufm regenerate``."""
    parser.add_argument("--profile", default="ci", help="parameter profile: smoke, ci (default) or paper, or a YAML path")
    parser.add_argument("--only", default=None, metavar="PATTERN",
                        help="run only the notebooks matching PATTERN (glob or substring; comma-separated)")
    parser.add_argument("--no-book", action="store_true", help="do not build the book afterwards")
    return add_execution_arguments(parser)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``regenerate`` subcommand (handler :func:`run`) to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "regenerate",
        help="run every notebook under a parameter profile and build the book",
        description=DESCRIPTION,
    )
    parser.set_defaults(handler=run)
    return add_arguments(parser)


def _exit_status(command: str, call: Callable[[], Any], *, interrupted: str) -> int:
    """``call()``'s ``exit_code``; 2 with one line on stderr for invalid input, 130 on Ctrl-C."""
    try:
        return call().exit_code
    except (ProfileError, ValueError, OSError) as exc:
        print(f"ufm {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ufm {command}: interrupted; {interrupted}", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ufm regenerate``: 0 ok, 1 a notebook or the book failed, 2 bad input."""
    return _exit_status("regenerate", lambda: regenerate(
        args.profile, only=args.only, device=args.device, build_book=not args.no_book,
        force=args.force, root=args.root, progress=not getattr(args, "no_progress", False),
        jobs=getattr(args, "jobs", 1), scheduler=getattr(args, "scheduler", None),
    ), interrupted="finished outputs are kept, run again to resume")


SWEEP_DESCRIPTION = ("Run one notebook at every point of a parameter grid (the product of the --grid lists, on top "
                     "of the profile's values) and collect the glued numbers and checks of every point into one "
                     "table, DIR/results.csv and DIR/results.parquet (one row per point).")
SWEEP_EXAMPLE = """\
example:
  ufm sweep optimum --grid K=2,3,4 --grid L=2,3 --profile smoke --jobs 2 --out /tmp/s
      runs the optimum notebook at the 6 points (K, L) = (2, 2), (2, 3), ..., (4, 3), two at a
      time, and writes /tmp/s/results.csv and /tmp/s/results.parquet:
      python -c "import pandas; print(pandas.read_parquet('/tmp/s/results.parquet'))"

Values are read as numbers, true/false, null or [lists] (commas inside brackets do not split),
else as text, and must fit the type the notebook's parameters cell declares. A point whose
output is up to date (same inputs) is not run again; a failed point is a row with its error.
"""


def register_sweep(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand (handler :func:`run_sweep`) to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "sweep", help="run one notebook over a grid of parameter values into one table",
        description=SWEEP_DESCRIPTION, epilog=SWEEP_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help="the notebook's name, e.g. optimum")
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2,...",
                        help="a parameter and its values; repeat for more parameters (the grid is their product)")
    parser.add_argument("--profile", default="ci", help="the profile whose values the grid starts from (default ci)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the executed points and the result table")
    add_execution_arguments(parser)
    parser.set_defaults(handler=run_sweep)
    return parser


def run_sweep(args: argparse.Namespace) -> int:
    """Entry point of ``ufm sweep``: 0 every point ran, 1 a point failed, 2 bad input, 130 Ctrl-C."""
    from .sweep import sweep

    return _exit_status("sweep", lambda: sweep(
        args.notebook, args.grid, out=args.out, profile=args.profile, jobs=args.jobs, scheduler=args.scheduler,
        device=args.device, force=args.force, root=args.root, progress=not args.no_progress,
    ), interrupted="the table lists what finished, run again to resume")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ufmlib.book [options]``: the same as ``ufm regenerate [options]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m ufmlib.book", description=DESCRIPTION))
    return run(parser.parse_args(argv))
