"""The built book as a reader sees it: pages opened in headless Chromium (Selenium).

Used by ``tests/test_browser.py``; also a script for a book built by ``make book``::

    .venv/bin/python tests/browser_check.py _build/html --screenshots test-artifacts

For every page of ``_toc.yml`` it checks, after the page's scripts ran:

* **math** - MathJax finished (``MathJax.startup.promise``), every Sphinx math element
  (``.math``) holds a rendered ``mjx-container``, and no raw TeX (``$$``, ``$x$``, ``\\(``,
  ``\\[``) is left in the visible text outside code;
* **figures** - every ``<img>`` finished loading with a non-zero natural size;
* **links** - every ``<a href>`` into the book resolves to a file of the build and, with a
  ``#fragment``, to an element with that id (on the page itself as rendered, elsewhere as
  built); no request to the book's server answered 404;
* **theorem references** - every ``{prf:ref}`` of the page's source became a link
  (``a.reference.internal``) to an element of class ``proof`` (sphinx-proof's theorem box), and
  no unresolved ``prf:ref`` text is shown;
* **Colab** - every notebook page has a Colab launch link, and it points at
  ``<repository>/blob/<branch>/notebooks/<name>.ipynb`` (from ``_config.yml``), a file that
  exists in the repository.

The book is served over HTTP on 127.0.0.1 (fonts and scripts load as on a web server); every
other host is unreachable (``--host-resolver-rules``), so the check needs no network. Sphinx
points MathJax at its CDN (``cdn.jsdelivr.net/npm/mathjax@3``); the server substitutes the same
major version from a local copy (the ``mathjax`` package of the PyPI distribution
``django-static-mathjax``, MathJax 3.2.2), so the check typesets exactly the page's own TeX. A
book configured with a local ``mathjax_path`` is served unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html.parser
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver")
MATHJAX_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@3(?:\.[\d.]+)?/es5/")
LOCAL_MATHJAX = "/__mathjax__/"
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------
# the browser and MathJax


def ensure_chromium(*, install: bool = True, timeout: float = 900) -> str | None:
    """``None`` when Chromium and its driver are there (after installing them with apt-get
    as root if ``install``), else the reason why they cannot be had."""
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return None
    if not install:
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing"
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and apt-get cannot be run as root here to install {' '.join(APT_PACKAGES)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` failed: {exc}"
        log.append(proc.stdout[-500:] + proc.stderr[-500:])
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` exited with {proc.returncode}: {log[-1].strip()}"
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return None
    return f"apt-get install {' '.join(APT_PACKAGES)} did not provide {CHROMIUM} and {CHROMEDRIVER}"


def local_mathjax() -> Path | None:
    """The folder of a local MathJax 3 (holding ``es5/tex-mml-chtml.js``), or ``None``."""
    spec = importlib.util.find_spec("mathjax")
    for base in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(base) / "static" / "mathjax"
        if (folder / "es5" / "tex-mml-chtml.js").is_file():
            return folder
    return None


@contextlib.contextmanager
def chrome(*, width: int = 1280, height: int = 2000) -> Iterator["object"]:
    """A headless Chromium driven by Selenium through ``/usr/bin/chromedriver``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="ufm-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--window-size={width},{height}", "--force-device-scale-factor=1", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--no-first-run", "--disable-sync", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # offline: no host but the book's
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(60)
            driver.set_script_timeout(60)
            yield driver
        finally:
            driver.quit()


# ----------------------------------------------------------------------------------------
# the book's server


class _Handler(http.server.SimpleHTTPRequestHandler):
    mathjax: Path | None = None
    missing: list[str]

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def send_error(self, code, message=None, explain=None):
        if code == 404 and not self.path.startswith("/favicon.ico"):
            self.missing.append(self.path)
        super().send_error(code, message, explain)

    def translate_path(self, path):
        if self.mathjax is not None and path.startswith(LOCAL_MATHJAX):
            rel = unquote(urlsplit(path).path[len(LOCAL_MATHJAX):])
            target = (self.mathjax / rel).resolve()
            if self.mathjax in target.parents:
                return str(target)
            return str(self.mathjax / "__outside__")
        return super().translate_path(path)

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if self.mathjax is None or path.suffix != ".html" or not path.is_file():
            return super().do_GET()
        body = MATHJAX_CDN.sub(LOCAL_MATHJAX + "es5/", path.read_text(encoding="utf-8")).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Server:
    """A running server of a built book: its base URL and the paths it answered with 404."""

    base: str
    missing: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(html_dir: Path, *, mathjax: Path | None) -> Iterator[Server]:
    """Serve ``html_dir`` on 127.0.0.1 (a free port), with the CDN's MathJax 3 replaced by
    ``mathjax`` when given."""
    missing: list[str] = []
    handler = type("Handler", (_Handler,), {"mathjax": mathjax.resolve() if mathjax else None, "missing": missing})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(html_dir)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/", missing)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------------------
