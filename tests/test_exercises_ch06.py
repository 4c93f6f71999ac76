"""Exercise checkers of chapter 6: placeholder, the right answer, typical wrong answers with their diagnoses, and the
bug hunt's unfixed code (the text the notebook shows) judged ✗ with a symptom only."""
from pathlib import Path

import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, ___, hint
from dsv3_lessons.course.ch06_balancing.exercises import (AUTHOR_TEST_6_1, BUG_6_1, GAMMAS_6_3, check_gamma_prediction,
                                                          check_node_max_violation, check_padded_balance_loss,
                                                          check_update_bias, check_wire_bytes, padded_cases,
                                                          routing_with_counts, unfixed_update_bias)
from dsv3_lessons.course.ch06_balancing.runs import load_runs, resimulate_bias, sample_batches
from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.model.moe import batch_balance_loss, sequence_balance_loss
from exercise_helpers import assert_stored_unattempted, assert_wrong, code_cells, output_texts

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTER = NOTEBOOKS / "06_load_balancing.ipynb"


def _load(bias, expert_ids):
    return torch.zeros(bias.numel()).index_add_(0, expert_ids.reshape(-1), torch.ones(expert_ids.numel()))


# ---------------------------------------------------------------- 6.1 bug hunt: the "fair share" with K_r > 1
def test_routing_with_counts_oracle():
    g = torch.Generator().manual_seed(0)
    routed = routing_with_counts([6, 11, 3, 9, 4, 8, 7, 0], 2, g)
    assert routed.shape == (24, 2)
    assert torch.bincount(routed.flatten(), minlength=8).tolist() == [6, 11, 3, 9, 4, 8, 7, 0]
    assert (routed[:, 0] != routed[:, 1]).all()                          # no token names an expert twice
    with pytest.raises(ValueError, match="cannot be routed"):
        routing_with_counts([5, 0], 2, g)


def test_update_bias_placeholder_and_right_answers():
    assert check_update_bias(___).status == NOT_ATTEMPTED

    def half_filled(bias, expert_ids, gamma):
        load = ___
        bias += gamma * torch.sign(load.mean() - load)

    assert check_update_bias(half_filled).status == NOT_ATTEMPTED

    def fixed(bias, expert_ids, gamma):                    # the one-line fix of the shown code
        load = _load(bias, expert_ids)
        fair_share = load.mean()
        bias[load > fair_share] -= gamma
        bias[load < fair_share] += gamma

    r = check_update_bias(fixed)
    assert r.status == RIGHT and "K_r·n_tokens/N_r" in r.message

    def fixed_other_way(bias, expert_ids, gamma):          # bincount WITH minlength, the sign form
        counts = torch.bincount(expert_ids.flatten(), minlength=bias.numel()).float()
        bias.add_(gamma * torch.sign(counts.mean() - counts))
        return bias                                       # returning it as well is harmless

    assert check_update_bias(fixed_other_way).status == RIGHT


def test_update_bias_unfixed_code_states_a_symptom_only_and_is_shown_verbatim():
    r = check_update_bias(unfixed_update_bias)
    assert_wrong(r, "agrees with update_bias on 1 of 5", "moved", "where update_bias moves them")
    for cause in ("fair_share", "K_r ·", "mean load", "threshold"):       # the ✗ never names the cause
        assert cause not in r.message.split("Stuck?")[0], cause
    cells = code_cells(CHAPTER)
    assert any(BUG_6_1.strip() in c for c in cells), "the notebook must show exercise 6.1's code as BUG_6_1"
    assert any(AUTHOR_TEST_6_1.strip() in c for c in cells), "the notebook must show the author's test"


def test_update_bias_author_test_passes_on_the_unfixed_code():
    b = torch.zeros(3)
    unfixed_update_bias(b, torch.tensor([[0], [0], [0], [1], [1], [2]]), 0.1)
    assert torch.allclose(b, torch.tensor([-0.1, 0.0, 0.1]))
    b = torch.zeros(4)                                     # K_r = 2: loads [3, 2, 1, 0], mean 1.5, "fair share" 0.75
    unfixed_update_bias(b, torch.tensor([[0, 1], [0, 1], [0, 2]]), 0.1)
    assert torch.allclose(b, torch.tensor([-0.1, -0.1, -0.1, 0.1]))        # expert 2 (below the mean) went DOWN


