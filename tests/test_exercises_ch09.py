"""Chapter 9 checkers: placeholder -> not attempted + a nudge (never the formula); typical wrong answers -> their
diagnosis; right -> ✓. The bug hunt's unfixed code and the author's test are read from the notebook cells
themselves, so the test sees the text the learner sees. Oracles: fp8.quantize_blocks / dequantize_blocks and hand
arithmetic."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, _SHOWN, hint
from dsv3_lessons.course.ch09_fp8 import exercises as ex
from dsv3_lessons.course.ch09_fp8.experiments import error_report, outlier_activations
from exercise_helpers import assert_stored_unattempted, assert_wrong, notebook_cell, output_texts
from dsv3_lessons.model import fp8

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "09_fp8_training.ipynb"


# ------------------------------------------------------------------------------------------------ 9.1
@pytest.fixture(scope="module")
def measured():
    x, outliers = outlier_activations(tokens=256, channels=512, outlier=1e4, n_outliers=4)
    return error_report(x, outliers, "tensor")


def test_91_prediction(measured):
    r = ex.check_outlier_prediction(ex.___, measured)
    assert r.status == NOT_ATTEMPTED and "subnormal" not in r.message and "%" not in r.message   # a nudge only
    got = 100 * measured.rel_error
    assert 13 < got < 16                                                # the chapter's setting
    assert ex.check_outlier_prediction(round(got), measured).status == RIGHT
    assert ex.check_outlier_prediction(1.3 * got, measured).status == RIGHT     # within a factor 1.5
    normal = ex.check_outlier_prediction(2.5, measured)                 # E4M3's normal-range error
    assert_wrong(normal, "normal range", "became 0")
    fraction = ex.check_outlier_prediction(got / 100, measured)
    assert_wrong(fraction, "percent")
    assert_wrong(ex.check_outlier_prediction(90, measured), "too pessimistic")
    assert ex.check_outlier_prediction(-3, measured).status == WRONG
    assert ex.check_outlier_prediction("14", measured).status == WRONG
    assert "hint(\"9.1\")" in str(normal)


def test_91_the_bound_printed_in_section_1_gets_its_own_diagnosis(measured):
    """Learner report: 6.25 (the one number printed in section 1) got the generic message."""
    bound = 100 * fp8.format_info("e4m3").relative_step / 2
    assert bound == 6.25
    r = ex.check_outlier_prediction(6.25, measured)
    assert_wrong(r, "largest rounding error", "NORMAL range", "smallest normal", "became 0")


def test_91_hint_ladder_never_states_the_answer(capsys):
    _SHOWN.pop("9.1", None)
    texts = [hint("9.1") for _ in range(len(ex.check_outlier_prediction.more) + 1)]
    assert texts[0].startswith("Hint 1/3") and "solutions" in texts[-1]
    assert not any("14" in t for t in texts)


def test_91_stored_chapter_hides_the_measurement_until_predicted(measured):
    """The stored notebook (prediction still ___) shows no per-tensor error anywhere, only the hidden note; the
    tile and block rows, which are not the answer, are shown."""
    texts = output_texts(NOTEBOOK)
    number = f"{measured.rel_error:.2%}"
    assert not any(number in t or f"{100 * measured.rel_error:.1f} %" in t for t in texts)
    assert sum("Hidden until you predict" in t and "9.1" in t for t in texts) == 2
    assert any("1×128 tiles" in t and "per tensor" not in t for t in texts)


# ------------------------------------------------------------------------------------------------ 9.2
def _right_rows(q_rows, s, start):
    r = torch.arange(start, start + q_rows.shape[0]) // 128
    return q_rows.float() * s.float()[r].repeat_interleave(128, 1)[:, :q_rows.shape[1]]


def _spread_from(s, first, n, cols):
    return s.float()[first:].repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)[:, :cols]


def test_92_dequantize_rows():
    assert ex.check_dequantize_rows(ex.___).status == NOT_ATTEMPTED
    stub = notebook_cell(NOTEBOOK, "def dequantize_rows")
    scope = {"check_dequantize_rows": lambda fn: None, "torch": torch}
    body = stub.split("\n")
    while not body[0].startswith("def "):                              # the stored cell, without its import
        body.pop(0)
    exec("\n".join(body), scope)
    assert ex.check_dequantize_rows(scope["dequantize_rows"]).status == NOT_ATTEMPTED
    assert ex.check_dequantize_rows(lambda q, s, st: q.float() * ex.___).status == NOT_ATTEMPTED
    r = ex.check_dequantize_rows(_right_rows)
    assert r.status == RIGHT and "row 0 of the whole weight" in r.message


def test_92_the_shard_counted_as_its_own_matrix_is_named():
    """The usual mistake: blocks counted from the shard's first row. Right on aligned shards, wrong on 192."""
    local = lambda q, s, st: q.float() * _spread_from(s, st // 128, q.shape[0], q.shape[1])
    r = ex.check_dequantize_rows(local)
    assert_wrong(r, "multiple of 128", "shifted by 64 rows", "start = 192")
    from_zero = lambda q, s, st: q.float() * _spread_from(s, 0, q.shape[0], q.shape[1])
    assert_wrong(ex.check_dequantize_rows(from_zero), "as if it started at row 0")
    one_block_row = lambda q, s, st: q.float() * s.float()[st // 128].repeat_interleave(128)[:q.shape[1]]
    assert_wrong(ex.check_dequantize_rows(one_block_row), "start = 0", "scales of one block row",
                 "from shard row 128 on (global row 128)")


def test_92_other_mistakes_are_named():
    uncropped = lambda q, s, st: q.float() * s.float()[torch.arange(st, st + q.shape[0]) // 128].repeat_interleave(128, 1)
    assert_wrong(ex.check_dequantize_rows(uncropped), "RuntimeError", "last block column is 44 wide")
    divide = lambda q, s, st: q.float() / (_right_rows(torch.ones_like(q.float()), s, st))
    assert_wrong(ex.check_dequantize_rows(divide), "MULTIPLY")
    assert_wrong(ex.check_dequantize_rows(lambda q, s, st: q.float()), "never applied")
    assert_wrong(ex.check_dequantize_rows(lambda q, s, st: q), "stored torch.float8_e4m3fn values themselves")
    bf16 = ex.check_dequantize_rows(lambda q, s, st: _right_rows(q, s, st).to(torch.bfloat16))
    assert_wrong(bf16, "torch.bfloat16", "float32")
    whole = ex.check_dequantize_rows(lambda q, s, st: torch.zeros(s.shape[0] * 128, q.shape[1]))
    assert_wrong(whole, "return only the shard's rows")
    assert_wrong(ex.check_dequantize_rows("dequantize_rows"), "pass your function")


def test_92_library_call_is_blocked_and_restored():
    from dsv3_lessons.tools import hf_compat

    def lib(q_rows, s, start):
        full = torch.zeros(s.shape[0] * 128, q_rows.shape[1], dtype=q_rows.dtype)
        full[start:start + q_rows.shape[0]] = q_rows
        return fp8.dequantize_blocks(full[:s.shape[0] * 128], s)[start:start + q_rows.shape[0]]
    assert_wrong(ex.check_dequantize_rows(lib), "switched off")
    q, s = fp8.quantize_blocks(torch.randn(130, 140))
    assert torch.isfinite(fp8.dequantize_blocks(q, s)).all()         # restored after the check
    assert torch.isfinite(hf_compat.dequantize_block_fp8(q, s)).all()


def test_92_cases_include_unaligned_partial_and_single_block_shards():
    starts = [(st, n, r, c) for r, c, st, n in ex.ROW_SLICE_CASES]
    assert any(st % 128 == 0 for st, *_ in starts) and any(st % 128 for st, *_ in starts)
    assert any(st // 128 == (st + n - 1) // 128 for st, n, *_ in starts)          # inside one block
    assert any((st + n - 1) // 128 - st // 128 >= 3 for st, n, *_ in starts)     # across four block rows
    assert any(c % 128 for *_, c in starts) and any(r % 128 for *_, r, c in starts)


# ------------------------------------------------------------------------------------------------ 9.3
def _exec_function(source: str, name: str = "quantize_weight_fp8"):
    scope = {"torch": torch, "math": math, "F": F, "check_block_quantizer": lambda fn: None}
    exec(source, scope)
    return scope[name]


def _unfixed_source() -> str:
    return notebook_cell(NOTEBOOK, "def quantize_weight_fp8")


def test_93_unfixed_notebook_code_passes_the_authors_test_and_fails_the_checker():
    buggy = _exec_function(_unfixed_source())
    author = notebook_cell(NOTEBOOK, "the author's test")
    scope = {"torch": torch, "quantize_weight_fp8": buggy, "check_block_quantizer": lambda fn: None}
    exec(author, scope)                                               # the author's test passes on the bug
    r = ex.check_block_quantizer(buggy)
    assert_wrong(r, "576×300", "differs from the library's", "6.25%", "everything agrees")
    for cause in ("adaptive", "pool", "cell", "equal", "115", "window", "pad"):
        assert cause not in r.message.lower(), cause                  # the symptom, never the cause
    assert "block grid" not in r.message


FIXES = {
    "max_pool2d with ceil_mode": ("F.adaptive_max_pool2d(weight.abs()[None], grid)[0]",
                                  "F.max_pool2d(weight.abs()[None], block, ceil_mode=True)[0]"),
    "pad, then adaptive": ("F.adaptive_max_pool2d(weight.abs()[None], grid)[0]",
                           "F.adaptive_max_pool2d(F.pad(weight.abs(), (0, grid[1] * block - C, 0, grid[0] * block - R))"
                           "[None], grid)[0]"),
    "section 3's view": ("F.adaptive_max_pool2d(weight.abs()[None], grid)[0]",
                         "F.pad(weight.abs(), (0, grid[1] * block - C, 0, grid[0] * block - R))"
                         ".view(grid[0], block, grid[1], block).amax(dim=(1, 3))"),
}


@pytest.mark.parametrize("fix", list(FIXES))
def test_93_fixes_are_right(fix):
    old, new = FIXES[fix]
    src = _unfixed_source()
    assert old in src
    r = ex.check_block_quantizer(_exec_function(src.replace(old, new)))
    assert r.status == RIGHT, r


def test_93_other_wrong_fixes_are_named():
    old, new = FIXES["max_pool2d with ceil_mode"]
    fixed = _unfixed_source().replace(old, new)
    no_floor = _exec_function(fixed.replace(".clamp(min=1e-4)", ""))
    assert_wrong(ex.check_block_quantizer(no_floor), "NaN", "all-zero block", "floor")
    floor_grid = _exec_function(fixed.replace("ceil_mode=True", "ceil_mode=False"))
    assert_wrong(ex.check_block_quantizer(floor_grid), "last 44 columns lie in no block", "get no scale")
    per_elem_wrong = _exec_function(fixed.replace("scale_inv.repeat_interleave(block, 0)[:R].repeat_interleave(block, 1)",
                                                  "scale_inv.repeat(block, block)[:R]"))   # tiled, not spread
    assert_wrong(ex.check_block_quantizer(per_elem_wrong), "scale_inv now equals the library's", "own block's scale")
    fp32 = _exec_function(fixed.replace(".to(torch.float8_e4m3fn)", ""))
    assert_wrong(ex.check_block_quantizer(fp32), "float8_e4m3fn")
    assert ex.check_block_quantizer(ex.___).status == NOT_ATTEMPTED
    assert_wrong(ex.check_block_quantizer(lambda w: w), "pair (q, scale_inv)")


FLOOR_GRIDS = {"R // block": "(R // block, C // block)", "int(R / block)": "(int(R / block), int(C / block))",
               "math.floor(R / block)": "(math.floor(R / block), math.floor(C / block))"}


@pytest.mark.parametrize("grid", list(FLOOR_GRIDS))
def test_93_a_grid_rounded_down_is_named_by_its_symptom(grid):
    """Learner report (round 2): a fix that takes the floor after the division got a generic ✗ (the RuntimeError
    and the checkpoint's grid formula). It now says which rows/columns lie in no block; no formula, no fix."""
    old = "(-(-R // block), -(-C // block))"
    src = _unfixed_source()
    assert old in src
    r = ex.check_block_quantizer(_exec_function(src.replace(old, FLOOR_GRIDS[grid])))
    assert_wrong(r, "576×300", "your block grid stops at the last whole block", "the last 44 columns lie in no block",
                 "get no scale")
    assert "⌈" not in r.message and "ceil" not in r.message and "//" not in r.message
    only_rows = _exec_function(src.replace(old, FLOOR_GRIDS[grid].replace("C / block", "C / block + 0.999")
                                           .replace("C // block", "-(-C // block)")))
    assert_wrong(ex.check_block_quantizer(only_rows), "the last 64 rows lie in no block")


def test_93_a_returned_grid_rounded_down_or_one_too_large_is_named():
    old = "(-(-R // block), -(-C // block))"
    src = _unfixed_source()
    line = "repeat_interleave(block, 1)[:, :C]\n"
    padded_s = src.replace(line, line + "    s = F.pad(s, (0, C - s.shape[1], 0, R - s.shape[0]), value=1.0)\n")
    assert padded_s != src
    r = ex.check_block_quantizer(_exec_function(padded_s.replace(old, "(R // block, C // block)")))
    assert_wrong(r, "scale_inv is 4 × 2", "the last 64 rows and the last 44 columns lie in no block")
    r = ex.check_block_quantizer(_exec_function(src.replace(old, "(R // block + 1, C // block + 1)")))
    assert_wrong(r, "256×384 weight (a multiple of 128 both ways)", "scale_inv is 3 × 4", "covering no element")
    r = ex.check_block_quantizer(_exec_function(src.replace("F.adaptive_max_pool2d(weight.abs()[None], grid)[0]",
                                                            "F.max_pool2d(weight.abs()[None], block)[0]")))
    assert_wrong(r, "lie in no block")


def test_93_shapes_include_the_authors_and_partial_blocks():
    shapes = ex.QUANTIZER_SHAPES
    assert all(n % 128 == 0 for n in shapes[0])                      # the author's test comes first
    assert any(r % 128 and c % 128 for r, c in shapes)
    assert any(r % 128 and not c % 128 for r, c in shapes) and any(c % 128 and not r % 128 for r, c in shapes)


# ------------------------------------------------------------------------------------------------ 9.4
def _by_hand(terms, bits=4, promote=8, nearest=False):
    """An independent oracle: Python floats, the mantissa cut with floor (or round half away from zero)."""
    total, acc = 0.0, 0.0
    for i, t in enumerate(terms):
        acc += t
        if acc:
            step = 2.0 ** (math.floor(math.log2(abs(acc))) - bits)
            acc = (math.floor(acc / step + 0.5) if nearest else math.floor(acc / step)) * step
        if promote and (i + 1) % promote == 0:
            total, acc = total + acc, 0.0
    return total + acc if promote else acc


def test_94_answer_and_each_named_mistake_are_what_they_claim():
    """Learner report: 1.5 was diagnosed as 'rounds to nearest once at the end', which gives 1.25, not 1.5. Each
    named mistake now has its value computed by simulating it; this checks those values by hand arithmetic."""
    terms = [1.0] + [1 / 32] * 63
    assert ex.SWAMP_TERMS == terms and ex.SWAMP_PROMOTE == 8 and ex.SWAMP_BITS == 4
    assert _by_hand(terms) == 2.75
    m = ex.SWAMP_MISTAKES
    assert m["no promotion"] == _by_hand(terms, promote=None) == 1.0
    assert m["exact"] == sum(terms) == 2.96875
    assert m["round to nearest"] == _by_hand(terms, nearest=True) == 3.1875
    assert m["first chunk lost"] == 7 * 8 / 32
    assert m["nine-term first chunk"] == _by_hand(terms[:9], promote=None) + _by_hand(terms[9:]) == 1 + 55 / 32
    assert len(set(m.values()) | {2.75}) == len(m) + 1                # every diagnosis is told apart


def test_94_promoted_sum():
    r = ex.check_promoted_sum(ex.___)
    assert r.status == NOT_ATTEMPTED and "2.75" not in r.message
    assert ex.check_promoted_sum(2.75).status == RIGHT
    assert ex.check_promoted_sum(11 / 4).status == RIGHT
    assert_wrong(ex.check_promoted_sum(1.0), "ONE accumulator", "restarts from 0")
    assert_wrong(ex.check_promoted_sum(2.96875), "exact sum")
    assert_wrong(ex.check_promoted_sum(3.1875), "rounding to nearest", "truncates")
    assert_wrong(ex.check_promoted_sum(1.75), "first chunk does not hand over 0")
    assert_wrong(ex.check_promoted_sum(2.71875), "the 1 is itself one of the first chunk's 8 terms")
    for unexplained in (1.5, 1.125, 3.0):                             # no story invented for these
        r = ex.check_promoted_sum(unexplained)
        assert_wrong(r, "is not it")
    assert ex.check_promoted_sum(True).status == WRONG


def test_hints_never_state_the_formula_or_answer():
    for check in (ex.check_outlier_prediction, ex.check_dequantize_rows, ex.check_block_quantizer,
                  ex.check_promoted_sum):
        for text in (check.hint, *check.more):
            assert "2.75" not in text and "(start + i) // 128" not in text and "ceil_mode" not in text
            assert "adaptive" not in text


def test_stored_notebook_exercises_are_unattempted():
    assert_stored_unattempted(NOTEBOOK, 9, ("9.1", "9.2", "9.4"), bug_hunts=("9.3",))


def test_placeholder_is_imported_once_in_the_first_code_cell():
    """Learner report: `from … import ___` sat in the exercise cells that say 'replace each ___'."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    imports = [i for i, src in enumerate(code) for line in src.splitlines()
               if line.startswith(("from ", "import ")) and "___" in line]
    assert imports == [0]
