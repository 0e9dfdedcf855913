"""Reproducible CPU numerics: fixed thread counts and seeds for torch, BLAS and OpenMP.

A floating-point reduction (a matrix product, a sum) split over several threads adds its
partial sums in an order that depends on the number of threads, so the last bits of every
result - and, through thousands of gradient-descent steps, the leading ones of a trajectory -
depend on the machine's core count. With a fixed thread count, the same commit, profile and
parameters give the same float64 numbers on the same machine (``tests/test_determinism.py``).
One thread is also the fastest setting for the companion's small matrices on a busy machine
(oversubscribed OpenMP threads spin; ``ufm regenerate`` starts its kernels with one thread).

:func:`configure` fixes, in the running process,

* torch's intra-op threads (``torch.set_num_threads``) and, when still possible, its
  inter-op threads (``torch.set_num_interop_threads`` may only be called before the first
  parallel operation; later calls are skipped and reported as ``interop_threads=None``);
* the BLAS / OpenMP pools already loaded by numpy and scipy (through ``threadpoolctl`` when
  it is installed; it comes with the ``data`` extra);
* the environment variables read by those libraries when they start
  (:func:`thread_environment`), so that child processes - Jupyter kernels started by
  ``ufm regenerate``, ``jupyter-book`` - start with the same counts;
* optionally the seeds of ``random``, ``numpy.random`` and ``torch`` (``seed=``). The library
  itself never depends on global seeds (every draw uses ``UFMConfig.generator``); seeding the
  global generators only makes user code in a notebook repeatable too.

It does not call ``torch.use_deterministic_algorithms``: on the CPU the kernels used here are
deterministic for a fixed thread count, and on CUDA bitwise reproducibility is not promised
(compare GPU runs to a stated tolerance instead).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from numbers import Integral

__all__ = ["THREAD_VARIABLES", "RuntimeSettings", "thread_environment", "configure"]

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""Environment variables that fix the thread count of OpenMP, MKL, OpenBLAS, Accelerate and
numexpr when those libraries are loaded."""


@dataclass(frozen=True)
class RuntimeSettings:
    """What :func:`configure` set: thread counts in force afterwards and the seed (or ``None``).

    ``interop_threads`` is ``None`` when torch's inter-op pool had already started and could not
    be changed; ``blas_pools`` is the number of native BLAS/OpenMP pools limited through
    ``threadpoolctl`` (``0`` when it is not installed).
    """

    threads: int
    torch_threads: int
    interop_threads: int | None
    blas_pools: int
    seed: int | None


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def thread_environment(threads: int = 1) -> dict[str, str]:
    """The environment variables (:data:`THREAD_VARIABLES`) that give ``threads`` threads to
    every numerical library a new process loads; merge them into a child's environment."""
    threads = _check_count("threads", threads)
    return {name: str(threads) for name in THREAD_VARIABLES}


def _limit_native_pools(threads: int) -> int:
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return 0
    threadpool_limits(limits=threads)  # global: applies to the pools already loaded
    return len(threadpool_info())


def configure(*, threads: int = 1, seed: int | None = None, environment: bool = True) -> RuntimeSettings:
    """Fix the thread counts (and optionally the global seeds) for reproducible CPU numerics.

    Parameters
    ----------
    threads : threads for torch, BLAS and OpenMP (``>= 1``). One thread gives results that do
        not depend on the machine's core count.
    seed : when given (an integer ``>= 0``), seeds ``random``, ``numpy.random`` and torch's
        global generator. ``None`` leaves the global generators alone.
    environment : also write :func:`thread_environment` into ``os.environ`` (overriding values
        already there) so that child processes use the same counts.

    Returns the :class:`RuntimeSettings` in force. Calling it again with other values changes
    them (except torch's inter-op pool once it has started).
    """
    import torch

    threads = _check_count("threads", threads)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0; got {seed!r}")
    if not isinstance(environment, bool):
        raise ValueError(f"environment must be True or False; got {environment!r}")
    if environment:
        os.environ.update(thread_environment(threads))
    torch.set_num_threads(threads)
    interop: int | None
    if torch.get_num_interop_threads() == threads:
        interop = threads
    else:
        try:
            torch.set_num_interop_threads(threads)
            interop = threads
        except RuntimeError:  # the inter-op pool has started; it only runs independent ops
            interop = None
    pools = _limit_native_pools(threads)
    if seed is not None:
        import numpy as np

        random.seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        torch.manual_seed(int(seed))
    return RuntimeSettings(
        threads=threads, torch_threads=torch.get_num_threads(), interop_threads=interop,
        blas_pools=pools, seed=None if seed is None else int(seed),
    )
