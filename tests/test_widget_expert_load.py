"""Chapter 6's expert-load widget driven headless (set .value, assert the report, readout and PNG), its plain function
through every corner of its controls, and the in-place figure's blitting."""
import itertools
import math

import pytest
import torch

from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
from dsv3_lessons.course.ch06_balancing.runs import METHODS, load_runs
from dsv3_lessons.course.ch06_balancing.widget import (RESIM, LoadFigure, bias_reversals, expert_load_widget,
                                                      load_view, plot_load_view)


@pytest.fixture(scope="module")
def runs():
    return load_runs()


@pytest.fixture(scope="module")
def unbalanced():
    return load_snapshot(which="unbalanced")


@pytest.fixture(scope="module")
def widget(runs, unbalanced):
    return expert_load_widget(runs, unbalanced)


def test_expert_load_widget(widget, runs):
    w = widget
    steps = len(runs["runs"]["none"]["step"])
    assert w.step.value == steps and w.gamma.disabled
    w.method.value = "none"
    v = w.last_result
    counts = torch.tensor(runs["runs"]["none"]["counts"][-1][runs["runs"]["none"]["main_layers"][0]], dtype=torch.float)
    assert torch.equal(v.counts, counts)
    assert abs(v.max_vio - float((counts.max() - counts.mean()) / counts.mean())) < 1e-6
    w.step.value = 1
    assert w.last_result.step == 1 and "step 1" in w.readout.value
    w.method.value = RESIM
    assert not w.gamma.disabled
    w.gamma.value = 0.1
    fast = w.last_result
    w.gamma.value = 0.0001
    slow = w.last_result
    # step 1 has a zero bias whatever γ; later the larger γ has moved the biases further
    w.step.value = steps
    far = w.last_result.bias.abs().max()
    w.gamma.value = 0.1
    assert w.last_result.bias.abs().max() > far
    assert fast.step == slow.step == 1


def test_readout_lines_are_short_and_the_png_follows_the_step(widget):
    """Browser review: the readout wrapped mid-number ("(mean 25⏎6)"); now short lines: three, and a fourth on the
    bias's reversals for a method with a bias (learner report l67: the bands at γ = 0.1 were unexplained)."""
    w = widget
    for method, n_lines in ((RESIM, 4), ("bias", 4), ("none", 3)):
        w.method.value = method
        lines = w.readout.value.removeprefix("<pre>").removesuffix("</pre>").split("\n")
        assert len(lines) == n_lines and max(len(line) for line in lines) <= 80, lines
    w.method.value = RESIM
    w.method.value = "bias"
    w.step.value = 10
    first = w.image.value
    w.step.value = 150
    assert w.image.value != first and w.image.value[:4] == b"\x89PNG"
    w.step.value = 10
    assert w.image.value == first                    # the same view renders the same bytes (cached background)
    w.method.value = "aux_loss"
    other = w.image.value
    w.method.value = "bias"
    assert w.image.value == first and other != first


def test_bias_reversals_against_hand_counts():
    zigzag = torch.tensor([[0.0], [0.1], [0.0], [0.1], [0.0], [0.1]])        # every move reverses the one before
    assert bias_reversals(zigzag, 6) == 1.0
    climb = torch.arange(6.0)[:, None] * 0.1                                  # never reverses
    assert bias_reversals(climb, 6) == 0.0
    two = torch.tensor([[0.0, 0.0], [0.1, 0.1], [0.2, 0.0], [0.3, 0.1]])      # expert 0 climbs, expert 1 zig-zags
    assert bias_reversals(two, 4) == 0.5                                      # 2 of 4 consecutive pairs reverse
    assert bias_reversals(torch.zeros(10, 3), 10) is None                     # no bias method: nothing moved


def test_bias_panel_has_a_legend_of_experts(runs, unbalanced):
    v = load_view(runs, "bias", 0, 20)
    fig = plot_load_view(v)
    leg = fig.axes[2].get_legend()
    n_r = runs["meta"]["config"]["n_routed_experts"]
    assert leg is not None and [t.get_text() for t in leg.get_texts()] == [f"e{i}" for i in range(n_r)]
    # bars and bias lines share one colour per expert
    bars = [p.get_facecolor() for p in fig.axes[0].patches]
    lines = [line.get_color() for line in fig.axes[2].get_lines()[:n_r]]
    from matplotlib.colors import to_rgba
    assert [to_rgba(c) for c in lines] == [tuple(b) for b in bars]


def test_figure_is_updated_in_place(runs):
    fig = LoadFigure(len(runs["runs"]["none"]["step"]), runs["meta"]["config"]["n_routed_experts"], blit=True)
    def artists():
        return [len(a.lines) + len(a.patches) + len(a.texts) + len(a.images) for a in fig.fig.axes]

    n_artists = artists()
    axes = [a.get_position().bounds for a in fig.fig.axes]
    for method, step in (("none", 1), ("bias", 200), ("aux_loss", 77)):
        fig.show(load_view(runs, method, 1, step), 0.5, series_key=(method, 1))
        assert fig.png()[:4] == b"\x89PNG"
    assert artists() == n_artists                                        # no artist added per update
    assert [a.get_position().bounds for a in fig.fig.axes] == axes       # the layout stays frozen
    heights = [round(p.get_height(), 6) for p in fig.bars]
    v = load_view(runs, "aux_loss", 1, 77)
    assert heights == [round(min(x, 4.0), 6) for x in v.rel_load[76].tolist()]


def test_load_view_errors(runs):
    with pytest.raises(ValueError, match="method"):
        load_view(runs, "softmax", 0, 1)
    with pytest.raises(ValueError, match="step"):
        load_view(runs, "none", 0, 0)
    with pytest.raises(ValueError, match="layer"):
        load_view(runs, "none", 5, 1)
    with pytest.raises(ValueError, match="snapshot"):
        load_view(runs, RESIM, 0, 1, 0.01, None)
    with pytest.raises(ValueError, match="gamma"):
        load_view(runs, RESIM, 0, 1, -0.01, {"sample_scores": None})
    assert set(METHODS) == set(runs["runs"])


def test_corner_sweep(runs, unbalanced):
    """Every min/max corner of the controls (method × layer × step × γ at the slider's ends): no exception, finite
    numbers, loads that are token counts of the layer."""
    w = expert_load_widget(runs, unbalanced)
    n_layers = len(w.layer.options)
    steps = (w.step.min, w.step.max)
    gammas = (10 ** w.gamma.min, 10 ** w.gamma.max)
    cache: dict = {}
    k = runs["meta"]["config"]["num_experts_per_tok"]
    tokens = runs["meta"]["budget"]["batch_size"] * runs["meta"]["budget"]["seq_len"]
    for method, layer, step, gamma in itertools.product((*METHODS, RESIM), (0, n_layers - 1), steps, gammas):
        v = load_view(runs, method, layer, step, gamma, unbalanced, cache)
        assert math.isfinite(v.max_vio) and 0 <= v.max_vio <= runs["meta"]["config"]["n_routed_experts"] / k - 1
        assert torch.isfinite(v.rel_load).all() and torch.isfinite(v.bias).all()
        assert int(v.counts.sum()) == tokens * k
    for method, step in itertools.product((*METHODS, RESIM), steps):   # and the widget itself at those corners
        w.method.value, w.step.value = method, step
        assert w.last_error is None and w.image.value[:4] == b"\x89PNG"
