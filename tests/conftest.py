"""Test-session settings: one torch thread.

The test matrices are small; with more threads than free cores, BLAS threads oversubscribe
the machine and tiny products slow down by orders of magnitude. One thread also makes CPU
results independent of the machine's core count.
"""

from ufmlib.runtime import configure

configure(threads=1)
