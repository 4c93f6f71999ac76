"""Exercise checkers of chapter 5: placeholder, the right answer, typical wrong answers with their diagnoses.

Oracles: the stored routing snapshot (5.1, 5.4: the measurement and a brute-force scan of Δb), the paper's
node-limited rule written independently here (5.2), the library's DeepseekMoE (5.3), arithmetic (5.5).
"""
import json
from pathlib import Path

import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch05_routing.exercises import (MOE_OUTPUT_WITH_BUG, THRESHOLD_TOKEN, check_bias_threshold,
                                                        check_experts_reachable, check_group_mask,
                                                        check_limit_prediction, check_moe_output)
from exercise_helpers import assert_wrong

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_deepseekmoe_routing.ipynb"


# ---------------------------------------------------------------- 5.1 prediction
def test_limit_prediction_checker(capsys):
    assert check_limit_prediction(___).status == NOT_ATTEMPTED
    for right in (0, 0.0, 0.3, torch.tensor(0.0)):
        r = check_limit_prediction(right)
        assert r.status == RIGHT and "never binds" in r.message and "21.4" in r.message
    assert_wrong(check_limit_prediction(21.4), "official code's top-2 sum")
    assert_wrong(check_limit_prediction(31), "official code's top-2 sum")
    assert_wrong(check_limit_prediction(50), "could not be otherwise")
    assert_wrong(check_limit_prediction(150), "between 0 and 100")
    assert_wrong(check_limit_prediction("none"), "must be a number")
    capsys.readouterr()


# ---------------------------------------------------------------- 5.2 group mask for any K_r/M (variation)
def _rule(biased, n_group, topk_group, top_k, count=None, tile=False):
    """The paper's rule (sum of the K_r/M best per group), and variants, written without the package."""
    n, n_r = biased.shape
    per = n_r // n_group
    k = top_k // topk_group if count is None else min(count, per)
    scores = biased.view(n, n_group, per).sort(dim=-1, descending=True).values[..., :k].sum(-1)
    keep = torch.zeros(n, n_group, dtype=torch.bool)
    keep[torch.arange(n)[:, None], scores.argsort(dim=-1, descending=True)[:, :topk_group]] = True
    return keep.repeat(1, per) if tile else keep.repeat_interleave(per, dim=1)


def test_group_mask_checker(capsys):
    assert check_group_mask(___).status == NOT_ATTEMPTED

    def half_filled(biased, n_group, topk_group, top_k):
        n, n_r = biased.shape
        group_scores = ___
        keep = ___
        return ___

    assert check_group_mask(half_filled).status == NOT_ATTEMPTED
    r = check_group_mask(_rule)
    assert r.status == RIGHT and "K_r/M = 1, 2, 3 and 4" in r.message
    cases = [
        (lambda b, g, m, k: _rule(b, g, m, k, tile=True), "`repeat_interleave`"),      # repeat vs repeat_interleave
        (lambda b, g, m, k: _rule(b, g, m, k, count=2), "hard-coded 2"),
        (lambda b, g, m, k: _rule(b, g, m, k, count=1), "single best expert (max)"),
        (lambda b, g, m, k: _rule(b, g, m, k, count=b.shape[1]), "you summed the whole group"),
        (lambda b, g, m, k: _rule(b, g, m, k, count=m), "topk_group (M) best"),
        (lambda b, g, m, k: _rule(b, g, m, k, count=k), "top_k (K_r) best"),
        (lambda b, g, m, k: ~_rule(b, g, m, k), "inverted"),
        (lambda b, g, m, k: _rule(b, g, m, k)[:, ::2], "shape"),
        (lambda b, g, m, k: _rule(b, g, m, k).float(), "bool"),
        (lambda b, g, m, k: torch.ones_like(b, dtype=torch.bool), "exactly topk_group"),
        (lambda b, g, m, k: 1 / 0, "ZeroDivisionError"),
        ("group_mask", "pass your function itself"),
    ]
    for answer, words in cases:
        assert_wrong(check_group_mask(answer), words)
    # the review's point: "summing the whole group" must not be called "max" or "hard-coded 2"
    msg = check_group_mask(lambda b, g, m, k: _rule(b, g, m, k, count=b.shape[1])).message
    assert "max" not in msg and "hard-coded" not in msg
    capsys.readouterr()


