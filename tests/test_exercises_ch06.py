"""Exercise checkers of chapter 6: placeholder, typical wrong answers (with the hint each gets), right answer."""
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch06_balancing.exercises import (check_f_i, check_max_violation, check_remote_rows,
                                                          check_update_bias)


def _wrong(result, words):
    assert result.status == WRONG, result
    assert words in result.message, result.message



# ---------------------------------------------------------------- 6.1 bias update (code)
def test_update_bias_checker():
    assert check_update_bias(___).status == NOT_ATTEMPTED

    def right(bias, counts, gamma):
        bias += gamma * torch.sign(counts.mean() - counts)

    assert check_update_bias(right).status == RIGHT

    def wrong_sign(bias, counts, gamma):
        bias -= gamma * torch.sign(counts.mean() - counts)

    _wrong(check_update_bias(wrong_sign), "wrong sign")

    def replaced(bias, counts, gamma):
        return bias + gamma * torch.sign(counts.mean() - counts)

    _wrong(check_update_bias(replaced), "in place")

    def proportional(bias, counts, gamma):
        bias += gamma * (counts.mean() - counts)

    _wrong(check_update_bias(proportional), "SIGN")

    def gradient_like(bias, counts, gamma):   # a "learned" bias: any other update
        bias += gamma

    _wrong(check_update_bias(gradient_like), "b_i ← b_i + γ·sign")


# ---------------------------------------------------------------- 6.2 – 6.4
def test_max_violation_checker():
    assert check_max_violation(___).status == NOT_ATTEMPTED
    assert check_max_violation(0.5).status == RIGHT
    _wrong(check_max_violation(1.5), "max/mean")
    _wrong(check_max_violation(1.0), "spread")
    _wrong(check_max_violation(10), "divide by the mean")


def test_f_i_checker():
    assert check_f_i(___).status == NOT_ATTEMPTED
    assert check_f_i(8 / (2 * 64) * 12).status == RIGHT
    _wrong(check_f_i(12 / 64), "fraction of tokens")
    _wrong(check_f_i(8 * 12 / 64), "divide by K_r")
    _wrong(check_f_i(12 / 128), "multiply by N_r")


def test_remote_rows_checker():
    assert check_remote_rows(___).status == NOT_ATTEMPTED
    assert check_remote_rows(2).status == RIGHT
    _wrong(check_remote_rows(6), "remote EXPERT")
    _wrong(check_remote_rows(3), "own node")
    _wrong(check_remote_rows(8), "count nodes")
