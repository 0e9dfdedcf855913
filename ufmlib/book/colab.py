"""The Colab install cell: one repository address, one pinned revision.

Colab opens the committed notebook ``notebooks/<name>.ipynb``, in a runtime without ufmlib.
The first code cell of every notebook (tagged ``hide-cell``) installs it there, and only there::

    # On Colab only: install ufmlib at this release (locally it is already installed).
    import sys

    if "google.colab" in sys.modules:
        %pip install --quiet "ufmlib @ git+<repository>@v<version>"

* ``<repository>`` is the ``Repository`` entry of ``[project.urls]`` in ``pyproject.toml``, the
  one place that holds the address (:func:`repository_url`). The book's repository and launch
  buttons read it from ``_config.yml`` (``repository: url``), which jupyter-book reads
  statically; :func:`config_problems` checks that the two agree.
* ``v<version>`` is the release tag of the ``version`` in ``pyproject.toml``
  (:func:`pinned_revision`), never a branch: a notebook installs the library of the release it
  was written for. A release is tagged with ``git tag v<version> && git push --tags``.
* The Colab kernel imports ``google.colab`` at start-up, so ``"google.colab" in sys.modules``
  is true there and false everywhere else (it imports nothing, and needs no ``google``
  package locally).

:func:`install_cell_problems` checks the cell of every notebook, in the ``.md`` and in the paired
``.ipynb``; :func:`install_cell` is the cell to paste into a new chapter.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from .profiles import NOTEBOOKS, find_root, list_notebooks

__all__ = [
    "PYPROJECT",
    "GUARD",
    "TAG",
    "repository_url",
    "version",
    "pinned_revision",
    "requirement",
    "install_line",
    "install_cell",
    "install_cell_problems",
    "config_problems",
]

PYPROJECT = "pyproject.toml"
"""The file holding the repository address (``[project.urls] Repository``) and the version."""
GUARD = 'if "google.colab" in sys.modules:'
"""The condition under which the install line runs: on Colab only."""
TAG = "hide-cell"
"""The tag of the install cell (the book hides it)."""
COMMENT = "# On Colab only: install ufmlib at this release (locally it is already installed)."
_PIP = re.compile(r"^(?P<indent>\s*)%pip install\b.*?\"ufmlib @ git\+(?P<url>[^\"@]+)@(?P<rev>[^\"]+)\"")


def _project(root: str | Path | None) -> dict:
    path = find_root(root) / PYPROJECT
    with path.open("rb") as f:
        return tomllib.load(f)["project"]


def repository_url(root: str | Path | None = None) -> str:
    """The repository's address, ``[project.urls] Repository`` of ``pyproject.toml``."""
    url = _project(root).get("urls", {}).get("Repository")
    if not url:
        raise KeyError(f"{PYPROJECT} has no [project.urls] Repository")
    return url.rstrip("/")


def version(root: str | Path | None = None) -> str:
    """The ``version`` of ``pyproject.toml``."""
    return _project(root)["version"]


def pinned_revision(root: str | Path | None = None) -> str:
    """The revision every install cell installs: the release tag ``v<version>``."""
    return f"v{version(root)}"


def requirement(root: str | Path | None = None) -> str:
    """``ufmlib @ git+<repository>@v<version>``."""
    return f"ufmlib @ git+{repository_url(root)}@{pinned_revision(root)}"


def install_line(root: str | Path | None = None) -> str:
    """The exact install line of the cell: ``%pip install --quiet "ufmlib @ git+..."``."""
    return f'%pip install --quiet "{requirement(root)}"'


def install_cell(root: str | Path | None = None) -> str:
    """The whole source of the install cell (tag it ``hide-cell``)."""
    return f"{COMMENT}\nimport sys\n\n{GUARD}\n    {install_line(root)}"


def _cell_problems(cell, where: str, root: Path) -> list[str]:
    if cell is None:
        return [f"{where}: no code cell; the first one must be the Colab install cell"]
    problems = []
    if TAG not in cell.metadata.get("tags", []):
        problems.append(f"{where}: the first code cell is not tagged {TAG!r}")
    lines = cell.source.splitlines()
    found = [(i, m) for i, line in enumerate(lines) if (m := _PIP.match(line))]
    if not found:
        return problems + [f"{where}: the first code cell does not install ufmlib; it must hold {install_line(root)!r}"]
    i, m = found[0]
    if (m["url"].rstrip("/"), m["rev"]) != (repository_url(root), pinned_revision(root)):
        problems.append(
            f"{where}: the install cell installs {m['url']}@{m['rev']}, not {repository_url(root)}@{pinned_revision(root)}"
            f" ({PYPROJECT}: [project.urls] Repository, tag v<version>)"
        )
    elif lines[i].strip() != install_line(root):
        problems.append(f"{where}: the install line is {lines[i].strip()!r}, not {install_line(root)!r}")
    guarded = (
        bool(m["indent"]) and i > 0 and lines[i - 1].strip() == GUARD and not lines[i - 1].startswith((" ", "\t"))
        and "import sys" in lines[:i - 1]
    )
    if not guarded:
        problems.append(f"{where}: the install line must run only on Colab: 'import sys', then {GUARD!r} right above it")
    return problems


def install_cell_problems(root: str | Path | None = None) -> list[str]:
    """What is wrong with the install cell of any notebook (``.md`` and paired ``.ipynb``): it must
    be the first code cell, tagged ``hide-cell``, and install :func:`requirement` only on Colab."""
    from .parameters import read_notebook

    root = find_root(root)
    problems = []
    for name in list_notebooks(root):
        for suffix in (".md", ".ipynb"):
            path = root / NOTEBOOKS / f"{name}{suffix}"
            if not path.exists():
                continue
            first = next((c for c in read_notebook(path).cells if c.cell_type == "code"), None)
            problems += _cell_problems(first, f"{NOTEBOOKS}/{name}{suffix}", root)
    return problems


def config_problems(root: str | Path | None = None) -> list[str]:
    """Disagreement between ``_config.yml`` (``repository: url``, read by jupyter-book for the
    repository and launch buttons) and :func:`repository_url`."""
    import yaml

    root = find_root(root)
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    url = str((config.get("repository") or {}).get("url", "")).rstrip("/")
    if url != repository_url(root):
        return [f"_config.yml: repository: url is {url!r}, not {repository_url(root)!r} ({PYPROJECT}: [project.urls] Repository)"]
    return []
