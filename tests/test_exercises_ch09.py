"""Chapter 9 checkers: placeholder -> not attempted + hint; typical wrong answers -> their diagnosis; right -> ✓."""
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch09_fp8 import exercises as ex
from dsv3_lessons.model import fp8


def _right_dequantize(q, s, block=128):
    rows, cols = q.shape
    full = s.repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return q.float() * full


def test_91_dequantize(capsys):
    r = ex.check_dequantize(ex.___)
    assert r.status == NOT_ATTEMPTED and "repeat_interleave" in r.message
    assert ex.check_dequantize(lambda q, s, b=128: ex.___).status == NOT_ATTEMPTED   # the stored exercise cell
    divide = ex.check_dequantize(lambda q, s, b=128: q.float() / _right_dequantize(torch.ones_like(q.float()), s))
    assert divide.status == WRONG and "MULTIPLY" in divide.message
    uncropped = ex.check_dequantize(lambda q, s, b=128: q.float()[:1] * 0 + s.repeat_interleave(b, 0)[:1, :1])
    assert uncropped.status == WRONG and "crop" in uncropped.message
    noscale = ex.check_dequantize(lambda q, s, b=128: q.float())
    assert noscale.status == WRONG and "never applied" in noscale.message
    fp8_out = ex.check_dequantize(lambda q, s, b=128: q)
    assert fp8_out.status == WRONG and "float32" in fp8_out.message
    raises = ex.check_dequantize(lambda q, s, b=128: q.float() * s)
    assert raises.status == WRONG and "raised RuntimeError" in raises.message
    assert ex.check_dequantize(_right_dequantize).status == RIGHT
    assert ex.check_dequantize(lambda q, s, b=128: fp8.dequantize_blocks(q, s, b)).status == RIGHT
    assert "✓ Exercise 9.1" in capsys.readouterr().out


def test_92_scale_count():
    assert ex.check_scale_count(ex.___).status == NOT_ATTEMPTED
    floor = ex.check_scale_count(7 * 23)
    assert floor.status == WRONG and "floors" in floor.message
    per_elem = ex.check_scale_count(183)
    assert per_elem.status == WRONG and "128²" in per_elem.message
    tiles = ex.check_scale_count(1000 * 24)
    assert tiles.status == WRONG and "1×128 tiles" in tiles.message
    assert ex.check_scale_count("192").status == WRONG
    right = ex.check_scale_count(8 * 24)            # ceil(1000/128) = 8, ceil(3000/128) = 24
    assert right.status == RIGHT and "192" in right.message


def test_93_pow2_scale():
    assert ex.check_pow2_scale(ex.___).status == NOT_ATTEMPTED
    exact = ex.check_pow2_scale(300 / 448)
    assert exact.status == WRONG and "power-of-two" in exact.message
    down = ex.check_pow2_scale(0.5)
    assert down.status == WRONG and "overflow" in down.message
    inverse = ex.check_pow2_scale(448 / 300)
    assert inverse.status == WRONG and "direction" in inverse.message
    too_big = ex.check_pow2_scale(4.0)
    assert too_big.status == WRONG and "smallest" in too_big.message
    assert ex.check_pow2_scale(1.0).status == RIGHT       # 300/448 = 0.67 -> 2^0


def test_94_swamped_sum():
    assert ex.check_swamped_sum(ex.___).status == NOT_ATTEMPTED
    exact = ex.check_swamped_sum(1.25)
    assert exact.status == WRONG and "exact sum" in exact.message
    one = ex.check_swamped_sum(1.0625)
    assert one.status == WRONG and "survived" in one.message
    assert ex.check_swamped_sum(True).status == WRONG
    assert ex.check_swamped_sum(1.0).status == RIGHT      # hand arithmetic: every 1/32 < 1/16 is truncated