def test_update_bias_typical_wrong_fixes():
    def bincount_no_minlength(bias, expert_ids, gamma):    # learner report l67: got ✓, crashes when the last expert idles
        counts = torch.bincount(expert_ids.flatten()).float()
        bias += gamma * torch.sign(counts.mean() - counts)

    assert_wrong(check_update_bias(bincount_no_minlength), "the last expert without a token", "raised RuntimeError")

    def rebinding(bias, expert_ids, gamma):                # right rule, but a new local tensor
        load = _load(bias, expert_ids)
        bias = bias + gamma * torch.sign(load.mean() - load)

    assert_wrong(check_update_bias(rebinding), "right values, not updated in place")

    def rebinding_wrong(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        bias = bias + gamma * torch.sign(load - load.mean())

    assert_wrong(check_update_bias(rebinding_wrong), "unchanged", "values are wrong too")

    def returned(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        return bias + gamma * torch.sign(load.mean() - load)

    assert_wrong(check_update_bias(returned), "return a new tensor", "values you return are right")

    def at_mean_moves(bias, expert_ids, gamma):            # ">=": an expert exactly at the mean goes down
        load = _load(bias, expert_ids)
        bias[load >= load.mean()] -= gamma
        bias[load < load.mean()] += gamma

    assert_wrong(check_update_bias(at_mean_moves), "exactly the mean load", "stay where it is")

    def wrong_sign(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        bias += gamma * torch.sign(load - load.mean())

    assert_wrong(check_update_bias(wrong_sign), "wrong way", "busiest must go down")

    def proportional(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        bias += gamma * (load.mean() - load)

    assert_wrong(check_update_bias(proportional), "SIGN")

    def double_step(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        bias += 2 * gamma * torch.sign(load.mean() - load)

    assert_wrong(check_update_bias(double_step), "wrong amount")

    def new_storage(bias, expert_ids, gamma):
        load = _load(bias, expert_ids)
        bias.set_(bias + gamma * torch.sign(load.mean() - load))

    assert_wrong(check_update_bias(new_storage), "storage was replaced")
    assert_wrong(check_update_bias(lambda bias, expert_ids, gamma: 1 / 0), "ZeroDivisionError")
    assert_wrong(check_update_bias(0.01), "pass your function")


def test_hint_ladder_steps_then_points_to_the_solution():
    texts = [hint("6.1") for _ in range(4)]
    assert texts[0].startswith("Hint 1/3") and texts[2].startswith("Hint 3/3")
    assert "solutions" in texts[3]
    for t in texts:                                        # a ladder nudges; it never prints the fixed line
        assert "load.mean()" not in t and "K_r * n_tokens" not in t


# ---------------------------------------------------------------- 6.2 the largest node-level MaxVio
def test_node_max_violation_checker():
    assert check_node_max_violation(___).status == NOT_ATTEMPTED
    r = check_node_max_violation(7)
    assert r.status == RIGHT and "8 − 1 = 7" in r.message
    assert check_node_max_violation(torch.tensor(7.0)).status == RIGHT
    assert_wrong(check_node_max_violation(float("inf")), "no upper end", "one row per token")   # learner report l67
    assert_wrong(check_node_max_violation(31), "EXPERT loads")
    assert_wrong(check_node_max_violation(1), "ceiling")
    assert_wrong(check_node_max_violation(8), "max/mean")
    assert_wrong(check_node_max_violation(0), "perfect balance")
    assert_wrong(check_node_max_violation(3), "tiny model")
    assert_wrong(check_node_max_violation(5), "not it")


def test_node_max_violation_is_reached():
    # oracle: 8 nodes, every token of a batch routes all 8 experts to node 0: node loads [T, 0, …, 0] (one row per
    # token and node), MaxVio = (T − T/8)/(T/8) = 7
    t = 64
    expert_nodes = torch.zeros(t, 8, dtype=torch.long)                   # [T, K_r] the node of each chosen expert
    rows = torch.zeros(t, 8).scatter_(1, expert_nodes, 1.0)             # one row per (token, node)
    load = rows.sum(0)
    assert float((load.max() - load.mean()) / load.mean()) == 7.0


# ---------------------------------------------------------------- 6.3 prediction: which γ ends lowest / highest
@pytest.fixture(scope="module")
def gamma_sims():
    runs = load_runs()
    cfg, budget = DeepseekV3Config.from_dict(runs["meta"]["config"]), runs["meta"]["budget"]
    frozen = load_snapshot(which="unbalanced")["sample_scores"][0].float()
    kw = dict(n_group=cfg.n_group, topk_group=cfg.topk_group, top_k=cfg.num_experts_per_tok, steps=budget["steps"],
              batch_tokens=budget["batch_size"] * budget["seq_len"])
    batches = sample_batches(frozen, kw["steps"], kw["batch_tokens"])
    return {g: resimulate_bias(frozen, gamma=g, batches=batches, **kw) for g in GAMMAS_6_3}


def test_gamma_prediction_checker(gamma_sims):
    ends = {g: float(s["max_vio"][-20:].mean()) for g, s in gamma_sims.items()}
    assert ends[0.001] < ends[0.01] < ends[0.1]                          # the run the chapter shows
    assert check_gamma_prediction(___, gamma_sims).status == NOT_ATTEMPTED
    r = check_gamma_prediction((0.001, 0.1), gamma_sims)
    assert r.status == RIGHT and "±γ" in r.message
    assert check_gamma_prediction([0.001, 0.1], gamma_sims).status == RIGHT
    assert_wrong(check_gamma_prediction((0.1, 0.001), gamma_sims), "never stops stepping")
    assert_wrong(check_gamma_prediction((0.01, 0.1), gamma_sims), "the lowest is γ = 0.001, not 0.01")
    assert_wrong(check_gamma_prediction((0.001, 0.01), gamma_sims), "the highest is γ = 0.1, not 0.01")
    assert_wrong(check_gamma_prediction((0.1, 0.1), gamma_sims), "two different")
    assert_wrong(check_gamma_prediction((0.5, 0.1), gamma_sims), "must be one of")
    assert_wrong(check_gamma_prediction(0.1, gamma_sims), "pair")
    assert_wrong(check_gamma_prediction((0.001, 0.1), None), "run the experiment cell")


def test_gamma_prediction_stays_hidden_in_the_stored_chapter():
    cells, texts = code_cells(CHAPTER), output_texts(CHAPTER)
    run = [i for i, c in enumerate(cells) if "sims = {g: resimulate_bias" in c]
    assert len(run) == 1 and 'revealed("6.3", prediction_63)' in cells[run[0]]
    assert "Hidden until you predict" in texts[run[0]]
    before = "".join(texts[:run[0] + 2])                                 # nothing up to the checker gives the order
    assert "γ = 0.1: " not in before and "1.10" not in before


# ---------------------------------------------------------------- 6.4 variation: padded sequences
def _padded(scores, indices, mask, alpha):
    return torch.stack([sequence_balance_loss(scores[b][mask[b]][None], indices[b][mask[b]][None], alpha)
                        for b in range(scores.shape[0]) if mask[b].any()]).mean()


def _masked_sums(scores, indices, mask, alpha, f_len=None, p_len=None, weight=None):
    """The loss written with masks; ``f_len``/``p_len`` "T" divide f/P by the padded T, ``weight`` "length" weighs the
    sequences by their lengths."""
    b, t, n_r = scores.shape
    k = indices.shape[-1]
    m = mask.float()
    n = m.sum(1, keepdim=True)
    keep = mask.any(1)
    f = (torch.zeros(b, t, n_r).scatter_(2, indices, 1.0) * m[..., None]).sum(1) * n_r / (k * (t if f_len else n))
    p = (scores / scores.sum(-1, keepdim=True) * m[..., None]).sum(1) / (t if p_len else n)
    per = alpha * (f * p).sum(-1)
    if weight:
        return (per[keep] * n[keep, 0]).sum() / n.sum()
    return per[keep].mean()


def test_padded_cases_have_the_edges():
    cases = padded_cases()
    assert any((~m.any(1)).any() for _, _, m, _ in cases)                  # a row of padding only
    assert all(m.all(1).any() and not m.all() for _, _, m, _ in cases)     # a full row and a padded one


def test_padded_balance_loss_checker():
    assert check_padded_balance_loss(___).status == NOT_ATTEMPTED
    assert check_padded_balance_loss(_padded).status == RIGHT
    assert check_padded_balance_loss(_masked_sums).status == RIGHT
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: sequence_balance_loss(s, i, a)),
                 "f_i counts the padding positions", "P_i averages")
    # learner report l67: these three got one generic "differs" message; each now names its mistake
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _masked_sums(s, i, m, a, f_len="T", p_len="T")),
                 "f_i counts the real tokens but divides by the padded length T", "P_i sums")
    for one in ({"f_len": "T"}, {"p_len": "T"}):              # f·P cannot tell which of the two divides by T
        assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _masked_sums(s, i, m, a, **one)),
                     "f_i or P_i (one of the two) divides by the padded length T")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _masked_sums(s, i, m, a, weight="length")),
                 "weighted each sequence by its length")

    def mask_only_f(s, i, m, a):
        b, t, n_r = s.shape
        mf = m.float()
        n = mf.sum(1, keepdim=True)
        f = (torch.zeros(b, t, n_r).scatter_(2, i, 1.0) * mf[..., None]).sum(1) * n_r / (i.shape[-1] * n)
        p = (s / s.sum(-1, keepdim=True)).mean(1)
        return (a * (f * p).sum(-1))[m.any(1)].mean()

    assert_wrong(check_padded_balance_loss(mask_only_f), "P_i averages the normalised scores over the padding")

    def mask_one(s, i, m, a, mask_f=True, mask_p=True):        # one n for both; the mask in one of the sums only
        b, t, n_r = s.shape
        mf = m.float()
        n = mf.sum(1, keepdim=True)
        hits = torch.zeros(b, t, n_r).scatter_(2, i, 1.0)
        f = (hits * mf[..., None] if mask_f else hits).sum(1) * n_r / (i.shape[-1] * n)
        s_norm = s / s.sum(-1, keepdim=True)
        p = (s_norm * mf[..., None] if mask_p else s_norm).sum(1) / n
        return (a * (f * p).sum(-1))[m.any(1)].mean()

    # learner report (round 2): masking only P, or only f, got a generic "differs"; each is named now
    r = check_padded_balance_loss(lambda s, i, m, a: mask_one(s, i, m, a, mask_f=False))
    assert_wrong(r, "f_i still counts the masked (padding) positions as load")
    assert "P_i" not in r.message
    r = check_padded_balance_loss(lambda s, i, m, a: mask_one(s, i, m, a, mask_p=False))
    assert_wrong(r, "P_i still sums the normalised scores over the masked (padding) positions")
    assert "f_i" not in r.message
    assert check_padded_balance_loss(mask_one).status == RIGHT

    def all_rows(s, i, m, a):                                  # the empty row counts as 0
        per = [sequence_balance_loss(s[b][m[b]][None], i[b][m[b]][None], a) if m[b].any() else s.sum() * 0
               for b in range(s.shape[0])]
        return torch.stack(per).mean()

    assert_wrong(check_padded_balance_loss(all_rows), "all padding counts in your average")

    def nan_row(s, i, m, a):                                   # masked sums over every row: 0/0 on the empty row
        mf = m.float()
        n = mf.sum(1, keepdim=True)
        f = (torch.zeros(*s.shape).scatter_(2, i, 1.0) * mf[..., None]).sum(1) * s.shape[-1] / (i.shape[-1] * n)
        p = (s / s.sum(-1, keepdim=True) * mf[..., None]).sum(1) / n
        return a * (f * p).sum(-1).mean()

    assert_wrong(check_padded_balance_loss(nan_row), "divides 0 by 0")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: torch.stack(
        [sequence_balance_loss(s[b][m[b]][None], i[b][m[b]][None], a) for b in range(s.shape[0])]).mean()),
        "a row with no real token", "raised")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: batch_balance_loss(s[m], i[m], a)), "batch-wise")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s, i, m, a) * m.any(1).sum()), "summed")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s.detach(), i, m, a)), "no gradient")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: _padded(s, i, m, a).repeat(2)), "one number")
    assert_wrong(check_padded_balance_loss(lambda s, i, m, a: 1.5 * _padded(s, i, m, a)), "differs from")


