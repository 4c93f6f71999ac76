"""Exercise checkers of chapter 07 (Multi-Token Prediction; exercises 7.1–7.3), on the never-raising pattern
of :mod:`dsv3_lessons.course.common.checking`. Oracles: :func:`dsv3_lessons.model.mtp.mtp_labels` on packed windows,
and closed-form counts (V3 report §2.2, eqs. 24–25)."""
from __future__ import annotations

import torch

from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_labels
from dsv3_lessons.course.common.checking import (___, Wrong, as_number, checker, close, is_placeholder)  # noqa: F401  (``___``: notebook)
from dsv3_lessons.course.ch07_mtp.experiments import pack_documents

__all__ = ["check_depth_labels", "check_label_count", "check_mtp_loss", "EX72_DOCS", "EX73"]

#: Exercise 7.2: documents packed into one window (token counts).
EX72_DOCS = (20, 30, 15)
#: Exercise 7.3: λ, D, depth 1's summed CE (nats) over its unmasked labels, and the label counts.
EX73 = {"lam": 0.3, "D": 1, "ce_sum": 118.0, "depth1_labels": 59, "main_labels": 62}


def _windows():
    g = torch.Generator().manual_seed(0)
    for lengths in ((5, 4, 4), (9,), (3, 1, 6, 2), (2, 7, 5)):
        docs = [torch.randint(0, 50, (n,), generator=g).tolist() for n in lengths]
        yield pack_documents(docs)


@checker("7.1", hint="position i of depth k is trained on t_{i+k+1} = targets[:, i+k]; keep T−k positions, "
                     "then put −100 wherever doc_ids[:, i+k] differs from doc_ids[:, i].")
def check_depth_labels(fn):
    """``fn(targets [b, T], depth, doc_ids [b, T]) -> labels [b, T−depth]`` must equal ``mtp_labels``."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (depth_labels), got {type(fn).__name__}")
    for ids, targets, doc_ids in _windows():
        for depth in (1, 2):
            if targets.shape[1] <= depth:
                continue
            want = mtp_labels(targets, depth, doc_ids)
            got = fn(targets.clone(), depth, doc_ids.clone())
            if got is None or is_placeholder(got):
                raise NotImplementedError  # the body still holds ___ (or returns nothing): not attempted
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"return a tensor of labels, got {type(got).__name__}")
            if got.shape != want.shape:
                if got.shape == targets.shape:
                    raise Wrong(f"you return {tuple(got.shape)}: T labels; the last {depth} positions have no "
                                f"token t_{{i+{depth}+1}} in the window -- drop them (never wrap around)")
                raise Wrong(f"shape {tuple(got.shape)}, expected {tuple(want.shape)} ([batch, T − depth])")
            if torch.equal(got, want):
                continue
            if torch.equal(got, mtp_labels(targets, depth)):
                raise Wrong("your labels cross document boundaries: mask position i when doc_ids[:, i+depth] "
                            "differs from doc_ids[:, i]")
            t = targets.shape[1]
            if depth + 1 < t and torch.equal(got[:, :t - depth - 1], mtp_labels(targets, depth + 1, doc_ids)):
                raise Wrong("shifted once too often: targets are already t_{i+1}, so depth k needs "
                            "targets[:, i+k], not targets[:, i+k+1]")
            if torch.equal(got, mtp_labels(targets, depth - 1, doc_ids)[:, :t - depth]):
                raise Wrong("one shift short: that is what depth k−1 learns; depth k's label is targets[:, i+k]")
            raise Wrong(f"labels differ from the reference at depth {depth} for a window of {t} tokens "
                        f"(documents {doc_ids[0].tolist()}); check the −100 handling")
    return "labels right for depths 1 and 2 on four packed windows: shifted once per depth, tail dropped, " \
           "no label across a document boundary."


@checker("7.2", hint="a depth-k label at position i counts only if t_i and t_{i+k+1} lie in the same document: "
                     "a document of n tokens offers n − (k+1) such positions.")
def check_label_count(answer):
    """Depth-2 labels that count in a window packing documents of EX72_DOCS tokens."""
    x = as_number(answer, "the number of labels")
    right = sum(max(0, n - 3) for n in EX72_DOCS)
    t = sum(EX72_DOCS) - 1
    if x == right:
        return f"{right} of the window's {t} positions train depth 2."
    if x == t - 2:
        raise Wrong(f"{int(x)} drops only the window's tail; labels that fall into the next document are "
                    "ignored too")
    if x == sum(n - 1 for n in EX72_DOCS) or x == sum(n - 2 for n in EX72_DOCS):
        raise Wrong(f"{int(x)} is the count for the main model or depth 1; depth 2 looks 3 tokens ahead of t_i")
    raise Wrong(f"{answer!r} is not it: count, per document of n tokens, the positions i with i+3 still inside")


@checker("7.3", hint="L = (λ/D)·Σ_k CE_k, and CE_1 is the mean over depth 1's OWN unmasked labels.")
def check_mtp_loss(answer):
    """The weighted MTP loss term of EX73."""
    e = EX73
    x = as_number(answer, "the loss (nats per token)")
    right = e["lam"] / e["D"] * e["ce_sum"] / e["depth1_labels"]
    if close(x, right, rel=1e-3):
        return f"λ·CE_1 = {e['lam']}·{e['ce_sum'] / e['depth1_labels']:.1f} = {right:.2f} nats per token."
    if close(x, e["lam"] / e["D"] * e["ce_sum"] / e["main_labels"], rel=1e-3):
        raise Wrong("you divided by the main loss's label count: deep depths have fewer labels, so that "
                    "would shrink their loss; use depth 1's own count")
    if close(x, e["ce_sum"] / e["depth1_labels"], rel=1e-3):
        raise Wrong("that is CE_1 alone: the total loss adds it with weight λ/D")
    raise Wrong(f"{answer!r} is not it: mean CE over depth 1's labels, times λ/D")
