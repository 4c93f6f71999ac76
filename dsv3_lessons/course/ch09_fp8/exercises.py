"""Exercise checkers of chapter 09 (FP8 training with fine-grained quantization).

Pattern: :mod:`dsv3_lessons.course.common.checking` -- never raise; "not attempted yet" + a nudge for the
placeholder ``___``, a ✗ diagnosis for a wrong answer (pointing to ``hint("9.N")`` for the next hint), ✓ for a
right one. Right answers are computed here from :mod:`dsv3_lessons.model.fp8` (or closed-form arithmetic),
never typed in; the formulas live in the worked solutions only.

* 9.1 (predict, then run) the per-tensor error of the ordinary values next to 4 outlier channels, predicted
  before the cell that measures it;
* 9.2 (variation, code) ``dequantize(q, scale_inv, block)`` for any block shape ``(rows, cols)``, partial blocks
  in both dimensions; the library's dequantize functions are switched off while it runs;
* 9.3 (bug hunt, code) a power-of-two block quantizer that rounds the scale after quantizing (SPEC §9);
* 9.4 (by hand) a 4-bit truncating accumulator summing 1 + 8 × 1/32: swamping.
"""
from __future__ import annotations

import contextlib

import torch

from dsv3_lessons.model import fp8
from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker,  # noqa: F401
                                                 hint, is_placeholder)

__all__ = ["___", "hint", "check_outlier_prediction", "check_dequantize", "check_pow2_quantizer",
           "check_swamped_sum", "SWAMP_BITS", "SWAMP_TERMS", "DEQUANT_CASES"]

#: exercise 9.4: mantissa bits kept and the terms summed left to right.
SWAMP_BITS = 4
SWAMP_TERMS = [1.0] + [1 / 32] * 8
#: exercise 9.2: (rows, cols, block) of the matrices the checker dequantizes; blocks need not be square.
DEQUANT_CASES = ((200, 300, (128, 128)), (576, 260, (128, 128)), (64, 48, (128, 128)), (100, 20, (32, 64)),
                 (100, 70, (64, 32)), (48, 40, (16, 64)))


# ------------------------------------------------------------------------------------------------ 9.1
@checker("9.1", hint="with one scale set by channels 10,000 times larger, where in E4M3's range does an ordinary "
                     "value of 1 land after dividing by s, and how fine is the grid of E4M3 values there?",
         more=["cell 10 printed what an ordinary value of 1 becomes after dividing by s: place it in section 1's "
               "table, between E4M3's smallest subnormal and its smallest normal value",
               "below the smallest normal value the grid no longer scales with the value: its spacing is fixed, "
               "so the relative rounding error of a small value is large",
               "values below half the smallest subnormal become 0: each counts as a 100 % error in the mean"])
def check_outlier_prediction(predicted_percent, measured):
    """``predicted_percent``: the learner's prediction, in %; ``measured``: the run's per-tensor
    :class:`~dsv3_lessons.course.ch09_fp8.experiments.ErrorReport` (ordinary channels)."""
    x = as_number(predicted_percent, "your prediction (in %)")
    got = 100 * measured.rel_error
    flushed = 100 * measured.underflow
    if x <= 0:
        raise Wrong(f"an error is positive: the run measured {got:.1f} %")
    if 1 / 1.5 <= x / got <= 1.5:
        return (f"you predicted {x:.3g} %, the run measured {got:.1f} %. One scale for the whole tensor pushes the "
                f"ordinary values into E4M3's subnormal range, where the grid spacing is fixed: the rounding error "
                f"is large relative to small values, and {flushed:.1f} % of them became exactly 0.")
    if x < 1 and 1 / 1.5 <= 100 * x / got <= 1.5:
        raise Wrong(f"{x:g} looks like a fraction; the prediction is in percent ({100 * x:g} %?). The run "
                    f"measured {got:.1f} %")
    if x < got / 1.5:
        normal = x <= 4
        raise Wrong(f"you predicted {x:.3g} %, the run measured {got:.1f} %. "
                    + ("That is about the error of E4M3's normal range (3 mantissa bits: a few %). " if normal else "")
                    + f"With s = amax/448 set by the outliers, an ordinary value lands below E4M3's smallest normal "
                      f"value, where the spacing is fixed and large relative to it; {flushed:.1f} % of the ordinary "
                      f"values fell below half the smallest subnormal and became 0 (100 % error each)")
    raise Wrong(f"you predicted {x:.3g} %, the run measured {got:.1f} %: too pessimistic. Most ordinary values still "
                f"land on a subnormal E4M3 value with one or two significant bits; only {flushed:.1f} % become 0")


