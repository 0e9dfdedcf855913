"""The book's Sphinx extension: launch buttons open the paired notebook; MathJax on every page.

Loaded from ``_config.yml`` (``sphinx: local_extensions: {ufm_pages: book/_ext}``). It is the
book's own code and imports nothing of ufmlib, so that building the book needs no ufmlib.

**Launch buttons.** The result pages of the book are the executed notebooks
``outputs/notebooks/<name>.ipynb`` written by ``ufm regenerate``; those files are not in the
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

**MathJax everywhere.** Chapter titles in the navigation contain formulas, which stay raw TeX
on pages without math of their own, because Sphinx loads MathJax only on pages with equations.
There is no configuration value for this in Sphinx 7.4; the documented way is the application
API ``app.set_html_assets_policy("always")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NOTEBOOKS = "notebooks"
"""Folder of the committed notebooks (``<name>.md`` and the paired ``<name>.ipynb``)."""
EXECUTED = "outputs/notebooks"
"""Folder of the executed notebooks, i.e. of the result pages."""


def repository_path(pagename: str) -> str | None:
    """The committed notebook behind a book page: ``outputs/notebooks/x`` -> ``notebooks/x.ipynb``
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


def setup(app) -> dict[str, Any]:
    """Register the launch-link handler (priority 900, after the theme's 500) and load MathJax
    on every page."""
    app.set_html_assets_policy("always")
    app.connect("html-page-context", rewrite_launch_links, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
