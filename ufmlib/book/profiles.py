"""The repository layout, parameter profiles and the run plan.

A profile (``profiles/<name>.yaml``) has a ``description``, ``defaults`` (parameters for every
notebook) and ``notebooks`` (parameters per notebook). :func:`plan` checks it against the
notebooks' ``parameters`` cells (:mod:`ufmlib.book.parameters`) and returns one :class:`Job`
per selected notebook, with the values to inject and the hash of everything its output depends
on (:func:`input_hash`: text, parameters, profile, ufmlib sources, kernel), so that a notebook
whose inputs did not change since its last good output need not run again.
"""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ufmlib

from .parameters import ProfileError, describe, notebook_parameters

__all__ = [
    "NOTEBOOKS",
    "PROFILES",
    "OUTPUTS",
    "EXECUTED",
    "CHAPTERS",
    "executed_dir",
    "fingerprint",
    "KERNEL",
    "ProfileError",
    "Profile",
    "Job",
    "find_root",
    "list_notebooks",
    "load_profile",
    "library_hash",
    "installed_library_hash",
    "input_hash",
    "plan",
]

NOTEBOOKS = "notebooks"
"""Folder of the notebook sources (``<name>.md`` and the paired ``<name>.ipynb``)."""
PROFILES = "profiles"
"""Folder of the parameter profiles (``<name>.yaml``)."""
OUTPUTS = "outputs"
"""Folder of everything a run writes (``status.md``, ``status.json``, ``figures/``)."""
CHAPTERS = "book/chapters"
"""Folder (under the root) of the executed notebooks of the book: its result pages, whose URLs
are then ``book/chapters/<name>.html``."""
EXECUTED = "notebooks"
"""Folder under another ``out_dir`` (a trial run that builds no book) of its executed notebooks."""
KERNEL = "python3"
"""The Jupyter kernel every notebook runs in."""
REQUIRED_PARAMETERS = ("seed", "device")
PROFILE_KEYS = ("description", "defaults", "notebooks")


# ----------------------------------------------------------------------------------------
# the repository


def find_root(root: str | Path | None = None) -> Path:
    """The repository root: ``root`` if given, else the first folder at or above the current
    directory holding ``notebooks/`` and ``profiles/``, else the folder above the package."""
    if root is not None:
        path = Path(root).resolve()
        if not (path / NOTEBOOKS).is_dir():
            raise ProfileError(f"root: {path} has no {NOTEBOOKS}/ folder")
        return path
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / NOTEBOOKS).is_dir() and (candidate / PROFILES).is_dir():
            return candidate
    return Path(ufmlib.__file__).resolve().parents[1]