# ------------------------------------------------------------------------------------------------ 9.2
def _dequant_cases():
    g = torch.Generator().manual_seed(9)
    for rows, cols, block in DEQUANT_CASES:
        w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g))
        q, s = fp8.quantize_blocks(w, block)
        yield q, s, block, fp8.dequantize_blocks(q, s, block)


class _LibraryOff(RuntimeError):
    pass


@contextlib.contextmanager
def _library_dequantize_off():
    """Inside the checker the library's dequantize functions raise: the exercise is to write one."""
    from dsv3_lessons.tools import hf_compat

    def off(*args, **kwargs):
        raise _LibraryOff("the library's dequantize is switched off inside this checker")

    saved = [(fp8, "dequantize_blocks"), (fp8, "dequantize_tiles"), (fp8, "dequantize_per_tensor"),
             (fp8, "fake_quantize"), (hf_compat, "dequantize_block_fp8")]
    originals = [getattr(m, n) for m, n in saved]
    try:
        for m, n in saved:
            setattr(m, n, off)
        yield
    finally:
        for (m, n), f in zip(saved, originals):
            setattr(m, n, f)


def _spread(s, rows, cols, br, bc):
    return s.float().repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]


def _swapped(got, q, s, br, bc) -> bool:
    """Whether ``got`` is q times the scales spread with the block sizes swapped (where that shape exists)."""
    rows, cols = q.shape
    spread = _spread(s, rows, cols, bc, br)
    return tuple(spread.shape) == (rows, cols) and torch.allclose(got, q.float() * spread, rtol=1e-5)


@checker("9.2", hint="element [r, c] belongs to exactly one block: which entry of scale_inv is its scale, and how "
                     "do you spread the scale grid over the elements when the last block row or column is cut off?",
         more=["block = (rows per block, columns per block): the two may differ, so treat each dimension on its own",
               "cell 18 went the other way: it padded w to whole blocks, viewed it as blocks and took one max per "
               "block. Undo those steps, or spread each scale over its block and cut the spread grid to q's shape",
               "the result is float32 and equals q times its own block's scale, element by element"])
