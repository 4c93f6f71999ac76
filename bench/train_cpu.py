"""Train the tiny DeepSeek-V3 on the course corpus for a fixed wall-clock budget; print loss and throughput.

Usage::

    python bench/train_cpu.py                    # 60 s, 2 threads
    python bench/train_cpu.py --seconds 20 --threads 1

For each model in ``MODELS`` (today only the tiny DeepSeek-V3; later chapters add a dense baseline of the
same active size so the two are measured side by side, in one run, under the same budget) it prints the
parameters, the steps and tokens it managed, training throughput (tokens/s, evaluation excluded) and the
held-out validation loss in nats/character, next to the unigram entropy of the held-out text -- the loss of
the best model that ignores context (the trained model must beat it).

Timings depend on the machine and on what else runs on it; compare numbers from the same run only.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons import count_parameters, tiny  # noqa: E402
from dsv3_lessons.tools.data import TextData, load_corpus, unigram_entropy  # noqa: E402
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3  # noqa: E402
from dsv3_lessons.tools.train import TrainConfig, evaluate, train  # noqa: E402

#: name -> builder(vocab_size) of the models to compare.
MODELS: dict[str, Callable[[int], torch.nn.Module]] = {
    "deepseek-v3 tiny": lambda vocab: DeepSeekV3(tiny(vocab_size=vocab)),
}


def run(name: str, build: Callable[[int], torch.nn.Module], data: TextData, args: argparse.Namespace) -> dict:
    """Build (seeded), train for ``args.seconds`` and evaluate one model; return its numbers."""
    torch.manual_seed(args.seed)
    model = build(data.vocab_size)
    cfg = TrainConfig(steps=None, time_budget_s=args.seconds, batch_size=args.batch_size, seq_len=args.seq_len,
                      lr=args.lr, warmup_steps=15, eval_interval=0, eval_batches=2,
                      bias_update_speed=args.gamma, seed=args.seed)
    hist = train(model, data, cfg, progress=False)
    val = evaluate(model, data, batches=args.eval_batches, batch_size=args.batch_size, seq_len=args.seq_len)
    counts = count_parameters(model.cfg) if hasattr(model, "cfg") else None
    return {"name": name, "params": counts.total if counts else sum(p.numel() for p in model.parameters()),
            "activated": counts.activated if counts else None, "steps": hist.steps_done,
            "tokens": hist.tokens_seen, "train_s": hist.train_time_s, "tokens_per_s": hist.tokens_per_second,
            "val_loss": val, "val_loss_start": hist.val_loss[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="tiny DeepSeek-V3 CPU training benchmark")
    p.add_argument("--seconds", type=float, default=60.0, help="wall-clock training budget per model (s)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--gamma", type=float, default=0.01, help="bias update speed (V3: 0.001; larger for short runs)")
    p.add_argument("--eval-batches", type=int, default=16, help="validation batches for the final loss")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    corpus = load_corpus()
    data = TextData.from_corpus(corpus)
    h_val = unigram_entropy(data.tokens("val"))
    print(f"corpus: {corpus.source}; {corpus.train_chars:,} train / {corpus.val_chars:,} held-out characters, "
          f"vocabulary {data.vocab_size} (prepared in {time.perf_counter() - t0:.1f} s)")
    print(f"reference: unigram entropy of the held-out text {h_val:.4f} nats/char; ln V = "
          f"{math.log(data.vocab_size):.4f}")
    print(f"budget {args.seconds:g} s per model, {args.threads} thread(s), batch {args.batch_size} x {args.seq_len}\n")
    header = f"{'model':<18} {'params':>9} {'active':>9} {'steps':>6} {'tokens':>9} {'tokens/s':>9} " \
             f"{'val loss':>9} {'val - H':>8}"
    print(header)
    print("-" * len(header))
    for name, build in MODELS.items():
        r = run(name, build, data, args)
        print(f"{r['name']:<18} {r['params']:>9,} {r['activated'] or 0:>9,} {r['steps']:>6} {r['tokens']:>9,} "
              f"{r['tokens_per_s']:>9,.0f} {r['val_loss']:>9.4f} {r['val_loss'] - h_val:>+8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
