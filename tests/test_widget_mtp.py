"""Chapter 7's packed-window explorer: its plain function against independent oracles (a loop over the token stream
and closed-form counts), the widget driven headless, and every corner of its controls."""
import itertools
import math

import pytest

from dsv3_lessons.course.ch07_mtp.experiments import pack_documents
from dsv3_lessons.course.ch07_mtp.widget import (MAX_DEPTHS, MAX_TOKENS, WindowExplorer, parse_lengths,
                                                 plot_window, window_report)
from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_labels


def _loop_labels(lengths, k):
    """Depth k's label per position by walking the stream: t_{i+k+1} if it lies in t_i's document, else −100."""
    doc = [j for j, n in enumerate(lengths) for _ in range(n)]
    t = len(doc) - 1
    return [i + k + 1 if doc[i + k + 1] == doc[i] else IGNORE_INDEX for i in range(t - k)]


@pytest.mark.parametrize("lengths", [(5, 4, 4), (20, 30, 2, 13), (1, 1), (3, 1, 9, 4), (128,), (2, 2, 2)])
def test_report_matches_mtp_labels_and_a_loop(lengths):
    r = window_report(lengths, depths=MAX_DEPTHS, lam=0.3)
    docs, start = [], 0
    for n in lengths:
        docs.append(list(range(start, start + n)))
        start += n
    _, targets, doc_ids = pack_documents(docs)
    assert r.T == sum(lengths) - 1
    for k in range(MAX_DEPTHS + 1):
        if k >= r.T:
            assert r.positions[k] == 0 and r.counts[k] == 0
            continue
        lib = mtp_labels(targets, k, doc_ids)[0].tolist()
        assert list(r.labels[k][:r.T - k]) == lib == _loop_labels(lengths, k)
        assert all(v == -1 for v in r.labels[k][r.T - k:])                         # the dropped tail
        assert r.positions[k] == r.T - k
        assert r.counts[k] == sum(max(0, n - k - 1) for n in lengths)              # closed form per document


def test_loss_terms_closed_form():
    r = window_report("20, 30, 2, 13", depths=2, lam=0.3, ce=2.0)
    assert r.counts == (61, 57, 54)
    assert math.isclose(r.term_course, 0.3 / 2 * (2.0 + 2.0))
    assert math.isclose(r.term_eq24, 0.3 / 2 * (2.0 * 57 / 64 + 2.0 * 54 / 64))
    # a depth with no label adds nothing under either convention (and no NaN)
    short = window_report((1, 1, 3), depths=3, lam=0.3, ce=2.0)
    assert short.counts[2:] == (0, 0)
    assert math.isclose(short.term_course, 0.3 / 3 * 2.0) and math.isfinite(short.term_eq24)


def test_widget_follows_its_controls():
    w = WindowExplorer()
    assert w.last_result == window_report(w.docs.value, w.depths.value, w.lam.value)
    w.docs.value = "5, 4, 4"
    w.depths.value = 1
    assert w.last_result.counts == (10, 7)
    assert "depth 1 7 of 11" in w.readout.value and f"{w.last_result.term_course:.3f}" in w.readout.value
    png = w.image.value
    w.lam.value = 0.1
    assert w.image.value == png                                  # λ changes the readout, not the grid
    assert f"{window_report('5, 4, 4', 1, 0.1).term_eq24:.3f}" in w.readout.value
    with pytest.raises(ValueError, match="whole numbers"):
        w.docs.value = "5, four"
    assert w.last_error is not None and "error" in w.readout.value
    w.docs.value = "9"
    assert w.last_error is None and w.last_result.counts == (8, 7)


def test_bad_input_names_the_argument():
    for bad, words in (("", "positive"), ("0, 3", "positive"), ("200", "tokens in all"), ("1", "tokens in all"),
                       ("1,1,1,1,1,1,1,1,1", "at most")):
        with pytest.raises(ValueError, match=words):
            parse_lengths(bad)
    with pytest.raises(ValueError, match="depths"):
        window_report("5, 4", depths=4)
    with pytest.raises(ValueError, match="lam"):
        window_report("5, 4", lam=0)


def test_corner_sweep():
    """All min/max corners of the controls: shortest and longest windows, fewest and most documents, D = 1 and 3,
    λ at both ends of the slider: no exception, finite terms, counts within the positions."""
    w = WindowExplorer()
    windows = ("1, 1", str(MAX_TOKENS), ",".join(["1"] * 8), ",".join(["16"] * 8))
    for docs, depths, lam in itertools.product(windows, (w.depths.min, w.depths.max), (w.lam.min, w.lam.max)):
        r = window_report(docs, depths, lam)
        assert math.isfinite(r.term_course) and math.isfinite(r.term_eq24)
        assert all(0 <= c <= p for c, p in zip(r.counts, r.positions))
        assert r.term_eq24 <= r.term_course + 1e-12                 # eq. 24 never weighs a depth more
        w.docs.value, w.depths.value, w.lam.value = docs, depths, lam
        assert w.last_error is None and w.image.value[:4] == b"\x89PNG"
    fig = plot_window(window_report(",".join(["16"] * 8), 3))
    assert len(fig.axes) == 1


@pytest.mark.parametrize("lengths", [(5, 4, 4), (3, 1, 6)])
def test_label_diagram_cells_follow_the_documents(lengths):
    """draw_mtp_labels: the cell of depth k at position i names t_{i+k+1} when it lies in t_i's document (else
    −100), coloured like the inputs of that token's document. Oracle: a walk over the document lengths."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from dsv3_lessons.course.ch07_mtp import draw_mtp_labels

    depths = 2
    dg = draw_mtp_labels(list(lengths), depths)
    doc = [j for j, n in enumerate(lengths) for _ in range(n)]
    t = len(doc) - 1
    text_at = {t_.get_position(): t_.get_text() for t_ in dg.ax.texts}
    face_at = {(round(p.get_x() + p.get_width() / 2, 6), round(p.get_y() + p.get_height() / 2, 6)):
               to_hex(p.get_facecolor()) for p in dg.ax.patches}

    def face(name):
        b = dg.boxes[name]
        return face_at[(round(b.x, 6), round(b.y, 6))]

    doc_colour = {doc[i]: face(f"t{i}") for i in range(t)}
    for k in range(depths + 1):
        for i in range(t):
            b = dg.boxes[f"r{k}_{i}"]
            j = i + k + 1
            if j <= t and doc[j] == doc[i]:
                assert text_at[(b.x, b.y)] == f"$t_{{{j}}}$" and face(f"r{k}_{i}") == doc_colour[doc[j]], (k, i)
            else:
                assert text_at[(b.x, b.y)] == "−100", (k, i)
    plt.close(dg.fig)
