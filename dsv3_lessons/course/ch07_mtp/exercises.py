"""Exercise checkers of chapter 07 (Multi-Token Prediction; exercises 7.1–7.4), on the never-raising pattern of
:mod:`dsv3_lessons.course.common.checking`: "not attempted yet" + a nudge, ✗ + a diagnosis (and the hint ladder
behind ``hint("7.N")``), or ✓.

* 7.1 **variation**: depth-k labels for a packer that marks documents only by an end-of-document token (no
  ``doc_ids``), with an ignore index inside a document; oracle :func:`dsv3_lessons.model.mtp.mtp_labels` with the
  document ids the test builds itself.
* 7.2 **predict, then run**: how many depth-2 labels a packed window gives, checked against the window explorer's
  count (:func:`dsv3_lessons.course.ch07_mtp.widget.window_report`) and a closed form.
* 7.3 **explain with a number**: the MTP term under the course's convention (mean over the depth's own labels) and
  under eq. 24 as printed (÷ T), V3 report §2.2 eqs. 24–25.
* 7.4 **bug hunt**: :data:`BUG_7_4`, a depth loss whose labels are shifted twice (SPEC §9); the learner's fix is
  run against :func:`~dsv3_lessons.model.mtp.mtp_cross_entropy` of :func:`~dsv3_lessons.model.mtp.mtp_labels` on
  random packed windows.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_cross_entropy, mtp_labels
from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, close, is_placeholder

__all__ = ["check_eos_labels", "check_label_count", "check_mtp_term", "check_depth_loss", "EX72_DOCS", "EX73",
           "BUG_7_4", "unfixed_depth_loss", "eos_window"]

#: Exercise 7.2: documents packed into one window (token counts; 65 tokens, so T = 64 positions).
EX72_DOCS = (20, 30, 2, 13)
#: Exercise 7.3: λ, D, the window's T, depth 1's summed CE (nats) over its unmasked labels, and the label counts.
EX73 = {"lam": 0.3, "D": 1, "T": 64, "ce_sum": 118.0, "depth1_labels": 59, "main_labels": 62}

#: Exercise 7.4: the code shown in the notebook, with its one mistake.
BUG_7_4 = '''def depth_loss(logits_k, targets, depth, doc_ids):
    """Mean cross-entropy of MTP depth k over its own labels.
    logits_k: [b, T-k, V], row i predicts t_{i+k+1};
    targets: [b, T] with targets[:, i] = t_{i+1} (-100 = ignore);
    doc_ids: [b, T] document of each input t_i."""
    T = targets.shape[1]
    labels = torch.full(logits_k.shape[:2], -100)                          # [b, T-k]
    labels[:, :T - depth - 1] = targets[:, depth + 1:]                      # t_{i+k+1}
    labels[doc_ids[:, depth:] != doc_ids[:, :T - depth]] = -100             # never across documents
    return F.cross_entropy(logits_k.flatten(0, 1), labels.flatten(), ignore_index=-100)
'''


def _compile(source: str, name: str) -> Callable:
    namespace: dict[str, Any] = {"torch": torch, "F": F}
    exec(compile(source, f"<{name} as shipped>", "exec"), namespace)
    return namespace[name]


#: :data:`BUG_7_4` as a function.
unfixed_depth_loss = _compile(BUG_7_4, "depth_loss")


def _check_untouched(targets, mine_targets, ids=None, mine_ids=None) -> None:
    """✗ when the learner's function wrote into the caller's ``targets`` (or ``input_ids``): a slice such as
    ``targets[:, k:]`` is a view of the same memory, so masking it in place rewrites the main loss's labels."""
    changed = int((targets != mine_targets).sum())
    if changed:
        raise Wrong(f"your function changed the caller's targets ({changed} entries became other values): a slice "
                    f"of targets is a view of the same memory, and masking it in place rewrites the main model's "
                    f"labels too. Copy first (.clone())")
    if ids is not None and not torch.equal(ids, mine_ids):
        raise Wrong("your function changed the caller's input_ids; build the labels in a tensor of your own")


