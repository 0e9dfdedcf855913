"""The book machinery: run every notebook under a parameter profile, then build the book.

Layout (relative to the repository root)::

    notebooks/<name>.md        the notebook (jupytext MyST markdown; the file that is edited)
    notebooks/<name>.ipynb     its paired copy without outputs (committed, opened by Colab)
    profiles/<profile>.yaml    parameters per notebook: smoke (tests), ci (<= 10 min), paper
    book/chapters/<name>.ipynb the executed notebook (ignored by git; the book page)
    outputs/status.md          the table of every check, included by book/status.md
    outputs/status.json        per notebook: its latest run, the run its page shows, every check and its kind
    outputs/figures/           files written by ufmlib.plotting.save_figure
    book/_ext/ufm_pages.py     the book's Sphinx extension (launch buttons, MathJax everywhere)

A run (``ufm regenerate``, ``python -m ufmlib.book``,
:func:`ufmlib.book.regenerate.regenerate`) does, in order:

1. reads the profile and the selected notebooks with ``jupytext.read`` and validates the
   profile's parameters against each notebook's ``parameters`` cell (annotated assignments,
   parsed with :mod:`ast`): an unknown parameter, a value of the wrong type or an unavailable
   device is rejected (:class:`~ufmlib.book.parameters.ProfileError`, naming the notebook, the
   parameter and what is allowed) before any kernel starts;
2. executes the selected notebooks with ``papermill`` (kernel ``python3``, working directory
   ``notebooks/``) - serially, ``jobs`` at a time in child processes, or as tasks on a Dask
   distributed cluster (``scheduler``) - each into a temporary file that replaces the previous
   output only on success - a failed notebook keeps its last good output; a notebook whose
   inputs (text, parameters, profile, ufmlib sources) are unchanged since its last good output
   is skipped unless ``force``;
3. records the provenance in the executed notebook's metadata (``metadata.ufm``) and as a small
   box under the page title, collects the notebook's theory-versus-measurement checks (written
   by :func:`ufmlib.notebook.check`), writes ``outputs/status.md``;
4. prints a table (notebook, status, seconds) and the error of every failed cell, and builds
   the book with ``jupyter-book build . -W -n --keep-going`` (unless ``build_book=False``).

The book renders these outputs as they are (``execute_notebooks: off``).

Modules, one job each (imported on demand; this package imports nothing itself, and papermill,
nbformat, jupytext, Sphinx and PyYAML are only imported inside the functions that use them):

* :mod:`~ufmlib.book.parameters` - reading a notebook, its ``parameters`` cell and the
  declared parameters with their types (:class:`~ufmlib.book.parameters.Parameter`);
* :mod:`~ufmlib.book.profiles` - the repository layout, profiles, and the run plan (one
  :class:`~ufmlib.book.profiles.Job` per notebook, with the hash of its inputs);
* :mod:`~ufmlib.book.execute` - executing one notebook with papermill (anywhere) and writing
  its output (here);
* :mod:`~ufmlib.book.worker` - one notebook in a child process, and stopping it with its kernel;
* :mod:`~ufmlib.book.executors` - many notebooks: serially, N at a time, or on a cluster;
* :mod:`~ufmlib.book.cluster` - the Dask distributed route (``--scheduler``);
* :mod:`~ufmlib.book.sweep` - ``ufm sweep``: one notebook over a parameter grid, one table;
* :mod:`~ufmlib.book.provenance` - what a run was (profile, device, versions, commit, date)
  and the checks recorded in an executed notebook;
* :mod:`~ufmlib.book.status` - the "Reproduction status" table and the last outcomes;
* :mod:`~ufmlib.book.build` - ``jupyter-book build`` and the paired-notebook check;
* :mod:`~ufmlib.book.colab` - the Colab install cell of every notebook: the repository address
  (``pyproject.toml``) and the pinned release tag, and its check;
* :mod:`~ufmlib.book.regenerate` - the whole run and its report;
* :mod:`~ufmlib.book.cli` - ``ufm regenerate`` and ``ufm sweep`` (entry points of group
  ``ufmlib.commands``) and ``python -m ufmlib.book``.

The science modules of :mod:`ufmlib` never import this package; it uses them only through
their public names (:mod:`ufmlib.config`, :mod:`ufmlib.runtime`, :mod:`ufmlib.notebook`).
"""