# ---------------------------------------------------------------- 5.3 bug hunt (eq. 12, scale applied twice)
def _define(source, tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    ns = {"torch": torch}
    exec(compile(source, str(path), "exec"), ns)
    return ns["moe_output"]


_BUGGY_LINE = "            out[rows] += scale * g[rows, k, None] * moe.experts[e](u[rows])"


def test_moe_output_checker(tmp_path, capsys):
    assert _BUGGY_LINE in MOE_OUTPUT_WITH_BUG
    given = check_moe_output(_define(MOE_OUTPUT_WITH_BUG, tmp_path, "given"))
    assert given.status == WRONG and "this is the function as given" in given.message
    assert "twice" not in given.message and "2.5" not in given.message         # no give-away on Run All
    edited = MOE_OUTPUT_WITH_BUG.replace("# slot k of every token", "# edited, same bug")
    assert_wrong(check_moe_output(_define(edited, tmp_path, "edited")), "applied twice")
    fixed = MOE_OUTPUT_WITH_BUG.replace(_BUGGY_LINE, _BUGGY_LINE.replace("scale * ", ""))
    assert check_moe_output(_define(fixed, tmp_path, "fixed")).status == RIGHT
    other_fix = MOE_OUTPUT_WITH_BUG.replace("g = g / g.sum(-1, keepdim=True) * scale", "g = g / g.sum(-1, keepdim=True)")
    assert check_moe_output(_define(other_fix, tmp_path, "other_fix")).status == RIGHT
    skipped = fixed.replace("g = g / g.sum(-1, keepdim=True) * scale", "g = g / g.sum(-1, keepdim=True)")
    assert_wrong(check_moe_output(_define(skipped, tmp_path, "skipped")), "must be applied once")
    leak = fixed.replace("g = s.gather(1, idx)", "g = biased.gather(1, idx)")
    assert_wrong(check_moe_output(_define(leak, tmp_path, "leak")), "biased scores")
    no_shared = fixed.replace("out = u + moe.shared_experts(u)", "out = u.clone()")
    assert_wrong(check_moe_output(_define(no_shared, tmp_path, "no_shared")), "shared expert is missing")
    no_residual = fixed.replace("out = u + moe.shared_experts(u)", "out = moe.shared_experts(u)")
    assert_wrong(check_moe_output(_define(no_residual, tmp_path, "no_residual")), "residual u is missing")
    zero_mask = fixed.replace('float("-inf")', "0.0")
    assert_wrong(check_moe_output(_define(zero_mask, tmp_path, "zero_mask")), "filled with 0")
    sign = fixed.replace("out[rows] += g[rows, k, None]", "out[rows] -= g[rows, k, None]")
    assert_wrong(check_moe_output(_define(sign, tmp_path, "sign")), "differs from u + DeepseekMoE(u)")
    assert check_moe_output(___).status == NOT_ATTEMPTED
    assert_wrong(check_moe_output(42), "pass your function itself")
    capsys.readouterr()


def test_bug_hunt_text_is_the_notebooks():
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and MOE_OUTPUT_WITH_BUG.strip() in "".join(c["source"])]
    assert len(cells) == 1
    out = "".join("".join(o.get("text", "")) for o in cells[0]["outputs"])
    assert "✗ Exercise 5.3: this is the function as given" in out


# ---------------------------------------------------------------- 5.4 bias threshold
def test_bias_threshold_checker(capsys):
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    snap = load_snapshot()
    passage, position, layer, expert = THRESHOLD_TOKEN
    # brute force over the explorer's slider steps: the first Δb that gets expert 3 chosen
    steps = [round(0.01 * i, 2) for i in range(0, 101)]
    first = next(d for d in steps if expert in explore_route(snap, passage, position, layer, expert=expert,
                                                             bias=d).chosen)
    assert first == 0.16                      # the stored snapshot: threshold 0.1515…
    assert check_bias_threshold(___).status == NOT_ATTEMPTED
    for right in (first, first - 0.01, 0.152):
        r = check_bias_threshold(right)
        assert r.status == RIGHT and "EASIER" in r.message, (right, r.message)
    assert_wrong(check_bias_threshold(0.10), "GROUP kept")
    assert_wrong(check_bias_threshold(0.23), "without a group limit")
    assert_wrong(check_bias_threshold(0.25), "beats the best expert")
    assert_wrong(check_bias_threshold(0.12), "still not chosen")
    assert_wrong(check_bias_threshold(0.5), "already at a smaller")
    assert_wrong(check_bias_threshold("0.15"), "must be a number")
    capsys.readouterr()


# ---------------------------------------------------------------- 5.5 cluster
def test_experts_reachable_checker(capsys):
    assert check_experts_reachable(___).status == NOT_ATTEMPTED
    assert check_experts_reachable(12).status == RIGHT
    assert check_experts_reachable(torch.tensor(12.0)).status == RIGHT
    assert_wrong(check_experts_reachable(4), "per NODE")
    assert_wrong(check_experts_reachable(12.8), "V3's case")
    assert_wrong(check_experts_reachable(7), "multiply")
    assert_wrong(check_experts_reachable(0.75), "divided")
    assert_wrong(check_experts_reachable(20), "count what one IB transfer")
    capsys.readouterr()


# ---------------------------------------------------------------- hints: nudges, never the formula
@pytest.mark.parametrize("check", [check_limit_prediction, check_group_mask, check_moe_output, check_bias_threshold,
                                   check_experts_reachable])
def test_hints_are_nudges_with_a_ladder(check):
    assert len(check.more) >= 2
    for text in (check.hint, *check.more):
        assert "repeat_interleave(" not in text and "topk(top_k // topk_group" not in text
        assert "3 × 4" not in text and "0.15" not in text


def test_exercises_stored_unattempted():
    nb = json.loads(NOTEBOOK.read_text())
    stored = {}
    for c in nb["cells"]:
        text = "".join("".join(o.get("text", "")) for o in c.get("outputs", []))
        for n in ("5.1", "5.2", "5.4", "5.5"):
            if f"Exercise {n}:" in text:
                stored[n] = text
    assert set(stored) == {"5.1", "5.2", "5.4", "5.5"}
    assert all("not attempted yet" in t and "✓" not in t for t in stored.values())
