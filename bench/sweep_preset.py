"""Choose the course's tiny DeepSeek-V3 preset by measurement: equal training budget, lowest held-out loss.

Usage::

    python bench/sweep_preset.py                         # every candidate, 30 CPU-s each, 2 at a time
    python bench/sweep_preset.py --only base,wide --budget 20
    python bench/sweep_preset.py --clock wall --threads 2 --jobs 1   # on a quiet machine

Every candidate keeps every mechanism of DeepSeek-V3 on (MLA with both latents, decoupled RoPE with YaRN,
group-limited sigmoid routing with ``topk_group < n_group``, a shared expert) and differs from the others
in one or two knobs: width d, depth, routed-expert count N_r, granularity (narrower experts, more of them
per token at equal activated width), top-K_r and MTP on/off. Each one is trained by
:func:`dsv3_lessons.tools.train.train` with the same recipe (batch 32 x 64 characters, AdamW lr 3e-3,
warmup 15, cosine to 0.1x, γ = 0.01) for the same budget, then scored on the same held-out windows
(16 batches of 32 x 64 characters of the held-out plays).

**The clock.** The machine this was run on is shared by several engineers (load average around 10 on
2 cores while it ran). Wall-clock timings with 2 threads were off by up to 50x from one step to the next
(OpenMP threads waiting on each other while descheduled), so the default budget is *CPU seconds of a
single-threaded process* (``TrainConfig(clock="process")``), which other programs barely disturb, and
two candidates train at a time. Single-thread CPU time ranks the candidates by their cost; the 2-thread
wall-clock speed of the chosen preset is measured side by side in ``bench/train_cpu.py``.

Prints one row per candidate and a Markdown table (``bench/RESULTS.md`` keeps the one used for the preset).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.model import DeepSeekV3, count_parameters, tiny  # noqa: E402
from dsv3_lessons.tools.data import TextData, load_corpus  # noqa: E402
from dsv3_lessons.tools.train import TrainConfig, evaluate, train  # noqa: E402


def sized(d: int, layers: int = 3, experts: int = 8, top_k: int = 2, granularity: int = 1, mtp: bool = True,
          heads: int = 4) -> dict:
    """``tiny()`` overrides for width ``d``: attention dims scale with d, FFN widths keep the preset's ratios.

    Per head d_h = d_v = d/heads, d_h^R = d_h/2; d_c' = 3d/4, d_c = d/2; dense FFN 3d; each routed expert
    d/granularity wide (so 1 shared + K_r routed experts activate (1 + K_r/granularity)·d). Always 4 expert
    groups of which 2 are kept (``topk_group < n_group``), one shared expert, YaRN as in ``tiny()``.
    ``sized(64)`` is exactly ``tiny()``.
    """
    head = d // heads
    return dict(hidden_size=d, intermediate_size=3 * d, moe_intermediate_size=d // granularity,
                num_hidden_layers=layers, first_k_dense_replace=1, num_attention_heads=heads,
                num_key_value_heads=heads, q_lora_rank=3 * d // 4, kv_lora_rank=d // 2,
                qk_nope_head_dim=head, qk_rope_head_dim=head // 2, v_head_dim=head,
                n_routed_experts=experts, num_experts_per_tok=top_k, n_group=4, topk_group=2,
                num_nextn_predict_layers=1 if mtp else 0)


#: name -> tiny() overrides. "base" is the preset the course had before this sweep.
CANDIDATES: dict[str, dict] = {
    # round 1: MTP, and width around the old preset
    "base d64 L3 E8 K2 +MTP": sized(64),
    "base, no MTP": sized(64, mtp=False),
    "d96 L3 E8 K2": sized(96, mtp=False),
    # round 2: at the width that won, one knob at a time (MTP off: it lost in round 1)
    "d48 L3 E8 K2": sized(48, mtp=False),
    "d64 L4 E8 K2": sized(64, layers=4, mtp=False),
    "d64 L3 E16 K2": sized(64, experts=16, mtp=False),
    "d64 L3 E16 K4 fine(d/2)": sized(64, experts=16, top_k=4, granularity=2, mtp=False),
    "d64 L3 E8 K1": sized(64, top_k=1, mtp=False),
}


def run_one(name: str, overrides: dict, args: argparse.Namespace) -> dict:
    """Build (seeded), train for the budget, evaluate; return the row."""
    torch.set_num_threads(args.threads)
    data = TextData.from_corpus(load_corpus())
    cfg = tiny(vocab_size=data.vocab_size, **overrides)
    torch.manual_seed(args.seed)
    model = DeepSeekV3(cfg, mtp_loss_weight=args.mtp_lambda)
    tcfg = TrainConfig(steps=None, time_budget_s=args.budget, clock=args.clock, batch_size=32, seq_len=64,
                       lr=args.lr, warmup_steps=15, eval_interval=0, eval_batches=1, bias_update_speed=0.01,
                       seed=args.seed, num_threads=args.threads)
    t0 = time.perf_counter()
    hist = train(model, data, tcfg, progress=False)
    val = evaluate(model, data, batches=16, batch_size=32, seq_len=64)
    n = count_parameters(cfg)
    return {"name": name, "total": n.total, "activated": n.activated, "steps": hist.steps_done,
            "s_per_step": hist.train_time_s / hist.steps_done, "tokens": hist.tokens_seen, "val": val,
            "wall": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=60.0, help="training budget per candidate (s of --clock)")
    p.add_argument("--clock", choices=("process", "wall"), default="process")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="candidates trained at the same time")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--mtp-lambda", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="';'-separated substrings of candidate names")
    args = p.parse_args(argv)
    if args.clock == "process" and args.threads != 1:
        p.error("--clock process measures CPU seconds and needs --threads 1 (threads waiting on each other "
                "would be counted as work)")
    names = [n for n in CANDIDATES if not args.only or any(s.strip() in n for s in args.only.split(";"))]
    print(f"budget {args.budget:g} s ({args.clock} clock), {args.threads} thread(s), {args.jobs} at a time, "
          f"{len(names)} candidates", flush=True)
    rows = []
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, n, CANDIDATES[n], args): n for n in names}
        for fut in cf.as_completed(futures):
            r = fut.result()
            rows.append(r)
            print(f"{r['name']:<28} total {r['total']:>9,} active {r['activated']:>9,} steps {r['steps']:>5} "
                  f"{r['s_per_step'] * 1e3:6.1f} ms/step  val {r['val']:.4f}  ({r['wall']:.0f} s wall)", flush=True)
    rows.sort(key=lambda r: r["val"])
    print(f"\n| candidate | params total | activated | steps | ms/step ({args.clock}) | tokens | val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['total']:,} | {r['activated']:,} | {r['steps']} | {r['s_per_step'] * 1e3:.1f} "
              f"| {r['tokens']:,} | {r['val']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
