"""Chapter 5's routing explorer driven headless: set .value, assert the new report and figure. (Chapter 6's
expert-load widget: tests/test_widget_expert_load.py.)"""
import pytest
import torch

from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
from dsv3_lessons.course.ch05_routing.routing import route_token, snapshot_config, trained_gates
from dsv3_lessons.course.ch05_routing.widget import explore_route, routing_explorer


@pytest.fixture(scope="module")
def snap():
    return load_snapshot()


def test_explorer_default_matches_library_gate(snap):
    w = routing_explorer(snap)
    gate = trained_gates(snap)[0]
    u = snap["gate_inputs"][0, w.passage.value, w.position.value]
    weights, idx, _ = gate(u[None])
    assert w.last_result.chosen == tuple(idx[0].tolist())
    assert torch.allclose(torch.tensor(w.last_result.weights), weights[0], atol=1e-6)
    assert w.image.value[:4] == b"\x89PNG"
    assert "kept groups" in w.readout.value


def test_bias_moves_selection_not_weight_formula(snap):
    w = routing_explorer(snap)
    before = w.last_result
    loser = next(e for e in range(len(before.scores)) if e not in before.chosen)
    png = w.image.value
    w.expert.value = loser
    w.bias.value = 1.0
    after = w.last_result
    assert loser in after.chosen and after.chosen != before.chosen
    assert w.image.value != png
    s = after.scores[list(after.chosen)]
    scale = snapshot_config(snap).routed_scaling_factor
    assert torch.allclose(torch.tensor(after.weights), s / s.sum() * scale, atol=1e-6)
    # the unbiased scores themselves did not move
    assert torch.equal(after.scores, before.scores)


def test_controls_stay_consistent(snap):
    cfg = snapshot_config(snap)
    w = routing_explorer(snap)
    w.n_group.value = 1
    assert w.topk_group.max == 1 and w.topk_group.value == 1
    assert w.top_k.max == cfg.n_routed_experts
    assert w.last_result.n_group == 1 and len(w.last_result.kept_groups) == 1
    w.n_group.value = cfg.n_group
    w.topk_group.value = cfg.n_group            # no limit
    w.top_k.value = 1
    r = w.last_result
    assert r.top_k == 1 and len(r.chosen) == 1
    # K = 1 without limit is the plain argmax of the biased scores
    assert r.chosen[0] == int(r.biased.argmax())
    w.layer.value = len(snap["layer_names"]) - 1
    assert w.last_result is not r


def test_n_group_one_and_back_restores_the_models_routing(snap):
    """The learner report: n_group 1 clamped topk_group to 1, and back at 4 it stayed 1 (kept groups [2], K_r capped
    at 2), so "set n_group to 1 and back" did not restore the V3-like state."""
    cfg = snapshot_config(snap)
    w = routing_explorer(snap)
    start = w.last_result
    w.n_group.value = 1
    assert (w.topk_group.value, w.top_k.value) == (1, cfg.num_experts_per_tok)
    w.n_group.value = cfg.n_group
    assert (w.topk_group.value, w.top_k.value) == (cfg.topk_group, cfg.num_experts_per_tok)
    assert w.last_result.kept_groups == start.kept_groups and w.last_result.chosen == start.chosen
    w.topk_group.value = 1                     # the learner's own choice is kept (K_r clamped to the 2 allowed)
    w.n_group.value = 2
    w.n_group.value = cfg.n_group
    assert w.topk_group.value == 1 and w.top_k.value == min(cfg.num_experts_per_tok, w.top_k.max)
    w.topk_group.value = cfg.topk_group        # raising the limit again gives K_r back
    assert w.top_k.value == cfg.num_experts_per_tok


def test_explore_route_errors(snap):
    with pytest.raises(ValueError, match="position"):
        explore_route(snap, position=10_000)
    with pytest.raises(ValueError, match="n_group"):
        explore_route(snap, n_group=3)
    with pytest.raises(ValueError, match="topk_group"):
        explore_route(snap, topk_group=99)


def test_route_token_equals_gate_for_v3_layout():
    from dsv3_lessons.model.config import deepseek_v3_671b
    from dsv3_lessons.model.moe import Gate

    v3 = deepseek_v3_671b()
    cfg = v3.__class__(**{**v3.__dict__, "hidden_size": 32})
    gate = Gate(cfg)
    with torch.no_grad():
        gate.weight.normal_(0, 0.3)
        gate.e_score_correction_bias.normal_(0, 0.2)
    x = torch.randn(5, 32)
    weights, idx, _ = gate(x)
    for t in range(5):
        r = route_token(x[t], gate.weight, gate.e_score_correction_bias, 8, 4, 8, 2.5)
        assert r.chosen == tuple(idx[t].tolist())
        assert torch.allclose(torch.tensor(r.weights), weights[t], atol=1e-6)
        assert len(r.kept_groups) == 4