def executed_dir(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where the executed notebooks go: :data:`CHAPTERS` (the book's pages) for the default
    ``out_dir`` (``<root>/outputs``), else ``<out_dir>/notebooks`` (a trial run)."""
    root = Path(root)
    if out_dir is None or Path(out_dir).resolve() == (root / OUTPUTS).resolve():
        return root / CHAPTERS
    return Path(out_dir) / EXECUTED


def _toc_order(root: Path) -> list[str]:
    """The notebook names in the order of their pages in ``_toc.yml`` (empty without one)."""
    toc = root / "_toc.yml"
    if not toc.exists():
        return []
    pattern = re.compile(rf"{CHAPTERS}/([A-Za-z0-9_\-]+)")
    return list(dict.fromkeys(pattern.findall(toc.read_text())))


def list_notebooks(root: str | Path) -> list[str]:
    """Names of the notebooks ``notebooks/<name>.md``, in the book's order, then by name."""
    root = Path(root)
    names = sorted(p.stem for p in (root / NOTEBOOKS).glob("*.md"))
    order = [n for n in _toc_order(root) if n in names]
    return order + [n for n in names if n not in order]


# ----------------------------------------------------------------------------------------
# profiles and the run plan


@dataclass(frozen=True)
class Profile:
    """A parameter profile: ``defaults`` apply to every notebook, ``notebooks[name]`` to one."""

    name: str
    description: str
    defaults: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]
    path: Path | None = None


def load_profile(profile: str | Path | Mapping[str, Any], *, root: str | Path) -> Profile:
    """A profile by name (``profiles/<name>.yaml``), by path, or from a mapping."""
    import yaml

    root = Path(root)
    path = None
    if isinstance(profile, Mapping):
        data, name = dict(profile), str(profile.get("name", "custom"))
        data.pop("name", None)
    else:
        candidate = Path(profile)
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            path = candidate
        else:
            path = root / PROFILES / f"{profile}.yaml"
            if not path.is_file():
                available = sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))
                raise ProfileError(f"profile {str(profile)!r} not found; available: {', '.join(available) or 'none'}")
        name = path.stem
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile {name!r}: {path} is not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise ProfileError(f"profile {name!r}: expected a mapping with keys {PROFILE_KEYS}")
    unknown = [k for k in data if k not in PROFILE_KEYS]
    if unknown:
        raise ProfileError(f"profile {name!r}: unknown key {unknown[0]!r}; allowed: {', '.join(PROFILE_KEYS)}")
    defaults = data.get("defaults") or {}
    notebooks = data.get("notebooks") or {}
    if not isinstance(defaults, Mapping):
        raise ProfileError(f"profile {name!r}: 'defaults' must map parameter names to values")
    if not isinstance(notebooks, Mapping):
        raise ProfileError(f"profile {name!r}: 'notebooks' must map notebook names to parameters")
    for nb_name, params in notebooks.items():
        if params is not None and not isinstance(params, Mapping):
            raise ProfileError(f"profile {name!r}, notebook {nb_name!r}: expected a mapping of parameters, got {params!r}")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        defaults=dict(defaults),
        notebooks={str(k): dict(v or {}) for k, v in notebooks.items()},
        path=path,
    )


@dataclass(frozen=True)
class Job:
    """One notebook to execute: its source, output and the parameters injected into it."""

    name: str
    source: Path
    output: Path
    parameters: dict[str, Any]
    defaults: dict[str, Any]
    device: str
    input_hash: str
    point: dict[str, Any] = field(default_factory=dict)
    """The values of a grid point of ``ufm sweep`` (empty for a chapter of the book)."""

    @property
    def label(self) -> str:
        """How reports name the job: the notebook, and the grid point of a sweep (``optimum[K=2, L=3]``)."""
        if not self.point:
            return self.name
        return f"{self.name}[" + ", ".join(f"{k}={v}" for k, v in self.point.items()) + "]"


def _select(names: Sequence[str], only: str | Sequence[str] | None) -> list[str]:
    """The names matching ``only`` (globs or substrings, comma-separated); all when ``None``."""
    if only is None:
        return list(names)
    patterns = [p.strip() for p in (only.split(",") if isinstance(only, str) else only) if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) or (not any(c in p for c in "*?[") and p in n) for p in patterns)]
    if not chosen:
        raise ProfileError(f"--only {only!r} matches no notebook; notebooks: {', '.join(names)}")
    return chosen


def fingerprint(*parts: bytes) -> str:
    """A stable 32-hex-digit fingerprint of ``parts`` (in order): the name-based UUID 5 (SHA-1,
    RFC 4122) of their lengths and hex contents, so that no two different sequences collide by
    concatenation."""
    text = ";".join(f"{len(p)}:{p.hex()}" for p in parts)
    return uuid.uuid5(uuid.NAMESPACE_OID, text).hex


def _hash_tree(folder: Path) -> str:
    """Fingerprint of the names and contents of every ``.py`` file below ``folder``."""
    parts = []
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts += [path.relative_to(folder).as_posix().encode(), path.read_bytes()]
    return fingerprint(*parts)


def installed_library_hash() -> str:
    """Hash of the sources of the imported ufmlib package."""
    return _hash_tree(Path(ufmlib.__file__).resolve().parent)


