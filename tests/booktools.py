"""Shared helpers of the tests that build the book (``test_book.py``, ``test_browser.py``).

:func:`smoke_book` runs every notebook through ``ufm regenerate`` (profile ``smoke``) and the
strict book build, in a copy of the book's sources in a temporary folder (the repository's own
``outputs/`` and ``_build/`` are left alone; the copy uses the repository's ``ufmlib`` through a
symbolic link). The build is made once per test session and shared by every module that asks
for it (about a minute of the session's time per extra build saved).
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ufmlib.book import colab
from ufmlib.book.regenerate import Report, regenerate

ROOT = Path(__file__).resolve().parents[1]

FRONT = """\
---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---
"""
"""The front matter of a chapter (jupytext MyST, paired with an .ipynb, kernel python3), for
the small notebooks the tests write."""
SEED_AND_DEVICE = 'seed: int = 0  # seed\ndevice: str = "cpu"  # device'
"""The two parameters every notebook must declare, as a test notebook declares them."""


def notebook_text(title: str, parameters: str, body: str, *, prose: str | None = None) -> str:
    """A small test notebook: :data:`FRONT`, a title, optionally a line of prose, a ``parameters``
    cell and one code cell (``parameters`` and ``body`` are dedented)."""
    return "\n".join([
        FRONT,
        f"# {title}\n",
        *([f"{prose}\n"] if prose else []),
        "```{code-cell} ipython3\n:tags: [parameters]\n\n" + textwrap.dedent(parameters).strip() + "\n```\n",
        "```{code-cell} ipython3\n" + textwrap.dedent(body).strip() + "\n```\n",
    ])


SOURCES = ["_config.yml", "_toc.yml", "references.bib", "book", "notebooks", "profiles"]
COLAB = colab.repository_url(ROOT).replace("https://github.com/", "https://colab.research.google.com/github/") + "/blob/main/notebooks/{}.ipynb"


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every source file under ``folder`` (not ``outputs/``, ``_build/``, ``ufmlib``,
    nor the ``__pycache__`` that importing the book's extension ``book/_ext`` writes)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.relative_to(folder).parts[0] in ("outputs", "_build", "ufmlib")
        and p.relative_to(folder).parts[:2] != ("book", "chapters")
        and "__pycache__" not in p.relative_to(folder).parts
    }


def _executed_chapters(src: Path):
    """``copytree`` filter that leaves out the executed chapters ``book/chapters`` (outputs, not sources)."""
    def ignore(folder, names):
        return ["chapters"] if Path(folder) == ROOT / "book" and "chapters" in names else []
    return ignore


def copy_sources(dest: Path, *, sources: list[str] | None = None) -> Path:
    """Copy the book's sources (``SOURCES``) into ``dest`` and link the repository's ``ufmlib``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in sources or SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=_executed_chapters(src))
        else:
            shutil.copy(src, dest / name)
    (dest / "ufmlib").symlink_to(ROOT / "ufmlib", target_is_directory=True)
    return dest


@dataclass(frozen=True)
class BuiltBook:
    """A regenerated book: its root, the run's report and the digest of its sources before it."""

    root: Path
    report: Report
    before: dict[str, str]

    @property
    def html(self) -> Path:
        return self.root / "_build" / "html"


_BUILDS: dict[str, BuiltBook | BaseException] = {}


def smoke_book(tmp_path_factory) -> BuiltBook:
    """The book regenerated under the ``smoke`` profile, built once per test session (a build
    that raised raises the same error again instead of being repeated)."""
    if "smoke" not in _BUILDS:
        try:
            root = copy_sources(tmp_path_factory.mktemp("book"))
            before = digest(root)
            report = regenerate("smoke", root=root, force=True, progress=False)
            _BUILDS["smoke"] = BuiltBook(root, report, before)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - also pytest's timeout; raised again for every test that needs it
            _BUILDS["smoke"] = exc
    built = _BUILDS["smoke"]
    if isinstance(built, BaseException):
        raise built
    return built
