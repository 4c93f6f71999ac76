"""How long the course takes to run: every notebook executed from a fresh kernel, one after another.

    .venv/bin/python bench/course_runtime.py                 # chapters and solutions, table to stdout
    .venv/bin/python bench/course_runtime.py --chapters-only --json build/course_runtime.json
    .venv/bin/python bench/course_runtime.py notebooks/05_deepseekmoe_routing.ipynb

Each notebook runs with nbclient (the executor ``jupyter nbconvert --execute`` uses) in a fresh ``python3``
kernel whose working folder is the notebook's, on a temporary copy, so nothing is written back. The time of a
notebook is wall clock from kernel start to the last cell, the way a learner's *Run All* feels it; kernel
start-up is counted. A chapter's budget is 90 s on 2 cores (CONTRIBUTING.md): the table marks any notebook over
it. Timings depend on the machine and on what else runs on it, so this is a benchmark, never a test; the
``--threads`` option sets ``OMP_NUM_THREADS`` for the kernels (the notebooks also set their own thread count).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 90.0


def notebooks(chapters_only: bool) -> list[Path]:
    """The course's notebooks in reading order: chapters, then (unless ``chapters_only``) their solutions."""
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not chapters_only:
        found += sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
    return found


def run_one(path: Path, timeout_s: int) -> tuple[float, str | None]:
    """Execute ``path`` in a fresh kernel; return (seconds, None) or (seconds, the error's first line)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        error = None
    except Exception as exc:  # report it in the table and go on with the next notebook
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else ''}"
    return time.perf_counter() - t0, error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="execute every notebook and print its wall-clock time")
    p.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: the whole course)")
    p.add_argument("--chapters-only", action="store_true", help="skip the solutions notebooks")
    p.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds (default 600)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for the kernels (default 2)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.timeout <= 0 or args.threads <= 0:
        p.error("--timeout and --threads must be positive integers")
    paths = [q.resolve() for q in args.paths] or notebooks(args.chapters_only)
    missing = [str(q) for q in paths if not q.is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    rows, total = [], 0.0
    print(f"{'notebook':<58} {'seconds':>8}  note")
    for path in paths:
        seconds, error = run_one(path, args.timeout)
        total += seconds
        note = error or ("over the 90 s budget" if "solutions" not in path.parts and seconds > BUDGET_S else "")
        rows.append({"notebook": str(path.relative_to(ROOT)), "seconds": round(seconds, 1), "error": error})
        print(f"{str(path.relative_to(ROOT)):<58} {seconds:8.1f}  {note}", flush=True)
    print(f"{'total':<58} {total:8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                     "python": sys.version.split()[0]},
                                         "threads": args.threads, "notebooks": rows, "total_s": round(total, 1)},
                                        indent=1))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
