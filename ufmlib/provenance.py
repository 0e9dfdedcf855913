"""What a notebook run was, and what it showed: provenance, glued values and checks.

Three things live here, all used by the notebooks and by :mod:`ufmlib.regenerate`:

* :func:`glue` puts a value (a number, a string, a matplotlib figure) into the notebook's
  outputs under a name, with the same output layout as ``myst_nb.glue``, so that the book can
  paste it into prose with ``{glue:text}`` / ``{glue:figure}``. It does not import myst-nb, so
  the notebooks also run on Colab, where the book tooling is not installed.
* :func:`check` compares a measured number with the theory under an explicit tolerance,
  raises :class:`ReproductionError` when they disagree (a failed reproduction fails the run)
  and records the comparison in the notebook's outputs; :func:`checks_from_notebook` reads the
  records back out of an executed notebook (the "Reproduction status" page is built from them).
* :func:`collect` gathers the provenance of a run (profile, parameters that differ from the
  notebook's defaults, device, ufmlib version, git commit and dirty mark, date, wall time);
  :func:`markdown_box` renders it as the small box shown at the top of every executed page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "GLUE_PREFIX",
    "CHECK_PREFIX",
    "ReproductionError",
    "Check",
    "Provenance",
    "glue",
    "figure_png",
    "check",
    "checks_from_notebook",
    "git_state",
    "ufmlib_version",
    "collect",
    "markdown_box",
]

GLUE_PREFIX = "application/papermill.record/"
"""Mime-type prefix of a glued output that is stored but not displayed (myst-nb's layout)."""

CHECK_PREFIX = "ufm-check:"
"""Glue-name prefix of the records written by :func:`check`."""

_CHECK_MIME = "application/json"


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
    each other); ``result`` is the digest's result number (``"R1"``...), ``description`` a
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
            {GLUE_PREFIX + _CHECK_MIME: json.dumps(rec.as_dict()), GLUE_PREFIX + "text/plain": repr(rec)},
            raw=True,
            metadata={"scrapbook": {"name": CHECK_PREFIX + name, "mime_prefix": GLUE_PREFIX}},
        )
    if not passed:
        raise ReproductionError(
            f"{result} {name} ({description}): measured {rec.measured!r}, theory {rec.theory!r}, "
            f"{rec.kind} error {error:.3e} > tolerance {tol:.1e}"
        )
    return rec


def checks_from_notebook(nb: Mapping[str, Any]) -> list[Check]:
    """The :func:`check` records stored in an executed notebook, in execution order."""
    out: list[Check] = []
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = output.get("metadata", {}).get("scrapbook", {})
            if not str(meta.get("name", "")).startswith(CHECK_PREFIX):
                continue
            data = output.get("data", {})
            payload = data.get(meta.get("mime_prefix", "") + _CHECK_MIME)
            if isinstance(payload, str):
                payload = json.loads(payload)
            if isinstance(payload, Mapping):
                out.append(Check.from_dict(payload))
    return out


# ----------------------------------------------------------------------------------------
# provenance of a run


def git_state(path: str | Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git work tree containing ``path``; ``(None, None)`` outside one.

    ``dirty`` is ``True`` when tracked files differ from the commit or untracked (not ignored)
    files exist. A repository without any commit gives ``(None, True)``.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30)

    try:
        inside = git("rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.SubprocessError):
        return None, None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None, None
    head = git("rev-parse", "HEAD")
    commit = head.stdout.strip() if head.returncode == 0 else None
    status = git("status", "--porcelain")
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    if commit is None:
        dirty = True
    return commit, dirty


def ufmlib_version() -> str:
    """The version of the ufmlib that is imported (installed metadata, else pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("ufmlib")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib

        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


@dataclass(frozen=True)
class Provenance:
    """How an executed notebook was produced (stored in its metadata under ``ufm.provenance``)."""

    notebook: str
    profile: str
    device: str
    parameters: dict[str, Any] = field(default_factory=dict)
    ufmlib_version: str = "unknown"
    git_commit: str | None = None
    git_dirty: bool | None = None
    date: str = ""
    wall_time_s: float = float("nan")
    python: str = ""
    torch: str = ""
    input_hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _torch_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("torch")
    except Exception:  # noqa: BLE001 - torch metadata missing is not an error here
        return "unknown"


def collect(
    *,
    notebook: str,
    profile: str,
    device: str,
    parameters: Mapping[str, Any],
    defaults: Mapping[str, Any],
    wall_time_s: float,
    root: str | Path,
    input_hash: str = "",
    now: _dt.datetime | None = None,
) -> Provenance:
    """Provenance of one run; ``parameters`` keeps only the values that differ from ``defaults``."""
    changed = {k: v for k, v in parameters.items() if k not in defaults or defaults[k] != v}
    commit, dirty = git_state(root)
    if commit is None and dirty is None:
        commit, dirty = git_state(Path(__file__).resolve().parent)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return Provenance(
        notebook=notebook, profile=profile, device=str(device), parameters=dict(changed),
        ufmlib_version=ufmlib_version(), git_commit=commit, git_dirty=dirty,
        date=now.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        wall_time_s=float(wall_time_s), python=platform.python_version(), torch=_torch_version(),
        input_hash=input_hash,
    )


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _fmt_params(params: Mapping[str, Any]) -> str:
    if not params:
        return "none (the notebook's defaults)"
    return ", ".join(f"`{k} = {_fmt_value(v)}`" for k, v in params.items())


def markdown_box(prov: Provenance | Mapping[str, Any]) -> str:
    """The provenance box (a MyST admonition) shown at the top of an executed page."""
    if not isinstance(prov, Provenance):
        prov = Provenance.from_dict(prov)
    if prov.git_commit:
        commit = f"commit `{prov.git_commit[:10]}`"
        if prov.git_dirty:
            commit += " with uncommitted changes"
    elif prov.git_dirty is None:
        commit = "outside a git work tree"
    else:
        commit = "no commit yet (uncommitted files)"
    lines = [
        ":::{admonition} How this page was computed",
        ":class: note",
        f"Profile **{prov.profile}** on device `{prov.device}`; ufmlib {prov.ufmlib_version} ({commit}); "
        f"Python {prov.python}, torch {prov.torch}; executed {prov.date} in {prov.wall_time_s:.1f} s.",
        "",
        f"Parameters changed from the notebook's defaults: {_fmt_params(prov.parameters)}.",
        ":::",
    ]
    return "\n".join(lines)
