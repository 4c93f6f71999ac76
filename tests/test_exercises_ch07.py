"""Exercise checkers of chapter 7: placeholder (also a half-filled body), the right answer, typical wrong answers with
their diagnoses, and the bug hunt's unfixed code (the text the notebook shows) judged ✗."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, ___, hint
from dsv3_lessons.course.ch07_mtp.exercises import (BUG_7_4, EX72_DOCS, EX73, check_depth_loss, check_eos_labels,
                                                    check_label_count, check_mtp_term, eos_window,
                                                    unfixed_depth_loss)
from dsv3_lessons.course.ch07_mtp.widget import window_report
from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_cross_entropy, mtp_labels
from exercise_helpers import assert_wrong

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ---------------------------------------------------------------- 7.1 variation: labels from EOS tokens
def _doc_ids_from_eos(ids, eos):
    is_eos = (ids == eos).long()
    return torch.cumsum(is_eos, dim=1) - is_eos          # an EOS belongs to the document it ends


def right_eos_labels(input_ids, targets, depth, eos):
    doc = _doc_ids_from_eos(input_ids, eos)
    t = targets.shape[1]
    labels = targets[:, depth:].clone()
    labels[doc[:, depth:] != doc[:, :t - depth]] = -100
    return labels


def test_eos_window_oracle():
    # the window builder against a hand count: documents of 5, 4, 6 tokens (each ending in EOS = 0)
    ids, targets, doc = eos_window((5, 4, 6))
    assert ids.shape == (1, 14) and (ids[0, [4, 8]] == 0).all()
    assert torch.equal(doc[0], torch.tensor([0] * 5 + [1] * 4 + [2] * 5))
    assert targets[0, 4] == IGNORE_INDEX and targets[0, 3] == 0          # predicting the EOS counts, crossing it not
    assert torch.equal(_doc_ids_from_eos(ids, 0), doc)


def test_eos_labels_checker_placeholder_and_right():
    assert check_eos_labels(___).status == NOT_ATTEMPTED

    def half_filled(input_ids, targets, depth, eos):          # review: raised TypeError instead of "not attempted"
        labels = targets[:, ___:].clone()
        labels[...] = -100
        return labels

    assert check_eos_labels(half_filled).status == NOT_ATTEMPTED

    def returns_placeholder(input_ids, targets, depth, eos):
        return ___

    assert check_eos_labels(returns_placeholder).status == NOT_ATTEMPTED
    assert check_eos_labels(right_eos_labels).status == RIGHT


def test_eos_labels_checker_diagnoses():
    assert_wrong(check_eos_labels(lambda ids, t, k, e: t[:, k:].clone()), "cross document boundaries")

    def eos_in_next_doc(ids, t, k, e):
        doc = torch.cumsum((ids == e).long(), dim=1)
        labels = t[:, k:].clone()
        labels[doc[:, k:] != doc[:, :t.shape[1] - k]] = -100
        return labels

    assert_wrong(check_eos_labels(eos_in_next_doc), "next document", "ENDS its document")
    full = check_eos_labels(lambda ids, t, k, e: t.clone())
    assert_wrong(full, "drop them")
    assert "{" not in full.message and "i+1+1" not in full.message          # review: "t_{i+1+1}" rendered raw

    def shifted_twice(ids, t, k, e):
        return torch.cat([right_eos_labels(ids, t, k + 1, e), torch.full_like(t[:, :1], -100)], dim=1)

    assert_wrong(check_eos_labels(shifted_twice), "once too often")

    def from_input_ids(ids, t, k, e):                         # loses the −100 inside a document
        labels = torch.cat([ids[:, k + 1:], t[:, -1:]], dim=1)
        doc = _doc_ids_from_eos(ids, e)
        labels[doc[:, k:] != doc[:, :t.shape[1] - k]] = -100
        labels[t[:, k:] == -100] = torch.where(labels == -100, labels, labels)[t[:, k:] == -100]
        return labels

    assert_wrong(check_eos_labels(from_input_ids), "−100")
    assert_wrong(check_eos_labels(lambda ids, t, k, e: 1 / 0), "ZeroDivisionError")
    assert_wrong(check_eos_labels("labels"), "pass your function")


def test_eos_labels_checker_catches_a_missing_clone():
    # learner report l67: a slice of targets masked in place (no .clone()) got ✓ while rewriting the caller's targets
    def in_place(ids, t, k, e):
        doc = _doc_ids_from_eos(ids, e)
        labels = t[:, k:]                                     # a view: the masking below writes into t
        labels[doc[:, k:] != doc[:, :t.shape[1] - k]] = -100
        return labels

    ids, targets, _ = eos_window((5, 4, 6), masked=(6, 8), seed=1)
    before = targets.clone()
    assert torch.equal(in_place(ids, targets, 2, 0), right_eos_labels(ids, before, 2, 0))   # the labels are right
    assert not torch.equal(targets, before)                                               # ... the caller's are not
    assert_wrong(check_eos_labels(in_place), "changed the caller's targets", ".clone()")

    def writes_ids(ids, t, k, e):
        labels = right_eos_labels(ids, t, k, e)
        ids[ids == e] = -1
        return labels

    assert_wrong(check_eos_labels(writes_ids), "changed the caller's input_ids")


# ---------------------------------------------------------------- 7.2 prediction: depth-2 label count
def test_label_count_checker():
    right = sum(max(0, n - 3) for n in EX72_DOCS)              # closed form: n − (k+1) per document, at least 0
    counted = window_report(EX72_DOCS, depths=2).counts[2]
    assert counted == right
    assert check_label_count(___, counted).status == NOT_ATTEMPTED
    r = check_label_count(right, counted)
    assert r.status == RIGHT and str(right) in r.message
    main, depth1 = sum(n - 1 for n in EX72_DOCS), sum(n - 2 for n in EX72_DOCS)
    assert_wrong(check_label_count(main, counted), f"{main} is the main model's count")        # review: 62 vs 59
    assert_wrong(check_label_count(depth1, counted), f"{depth1} is depth 1's count")
    assert_wrong(check_label_count(sum(n - 3 for n in EX72_DOCS), counted), "negative")
    assert_wrong(check_label_count(sum(EX72_DOCS) - 3, counted), "tail")
    # learner report l67: 64, 60, 56 and 55 got only "redo it per document"
    assert_wrong(check_label_count(64, counted), "every position of the window")
    for x in (60, 56, 55):                       # T − 4 (one per document), T − 8 (two), T − 9 (three per boundary)
        assert_wrong(check_label_count(x, counted), "same number of positions off every document")
    assert_wrong(check_label_count(7, counted), "not it")
    assert_wrong(check_label_count(right, right + 1), "the run counted")


# ---------------------------------------------------------------- 7.3 the two normalisations
def test_mtp_term_checker():
    w = EX73["lam"] / EX73["D"]
    course, paper = w * EX73["ce_sum"] / EX73["depth1_labels"], w * EX73["ce_sum"] / EX73["T"]
    assert (round(course, 3), round(paper, 4)) == (0.6, 0.5531)
    assert check_mtp_term(___).status == NOT_ATTEMPTED
    assert check_mtp_term((___, 0.55)).status == NOT_ATTEMPTED
    r = check_mtp_term((course, paper))
    assert r.status == RIGHT and "T = 64" in r.message and "own labels" in r.message
    # review: 0.3·118/62 was called "would shrink their loss"; now it is explained as the wrong divisor for eq. 24
    assert_wrong(check_mtp_term((course, w * EX73["ce_sum"] / EX73["main_labels"])), "eq. 24", "sequence length (64)")
    assert_wrong(check_mtp_term((paper, course)), "swapped")
    assert_wrong(check_mtp_term((course, course)), "eq. 24's term", "per-depth mean")
    assert_wrong(check_mtp_term((EX73["ce_sum"] / EX73["depth1_labels"], paper)), "CE_1 alone")
    assert_wrong(check_mtp_term((paper, paper)), "the course's term", "eq. 24's convention")
    # learner report l67: T − 1 = 63 got a generic message
    assert_wrong(check_mtp_term((course, w * EX73["ce_sum"] / 63)), "T − 1 = 63", "T = 64")
    assert_wrong(check_mtp_term((w * EX73["ce_sum"] / 63, paper)), "63 positions (T − 1)", "masked ones left out")
    assert_wrong(check_mtp_term(0.6), "pair")


# ---------------------------------------------------------------- 7.4 bug hunt: labels shifted twice
def fixed_depth_loss(logits_k, targets, depth, doc_ids):
    T = targets.shape[1]
    labels = torch.full(logits_k.shape[:2], -100)
    labels[:, :] = targets[:, depth:]
    labels[doc_ids[:, depth:] != doc_ids[:, :T - depth]] = -100
    return F.cross_entropy(logits_k.flatten(0, 1), labels.flatten(), ignore_index=-100)


def test_depth_loss_checker():
    assert check_depth_loss(___).status == NOT_ATTEMPTED
    assert check_depth_loss(fixed_depth_loss).status == RIGHT
    assert check_depth_loss(lambda lg, t, k, d: mtp_cross_entropy(lg, mtp_labels(t, k, d))).status == RIGHT
    assert_wrong(check_depth_loss(unfixed_depth_loss), "shifted twice")

    def no_doc_mask(lg, t, k, d):
        return mtp_cross_entropy(lg, mtp_labels(t, k))

    assert_wrong(check_depth_loss(no_doc_mask), "document boundaries")

    def divided_by_t(lg, t, k, d):
        lab = mtp_labels(t, k, d)
        keep = lab != IGNORE_INDEX
        return F.cross_entropy(lg[keep], lab[keep], reduction="sum") / t.shape[1]

    assert_wrong(check_depth_loss(divided_by_t), "eq. 24")
    assert_wrong(check_depth_loss(lambda lg, t, k, d: lg.sum(-1)), "0-d tensor")


def test_depth_loss_checker_catches_a_missing_clone():
    # learner report l67: the fix written as labels = targets[:, depth:] (no .clone()) plus the masked assignment got ✓;
    # in training it corrupts the main loss's labels
    def view_fix(logits_k, targets, depth, doc_ids):
        T = targets.shape[1]
        labels = targets[:, depth:]
        labels[doc_ids[:, depth:] != doc_ids[:, :T - depth]] = -100
        return F.cross_entropy(logits_k.flatten(0, 1), labels.flatten(), ignore_index=-100)

    r = check_depth_loss(view_fix)
    assert_wrong(r, "changed the caller's targets", ".clone()")
    assert "entries" in r.message


def test_depth_loss_unfixed_code_is_shown_verbatim():
    nb = json.loads((NOTEBOOKS / "07_multi_token_prediction.ipynb").read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert any(BUG_7_4.strip() in c for c in cells), "the notebook must show exercise 7.4's code as BUG_7_4"


def test_hint_ladders_never_print_the_formula():
    for ex in ("7.1", "7.2", "7.3", "7.4"):
        texts = [hint(ex) for _ in range(4)]
        assert texts[0].startswith("Hint 1/") and "solutions" in texts[-1]
        for t in texts:
            assert "cumsum" not in t and "targets[:, depth:]" not in t and "118" not in t


# ---------------------------------------------------------------- round-3 learner probes: the last position
def _mask_one_short(labels, doc, depth):
    """The learner's mask: compares doc[i] with doc[i + k + 1], so the last row is never checked."""
    t = doc.shape[1]
    labels[:, :t - depth - 1][doc[:, depth + 1:] != doc[:, :t - depth - 1]] = IGNORE_INDEX
    return labels


def test_a_mask_that_skips_the_last_row_is_caught():
    def depth_loss(lg, t, k, d):
        return F.cross_entropy(lg.flatten(0, 1), _mask_one_short(t[:, k:].clone(), d, k).flatten(),
                               ignore_index=IGNORE_INDEX)

    assert_wrong(check_depth_loss(depth_loss), "all labels right but the last one")

    def eos_labels(ids, t, k, eos):
        return _mask_one_short(t[:, k:].clone(), _doc_ids_from_eos(ids, eos), k)

    assert_wrong(check_eos_labels(eos_labels), "should be -100")

