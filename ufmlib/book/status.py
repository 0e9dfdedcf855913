"""The "Reproduction status" page and ``outputs/status.json``: every check, by kind and result.

:func:`write_status` writes, from the executed notebooks and the outcomes of the latest run,

* ``outputs/status.json``: per notebook, the outcome of its latest run (``ok``, ``failed``,
  ``interrupted``, ``up to date``; when, under which profile, the error in one line) and what the
  page shows: its run (date, commit, profile) and every check it made, with its ``kind``
  (``reproduction``, ``construction`` or ``identity``, see :data:`ufmlib.notebook.KINDS`) and
  whether it passed; the checks its claims declared (:func:`ufmlib.notebook.require_checks`)
  that did not run are listed as ``not checked`` with the reason;
* ``outputs/status.md`` (included by ``book/status.md``): first the reproductions per result
  R1-R9 and per chapter, then the reproduction checks one by one, the claims not checked, and
  apart from them the construction and identity checks.

The book's Sphinx extension (``book/_ext/ufm_pages.py``) reads ``status.json`` to put a notice
on the page of a notebook whose latest run failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ufmlib.notebook import KINDS

from .execute import Outcome, read_metadata
from .provenance import utc_time
from .profiles import CHAPTERS, OUTPUTS, executed_dir, list_notebooks

__all__ = ["write_status", "notebook_status", "RESULTS"]

RESULTS = tuple(f"R{i}" for i in range(1, 10))
"""The results of the book (one per chapter of the paper's theory), listed even without checks."""


def _fmt_num(x: Any) -> str:
    """A number in four significant digits (scientific outside [1e-3, 1e5)); anything else as text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if x == 0:
        return "0"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3e}"


def _md_cell(text: Any) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _one_line(error: str | None) -> str | None:
    """The first line of an error (the exception and its message), at most 300 characters."""
    if not error:
        return None
    line = error.strip().splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _result_key(result: str) -> tuple:
    m = re.fullmatch(r"R(\d+)", result)
    return (0, int(m.group(1)), "") if m else (1, 0, result)


def notebook_status(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What an executed notebook's page shows: its run and its checks (with the declared checks
    that did not run added as ``not checked``), from its ``metadata.ufm``."""
    prov = meta.get("provenance", {})
    records = [dict(c) for c in meta.get("checks", [])]
    seen = {c["name"] for c in records}
    for name in meta.get("required", []):
        if name not in seen:
            records.append({"name": name, "result": "?", "description": name, "kind": "?", "status": "not checked",
                            "passed": None, "reason": "did not run"})
    checks = []
    for c in records:
        status = c.get("status", "checked")
        checks.append({
            "name": c["name"], "result": c.get("result", "?"), "kind": c.get("kind", "?"),
            "description": c.get("description", c["name"]), "status": status,
            "passed": bool(c.get("passed")) if status == "checked" else None,
            **({"reason": c.get("reason", "did not run")} if status != "checked" else {
                "theory": c.get("theory"), "measured": c.get("measured"), "error": c.get("error"),
                "tolerance": c.get("tolerance"), "tolerance_type": c.get("tolerance_type", c.get("kind"))}),
        })
    return {
        "placeholder": bool(meta.get("placeholder")),
        "shown_run": {"date": prov.get("date"), "commit": prov.get("git_commit"), "dirty": prov.get("git_dirty"),
                      "profile": prov.get("profile"), "device": prov.get("device")},
        "checks": checks,
    }


def _counts(checks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    ran = [c for c in checks if c["status"] == "checked"]
    out = {k: sum(c["kind"] == k for c in ran) for k in KINDS}
    out["not checked"] = sum(c["status"] != "checked" for c in checks)
    return out


def write_status(root: str | Path, *, out_dir: str | Path | None = None, runs: Sequence[Outcome] = (),
                 profile: str | None = None) -> Path:
    """Write ``outputs/status.json`` and ``outputs/status.md`` (see the module docstring) from the
    executed notebooks and the outcomes ``runs`` of the latest run (under ``profile``)."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / OUTPUTS
    executed = executed_dir(root, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "status.json"
    try:
        previous = json.loads(state_path.read_text())
    except (OSError, ValueError):
        previous = {}
    if not isinstance(previous, dict):
        previous = {}
    now = utc_time()
    latest = {name: dict(entry.get("latest_run", {})) for name, entry in previous.items() if isinstance(entry, dict)}
    for run_ in runs:
        latest[run_.name] = {"status": run_.status, "date": run_.finished or now, "profile": profile,
                             "error": _one_line(run_.error), "details": run_.error}

    state: dict[str, Any] = {}
    for name in list_notebooks(root):
        output = executed / f"{name}.ipynb"
        meta = read_metadata(output) if output.exists() else {}
        entry: dict[str, Any] = {"latest_run": latest.get(name, {"status": "not run yet"})}
        if meta:
            entry.update(notebook_status(meta))
            entry["page"] = f"{CHAPTERS}/{name}"
        else:
            entry.update({"placeholder": False, "shown_run": None, "checks": []})
        state[name] = entry
    state_path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    status = out_dir / "status.md"
    status.write_text(_page(state))
    return status


def _link(name: str) -> str:
    return f"{{doc}}`{name} </{CHAPTERS}/{name}>`"


def _page(state: Mapping[str, Any]) -> str:
    """The Markdown of ``outputs/status.md`` from the state written to ``status.json``."""
    rows = [(name, c) for name, e in state.items() for c in e["checks"]]
    results = sorted({c["result"] for _, c in rows if c["result"] != "?"} | set(RESULTS), key=_result_key)

    per_result = ["| Result | Reproductions (passed) | Chapters | Constructions | Identities | Not checked |",
                  "|---|---|---|---|---|---|"]
    for r in results:
        mine = [(n, c) for n, c in rows if c["result"] == r]
        repro = [c for _, c in mine if c["kind"] == "reproduction" and c["status"] == "checked"]
        counts = _counts([c for _, c in mine])
        chapters = ", ".join(_link(n) for n in dict.fromkeys(n for n, _ in mine)) or "-"
        shown = f"**{sum(c['passed'] for c in repro)} of {len(repro)}**" if repro else "**none**"
        per_result.append(f"| {r} | {shown} | {chapters} | {counts['construction']} | {counts['identity']} "
                          f"| {counts['not checked']} |")

    per_chapter = ["| Chapter | Reproductions | Constructions | Identities | Not checked | Page shows the run of | Latest run |",
                   "|---|---|---|---|---|---|---|"]
    for name, e in state.items():
        last = e["latest_run"]
        last_text = last.get("status", "-") + (f" ({last['date']}, {last.get('profile') or '?'})" if last.get("date") else "")
        if last.get("status") == "failed" and last.get("error"):
            last_text += f": {last['error']}"
        shown = e.get("shown_run")
        if not shown or e.get("placeholder"):
            per_chapter.append(f"| {name} | - | - | - | - | no good run yet | {_md_cell(last_text)} |")
            continue
        counts = _counts(e["checks"])
        commit = (shown.get("commit") or "no commit")[:10] + (" (modified)" if shown.get("dirty") else "")
        per_chapter.append(
            f"| {_link(name)} | {counts['reproduction']} | {counts['construction']} | {counts['identity']} "
            f"| {counts['not checked']} | {shown.get('date') or '?'}, `{commit}`, {shown.get('profile') or '?'} "
            f"| {_md_cell(last_text)} |")

    def check_table(kinds: Sequence[str]) -> list[str]:
        table = ["| Result | Chapter | Kind | Check | Theory | Measured | Error | Tolerance |",
                 "|---|---|---|---|---|---|---|---|"]
        chosen = sorted(((n, c) for n, c in rows if c["kind"] in kinds and c["status"] == "checked"),
                        key=lambda nc: _result_key(nc[1]["result"]))
        for n, c in chosen:
            table.append(
                f"| {_md_cell(c['result'])} | {_link(n)} | {c['kind']} | {_md_cell(c['description'])} "
                f"| {_fmt_num(c['theory'])} | {_md_cell(_fmt_num(c['measured']))} "
                f"| {_fmt_num(c['error'])} ({c.get('tolerance_type', '?')}) | {_fmt_num(c['tolerance'])} |")
        return table if chosen else ["None."]

    missing = [(n, c) for n, c in rows if c["status"] != "checked"]
    missing_lines = [f"* {c['result']}, {_link(n)}: {_md_cell(c['description'])} - {_md_cell(c.get('reason', 'did not run'))}."
                     for n, c in sorted(missing, key=lambda nc: _result_key(nc[1]["result"]))] or ["None: every check the chapters' claims need ran."]
    return "\n".join([
        "% Generated by ufmlib.book.status from the executed notebooks; do not edit.",
        "",
        "## Reproductions per result",
        "",
        "A *reproduction* compares the theory with a quantity measured independently of the formula under "
        "test: a gradient-descent run, an autodiff Hessian or gradient, a Lanczos spectrum, a trained "
        "classifier's head. Constructions (properties the code set when it built a point) and identities "
        "(one formula written two ways) are counted apart; they show that the code is consistent, not "
        "that the theory holds.",
        "",
        *per_result,
        "",
        "## Per chapter",
        "",
        *per_chapter,
        "",
        "## Reproduction checks",
        "",
        "Every check below passed in the run its page shows (a failing check stops the run). *Error* is the "
        "largest absolute (abs) or relative (rel) deviation over the compared entries; *Theory* and "
        "*Measured* are the entries where it occurs.",
        "",
        *check_table(["reproduction"]),
        "",
        "## Not checked in the runs shown",
        "",
        *missing_lines,
        "",
        "## Construction and identity checks",
        "",
        *check_table(["construction", "identity"]),
        "",
    ])
