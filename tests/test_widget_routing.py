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
