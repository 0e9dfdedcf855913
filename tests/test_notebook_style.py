"""The chapters read as the science: short visible code cells, no citation a reader cannot follow.

Visible code cells are those the rendered page shows open (not tagged ``hide-input``,
``hide-cell``, ``remove-input`` or ``remove-cell``); the long checking cells are collapsed, the
code one click away.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from ufmlib.book.parameters import read_notebook
from ufmlib.book.profiles import list_notebooks

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = {"hide-input", "hide-cell", "remove-input", "remove-cell"}


def visible_code_lengths(name: str) -> list[int]:
    nb = read_notebook(ROOT / "notebooks" / f"{name}.md")
    return [len(c.source.splitlines()) for c in nb.cells
            if c.cell_type == "code" and not HIDDEN & set(c.metadata.get("tags", []))]


def test_visible_code_cells_are_short():
    lengths = {name: visible_code_lengths(name) for name in list_notebooks(ROOT)}
    everything = [n for values in lengths.values() for n in values]
    assert statistics.median(everything) <= 10, statistics.median(everything)
    too_long = {name: [n for n in values if n > 25] for name, values in lengths.items() if max(values, default=0) > 25}
    assert not too_long, too_long


@pytest.mark.parametrize("folder", ["ufmlib", "notebooks", "profiles", "book"])
def test_no_reference_to_a_document_outside_the_repository(folder):
    pattern = re.compile(r"digest|pitfall", re.I)
    hits = []
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".yml", ".ipynb") and "chapters" not in path.parts:
            hits += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                     if pattern.search(line)]
    assert not hits, hits
