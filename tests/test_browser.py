"""The rendered book, checked as a reader sees it, in headless Chromium (``tests/browser_check.py``).

The book is the one of ``test_book.py`` (profile ``smoke``, built once per session by
``booktools.smoke_book``). Every page of ``_toc.yml`` is opened once; the tests below read the
per-check results: math typeset by MathJax with no raw TeX left, every image loaded with a
non-zero size, every internal link and anchor resolving, every ``{prf:ref}`` a link to a
theorem box, and the Colab button of every notebook page opening ``notebooks/<name>.ipynb`` of
the repository. Screenshots of the introduction and of the optimum chapter are saved to
``test-artifacts/``.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver``; when they are
missing, the set-up installs them with ``apt-get`` (as root) and the tests are skipped only
when that is impossible. A first test runs the checker on a small hand-written site with one
defect of each kind, so that a checker that cannot fail is caught.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

import browser_check as bc
from booktools import ROOT, smoke_book

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = {"book/intro": ARTIFACTS / "browser-intro.png", "book/chapters/optimum": ARTIFACTS / "browser-optimum.png"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chromium():
    reason = bc.ensure_chromium(install=True)
    if reason is not None:
        pytest.skip(f"headless Chromium is not available: {reason}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed: pip install -c constraints.txt -e '.[test]'")
    if bc.local_mathjax() is None:
        pytest.fail("no local MathJax 3 (package django-static-mathjax): pip install -c constraints.txt -e '.[test]'")
    with bc.chrome() as driver:
        yield driver


@pytest.fixture(scope="module")
def report(chromium, tmp_path_factory):
    book = smoke_book(tmp_path_factory)
    for path in SCREENSHOTS.values():
        path.unlink(missing_ok=True)
    result = bc.check_book(book.root, html_dir=book.html, screenshots=SCREENSHOTS, driver=chromium)
    print(result.summary())
    return result


# ----------------------------------------------------------------------------------------
# the checker finds defects


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


SITE = """<!DOCTYPE html><html><head><title>defects</title>
<script>MathJax = {"options": {"processHtmlClass": "math"}}</script>
<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script></head>
<body class="tex2jax_ignore mathjax_ignore"><p>Typeset: <span class="math notranslate nohighlight">\\(x^2+1\\)</span>.</p>
<p>Left raw: $$y$$ and $z$.</p><pre>code may hold $$ and $a$</pre>
<img src="ok.png" alt="ok"><img src="missing.png" alt="missing"><img src="empty.png" alt="empty">
<a href="b.html">ok</a> <a href="b.html#there">ok</a> <a href="b.html#nowhere">bad anchor</a>
<a href="nope.html">bad file</a> <a href="#here" id="here">self</a> <a href="#gone">bad self</a>
<a class="reference internal" href="b.html#thm-x">theorem</a> <a class="reference internal" href="b.html#there">not a theorem</a>
<a href="https://colab.research.google.com/github/o/r/blob/main/notebooks/elsewhere.ipynb">colab</a>
</body></html>"""


def test_the_checker_reports_each_kind_of_defect(chromium, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.html").write_text(SITE)
    (site / "b.html").write_text('<html><body><p id="there">x</p><div class="proof theorem admonition" id="thm-x">T</div></body></html>')
    (site / "ok.png").write_bytes(_png(3, 2))
    (site / "empty.png").write_bytes(b"")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / "a.ipynb").write_text("{}")

    with bc.serve(site, mathjax=bc.local_mathjax()) as server:
        page = bc.open_page(chromium, server.base + "a.html")
        assert server.missing == ["/missing.png"]

    assert page.mathjax == "ok" and page.math == 1 and page.mjx == 1 and page.untypeset == ()
    assert page.raw_tex == ("$$y$$", "$z$")  # nothing from <pre>
    assert bc.math_problems(page) == ["raw TeX in the text: '$$y$$'", "raw TeX in the text: '$z$'"]
    loaded = {Path(i["src"]).name: (i["width"], i["height"]) for i in page.images}
    assert loaded == {"ok.png": (3, 2), "missing.png": (0, 0), "empty.png": (0, 0)}
    assert [p.split(" (")[0] for p in bc.image_problems(page)] == [
        f"image did not load: {server.base}missing.png", f"image did not load: {server.base}empty.png"]
    links = bc.link_problems(page, site, server.base)
    assert links == [
        f"{server.base}b.html#nowhere: no element with id 'nowhere' in b.html",
        f"{server.base}nope.html: no file nope.html",
        f"{server.base}a.html#gone: no element with id 'gone' on this page",
    ]
    assert bc.theorem_problems(page, ["thm-x"], site, server.base) == []
    assert bc.theorem_problems(page, ["there", "thm-missing"], site, server.base) == [
        "{prf:ref} 'there' points at b.html#there, which is no theorem box",
        "{prf:ref} 'thm-missing' is not a link on the page",
    ]
    colab = bc.colab_problems(page, "a", repo_url="https://github.com/o/r", branch="main", repo_root=repo)
    assert colab == [f"Colab link {page.links[-1]} opens notebooks/elsewhere.ipynb, not the paired notebooks/a.ipynb"]
    assert bc.colab_problems(page, "a", repo_url="https://github.com/x/y", branch="main", repo_root=repo)[0].endswith(
        "is not https://github.com/x/y at main/<path>.ipynb")


def test_theorem_labels_are_read_from_both_role_forms():
    source = "see {prf:ref}`thm-a`, {prf:ref}`the theorem <thm-b>` and {prf:ref}`thm-a` again; {eq}`eq-x`"
    assert bc.theorem_labels(source) == ["thm-a", "thm-b"]


# ----------------------------------------------------------------------------------------
# the smoke book


def test_every_page_of_the_table_of_contents_was_opened(report):
    assert set(report.problems) == set(bc.toc_pages(ROOT))
    assert report.of("build") == {}
    assert set(report.pages) == set(report.problems)
    assert "book/chapters/optimum" in report.pages and "book/intro" in report.pages


def test_math_is_typeset_and_no_raw_tex_is_left(report):
    assert report.of("math") == {}
    optimum = report.pages["book/chapters/optimum"]
    assert optimum.mathjax == "ok" and optimum.math >= 20 and optimum.mjx >= optimum.math
    assert all(p.mathjax in ("ok", "none") for p in report.pages.values())


def test_every_figure_loads_with_a_non_zero_size(report):
    assert report.of("images") == {}
    figures = [i for i in report.pages["book/chapters/optimum"].images if "/_images/" in i["src"]]
    assert len(figures) >= 2  # the descent and the phase-diagram figures
    assert all(i["width"] >= 100 and i["height"] >= 100 for i in figures)


def test_every_internal_link_and_anchor_resolves(report):
    assert report.of("links") == {}
    assert report.server_404 == ()
    assert all(len(p.links) > 0 for p in report.pages.values())


def test_theorem_cross_references_resolve(report):
    assert report.of("theorems") == {}
    labels = bc.theorem_labels((ROOT / "notebooks" / "optimum.md").read_text())
    assert "thm-optimum" in labels  # the check above is not vacuous


def test_colab_buttons_open_existing_paired_notebooks(report):
    assert report.of("colab") == {}
    notebooks = [p for p in report.pages if p.startswith("book/chapters/")]
    assert notebooks
    for name in notebooks:
        stem = name.rsplit("/", 1)[1]
        links = [h for h in report.pages[name].links if h.startswith("https://colab.research.google.com/")]
        assert links and all(h.endswith(f"/blob/main/notebooks/{stem}.ipynb") for h in links)
        assert (ROOT / "notebooks" / f"{stem}.ipynb").is_file()


def test_screenshots_of_the_intro_and_a_theorem_chapter_are_saved(report):
    assert set(report.screenshots) == set(SCREENSHOTS)
    for path in SCREENSHOTS.values():
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000, path
