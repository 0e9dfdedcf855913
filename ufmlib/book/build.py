"""The book itself: the strict ``jupyter-book build`` and the paired-notebook check.

The book renders the executed notebooks as they are (``execute_notebooks: off`` in
``_config.yml``); its own Sphinx extension lives in ``book/_ext/ufm_pages.py``.
:func:`pair_problems` checks that every ``notebooks/<name>.md`` and its committed paired
``notebooks/<name>.ipynb`` (the file Colab opens) hold the same cells.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .parameters import read_notebook
from .profiles import KERNEL, NOTEBOOKS, find_root, list_notebooks

__all__ = ["build_book", "pair_problems"]


def _jupyter_book() -> str:
    """The ``jupyter-book`` command next to this Python, else the first one on ``PATH``."""
    local = Path(sys.executable).with_name("jupyter-book")
    if local.exists():
        return str(local)
    found = shutil.which("jupyter-book")
    if found is None:
        raise FileNotFoundError("jupyter-book is not installed (pip install -e '.[book]')")
    return found


def build_book(root: str | Path, *, strict: bool = True) -> int:
    """``jupyter-book build <root> -W -n --keep-going`` (strict); returns its exit status."""
    root = Path(root)
    cmd = [_jupyter_book(), "build", str(root)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    return subprocess.run(cmd, cwd=str(root), env=env).returncode


def pair_problems(root: str | Path | None = None) -> list[str]:
    """Differences between every ``notebooks/<name>.md`` and its paired ``.ipynb``.

    The pair is in sync when both have the same cells (type, source, metadata), the same
    kernel, and the ``.ipynb`` holds no outputs. Fix with ``jupytext --sync notebooks/<name>.md``.
    """
    import nbformat

    root = find_root(root)
    problems = []
    for name in list_notebooks(root):
        md, ipynb = root / NOTEBOOKS / f"{name}.md", root / NOTEBOOKS / f"{name}.ipynb"
        fix = f"(run: jupytext --sync {NOTEBOOKS}/{name}.md)"
        if not ipynb.exists():
            problems.append(f"{name}: {ipynb.relative_to(root)} is missing {fix}")
            continue
        text, paired = read_notebook(md), nbformat.read(str(ipynb), as_version=4)
        if text.metadata.get("kernelspec", {}).get("name") != KERNEL or paired.metadata.get("kernelspec", {}).get("name") != KERNEL:
            problems.append(f"{name}: both files must use the kernel {KERNEL!r}")
        if len(text.cells) != len(paired.cells):
            problems.append(f"{name}: {len(text.cells)} cells in the .md, {len(paired.cells)} in the .ipynb {fix}")
            continue
        for i, (a, b) in enumerate(zip(text.cells, paired.cells)):
            if a.cell_type != b.cell_type or a.source != b.source or dict(a.metadata) != dict(b.metadata):
                problems.append(f"{name}: cell {i} differs between the .md and the .ipynb {fix}")
                break
        if any(c.get("outputs") or c.get("execution_count") for c in paired.cells if c.cell_type == "code"):
            problems.append(f"{name}: {ipynb.relative_to(root)} holds outputs; commit it without outputs")
    return problems
