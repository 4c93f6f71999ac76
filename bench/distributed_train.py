"""Data + expert parallel training under torchrun: time per step and bytes per step at 1, 2, 4 processes.

Usage::

    python bench/distributed_train.py                       # 20 steps, batch 16 x 64, course corpus
    python bench/distributed_train.py --nproc 1 2 4 8 --steps 50 --batch-size 32

Each row is one ``torchrun --standalone`` run of :mod:`dsv3_lessons.tools.distributed_train` (gloo, one
thread per process) with the same global batch and seed; the first row is :func:`dsv3_lessons.tools.train.train`
in this process (no process group), the baseline the ratios divide by. Times are rank 0's wall-clock seconds
for the training steps (start-up, data loading and evaluation excluded); "launch" is the whole subprocess.
Bytes are exact counts per rank and step (float32 payload, :data:`BYTE_KINDS`), averaged over steps and ranks.
Every distributed run is also checked against train(): the largest per-step loss difference is printed.
The model's routing groups follow the world size (``n_group = W``), so each row routes with its own groups,
as the single-process reference of that row does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.tools.distributed_train import (BYTE_KINDS, DistTrainArgs, build_model,  # noqa: E402
                                                  load_data, run_distributed)
from dsv3_lessons.tools.train import train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="time and bytes per step of distributed training")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--corpus", default="", help="UTF-8 text file (default: the course corpus)")
    a = p.parse_args(argv)
    recipe = dict(steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, corpus=a.corpus, eval_batches=1)
    data = load_data(a.corpus)
    torch.set_num_threads(1)
    print(f"{a.steps} steps, global batch {a.batch_size} x {a.seq_len}, gloo, 1 thread per process")
    head = (f"{'run':>22} {'launch s':>9} {'steps s':>8} {'ms/step':>8} {'vs train()':>10} {'max|dloss|':>10} "
            + " ".join(f"{k:>13}" for k in BYTE_KINDS) + f" {'total B':>9}")
    print(head)
    base_ms = None
    for w in [0] + a.nproc:
        args = DistTrainArgs(**recipe)
        t0 = time.perf_counter()
        if w == 0:
            ref = train(build_model(data.vocab_size, 1, args), data, args.train_config(), progress=False)
            steps_s, label = ref.train_time_s, "train(), 1 process"
            row = [0.0] * len(BYTE_KINDS)
            dloss = 0.0
        else:
            hist = run_distributed(w, timeout_s=900, **recipe)
            ref = train(build_model(data.vocab_size, w, args), data, args.train_config(), progress=False)
            steps_s, label = hist.train_time_s, f"torchrun, {w} process{'es' if w > 1 else ''}"
            row = [torch.tensor(hist.bytes[k], dtype=torch.float64).mean().item() for k in BYTE_KINDS]
            dloss = max(abs(x - y) for x, y in zip(hist.loss, ref.loss))
        launch = time.perf_counter() - t0
        ms = 1e3 * steps_s / a.steps
        base_ms = base_ms or ms
        print(f"{label:>22} {launch:9.1f} {steps_s:8.2f} {ms:8.1f} {ms / base_ms:10.2f} {dloss:10.1e} "
              + " ".join(f"{b:13.0f}" for b in row) + f" {sum(row):9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