# ------------------------------------------------------------------------------------------- 7.1 (variation)
def eos_window(doc_lengths, eos: int = 0, vocab: int = 50, masked: tuple[int, int] | None = None,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A packed window whose documents each END with the token ``eos``: ``(input_ids, targets, doc_ids)``, ``[1, T]``.

    ``doc_lengths`` count tokens including the final EOS; other tokens are drawn from 1 … vocab−1. ``targets[:, i]``
    = t_{i+1}, −100 where t_i is an EOS (the next token starts another document) and on the ``masked`` span
    ``[start, stop)`` of positions (an ignore index inside a document, e.g. a masked prompt). ``doc_ids`` is what
    the learner must rebuild: the EOS belongs to the document it ends.
    """
    g = torch.Generator().manual_seed(seed)
    tokens = []
    for n in doc_lengths:
        tokens += torch.randint(1, vocab, (n - 1,), generator=g).tolist() + [eos]
    stream = torch.tensor(tokens)
    doc = torch.cat([torch.full((n,), j) for j, n in enumerate(doc_lengths)])
    targets = torch.where(stream[:-1] == eos, torch.tensor(IGNORE_INDEX), stream[1:])
    if masked is not None:
        targets[masked[0]:masked[1]] = IGNORE_INDEX
    return stream[:-1][None], targets[None], doc[:-1][None]


def _eos_cases():
    yield eos_window((5, 4, 6), masked=(6, 8), seed=1)
    yield eos_window((9, 3, 1, 7), seed=2)
    yield eos_window((4, 12), masked=(1, 3), seed=3)
    yield eos_window((5, 4, 2), seed=4)     # a boundary inside the last k positions: their labels stop there too
    yield eos_window((6, 3, 3), seed=5)


@checker("7.1", hint="without doc_ids, how can you tell from input_ids which document position i belongs to? "
                     "Decide which document the EOS token itself belongs to.",
         more=["number the documents along the window: the count of EOS tokens seen so far tells you where you are",
               "careful with the EOS itself: it ENDS its document, so it must not count towards its own position",
               "with a document id per position, mask the same way as in the chapter; keep using targets, so the "
               "−100 already inside a document survives"])
def check_eos_labels(fn) -> str:
    """Exercise 7.1: ``fn(input_ids [b, T], targets [b, T], depth, eos) -> labels [b, T − depth]``."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (eos_labels), got {type(fn).__name__}")
    for ids, targets, doc_ids in _eos_cases():
        t = ids.shape[1]
        for depth in (2, 1):          # depth 2 first: there an EOS counted in the next document differs from no mask
            want = mtp_labels(targets, depth, doc_ids)
            mine_ids, mine_targets = ids.clone(), targets.clone()
            got = call_learner(fn, mine_ids, mine_targets, depth, 0)
            _check_untouched(targets, mine_targets, ids, mine_ids)
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"return a tensor of labels, got {type(got).__name__}")
            if got.shape != want.shape:
                if got.shape == targets.shape:
                    raise Wrong(f"you return {t} labels per row: at depth {depth} the last {depth} position(s) have "
                                f"no label inside the window; drop them (never wrap around)")
                raise Wrong(f"shape {tuple(got.shape)}, expected {tuple(want.shape)}: one label per position that "
                            f"has one at depth {depth} ([batch, T − depth])")
            if torch.equal(got, want):
                continue
            next_doc = torch.cumsum(ids == 0, dim=1)                    # EOS counted in the NEXT document
            if torch.equal(got, mtp_labels(targets, depth, next_doc)) and depth > 1:
                raise Wrong("your document ids put each EOS in the next document: the EOS ENDS its document, so "
                            "the position holding it must not learn tokens beyond it, while the positions before it may still "
                            "learn the EOS itself")
            if torch.equal(got, mtp_labels(targets, depth)):
                raise Wrong("your labels cross document boundaries: after an EOS a new document starts, and a "
                            "position must not learn a token of the next document")
            if depth + 1 < t and torch.equal(got[:, :t - depth - 1], mtp_labels(targets, depth + 1, doc_ids)):
                raise Wrong("shifted once too often: targets already hold t_{i+1}, so depth k's label is "
                            "targets[:, i+k]")
            if torch.equal(got.masked_fill(targets[:, depth:] == IGNORE_INDEX, IGNORE_INDEX), want):
                raise Wrong("a label that targets marks −100 (inside a document) came back as a token: keep "
                            "the ignore index that targets already holds")
            diff = (got != want).nonzero()[0, 1].item()
            raise Wrong(f"at depth {depth}, position {diff} your label is {got[0, diff].item()} and should be "
                        f"{want[0, diff].item()} (window of {t} positions, EOS = 0: {ids[0].tolist()})")
    return ("depth 1 and 2 labels right on five EOS-packed windows: document ids rebuilt from the EOS tokens, no "
            "label across a document, the tail dropped, the −100 inside a document kept.")


