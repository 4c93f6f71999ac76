"""Chapter 3 widget driven headless: set a control's ``.value``, assert the recomputed numbers and figure.

Oracles: closed-form angles (t − j)·θ_i, θ_i = 10000^(-2i/64) blended by YaRN's ramp ((i − 10)/13 for V3),
and the identity that plain RoPE (factor 1) leaves the frequencies unchanged.
"""
import math

import ipywidgets as widgets
import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from dsv3_lessons.course.ch03_rope.widget import rope_widget  # noqa: E402


def theta(i, s=40.0):
    base = 10000.0 ** (-2 * i / 64)
    if s == 1:
        return base
    r = min(max((i - 10) / 13, 0.0), 1.0)
    return base * (1 - r) + base / s * r


@pytest.fixture()
def w():
    return rope_widget(query_pos=12, key_pos=4, freq_index=16, yarn_factor=40.0)


def test_initial_state(w):
    r = w.last_result
    assert (r.query_pos, r.key_pos, r.freq_index, r.yarn_factor) == (12, 4, 16, 40.0)
    assert r.theta_yarn == pytest.approx(theta(16), rel=1e-5)
    assert w.freq_index.max == 31 and w.yarn_factor.min == 1.0
    assert len(w.last_figure.axes) == 3


def test_moving_the_query_updates_angle_score_and_figure(w):
    before = w.last_result
    w.query_pos.value = 300
    r = w.last_result
    assert r is not before and r.query_pos == 300
    assert r.angle_between == pytest.approx(math.remainder(296 * theta(16), 2 * math.pi), abs=1e-4)
    assert r.score == pytest.approx(r.score_shifted, abs=2e-3)
    assert r.score != pytest.approx(before.score, abs=1e-3)
    assert "t − j = 296" in w.summary.value
    marks = [ln for ln in w.last_figure.axes[1].get_lines() if ln.get_label().startswith("$|t-j|$")]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == 296


def test_key_after_query_and_equal_positions(w):
    w.key_pos.value = 20
    r = w.last_result
    assert r.angle_between == pytest.approx(math.remainder(-8 * theta(16), 2 * math.pi), abs=1e-5)
    assert r.score == pytest.approx(r.score_shifted, abs=1e-3)
    w.key_pos.value = 12                                   # m = n: the pairs keep their relative angle
    assert w.last_result.angle_between == pytest.approx(0.0, abs=1e-9)


def test_key_after_query_says_a_causal_model_masks_the_pair(w):
    """Learner report: j > t showed "t − j = −8" without saying a causal model never scores that pair."""
    w.key_pos.value = 20                                   # query at 12: the key comes after it
    assert "causal model never scores this pair" in w.summary.value
    assert "t − j = -8" in w.summary.value
    w.key_pos.value = 12
    assert "causal" not in w.summary.value


def test_yarn_factor_one_is_plain_rope(w):
    w.yarn_factor.value = 1.0
    r = w.last_result
    assert torch.equal(r.inv_freq_yarn, r.inv_freq_rope)
    assert r.theta_yarn == pytest.approx(theta(16, 1.0), rel=1e-6) and r.mscale == 1.0
    # the YaRN curve stays drawn (the figure is updated in place) and its legend says it is plain RoPE now
    lines = {ln.get_label(): ln for ln in w.last_figure.axes[1].get_lines()}
    assert "RoPE" in lines and "YaRN $s$ = 1 (= RoPE)" in lines
    assert list(lines["YaRN $s$ = 1 (= RoPE)"].get_ydata()) == pytest.approx(list(lines["RoPE"].get_ydata()))
    legend = [t.get_text() for t in w.last_figure.axes[1].get_legend().get_texts()]
    assert "YaRN $s$ = 1 (= RoPE)" in legend
    w.yarn_factor.value = 8.0
    assert w.last_result.theta_yarn == pytest.approx(theta(16, 8.0), rel=1e-5)
    assert w.last_result.mscale == pytest.approx(0.1 * math.log(8) + 1)


def test_frequency_index_picks_the_pair(w):
    w.freq_index.value = 0                     # fastest pair: untouched by YaRN
    r = w.last_result
    assert r.theta_yarn == pytest.approx(1.0) and r.theta_rope == pytest.approx(1.0)
    a = 12 * r.theta_yarn
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    torch.testing.assert_close(r.q_pair_rot, rot @ r.q_pair, rtol=0, atol=1e-5)
    w.freq_index.value = 31                    # slowest: divided by the factor
    assert w.last_result.theta_yarn == pytest.approx(theta(31) , rel=1e-5)
    assert w.last_result.theta_yarn == pytest.approx(10000.0 ** (-62 / 64) / 40, rel=1e-5)
    highlight = [ln for ln in w.last_figure.axes[2].get_lines() if ln.get_label() == "pair 31"]
    assert len(highlight) == 1


def test_summary_image_and_no_stdout(w, capsys):
    w.freq_index.value = 20
    assert w.summary is w.readout and "θ_20" in w.summary.value and "= 1.3689" in w.summary.value
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"       # the figure travels as PNG bytes
    assert w.last_error is None
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""                  # no Figure(...) repr, no ANSI text


