"""The FP8 widget driven headless: setting .value recomputes numbers, readout and figure synchronously."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from dsv3_lessons.course.ch09_fp8.widget import FP8Widget, fp8_report, fp8_widget  # noqa: E402


def test_widget_follows_its_controls():
    w = fp8_widget(outlier=1.0, granularity="tile")
    calm = w.last_result
    png0 = w.image.value
    # no outliers: all granularities equal within rounding noise, about E4M3's 2^-4 / 2 mean error
    assert all(0.015 < r.rel_error < 0.03 and r.underflow == 0 for r in calm.values())
    w.outlier.value = 1e4
    loud = w.last_result
    assert loud["tensor"].rel_error > 3 * loud["tile"].rel_error
    assert loud["tensor"].underflow > 0.03 > loud["tile"].underflow
    assert w.image.value != png0 and "flushed to zero" in w.readout.value
    w.fmt.value = "e5m2"                   # wider range, fewer mantissa bits: no underflow, but 2x the error
    e5 = w.last_result
    assert e5["tensor"].underflow == 0 and e5["tile"].rel_error > 1.7 * calm["tile"].rel_error
    w.granularity.value = "block"
    assert "→ 128×128 blocks" in w.readout.value
    ax = w.figure.axes[0]
    assert ax.get_ylim() == pytest.approx((1e-3, 10))  # fixed axes while the controls move
    assert repr(w).startswith("[FP8Widget: run this cell")


def test_e4m3fnuz_has_less_headroom_than_e4m3():
    a = fp8_report(1e4, "e4m3")["tensor"]
    b = fp8_report(1e4, "e4m3fnuz")["tensor"]
    assert b.rel_error == pytest.approx(a.rel_error, rel=0.2)   # same bits, the grid is shifted by one binade


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="granularity"):
        FP8Widget(granularity="row")
    with pytest.raises(ValueError, match="fmt"):
        FP8Widget(fmt="int8")
    with pytest.raises(ValueError, match="outlier"):
        fp8_report(0.5)


def test_labels_name_what_they_show_and_the_slider_is_fine_enough():
    """The learner's review: bars said "6% → 0", the legend "×56234.1", and the slider moved ×1.78 per step."""
    from dsv3_lessons.course.ch09_fp8.experiments import outlier_label
    assert (outlier_label(56234.1), outlier_label(1e4), outlier_label(316.2), outlier_label(1.0)) == \
        ("5.6e4", "1.0e4", "316", "1")
    w = fp8_widget(outlier=1e4, granularity="tensor")
    assert 10 ** w.outlier.step <= 1.15 and w.outlier.base == 10          # still a log scale, ≤ ×1.15 per step
    legend = [t.get_text() for t in w.figure.axes[0].get_legend().get_texts()]
    assert "outlier channels (×1.0e4)" in legend and "×1.0e4" in w.readout.value
    bars = [t.get_text() for t in w.figure.axes[1].texts]
    flushed = w.last_result["tensor"].underflow
    assert flushed > 0.03 and f"{flushed:.0%} flushed" in bars[0]
    assert all("→" not in b for b in bars)


def test_controls_have_their_labels_on_the_left():
    """Browser review item 11: the toggle buttons' labels sat on their own line above the buttons."""
    import ipywidgets as widgets

    w = fp8_widget()
    rows = [c for c in w.children if isinstance(c, widgets.HBox)]
    assert [type(r.children[0]).__name__ for r in rows] == ["Label"] * 3
    assert [r.children[1] for r in rows] == [w.outlier, w.granularity, w.fmt]
    assert all(not c.description for c in (w.outlier, w.granularity, w.fmt))   # no second label above
    assert len({r.children[0].layout.width for r in rows}) == 1                # one label column


def test_text_stays_clear_at_the_slider_ends():
    """Browser review item 4: at ×1e5 the legend sat on the dots and a bar label crossed the y-axis; at ×1
    the three bar labels merged into one line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for outlier in (1.0, 1e5):
        for fmt in ("e4m3", "e5m2", "e4m3fnuz"):
            w = fp8_widget(outlier=outlier, granularity="tensor", fmt=fmt)
            fig = w.figure
            FigureCanvasAgg(fig).draw()
            r = fig.canvas.get_renderer()
            ax1, ax2 = fig.axes
            leg = ax1.get_legend().get_window_extent(r)
            pts = ax1.transData.transform(ax1.collections[0].get_offsets())
            inside = (pts[:, 0] > leg.x0) & (pts[:, 0] < leg.x1) & (pts[:, 1] > leg.y0) & (pts[:, 1] < leg.y1)
            assert not inside.any(), (outlier, fmt, "legend over the channel dots")
            frame = ax2.get_window_extent(r)
            boxes = [t.get_window_extent(r) for t in ax2.texts]
            assert all(b.x0 > frame.x0 and b.x1 < frame.x1 and b.y1 < frame.y1 for b in boxes), (outlier, fmt)
            assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), (outlier, fmt)


def test_blitted_png_equals_a_full_render():
    """The widget re-renders only the moving artists (BlitPNG); what it shows must be the figure itself."""
    import io

    import numpy as np
    from PIL import Image

    w = fp8_widget(outlier=1e4)
    w.outlier.value = 316.0
    w.granularity.value = "tile"
    fast = np.asarray(Image.open(io.BytesIO(w.image.value)).convert("RGB")).astype(int)
    buf = io.BytesIO()
    w.figure.savefig(buf, format="png", dpi=w.figure.dpi)
    full = np.asarray(Image.open(buf).convert("RGB")).astype(int)
    assert fast.shape == full.shape
    differ = (np.abs(fast - full).max(axis=2) > 40).mean()
    assert differ < 0.003, f"{differ:.2%} of the pixels differ from a full render"


@pytest.mark.parametrize("outlier", [1.0, 1e5])
@pytest.mark.parametrize("granularity", ["tensor", "tile", "block"])
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e4m3fnuz"])
def test_corners_give_finite_numbers(outlier, granularity, fmt):
    """Robustness sweep (issue 18): every min/max corner of the controls, through the plain function and the
    widget."""
    import math

    reports = fp8_report(outlier, fmt)
    for r in reports.values():
        assert math.isfinite(r.rel_error) and 0 <= r.underflow <= 1 and bool(r.channel_error.isfinite().all())
    w = fp8_widget(outlier=outlier, granularity=granularity, fmt=fmt)
    assert w.last_error is None and w.image.value[:4] == b"\x89PNG"


def test_flushed_share_below_one_percent_keeps_a_decimal():
    """Learner report: the 1×128-tiles bar read "1% flushed" for 0.64 %."""
    from dsv3_lessons.course.ch09_fp8.figures import share_label
    assert [share_label(v) for v in (0.0, 0.0001, 0.0064, 0.0094, 0.0139, 0.0613)] == \
        ["0%", "<0.1%", "0.6%", "0.9%", "1%", "6%"]
    w = fp8_widget(outlier=1e4, granularity="tile")
    tiles = w.last_result["tile"].underflow
    assert 0 < tiles < 0.01
    bars = [t.get_text() for t in w.figure.axes[1].texts]
    assert f"{tiles:.1%} flushed" in bars[1] and "1% flushed" not in bars[1]
