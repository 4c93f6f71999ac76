"""What the exercise-checker tests of several chapters share: a ✗ result naming the expected words, the cells of a
stored notebook (its code, one code cell found by a marker, the text its code cells printed) and the check that a
stored chapter shows its exercises unattempted."""
from __future__ import annotations

import json
from pathlib import Path

from dsv3_lessons.course.common.checking import WRONG

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def assert_wrong(result, *words: str) -> None:
    """``result`` is a ✗ whose message holds every one of ``words``."""
    assert result.status == WRONG, result
    for w in words:
        assert w in result.message, (w, result.message)


def _code(notebook: Path) -> list[dict]:
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def code_cells(notebook: Path) -> list[str]:
    """The source of every code cell of the stored ``notebook``, in order."""
    return ["".join(c["source"]) for c in _code(notebook)]


def notebook_cell(notebook: Path, marker: str) -> str:
    """The source of the one code cell of ``notebook`` that contains ``marker`` (fails unless exactly one does)."""
    found = [src for src in code_cells(notebook) if marker in src]
    assert len(found) == 1, (marker, len(found))
    return found[0]


def output_texts(notebook: Path) -> list[str]:
    """Per code cell of the stored ``notebook``, the text its stream outputs printed."""
    return ["".join("".join(o.get("text", "")) for o in c.get("outputs", [])) for c in _code(notebook)]


def assert_stored_unattempted(notebook: Path, chapter: int, unattempted: tuple[str, ...], bug_hunts=()) -> None:
    """The stored ``notebook`` shows each exercise of ``unattempted`` ("8.1") as not attempted, each bug hunt as ✗
    (it starts from the failing code) and no ✓ of chapter ``chapter`` anywhere."""
    texts = output_texts(notebook)
    for n in unattempted:
        assert any(f"Exercise {n}: not attempted yet" in t for t in texts), n
    for n in bug_hunts:
        assert any(f"✗ Exercise {n}" in t for t in texts), n
    assert not any(f"✓ Exercise {chapter}." in t for t in texts)
