"""Chapter 5 helpers against closed-form arithmetic, count_parameters and the library Gate."""
import math

import matplotlib
import pytest
import torch

from dsv3_lessons.course.ch05_routing.routing import (CHAR_CLASSES, char_class, experts_reachable, moe_arithmetic,
                                                      route_token, specialisation, token_context, top_chars,
                                                      valid_group_counts)
from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b, tiny


def test_v3_moe_arithmetic():
    v3 = deepseek_v3_671b()
    a = moe_arithmetic(v3)
    assert a.expert_params == 44_040_192 == count_parameters(v3).expert          # SPEC §1
    assert a.activated_width == 9 * 2048 == v3.intermediate_size == 18432         # equal activated compute
    assert a.dense_params == 3 * 7168 * 18432 == count_parameters(v3).dense_mlp
    assert a.total_params == 257 * 44_040_192 + 256 * 7168 + 256
    assert a.combinations == math.comb(256, 8) and a.coarse_combinations == 32
    with pytest.raises(ValueError, match="coarse_factor"):
        moe_arithmetic(v3, coarse_factor=3)


def test_tiny_arithmetic_matches_count_parameters():
    cfg = tiny()
    assert moe_arithmetic(cfg).expert_params == count_parameters(cfg).expert


def test_thirteen_experts():
    per_node, per_token = experts_reachable()
    assert per_node == pytest.approx(3.2) and per_token == pytest.approx(12.8) and round(per_token) == 13
    assert experts_reachable(3, 10.0, 40.0) == (4.0, 12.0)
    with pytest.raises(ValueError):
        experts_reachable(0)


def test_route_token_no_groups_is_plain_topk():
    g = torch.Generator().manual_seed(0)
    w, u = torch.randn(8, 5, generator=g), torch.randn(5, generator=g)
    r = route_token(u, w, None, 1, 1, 3, 2.5)
    s = torch.sigmoid(w @ u)
    assert r.chosen == tuple(s.topk(3).indices.tolist())
    assert sum(r.weights) == pytest.approx(2.5)
    assert r.kept_groups == (0,)
    # the one group's score is what the caption says, the sum of its two best (not the maximum)
    assert float(r.group_scores[0]) == pytest.approx(float(s.topk(2).values.sum()))


def test_route_token_bias_changes_choice_not_formula():
    g = torch.Generator().manual_seed(1)
    w, u = torch.randn(8, 5, generator=g), torch.randn(5, generator=g)
    base = route_token(u, w, None, 4, 2, 2, 1.0)
    loser = next(e for e in range(8) if e not in base.chosen)
    bias = torch.zeros(8)
    bias[loser] = 5.0
    moved = route_token(u, w, bias, 4, 2, 2, 1.0)
    assert loser in moved.chosen and loser // 2 in moved.kept_groups
    s = moved.scores[list(moved.chosen)]
    assert torch.allclose(torch.tensor(moved.weights), s / s.sum())


def test_route_token_errors():
    w, u = torch.randn(8, 5), torch.randn(5)
    with pytest.raises(ValueError, match="n_group"):
        route_token(u, w, None, 3, 1, 1)
    with pytest.raises(ValueError, match="n_group"):
        route_token(u, w, None, 8, 1, 1)              # one expert per group: no top-2
    with pytest.raises(ValueError, match="topk_group"):
        route_token(u, w, None, 4, 5, 1)
    with pytest.raises(ValueError, match="top_k"):
        route_token(u, w, None, 4, 1, 3)
    with pytest.raises(ValueError, match="u must be"):
        route_token(torch.randn(4), w)
    with pytest.raises(ValueError, match="bias"):
        route_token(u, w, torch.zeros(7))
    assert valid_group_counts(8) == [1, 2, 4] and valid_group_counts(256)[-1] == 128


def test_specialisation_counts_and_classes():
    chars = [" ", "\n", "A", "a", "b", ".", "1"]
    assert [char_class(c) for c in chars] == ["space", "newline", "capital", "vowel", "consonant", "punctuation",
                                              "other"]
    ids = torch.tensor([0, 3, 3, 4, 2])
    experts = torch.tensor([[0, 1], [1, 2], [1, 2], [0, 2], [2, 0]])
    counts = specialisation(ids, experts, chars, 3)
    assert counts.sum() == 10 and counts.shape == (3, len(CHAR_CLASSES))
    vowel = CHAR_CLASSES.index("vowel")
    assert counts[:, vowel].tolist() == [0, 2, 2]
    assert top_chars(ids, experts, chars, 1)[0] == ("a", pytest.approx(2 / 3))
    assert top_chars(ids, experts, chars, 2, n=1) == [("a", pytest.approx(0.5))]
    assert token_context("the king\n", 4, width=3) == "…he [k]ing…"
    with pytest.raises(ValueError, match="pos"):
        token_context("abc", 3)


def test_routing_figures_render():
    matplotlib.use("Agg")
    from dsv3_lessons.course.ch05_routing.figures import draw_routing, plot_specialisation

    g = torch.Generator().manual_seed(0)
    r = route_token(torch.randn(16, generator=g), torch.randn(256, 16, generator=g), None, 8, 4, 8, 2.5)
    fig = draw_routing(r, title="V3")
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "Kept: 4 of 8 groups" in texts and texts.count("(−∞)") == 4
    counts = torch.tensor([[5, 1, 0, 0, 0, 0, 0], [1, 5, 0, 0, 0, 0, 0]])
    fig = plot_specialisation(counts, CHAR_CLASSES)
    assert [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()] == ["vowel", "consonant"]


