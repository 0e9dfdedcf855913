"""The shape of the package: the science library and the book machinery apart, modules small.

* every science module (everything in ``ufmlib`` but ``ufmlib.book``), and the notebook-facing
  ``ufmlib.notebook``, imports with papermill, nbformat, jupytext, nbclient, sphinx and myst_nb
  made unimportable (what a Colab runtime with ``pip install ufmlib`` has);
* no science module imports ``ufmlib.book``;
* no Python module of ``ufmlib`` exceeds 600 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ufmlib"
BOOK_DEPENDENCIES = ("papermill", "nbformat", "jupytext", "nbclient", "sphinx", "myst_nb")


def _modules(*, book: bool) -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if (len(parts) > 1 and parts[1] == "book") == book:
            out.append(".".join(parts))
    return out


def test_science_modules_import_without_any_book_dependency():
    blocked = repr(BOOK_DEPENDENCIES)
    code = f"""
import importlib, importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ImportError(f"{{name}} is blocked for this test")
        return None

sys.meta_path.insert(0, Block())
for name in {_modules(book=False)!r}:
    importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({blocked}))
assert not loaded, loaded
print("imported", len({_modules(book=False)!r}), "modules")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


def test_the_block_really_blocks():
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BOOK_DEPENDENCIES!r}:
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import ufmlib.book.execute  # imports nothing heavy at import time
from ufmlib.book.parameters import read_notebook
try:
    read_notebook("notebooks/optimum.md")
except ImportError as exc:
    print("blocked:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "blocked:" in proc.stdout


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def test_no_science_module_imports_the_book_machinery():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "book" in path.relative_to(PACKAGE).parts[:1]:
            continue
        bad = sorted(n for n in _imported(path) if n == "ufmlib.book" or n.startswith("ufmlib.book."))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders, offenders


def test_no_module_exceeds_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert sizes and max(sizes.values()) <= 600, {k: v for k, v in sizes.items() if v > 600}