# ------------------------------------------------------------------------------------------- 7.2 (prediction)
def _count(docs, depth: int) -> int:
    return sum(max(0, n - depth - 1) for n in docs)


@checker("7.2", hint="write your number before running the explorer cell. For one document, at which positions "
                     "does depth 2 still find its label inside the same document?",
         more=["depth 2 at position i learns t_{i+3}: both t_i and t_{i+3} must lie in the same document",
               "do it per document, then add; a document can contribute no label at all, but never a negative number"])
def check_label_count(prediction, counted=None, docs=EX72_DOCS) -> str:
    """Exercise 7.2: the learner's predicted number of depth-2 labels of ``docs``; ``counted`` is the explorer's
    count from the run (checked against the closed form, per document n − 3, at least 0)."""
    x = as_number(prediction, "your prediction (a number of labels)")
    right = _count(docs, 2)
    if counted is not None and not is_placeholder(counted) and int(as_number(counted, "the run's count")) != right:
        raise Wrong(f"the run counted {counted}, the closed form {right}: pass the explorer's depth-2 count")
    t = sum(docs) - 1
    if x == right:
        return (f"{right} depth-2 labels of the window's {t} positions: per document n − 3, and the {min(docs)}-token "
                f"document gives none.")
    if x == sum(n - 3 for n in docs):
        raise Wrong(f"{int(x)} lets the {min(docs)}-token document contribute a negative count; a document too "
                    f"short for depth 2 gives 0 labels")
    if x == _count(docs, 0):
        raise Wrong(f"{int(x)} is the main model's count (t_{{i+1}} in the same document); depth 2 looks further")
    if x == _count(docs, 1):
        raise Wrong(f"{int(x)} is depth 1's count (t_{{i+2}}); depth 2's label is t_{{i+3}}")
    if x == t - 2:
        raise Wrong(f"{int(x)} = T − 2 drops only the window's tail; a label that falls into the next document is "
                    f"masked too")
    if x == _count(docs, 3):
        raise Wrong(f"{int(x)} is one step too far (depth 3's count); depth k learns t_{{i+k+1}}")
    if x == t:
        raise Wrong(f"{int(x)} is every position of the window (T); depth 2 has no label at the window's last "
                    f"positions, nor where t_{{i+3}} lies in another document")
    n = len(docs)
    if any(x == t - per * m for per in (1, 2, 3) for m in (n, n - 1)):
        raise Wrong(f"{int(x)} takes the same number of positions off every document (or boundary); count inside "
                    f"each document which positions still find t_{{i+3}} in it -- a document too short loses fewer, "
                    f"because it has fewer to lose, and the window's end is a document's end too")
    raise Wrong(f"{prediction!r}: not it (the run counted {right}); redo it per document, then compare with the "
                f"explorer's rows")


# ------------------------------------------------------------------------------------------- 7.3 (number)
@checker("7.3", hint="give two numbers as a pair: (the course's MTP term, eq. 24's MTP term). What does each "
                     "convention divide depth 1's summed cross-entropy by?",
         more=["the course: a mean over the depth's own unmasked labels, then λ/D",
               "eq. 24 as printed: −(1/T)·Σ, with T the length of the input sequence, then λ/D (eq. 25)"])
