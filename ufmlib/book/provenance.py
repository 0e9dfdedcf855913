"""What a notebook run was: its provenance, and the checks it recorded.

* :func:`collect` gathers the provenance of a run (profile, parameters that differ from the
  notebook's defaults, device, ufmlib version, git commit and dirty mark, date, wall time,
  Python and torch versions, the hash of the run's inputs); :func:`markdown_box` renders it as
  the small box shown at the top of every executed page.
* :func:`checks_from_notebook` reads back the theory-versus-measurement records that
  :func:`ufmlib.notebook.check` stored in an executed notebook's outputs (the "Reproduction
  status" page is built from them).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ufmlib
from ufmlib.notebook import CHECK_MIME, CHECK_PREFIX, REQUIRED_NAME, Check, NotChecked, record_from_dict

__all__ = [
    "Provenance",
    "checks_from_notebook",
    "required_from_notebook",
    "glued_from_notebook",
    "git_state",
    "ufmlib_version",
    "collect",
    "markdown_box",
    "utc_time",
]


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
    pyproject = Path(ufmlib.__file__).resolve().parents[1] / "pyproject.toml"
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
    worker: str = "local"
    """Where the notebook ran: ``local`` (this machine), or a Dask worker's address and host."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _torch_version() -> str:
    """The installed torch version (without importing torch)."""
    try:
        from importlib import metadata

        return metadata.version("torch")
    except Exception:  # noqa: BLE001 - torch metadata missing is not an error here
        return "unknown"


def utc_time(moment: _dt.datetime | None = None) -> str:
    """``moment`` (default: now) as every page and status entry writes a time: ``YYYY-MM-DD HH:MM UTC``."""
    moment = moment or _dt.datetime.now(_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


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
    worker: str = "local",
    now: _dt.datetime | None = None,
) -> Provenance:
    """Provenance of one run; ``parameters`` keeps only the values that differ from ``defaults``."""
    changed = {k: v for k, v in parameters.items() if k not in defaults or defaults[k] != v}
    commit, dirty = git_state(root)
    if commit is None and dirty is None:
        commit, dirty = git_state(Path(ufmlib.__file__).resolve().parent)
    return Provenance(
        notebook=notebook, profile=profile, device=str(device), parameters=dict(changed),
        ufmlib_version=ufmlib_version(), git_commit=commit, git_dirty=dirty,
        date=utc_time(now),
        wall_time_s=float(wall_time_s), python=platform.python_version(), torch=_torch_version(),
        input_hash=input_hash, worker=str(worker),
    )


def _fmt_value(value: Any) -> str:
    """A parameter value as written in the box: floats in ``%g``, strings quoted."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _fmt_params(params: Mapping[str, Any]) -> str:
    """The changed parameters as ``name = value`` code spans (or a note that there are none)."""
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
        f"Python {prov.python}, torch {prov.torch}; executed {prov.date} in {prov.wall_time_s:.1f} s"
        + ("." if prov.worker == "local" else f" on Dask worker `{prov.worker}`."),
        "",
        f"Parameters changed from the notebook's defaults: {_fmt_params(prov.parameters)}.",
        ":::",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# the checks a run recorded


def _glued_outputs(nb: Mapping[str, Any]):
    """``(name, data, mime_prefix)`` of every output stored by :func:`ufmlib.notebook.glue` (and
    by the check records, which are glued too), in execution order."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = output.get("metadata", {}).get("scrapbook", {})
            name = str(meta.get("name", ""))
            if name:
                yield name, output.get("data", {}), meta.get("mime_prefix", "")


def _is_record(name: str) -> bool:
    """Whether a glue name is a check record or the declared-checks record (not a glued value)."""
    return name.startswith(CHECK_PREFIX) or name == REQUIRED_NAME


def _records(nb: Mapping[str, Any]):
    """``(name, payload)`` of every record stored by :mod:`ufmlib.notebook`, in execution order."""
    for name, data, prefix in _glued_outputs(nb):
        if not _is_record(name):
            continue
        payload = data.get(prefix + CHECK_MIME)
        if isinstance(payload, str):
            payload = json.loads(payload)
        yield name, payload


def checks_from_notebook(nb: Mapping[str, Any]) -> list[Check | NotChecked]:
    """The :func:`ufmlib.notebook.check` and :func:`~ufmlib.notebook.not_checked` records stored
    in an executed notebook, in execution order."""
    return [record_from_dict(p) for name, p in _records(nb) if name != REQUIRED_NAME and isinstance(p, Mapping)]


def required_from_notebook(nb: Mapping[str, Any]) -> list[str]:
    """The check names declared by :func:`ufmlib.notebook.require_checks` (all declarations, in order)."""
    out: list[str] = []
    for name, payload in _records(nb):
        if name == REQUIRED_NAME and isinstance(payload, list):
            out += [str(x) for x in payload if str(x) not in out]
    return out


def glued_from_notebook(nb: Mapping[str, Any]) -> dict[str, Any]:
    """Every value glued by :func:`ufmlib.notebook.glue` in an executed notebook (not the check
    records), by name: numbers, booleans and ``None`` as Python values, any other text as the
    string stored, a figure as ``{"image/png": <base64>}``. A name glued twice keeps its last value."""
    import ast

    out: dict[str, Any] = {}
    for name, data, prefix in _glued_outputs(nb):
        if _is_record(name):
            continue
        if prefix + "image/png" in data:
            out[name] = {"image/png": data[prefix + "image/png"]}
            continue
        text = data.get(prefix + "text/plain", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        if prefix + "text/markdown" in data:
            out[name] = text  # a glued string
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out[name] = value if isinstance(value, (int, float, bool, type(None))) else text
    return out
