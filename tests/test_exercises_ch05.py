"""Exercise checkers of chapter 5: placeholder, the right answer, typical wrong answers with their diagnoses.

Oracles: the stored routing snapshot (5.1, 5.4: the measurement and a scan of Δb on a 0.001 grid), the paper's
node-limited rule written independently here, token by token (5.2), the library's Gate (5.3), arithmetic (5.5).
"""
import json
from pathlib import Path

import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch05_routing.exercises import (ROUTE_WITH_BUG, THRESHOLD_TOKEN, check_bias_threshold,
                                                        check_cluster_design, check_group_mask, check_limit_prediction,
                                                        check_route, placed_group_mask)
from exercise_helpers import assert_stored_unattempted, assert_wrong, notebook_cell, output_texts

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_deepseekmoe_routing.ipynb"
SOLUTIONS = NOTEBOOK.parent / "solutions" / "05_deepseekmoe_routing_solutions.ipynb"


# ---------------------------------------------------------------- 5.1 prediction
def test_limit_prediction_checker(capsys):
    assert check_limit_prediction(___).status == NOT_ATTEMPTED
    for right in (0, 0.0, 0.01, torch.tensor(0.0)):
        r = check_limit_prediction(right)
        assert r.status == RIGHT and "never binds" in r.message and "21.4" in r.message
    assert_wrong(check_limit_prediction(0.214), "looks like a fraction", "21.4 %")     # the code's share as a fraction
    assert_wrong(check_limit_prediction(0.5), "could not be otherwise")                 # "about zero" is not the rule
    assert_wrong(check_limit_prediction(21.4), "official code's top-2 sum")
    assert_wrong(check_limit_prediction(31), "official code's top-2 sum")
    assert_wrong(check_limit_prediction(50), "could not be otherwise")
    assert_wrong(check_limit_prediction(150), "between 0 and 100")
    assert_wrong(check_limit_prediction("none"), "must be a number")
    capsys.readouterr()


# ---------------------------------------------------------------- 5.1 stays hidden until predicted
def test_limit_measurement_hidden_in_the_stored_chapter():
    """The learner report: the stored measurement right below the prediction showed 0.0 %. The measuring cell shows
    its lines only under revealed("5.1", ...), and no stored output of the chapter shows a share."""
    cell = notebook_cell(NOTEBOOK, 'revealed("5.1", my_prediction)')
    assert "experts of {100 * share" in cell
    texts = output_texts(NOTEBOOK)
    assert not any("limit changes the experts of" in t or "% of 384 tokens" in t for t in texts)
    assert any("Hidden until you predict" in t and "exercise 5.1" in t for t in texts)


# ---------------------------------------------------------------- 5.2 group mask from a placement table
def _rule(biased, group_of, topk_group, top_k, count=None):
    """The paper's rule for a placement table, token by token with plain Python lists (no package code)."""
    n_groups = int(group_of.max()) + 1
    k = top_k // topk_group if count is None else count
    out = torch.zeros(biased.shape, dtype=torch.bool)
    for t, row in enumerate(biased.tolist()):
        score = []
        for g in range(n_groups):
            mine = sorted((row[e] for e in range(len(row)) if int(group_of[e]) == g), reverse=True)
            score.append(sum(mine[:k]))
        kept = sorted(range(n_groups), key=lambda g: -score[g])[:topk_group]
        for e in range(len(row)):
            out[t, e] = int(group_of[e]) in kept
    return out


def test_placed_group_mask_is_the_rule():
    g = torch.Generator().manual_seed(3)
    for sizes, m, k in (((3, 3, 2), 2, 4), ((4, 5, 2, 1), 2, 6), ((1, 3, 5), 1, 3), ((6,), 1, 2)):
        group_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        group_of = group_of[torch.randperm(len(group_of), generator=g)]
        biased = torch.randn(16, len(group_of), generator=g)
        assert torch.equal(placed_group_mask(biased, group_of, m, k), _rule(biased, group_of, m, k))
    with pytest.raises(ValueError, match="topk_group must divide top_k"):
        placed_group_mask(torch.zeros(2, 4), torch.tensor([0, 0, 1, 1]), 2, 3)
    with pytest.raises(ValueError, match="group 1 holds no expert"):
        placed_group_mask(torch.zeros(2, 4), torch.tensor([0, 0, 2, 2]), 1, 2)


