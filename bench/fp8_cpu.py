"""FP8 on the CPU, measured with the course's simulation: the two numbers chapter 9 is about, in one table each.

Usage::

    python bench/fp8_cpu.py                  # a few seconds
    python bench/fp8_cpu.py --k 4096 --outlier 10000

1. **Scaling granularity.** Activations ``[256, 512]`` ~ N(0, 1) with 4 outlier channels ``outlier``× larger,
   quantized to E4M3 per tensor, per 1×128 tile and per 128×128 block
   (:func:`dsv3_lessons.model.fp8.fake_quantize`): the mean relative error of the ordinary values and the share
   of them flushed to zero (V3 report §3.3.2, "Fine-Grained Quantization").
2. **Accumulation precision.** ``[32, K] @ [K, 32]`` GEMMs of E4M3 inputs whose partial sums keep only ``b``
   mantissa bits (truncation, :func:`dsv3_lessons.model.fp8.fp8_matmul_simulated`), with the whole K in the
   limited accumulator vs promoted to FP32 every N_C = 128 products (V3 report §3.3.2, "Increasing
   Accumulation Precision"; the report's H800 keeps about 14 bits and shows nearly 2 % error at K = 4096).
   The error is ‖C − C_ref‖/‖C_ref‖ against the exact product of the same FP8 inputs.

Everything is seeded and runs in float64 references, so the numbers are the same on every run of a CPU; the
last digit can differ between CPU vector paths. ``bench/fp8_gpu.py`` compares the simulation with a real FP8
tensor core where one is available.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsv3_lessons.course.ch09_fp8.experiments import (GRANULARITIES, accumulation_sweep, error_report,  # noqa: E402
                                                      outlier_activations)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="FP8 quantization and accumulation error, simulated on the CPU")
    p.add_argument("--outlier", type=float, default=1e4, help="outlier channels' magnitude factor (>= 1)")
    p.add_argument("--k", type=int, default=4096, help="inner dimension K of the GEMM (>= 128)")
    p.add_argument("--bits", default="12,13,14,16", help="accumulator mantissa bits, comma-separated")
    args = p.parse_args(argv)
    try:
        bits = [int(b) for b in args.bits.split(",")]
    except ValueError:
        p.error(f"--bits must be comma-separated integers, got {args.bits!r}")
    if args.k < 128:
        p.error(f"--k must be >= 128 (one promotion interval), got {args.k}")

    x, outliers = outlier_activations(tokens=256, channels=512, outlier=args.outlier, n_outliers=4)
    print(f"E4M3 activations [256, 512] with 4 outlier channels x{args.outlier:g}\n")
    print("| scaling | mean relative error of ordinary values | flushed to zero |")
    print("|---|---:|---:|")
    for g, label in GRANULARITIES.items():
        r = error_report(x, outliers, g)
        print(f"| {label} | {r.rel_error:.2%} | {r.underflow:.2%} |")

    s = accumulation_sweep(bits, k=args.k, m=32, n=32, seed=0)
    print(f"\nGEMM [32, {args.k}] x [{args.k}, 32] of E4M3 inputs, truncating accumulator "
          f"(input rounding alone: {s.quantization[0]:.2%} per tensor, {s.quantization[1]:.2%} tile/block)\n")
    print("| mantissa bits kept | whole K in the accumulator | promoted to FP32 every 128 | ratio |")
    print("|---:|---:|---:|---:|")
    for b, plain, promoted in zip(s.bits, s.plain, s.promoted):
        print(f"| {b} | {plain:.3%} | {promoted:.4%} | {plain / promoted:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