def check_dequantize(fn):
    """Grade ``fn(q, scale_inv, block) -> float32 [rows, cols]`` on partial and non-square blocks."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (dequantize), not a {type(fn).__name__}")
    for q, s, (br, bc), right in _dequant_cases():
        rows, cols = q.shape
        try:
            with _library_dequantize_off():
                got = call_learner(fn, q.clone(), s.clone(), (br, bc))
        except _LibraryOff:
            raise Wrong("your function calls the library's dequantize, which is switched off here: write it with "
                        "tensor operations (the exercise is what that function does)") from None
        except RuntimeError as exc:
            if br == bc:
                raise
            raise Wrong(f"the 128×128 cases passed, but on {rows}×{cols} in {br}×{bc} blocks your function raised "
                        f"RuntimeError ({exc}): rows go in groups of block[0] = {br}, columns in groups of "
                        f"block[1] = {bc}") from None
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != (rows, cols):
            raise Wrong(f"for q of shape {(rows, cols)} in {br}×{bc} blocks you returned shape {tuple(got.shape)}: "
                        f"the spread scale grid must be cut to q's shape, since the last block row/column is partial")
        if got.dtype != torch.float32:
            raise Wrong(f"your result is {got.dtype}, and the values may be right: the exercise asks for float32. "
                        + ("A bf16/fp16 result rounds every weight again (8 or 11 significant bits); "
                           if got.dtype in (torch.bfloat16, torch.float16) else "")
                        + "compute in float32: q.float() times the scales")
        if torch.equal(got, right):
            continue
        if torch.equal(got, q.float()):
            raise Wrong("you returned q.float(): the scales were never applied")
        if torch.allclose(got, q.float() / _spread(s, rows, cols, br, bc), rtol=1e-5):
            raise Wrong("you divided by weight_scale_inv: despite its name it is s = amax/448, the factor to "
                        "MULTIPLY by")
        if br != bc and _swapped(got, q, s, br, bc):
            raise Wrong(f"with {br}×{bc} blocks, rows go in groups of {br} and columns in groups of {bc}: your block "
                        f"sizes are swapped")
        bad = (got - right).abs() > 1e-6 * right.abs().clamp(min=1e-12)
        r, c = (int(i) for i in bad.nonzero()[0])
        raise Wrong(f"values differ for q of shape {(rows, cols)} in {br}×{bc} blocks, first at element [{r}, {c}]: "
                    f"you give {got[r, c].item():.4g}, q·s gives {right[r, c].item():.4g} (that element's block is "
                    f"row block {r // br}, column block {c // bc})")
    cases = ", ".join(f"{r}×{c} in {b[0]}×{b[1]}" for r, c, b in DEQUANT_CASES)
    return f"equals q·s block by block on {cases} (partial blocks in both dimensions included)."


# ------------------------------------------------------------------------------------------------ 9.3
def _pow2_cases():
    g = torch.Generator().manual_seed(93)
    for rows, cols in ((200, 300), (128, 128), (70, 260)):
        w = torch.randn(rows, cols, generator=g) * torch.exp(2 * torch.randn(rows, 1, generator=g))
        if rows == 200:
            w[:128, :128] = 0                                    # an all-zero block
        yield w


@checker("9.3", hint="run the function on a small weight and compare q times the returned scale with w, block by "
                     "block: which line makes q and the returned scale disagree?",
         more=["a power-of-two scale pays off only if the SAME scale is used to quantize and to dequantize",
               "read the lines in order: at the moment q is computed, is s already the scale that is returned?"])
def check_pow2_quantizer(fn):
    """Grade the fixed ``quantize_blocks_pow2(w, block=128) -> (q, scale_inv)`` against
    ``fp8.quantize_blocks(w, power_of_two=True)``."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (quantize_blocks_pow2), not a {type(fn).__name__}")
    for w in _pow2_cases():
        out = call_learner(fn, w.clone())
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise Wrong("return the pair (q, scale_inv) of tensors, as the function did")
        q, s = out
        q_ref, s_ref = fp8.quantize_blocks(w, power_of_two=True)
        if tuple(q.shape) != tuple(w.shape) or tuple(s.shape) != tuple(s_ref.shape):
            raise Wrong(f"shapes changed: q {tuple(q.shape)} (want {tuple(w.shape)}), scale_inv {tuple(s.shape)} "
                        f"(want {tuple(s_ref.shape)}); fix one line, keep the rest")
        if q.dtype != torch.float8_e4m3fn:
            raise Wrong(f"q must stay torch.float8_e4m3fn, got {q.dtype}")
        s = s.float()
        if not torch.isfinite(q.float()).all() or not torch.isfinite(s).all():
            raise Wrong("NaN or inf in the result: an all-zero block needs its amax floor (clamp(min=1e-4)) before "
                        "the division")
        if not torch.equal(torch.exp2(torch.round(torch.log2(s))), s):
            raise Wrong("the returned scales are not powers of two any more: the fix keeps the rounding to a power "
                        "of two and changes WHEN it happens")
        if torch.equal(s, s_ref / 2):
            raise Wrong("the scales are rounded DOWN: amax/s then exceeds 448 and the largest values are clamped; a "
                        "power-of-two scale must be rounded up")
        if torch.equal(s, s_ref) and not torch.equal(q.float(), q_ref.float()):
            worst = (s / fp8.quantize_blocks(w)[1]).max().item()      # how much a block comes back too large
            raise Wrong(f"q and the returned scale_inv do not belong together: dequantized, whole blocks of "
                        f"q·scale_inv come back up to {worst:.2f}× the original weight, although every scale is a "
                        f"power of two and every shape is right")
        if not (torch.equal(q.float(), q_ref.float()) and torch.equal(s, s_ref)):
            raise Wrong("q or scale_inv differ from a power-of-two block quantizer (scale rounded up to 2^k before "
                        "x/s, clamp to ±448, then the cast)")
    return ("q and its power-of-two scale now agree: q·scale_inv reproduces w up to E4M3 rounding, and multiplying "
            "by a power of two is exact (V3 §3.3.3 rounds scales this way where activations are re-quantized).")


# ------------------------------------------------------------------------------------------------ 9.4
@checker("9.4", hint="after each addition keep only 4 bits after the leading 1 and drop the rest (truncate); "
                     "what is the spacing of such numbers between 1 and 2?",
         more=["1 + 1/32 in binary is 1.00001", "with 4 bits after the binary point, what is left of 1.00001?"])
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
    if x in (1 + 1 / 16, 1 + 1 / 32):
        raise Wrong("one addend survived? Each addition is truncated on its own: 1 + 1/32 → 1 every time")
    if x == 1.5:
        raise Wrong("that rounds to nearest once at the end; here each addition truncates")
    if x == 1.25 - 1 / 32 or x == 1.125:
        raise Wrong("the addends do not pile up in a separate register first: each one is added to the running "
                    "sum and the result truncated at once")
    raise Wrong(f"{x:g} is not right: step through 1 + 1/32, truncate to 4 mantissa bits, repeat")
