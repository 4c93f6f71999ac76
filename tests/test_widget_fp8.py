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
    assert ax.get_ylim() == pytest.approx((1e-3, 3))   # fixed axes while the controls move
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
    assert flushed > 0.03 and f"{flushed:.0%} flushed to 0" in bars[0]
    assert all("→" not in b for b in bars)
