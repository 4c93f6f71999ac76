"""What a learner sees in a stored chapter fits the page: JupyterLab shows a code line longer than the cell with a
horizontal scroll bar (the browser review, item m4), and wraps a printed line longer than about 120 characters
inside words (item 12)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").rglob("*.ipynb"))
CODE_WIDTH = 100
PRINT_WIDTH = 120


def _ids(paths):
    return [str(p.relative_to(p.parents[1] if p.parent.name == "solutions" else p.parent)) for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_code_lines_fit_the_cell(path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, len(line)) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"code lines over {CODE_WIDTH} characters (cell, length): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_printed_lines_are_not_wrapped_inside_words(path):
    nb = nbformat.read(path, as_version=4)
    long = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                long += [(i, len(line)) for line in out["text"].splitlines() if len(line) > PRINT_WIDTH]
    assert not long, f"printed lines over {PRINT_WIDTH} characters (cell, length): {long}"


def test_the_widths_are_checked_on_every_notebook():
    assert len(NOTEBOOKS) >= 22  # 11 chapters and their solutions
