"""Exercise checkers of chapter 09 (FP8 training with fine-grained quantization).

Pattern: :mod:`dsv3_lessons.course.common.checking` -- never raise; "not attempted yet" + a nudge for the
placeholder ``___``, a ✗ diagnosis for a wrong answer (pointing to ``hint("9.N")`` for the next hint), ✓ for a
right one. Right answers are computed here from :mod:`dsv3_lessons.model.fp8` (or closed-form arithmetic),
never typed in; the formulas live in the worked solutions only. Every diagnosis that names a mistake is
computed by simulating that mistake (``SWAMP_MISTAKES``, the wrong dequantizers of 9.2), so a diagnosis can only
fire for the answer the mistake really gives.

* 9.1 (predict, then run) the per-tensor error of the ordinary values next to 4 outlier channels, predicted
  before the cell that measures it (the cell shows its number only once a prediction is written);
* 9.2 (variation, code) ``dequantize_rows(q_rows, scale_inv, start)``: the rows of one tensor-parallel shard of a
  block-quantized weight, whose first row need not start a block (V3's ``q_b_proj`` has 192 rows per head); the
  library's dequantize functions are switched off while it runs;
* 9.3 (bug hunt, code) a block quantizer that takes its block maxima with ``adaptive_max_pool2d``: right on
  every shape that is a multiple of 128 (the author's test), wrong on partial blocks (SPEC §9, "block grid for
  non-divisible shapes"); the ✗ on the unfixed code states the symptom only, and so does the ✗ on a "fix" whose
  grid rounds down (``n // 128``, ``int(n / 128)``, pooling without the partial window): which rows and columns
  lie in no block;
* 9.4 (by hand, two steps) a 4-bit truncating accumulator with promotion every 8 terms summing 1 and 63 × 1/32:
  swamping inside the first chunk, exact sums in the fresh ones.
"""
from __future__ import annotations

import contextlib
import re

import torch

from dsv3_lessons.model import fp8
from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker,  # noqa: F401
                                                 hint, is_placeholder)

__all__ = ["___", "hint", "check_outlier_prediction", "check_dequantize_rows", "check_block_quantizer",
           "check_promoted_sum", "SWAMP_BITS", "SWAMP_TERMS", "SWAMP_PROMOTE", "SWAMP_MISTAKES", "ROW_SLICE_CASES",
           "QUANTIZER_SHAPES"]

# ------------------------------------------------------------------------------------------------ 9.1
@checker("9.1", hint="with one scale set by channels 10,000 times larger, where in E4M3's range does an ordinary "
                     "value of 1 land after dividing by s, and how fine is the grid of E4M3 values there?",
         more=["the cell after the outliers were made printed what an ordinary value of 1 becomes after dividing "
               "by s: place it in section 1's table, between E4M3's smallest subnormal and its smallest normal value",
               "below the smallest normal value the grid no longer scales with the value: its spacing is fixed, "
               "so the relative rounding error of a small value is large",
               "values below half the smallest subnormal become 0: each counts as a 100 % error in the mean"])