# ---------------------------------------------------------------- 6.5 bytes on the wire
def test_wire_bytes_checker():
    right = 2 * 7168 * (1 + 2)                                 # nodes {1, 3} × d × (FP8 there + BF16 back)
    assert check_wire_bytes(___).status == NOT_ATTEMPTED
    r = check_wire_bytes(right)
    assert r.status == RIGHT and "43,008 B" in r.message
    assert_wrong(check_wire_bytes(6 * 7168 * 3), "remote EXPERT")
    assert_wrong(check_wire_bytes(3 * 7168 * 3), "own node")
    assert_wrong(check_wire_bytes(8 * 7168 * 3), "count nodes")
    assert_wrong(check_wire_bytes(2 * 7168), "dispatch alone")
    assert_wrong(check_wire_bytes(2 * 7168 * 4), "both directions in BF16")
    assert_wrong(check_wire_bytes(2), "rows each way")
    assert_wrong(check_wire_bytes(right * 8), "bits")
    assert_wrong(check_wire_bytes(right / 1000), "kilobytes")
    assert_wrong(check_wire_bytes(12345), "not it")


# ---------------------------------------------------------------- the stored chapter
def test_stored_chapter_shows_the_exercises_unattempted():
    assert_stored_unattempted(CHAPTER, 6, ("6.1", "6.2", "6.3", "6.4", "6.5"))
