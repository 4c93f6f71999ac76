"""Exercise checkers of chapter 6: placeholder, the right answer, typical wrong answers with their diagnoses, and the
bug hunt's unfixed code (the text the notebook shows) judged ✗."""
from pathlib import Path

import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___, hint
from dsv3_lessons.course.ch06_balancing.exercises import (BUG_6_1, PREDICTIONS_6_3, check_max_violation_bound,
                                                          check_padded_balance_loss, check_remote_rows,
                                                          check_update_bias, check_wrong_sign_prediction,
                                                          unfixed_update_bias)
from dsv3_lessons.course.ch06_balancing.runs import resimulate_bias
from dsv3_lessons.model.moe import sequence_balance_loss
from exercise_helpers import assert_wrong, code_cells

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ---------------------------------------------------------------- 6.1 bug hunt: the bias update's sign
def test_update_bias_placeholder_and_right_answers():
    assert check_update_bias(___).status == NOT_ATTEMPTED

    def half_filled(bias, routed, gamma):
        counts = ___
        bias += gamma * torch.sign(counts.mean() - counts)

    assert check_update_bias(half_filled).status == NOT_ATTEMPTED

    def fixed(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        load_error = counts - counts.mean()
        bias -= gamma * torch.sign(load_error)

    assert check_update_bias(fixed).status == RIGHT

    def fixed_other_line(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        load_error = counts.mean() - counts
        bias.add_(gamma * torch.sign(load_error))
        return bias                                    # returning it as well is harmless

    assert check_update_bias(fixed_other_line).status == RIGHT


def test_update_bias_unfixed_code_is_wrong_and_shown_verbatim():
    assert_wrong(check_update_bias(unfixed_update_bias), "wrong sign", "DOWN")
    cells = code_cells(NOTEBOOKS / "06_load_balancing.ipynb")
    assert any(BUG_6_1.strip() in c for c in cells), "the notebook must show exercise 6.1's code as BUG_6_1"


def test_update_bias_typical_wrong_fixes():
    def rebinding(bias, routed, gamma):               # right rule, but a new local tensor
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        bias = bias + gamma * torch.sign(counts.mean() - counts)

    assert_wrong(check_update_bias(rebinding), "right rule, not updated in place")

    def rebinding_wrong_sign(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        bias = bias + gamma * torch.sign(counts - counts.mean())

    assert_wrong(check_update_bias(rebinding_wrong_sign), "unchanged", "wrong sign")

    def returned(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        return bias + gamma * torch.sign(counts.mean() - counts)

    assert_wrong(check_update_bias(returned), "return a new tensor", "values you return are right")

    def never_zero(bias, routed, gamma):              # ±γ for everyone: wrong for an expert exactly at the mean
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        bias += torch.where(counts > counts.mean(), -gamma, gamma)

    assert_wrong(check_update_bias(never_zero), "exactly the mean", "stay where it is")

    def proportional(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        bias += gamma * (counts.mean() - counts)

    assert_wrong(check_update_bias(proportional), "SIGN")

    def normalised_step(bias, routed, gamma):
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        bias += 2 * gamma * torch.sign(counts.mean() - counts)

    assert_wrong(check_update_bias(normalised_step), "wrong amount")

    def gradient_like(bias, routed, gamma):           # any other update: names one expert
        bias += gamma

    assert_wrong(check_update_bias(gradient_like), "not the rule", "should move by")
    assert_wrong(check_update_bias(lambda bias, routed, gamma: 1 / 0), "ZeroDivisionError")
    assert_wrong(check_update_bias(0.01), "pass your function")


def test_hint_ladder_steps_then_points_to_the_solution(capsys):
    texts = [hint("6.1") for _ in range(4)]
    assert texts[0].startswith("Hint 1/3") and texts[2].startswith("Hint 3/3")
    assert "solutions" in texts[3]
    for t in texts:                                    # a ladder nudges; it never prints the fixed line
        assert "sign(mean" not in t and "counts.mean() - counts" not in t


# ---------------------------------------------------------------- 6.2 largest MaxVio
def test_max_violation_bound_checker():
    assert check_max_violation_bound(___).status == NOT_ATTEMPTED
    r = check_max_violation_bound(3)
    assert r.status == RIGHT and "N_r/K_r − 1" in r.message
    assert check_max_violation_bound(torch.tensor(3.0)).status == RIGHT
    assert_wrong(check_max_violation_bound(4), "max/mean")
    assert_wrong(check_max_violation_bound(7), "one copy")
    assert_wrong(check_max_violation_bound(0), "perfect balance")
    assert_wrong(check_max_violation_bound(0.75), "share of experts")
    assert_wrong(check_max_violation_bound("3"), "must be a number")


def test_max_violation_bound_is_reached():
    # oracle: the most unbalanced routing of T tokens (every token picks experts 0 and 1) has MaxVio = N_r/K_r − 1
    counts = torch.bincount(torch.tensor([[0, 1]] * 64).flatten(), minlength=8).float()
    assert float((counts.max() - counts.mean()) / counts.mean()) == 3.0


# ---------------------------------------------------------------- 6.3 prediction
def _unfixed_run():
    g = torch.Generator().manual_seed(0)
    scores = torch.sigmoid(torch.randn(2000, 8, generator=g) + torch.tensor([2., 1, 0, 0, 0, 0, -1, -2]))
    return resimulate_bias(scores, 4, 2, 2, 0.01, steps=80, batch_tokens=512, update=unfixed_update_bias)


def test_wrong_sign_prediction_checker():
    sim = _unfixed_run()
    assert float(sim["max_vio"][-20:].mean()) > float(sim["max_vio"][0]) + 0.2   # the unfixed rule unbalances
    assert check_wrong_sign_prediction(___, sim).status == NOT_ATTEMPTED
    r = check_wrong_sign_prediction("rises", sim)
    assert r.status == RIGHT and "positive" in r.message
    assert check_wrong_sign_prediction(" Rises ", sim).status == RIGHT
    assert_wrong(check_wrong_sign_prediction("falls", sim), "looks like balancing", "rises")
    assert_wrong(check_wrong_sign_prediction("stays", sim), "it rises")
    assert_wrong(check_wrong_sign_prediction("up", sim), *PREDICTIONS_6_3)
    assert_wrong(check_wrong_sign_prediction("rises", None), "run the experiment")


def test_right_sign_resimulation_falls():   # the yardstick: the library rule balances the same router
    g = torch.Generator().manual_seed(0)
    scores = torch.sigmoid(torch.randn(2000, 8, generator=g) + torch.tensor([2., 1, 0, 0, 0, 0, -1, -2]))
    sim = resimulate_bias(scores, 4, 2, 2, 0.01, steps=80, batch_tokens=512)
    r = check_wrong_sign_prediction("rises", sim)
    assert r.status == WRONG and "it falls" in r.message


# ---------------------------------------------------------------- 6.4 variation: padded sequences
def _padded(scores, indices, mask, alpha):
    return torch.stack([sequence_balance_loss(scores[b][mask[b]][None], indices[b][mask[b]][None], alpha)
                        for b in range(scores.shape[0])]).mean()


def _masked_sums(scores, indices, mask, alpha):                # the same loss, written with masks
    b, t, n_r = scores.shape
    k = indices.shape[-1]
    m = mask.float()
    n = m.sum(1, keepdim=True)
    f = (torch.zeros(b, t, n_r).scatter_(2, indices, 1.0) * m[..., None]).sum(1) * n_r / (k * n)
    p = (scores / scores.sum(-1, keepdim=True) * m[..., None]).sum(1) / n
    return alpha * (f * p).sum(-1).mean()


def test_padded_balance_loss_checker():
    assert check_padded_balance_loss(___).status == NOT_ATTEMPTED
    assert check_padded_balance_loss(_padded).status == RIGHT
    assert check_padded_balance_loss(_masked_sums).status == RIGHT
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: sequence_balance_loss(s, i, a)), "padding positions")

    def f_over_padded_t(s, i, m, a):
        b, t, n_r = s.shape
        k = i.shape[-1]
        mf = m.float()
        f = (torch.zeros(b, t, n_r).scatter_(2, i, 1.0) * mf[..., None]).sum(1) * n_r / (k * t)
        p = (s / s.sum(-1, keepdim=True) * mf[..., None]).sum(1) / mf.sum(1, keepdim=True)
        return a * (f * p).sum(-1).mean()

    assert_wrong(check_padded_balance_loss(f_over_padded_t), "f_i divides by the padded length")
    from dsv3_lessons.model.moe import batch_balance_loss

    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: batch_balance_loss(s[m], i[m], a)), "batch-wise")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s, i, m, a) * s.shape[0]), "summed")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s.detach(), i, m, a)), "no gradient")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s, i, m, a).repeat(2)), "one number")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: 1.5 * _padded(s, i, m, a)), "differs from")


# ---------------------------------------------------------------- 6.5
def test_remote_rows_checker():
    assert check_remote_rows(___).status == NOT_ATTEMPTED
    assert check_remote_rows(2).status == RIGHT
    assert_wrong(check_remote_rows(6), "remote EXPERT")
    assert_wrong(check_remote_rows(3), "own node")
    assert_wrong(check_remote_rows(8), "count nodes")
