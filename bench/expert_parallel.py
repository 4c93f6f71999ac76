"""Node-limited expert parallelism on 4 gloo processes: bytes across processes for M = 1..4, side by side.

Usage::

    python bench/expert_parallel.py                 # seed 0, tokens per node 40 64 17 90
    python bench/expert_parallel.py --seed 3 --tokens 128 128 128 128

Runs one MoE layer (:mod:`dsv3_lessons.tools.expert_parallel`) with each node limit M in one spawn of
``len(tokens)`` processes, checks every distributed output against the single-process ``DeepseekMoE``,
and prints the bytes that crossed process boundaries (dispatch, combine, count exchange), their ratio
to the unlimited run, and what a dispatch without per-node de-duplication would have sent. Bytes are
exact counts (float32 payload); the times are rank 0's and vary with the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.tools.expert_parallel import (node_limit_sweep, run_expert_parallel,  # noqa: E402
                                                single_process_output)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="node-limited expert-parallel dispatch on gloo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, nargs="+", default=[40, 64, 17, 90], help="tokens per node")
    p.add_argument("--skew", type=float, default=0.05, help="std of a random selection bias (uneven loads)")
    args = p.parse_args(argv)
    cases = node_limit_sweep(args.seed, tuple(args.tokens), args.skew)
    results = run_expert_parallel(cases)
    unlimited = results[-1].total_bytes
    print(f"{len(args.tokens)} processes (gloo), tokens per node {args.tokens}, seed {args.seed}")
    print(f"{'M':>9} {'max|diff|':>10} {'remote rows':>12} {'dispatch B':>11} {'combine B':>10} {'counts B':>9} "
          f"{'total B':>9} {'vs no limit':>11} {'no de-dup B':>12} {'time ms':>8}")
    ok = True
    for case, r in zip(cases, results):
        diff = (r.output - single_process_output(case)).abs().max().item()
        ok &= diff < 1e-5
        m = str(case.node_limit) if case.node_limit is not None else "no limit"
        print(f"{m:>9} {diff:10.1e} {r.remote_rows:12d} {r.dispatch_bytes:11d} {r.combine_bytes:10d} "
              f"{r.count_bytes:9d} {r.total_bytes:9d} {r.total_bytes / unlimited:11.3f} "
              f"{r.extra['no_dedup_bytes']:12d} {1e3 * r.seconds:8.1f}")
    print("distributed == single process:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