def check_mtp_term(answer) -> str:
    """Exercise 7.3: ``(course, eq24)`` = the MTP term of :data:`EX73` under the course's per-depth mean and under
    eq. 24's ÷T (V3 report §2.2)."""
    e = EX73
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("give both numbers as a pair: (course_term, eq24_term)")
    course = as_number(answer[0], "the course's term")
    paper = as_number(answer[1], "eq. 24's term")
    w = e["lam"] / e["D"]
    right_course, right_paper = w * e["ce_sum"] / e["depth1_labels"], w * e["ce_sum"] / e["T"]
    ok_course, ok_paper = close(course, right_course, rel=1e-3), close(paper, right_paper, rel=1e-3)
    if ok_course and ok_paper:
        return (f"course {right_course:.3f}, eq. 24 {right_paper:.3f} nats per token: both are λ/D times depth 1's "
                f"summed CE; the course divides by its {e['depth1_labels']} own labels, the paper by T = {e['T']}. "
                f"Eq. 24 weighs a depth by how many labels it kept ({e['depth1_labels']}/{e['T']} here); at V3's "
                f"T = 4096 with D = 1 the two differ by about 0.02 %.")
    msgs = []
    if close(course, right_paper, rel=1e-3) and close(paper, right_course, rel=1e-3):
        raise Wrong("the two are swapped: the first number is the course's (÷ depth 1's own labels), the second "
                    "eq. 24's (÷ T)")
    if not ok_course:
        if close(course, e["ce_sum"] / e["depth1_labels"], rel=1e-3):
            msgs.append("the course's term: that is CE_1 alone; the total loss adds it with weight λ/D")
        elif close(course, right_paper, rel=1e-3):
            msgs.append("the course's term: that divides by T, which is eq. 24's convention; the course divides by "
                        "depth 1's own unmasked labels")
        elif close(course, w * e["ce_sum"] / (e["T"] - 1), rel=1e-3):
            msgs.append(f"the course's term: that divides by depth 1's {e['T'] - 1} positions (T − 1); the course "
                        f"divides by the labels that count, the masked ones left out")
        elif close(course, w * e["ce_sum"] / e["main_labels"], rel=1e-3):
            msgs.append(f"the course's term: that divides by the main loss's {e['main_labels']} labels; the course "
                        f"divides by depth 1's own count")
        else:
            msgs.append(f"the course's term: {course:g} is not λ/D × depth 1's mean CE")
    if not ok_paper:
        if close(paper, w * e["ce_sum"] / e["main_labels"], rel=1e-3):
            msgs.append(f"eq. 24's term: that divides by the main loss's label count ({e['main_labels']}); eq. 24 "
                        f"divides by T, the sequence length ({e['T']}), whatever is masked")
        elif close(paper, right_course, rel=1e-3):
            msgs.append("eq. 24's term: that is the course's per-depth mean; eq. 24 divides by T")
        elif close(paper, w * e["ce_sum"] / (e["T"] - 1), rel=1e-3):
            msgs.append(f"eq. 24's term: that divides by T − 1 = {e['T'] - 1}, depth 1's positions; eq. 24's 1/T is "
                        f"the sequence length as printed, T = {e['T']}")
        elif close(paper, e["ce_sum"] / e["T"], rel=1e-3):
            msgs.append("eq. 24's term: that is L^1_MTP alone; eq. 25 weighs it by λ/D")
        else:
            msgs.append(f"eq. 24's term: {paper:g} is not λ/D × (summed CE)/T")
    raise Wrong("; ".join(msgs))


