"""Exercise checkers of chapter 5: placeholder, typical wrong answers (with the hint each gets), right answer."""
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch05_routing.exercises import (check_activated_params, check_experts_reachable,
                                                        check_group_mask, check_weight_unchanged)
from dsv3_lessons.model.config import deepseek_v3_671b


def _wrong(result, words):
    assert result.status == WRONG, result
    assert words in result.message, result.message



# ---------------------------------------------------------------- 5.1 group mask (code)
def good_mask(biased, n_group, topk_group):
    n = biased.shape[0]
    gs = biased.view(n, n_group, -1).topk(2, dim=-1).values.sum(-1)
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, gs.topk(topk_group, dim=-1).indices, True)
    return keep.repeat_interleave(biased.shape[1] // n_group, dim=1)


def test_group_mask_checker(capsys):
    assert check_group_mask(___).status == NOT_ATTEMPTED
    assert "not attempted" in capsys.readouterr().out

    def not_impl(b, g, k):
        raise NotImplementedError

    assert check_group_mask(not_impl).status == NOT_ATTEMPTED
    assert check_group_mask(good_mask).status == RIGHT
    _wrong(check_group_mask(lambda b, g, k: ~good_mask(b, g, k)), "inverted")

    def max_mask(b, g, k):
        n = b.shape[0]
        gs = b.view(n, g, -1).max(-1).values
        keep = torch.zeros(n, g, dtype=torch.bool).scatter_(1, gs.topk(k, dim=-1).indices, True)
        return keep.repeat_interleave(b.shape[1] // g, dim=1)

    _wrong(check_group_mask(max_mask), "max")
    _wrong(check_group_mask(lambda b, g, k: good_mask(b, g, k)[:, ::2]), "shape")
    _wrong(check_group_mask(lambda b, g, k: good_mask(b, g, k).float()), "bool")
    _wrong(check_group_mask(lambda b, g, k: 1 / 0), "ZeroDivisionError")


# ---------------------------------------------------------------- 5.2 – 5.4
def test_activated_params_checker():
    cfg = deepseek_v3_671b()
    expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    assert check_activated_params(___).status == NOT_ATTEMPTED
    r = check_activated_params(9 * expert)
    assert r.status == RIGHT and "396,361,728" in r.message
    assert 9 * expert == 3 * cfg.hidden_size * cfg.intermediate_size   # equal to the dense FFN
    _wrong(check_activated_params(8 * expert), "shared expert")
    _wrong(check_activated_params(9 * 2 * cfg.hidden_size * cfg.moe_intermediate_size), "THREE")
    _wrong(check_activated_params(257 * expert), "every expert")
    _wrong(check_activated_params("396M"), "must be a number")


def test_experts_reachable_checker():
    assert check_experts_reachable(___).status == NOT_ATTEMPTED
    assert check_experts_reachable(12).status == RIGHT
    assert check_experts_reachable(torch.tensor(12.0)).status == RIGHT
    _wrong(check_experts_reachable(4), "per NODE")
    _wrong(check_experts_reachable(12.8), "V3's case")
    _wrong(check_experts_reachable(7), "multiply")


def test_weight_unchanged_checker():
    assert check_weight_unchanged(___).status == NOT_ATTEMPTED
    assert check_weight_unchanged(True).status == RIGHT
    _wrong(check_weight_unchanged(False), "selection")
    _wrong(check_weight_unchanged(1), "True or False")
