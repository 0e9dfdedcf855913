"""The whole book: every notebook through ``ufm regenerate`` (profile ``smoke``), then the
strict build ``jupyter-book build . -W -n --keep-going``.

The run happens in a copy of the book's sources in a temporary folder (the repository's own
``outputs/`` and ``_build/``, possibly from the ``paper`` profile, are left alone); the copy
uses the repository's ``ufmlib`` through a symbolic link. The build (``booktools.smoke_book``)
is shared with ``test_browser.py``.
"""

from __future__ import annotations

import json
import re

import pytest

from booktools import COLAB, ROOT, digest, smoke_book
from ufmlib.book.profiles import list_notebooks


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    book = smoke_book(tmp_path_factory)  # one build per test session, shared with test_browser.py
    return book.root, book.report, book.before


@pytest.mark.slow
def test_every_notebook_runs_under_smoke_and_the_strict_build_passes(built_book):
    root, report, before = built_book
    names = list_notebooks(ROOT)
    assert [(o.name, o.status) for o in report.outcomes] == [(n, "ok") for n in names], [o.error for o in report.failed]
    assert report.book_status == 0
    assert report.exit_code == 0
    assert (root / "_build" / "html" / "index.html").is_file()
    # the run writes only outputs/ and _build/: no source file changes
    assert digest(root) == before


@pytest.mark.slow
def test_colab_buttons_open_the_committed_paired_notebook(built_book):
    root, _, _ = built_book
    for name in list_notebooks(ROOT):
        page = (root / "_build" / "html" / "book" / "chapters" / f"{name}.html").read_text()
        links = set(re.findall(r'https://colab\.research\.google\.com/[^"]+', page))
        assert links == {COLAB.format(name)}, links
        assert (ROOT / "notebooks" / f"{name}.ipynb").is_file()


@pytest.mark.slow
def test_pages_show_provenance_glued_numbers_and_the_status_table(built_book):
    root, _, _ = built_book
    page = (root / "_build" / "html" / "book" / "chapters" / "optimum.html").read_text()
    assert "How this page was computed" in page and "Profile <strong>smoke</strong>" in page
    executed = json.loads((root / "book" / "chapters" / "optimum.ipynb").read_text())
    meta = executed["metadata"]["ufm"]
    checks = meta["checks"]
    assert len(checks) >= 10 and all(c["passed"] for c in checks)
    assert {c["result"] for c in checks} == {"R1"}
    # glued numbers are in the prose: gamma of the smoke configuration
    from ufmlib.optimum import dnc_optimum

    params = {**{"K": 3, "n": 40, "L": 5, "lambda_W": 0.01, "lambda_H": 0.01}, **meta["provenance"]["parameters"]}
    gamma = dnc_optimum(params["K"], params["n"], params["L"], params["lambda_W"], params["lambda_H"]).gamma
    assert f"{gamma:.12f}" in page
    assert "figure" in page and "fig-optimum-phase" in page
    status = (root / "_build" / "html" / "book" / "status.html").read_text()
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", status, flags=re.S)
    optimum_rows = [r for r in rows if "<td><p>R1</p></td>" in r and "chapters/optimum.html" in r
                    and re.search(r"<td><p>(reproduction|construction|identity)</p></td>", r)]
    assert len(optimum_rows) == len(checks)  # one status row per check of the optimum chapter, with its kind
    kinds = {c["kind"] for c in checks}
    assert "reproduction" in kinds and kinds <= {"reproduction", "construction", "identity"}
    assert "Reproductions per result" in status and "Not checked in the runs shown" in status


@pytest.mark.slow
def test_every_result_has_a_reproduction_that_ran_and_every_check_has_a_kind(built_book):
    from ufmlib.book.status import RESULTS

    root, _, _ = built_book
    state = json.loads((root / "outputs" / "status.json").read_text())
    checks = [c for entry in state.values() for c in entry["checks"]]
    assert checks and all(c["kind"] in ("reproduction", "construction", "identity") for c in checks)
    reproduced = {c["result"] for c in checks if c["kind"] == "reproduction" and c["status"] == "checked" and c["passed"]}
    assert set(RESULTS) <= reproduced, sorted(set(RESULTS) - reproduced)
