"""Chapter 8 checkers: placeholder -> not attempted + a nudge (never the formula); typical wrong answers -> their
diagnosis; right -> ✓. The bug hunt's unfixed code is read from the notebook cell itself, so the test sees the text
the learner sees. Oracles: the closed-form rule and tools.speculative, fresh prefills."""
import json
from pathlib import Path

import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch08_speculative import exercises as ex
from dsv3_lessons.tools.speculative import SpeculativeStats
from exercise_helpers import assert_stored_unattempted, notebook_cell, output_texts

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "08_speculative_decoding.ipynb"


# ------------------------------------------------------------------------------------------------ 8.1
def _stats(accepted, k=4, new_tokens=48):
    st = SpeculativeStats(k=k, new_tokens=new_tokens, main_forwards=1 + len(accepted))
    st.accepted_per_step = list(accepted)
    st.drafted_per_step = [k] * len(accepted)
    return st


def test_81_prediction():
    looping = _stats([4] * 10 + [3])                       # the loop regime: almost every draft accepted
    got = looping.tokens_per_forward
    r = ex.check_tokens_per_forward_prediction(___, looping)
    assert r.status == NOT_ATTEMPTED and "1 +" not in r.message
    assert ex.check_tokens_per_forward_prediction(got, looping).status == RIGHT
    assert ex.check_tokens_per_forward_prediction(0.9 * got, looping).status == RIGHT
    low = ex.check_tokens_per_forward_prediction(2.2, looping)          # the diminishing-returns intuition
    assert low.status == WRONG and "loops" in low.message and f"{got:.2f}" in low.message
    high = ex.check_tokens_per_forward_prediction(4.0, _stats([1, 0, 2, 1, 0, 1] * 3))
    assert high.status == WRONG and "own output" in high.message
    below_one = ex.check_tokens_per_forward_prediction(0.5, looping)
    assert below_one.status == WRONG and "at least 1" in below_one.message
    above = ex.check_tokens_per_forward_prediction(6, looping)
    assert above.status == WRONG and "at most k + 1 = 5" in above.message
    assert ex.check_tokens_per_forward_prediction("4", looping).status == WRONG
    every = ex.check_tokens_per_forward_prediction(5, looping)           # "every draft always accepted"
    assert every.status == WRONG and "is k + 1" in every.message and f"{got:.2f}" in every.message


# ------------------------------------------------------------------------------------------------ 8.2
def _right_topk(p, q_full, top_k):
    q = torch.zeros_like(q_full)
    keep = q_full.topk(top_k).indices
    q[keep] = q_full[keep]
    q = q / q.sum()
    r = (p - q).clamp(min=0)
    return q, torch.minimum(p, q).sum(), r / r.sum()


def test_82_topk_draft():
    assert ex.check_topk_draft(___).status == NOT_ATTEMPTED
    assert ex.check_topk_draft(lambda p, q, k: (___, ___, ___)).status == NOT_ATTEMPTED     # the stored cell
    assert ex.check_topk_draft(_right_topk).status == RIGHT
    full_q = ex.check_topk_draft(lambda p, q, k: _right_topk(p, q, len(q)))
    assert full_q.status == WRONG and "full distribution" in full_q.message
    def unnormalised(p, q_full, k):
        q, a, r = _right_topk(p, q_full, k)
        return q * q_full.topk(k).values.sum(), a, r
    un = ex.check_topk_draft(unnormalised)
    assert un.status == WRONG and "sums to" in un.message
    def full_residual(p, q_full, k):
        q, a, _ = _right_topk(p, q_full, k)
        return q, a, _right_topk(p, q_full, len(q_full))[2]
    fr = ex.check_topk_draft(full_residual)
    assert fr.status == WRONG and "residual uses the full q" in fr.message
    def dot(p, q_full, k):
        q, _, r = _right_topk(p, q_full, k)
        return q, (p * q).sum(), r
    d = ex.check_topk_draft(dot)
    assert d.status == WRONG and "independent draws" in d.message
    def not_normalised_residual(p, q_full, k):
        q, a, _ = _right_topk(p, q_full, k)
        return q, a, (p - q).clamp(min=0)
    nr = ex.check_topk_draft(not_normalised_residual)
    assert nr.status == WRONG and "sum to 1" in nr.message


