"""Compare the simulated FP8 GEMM accumulator with a real FP8 matmul on a GPU (optional; skips without one).

Usage::

    python bench/fp8_gpu.py            # K = 4096, M = N = 64

Needs CUDA with FP8 tensor cores (compute capability >= 8.9: Ada, Hopper) and ``torch._scaled_mm``; anywhere
else it prints why it skips and exits 0. What it prints: for per-tensor-scaled E4M3 inputs, the relative error
‖C − C_exact‖/‖C_exact‖ of the GPU result (``use_fast_accum`` True and False) next to the CPU simulation with
13, 14 and 23 kept mantissa bits (``dsv3_lessons.model.fp8.simulated_gemm``), all against the exact float64
product of the same FP8 inputs -- and which simulated width the GPU is closest to. Source of the question:
V3 report §3.3.2 (H800 accumulation keeps ~14 bits; nearly 2 % error at K = 4096).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsv3_lessons.model import fp8  # noqa: E402


def skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() < (8, 9):
        return f"compute capability {torch.cuda.get_device_capability()} < (8, 9): no FP8 tensor cores"
    if not hasattr(torch, "_scaled_mm"):
        return "this torch has no torch._scaled_mm"
    return None


def main(m: int = 64, n: int = 64, k: int = 4096, seed: int = 0) -> None:
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    qx, sx = fp8.quantize_per_tensor(x)
    qw, sw = fp8.quantize_per_tensor(w)
    exact = (qx.double() @ qw.double().t()) * float(sx * sw)

    def rel(c: torch.Tensor) -> float:
        return ((c.double().cpu() - exact).norm() / exact.norm()).item()

    dev = torch.device("cuda")
    results = {}
    for fast in (False, True):
        out = torch._scaled_mm(qx.to(dev), qw.to(dev).t(), scale_a=sx.to(dev), scale_b=sw.to(dev),
                               out_dtype=torch.float32, use_fast_accum=fast)
        out = out[0] if isinstance(out, tuple) else out
        results[f"GPU use_fast_accum={fast}"] = rel(out)
    for bits in (13, 14, 23):
        sim = fp8.simulated_gemm(qx.float(), qw.float().t(), bits) * (sx * sw)
        results[f"CPU simulation, {bits} bits"] = rel(sim)
    print(f"{torch.cuda.get_device_name()}  [{m}, {k}] @ [{k}, {n}], E4M3 per-tensor scales")
    for name, err in results.items():
        print(f"  {name:<28} ||C - C_exact|| / ||C_exact|| = {err:.4%}")
    for fast in (False, True):
        gpu = results[f"GPU use_fast_accum={fast}"]
        closest = min((13, 14, 23), key=lambda b: abs(results[f"CPU simulation, {b} bits"] - gpu))
        print(f"  use_fast_accum={fast}: closest simulated width {closest} bits")


if __name__ == "__main__":
    main()
