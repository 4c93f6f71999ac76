"""Exercise checkers of chapter 09 (FP8 training with fine-grained quantization).

Pattern: :mod:`dsv3_lessons.course.common.checking` -- never raise; "not attempted yet" + a hint for the
placeholder ``___``, a ✗ diagnosis for a wrong answer, ✓ for a right one. Right answers are computed here
from :mod:`dsv3_lessons.model.fp8` (or closed-form arithmetic), never typed in.

* 9.1 (code) write ``dequantize(q, scale_inv, block)`` for the checkpoint's block form;
* 9.2 the number of float32 scales a 1000×3000 weight needs in 128×128 blocks;
* 9.3 the power-of-two scale of a block whose amax is 300 (E4M3);
* 9.4 a 4-bit-mantissa accumulator with truncation summing 1 + 8 × 1/32.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.model import fp8
from dsv3_lessons.course.common.checking import ___, Wrong, as_number, checker, is_placeholder  # noqa: F401

__all__ = ["___", "check_dequantize", "check_scale_count", "check_pow2_scale", "check_swamped_sum",
           "SCALE_COUNT_SHAPE", "POW2_AMAX", "SWAMP_BITS", "SWAMP_TERMS"]

#: the matrix of exercise 9.2, [rows, cols].
SCALE_COUNT_SHAPE = (1000, 3000)
#: the block amax of exercise 9.3.
POW2_AMAX = 300.0
#: exercise 9.4: mantissa bits kept and the terms summed left to right.
SWAMP_BITS = 4
SWAMP_TERMS = [1.0] + [1 / 32] * 8


def _cases():
    g = torch.Generator().manual_seed(9)
    out = []
    for rows, cols in ((200, 300), (576, 260), (64, 48)):
        w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g))
        q, s = fp8.quantize_blocks(w)
        out.append((q, s, fp8.dequantize_blocks(q, s)))
    return out


@checker("9.1", hint="repeat each scale over its block (repeat_interleave by 128 on both dims), crop to "
                     "[rows, cols] because the last block may be partial, then multiply q.float() by it")
def check_dequantize(fn):
    """Grade ``fn(q, scale_inv, block=128) -> float32 [rows, cols]`` on non-divisible shapes."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (dequantize), not {type(fn).__name__}")
    for q, s, right in _cases():
        got = fn(q, s, 128)
        if is_placeholder(got):
            raise NotImplementedError  # the function still returns ___: not attempted yet
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(right.shape):
            raise Wrong(f"for q of shape {tuple(q.shape)} you returned shape {tuple(got.shape)}: crop the repeated "
                        f"scale grid to [rows, cols] -- the last block row/column is partial")
        if not got.is_floating_point() or got.dtype in fp8.FORMATS.values():
            raise Wrong(f"return float32 (q.float() * scales), got {got.dtype}")
        got = got.float()
        if torch.equal(got, right):
            continue
        if torch.equal(got, q.float()):
            raise Wrong("you returned q.float(): the scales were never applied")
        s_full = s.repeat_interleave(128, 0)[: q.shape[0]].repeat_interleave(128, 1)[:, : q.shape[1]]
        if torch.allclose(got, q.float() / s_full, rtol=1e-5):
            raise Wrong("you divided by weight_scale_inv: despite its name it is s = amax/448, the factor to "
                        "MULTIPLY by")
        raise Wrong(f"values differ for q of shape {tuple(q.shape)} (max abs diff "
                    f"{(got - right).abs().max().item():.3g}); element [r, c] uses scale_inv[r // 128, c // 128]")
    return "matches dequantize_blocks on 200×300, 576×260 and 64×48 (partial blocks included)."


@checker("9.2", hint="one float32 scale per 128×128 block; count the blocks along each dim with ceil, "
                     "since a partial block still needs its scale")