# ----------------------------------------------------------------------------------- the group score's K_r/M rule
def test_group_rules_against_the_library_gate_and_max():
    from dsv3_lessons.course.ch05_routing.routing import group_scores, paper_group_mask
    from dsv3_lessons.model.moe import Gate

    g = torch.Generator().manual_seed(0)
    cfg = tiny(n_routed_experts=32, n_group=8, topk_group=4, num_experts_per_tok=8)   # V3's K_r/M = 2
    biased = torch.randn(50, 32, generator=g)
    assert torch.equal(paper_group_mask(biased, 8, 4, 8), Gate(cfg).group_mask(biased))  # = the code's topk(2)
    assert torch.equal(group_scores(biased, 8, 1), biased.view(50, 8, 4).amax(-1))
    with pytest.raises(ValueError, match="topk_group must divide"):
        paper_group_mask(biased, 8, 3, 8)
    with pytest.raises(ValueError, match="per_group_k"):
        group_scores(biased, 8, 5)


def test_max_rule_never_binds_when_k_equals_m():
    """The chapter's claim (and 5.1's answer): with K_r = M and groups scored by their max, the limit never
    changes the chosen experts -- on random scores, for several layouts."""
    from dsv3_lessons.course.ch05_routing.routing import routed_sets

    g = torch.Generator().manual_seed(1)
    for n_r, n_group, k in ((8, 4, 2), (16, 8, 4), (64, 8, 3), (32, 16, 5)):
        biased = torch.randn(400, n_r, generator=g)
        assert torch.equal(routed_sets(biased, n_group, k, k, 1), routed_sets(biased, n_group, k, k, None))
        # and the top-2 sum does bind on such data (the rule matters)
        if n_r // n_group >= 2:
            assert not torch.equal(routed_sets(biased, n_group, k, k, 2), routed_sets(biased, n_group, k, k, None))


def test_limit_changes_on_the_stored_snapshot():
    from dsv3_lessons.course.ch05_routing.routing import limit_changes
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot

    snap = load_snapshot()
    assert [limit_changes(snap, layer, 1) for layer in (0, 1)] == [0.0, 0.0]
    # the review measured 21.4 % / 31.0 % for the code's top-2 sum: 82 and 119 of 384 tokens
    assert [round(384 * limit_changes(snap, layer, 2)) for layer in (0, 1)] == [82, 119]


def test_bias_threshold_matches_a_scan():
    from dsv3_lessons.course.ch05_routing.routing import bias_threshold
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    snap = load_snapshot()
    for expert in (3, 6):
        t = bias_threshold(snap, 0, 10, 0, expert)
        assert expert not in explore_route(snap, 0, 10, 0, expert=expert, bias=t - 1e-4).chosen
        assert expert in explore_route(snap, 0, 10, 0, expert=expert, bias=t + 1e-4).chosen
    assert bias_threshold(snap, 0, 10, 0, 1) == 0.0          # already chosen


def test_heatmap_paints_zero_counts_grey():
    import numpy as np
    from dsv3_lessons.course.ch05_routing.figures import plot_specialisation

    counts = torch.tensor([[10, 0, 5], [3, 7, 0], [0, 4, 9]])
    fig = plot_specialisation(counts, ("a", "b", "c"))
    image = fig.axes[0].images[0].get_array()
    assert np.ma.is_masked(image) and image.mask.tolist() == (counts == 0).tolist()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("0") == 3 and "0.0" not in texts
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_routing_drawing_fills_the_width():
    from dsv3_lessons.course.ch05_routing.figures import draw_routing
    from dsv3_lessons.course.ch05_routing.routing import route_token

    g = torch.Generator().manual_seed(2)
    r = route_token(torch.randn(16, generator=g), torch.randn(8, 16, generator=g), None, 4, 2, 2, 2.5)
    fig = draw_routing(r, title="tiny layout", bias_expert=3, bias_delta=0.25)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_text().strip()]
    right_edge = max(b.x1 for b in boxes) / fig.bbox.width
    assert 0.75 < right_edge <= 1.0                      # content reaches the right quarter, nothing cut off
    assert min(b.x0 for b in boxes) >= 0
    assert any("Δb +0.25" in t.get_text() for t in fig.axes[0].texts)
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_no_label_crosses_the_bias_frame():
    """The learner report: the g= and Δb labels overlapped the purple dashed frame. Every visible text near the
    marked expert lies wholly inside its frame or wholly outside it, for a chosen and an unchosen marked expert."""
    from matplotlib.transforms import Bbox

    from dsv3_lessons.course.ch05_routing.figures import draw_routing
    from dsv3_lessons.course.ch05_routing.routing import route_token

    g = torch.Generator().manual_seed(2)
    r = route_token(torch.randn(16, generator=g), torch.randn(8, 16, generator=g), None, 4, 2, 2, 2.5)
    for expert in (r.chosen[0], next(e for e in range(8) if e not in r.chosen)):
        fig = draw_routing(r, bias_expert=expert, bias_delta=0.16)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        frame = next(p for p in ax.patches if p.get_linestyle() not in ("-", "solid") and p.get_visible())
        box = frame.get_window_extent(renderer)
        for t in ax.texts:
            if not (t.get_visible() and t.get_text().strip()):
                continue
            tb = t.get_window_extent(renderer)
            inside = box.x0 <= tb.x0 and tb.x1 <= box.x1 and box.y0 <= tb.y0 and tb.y1 <= box.y1
            apart = not Bbox.intersection(box, tb)
            assert inside or apart, (expert, t.get_text())
        __import__("matplotlib.pyplot").pyplot.close(fig)
