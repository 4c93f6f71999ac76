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
    assert "kept groups: 4 of 8" in texts and texts.count("(−∞)") == 4
    counts = torch.tensor([[5, 1, 0, 0, 0, 0, 0], [1, 5, 0, 0, 0, 0, 0]])
    fig = plot_specialisation(counts, CHAR_CLASSES)
    assert [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()] == ["vowel", "consonant"]