def check_outlier_prediction(predicted_percent, measured):
    """``predicted_percent``: the learner's prediction, in %; ``measured``: the run's per-tensor
    :class:`~dsv3_lessons.course.ch09_fp8.experiments.ErrorReport` (ordinary channels)."""
    x = as_number(predicted_percent, "your prediction (in %)")
    got = 100 * measured.rel_error
    flushed = 100 * measured.underflow
    e4m3 = fp8.format_info("e4m3")
    worst_normal = 100 * e4m3.relative_step / 2          # 6.25 %: the largest rounding error of a normal value
    if x <= 0:
        raise Wrong(f"an error is positive: the run measured {got:.1f} %")
    if 1 / 1.5 <= x / got <= 1.5:
        return (f"you predicted {x:.3g} %, the run measured {got:.1f} %. One scale for the whole tensor pushes the "
                f"ordinary values into E4M3's subnormal range, where the grid spacing is fixed: the rounding error "
                f"is large relative to small values, and {flushed:.1f} % of them became exactly 0.")
    if x < 1 and 1 / 1.5 <= 100 * x / got <= 1.5:
        raise Wrong(f"{x:g} looks like a fraction; the prediction is in percent ({100 * x:g} %?). The run "
                    f"measured {got:.1f} %")
    if abs(x - worst_normal) <= 0.3:
        raise Wrong(f"{worst_normal:g} % is the largest rounding error of a value in E4M3's NORMAL range (half its "
                    f"relative step), the bound of section 1. The run measured a mean of {got:.1f} %: the ordinary "
                    f"values are not in the normal range any more. After dividing by s = amax/448 they sit below "
                    f"E4M3's smallest normal value, where that bound does not hold, and {flushed:.1f} % of them "
                    f"became 0 (100 % error each)")
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
#: (rows, cols, start, length) of the shards the checker dequantizes: an aligned head first, then heads of 192 rows
#: that start inside a block, a shard inside one block, one across four block rows, one in the partial last block.
ROW_SLICE_CASES = ((576, 300, 0, 192), (576, 300, 192, 192), (576, 300, 384, 192), (400, 200, 130, 50),
                   (400, 130, 100, 300), (300, 64, 256, 44))


def _row_slice_cases():
    g = torch.Generator().manual_seed(92)
    for rows, cols, start, length in ROW_SLICE_CASES:
        w = torch.randn(rows, cols, generator=g) * torch.exp(1.5 * torch.randn(rows, 1, generator=g))
        q, s = fp8.quantize_blocks(w)
        yield q, s, start, length, fp8.dequantize_blocks(q, s)[start:start + length]


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