# ------------------------------------------------------------------------------------------- 7.4 (bug hunt)
def _loss_cases():
    g = torch.Generator().manual_seed(74)
    # (7, 4, 2) and (5, 3, 1, 2): a document boundary inside the last k positions
    for lengths in ((6, 5, 7), (10,), (3, 1, 9, 4), (7, 4, 2), (5, 3, 1, 2)):
        docs = [torch.randint(0, 30, (n,), generator=g).tolist() for n in lengths]
        stream = torch.cat([torch.tensor(d) for d in docs])
        doc = torch.cat([torch.full((len(d),), j) for j, d in enumerate(docs)])
        targets = torch.where(doc[1:] == doc[:-1], stream[1:], torch.tensor(IGNORE_INDEX))[None]
        doc_ids = doc[:-1][None]
        for depth in (1, 2):
            logits = torch.randn(1, targets.shape[1] - depth, 30, generator=g)
            yield logits, targets, depth, doc_ids


def _reference_loss(logits, targets, depth, doc_ids):
    return mtp_cross_entropy(logits, mtp_labels(targets, depth, doc_ids))


@checker("7.4", hint="what does targets[:, i] already hold, and which token should row i of depth k learn? Check "
                     "one position of depth 1 by hand.",
         more=["targets is already shifted once: targets[:, i] = t_{i+1}",
               "so t_{i+k+1} sits at targets[:, i+k]; how far does the marked line shift?",
               "after the fix every row has a label slot: the labels span T − k positions, like the logits"])
def check_depth_loss(fn) -> str:
    """Exercise 7.4 (bug hunt): the learner's fixed ``depth_loss(logits_k [b, T−k, V], targets, depth, doc_ids)``."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (depth_loss), got {type(fn).__name__}")
    for logits, targets, depth, doc_ids in _loss_cases():
        mine_targets, mine_docs = targets.clone(), doc_ids.clone()
        got = call_learner(fn, logits.clone(), mine_targets, depth, mine_docs)
        _check_untouched(targets, mine_targets)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise Wrong(f"return the loss as a 0-d tensor, got "
                        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        want = _reference_loss(logits, targets, depth, doc_ids)
        value = got.detach().reshape(()).float()
        if torch.allclose(value, want, atol=1e-5):
            continue
        if torch.allclose(value, unfixed_depth_loss(logits, targets, depth, doc_ids), atol=1e-5):
            raise Wrong("the loss is still the shipped one: the labels are shifted twice (row i learns t_{i+k+2}), "
                        "and the last position is silently ignored")
        if torch.allclose(value, mtp_cross_entropy(logits, mtp_labels(targets, depth)), atol=1e-5):
            raise Wrong("the shift is right now, but the labels cross document boundaries: keep the document mask")
        labels = mtp_labels(targets, depth, doc_ids)
        keep = labels != IGNORE_INDEX
        if keep.any() and torch.allclose(value, F.cross_entropy(logits[keep], labels[keep], reduction="sum")
                                         / targets.shape[1], atol=1e-5):
            raise Wrong("that divides by T (eq. 24 as printed); this chapter's loss is the mean over the depth's own "
                        "labels, as the library computes it (§3)")
        if depth >= 1 and torch.allclose(value, mtp_cross_entropy(
                logits, mtp_labels(targets, depth - 1, doc_ids)[:, :targets.shape[1] - depth]), atol=1e-5):
            raise Wrong("one shift short: row i now learns t_{i+k}, what depth k − 1 learns")
        t = targets.shape[1]
        short = labels.clone()                       # the last label left unmasked (a mask one position short)
        short[:, -1] = targets[:, -1]
        if not torch.equal(short, labels) and torch.allclose(value, mtp_cross_entropy(logits, short), atol=1e-5):
            raise Wrong(f"all labels right but the last one (row {t - depth - 1}): your document mask never looks at "
                        f"it, and its label lies in another document (documents {doc_ids[0].tolist()})")
        raise Wrong(f"depth {depth}: your loss {value.item():.5f}, the library's {want.item():.5f} (documents "
                    f"{doc_ids[0].tolist()}); compare your labels with mtp_labels(targets, depth, doc_ids)")
    return ("equal to the library's depth loss on packed windows at depths 1 and 2: labels shifted once "
            "(targets[:, i+k]), T − k of them, none across a document.")
