"""The package's import structure (issue 14): imports run course -> tools -> model, ``common`` imports no chapter,
and a chapter imports only earlier chapters. Read from the source with ``ast``, so a lazy import inside a function
counts as much as one at the top."""
import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dsv3_lessons"
COURSE = PKG / "course"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute dotted names of every ``dsv3_lessons`` module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dsv3_lessons")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("dsv3_lessons"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return out


SOURCES = sorted(PKG.rglob("*.py"))
EDGES = {_module_name(p): _imports(p) for p in SOURCES}


def _part(mod: str) -> str:
    """'model', 'tools', 'course.common', 'course.chNN_x', 'course' or 'top'."""
    parts = mod.split(".")
    if len(parts) < 2:
        return "top"
    if parts[1] != "course":
        return parts[1]
    return "course" if len(parts) == 2 else f"course.{parts[2]}"


def _chapter_number(part: str) -> int | None:
    m = re.fullmatch(r"course\.ch(\d\d)_\w+", part)
    return int(m.group(1)) if m else None


def test_the_layout_is_read_from_every_module():
    # the scan sees the chapters and common (a guard against a wrong PKG path making every test vacuous)
    parts = {_part(m) for m in EDGES}
    assert {"model", "tools", "course.common", "course.ch00_tour", "course.ch09_fp8"} <= parts
    assert sum(len(v) for v in EDGES.values()) > 100


def test_course_holds_only_common_and_chapter_packages():
    extra = [p.name for p in COURSE.iterdir() if p.name not in ("__init__.py", "__pycache__", "common")
             and not re.fullmatch(r"ch\d\d_[a-z0-9_]+", p.name)]
    assert extra == [], f"course/ should hold only common/ and chNN_*/ packages, found {extra}"


@pytest.mark.parametrize("mod", sorted(EDGES))
def test_imports_run_one_way(mod):
    src = _part(mod)
    for target in EDGES[mod]:
        dst = _part(target)
        if dst in ("top", src):
            continue
        if src == "model":
            assert dst == "model", f"{mod} (model) imports {target}: model imports neither tools nor course"
        elif src == "tools":
            assert dst in ("model", "tools"), f"{mod} (tools) imports {target}: tools never imports course"
        elif src == "course.common":
            assert _chapter_number(dst) is None, f"{mod} (common) imports the chapter module {target}"
        elif _chapter_number(src) is not None and _chapter_number(dst) is not None:
            assert _chapter_number(dst) < _chapter_number(src), (
                f"{mod} imports {target}: a chapter may import an earlier chapter, never a later one")