def _scales_from(s: torch.Tensor, first_block_row: int, offset: int, length: int, cols: int) -> torch.Tensor:
    """Each element's scale when the shard's row i is taken to lie ``offset + i`` rows into block row
    ``first_block_row`` (offset = start % 128 is right; 0 is the usual mistake)."""
    rows = (first_block_row + (offset + torch.arange(length)) // fp8.BLOCK).clamp(max=s.shape[0] - 1)
    return s.float()[rows].repeat_interleave(fp8.BLOCK, dim=1)[:, :cols]


@checker("9.2", hint="row i of q_rows is row start + i of the whole weight: which entry of scale_inv belongs to "
                     "it, and does the answer change when start is not a multiple of 128?",
         more=["write down, for start = 192, which block row holds the shard's first row, and how many of the "
               "shard's rows still belong to that block",
               "the block rows are counted from row 0 of the WHOLE weight, not from the first row of the shard",
               "the result is float32 and equals each element of q_rows times its own block's scale; the last "
               "block column may be narrower than 128"])
def check_dequantize_rows(fn):
    """Grade ``fn(q_rows, scale_inv, start) -> float32 [len(q_rows), cols]`` on the shards of
    :data:`ROW_SLICE_CASES`."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (dequantize_rows), not a {type(fn).__name__}")
    aligned_ok = False
    for q, s, start, length, right in _row_slice_cases():
        q_rows = q[start:start + length]
        rows, cols = q.shape
        where = f"rows {start}…{start + length - 1} of a {rows}×{cols} weight (start = {start})"
        try:
            with _library_dequantize_off():
                got = call_learner(fn, q_rows.clone(), s.clone(), start)
        except _LibraryOff:
            raise Wrong("your function calls the library's dequantize, which is switched off here: write it with "
                        "tensor operations (the exercise is what that function does)") from None
        except NotImplementedError:
            raise
        except (RuntimeError, IndexError) as exc:
            part = f"; the last block column is {cols % fp8.BLOCK} wide" if cols % fp8.BLOCK else ""
            raise Wrong(f"on {where}, your function raised {type(exc).__name__} ({exc}). The shard spans block "
                        f"rows {start // fp8.BLOCK}…{(start + length - 1) // fp8.BLOCK} of scale_inv "
                        f"{tuple(s.shape)}{part}") from None
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != (length, cols):
            extra = (" (the whole weight? return only the shard's rows)" if got.shape[0] != length else
                     f" (the spread scale grid has {s.shape[1] * fp8.BLOCK} columns: cut it to the weight's {cols})")
            raise Wrong(f"on {where} you returned shape {tuple(got.shape)}, want {(length, cols)}{extra}")
        if got.dtype != torch.float32 and torch.equal(got.float(), q_rows.float()):
            raise Wrong(f"you returned the stored {got.dtype} values themselves: the scales were never applied. "
                        f"Dequantizing multiplies each element by its block's scale, in float32")
        if got.dtype != torch.float32:
            raise Wrong(f"your result is {got.dtype}, and the values may be right: the exercise asks for float32. "
                        + ("A bf16/fp16 result rounds every weight again (8 or 11 significant bits); "
                           if got.dtype in (torch.bfloat16, torch.float16) else "")
                        + "compute in float32: q_rows.float() times the scales")
        if torch.equal(got, right):
            aligned_ok = aligned_ok or start % fp8.BLOCK == 0
            continue
        if torch.equal(got, q_rows.float()):
            raise Wrong("you returned q_rows.float(): the scales were never applied")
        scales = _scales_from(s, start // fp8.BLOCK, start % fp8.BLOCK, length, cols)
        if torch.allclose(got, q_rows.float() / scales, rtol=1e-5):
            raise Wrong("you divided by weight_scale_inv: despite its name it is s = amax/448, the factor to "
                        "MULTIPLY by")
        local = q_rows.float() * _scales_from(s, start // fp8.BLOCK, 0, length, cols)
        from_zero = q_rows.float() * _scales_from(s, 0, 0, length, cols)
        first_bad = int(((got - right).abs() > 1e-6 * right.abs().clamp(min=1e-12)).any(dim=1).nonzero()[0])
        if torch.allclose(got, local, rtol=1e-6):
            raise Wrong(f"right when start is a multiple of 128{' (the first shards passed)' if aligned_ok else ''}, "
                        f"but on {where} your scales are shifted by {start % fp8.BLOCK} rows: you count the shard's "
                        f"rows in blocks of 128 from its own first row, first wrong at shard row {first_bad} "
                        f"(global row {start + first_bad}, which lies in block row {(start + first_bad) // fp8.BLOCK})")
        one_row = q_rows.float() * _scales_from(s, start // fp8.BLOCK, 0, 1, cols).expand(length, cols)
        if torch.allclose(got, one_row, rtol=1e-6):
            raise Wrong(f"on {where} every row of your shard gets the scales of one block row, the one its first "
                        f"row lies in; from shard row {first_bad} on (global row {start + first_bad}) the rows lie "
                        f"in the next block row, with other scales")
        if torch.allclose(got, from_zero, rtol=1e-6):
            raise Wrong(f"on {where} your shard uses the scales of block rows 0, 1, … as if it started at row 0 of the "
                        f"weight: start says where it really starts")
        c = int(((got[first_bad] - right[first_bad]).abs() > 1e-6 * right[first_bad].abs().clamp(min=1e-12))
                .nonzero()[0])
        raise Wrong(f"values differ on {where}, first at shard element [{first_bad}, {c}]: you give "
                    f"{got[first_bad, c].item():.4g}, q·s gives {right[first_bad, c].item():.4g} (global row "
                    f"{start + first_bad}, column {c})")
    cases = ", ".join(f"rows {st}…{st + n - 1} of {r}×{c}" for r, c, st, n in ROW_SLICE_CASES)
    return (f"equals q·s on every shard ({cases}): block rows are counted from row 0 of the whole weight, so a "
            f"shard that starts inside a block begins with that block's scale.")


# ------------------------------------------------------------------------------------------------ 9.3
#: shapes the checker quantizes: the author's (multiples of 128) first, then partial blocks in rows, in columns,
#: in both, and a weight with an all-zero block.
QUANTIZER_SHAPES = ((256, 384), (576, 300), (130, 1024), (1024, 200), (384, 256))


def _quantizer_cases():
    g = torch.Generator().manual_seed(93)
    for rows, cols in QUANTIZER_SHAPES:
        w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g))
        if (rows, cols) == (384, 256):
            w[128:256, :128] = 0                                     # an all-zero block
        yield w


def _divisible(shape) -> bool:
    return all(n % fp8.BLOCK == 0 for n in shape)


def _dropped_edges(shape, error: str | None) -> str | None:
    """The diagnosis of a block grid that rounds DOWN (``n // 128``, ``int(n / 128)``, pooling without the last
    partial window): the rows and columns past the last whole block get no block, hence no scale. ``error``: the
    message of the exception the learner's function raised (it names the short extent, a multiple of 128), or None
    when the grid was returned (its shape already says so). None when the symptom does not fit."""
    short = [(n // fp8.BLOCK) * fp8.BLOCK for n in shape]
    partial = [n % fp8.BLOCK for n in shape]
    sizes = set(short) if error is None else {int(x) for x in re.findall(r"\d+", error)}
    dropped = [bool(p) and n in sizes for p, n in zip(partial, short)]
    if not any(dropped):
        return None
    if error is None:
        dropped = [bool(p) for p in partial]
    edges = [f"the last {p} {what}" for p, what, d in zip(partial, ("rows", "columns"), dropped) if d]
    return (f"your block grid stops at the last whole block, so {' and '.join(edges)} lie in no block: nothing "
            f"ever computes their maximum, and they get no scale (the checkpoint's grid keeps the partial "
            f"block at each edge, smaller than 128 but a block of its own)")


@checker("9.3", hint="the author tested one shape. Run the function on other shapes and compare q·scale_inv with "
                     "the weight (or scale_inv with the library's) block by block: where does it go wrong first?",
         more=["try a weight of 576×300 (V3's kv_a_proj_with_mqa has 576 rows): compare scale_inv with "
               "fp8.quantize_blocks(w)[1] and find the first block whose scale differs",
               "for that block, which rows and columns did its maximum come from? Check the line that computes "
               "amax on a weight whose entries are their own row index (torch.arange(576.)[:, None] "
               "* torch.ones(1, 300))",
               "section 3 built the blocks another way: every block 128 rows and 128 columns, the last ones shorter"])
def check_block_quantizer(fn):
    """Grade the fixed ``quantize_weight_fp8(w) -> (q, scale_inv)`` against ``fp8.quantize_blocks(w)`` on
    :data:`QUANTIZER_SHAPES`; for the unfixed function the ✗ states the symptom, never the cause."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (quantize_weight_fp8), not a {type(fn).__name__}")
    for w in _quantizer_cases():
        shape = f"{w.shape[0]}×{w.shape[1]}"
        try:
            out = call_learner(fn, w.clone())
        except NotImplementedError:
            raise
        except (RuntimeError, IndexError) as exc:
            dropped = _dropped_edges(w.shape, str(exc))
            if dropped:
                raise Wrong(f"on a {shape} weight your function raised {type(exc).__name__} ({exc}): {dropped}") \
                    from None
            raise Wrong(f"on a {shape} weight your function raised {type(exc).__name__} ({exc}); the checkpoint's "
                        f"grid for it is ⌈rows/128⌉ × ⌈cols/128⌉ = {fp8.block_grid(w.shape)}") from None
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise Wrong("return the pair (q, scale_inv) of tensors, as the function did")
        q, s = out
        q_ref, s_ref = fp8.quantize_blocks(w)
        if tuple(q.shape) != tuple(w.shape) or tuple(s.shape) != tuple(s_ref.shape):
            grid = tuple(s.shape)
            if len(grid) == 2 and grid == tuple(n // fp8.BLOCK for n in w.shape) != tuple(s_ref.shape):
                raise Wrong(f"on a {shape} weight your scale_inv is {grid[0]} × {grid[1]}: "
                            + _dropped_edges(w.shape, None))
            if len(grid) == 2 and _divisible(w.shape) and grid == tuple(n // fp8.BLOCK + 1 for n in w.shape):
                raise Wrong(f"on a {shape} weight (a multiple of 128 both ways) your scale_inv is {grid[0]} × "
                            f"{grid[1]}: one block row and one block column more than the weight has, each "
                            f"covering no element at all. A weight that divides evenly has no partial block")
            raise Wrong(f"on a {shape} weight: q {tuple(q.shape)} (want {tuple(w.shape)}), scale_inv "
                        f"{tuple(s.shape)} (the checkpoint's grid is ⌈rows/128⌉ × ⌈cols/128⌉ = {tuple(s_ref.shape)})")
        if q.dtype != torch.float8_e4m3fn:
            raise Wrong(f"q must stay torch.float8_e4m3fn, got {q.dtype}")
        s = s.float()
        if not torch.isfinite(q.float()).all() or not torch.isfinite(s).all():
            raise Wrong(f"NaN or inf in the result on a {shape} weight that has an all-zero block: its amax needs "
                        f"the floor (clamp(min=1e-4)) before the division")
        if torch.equal(q.float(), q_ref.float()) and torch.equal(s, s_ref):
            continue
        back = q.float() * s.repeat_interleave(fp8.BLOCK, 0)[:w.shape[0]].repeat_interleave(fp8.BLOCK, 1)[:, :w.shape[1]]
        s_full = s_ref.repeat_interleave(fp8.BLOCK, 0)[:w.shape[0]].repeat_interleave(fp8.BLOCK, 1)[:, :w.shape[1]]
        large = w.abs() >= 448 * s_full / 4           # a quarter of the block maximum or more: normal range
        worst = ((back - w).abs() / w.abs())[large].max().item()
        blocks = int((s != s_ref).sum())
        if torch.equal(s, s_ref):
            raise Wrong(f"on a {shape} weight scale_inv now equals the library's, but q differs in "
                        f"{int((q.float() != q_ref.float()).sum())} elements: each element must be divided by its own "
                        f"block's scale before the cast")
        tested = "" if not _divisible(w.shape) else " (a multiple of 128 both ways)"
        raise Wrong(f"on a {shape} weight{tested}, scale_inv differs from the library's in {blocks} of {s.numel()} "
                    f"blocks, and q·scale_inv comes back up to {worst:.0%} away from w among the larger elements "
                    f"(E4M3 rounding allows 6.25%). "
                    + (f"On the author's {QUANTIZER_SHAPES[0][0]}×{QUANTIZER_SHAPES[0][1]} everything agrees."
                       if (w.shape[0], w.shape[1]) != QUANTIZER_SHAPES[0] else ""))
    shapes = ", ".join(f"{r}×{c}" for r, c in QUANTIZER_SHAPES)
    return (f"q and scale_inv equal the library's on {shapes} (partial blocks in rows, columns and both, and an "
            f"all-zero block): every block is 128 rows by 128 columns except the last ones, as the checkpoint's "
            f"grid ⌈rows/128⌉ × ⌈cols/128⌉ says.")


# ------------------------------------------------------------------------------------------------ 9.4
#: exercise 9.4: mantissa bits kept, the terms summed left to right and the promotion interval.
SWAMP_BITS = 4
SWAMP_TERMS = [1.0] + [1 / 32] * 63
SWAMP_PROMOTE = 8


def _swamp(**kwargs) -> float:
    terms = torch.tensor(kwargs.pop("terms", SWAMP_TERMS))[:, None]
    return fp8.limited_precision_sum(terms, SWAMP_BITS, **kwargs).item()


#: the mistakes 9.4's checker names, each with the value it gives, computed by simulating it.
SWAMP_MISTAKES = {
    "no promotion": _swamp(),                                                   # one accumulator all the way
    "exact": sum(SWAMP_TERMS),                                                  # ignoring the 4 bits
    "round to nearest": _swamp(promote_every=SWAMP_PROMOTE, mode="nearest"),    # halves away from zero
    "first chunk lost": _swamp(terms=[0.0] * 8 + SWAMP_TERMS[8:], promote_every=SWAMP_PROMOTE),
    # the 1 not counted among the first chunk's 8 terms: a first chunk of 1 + 8 × 1/32, then chunks of 8
    "nine-term first chunk": _swamp(terms=SWAMP_TERMS[:SWAMP_PROMOTE + 1])
                             + _swamp(terms=SWAMP_TERMS[SWAMP_PROMOTE + 1:], promote_every=SWAMP_PROMOTE),
}


@checker("9.4", hint="follow the accumulator chunk by chunk: what does it hold after the first 8 terms, and what "
                     "does a fresh accumulator hold after 8 terms of 1/32?",
         more=["near 1, numbers with 4 bits after the leading 1 are spaced 1/16 apart; 1 + 1/32 in binary is "
               "1.00001", "after a promotion the accumulator starts again from 0: is 1/32 + 1/32 representable "
               "with 4 mantissa bits? And 8/32?", "add what the 8 chunks hand to FP32"])
def check_promoted_sum(answer):
    x = as_number(answer, "the total")
    right = _swamp(promote_every=SWAMP_PROMOTE)
    m = SWAMP_MISTAKES
    if x == right:
        chunk = SWAMP_PROMOTE / 32
        return (f"{right:g}: the first chunk starts at 1, where the spacing is 1/16 and every 1/32 is truncated away "
                f"(the chunk hands over 1, losing {SWAMP_PROMOTE - 1}/32); each later chunk starts from 0, where "
                f"1/32 is not small, and hands over exactly {chunk:g}. Promotion bounds the loss to one chunk; it "
                f"cannot undo swamping inside a chunk that starts large (exact: {m['exact']:g}, no promotion: "
                f"{m['no promotion']:g}).")
    if x == m["no promotion"]:
        raise Wrong(f"{x:g} is what ONE accumulator ends with: after the 1 every 1/32 is truncated away. But every "
                    f"{SWAMP_PROMOTE} terms the partial sum goes to FP32 and the accumulator restarts from 0: what "
                    f"does a fresh accumulator make of 1/32 + 1/32 + …?")
    if x == m["exact"]:
        raise Wrong(f"{x:g} is the exact sum. Promotion does not make the accumulator exact: inside the first chunk "
                    f"the running sum starts at 1, and the 4 bits still truncate there")
    if x == m["round to nearest"]:
        raise Wrong(f"{x:g} is what rounding to nearest (halves away from zero) would give: 1 + 1/32 lies exactly "
                    f"halfway between 1 and 1 + 1/16 and would go up each time. This accumulator truncates: it drops "
                    f"the bits it cannot keep")
    if x == m["first chunk lost"]:
        raise Wrong(f"the first chunk does not hand over 0: the 1 is the first term of an empty accumulator and is "
                    f"kept exactly; only the 1/32s after it are lost")
    if x == m["nine-term first chunk"]:
        raise Wrong(f"{x:g} is what you get when the 1 starts the sum and {SWAMP_PROMOTE} terms of 1/32 follow "
                    f"before the first promotion: the 1 is itself one of the first chunk's {SWAMP_PROMOTE} terms, "
                    f"so one more 1/32 lands in a fresh accumulator")
    raise Wrong(f"{x:g} is not it: take the chunks of {SWAMP_PROMOTE} terms one at a time, truncating to "
                f"{SWAMP_BITS} mantissa bits after every addition, and add what each chunk hands to FP32")