# ----------------------------------------------------------------------------------- routing explorer: item 7, speed
def _bias_marker(fig):
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    from dsv3_lessons.course.common.style import PALETTE

    purple = to_rgba(PALETTE["purple"])
    return [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_edgecolor() == purple]


def test_selected_expert_is_marked_before_any_bias(snap):
    """Browser review item 7: at Δb = 0 the expert slider must show where the bias will land."""
    w = routing_explorer(snap)
    assert w.bias.value == 0.0
    (marker,) = _bias_marker(w.figure)
    assert marker.get_visible()
    x0 = marker.get_x()
    png = w.image.value
    w.expert.value = 3
    assert w.bias.value == 0.0 and w.last_result.chosen == explore_route(snap, 0, w.position.value).chosen
    (marker,) = _bias_marker(w.figure)
    assert marker.get_visible() and marker.get_x() != x0           # it moved to expert 3's cell
    assert w.image.value != png                                    # the learner sees it move
    assert "on e3 (purple dashes)" in w.readout.value
    texts = " ".join(t.get_text() for t in w.figure.axes[0].texts if t.get_visible())
    assert "e3, whose bias moves (Δb +0.00)" in texts


def test_explorer_keeps_one_figure_per_layout(snap):
    w = routing_explorer(snap)
    first = w.figure
    w.position.value = 3
    w.bias.value = 0.4
    assert w.figure is first                                       # updated in place
    w.n_group.value = 2
    other = w.figure
    assert other is not first
    w.n_group.value = snapshot_config(snap).n_group
    assert w.figure is first


def test_explore_route_at_every_corner_of_the_controls(snap):
    """All min/max corners of the explorer's controls give a finite report (n_group over its whole list)."""
    import itertools
    import math

    from dsv3_lessons.course.ch05_routing.routing import valid_group_counts

    cfg = snapshot_config(snap)
    n_layers, n_pass, t_len, _ = snap["gate_inputs"].shape
    n = 0
    for passage, position, layer, expert, bias in itertools.product(
            (0, n_pass - 1), (0, t_len - 1), (0, n_layers - 1), (0, cfg.n_routed_experts - 1), (-1.0, 1.0)):
        for n_group in valid_group_counts(cfg.n_routed_experts):
            per = cfg.n_routed_experts // n_group
            for topk_group in (1, n_group):
                for top_k in (1, topk_group * per):
                    r = explore_route(snap, passage, position, layer, n_group, topk_group, top_k, expert, bias)
                    assert len(r.chosen) == top_k and len(r.kept_groups) == topk_group
                    assert all(math.isfinite(x) for x in (*r.weights, *r.scores.tolist(), *r.biased.tolist()))
                    assert abs(sum(r.weights) - cfg.routed_scaling_factor) < 1e-5
                    n += 1
    assert n == 2 ** 5 * len(valid_group_counts(cfg.n_routed_experts)) * 4


def test_captions_follow_the_last_row_when_the_figure_is_padded(snap):
    """The explorer keeps one image height for every n_group (the tallest layout's), so with n_group = 2 the
    figure has room to spare: the captions stay under the last row and the spare room is at the bottom (the
    browser review saw a blank band between the rows and the captions)."""
    from dsv3_lessons.course.ch05_routing.figures import RoutingFigure, routing_canvas

    w = routing_explorer(snap)
    w.n_group.value = 2
    fig = w._drawings[(2, 4)]
    assert fig.height > routing_canvas(2, 4)[1] + 1.0           # padded: this layout is shorter than n_group = 4's
    last_row_bottom = fig.top - fig.row_h - fig.row_h * 0.4
    first, *_, last = (t.get_position()[1] for t in fig.caption)
    assert 0.5 < last_row_bottom - first < 2.0                  # right under the rows (as unpadded)
    assert last > 0.5                                           # and inside the canvas
    natural = RoutingFigure(2, 4, pyplot=False)                 # unpadded: the chapter's figures keep their place
    assert natural.caption[0].get_position()[1] == pytest.approx(1.15)