# one page in the browser

_WAIT_JS = r"""
const done = arguments[arguments.length - 1];
const limit = arguments[0];
const start = Date.now();
const images = Array.from(document.images).map(img => {
  img.loading = "eager";
  return img.complete ? Promise.resolve() : new Promise(r => { img.addEventListener("load", r); img.addEventListener("error", r); });
});
const hasMath = document.querySelector(".math") !== null;
const hasScript = document.querySelector('script[src*="mathjax" i]') !== null;
function mathjax() {
  return new Promise(resolve => {
    if (!hasMath && !hasScript) { resolve("none"); return; }
    (function poll() {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        MathJax.startup.promise.then(() => resolve("ok"), e => resolve("error: " + e));
      } else if (Date.now() - start > limit) {
        resolve(hasScript ? "MathJax did not start" : "math on the page but no MathJax script");
      } else { setTimeout(poll, 50); }
    })();
  });
}
const timeout = new Promise(r => setTimeout(() => r("timeout"), limit));
Promise.race([Promise.all([mathjax(), Promise.all(images)]).then(([m]) => m), timeout]).then(done);
"""

_INSPECT_JS = r"""
const SKIP = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "NOSCRIPT", "MJX-CONTAINER", "MATH", "TEMPLATE"]);
function visibleText() {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (SKIP.has(el.tagName.toUpperCase()) || el.classList.contains("highlight")) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  while (walker.nextNode()) out.push(walker.currentNode.nodeValue);
  return out.join(" ");
}
const maths = Array.from(document.querySelectorAll(".math"));
return {
  url: location.href,
  title: document.title,
  mjx: document.querySelectorAll("mjx-container").length,
  mjx_errors: Array.from(document.querySelectorAll("mjx-merror, [data-mjx-error]")).map(e => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 120)),
  math: maths.length,
  untypeset: maths.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.trim().slice(0, 120)),
  text: visibleText(),
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  ids: Array.from(document.querySelectorAll("[id]")).map(e => e.id).concat(Array.from(document.querySelectorAll("a[name]")).map(a => a.name)),
  refs: Array.from(document.querySelectorAll("a.reference.internal")).map(a => a.href),
};
"""

_SCROLL_JS = r"""
const box = document.querySelector("div.proof.theorem, div.proof");
if (box) { box.scrollIntoView({block: "start"}); window.scrollBy(0, -80); } else { window.scrollTo(0, 0); }
"""
"""Screenshots show the page's first theorem box (sphinx-proof) if it has one, else its top."""

RAW_TEX = re.compile(r"\$\$[^$]*?\$\$|\$\$|\$[^$\s][^$]*?\$|\\\(|\\\[|\\begin\{")


@dataclass(frozen=True)
class Page:
    """What the browser showed of one page (see :func:`open_page`)."""

    url: str
    title: str
    mathjax: str
    mjx: int
    math: int
    untypeset: tuple[str, ...]
    mjx_errors: tuple[str, ...]
    raw_tex: tuple[str, ...]
    images: tuple[dict, ...]
    links: tuple[str, ...]
    ids: frozenset[str]
    refs: tuple[str, ...]
    text: str


def open_page(driver, url: str, *, timeout_ms: int = 30000) -> Page:
    """Load ``url``, wait for MathJax and the images, and read the rendered page."""
    driver.get(url)
    status = driver.execute_async_script(_WAIT_JS, timeout_ms)
    data = driver.execute_script(_INSPECT_JS)
    raw = tuple(m.group(0)[:80] for m in RAW_TEX.finditer(data["text"]))
    return Page(
        url=data["url"], title=data["title"], mathjax=status, mjx=data["mjx"], math=data["math"],
        untypeset=tuple(data["untypeset"]), mjx_errors=tuple(data["mjx_errors"]), raw_tex=raw,
        images=tuple(data["images"]), links=tuple(data["links"]), ids=frozenset(data["ids"]),
        refs=tuple(data["refs"]), text=data["text"],
    )


# ----------------------------------------------------------------------------------------
# checks


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.setdefault(attrs[key], attrs.get("class") or "")


