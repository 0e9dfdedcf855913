"""What a chapter uses: glued values and figures, checks of three kinds, claims, agreement tables.

This module is what the notebooks import besides the science itself. It needs nothing of the
book machinery (no papermill, nbformat, jupytext, Sphinx or myst-nb), so a notebook opened on
Colab runs with ``pip install ufmlib`` alone.

* :func:`glue` puts a value (a number, a string, a matplotlib figure) into the notebook's
  outputs under a name, with the same output layout as ``myst_nb.glue``, so that the book can
  paste it into prose with ``{glue:text}`` / ``{glue:figure}``; outside the book build (on
  Colab, in Jupyter) it also shows the value, so a reader sees the numbers the prose refers
  to. :func:`glue_values` glues many at once; :func:`show_figure` saves, glues and shows a figure.
* :func:`check` compares a measured number with the theory under an explicit tolerance,
  raises :class:`ReproductionError` when they disagree (a failed check fails the run) and
  records the comparison in the notebook's outputs, from where :mod:`ufmlib.book` builds the
  "Reproduction status" page. Every check says what *kind* of evidence it is (:data:`KINDS`):

  - ``"reproduction"``: the theory against a quantity measured independently of the formula
    under test (a trained run, an autodiff Hessian, a Lanczos spectrum, a classifier's head);
  - ``"construction"``: a property the code set when it built the point (the singular values
    of a constructed minimiser, say);
  - ``"identity"``: one formula written two ways.
* :func:`require_checks` declares the checks a chapter's claims need; :func:`not_checked`
  records one that could not run (no seed reached the collapsed point, say) with the reason;
  :func:`glue_claim` glues the sentence that states a result only when its checks ran and
  passed, and an explicit "not checked in this run" otherwise.
* :func:`agreement_table` renders checks, or rows of predicted and measured values, as the one
  Markdown table format of the chapters (:func:`show_table` displays it).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any, Mapping

__all__ = [
    "GLUE_PREFIX",
    "CHECK_PREFIX",
    "REQUIRED_NAME",
    "CHECK_MIME",
    "BOOK_BUILD_ENV",
    "KINDS",
    "ReproductionError",
    "Check",
    "NotChecked",
    "record_from_dict",
    "in_book_build",
    "glue",
    "glue_values",
    "show_figure",
    "figure_png",
    "check",
    "not_checked",
    "require_checks",
    "glue_claim",
    "agreement_table",
    "show_table",
]

GLUE_PREFIX = "application/papermill.record/"
"""Mime-type prefix of a glued output that is stored but not displayed (myst-nb's layout)."""

CHECK_PREFIX = "ufm-check:"
"""Glue-name prefix of the records written by :func:`check`."""

CHECK_MIME = "application/json"
"""Mime type (after :data:`GLUE_PREFIX`) of a check record."""

REQUIRED_NAME = "ufm-required-checks"
"""Glue name of the record written by :func:`require_checks`."""

BOOK_BUILD_ENV = "UFM_BOOK_BUILD"
"""Environment variable set (to ``1``) in the kernels that ``ufm regenerate`` starts: there
:func:`glue` stores values without showing them, because the book pastes them into the prose."""

KINDS = ("reproduction", "construction", "identity")
"""The kinds of evidence a check can be (see the module docstring)."""


class ReproductionError(AssertionError):
    """A measured value disagrees with the theory beyond its stated tolerance."""


# ----------------------------------------------------------------------------------------
# glue


def _plain(value: Any) -> Any:
    """Python scalars for numpy / torch scalars (their repr would not parse as a number)."""
    import numpy as np

    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if type(value).__module__.startswith("torch") and callable(getattr(value, "dim", None)) and value.dim() == 0:
        return value.item()
    return value


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure with no time- or version-dependent metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _bundle(value: Any) -> dict[str, Any]:
    value = _plain(value)
    if type(value).__name__ == "Figure" and hasattr(value, "savefig"):
        return {
            "image/png": base64.b64encode(figure_png(value)).decode("ascii"),
            "text/plain": "<Figure>",
        }
    if isinstance(value, bool) or not isinstance(value, (Real, str)):
        try:
            from IPython.core.formatters import format_display_data
        except ImportError:  # pragma: no cover - IPython is present wherever a kernel runs
            return {"text/plain": repr(value)}
        bundle, _ = format_display_data(value)
        return bundle
    if isinstance(value, str):
        return {"text/plain": value, "text/markdown": value}
    return {"text/plain": repr(value)}


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def in_book_build() -> bool:
    """Whether this kernel was started by ``ufm regenerate`` (:data:`BOOK_BUILD_ENV` is set)."""
    import os

    return os.environ.get(BOOK_BUILD_ENV, "") not in ("", "0")


def _show(name: str, value: Any, bundle: Mapping[str, Any]) -> None:
    """Show a glued value to a reader outside the book build: a figure as itself, anything else
    as ``name = value``."""
    from IPython.display import display as ipy_display

    if "image/png" in bundle:
        ipy_display({"image/png": bundle["image/png"], "text/plain": f"<Figure {name}>"}, raw=True)
    else:
        text = bundle.get("text/plain", repr(value))
        ipy_display({"text/plain": f"{name} = {text}"}, raw=True)


def glue(name: str, value: Any, *, display: bool = False) -> None:
    """Store ``value`` in the notebook's outputs under ``name`` (for ``{glue:...}`` in the book).

    Numbers are stored as their Python ``repr`` (numpy and torch scalars are converted first,
    so that ``{glue:text}`name:.4f``` can format them); strings as themselves (text and
    markdown, so ``{glue:md}`name:myst``` works); matplotlib figures as a deterministic PNG.
    In the book build (:func:`in_book_build`) nothing is shown unless ``display=True``;
    anywhere else (Colab, Jupyter) the value is also shown as ``name = value`` (a figure as
    itself), because the ``{glue:...}`` roles of the text are not rendered there. Outside a
    Jupyter kernel nothing is stored (the value is still converted, so bad values fail).
    """
    _check_name(name)
    bundle = _bundle(value)
    if _in_kernel():
        from IPython.display import display as ipy_display

        prefix = "" if display else GLUE_PREFIX
        ipy_display(
            {prefix + k: v for k, v in bundle.items()},
            raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": prefix}},
        )
        if not display and not in_book_build():
            _show(name, value, bundle)


def glue_values(values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """:func:`glue` every ``name: value`` of ``values`` and of the keyword arguments, in order."""
    items = {**(dict(values) if values is not None else {}), **more}
    if not items:
        raise ValueError("glue_values needs at least one name = value")
    for key, value in items.items():
        glue(key, value)


def show_figure(name: str, fig: Any, *, save_as: str | None = None) -> None:
    """Save ``fig`` (PNG and PDF, :func:`ufmlib.plotting.save_figure`, under ``save_as`` or
    ``name`` without a ``fig-`` prefix), glue it under ``name`` for ``{glue:figure}`` and close it.

    In the book the figure then appears once, where the text places it; on Colab and in
    Jupyter :func:`glue` shows it in the cell's output.
    """
    from ufmlib.plotting import save_figure

    _check_name(name)
    stem = save_as if save_as is not None else (name[4:] if name.startswith("fig-") else name)
    save_figure(fig, stem)
    glue(name, fig)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------------------
# theory-versus-measurement checks


class _Stored:
    """``as_dict`` / ``from_dict`` of the records stored in a notebook (frozen dataclasses)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Check(_Stored):
    """One comparison of a measured value with the theory.

    ``kind`` is the kind of evidence (one of :data:`KINDS`); ``error`` is
    ``max |measured - theory|`` (``tolerance_type="abs"``) or the same divided by ``|theory|``
    (``tolerance_type="rel"``); ``measured``/``theory`` are the entries where the largest error
    occurs when arrays were compared; ``size`` is the number of entries compared.
    """

    name: str
    result: str
    description: str
    kind: str
    theory: float
    measured: float
    error: float
    tolerance: float
    tolerance_type: str
    size: int
    passed: bool
    status: str = "checked"


@dataclass(frozen=True)
class NotChecked(_Stored):
    """A check a claim needs that did not run in this run, with the reason (see :func:`not_checked`)."""

    name: str
    result: str
    description: str
    kind: str
    reason: str
    passed: None = None
    status: str = "not checked"


def record_from_dict(data: Mapping[str, Any]) -> "Check | NotChecked":
    """A stored check record read back: :class:`NotChecked` when it did not run, else :class:`Check`."""
    return NotChecked.from_dict(data) if data.get("status") == "not checked" else Check.from_dict(data)


def _as_float_array(value: Any, name: str):
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers; got {value!r}") from None
    return arr


def _check_kind(kind: Any) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")


def _store(name: str, payload: Any, text: str) -> None:
    """Store ``payload`` as JSON in the notebook's outputs under the glue name ``name``, not shown
    (the records that :mod:`ufmlib.book` reads back from an executed notebook)."""
    if _in_kernel():
        from IPython.display import display as ipy_display

        ipy_display(
            {GLUE_PREFIX + CHECK_MIME: json.dumps(payload), GLUE_PREFIX + "text/plain": text},
            raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}},
        )


def _record(rec: "Check | NotChecked") -> None:
    _store(CHECK_PREFIX + rec.name, rec.as_dict(), repr(rec))


def check(
    name: str,
    measured: Any,
    theory: Any,
    *,
    result: str,
    kind: str,
    description: str,
    rtol: float | None = None,
    atol: float | None = None,
    record: bool = True,
) -> Check:
    """Assert that ``measured`` agrees with ``theory`` within an explicit tolerance.

    Give exactly one of ``rtol`` (relative: ``max|m - t| / |t|``) or ``atol`` (absolute:
    ``max|m - t|``). ``measured`` and ``theory`` may be numbers or arrays (broadcast against
    each other); ``result`` is the book's result number (``"R1"``...), ``kind`` the kind of
    evidence (``"reproduction"``, ``"construction"`` or ``"identity"``, see :data:`KINDS`),
    ``description`` a short phrase used by the "Reproduction status" page. An upper bound such
    as "the gradient vanishes" is written as ``check(..., measured=max|g|, theory=0.0, atol=1e-12)``.

    The comparison is recorded in the notebook's outputs (``record=True``) and a
    :class:`ReproductionError` is raised when it fails. NaN never passes.
    """
    import numpy as np

    _check_name(name)
    _check_kind(kind)
    if (rtol is None) == (atol is None):
        raise ValueError("give exactly one of rtol or atol")
    tol = rtol if rtol is not None else atol
    if isinstance(tol, bool) or not isinstance(tol, Real) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"{'rtol' if rtol is not None else 'atol'} must be a finite number >= 0; got {tol!r}")
    m = _as_float_array(measured, "measured")
    t = _as_float_array(theory, "theory")
    try:
        m, t = (a.reshape(-1) for a in np.broadcast_arrays(m, t))
    except ValueError:
        raise ValueError(f"measured (shape {m.shape}) and theory (shape {t.shape}) do not broadcast") from None
    if m.size == 0:
        raise ValueError("measured must not be empty")
    err = np.abs(m - t)
    if rtol is not None:
        if np.any(t == 0):
            raise ValueError("rtol needs a non-zero theory value; use atol for a value of 0")
        err = err / np.abs(t)
    err = np.where(np.isnan(err), np.inf, err)
    worst = int(np.argmax(err))
    error = float(err[worst])
    passed = bool(error <= tol)
    rec = Check(
        name=name, result=str(result), description=str(description), kind=kind,
        theory=float(t[worst]), measured=float(m[worst]), error=error, tolerance=float(tol),
        tolerance_type="rel" if rtol is not None else "abs", size=int(m.size), passed=passed,
    )
    if record:
        _record(rec)
    if not passed:
        raise ReproductionError(
            f"{result} {name} ({description}): measured {rec.measured!r}, theory {rec.theory!r}, "
            f"{rec.tolerance_type} error {error:.3e} > tolerance {tol:.1e}"
        )
    return rec


def not_checked(name: str, *, result: str, kind: str, description: str, reason: str) -> NotChecked:
    """Record that the check ``name``, which a claim of the chapter needs, did not run, and why.

    Call it in the branch where the check cannot be made (no seed reached the collapsed point,
    say). The record appears on the "Reproduction status" page as *not checked* with
    ``reason``; the cell shows the reader a one-line note. Pass the returned record to
    :func:`glue_claim` so that the text does not state the result as shown.
    """
    _check_name(name)
    _check_kind(kind)
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"reason must say why the check did not run; got {reason!r}")
    rec = NotChecked(name=name, result=str(result), description=str(description), kind=kind, reason=reason.strip())
    _record(rec)
    if _in_kernel():
        from IPython.display import Markdown, display as ipy_display

        ipy_display(Markdown(f"**Not checked in this run** ({rec.result}, {rec.description}): {rec.reason}."))
    return rec


def require_checks(*names: str) -> tuple[str, ...]:
    """Declare the checks the chapter's claims need (call it once, before they run).

    The "Reproduction status" page lists every declared check that did not run as *not
    checked* (with the reason given to :func:`not_checked`, or "did not run").
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"names must be non-empty strings; got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct; got {names!r}")
    _store(REQUIRED_NAME, list(names), repr(names))
    return tuple(names)


def glue_claim(name: str, records: Any, *, shown: str) -> str:
    """Glue (as Markdown, for ``{glue:md}`name:myst```) the sentence stating a measured result.

    ``records`` are the :class:`Check` / :class:`NotChecked` records the sentence rests on (one
    or a sequence; ``None`` entries count as not run). When every one ran and passed the glued
    text is ``shown``; otherwise it says that the claim was not checked in this run and why, so
    that no sentence of the page states a result that this run did not show. Returns the text.
    """
    if isinstance(records, (Check, NotChecked)) or records is None:
        records = [records]
    records = list(records)
    if not records:
        raise ValueError("records must name at least one check")
    missing = [r for r in records if not (isinstance(r, Check) and r.passed)]
    if not missing:
        text = shown
    else:
        reasons = sorted({r.reason for r in missing if isinstance(r, NotChecked)}) or ["the check did not run"]
        what = "; ".join(sorted({r.description for r in missing if r is not None})) or "this claim"
        text = f"**Not checked in this run** ({what}): {'; '.join(reasons)}."
    glue(name, text)
    return text


# ----------------------------------------------------------------------------------------
# agreement tables


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def agreement_table(rows, *, digits: int = 10, headers=None) -> str:
    """A Markdown table of theory against measurement: the one table format of the chapters.

    ``rows`` is either a list of :class:`Check` records (what :func:`check` returned) or a list of
    ``(quantity, predicted, measured, *extra)`` tuples:

    * checks: columns *check, predicted, measured, error, tolerance* and the outcome (✓/✗), the
      error relative or absolute as it was checked;
    * tuples: columns *quantity, predicted, measured*, the extra entries, and the relative error
      ``|measured - predicted|/|predicted|`` (the absolute error, marked "(abs)", for a predicted
      0). ``headers`` names every column in display order (default: quantity, predicted,
      measured, relative error).
    """
    if isinstance(digits, bool) or not isinstance(digits, Integral) or not 1 <= digits <= 17:
        raise ValueError(f"digits must be an integer in 1..17; got {digits!r}")
    rows = list(rows)
    if not rows:
        raise ValueError("rows must not be empty")
    if all(isinstance(r, Check) for r in rows):
        if headers is not None:
            raise ValueError("headers are fixed for a table of Check records")
        cells = []
        for c in rows:
            kind = "rel." if c.tolerance_type == "rel" else "abs."
            cells.append([c.description, f"{c.theory:.{digits}g}", f"{c.measured:.{digits}g}",
                          f"{c.error:.1e} ({kind})", f"{c.tolerance:.0e}", "✓" if c.passed else "✗"])
        return _markdown(["check", "predicted", "measured", "error", "tolerance", ""], cells)
    if any(isinstance(r, Check) or not isinstance(r, (tuple, list)) for r in rows):
        raise ValueError("rows must be all Check records or all (quantity, predicted, measured, ...) tuples")
    rows = [tuple(r) for r in rows]
    if any(len(r) < 3 for r in rows):
        raise ValueError("rows must be a non-empty sequence of (quantity, predicted, measured, ...) tuples")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("rows must all have the same length")
    headers = list(headers) if headers is not None else ["quantity", "predicted", "measured", "relative error"]
    if len(headers) != width + 1:
        raise ValueError(f"headers must name {width + 1} columns; got {len(headers)}")

    def fmt(v) -> str:
        if isinstance(v, Real) and not isinstance(v, bool):
            return f"{float(v):.{digits}g}"
        return str(v)

    cells = []
    for r in rows:
        name, p, m = r[0], float(r[1]), float(r[2])
        err = abs(m - p) / abs(p) if p != 0 else abs(m - p)
        note = "" if p != 0 else " (abs)"
        cells.append([str(name), fmt(p), fmt(m)] + [fmt(e) for e in r[3:]] + [f"{err:.1e}{note}"])
    return _markdown(headers, cells)


def show_table(rows, *, digits: int = 10, headers=None):
    """:func:`agreement_table` as a displayable Markdown object (the last line of a cell)."""
    from IPython.display import Markdown

    return Markdown(agreement_table(rows, digits=digits, headers=headers))
