"""The command line of the book machinery: ``ufm regenerate`` and ``python -m ufmlib.book``.

:func:`register` is the entry point ``regenerate`` of group ``ufmlib.commands`` (see
``pyproject.toml``), through which :mod:`ufmlib.cli` adds the subcommand without importing
this package; :func:`main` is ``python -m ufmlib.book``. Both take the options of
:func:`add_arguments` and run :func:`run`: exit status 0 when every notebook and the book
passed, 1 when one failed, 2 for invalid input (one line on stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .parameters import ProfileError
from .regenerate import regenerate

__all__ = ["add_arguments", "register", "run", "main"]

DESCRIPTION = ("Run every notebook (serially, with papermill) under a parameter profile, "
               "record provenance and build the book with jupyter-book build . -W -n --keep-going.")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``ufm regenerate``."""
    parser.add_argument("--profile", default="ci", help="parameter profile: smoke, ci (default) or paper, or a YAML path")
    parser.add_argument("--only", default=None, metavar="PATTERN",
                        help="run only the notebooks matching PATTERN (glob or substring; comma-separated)")
    parser.add_argument("--device", default=None, help="device for every notebook (overrides the profile), e.g. cpu, cuda")
    parser.add_argument("--no-book", action="store_true", help="do not build the book afterwards")
    parser.add_argument("--force", action="store_true", help="re-run notebooks whose output is up to date")
    parser.add_argument("--root", default=None, help="repository root (default: found from the current directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``regenerate`` subcommand (handler :func:`run`) to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "regenerate",
        help="run every notebook under a parameter profile and build the book",
        description=DESCRIPTION,
    )
    parser.set_defaults(handler=run)
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ufm regenerate``: 0 ok, 1 a notebook or the book failed, 2 bad input."""
    try:
        report = regenerate(
            args.profile, only=args.only, device=args.device, build_book=not args.no_book,
            force=args.force, root=args.root, progress=not getattr(args, "no_progress", False),
        )
    except (ProfileError, ValueError, FileNotFoundError) as exc:
        print(f"ufm regenerate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ufm regenerate: interrupted; finished outputs are kept, run again to resume", file=sys.stderr)
        return 130
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ufmlib.book [options]``: the same as ``ufm regenerate [options]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m ufmlib.book", description=DESCRIPTION))
    return run(parser.parse_args(argv))
