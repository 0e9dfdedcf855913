"""A failed notebook is visible in the built book.

A tiny book (the project's ``_config.yml``, its Sphinx extension and three chapters) is
regenerated twice: first every chapter passes; then one chapter fails (it keeps its earlier page,
which must carry a notice naming the failed run and the run it shows) and a new chapter fails
with no earlier run (its page must show the error). The book is built strictly both times.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ufmlib.book.regenerate import regenerate

from booktools import SEED_AND_DEVICE, notebook_text

ROOT = Path(__file__).resolve().parents[1]



def chapter(title: str, body: str) -> str:
    return notebook_text(title, "fail: bool = False  # make the run fail\n" + SEED_AND_DEVICE, body, prose="Some prose.")


FAILS_ON_REQUEST = """
from ufmlib.notebook import check
check("same", 1.0, 1.0, rtol=1e-12, result="R1", kind="identity", description="one is one")
if fail:
    raise RuntimeError("the solver did not converge in 10 steps")
"""


def tiny_book(tmp_path: Path) -> Path:
    import jupytext

    root = tmp_path / "book-root"
    (root / "notebooks").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "book").mkdir()
    shutil.copytree(ROOT / "book" / "_ext", root / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, root / name)
    (root / "book" / "intro.md").write_text("# Intro\n\nA tiny book.\n")
    (root / "_toc.yml").write_text(textwrap.dedent(
        """\
        format: jb-book
        root: book/intro
        chapters:
          - file: book/chapters/steady
          - file: book/chapters/flaky
        """
    ))
    for name, text in {"steady": chapter("Steady", FAILS_ON_REQUEST), "flaky": chapter("Flaky", FAILS_ON_REQUEST)}.items():
        md = root / "notebooks" / f"{name}.md"
        md.write_text(text)
        jupytext.write(jupytext.read(md), md.with_suffix(".ipynb"), fmt="ipynb")
    (root / "profiles" / "good.yaml").write_text("notebooks: {steady: {}, flaky: {}}\n")
    (root / "profiles" / "broken.yaml").write_text("notebooks: {steady: {}, flaky: {fail: true}, never: {fail: true}}\n")
    return root


def add_never(root: Path) -> None:
    import jupytext

    md = root / "notebooks" / "never.md"
    md.write_text(chapter("Never", FAILS_ON_REQUEST))
    jupytext.write(jupytext.read(md), md.with_suffix(".ipynb"), fmt="ipynb")
    toc = root / "_toc.yml"
    toc.write_text(toc.read_text() + "  - file: book/chapters/never\n")


@pytest.mark.slow
def test_a_failed_run_is_announced_on_its_page_and_a_never_run_page_shows_the_error(tmp_path):
    root = tiny_book(tmp_path)
    first = regenerate("good", root=root, progress=False)
    assert first.exit_code == 0, [o.error for o in first.failed]
    shown = json.loads((root / "book" / "chapters" / "flaky.ipynb").read_text())["metadata"]["ufm"]["provenance"]
    html = root / "_build" / "html" / "book" / "chapters"
    assert "latest run of this chapter failed" not in (html / "flaky.html").read_text()

    add_never(root)
    second = regenerate("broken", root=root, progress=False)
    assert [(o.name, o.status) for o in second.outcomes] == [("steady", "ok"), ("flaky", "failed"), ("never", "failed")]
    assert second.book_status == 0  # the strict build passes and shows the failures
    assert second.exit_code == 1

    flaky = (html / "flaky.html").read_text()
    assert "The latest run of this chapter failed" in flaky
    assert "RuntimeError: the solver did not converge in 10 steps" in flaky
    assert "profile <strong>broken</strong>" in flaky
    assert f"This page shows the earlier run of {shown['date']}" in flaky and "profile <strong>good</strong>" in flaky
    assert (shown["git_commit"] or "no commit")[:10] in flaky
    assert flaky.index("The latest run of this chapter failed") < flaky.index("How this page was computed")
    assert "latest run of this chapter failed" not in (html / "steady.html").read_text()

    never = (html / "never.html").read_text()
    assert "This chapter has not been computed" in never
    assert "RuntimeError: the solver did not converge in 10 steps" in never

    state = json.loads((root / "outputs" / "status.json").read_text())
    assert state["flaky"]["latest_run"]["status"] == "failed" and state["flaky"]["shown_run"]["profile"] == "good"
    assert state["never"]["placeholder"] is True

    # fixed again: the notice goes away although the page's notebook is the same
    third = regenerate("good", root=root, only="steady,flaky", progress=False)
    assert third.exit_code == 0
    assert "latest run of this chapter failed" not in (html / "flaky.html").read_text()
