"""The book's Sphinx extension: launch buttons open the paired notebook; MathJax on every page.

Loaded from ``_config.yml`` (``sphinx: local_extensions: {ufm_pages: book/_ext}``). It is the
book's own code and imports nothing of ufmlib, so that building the book needs no ufmlib.

**Launch buttons.** The result pages of the book are the executed notebooks
``book/chapters/<name>.ipynb`` written by ``ufm regenerate``; those files are not in the
repository. Their Colab button must open the committed paired notebook
``notebooks/<name>.ipynb`` instead. What the theme can do by itself was checked against
sphinx-book-theme 1.3.0 (``header_buttons/launch.py``, identical to the upstream sources of
``executablebooks/sphinx-book-theme`` at commit 055af05; its documentation
``docs/content/launch.md``) and jupyter-book 1.0.4.post1 (``jupyter_book/config.py``;
``docs/interactive/launchbuttons.ipynb``). The documented options are

* ``repository: url / branch / path_to_book`` (passed to the theme as ``repository_url``,
  ``repository_branch`` and ``path_to_docs``) and
* ``launch_buttons: colab_url / binderhub_url / jupyterhub_url / deepnote_url /
  jupyterlite_url / thebe / notebook_interface``.

The theme builds every launch link as ``<repository>/blob/<branch>/<path_to_docs>/<page
name><extension>``: ``path_to_docs`` is one prefix for the whole book, prepended to the page's
own name, and there is no per-page setting (no page metadata, no other ``launch_buttons`` key)
that names another file; the paired-file rule of the documentation only picks an ``.ipynb``
*in the same folder* as the page's source. So ``_config.yml`` uses the documented options
for everything they can do - the repository, the branch, Colab, the notebook interface - and
:func:`rewrite_launch_links` only replaces the page's own path in the links the theme built
by the paired notebook's path. A page whose paired notebook does not exist keeps the theme's
links and gets a Sphinx warning (an error under ``-W``).

**Failures are visible.** ``ufm regenerate`` keeps the last good output of a notebook whose
latest run failed and records the failure in ``outputs/status.json`` (see
``ufmlib/book/status.py``). :func:`add_failure_notice` (``source-read``) puts at the top of that
chapter's page a warning naming the failed run (time, profile, the error in one line) and the
earlier run the page shows (time, commit); :func:`outdated_by_status` (``env-get-outdated``)
re-reads a page whenever its notice changes, although the notebook itself did not. A notebook
with no earlier good run gets a page that shows the error (written by ``ufm regenerate``).

**MathJax everywhere.** Chapter titles in the navigation contain formulas, which stay raw TeX
on pages without math of their own, because Sphinx loads MathJax only on pages with equations.
There is no configuration value for this in Sphinx 7.4; the documented way is the application
API ``app.set_html_assets_policy("always")``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

NOTEBOOKS = "notebooks"
"""Folder of the committed notebooks (``<name>.md`` and the paired ``<name>.ipynb``)."""
EXECUTED = "book/chapters"
"""Folder of the executed notebooks, i.e. of the result pages."""


def repository_path(pagename: str) -> str | None:
    """The committed notebook behind a book page: ``book/chapters/x`` -> ``notebooks/x.ipynb``
    (``None`` for any other page)."""
    prefix = f"{EXECUTED}/"
    if not pagename.startswith(prefix):
        return None
    return f"{NOTEBOOKS}/{pagename[len(prefix):]}.ipynb"


def rewrite_launch_links(app, pagename, templatename, context, doctree) -> None:
    """``html-page-context`` handler: point the launch buttons of an executed page at its paired
    notebook (runs after the theme's handler, which builds the buttons); warn when it is missing."""
    target = repository_path(pagename)
    if target is None:
        return
    if not (Path(app.srcdir) / target).is_file():
        from sphinx.util import logging

        logging.getLogger(__name__).warning(
            f"{pagename}: the paired notebook {target} does not exist, its launch buttons would be broken",
            type="ufm", subtype="launch",
        )
        return
    own = f"{pagename}.ipynb"
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if "url" in button:
                button["url"] = button["url"].replace(own, target)


STATUS = "outputs/status.json"
"""The outcome of every notebook's latest run and what its page shows (written by ufm regenerate)."""


def _status(srcdir: str | Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(srcdir) / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def failure_notice(entry: dict[str, Any]) -> str | None:
    """The MyST warning for a chapter whose latest run failed (``None`` when it did not, or when
    the page itself is the error page of a notebook that never ran)."""
    latest = entry.get("latest_run") or {}
    if latest.get("status") not in ("failed", "interrupted") or entry.get("placeholder"):
        return None
    shown = entry.get("shown_run") or {}
    commit = (shown.get("commit") or "no commit")[:10] + (" with uncommitted changes" if shown.get("dirty") else "")
    error = re.sub(r"([\\`*_\[\]{}<>$|#~])", r"\\\1", str(latest.get("error") or latest.get("status")))
    return "\n".join([
        ":::{admonition} The latest run of this chapter failed",
        ":class: warning",
        f"The run of {latest.get('date', '?')} (profile **{latest.get('profile') or '?'}**) {latest['status']}: "
        f"*{error}*",
        "",
        f"This page shows the earlier run of {shown.get('date', '?')} (commit `{commit}`, profile "
        f"**{shown.get('profile') or '?'}**); its checks passed then, and the *Reproduction status* page "
        "lists it with the failure.",
        ":::",
    ])


def _chapter(docname: str) -> str | None:
    prefix = f"{EXECUTED}/"
    return docname[len(prefix):] if docname.startswith(prefix) else None


def add_failure_notice(app, docname: str, source: list[str]) -> None:
    """``source-read`` handler: insert the failure notice after the title of a failed chapter."""
    name = _chapter(docname)
    if name is None:
        return
    notice = failure_notice(_status(app.srcdir).get(name, {}))
    if notice is None:
        return
    nb = json.loads(source[0])
    cells = nb.get("cells", [])
    at = next((i + 1 for i, c in enumerate(cells) if c.get("cell_type") == "markdown"
               and "".join(c.get("source", "")).lstrip().startswith("# ")), 0)
    cells.insert(at, {"cell_type": "markdown", "metadata": {"tags": ["ufm-failure"]}, "source": notice})
    source[0] = json.dumps(nb)


def outdated_by_status(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated`` handler: the chapters whose failure notice changed since the last build."""
    state = _status(app.srcdir)
    notices = {doc: failure_notice(state.get(_chapter(doc), {})) for doc in env.found_docs if _chapter(doc)}
    before = getattr(env, "ufm_failure_notices", {})
    env.ufm_failure_notices = notices
    return [doc for doc, text in notices.items() if before.get(doc) != text and doc not in added]


def setup(app) -> dict[str, Any]:
    """Register the launch-link handler (priority 900, after the theme's 500) and the failure
    notices, and load MathJax on every page."""
    app.set_html_assets_policy("always")
    app.connect("html-page-context", rewrite_launch_links, priority=900)
    app.connect("source-read", add_failure_notice)
    app.connect("env-get-outdated", outdated_by_status)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