def library_hash(root: Path) -> str:
    """Hash of the ufmlib sources a kernel started in ``root`` imports: ``<root>/ufmlib`` when
    it exists (it comes first on the kernel's path), else the imported package."""
    local = root / "ufmlib"
    return _hash_tree(local) if local.is_dir() else installed_library_hash()


def input_hash(source: Path, values: Mapping[str, Any], profile: str, library: str) -> str:
    """Hash of everything a notebook's output depends on: its text, the injected parameter
    values, the profile's name, the ufmlib sources (``library``) and the kernel's name."""
    return fingerprint(source.read_bytes(), json.dumps(values, sort_keys=True).encode(), profile.encode(),
                       library.encode(), KERNEL.encode())


def _check_devices(devices: set[str], profile: str) -> None:
    """:class:`ProfileError` unless every device in ``devices`` exists on this machine."""
    if all(d == "cpu" for d in devices):
        return
    from ufmlib.config import ConfigError, resolve_device

    for dev in sorted(devices):
        try:
            resolve_device(dev)
        except ConfigError as exc:
            raise ProfileError(f"profile {profile!r}: device {dev!r} cannot be used here ({exc}); pass --device cpu") from None


def plan(
    profile: Profile,
    *,
    root: str | Path,
    out_dir: str | Path | None = None,
    only: str | Sequence[str] | None = None,
    device: str | None = None,
) -> list[Job]:
    """Validate ``profile`` against the notebooks selected by ``only`` and return their jobs.

    Everything is checked before anything runs: the notebooks named by the profile exist, every
    selected notebook declares ``seed`` and ``device``, every profile parameter is declared by
    its notebook with a value of the declared type, and the devices exist on this machine.
    """
    root = Path(root)
    executed = executed_dir(root, out_dir)
    names = list_notebooks(root)
    missing = [n for n in profile.notebooks if n not in names]
    if missing:
        raise ProfileError(f"profile {profile.name!r} names notebook {missing[0]!r}, which does not exist; notebooks: {', '.join(names)}")
    if device is not None and (not isinstance(device, str) or not device):
        raise ProfileError(f"device must be a device name such as 'cpu' or 'cuda'; got {device!r}")
    selected = set(_select(names, only))
    lib = library_hash(root)
    jobs, devices = [], set()
    for name in names:
        if name not in selected:
            continue
        source = root / NOTEBOOKS / f"{name}.md"
        declared = notebook_parameters(source, notebook=name)
        absent = [p for p in REQUIRED_PARAMETERS if p not in declared]
        if absent:
            raise ProfileError(f"notebook {name!r} must declare the parameter {absent[0]!r} in its parameters cell")
        values: dict[str, Any] = {}
        for origin, given in (("defaults", profile.defaults), (f"notebook {name!r}", profile.notebooks.get(name, {}))):
            for key, value in given.items():
                where = f"profile {profile.name!r}, {origin}"
                if key not in declared:
                    raise ProfileError(
                        f"{where}: unknown parameter {key!r} for notebook {name!r}; allowed: {describe(declared)}"
                    )
                try:
                    values[key] = declared[key].coerce(value)
                except TypeError:
                    hint = " (YAML reads 1e-2 as a string: write 1.0e-2)" if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value) else ""
                    raise ProfileError(
                        f"{where}: parameter {key!r} of notebook {name!r} must be {declared[key].allowed()} "
                        f"(default {declared[key].default!r}); got {type(value).__name__} {value!r}{hint}"
                    ) from None
        if device is not None:
            values["device"] = declared["device"].coerce(device)
        dev = str(values.get("device", declared["device"].default))
        devices.add(dev)
        jobs.append(Job(
            name=name, source=source, output=executed / f"{name}.ipynb", parameters=values,
            defaults={k: p.default for k, p in declared.items()}, device=dev,
            input_hash=input_hash(source, values, profile.name, lib),
        ))
    _check_devices(devices, profile.name)
    return jobs