def test_82_residual_without_the_clamp_is_named():
    """Learner report: a residual without max(0, ·) (negative entries) got only "residual differs"."""
    def unclamped(p, q_full, k):
        q, a, _ = _right_topk(p, q_full, k)
        r = p - q
        return q, a, r / r.abs().sum()
    r = ex.check_topk_draft(unclamped)
    assert r.status == WRONG and "negative entr" in r.message and "p − q < 0" in r.message
    assert "residual differs" not in r.message
    def unclamped_raw(p, q_full, k):
        q, a, _ = _right_topk(p, q_full, k)
        return q, a, p - q
    assert "negative entr" in ex.check_topk_draft(unclamped_raw).message


# ------------------------------------------------------------------------------------------------ 8.3
def _exec(source: str, tmp_path=None):
    """The function the cell defines; with ``tmp_path``, from a file, so that inspect finds its source as it does
    in a notebook."""
    scope = {"torch": torch, "check_verify_step": lambda fn: None}
    filename = "<cell>"
    if tmp_path is not None:
        filename = str(tmp_path / "verify_greedy.py")
        (tmp_path / "verify_greedy.py").write_text(source)
    exec(compile(source, filename, "exec"), scope)
    return scope["verify_greedy"]


def test_83_bug_hunt_unfixed_notebook_code_is_wrong_with_the_symptom_only(tmp_path):
    src = notebook_cell(NOTEBOOK, "def verify_greedy")
    assert src.startswith(ex.VERIFY_GREEDY_WITH_BUG.strip())      # the checker knows the code as the chapter gives it
    given = src[:src.index("check_verify_step")]
    r = ex.check_verify_step(_exec(given, tmp_path))
    assert r.status == WRONG and "as given" in r.message
    assert "one more than" not in r.message and "rejected draft" not in r.message and "+ 1" not in r.message


def test_83_the_same_bug_typed_anew_gets_the_diagnosis(tmp_path):
    src = notebook_cell(NOTEBOOK, "def verify_greedy").replace("        m += 1", "        m = m + 1")
    r = ex.check_verify_step(_exec(src[:src.index("check_verify_step")], tmp_path))
    assert r.status == WRONG and "one more than" in r.message and "rejected draft" in r.message


def test_83_cases_have_a_greedy_chain_that_never_repeats():
    for prompt, x_n, drafts, m, choice in ex._verify_cases():
        assert choice[:m] == drafts[:m] and (m == 3 or choice[m] != drafts[m])
        assert all(a != b for a, b in zip([x_n, *choice[:m]], choice[:m + 1]))


def test_83_wrong_column_and_one_layer_rollback_are_caught():
    fixed = notebook_cell(NOTEBOOK, "def verify_greedy").replace("n + m + 2", "n + m + 1")
    shifted = fixed.replace("drafts[m] == choice[m]", "m + 1 < len(choice) and drafts[m] == choice[m + 1]")
    assert shifted != fixed
    r = ex.check_verify_step(_exec(shifted))
    assert r.status == WRONG and "main model's own choice" in r.message
    one_layer = fixed.replace("for layer_cache in cache:", "for layer_cache in cache[:1]:")
    assert one_layer != fixed
    r = ex.check_verify_step(_exec(one_layer))
    assert r.status == WRONG and "layer(s) [1, 2]" in r.message and "each must be rolled back" in r.message


