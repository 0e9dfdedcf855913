"""What a chapter uses: glued values, theory-versus-measurement checks and agreement tables.

This module is what the notebooks import besides the science itself. It needs nothing of the
book machinery (no papermill, nbformat, jupytext, Sphinx or myst-nb), so a notebook opened on
Colab runs with ``pip install ufmlib`` alone.

* :func:`glue` puts a value (a number, a string, a matplotlib figure) into the notebook's
  outputs under a name, with the same output layout as ``myst_nb.glue``, so that the book can
  paste it into prose with ``{glue:text}`` / ``{glue:figure}``.
* :func:`check` compares a measured number with the theory under an explicit tolerance,
  raises :class:`ReproductionError` when they disagree (a failed reproduction fails the run)
  and records the comparison in the notebook's outputs, from where :mod:`ufmlib.book` builds the
  "Reproduction status" page.
* :func:`agreement_table` renders checks, or rows of predicted and measured values, as the one
  Markdown table format of the chapters.
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
    "CHECK_MIME",
    "ReproductionError",
    "Check",
    "glue",
    "figure_png",
    "check",
    "agreement_table",
]

GLUE_PREFIX = "application/papermill.record/"
"""Mime-type prefix of a glued output that is stored but not displayed (myst-nb's layout)."""

CHECK_PREFIX = "ufm-check:"
"""Glue-name prefix of the records written by :func:`check`."""

CHECK_MIME = "application/json"
"""Mime type (after :data:`GLUE_PREFIX`) of a check record."""


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


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def glue(name: str, value: Any, *, display: bool = False) -> None:
    """Store ``value`` in the notebook's outputs under ``name`` (for ``{glue:...}`` in the book).

    Numbers are stored as their Python ``repr`` (numpy and torch scalars are converted first,
    so that ``{glue:text}`name:.4f``` can format them); strings as themselves (text and
    markdown, so ``{glue:md}`name:myst``` works); matplotlib figures as a deterministic PNG.
    With ``display=False`` (default) nothing is shown in the notebook itself. Outside a
    Jupyter kernel nothing is stored (the value is still converted, so bad values fail).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    bundle = _bundle(value)
    if _in_kernel():
        from IPython.display import display as ipy_display

        prefix = "" if display else GLUE_PREFIX
        ipy_display(
            {prefix + k: v for k, v in bundle.items()},
            raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": prefix}},
        )


# ----------------------------------------------------------------------------------------
# theory-versus-measurement checks


@dataclass(frozen=True)
class Check:
    """One comparison of a measured value with the theory.

    ``error`` is ``max |measured - theory|`` (``kind="abs"``) or the same divided by
    ``|theory|`` (``kind="rel"``); ``measured``/``theory`` are the entries where the largest
    error occurs when arrays were compared; ``size`` is the number of entries compared.
    """

    name: str
    result: str
    description: str
    theory: float
    measured: float
    error: float
    tolerance: float
    kind: str
    size: int
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Check":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _as_float_array(value: Any, name: str):
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers; got {value!r}") from None
    return arr


def check(
    name: str,
    measured: Any,
    theory: Any,
    *,
    result: str,
    description: str,
    rtol: float | None = None,
    atol: float | None = None,
    record: bool = True,
) -> Check:
    """Assert that ``measured`` agrees with ``theory`` within an explicit tolerance.

    Give exactly one of ``rtol`` (relative: ``max|m - t| / |t|``) or ``atol`` (absolute:
    ``max|m - t|``). ``measured`` and ``theory`` may be numbers or arrays (broadcast against
    each other); ``result`` is the book's result number (``"R1"``...), ``description`` a
    short phrase used by the "Reproduction status" page. An upper bound such as "the gradient
    vanishes" is written as ``check(..., measured=max|g|, theory=0.0, atol=1e-12)``.

    The comparison is recorded in the notebook's outputs (``record=True``) and a
    :class:`ReproductionError` is raised when it fails. NaN never passes.
    """
    import numpy as np

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
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
        name=name, result=str(result), description=str(description),
        theory=float(t[worst]), measured=float(m[worst]), error=error, tolerance=float(tol),
        kind="rel" if rtol is not None else "abs", size=int(m.size), passed=passed,
    )
    if record and _in_kernel():
        from IPython.display import display as ipy_display

        ipy_display(
            {GLUE_PREFIX + CHECK_MIME: json.dumps(rec.as_dict()), GLUE_PREFIX + "text/plain": repr(rec)},
            raw=True,
            metadata={"scrapbook": {"name": CHECK_PREFIX + name, "mime_prefix": GLUE_PREFIX}},
        )
    if not passed:
        raise ReproductionError(
            f"{result} {name} ({description}): measured {rec.measured!r}, theory {rec.theory!r}, "
            f"{rec.kind} error {error:.3e} > tolerance {tol:.1e}"
        )
    return rec


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
            kind = "rel." if c.kind == "rel" else "abs."
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
