"""Benchmark: one MLA decode step at DeepSeek-V3's attention sizes, four ways, side by side.

One attention layer with V3's real sizes (d = 7168, n_h = 128, d_c' = 1536, d_c = 512, d_h = 128,
d_h^R = 64, d_v = 128, YaRN s = 40), float32 on the CPU, batch 1, one thread by default (``--threads``).
For every context length T the four variants of :mod:`dsv3_lessons.course.ch04_mla_inference.decode` get the same weights
and equivalent caches (the same latent c^KV / k^R of a random hidden context); their outputs are
checked to agree, then one decode step of each is timed round-robin (median of ``--repeats``), in the
same process, so the printed numbers are ratios measured side by side:

* ``per_head``      -- MHA-style cache of expanded keys/values (40,960 elements per token);
* ``naive``         -- latent cache (576 elements), re-expanded with ``kv_b_proj`` every step;
* ``transformers``  -- transformers' ``DeepseekV3Attention`` with a ``DynamicCache`` (latent cache, re-expanded);
* ``absorb``        -- W^UK folded into the query, W^UV after attention, attention over the latent.

Cache bytes are read from the actual cache tensors and checked against the closed form
(d_c + d_h^R = 576 and n_h·(d_h + d_h^R + d_v) = 40,960 elements per token per layer).

Usage::

    .venv/bin/python bench/mla_decode.py                       # contexts 512 … 8192, 3 repeats
    .venv/bin/python bench/mla_decode.py --contexts 1024 4096 --repeats 5
    .venv/bin/python bench/mla_decode.py --prefill 1024         # also time a 1024-token prefill both ways

``--prefill N`` also times the prefill of an N-token prompt with both attention implementations of the layer
(``attn_impl="naive"``: re-expand, ``"absorb"``) and prints the time ratio next to the FLOP ratio of
:func:`~dsv3_lessons.course.ch04_mla_inference.decode.attention_flops`: absorption is a decode-time choice (chapter 04 §6).

The course's targets: absorbed ≥ 20× faster per decode step than transformers at T = 4096 (FLOP ratio ≈ 91×),
per-head / MLA cache bytes ≥ 70×. Memory: peak ≈ 5.7 GB resident with T = 8192 (measured); run time ≈ 2–4 min on 2 cores.
"""
from __future__ import annotations

import argparse
import gc
import platform
import sys
import time

import torch
from tqdm import tqdm

from dsv3_lessons.course.ch04_mla_inference.decode import (VARIANTS, attention_flops, build_hf_attention,
                                                           build_mla, cache_elements_per_token, context_latents,
                                                           decode_bytes_read, decode_flops, decode_weight_bytes,
                                                           expand_latent, flop_ratio, make_variants,
                                                           time_variants, v3_attention_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192],
                   help="context lengths T (cached tokens before the decoded one)")
    p.add_argument("--repeats", type=int, default=3, help="timed decode steps per variant and context (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed decode steps per variant and context")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1: on a shared machine, 2 threads mostly measure the scheduler; "
                        "see dsv3_lessons.course.ch04_mla_inference.decode)")
    p.add_argument("--heads", type=int, default=128, help="num_attention_heads (128 = V3)")
    p.add_argument("--hidden", type=int, default=7168, help="hidden_size (7168 = V3)")
    p.add_argument("--prefill", type=int, default=0,
                   help="also time a prefill of this many tokens, naive vs absorbed (0: skip)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max |output - absorbed output| accepted before timing")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.contexts):
        p.error(f"--contexts must be positive, got {args.contexts}")
    if args.prefill < 0:
        p.error(f"--prefill must be >= 0, got {args.prefill}")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