def _chapter_view(b, group_of, m, k):
    """The chapter's view(T, G, N_r // G), copied unchanged: right only for equal, consecutive groups."""
    n, n_r = b.shape
    n_group = int(group_of.max()) + 1
    s = b.view(n, n_group, n_r // n_group).topk(k // m, dim=-1).values.sum(-1)
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, s.topk(m, dim=-1).indices, True)
    return keep.repeat_interleave(n_r // n_group, dim=1)


def _as_blocks(b, group_of, m, k):
    """Right group scores, flags laid over consecutive ids (repeat_interleave of the group sizes)."""
    n_group = int(group_of.max()) + 1
    score = torch.stack([b[:, group_of == g].topk(min(k // m, int((group_of == g).sum())), dim=-1).values.sum(-1)
                         for g in range(n_group)], dim=-1)
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(m, dim=-1).indices, True)
    return keep.repeat_interleave(torch.bincount(group_of), dim=1)


def _short_dropped(b, group_of, m, k):
    """Groups smaller than K_r/M padded with −inf (so they never win)."""
    n_group = int(group_of.max()) + 1
    score = torch.stack([b[:, group_of == g].topk(k // m, dim=-1).values.sum(-1) if int((group_of == g).sum()) >= k // m
                         else torch.full((len(b),), float("-inf")) for g in range(n_group)], dim=-1)
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(m, dim=-1).indices, True)
    return keep[:, group_of]


def _worst_groups(biased, group_of, m, k):
    """The learner's probe: groups scored right, but the M lowest-scoring groups kept (topk with largest=False)."""
    n_group = int(group_of.max()) + 1
    score = torch.stack([biased[:, group_of == g].topk(min(k // m, int((group_of == g).sum())), dim=-1).values.sum(-1)
                         for g in range(n_group)], dim=-1)
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(m, dim=-1, largest=False).indices, True)
    return keep[:, group_of]


def test_group_mask_checker(capsys):
    assert check_group_mask(___).status == NOT_ATTEMPTED

    def half_filled(biased, group_of, topk_group, top_k):
        n, n_r = biased.shape
        ___
        return ___

    assert check_group_mask(half_filled).status == NOT_ATTEMPTED
    r = check_group_mask(_rule)
    assert r.status == RIGHT and "uneven and shuffled groups" in r.message
    cases = [
        (_chapter_view, "[n, G, N_r/G] views do not exist"),                      # the chapter's cell, unchanged
        (_as_blocks, "consecutive ids"),
        (_short_dropped, "fewer than K_r/M experts never wins"),
        (lambda b, go, m, k: _rule(b, go, m, k, count=2), "hard-coded 2"),
        (lambda b, go, m, k: _rule(b, go, m, k, count=1), "single best expert (max)"),
        (lambda b, go, m, k: _rule(b, go, m, k, count=b.shape[1]), "you summed the whole group"),
        (lambda b, go, m, k: _rule(b, go, m, k, count=m), "topk_group (M) best"),
        (lambda b, go, m, k: _rule(b, go, m, k, count=k), "top_k (K_r) best"),
        (lambda b, go, m, k: placed_group_mask(b, go, m, k, reduce="mean"), "averaged"),
        (lambda b, go, m, k: ~_rule(b, go, m, k), "inverted"),
        (_worst_groups, "WORST-scoring groups"),
        (lambda b, go, m, k: _rule(b, go, m, k)[:, ::2], "shape"),
        (lambda b, go, m, k: _rule(b, go, m, k).float(), "bool"),
        (lambda b, go, m, k: torch.ones_like(b, dtype=torch.bool), "keeps other experts than the rule"),
        ("group_mask", "pass your function itself"),
    ]
    for answer, words in cases:
        assert_wrong(check_group_mask(answer), words)
    # summing the whole group must not be called "max" or "hard-coded 2"
    msg = check_group_mask(lambda b, go, m, k: _rule(b, go, m, k, count=b.shape[1])).message
    assert "max" not in msg and "hard-coded" not in msg
    capsys.readouterr()


# ---------------------------------------------------------------- 5.3 bug hunt (dropped groups filled with 0)
def _define(source, tmp_path, name):
    """The function as the notebook cell defines it (written to a file, so inspect finds its source)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    ns = {"torch": torch}
    exec(compile(source, str(path), "exec"), ns)
    return ns["route"]


_BUGGY_LINE = "    ids = (per_group * keep[..., None]).flatten(1).topk(gate.top_k, dim=-1).indices\n"
_FIX = '    ids = per_group.masked_fill(keep[..., None] == 0, float("-inf")).flatten(1).topk(gate.top_k, dim=-1).indices\n'


def test_route_checker(tmp_path, capsys):
    assert _BUGGY_LINE in ROUTE_WITH_BUG
    given = check_route(_define(ROUTE_WITH_BUG, tmp_path, "given"))
    assert given.status == WRONG and "this is the function as given" in given.message
    for cause in ("inf", "masked", "fill", "multipl", "negative", "below 0", "with 0", "flag"):   # symptom only
        assert cause not in given.message, cause
    edited = ROUTE_WITH_BUG.replace("# unbiased affinities", "# edited, same bug")
    assert_wrong(check_route(_define(edited, tmp_path, "edited")), "the bug is still there")
    fixed = ROUTE_WITH_BUG.replace(_BUGGY_LINE, _FIX)
    r = check_route(_define(fixed, tmp_path, "fixed"))
    assert r.status == RIGHT and "0 beats every biased score below 0" in r.message
    other_fix = ROUTE_WITH_BUG.replace(_BUGGY_LINE, _BUGGY_LINE.replace("per_group * keep[..., None]",
                                                                        "per_group + (keep[..., None] - 1) * 1e9"))
    assert check_route(_define(other_fix, tmp_path, "other_fix")).status == RIGHT
    wrong = [
        (fixed.replace("w = scores.gather", "w = choice.gather"), "the bias chooses, it never weighs"),
        (fixed.replace("* gate.routed_scaling_factor, ids", "* gate.routed_scaling_factor ** 2, ids"),
         "applied twice"),
        (fixed.replace("* gate.routed_scaling_factor, ids", ", ids"), "routed_scaling_factor is missing"),
        (fixed.replace("w / w.sum(-1, keepdim=True) *", "w *"), "not normalised"),     # the learner report's probe
        (fixed.replace("topk(2, dim=-1).values.sum(-1)", "max(-1).values"), "best expert (max)"),
        (fixed.replace("topk(gate.topk_group", "topk(1"), "other experts than the library Gate"),
    ]
    for i, (source, words) in enumerate(wrong):
        assert_wrong(check_route(_define(source, tmp_path, f"wrong{i}")), words)
    assert check_route(___).status == NOT_ATTEMPTED
    assert_wrong(check_route(42), "pass your function itself")
    capsys.readouterr()


def test_route_checker_rejects_a_finite_fill(tmp_path, capsys):
    """The round-3 learner's probe: -0.5 or -1.0 in place of −inf passed while every trial gate's biased scores stayed
    above -0.3. A gate whose bias has drifted to about -1000 tells any small finite fill from −inf."""
    for i, fill in enumerate(("-0.5", "-1.0", "-100.0")):
        source = ROUTE_WITH_BUG.replace(_BUGGY_LINE, _FIX.replace('float("-inf")', fill))
        assert_wrong(check_route(_define(source, tmp_path, f"fill{i}")), "the value the dropped groups get is finite")
    huge = ROUTE_WITH_BUG.replace(_BUGGY_LINE, _FIX.replace('float("-inf")', "-1e9"))
    assert check_route(_define(huge, tmp_path, "huge")).status == RIGHT     # below every score any gate reaches
    # the weights changed to the biased scores, the 0/1 multiply left in place: the dropped groups are named
    both = ROUTE_WITH_BUG.replace("w = scores.gather", "w = choice.gather")
    assert_wrong(check_route(_define(both, tmp_path, "both")), "still picks experts of groups the limit dropped")
    capsys.readouterr()


def test_bug_hunt_text_is_the_notebooks():
    """The chapter shows this very function, its author's (passing) test, and the checker's ✗ on it."""
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and ROUTE_WITH_BUG.strip() in "".join(c["source"])]
    assert len(cells) == 1
    assert any("✗ Exercise 5.3: this is the function as given" in t and "the author's test passes" in t
               for t in output_texts(NOTEBOOK))


# ---------------------------------------------------------------- 5.4 bias threshold
def test_bias_threshold_checker(capsys):
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    snap = load_snapshot()
    passage, position, layer, expert = THRESHOLD_TOKEN
    chosen = lambda d: expert in explore_route(snap, passage, position, layer, expert=expert, bias=d).chosen  # noqa: E731
    # a scan on the 0.001 grid: the first Δb that gets expert 3 chosen (the learner report: 0.15 is NOT)
    first = next(round(0.001 * i, 3) for i in range(0, 400) if chosen(round(0.001 * i, 3)))
    assert first == 0.152 and not chosen(0.15)
    assert check_bias_threshold(___).status == NOT_ATTEMPTED
    r = check_bias_threshold(first)
    assert r.status == RIGHT and "EASIER" in r.message and "pass e0" in r.message
    assert_wrong(check_bias_threshold(0.15), "still not chosen, by a hair")       # was accepted before
    assert_wrong(check_bias_threshold(0.151), "still not chosen, by a hair")
    assert_wrong(check_bias_threshold(0.16), "already at a smaller")             # "to 2 decimals" was accepted
    assert_wrong(check_bias_threshold(0.096), "GROUP is kept")
    r = check_bias_threshold(0.229)             # passes e5 only (the learner report), not every expert
    assert_wrong(r, "passes e5", "without a group limit")
    assert "every expert" not in r.message
    assert_wrong(check_bias_threshold(0.247), "passes e1, the best expert")
    assert_wrong(check_bias_threshold(0.12), "still not chosen")
    assert_wrong(check_bias_threshold(0.5), "already at a smaller")
    assert_wrong(check_bias_threshold(-0.1), "must go up")
    assert_wrong(check_bias_threshold("0.15"), "must be a number")
    capsys.readouterr()


# ---------------------------------------------------------------- 5.5 cluster design (two steps)
def test_cluster_design_checker(capsys):
    ratio, k_r = 4, 12
    m = next(m for m in range(1, k_r + 1) if m * ratio >= k_r)       # fewest nodes that feed K_r experts
    assert (m, k_r // m) == (3, 4)
    assert check_cluster_design(___).status == NOT_ATTEMPTED
    assert check_cluster_design((3, ___)).status == NOT_ATTEMPTED
    for right in ((m, k_r // m), [3, 4], (torch.tensor(3), 4.0)):
        assert check_cluster_design(right).status == RIGHT
    assert_wrong(check_cluster_design((4, 3)), "V3's 160/50 = 3.2")
    assert_wrong(check_cluster_design((12, 1)), "its own node")
    assert_wrong(check_cluster_design((2, 6)), "fewer than K_r = 12")
    assert_wrong(check_cluster_design((6, 2)), "take the smallest M")
    assert_wrong(check_cluster_design((1.5, 8)), "whole number")
    assert_wrong(check_cluster_design((3, 2)), "hard-coded count")
    assert_wrong(check_cluster_design((3, 1)), "V2's device-limited rule")
    assert_wrong(check_cluster_design((3, 12)), "only its share")
    assert_wrong(check_cluster_design((3, 3)), "M itself")
    assert_wrong(check_cluster_design((3, 5)), "count per node is wrong")
    assert_wrong(check_cluster_design(3), "answer with a pair")
    capsys.readouterr()


# ---------------------------------------------------------------- hints: nudges, never the formula
@pytest.mark.parametrize("check", [check_limit_prediction, check_group_mask, check_route, check_bias_threshold,
                                   check_cluster_design])
def test_hints_are_nudges_with_a_ladder(check):
    assert len(check.more) >= 2
    for text in (check.hint, *check.more):
        assert "keep[:, group_of]" not in text and "masked_fill" not in text and "-inf" not in text
        assert "12 / 4" not in text and "0.152" not in text and "(3, 4)" not in text


def test_exercises_stored_unattempted():
    assert_stored_unattempted(NOTEBOOK, 5, ("5.1", "5.2", "5.4", "5.5"), bug_hunts=("5.3",))


def test_solutions_all_right():
    texts = "\n".join(output_texts(SOLUTIONS))
    for n in ("5.1", "5.2", "5.3", "5.4", "5.5"):
        assert f"✓ Exercise {n}:" in texts, n
    assert "✗" not in texts and "not attempted" not in texts