def test_83_fixed_and_other_wrong_versions():
    src = notebook_cell(NOTEBOOK, "def verify_greedy")
    assert "n + m + 2" in src
    assert ex.check_verify_step(_exec(src.replace("n + m + 2", "n + m + 1"))).status == RIGHT
    short = ex.check_verify_step(_exec(src.replace("n + m + 2", "n + m")))
    assert short.status == WRONG and "tokens were accepted" in short.message
    no_rollback = ex.check_verify_step(_exec(src.replace("layer_cache.truncate(n + m + 2)", "pass")))
    assert no_rollback.status == WRONG and "positions" in no_rollback.message
    wrong_tokens = ex.check_verify_step(_exec(src.replace("n + m + 2", "n + m + 1").replace(
        "return drafts[:m] + [choice[m]]", "return drafts[:m]")))
    assert wrong_tokens.status == WRONG and "main model's own choice" in wrong_tokens.message
    assert ex.check_verify_step(lambda model, cache, x_n, drafts: ___).status == NOT_ATTEMPTED
    assert ex.check_verify_step("verify_greedy").status == WRONG


# ------------------------------------------------------------------------------------------------ 8.4
def test_84_verify_cost():
    r = ex.check_verify_cost(___)
    assert r.status == NOT_ATTEMPTED and "1.85" not in r.message and "/" not in r.message
    assert ex.check_verify_cost((1 + 0.85) / 1.8 - 1).status == RIGHT
    assert ex.check_verify_cost(0.028).status == RIGHT
    assert ex.check_verify_cost(0.03).status == RIGHT                    # "about 3 %", as the ✓ itself says
    assert ex.check_verify_cost(0.035).status == WRONG
    pct = ex.check_verify_cost(2.78)
    assert pct.status == WRONG and "percentage" in pct.message
    diff = ex.check_verify_cost(0.05)
    assert diff.status == WRONG and "difference" in diff.message
    upside = ex.check_verify_cost(1.8 / 1.85 - 1)
    assert upside.status == WRONG and "upside down" in upside.message
    ninety = ex.check_verify_cost(1.9 / 1.8 - 1)
    assert ninety.status == WRONG and "90 %" in ninety.message
    assert ex.check_verify_cost(0.3).status == WRONG


def test_84_one_plus_c_is_named():
    """Learner report: 1.0278 (1 + c instead of c) got only the generic "not it"."""
    r = ex.check_verify_cost((1 + 0.85) / 1.8)
    assert r.status == WRONG and "1 + c" in r.message and "extra part" in r.message
    assert "is not it" not in r.message
    assert "1 + c" in ex.check_verify_cost(1.0278).message


def test_hints_never_state_the_formula():
    for check in (ex.check_tokens_per_forward_prediction, ex.check_topk_draft, ex.check_verify_step,
                  ex.check_verify_cost):
        for text in (check.hint, *check.more):
            assert "normalise(" not in text and "min(1" not in text and "n + m + 1" not in text
            assert "1.85" not in text and "(1 + a)" not in text


def test_stored_notebook_exercises_are_unattempted():
    assert_stored_unattempted(NOTEBOOK, 8, ("8.1", "8.2", "8.4"), bug_hunts=("8.3",))


def test_81_stored_chapter_hides_the_measurement_until_predicted():
    """Learner report: running the measurement with the prediction still ___ showed the answer (4.17). The stored
    notebook shows the hidden note instead of the rates, the figure and this model's per-position gains."""
    texts = output_texts(NOTEBOOK)
    assert sum("Hidden until you predict" in t and "8.1" in t for t in texts) >= 3
    assert not any("mean accepted length" in t for t in texts)
    assert not any("this model, per extra draft position" in t for t in texts)


def test_placeholder_is_imported_once_in_the_first_code_cell():
    """Learner report: `from … import ___` sat in the cell whose prediction the learner replaces."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    imports = [i for i, src in enumerate(code) for line in src.splitlines()
               if line.startswith(("from ", "import ")) and "___" in line]
    assert imports == [0]