def time_prefill(mla, tokens: int, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of one prefill forward of ``tokens`` random hidden states, per ``attn_impl``, round-robin."""
    x = torch.randn(1, tokens, mla.cfg.hidden_size, generator=torch.Generator().manual_seed(7))
    times: dict[str, list[float]] = {"naive": [], "absorb": []}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for impl in times:
                t0 = time.perf_counter()
                mla(x, attn_impl=impl)
                if i >= warmup:
                    times[impl].append(time.perf_counter() - t0)
    return {impl: sorted(ts)[len(ts) // 2] for impl, ts in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cfg = v3_attention_config(args.heads, args.hidden)
    contexts = sorted(set(args.contexts))
    print(f"MLA decode benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, float32, batch 1")
    print(f"layer: d={cfg.hidden_size} n_h={cfg.num_attention_heads} d_c'={cfg.q_lora_rank} d_c={cfg.kv_lora_rank} "
          f"d_h={cfg.qk_nope_head_dim} d_h^R={cfg.qk_rope_head_dim} d_v={cfg.v_head_dim}; "
          f"weights {decode_weight_bytes(cfg) / 1e6:.1f} MB (read by every step)")

    mla = build_mla(cfg, seed=0)
    hf = build_hf_attention(mla, share_weights=True)
    c_all, k_all = context_latents(mla, max(contexts), seed=1)
    x = torch.randn(1, 1, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():  # per-head keys/values of the longest context, expanded once
        parts = [expand_latent(mla, c_all[:, i:i + 1024], k_all[:, i:i + 1024]) for i in range(0, max(contexts), 1024)]
        per_head_kv = (torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2))
        del parts

    rows, per_token = [], {}
    bar = tqdm(total=len(contexts) * len(VARIANTS) * (args.repeats + args.warmup), desc="decode steps",
               unit="step", file=sys.stderr)
    for t in contexts:
        variants = make_variants(mla, c_all[:, :t], k_all[:, :t], hf_attention=hf, per_head_kv=per_head_kv)
        for name, var in variants.items():
            measured = var.cache_elements_per_token()
            formula = cache_elements_per_token(cfg, name)
            if measured != formula or var.cache_bytes != formula * t * 4:
                raise SystemExit(f"T={t} {name}: cache holds {measured} elements/token "
                                 f"({var.cache_bytes} B), formula says {formula}")
            per_token[name] = (measured, var.cache_bytes // t)
        bar.set_postfix_str(f"T={t}")
        outputs: dict[str, torch.Tensor] = {}
        times = time_variants(variants, x, repeats=args.repeats, warmup=args.warmup,
                              on_step=lambda name: bar.update(1), outputs=outputs)
        # the first (untimed when --warmup >= 1) step of every variant must give absorbed MLA's output
        diffs = {n: (out - outputs["absorb"]).abs().max().item() for n, out in outputs.items()}
        bad = {n: d for n, d in diffs.items() if not d <= args.tolerance}
        if bad:
            raise SystemExit(f"T={t}: variants disagree with absorbed MLA beyond {args.tolerance}: {bad}")
        rows.append((t, times, max(diffs.values())))
        del variants
        gc.collect()
    bar.close()

    print("\nKV cache per token per layer (read from the cache tensors after filling T tokens):")
    print(f"  {'variant':<13} {'elements':>9} {'bytes fp32':>11} {'bytes bf16':>11} {'formula':>9}")
    for name in VARIANTS:
        elements, nbytes = per_token[name]
        print(f"  {name:<13} {elements:>9,} {nbytes:>11,} {elements * 2:>11,} {cache_elements_per_token(cfg, name):>9,}")
    print("  (bf16 column: the same elements at 2 bytes each)")
    cache_ratio = per_token["per_head"][0] / per_token["absorb"][0]
    print(f"  per-head / MLA cache ratio: {cache_ratio:.2f}x")

    print("\nDecode-step time (median of {} steps, ms) and ratio to absorbed MLA "
          "(FLOP ratio in brackets, closed form):".format(args.repeats))
    head = f"  {'T':>6}" + "".join(f" {n:>13}" for n in VARIANTS) + "".join(
        f" {n + '/abs':>20}" for n in VARIANTS if n != "absorb") + f" {'max|diff|':>10}"
    print(head)
    for t, times, diff in rows:
        line = f"  {t:>6}" + "".join(f" {times[n] * 1e3:>13.1f}" for n in VARIANTS)
        for n in VARIANTS:
            if n != "absorb":
                line += f" {times[n] / times['absorb']:>9.2f}x [{flop_ratio(cfg, t, n):>6.1f}x]"
        print(line + f" {diff:>10.1e}")

    print("\nBytes one step must read (weights + cached context, closed form, MB) -- the floor of a memory-bound step:")
    print(f"  {'T':>6}" + "".join(f" {n:>13}" for n in VARIANTS) + f" {'per_head/abs':>13}")
    for t, _, _ in rows:
        read = {n: decode_bytes_read(cfg, t, n)["total"] for n in VARIANTS}
        print(f"  {t:>6}" + "".join(f" {read[n] / 1e6:>13.1f}" for n in VARIANTS)
              + f" {read['per_head'] / read['absorb']:>12.2f}x")

    abs_flops = {t: decode_flops(cfg, t, "absorb")["total"] for t, _, _ in rows}
    print("\nabsorbed MLA: " + ", ".join(
        f"T={t}: {abs_flops[t] / times['absorb'] / 1e9:.1f} GFLOP/s" for t, times, _ in rows))
    by_t = {t: times for t, times, _ in rows}
    if 4096 in by_t and cfg.num_attention_heads == 128 and cfg.hidden_size == 7168:
        speedup = by_t[4096]["transformers"] / by_t[4096]["absorb"]
        print(f"\ntarget: absorbed >= 20x faster than transformers at T=4096: {speedup:.1f}x "
              f"-> {'PASS' if speedup >= 20 else 'FAIL'}")
        print(f"target: per-head / MLA cache bytes >= 70x: {cache_ratio:.2f}x -> {'PASS' if cache_ratio >= 70 else 'FAIL'}")
    if args.prefill:
        prefill_times = time_prefill(mla, args.prefill, args.repeats, args.warmup)
        flop = {impl: attention_flops(cfg, args.prefill, 0, impl)["total"] for impl in prefill_times}
        print(f"\nprefill of {args.prefill} tokens (median of {args.repeats}, ms): "
              + ", ".join(f"{impl} {1e3 * t:.1f}" for impl, t in prefill_times.items())
              + f"; absorbed / naive: time {prefill_times['absorb'] / prefill_times['naive']:.2f}x, "
              f"FLOPs {flop['absorb'] / flop['naive']:.2f}x")
    print(f"total run time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