@functools.lru_cache(maxsize=None)
def _static_ids(path: Path) -> dict[str, str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.ids


def resolve(html_dir: Path, base: str, href: str) -> tuple[Path, str] | None:
    """The file and fragment an internal ``href`` points to; ``None`` for an external link."""
    parts = urlsplit(href)
    if not href.startswith(base):
        return None
    rel = unquote(parts.path[len(urlsplit(base).path):])
    target = html_dir / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    return target, unquote(parts.fragment)


def link_problems(page: Page, html_dir: Path, base: str) -> list[str]:
    """Internal links of ``page`` whose file or anchor does not exist."""
    problems = []
    own = resolve(html_dir, base, page.url)
    for href in dict.fromkeys(page.links):
        target = resolve(html_dir, base, href)
        if target is None:
            continue
        path, fragment = target
        if not path.is_file():
            problems.append(f"{href}: no file {path.relative_to(html_dir) if html_dir in path.parents else path}")
        elif fragment and own is not None and path == own[0]:
            if fragment not in page.ids:
                problems.append(f"{href}: no element with id {fragment!r} on this page")
        elif fragment and path.suffix == ".html" and fragment not in _static_ids(path):
            problems.append(f"{href}: no element with id {fragment!r} in {path.name}")
    return problems


def math_problems(page: Page) -> list[str]:
    problems = []
    if page.mathjax not in ("ok", "none"):
        problems.append(f"MathJax: {page.mathjax}")
    if page.math and page.mjx == 0:
        problems.append(f"{page.math} math elements but no MathJax output (mjx-container)")
    problems += [f"math not typeset: {t!r}" for t in page.untypeset]
    problems += [f"MathJax error: {t!r}" for t in page.mjx_errors]
    problems += [f"raw TeX in the text: {t!r}" for t in page.raw_tex]
    return problems


def image_problems(page: Page) -> list[str]:
    return [
        f"image did not load: {img['src']} (complete={img['complete']}, {img['width']}x{img['height']})"
        for img in page.images
        if not (img["complete"] and img["width"] > 0 and img["height"] > 0)
    ]


PRF_REF = re.compile(r"\{prf:ref\}`(?:[^`<]*<)?([^`<>]+?)>?`")


def theorem_labels(source: str) -> list[str]:
    """Labels referenced with ``{prf:ref}`` in a MyST source (``label`` or ``text <label>``)."""
    return list(dict.fromkeys(m.group(1).strip() for m in PRF_REF.finditer(source)))


def theorem_problems(page: Page, labels: list[str], html_dir: Path, base: str) -> list[str]:
    """Every ``{prf:ref}`` label is a link to a sphinx-proof box; no raw role is visible."""
    problems = []
    targets = {}
    for href in page.refs:
        resolved = resolve(html_dir, base, href)
        if resolved is not None and resolved[1]:
            targets.setdefault(resolved[1], resolved[0])
    for label in labels:
        path = targets.get(label)
        if path is None:
            problems.append(f"{{prf:ref}} {label!r} is not a link on the page")
            continue
        klass = _static_ids(path).get(label) if path.is_file() else None
        if klass is None or "proof" not in klass.split():
            problems.append(f"{{prf:ref}} {label!r} points at {path.name}#{label}, which is no theorem box")
    if "prf:ref" in page.text:
        problems.append("unresolved 'prf:ref' text shown on the page")
    return problems


def repository(config_text: str) -> tuple[str, str]:
    """``(url, branch)`` of the ``repository:`` section of ``_config.yml``."""
    import yaml

    repo = (yaml.safe_load(config_text) or {}).get("repository", {}) or {}
    return str(repo.get("url", "")).rstrip("/"), str(repo.get("branch", "main"))


def colab_problems(page: Page, notebook: str, *, repo_url: str, branch: str, repo_root: Path) -> list[str]:
    """The Colab links of a notebook page open ``notebooks/<notebook>.ipynb`` of the repository."""
    github = re.escape(repo_url.replace("https://github.com/", "https://colab.research.google.com/github/"))
    pattern = re.compile(rf"{github}/blob/{re.escape(branch)}/(.+\.ipynb)")
    links = [h for h in page.links if h.startswith("https://colab.research.google.com/")]
    if not links:
        return ["no Colab link on a notebook page"]
    problems = []
    for href in dict.fromkeys(links):
        m = pattern.fullmatch(href)
        if m is None:
            problems.append(f"Colab link {href} is not {repo_url} at {branch}/<path>.ipynb")
        elif m.group(1) != f"notebooks/{notebook}.ipynb":
            problems.append(f"Colab link {href} opens {m.group(1)}, not the paired notebooks/{notebook}.ipynb")
        elif not (repo_root / m.group(1)).is_file():
            problems.append(f"Colab link {href}: {m.group(1)} does not exist in the repository")
    return problems


# ----------------------------------------------------------------------------------------
# the whole book


def toc_pages(book_root: Path) -> list[str]:
    """Page names (``book/intro``, ``book/chapters/optimum``, ...) of ``_toc.yml``, in order."""
    import yaml

    toc = yaml.safe_load((book_root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in dict.fromkeys(pages)]


def page_source(book_root: Path, page: str) -> tuple[str, str | None]:
    """The MyST source text of a page and, for an executed notebook, the notebook's name."""
    prefix = "book/chapters/"
    if page.startswith(prefix):
        name = page[len(prefix):]
        source = book_root / "notebooks" / f"{name}.md"
        return (source.read_text() if source.is_file() else ""), name
    source = book_root / f"{page}.md"
    return (source.read_text() if source.is_file() else ""), None


CATEGORIES = ("build", "math", "images", "links", "theorems", "colab")


@dataclass(frozen=True)
class BookReport:
    """Problems per page and check (``CATEGORIES``; empty lists when passed), the pages as
    shown, the paths the server answered with 404 and the screenshots written."""

    problems: dict[str, dict[str, list[str]]]
    pages: dict[str, Page]
    server_404: tuple[str, ...]
    screenshots: dict[str, Path]

    def of(self, category: str) -> dict[str, list[str]]:
        """``{page: problems}`` of one check, only the pages with problems."""
        return {name: probs[category] for name, probs in self.problems.items() if probs.get(category)}

    @property
    def ok(self) -> bool:
        return not self.server_404 and not any(self.of(c) for c in CATEGORIES)

    def summary(self) -> str:
        lines = []
        for name, probs in self.problems.items():
            page = self.pages.get(name)
            extra = f" ({page.mjx} formulas, {len(page.images)} images, {len(page.links)} links)" if page else ""
            flat = [f"{c}: {p}" for c in CATEGORIES for p in probs.get(c, [])]
            lines.append(f"{'ok    ' if not flat else 'FAILED'} {name}{extra}")
            lines += [f"         - {p}" for p in flat]
        lines += [f"404    {p}" for p in self.server_404]
        return "\n".join(lines)


def check_book(
    book_root: Path,
    *,
    html_dir: Path | None = None,
    repo_root: Path = REPO,
    screenshots: dict[str, Path] | None = None,
    driver=None,
) -> BookReport:
    """Open every page of the book in Chromium and run every check of this module.

    ``screenshots`` maps page names to PNG paths to write (the viewport, 1280 x 2000, scrolled to
    the page's first theorem box if it has one).
    """
    html_dir = Path(html_dir) if html_dir is not None else book_root / "_build" / "html"
    mathjax = local_mathjax()
    if mathjax is None:
        raise RuntimeError("no local MathJax 3: pip install django-static-mathjax (the test extra)")
    repo_url, branch = repository((book_root / "_config.yml").read_text())
    problems: dict[str, dict[str, list[str]]] = {}
    pages: dict[str, Page] = {}
    shots: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(serve(html_dir, mathjax=mathjax))
        if driver is None:
            driver = stack.enter_context(chrome())
        for name in toc_pages(book_root):
            file = html_dir / f"{name}.html"
            if not file.is_file():
                problems[name] = {"build": [f"page {file.relative_to(html_dir)} was not built"]}
                continue
            page = open_page(driver, server.base + f"{name}.html")
            pages[name] = page
            source, notebook = page_source(book_root, name)
            problems[name] = {
                "math": math_problems(page),
                "images": image_problems(page),
                "links": link_problems(page, html_dir, server.base),
                "theorems": theorem_problems(page, theorem_labels(source), html_dir, server.base),
                "colab": [] if notebook is None else colab_problems(
                    page, notebook, repo_url=repo_url, branch=branch, repo_root=repo_root),
            }
            if screenshots and name in screenshots:
                shots[name] = Path(screenshots[name])
                shots[name].parent.mkdir(parents=True, exist_ok=True)
                driver.execute_script(_SCROLL_JS)
                driver.save_screenshot(str(shots[name]))
        time.sleep(0.2)  # let the server log the last requests
        missing = tuple(dict.fromkeys(server.missing))
    return BookReport(problems, pages, missing, shots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    parser.add_argument("--root", default=None, help="the book's sources (default: two folders above HTML)")
    parser.add_argument("--screenshots", default=None, metavar="DIR", help="write screenshots of every page here")
    args = parser.parse_args(argv)
    html_dir = Path(args.html).resolve()
    root = Path(args.root).resolve() if args.root else html_dir.parents[1]
    reason = ensure_chromium(install=False)
    if reason:
        print(f"browser_check: {reason} (apt-get install {' '.join(APT_PACKAGES)})", file=sys.stderr)
        return 2
    shots = None
    if args.screenshots:
        shots = {p: Path(args.screenshots) / (p.replace("/", "-") + ".png") for p in toc_pages(root)}
    report = check_book(root, html_dir=html_dir, screenshots=shots)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