def check_scale_count(answer):
    rows, cols = SCALE_COUNT_SHAPE
    x = as_number(answer, "the number of scales")
    gr, gc = fp8.block_grid((rows, cols))
    right = gr * gc
    if x == right:
        return f"{gr} × {gc} = {right} scales ({right * 4} bytes of float32 next to {rows * cols:,} FP8 bytes)."
    if x == (rows // 128) * (cols // 128):
        raise Wrong("that floors the block counts: the partial last block row and column need scales too (ceil)")
    if x in (round(rows * cols / 128 ** 2), math.ceil(rows * cols / 128 ** 2), rows * cols / 128 ** 2):
        raise Wrong("that divides the element count by 128²: blocks are counted per dimension, ceil(rows/128) × "
                    "ceil(cols/128), which is more because of the partial blocks")
    if x in (rows * math.ceil(cols / 128), math.ceil(rows / 128) * cols):
        raise Wrong("that counts 1×128 tiles (the activations' granularity); weights use 128×128 blocks")
    if x in (gr, gc):
        raise Wrong("that is one dimension of the grid; the grid is ceil(rows/128) × ceil(cols/128)")
    raise Wrong(f"{x:g} is not right: the grid is ceil({rows}/128) × ceil({cols}/128)")


@checker("9.3", hint="s = amax/448 first, then round s UP to a power of two (2^ceil(log2 s)) so that "
                     "amax/s still fits under 448")
def check_pow2_scale(answer):
    x = as_number(answer, "the scale")
    right = fp8.compute_scale(torch.tensor(POW2_AMAX), "e4m3", power_of_two=True).item()
    exact = POW2_AMAX / 448
    if x == right:
        return (f"2^ceil(log2({POW2_AMAX:g}/448)) = {right:g}: {POW2_AMAX:g}/{right:g} = {POW2_AMAX / right:g} ≤ 448, "
                f"and multiplying by a power of two is exact.")
    if math.isclose(x, exact, rel_tol=1e-3):
        raise Wrong(f"{x:g} is amax/448 itself; a power-of-two scale rounds it to 2^k")
    if x == right / 2:
        raise Wrong(f"rounded down: {POW2_AMAX:g}/{x:g} = {POW2_AMAX / x:g} > 448 would overflow (clamped, "
                    f"wrong value); round the scale UP")
    if math.isclose(x, 1 / exact, rel_tol=1e-3) or x == 1 / right:
        raise Wrong("scale direction: s = amax/448 (x ≈ q·s), not 448/amax")
    if x > right and math.log2(x).is_integer():
        raise Wrong(f"{x:g} is a power of two that fits, but not the smallest: the larger the scale, the fewer "
                    f"FP8 values the block uses")
    raise Wrong(f"{x:g} is not right: compute {POW2_AMAX:g}/448, then the next power of two above it")


@checker("9.4", hint="after each addition keep only 4 bits after the leading 1 and drop the rest "
                     "(truncate); what is the spacing of such numbers between 1 and 2?")
def check_swamped_sum(answer):
    x = as_number(answer, "the sum")
    right = fp8.limited_precision_sum(torch.tensor(SWAMP_TERMS), SWAMP_BITS).item()
    exact = sum(SWAMP_TERMS)
    if x == right:
        return (f"{right:g}: near 1 the spacing is 2^-4 = 1/16 and each 1/32 falls below it, so truncation drops "
                f"every addend (exact: {exact:g}). This swamping is why V3 promotes to FP32 every 128 products.")
    if x == exact:
        raise Wrong(f"{exact:g} is the exact sum; the accumulator keeps only {SWAMP_BITS} mantissa bits after "
                    f"every addition")
    if x == 1 + 1 / 16 or x == 1 + 1 / 32:
        raise Wrong("one addend survived? Each addition is truncated on its own: 1 + 1/32 → 1 every time")
    if x == 1.5:
        raise Wrong("that rounds to nearest once at the end; here each addition truncates")
    raise Wrong(f"{x:g} is not right: step through 1 + 1/32, truncate to 4 mantissa bits, repeat")