def test_error_is_shown_in_red_and_raised(w):
    good = w.last_result
    w.yarn_factor.min = 0.5                                 # let the slider reach a factor the maths rejects
    with pytest.raises(ValueError, match="yarn_factor must be >= 1"):
        w.yarn_factor.value = 0.5
    assert "color:#b00" in w.summary.value and "yarn_factor must be &gt;= 1" in w.summary.value
    assert isinstance(w.last_error, ValueError) and w.last_result is good   # nothing half-updated
    w.yarn_factor.value = 2.0                               # a valid value clears the error
    assert w.last_error is None and "color:#b00" not in w.summary.value
    assert w.last_result.theta_yarn == pytest.approx(theta(16, 2.0), rel=1e-5)


def test_geometry_error_is_raised_not_swallowed(w):
    w.max_distance = 0
    with pytest.raises(ValueError, match="max_distance must be >= 1"):
        w.query_pos.value = 50
    assert "max_distance" in w.summary.value and w.last_error is not None


def test_bad_start_values_are_refused():
    with pytest.raises(ValueError, match=r"query_pos must be an integer in \[0, 8192\]"):
        rope_widget(query_pos=9000)                          # a slider would clamp it to 8192 silently
    with pytest.raises(ValueError, match=r"freq_index must be an integer in \[0, 31\]"):
        rope_widget(freq_index=32)
    with pytest.raises(ValueError, match="yarn_factor must be a whole number"):
        rope_widget(yarn_factor=0.5)
    with pytest.raises(ValueError, match="dim must be a positive even integer"):
        rope_widget(dim=63)


def test_sliders_recompute_on_release_only(w):
    assert all(s.continuous_update is False for s in (w.query_pos, w.key_pos, w.freq_index, w.yarn_factor))


def test_positions_are_typed_exactly_with_full_labels(w):
    """The review: 0..8192 sliders in ~250 px could not set t = j. Typed boxes can, and labels are not cut."""
    for box in (w.query_pos, w.key_pos):
        assert isinstance(box, widgets.BoundedIntText) and box.max == 8192 and box.min == 0
    for control in (w.query_pos, w.key_pos, w.freq_index, w.yarn_factor):
        assert control.style.description_width == "initial"
    assert "query position t (0–8192)" in w.query_pos.description     # the range is in the label: a typed
    assert "key position j (0–8192)" in w.key_pos.description         # -5 is clamped to 0, and says so
    w.query_pos.value, w.key_pos.value = 5000, 5000               # t = j exactly, far out
    assert w.last_result.angle_between == 0.0 and "t − j = 0" in w.summary.value
    w.key_pos.value = 4990                                         # the same t − j = 10 far out ...
    s0 = w.last_result.score
    w.query_pos.value, w.key_pos.value = 10, 0                     # ... and at the start: the same score
    assert w.last_result.score == pytest.approx(s0, abs=5e-3)
    w.query_pos.value = 99999                                      # typed past the end: clamped to the range
    assert w.query_pos.value == 8192 and w.last_result.query_pos == 8192


def test_axes_do_not_move_with_the_controls(w):
    before = [(ax.get_xlim(), ax.get_ylim()) for ax in w.last_figure.axes[1:]]
    w.yarn_factor.value = 1.0
    w.query_pos.value = 8000
    after = [(ax.get_xlim(), ax.get_ylim()) for ax in w.last_figure.axes[1:]]
    assert before == after


def test_corner_sweep_finite():
    """Robustness: every min/max corner of the four controls, through the plain function and the widget, gives
    finite numbers and a PNG (positions 0/8192, pair 0/31, YaRN factor 1/64)."""
    import itertools

    from dsv3_lessons.course.ch03_rope.experiments import rope_explorer

    w = rope_widget()
    for t, j, i, s in itertools.product((0, 8192), (0, 8192), (0, 31), (1.0, 64.0)):
        r = rope_explorer(t, j, i, s)
        numbers = [r.theta_rope, r.theta_yarn, r.angle_between, r.score, r.score_shifted, r.mscale]
        assert all(math.isfinite(x) for x in numbers)
        for tensor in (r.q_pair_rot, r.k_pair_rot, r.cos_rope, r.cos_yarn, r.inv_freq_yarn):
            assert torch.isfinite(tensor).all()
        w.query_pos.value, w.key_pos.value, w.freq_index.value, w.yarn_factor.value = t, j, i, s
        assert w.last_error is None and w.last_result.score == pytest.approx(r.score, rel=1e-6)
        assert w.image.value[:4] == b"\x89PNG"


def test_update_in_place_matches_a_full_redraw():
    """The widget keeps one figure and re-renders only what a control changes; the picture it sends equals a full
    redraw of that figure, and a fresh figure from the plain function for the same settings."""
    import io

    import numpy as np
    from PIL import Image

    from dsv3_lessons.course.ch03_rope.experiments import rope_explorer
    from dsv3_lessons.course.ch03_rope.figures import plot_rope_explorer

    w = rope_widget()
    fig = w.last_figure
    w.query_pos.value, w.freq_index.value, w.yarn_factor.value = 300, 20, 8.0
    assert w.last_figure is fig

    def pixels(png):
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    fresh = plot_rope_explorer(rope_explorer(300, 4, 20, 8.0))
    buf2 = io.BytesIO()
    fresh.savefig(buf2, format="png", dpi=fresh.dpi)
    blit = pixels(w.image.value)
    assert np.abs(blit - pixels(buf.getvalue())).mean() < 1.0
    assert np.abs(blit - pixels(buf2.getvalue())).mean() < 1.0
    assert "pair 20" in [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
