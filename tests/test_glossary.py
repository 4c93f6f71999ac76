"""GLOSSARY.md is the chapters' glossary tables gathered (dsv3_lessons.course.common.glossary), and the
chapters agree on each term's Chinese translation."""
from pathlib import Path

from dsv3_lessons.course.common import glossary as g

ROOT = Path(__file__).resolve().parents[1]


def test_every_chapter_has_a_glossary_with_meanings():
    tables = g.collect()
    assert len(tables) >= 10
    for chapter, rows in tables.items():
        assert len(rows) >= 5, f"chapter {chapter}'s glossary has {len(rows)} terms"
        missing = [english for english, cells in rows if len(cells) < 3 or not cells[2]]
        assert not missing, f"chapter {chapter}: terms without a meaning: {missing}"


def test_chapters_agree_on_translations():
    assert g.conflicts() == []


def test_glossary_file_is_current():
    assert (ROOT / "GLOSSARY.md").read_text(encoding="utf-8") == g.render(), (
        "GLOSSARY.md is stale: python -m dsv3_lessons.course.common.glossary > GLOSSARY.md")


def test_merge_keeps_first_translation_and_lists_chapters():
    tables = {"01": [("KV cache", ["KV cache", "KV 缓存", "keys and values kept"])],
              "04": [("KV-cache", ["KV-cache", "KV 缓存", ""]), ("absorbed query", ["absorbed query", "吸收后的查询", "q̃"])],
              "07": [("kv cache", ["kv cache", "键值缓存", "other"])]}
    entries = g.merged(tables)
    assert [e.english for e in entries] == ["absorbed query", "KV cache"]
    assert entries[1].chapters == ["01", "04", "07"] and entries[1].chinese == "KV 缓存"
    assert g.conflicts(tables) == ["'kv cache': chapter 01 says 'KV 缓存', chapter 07 says '键值缓存'"]
