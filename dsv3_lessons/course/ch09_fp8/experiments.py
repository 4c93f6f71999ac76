"""Chapter 9 helpers: outlier activations, error reports, the accumulation sweep and the chapter's plots.

The mechanism itself (formats, scales, tiles, blocks, the limited accumulator, the fake-quant Linear) lives in
:mod:`dsv3_lessons.model.fp8`; this module only sets up experiments on it and draws them
(through :func:`dsv3_lessons.course.common.style.subplots`). Sources: V3 report (arXiv 2412.19437) §3.3, Fig. 7.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv3_lessons.model import fp8

__all__ = ["outlier_activations", "ErrorReport", "error_report", "GRANULARITIES", "AccumulationSweep",
           "accumulation_sweep", "outlier_label"]

#: granularity key -> label shown to the learner.
GRANULARITIES = {"tensor": "per tensor", "tile": "1×128 tiles", "block": "128×128 blocks"}
_FMT_LABEL = {"e4m3": "E4M3", "e5m2": "E5M2", "e4m3fnuz": "E4M3FNUZ", "bf16": "BF16"}


def outlier_activations(tokens: int = 256, channels: int = 512, outlier: float = 100.0, n_outliers: int = 4,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[tokens, channels]`` ~ N(0, 1) with ``n_outliers`` channels scaled by ``outlier``.

    LLM activations carry a few channels with huge magnitudes (the reason V3 scales per 1×128 tile). The
    outlier channels sit in the first 128-channel tile, so the other tiles are clean. Returns ``(x,
    outlier_channel_indices)``. Raises ValueError for non-positive sizes or ``outlier`` < 1.
    """
    if min(tokens, channels) < 1 or not 0 <= n_outliers <= min(channels, 128):
        raise ValueError(f"tokens, channels must be >= 1 and 0 <= n_outliers <= min(channels, 128), got "
                         f"{tokens}, {channels}, {n_outliers}")
    if not outlier >= 1:
        raise ValueError(f"outlier (a magnitude factor) must be >= 1, got {outlier!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=g)
    idx = torch.randperm(min(channels, 128), generator=g)[:n_outliers].sort().values
    x[:, idx] *= outlier
    return x, idx


@dataclass(frozen=True)
class ErrorReport:
    """Quantization error of ``x`` at one granularity and format.

    Attributes: ``granularity``, ``fmt``; ``rel_error`` the mean of |x̂ − x|/|x| over the ordinary channels'
    values (outliers excluded; 1.0 for a value flushed to zero; a norm would hide the small values, which are
    the ones that suffer); ``underflow`` fraction of non-zero ordinary values that became 0;
    ``channel_error [C]`` the same mean per channel; ``outliers`` their indices.
    """

    granularity: str
    fmt: str
    rel_error: float
    underflow: float
    channel_error: torch.Tensor
    outliers: torch.Tensor


def error_report(x: torch.Tensor, outliers: torch.Tensor, granularity: str = "tile",
                 fmt: str = "e4m3") -> ErrorReport:
    """Fake-quantize ``x [T, C]`` (:func:`dsv3_lessons.model.fp8.fake_quantize`) and measure the damage.

    Raises ValueError for an unknown granularity or format (from the fp8 module).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [tokens, channels], got shape {tuple(x.shape)}")
    xq = fp8.fake_quantize(x, granularity, fmt)
    normal = torch.ones(x.shape[-1], dtype=torch.bool)
    normal[outliers] = False
    nonzero = x != 0
    rel = torch.where(nonzero, (xq - x).abs() / x.abs().clamp(min=1e-30), torch.zeros_like(x))
    chan = rel.sum(0) / nonzero.sum(0).clamp(min=1)
    nz = nonzero[:, normal]
    under = ((xq[:, normal] == 0) & nz).sum().item() / max(1, nz.sum().item())
    return ErrorReport(granularity, fmt, (rel[:, normal].sum() / nz.sum().clamp(min=1)).item(), under, chan,
                       outliers)


@dataclass(frozen=True)
class AccumulationSweep:
    """Relative errors ‖C_sim − C‖/‖C‖ of FP8 GEMMs for accumulator widths ``bits``.

    ``plain[i]``: per-tensor scales, the whole K in the limited accumulator; ``promoted[i]``: 1×128 / 128×128
    scales, promotion to FP32 every 128 products. Both are measured against the exact (float64) product of
    the same FP8 inputs, so they show accumulation error only. ``quantization`` is the error the FP8 rounding
    of the inputs alone causes (per tensor, fine-grained), for scale. ``k``, ``m``, ``n``: GEMM sizes.
    """

    bits: list[int]
    plain: list[float]
    promoted: list[float]
    quantization: tuple[float, float]
    k: int
    m: int
    n: int


def accumulation_sweep(bits: list[int], k: int = 4096, m: int = 32, n: int = 32, seed: int = 0,
                       mode: str = "truncate") -> AccumulationSweep:
    """Random ``[m, k] @ [k, n]`` GEMMs (N(0, 1) entries) through :func:`dsv3_lessons.model.fp8.fp8_matmul_simulated`.

    All widths are simulated in one pass over K. Raises ValueError for bad sizes or widths.
    """
    if k < 1 or m < 1 or n < 1:
        raise ValueError(f"k, m, n must be >= 1, got {k}, {m}, {n}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)
    exact = x.double() @ w.double().t()

    def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
        return ((a.double() - ref).norm() / ref.norm()).item()

    qx, sx = fp8.quantize_per_tensor(x)
    qw, sw = fp8.quantize_per_tensor(w)
    ref_plain = (qx.double() @ qw.double().t()) * float(sx * sw)
    ref_fine = fp8.fake_quantize(x, "tile").double() @ fp8.fake_quantize(w, "block").double().t()
    plain = fp8.fp8_matmul_simulated(x, w, bits, None, mode=mode)
    promoted = fp8.fp8_matmul_simulated(x, w, bits, fp8.BLOCK, mode=mode)
    return AccumulationSweep(list(bits), [rel(p, ref_plain) for p in plain], [rel(p, ref_fine) for p in promoted],
                             (rel(ref_plain, exact), rel(ref_fine, exact)), k, m, n)


# ---------------------------------------------------------------------------------------------- plots
def outlier_label(outlier: float) -> str:
    """A short label for an outlier factor: up to 3 significant digits below 1000 (``"1.78"``, ``"316"``),
    otherwise mantissa and exponent (``56234.1`` → ``"5.6e4"``)."""
    if outlier < 1000:
        return f"{outlier:.3g}"
    mant, exp = f"{outlier:.1e}".split("e")
    return f"{mant}e{int(exp)}"
