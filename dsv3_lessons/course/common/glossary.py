"""The course glossary (English / 中文), gathered from the chapters' own glossary tables into ``GLOSSARY.md``.

Every chapter ends with a markdown table under a heading "Glossary (English / 中文)" whose first two columns are
the English term and its Chinese term, and whose third column (when present) says what the term means in the
chapter. :func:`collect` reads those tables from ``notebooks/NN_*.ipynb``; :func:`render` writes one table
sorted by English term, each row naming the chapters that use it. ``GLOSSARY.md`` at the repository root is
that output, and ``tests/test_glossary.py`` checks it is up to date::

    python -m dsv3_lessons.course.common.glossary > GLOSSARY.md

A term defined in several chapters keeps its first chapter's Chinese term and meaning; a chapter that gives a
*different* Chinese term for the same English one is reported by :func:`conflicts` (the test fails on it).
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Entry", "collect", "conflicts", "render", "NOTEBOOKS"]

NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"
_HEADING = re.compile(r"^#+\s*Glossary\b.*$", re.M | re.I)
_ROW = re.compile(r"^\|(.+)\|\s*$")


@dataclass
class Entry:
    """One glossary term: ``english``, ``chinese``, ``meaning`` (may be empty) and the ``chapters`` (e.g. "05")
    whose glossary lists it, in reading order."""

    english: str
    chinese: str
    meaning: str
    chapters: list[str] = field(default_factory=list)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in _ROW.match(row).group(1).split("|")]


def _tables(markdown: str) -> list[list[str]]:
    """The glossary table rows (as cell lists, header and separator dropped) after each glossary heading."""
    rows = []
    for m in _HEADING.finditer(markdown):
        lines = markdown[m.end():].lstrip("\n").splitlines()
        for i, line in enumerate(lines):
            if not _ROW.match(line):
                break
            cells = _cells(line)
            if i == 0 or set("".join(cells)) <= set("-: "):
                continue  # header, separator
            rows.append(cells)
    return rows


def collect(folder: str | Path = NOTEBOOKS) -> dict[str, list[tuple[str, list[str]]]]:
    """``{chapter: [(english, cells), ...]}`` for every ``NN_*.ipynb`` in ``folder`` (solutions excluded).

    Raises:
        FileNotFoundError: if ``folder`` holds no chapter notebooks.
    """
    folder = Path(folder)
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no chapter notebooks (NN_*.ipynb) in {folder}")
    out = {}
    for path in found:
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        out[path.name[:2]] = [(cells[0], cells) for cells in _tables(text) if len(cells) >= 2 and cells[0]]
    return out


def _key(english: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", re.sub(r"\$[^$]*\$|`", "", english).lower()).strip()


def merged(tables: dict[str, list[tuple[str, list[str]]]] | None = None) -> list[Entry]:
    """One :class:`Entry` per English term (case and punctuation folded), sorted by term."""
    tables = collect() if tables is None else tables
    entries: dict[str, Entry] = {}
    for chapter in sorted(tables):
        for english, cells in tables[chapter]:
            key = _key(english)
            if key not in entries:
                entries[key] = Entry(english, cells[1], cells[2] if len(cells) > 2 else "")
            if chapter not in entries[key].chapters:
                entries[key].chapters.append(chapter)
            if not entries[key].meaning and len(cells) > 2:
                entries[key].meaning = cells[2]
    return [entries[k] for k in sorted(entries)]


def conflicts(tables: dict[str, list[tuple[str, list[str]]]] | None = None) -> list[str]:
    """Terms whose Chinese translation differs between chapters, as readable lines (empty if none)."""
    tables = collect() if tables is None else tables
    seen: dict[str, tuple[str, str]] = {}
    out = []
    for chapter in sorted(tables):
        for english, cells in tables[chapter]:
            key = _key(english)
            if key in seen and seen[key][0] != cells[1]:
                out.append(f"{english!r}: chapter {seen[key][1]} says {seen[key][0]!r}, chapter {chapter} says "
                           f"{cells[1]!r}")
            seen.setdefault(key, (cells[1], chapter))
    return out


def render(entries: list[Entry] | None = None) -> str:
    """``GLOSSARY.md`` as text: a heading, how it is made, and one table sorted by English term."""
    entries = merged() if entries is None else entries
    lines = ["# Glossary (English / 中文)", "",
             "Every term the chapters define, with its Chinese term and what it means in the course. Made from the",
             "chapters' own glossary tables by `python -m dsv3_lessons.course.common.glossary > GLOSSARY.md`",
             "(`tests/test_glossary.py` checks it is current). The chapter column links to the notebooks.", "",
             "| English | 中文 | meaning in the course | chapters |", "|---|---|---|---|"]
    for e in entries:
        links = ", ".join(f"[{c}](notebooks/{_notebook_name(c)})" for c in e.chapters)
        lines.append(f"| {e.english} | {e.chinese} | {e.meaning} | {links} |")
    return "\n".join(lines) + "\n"


def _notebook_name(chapter: str) -> str:
    found = sorted(NOTEBOOKS.glob(f"{chapter}_*.ipynb"))
    return found[0].name if found else f"{chapter}_*.ipynb"


if __name__ == "__main__":
    sys.stdout.write(render())
