"""Chapter 9 checkers: placeholder -> not attempted + a nudge (never the formula); typical wrong answers -> their
diagnosis; right -> ✓. The bug hunt's unfixed code is read from the notebook cell itself, so the test sees the
text the learner sees."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, _SHOWN, hint
from dsv3_lessons.course.ch09_fp8 import exercises as ex
from dsv3_lessons.course.ch09_fp8.experiments import error_report, outlier_activations
from exercise_helpers import assert_stored_unattempted, notebook_cell
from dsv3_lessons.model import fp8

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "09_fp8_training.ipynb"


def _right_dequantize(q, s, block):
    rows, cols = q.shape
    full = s.float().repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
    return q.float() * full


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
    assert normal.status == WRONG and "normal range" in normal.message and "became 0" in normal.message
    fraction = ex.check_outlier_prediction(got / 100, measured)
    assert fraction.status == WRONG and "percent" in fraction.message
    pessimist = ex.check_outlier_prediction(90, measured)
    assert pessimist.status == WRONG and "too pessimistic" in pessimist.message
    assert ex.check_outlier_prediction(-3, measured).status == WRONG
    assert ex.check_outlier_prediction("14", measured).status == WRONG
    assert "hint(\"9.1\")" in str(normal)


def test_91_hint_ladder_never_states_the_answer(capsys):
    _SHOWN.pop("9.1", None)
    texts = [hint("9.1") for _ in range(len(ex.check_outlier_prediction.more) + 1)]
    assert texts[0].startswith("Hint 1/3") and "solutions" in texts[-1]
    assert not any("14" in t for t in texts)


# ------------------------------------------------------------------------------------------------ 9.2
def test_92_dequantize():
    assert ex.check_dequantize(ex.___).status == NOT_ATTEMPTED
    assert ex.check_dequantize(lambda q, s, b: ex.___).status == NOT_ATTEMPTED        # the stored exercise cell
    half_filled = ex.check_dequantize(lambda q, s, b: q.float() * ex.___)
    assert half_filled.status == NOT_ATTEMPTED
    assert ex.check_dequantize(_right_dequantize).status == RIGHT
    divide = ex.check_dequantize(lambda q, s, b: q.float() / (_right_dequantize(torch.ones_like(q.float()), s, b)))
    assert divide.status == WRONG and "MULTIPLY" in divide.message
    noscale = ex.check_dequantize(lambda q, s, b: q.float())
    assert noscale.status == WRONG and "never applied" in noscale.message
    uncropped = ex.check_dequantize(lambda q, s, b: s.float().repeat_interleave(b[0], 0).repeat_interleave(b[1], 1))
    assert uncropped.status == WRONG and "cut to q's shape" in uncropped.message
    swapped = ex.check_dequantize(lambda q, s, b: _right_dequantize(q, s, (b[1], b[0])) if b[0] != b[1]
                                  else _right_dequantize(q, s, b))
    assert swapped.status == WRONG and "swapped" in swapped.message
    crash = ex.check_dequantize(lambda q, s, b: _right_dequantize(q, s, (b[1], b[0])) if b == (64, 32)
                                else _right_dequantize(q, s, b))
    assert crash.status == WRONG and "block[0] = 64" in crash.message


def test_92_dtype_fault_is_named_as_a_dtype_fault():
    """Review (issue 15 §6): a bf16 result was diagnosed as 'values differ … uses scale_inv[r // 128, …]'."""
    bf16 = ex.check_dequantize(lambda q, s, b: _right_dequantize(q, s, b).to(torch.bfloat16))
    assert bf16.status == WRONG and "torch.bfloat16" in bf16.message and "float32" in bf16.message
    assert "values differ" not in bf16.message
    fp8_out = ex.check_dequantize(lambda q, s, b: q)
    assert fp8_out.status == WRONG and "float32" in fp8_out.message


def test_92_library_call_is_blocked_and_restored():
    """Review: `return fp8.dequantize_blocks(q, scale_inv)` got ✓. The checker switches it off while it runs."""
    from dsv3_lessons.tools import hf_compat

    lib = ex.check_dequantize(lambda q, s, b: fp8.dequantize_blocks(q, s, b))
    assert lib.status == WRONG and "switched off" in lib.message
    other = ex.check_dequantize(lambda q, s, b: hf_compat.dequantize_block_fp8(q, s, b))
    assert other.status == WRONG and "switched off" in other.message
    q, s = fp8.quantize_blocks(torch.randn(130, 140))
    assert torch.isfinite(fp8.dequantize_blocks(q, s)).all()         # restored after the check
    assert torch.isfinite(hf_compat.dequantize_block_fp8(q, s)).all()


# ------------------------------------------------------------------------------------------------ 9.3
def _exec_function(source: str, name: str):
    scope = {"torch": torch, "math": math, "F": F, "check_pow2_quantizer": lambda fn: None}
    exec(source, scope)
    return scope[name]


def test_93_bug_hunt_unfixed_notebook_code_is_wrong():
    src = notebook_cell(NOTEBOOK, "def quantize_blocks_pow2")
    buggy = _exec_function(src, "quantize_blocks_pow2")
    r = ex.check_pow2_quantizer(buggy)
    assert r.status == WRONG and "do not belong together" in r.message
    assert "BEFORE" not in r.message and "before" not in r.message     # the symptom, not the fix
    q, s = buggy(torch.randn(256, 256))
    assert torch.equal(torch.exp2(torch.log2(s).round()), s)          # the bug hides: scales ARE powers of two


def test_93_fixed_and_other_wrong_versions():
    src = notebook_cell(NOTEBOOK, "def quantize_blocks_pow2")
    lines = src.splitlines()
    q_line = next(i for i, l in enumerate(lines) if l.strip().startswith("q = "))
    s_line = next(i for i, l in enumerate(lines) if "torch.exp2" in l)
    fixed = lines[:]
    fixed[q_line], fixed[s_line] = lines[s_line], lines[q_line]        # round first, then divide
    assert ex.check_pow2_quantizer(_exec_function("\n".join(fixed), "quantize_blocks_pow2")).status == RIGHT
    down = "\n".join(fixed).replace("torch.ceil", "torch.floor")
    r = ex.check_pow2_quantizer(_exec_function(down, "quantize_blocks_pow2"))
    assert r.status == WRONG and "DOWN" in r.message
    no_pow2 = "\n".join(l for i, l in enumerate(lines) if i != s_line)
    r = ex.check_pow2_quantizer(_exec_function(no_pow2, "quantize_blocks_pow2"))
    assert r.status == WRONG and "not powers of two" in r.message
    no_floor = "\n".join(fixed).replace(".clamp(min=1e-4)", "")
    r = ex.check_pow2_quantizer(_exec_function(no_floor, "quantize_blocks_pow2"))
    assert r.status == WRONG and "NaN" in r.message
    assert ex.check_pow2_quantizer(lambda w: fp8.quantize_blocks(w)).status == WRONG     # exact scales
    assert ex.check_pow2_quantizer(ex.___).status == NOT_ATTEMPTED
    assert ex.check_pow2_quantizer(lambda w: w).status == WRONG


# ------------------------------------------------------------------------------------------------ 9.4
def test_94_swamped_sum():
    r = ex.check_swamped_sum(ex.___)
    assert r.status == NOT_ATTEMPTED and "1.0" not in r.message
    exact = ex.check_swamped_sum(1.25)
    assert exact.status == WRONG and "exact sum" in exact.message
    one = ex.check_swamped_sum(1.0625)
    assert one.status == WRONG and "survived" in one.message
    nearest = ex.check_swamped_sum(1.5)
    assert nearest.status == WRONG and "truncates" in nearest.message
    assert ex.check_swamped_sum(True).status == WRONG
    assert ex.check_swamped_sum(1.0).status == RIGHT      # hand arithmetic: every 1/32 < 1/16 is truncated


def test_stored_notebook_exercises_are_unattempted():
    assert_stored_unattempted(NOTEBOOK, 9, ("9.1", "9.2", "9.4"), bug_hunts=("9.3",))
