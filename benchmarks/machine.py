"""What every spectra benchmark does first: read its options, fix the threads and float64, and
print the machine."""

from __future__ import annotations

import argparse
import os
import platform

import torch


def start(*, threads: int, mode: str) -> None:
    """Set ``threads`` torch threads and float64, and print the machine, versions and load."""
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"{threads} torch threads; Python {platform.python_version()}, torch {torch.__version__}; "
          f"float64; mode {mode}; load average {os.getloadavg()[0]:.2f} "
          "(timings assume an otherwise idle machine)")


def options(argv, *, description: str, quick: str) -> argparse.Namespace:
    """Parse ``--quick`` (help text ``quick``) and ``--threads``, then :func:`start`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = ap.parse_args(argv)
    start(threads=args.threads, mode="quick" if args.quick else "full")
    return args
