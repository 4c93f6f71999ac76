"""DeepSeekMoE gate, layer and balancing (V3 §2.1.2 eqs. 12–20; LF paper arXiv 2408.15664 Alg. 1, §4.1;
official inference code ``Gate``).

Oracles: transformers' ``DeepseekV3TopkRouter`` with the same weight and bias; hand-constructed routing cases
whose answer is known in closed form (gate weight 0 makes every affinity exactly sigmoid(0) = 0.5, so the bias
alone decides the selection); a per-token loop written from eq. 12; closed-form losses and gradients.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_lessons.model.config import tiny
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3
from dsv3_lessons.model.moe import DeepseekMoE, Gate, max_violation, sequence_balance_loss, update_bias

SETTINGS = settings(max_examples=25, deadline=None)
# (n_routed_experts, n_group, topk_group, num_experts_per_tok)
ROUTINGS = [(8, 4, 2, 2), (16, 4, 2, 4), (16, 8, 3, 5), (12, 1, 1, 3), (32, 8, 4, 8)]


def make_gate(routing, seed: int, bias_scale: float = 0.1, d: int = 32) -> Gate:
    n_e, n_g, k_g, k = routing
    cfg = tiny(hidden_size=d, n_routed_experts=n_e, n_group=n_g, topk_group=k_g, num_experts_per_tok=k)
    g = torch.Generator().manual_seed(seed)
    gate = Gate(cfg)
    with torch.no_grad():
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=g) / math.sqrt(d))
        gate.e_score_correction_bias.copy_(bias_scale * torch.randn(n_e, generator=g))
    return gate


def tokens(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1000))


def sorted_by_expert(w: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx_sorted, order = idx.sort(dim=-1)
    return w.gather(1, order), idx_sorted


# ------------------------------------------------------------------------------------------ oracle
@SETTINGS
@given(seed=st.integers(0, 10_000), routing=st.sampled_from(ROUTINGS), bias_scale=st.sampled_from([0.0, 0.05, 1.0]))
def test_gate_matches_transformers_router(seed, routing, bias_scale):
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    gate = make_gate(routing, seed, bias_scale)
    hf_cfg = transformers.DeepseekV3Config(**tiny(hidden_size=32, n_routed_experts=routing[0], n_group=routing[1],
                                                  topk_group=routing[2], num_experts_per_tok=routing[3]).to_dict())
    ref = DeepseekV3TopkRouter(hf_cfg)
    with torch.no_grad():
        ref.weight.copy_(gate.weight)
        ref.e_score_correction_bias.copy_(gate.e_score_correction_bias)
        x = tokens(40, 32, seed)
        w, idx, scores = gate(x)
        logits, w_ref, idx_ref = ref(x)
    w, idx = sorted_by_expert(w, idx)
    w_ref, idx_ref = sorted_by_expert(w_ref, idx_ref)
    assert torch.equal(idx, idx_ref)
    torch.testing.assert_close(w, w_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scores, logits.sigmoid(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ properties
@SETTINGS
@given(seed=st.integers(0, 10_000), routing=st.sampled_from(ROUTINGS), bias_scale=st.sampled_from([0.0, 0.1, 2.0]))
def test_gate_properties(seed, routing, bias_scale):
    n_e, n_g, k_g, k = routing
    gate = make_gate(routing, seed, bias_scale)
    with torch.no_grad():
        w, idx, scores = gate(tokens(30, 32, seed))
    assert w.dtype == torch.float32 and idx.shape == (30, k)
    assert all(len(set(r)) == k for r in idx.tolist())                      # K_r distinct experts
    groups_used = (idx // (n_e // n_g)).tolist()
    assert max(len(set(r)) for r in groups_used) <= k_g                     # node-limited routing
    torch.testing.assert_close(w.sum(-1), torch.full((30,), 2.5))           # Σ g = routed_scaling_factor
    s = scores.gather(1, idx)
    torch.testing.assert_close(w, 2.5 * s / s.sum(-1, keepdim=True))        # unbiased s, normalised, ×2.5


@SETTINGS
@given(seed=st.integers(0, 10_000), routing=st.sampled_from(ROUTINGS), shift=st.floats(-3, 3),
       noise=st.sampled_from([0.01, 0.3]))
def test_bias_changes_selection_only(seed, routing, shift, noise):
    """Weights depend on the bias only through the selection (V3 eq. 13 vs 16)."""
    gate = make_gate(routing, seed)
    x = tokens(30, 32, seed)
    with torch.no_grad():
        w0, i0, _ = gate(x)
        gate.e_score_correction_bias += shift                      # same shift for all: same selection
        w1, i1, _ = gate(x)
        gate.e_score_correction_bias += noise * torch.randn(routing[0], generator=torch.Generator().manual_seed(seed))
        w2, i2, _ = gate(x)
    w0, i0 = sorted_by_expert(w0, i0)
    w1, i1 = sorted_by_expert(w1, i1)
    w2, i2 = sorted_by_expert(w2, i2)
    # equal up to the order of the K-term normalising sum (topk order follows the biased score)
    assert torch.equal(i0, i1)
    torch.testing.assert_close(w0, w1, rtol=1e-6, atol=0)
    same = (i0 == i2).all(-1)                                       # tokens whose selection survived
    torch.testing.assert_close(w0[same], w2[same], rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------ pitfalls
def biased_gate(routing, bias) -> Gate:
    """A gate whose affinities are all exactly 0.5 (zero weight): the bias alone decides the selection."""
    gate = make_gate(routing, 0)
    with torch.no_grad():
        gate.weight.zero_()
        gate.e_score_correction_bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return gate


def test_masked_groups_use_minus_inf_not_zero():
    # every biased score is negative (-1.5 … -1.43); groups {0,1} {2,3} {4,5} {6,7}, best two are {4,5}, {6,7}.
    # Filling masked experts with 0 would make them win the top-k.
    gate = biased_gate((8, 4, 2, 2), [-2.0 + 0.01 * e for e in range(8)])
    _, idx, _ = gate(torch.randn(5, 32))
    assert all(set(r) == {6, 7} for r in idx.tolist())


def test_group_score_is_top2_sum_not_max_or_total():
    # 2 groups of 4, keep 1. biased = 0.5 + b:
    #   group A (0-3): [1.4, .8, .8, .8]  max 1.4   top-2 sum 2.2   total 3.8
    #   group B (4-7): [1.15, 1.15, .5, .5] max 1.15 top-2 sum 2.3  total 3.3
    gate = biased_gate((8, 2, 1, 2), [0.9, 0.3, 0.3, 0.3, 0.65, 0.65, 0.0, 0.0])
    _, idx, _ = gate(torch.randn(3, 32))
    assert all(set(r) == {4, 5} for r in idx.tolist())   # max or total would pick group A (expert 0)


def test_scaling_applied_exactly_once():
    gate = biased_gate((16, 4, 2, 4), [0.1 * (e % 5) for e in range(16)])
    w, _, _ = gate(torch.randn(6, 32))
    assert torch.equal(w, torch.full((6, 4), 2.5 / 4))    # each 0.5/(4·0.5)·2.5: not 1/4, not 2.5²/4


def test_router_runs_in_fp32_for_bf16_inputs():
    gate = make_gate((8, 4, 2, 2), 3)
    x = tokens(20, 32, 3).to(torch.bfloat16)
    w, idx, scores = gate(x)
    assert w.dtype == scores.dtype == torch.float32
    ref = torch.sigmoid(x.float() @ gate.weight.T)
    torch.testing.assert_close(scores, ref, rtol=1e-6, atol=1e-7)


def test_gate_weight_and_bias_stay_fp32_in_a_bf16_model():
    model = DeepSeekV3(tiny()).to(torch.bfloat16)
    gate = model.layers[1].mlp.gate
    assert gate.weight.dtype == torch.float32 and gate.e_score_correction_bias.dtype == torch.float32


def test_bias_is_a_buffer_not_a_parameter():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny(), aux_loss_alpha=1e-2).train()
    names = [n for n, _ in model.named_parameters()]
    assert not any("e_score_correction_bias" in n for n in names)
    assert "layers.1.mlp.gate.e_score_correction_bias" in model.state_dict()   # saved with the model
    ids = torch.randint(0, 96, (2, 12))
    model(ids, targets=torch.roll(ids, -1, 1)).loss.backward()
    for layer in model.moe_layers():
        b = layer.gate.e_score_correction_bias
        assert not b.requires_grad and b.grad is None
        assert layer.gate.weight.grad is not None and layer.gate.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ layer
def test_moe_output_equals_per_token_formula():
    """out_t = Σ_shared FFN(u_t) + Σ_i g_{i,t} FFN_i(u_t)  (V3 eq. 12, residual outside)."""
    torch.manual_seed(4)
    cfg = tiny()
    moe = DeepseekMoE(cfg).eval()
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
        moe.gate.e_score_correction_bias.copy_(0.1 * torch.randn(cfg.n_routed_experts))
        x = torch.randn(2, 7, cfg.hidden_size)
        out = moe(x)
        w, idx, _ = moe.gate(x.reshape(-1, cfg.hidden_size))

    def ffn(m, v):
        return m.down_proj.weight @ (F.silu(m.gate_proj.weight @ v) * (m.up_proj.weight @ v))

    flat = x.reshape(-1, cfg.hidden_size)
    for t in range(flat.shape[0]):
        expect = ffn(moe.shared_experts, flat[t])
        for j in range(cfg.num_experts_per_tok):
            expect = expect + w[t, j] * ffn(moe.experts[int(idx[t, j])], flat[t])
        torch.testing.assert_close(out.reshape(-1, cfg.hidden_size)[t], expect, rtol=1e-5, atol=1e-5)
    assert moe.last_counts.sum() == flat.shape[0] * cfg.num_experts_per_tok
    assert torch.equal(moe.last_counts, torch.bincount(idx.flatten(), minlength=cfg.n_routed_experts))


def test_counts_accumulate_in_training_only():
    torch.manual_seed(5)
    moe = DeepseekMoE(tiny())
    x = torch.randn(1, 10, 64)
    moe.eval()(x)
    assert moe.counts_since_update.sum() == 0
    moe.train()(x)
    moe(x)
    assert moe.counts_since_update.sum() == 2 * 10 * 2


# ------------------------------------------------------------------------------------------ balancing
def test_update_bias_sign_rule_and_reset():
    torch.manual_seed(6)
    model = DeepSeekV3(tiny())
    layer = model.moe_layers()[0]
    counts = torch.tensor([10.0, 0, 5, 5, 1, 9, 5, 5])      # mean 5
    layer.counts_since_update.copy_(counts)
    before = layer.gate.e_score_correction_bias.clone()
    used = update_bias(model, gamma=0.01)
    delta = layer.gate.e_score_correction_bias - before
    expected = torch.tensor([-0.01, 0.01, 0, 0, 0.01, -0.01, 0, 0])   # overloaded down, underloaded up
    torch.testing.assert_close(delta, expected)
    assert torch.equal(used[0], counts)
    assert all(m.counts_since_update.sum() == 0 for m in model.moe_layers())
    with pytest.raises(ValueError, match="gamma"):
        update_bias(model, gamma=-1.0)


def test_update_bias_reduces_imbalance_over_steps():
    """A strongly biased start (expert 0 favoured) is pulled back towards balance by the sign rule."""
    torch.manual_seed(7)
    moe = DeepseekMoE(tiny()).train()
    with torch.no_grad():
        moe.gate.e_score_correction_bias[0] = 0.2
    x = torch.randn(4, 16, 64)
    moe(x)
    first = max_violation(moe.counts_since_update)
    for _ in range(30):
        update_bias(moe, gamma=0.01)
        moe(x)
    assert max_violation(moe.counts_since_update) < first
    assert moe.gate.e_score_correction_bias[0] < 0.2


def test_sequence_loss_is_alpha_for_uniform_routing():
    n_r, k, t = 8, 2, 16
    scores = torch.full((3, t, n_r), 0.5)
    idx = torch.stack([torch.arange(2 * i, 2 * i + 2) % n_r for i in range(t)])   # each expert 4 times
    idx = idx.expand(3, t, k)
    loss = sequence_balance_loss(scores, idx, alpha=1e-4)
    assert loss.item() == torch.tensor(1e-4).item()


def test_sequence_loss_uses_sum_normalised_sigmoid_and_no_grad_through_f():
    g = torch.Generator().manual_seed(8)
    b, t, n_r, k, alpha = 2, 5, 6, 2, 0.3
    scores = torch.rand(b, t, n_r, generator=g).clamp(0.05, 0.95).requires_grad_(True)
    idx = torch.stack([torch.randperm(n_r, generator=g)[:k] for _ in range(b * t)]).view(b, t, k)
    loss = sequence_balance_loss(scores, idx, alpha)
    # hand formula, eqs. 17–20, per sequence then averaged
    f = torch.zeros(b, n_r)
    for bi in range(b):
        for ti in range(t):
            for e in idx[bi, ti].tolist():
                f[bi, e] += n_r / (k * t)
    sprime = scores.detach() / scores.detach().sum(-1, keepdim=True)
    expect = alpha * (f * sprime.mean(1)).sum(-1).mean()
    torch.testing.assert_close(loss.detach(), expect)
    softmaxed = alpha * (f * scores.detach().softmax(-1).mean(1)).sum(-1).mean()
    assert abs(softmaxed - expect) > 1e-4                   # the two normalisations differ here
    loss.backward()
    # dL/ds_{j,t} with f held constant: α/(B·T) · (f_j − Σ_i f_i s'_{i,t}) / Σ_i s_{i,t}
    s = scores.detach()
    grad = alpha / (b * t) * (f[:, None, :] - (f[:, None, :] * sprime).sum(-1, keepdim=True)) / s.sum(-1, keepdim=True)
    torch.testing.assert_close(scores.grad, grad)


def test_max_violation_closed_form():
    assert max_violation(torch.tensor([4, 2, 2, 0])) == pytest.approx(1.0)       # (4 − 2)/2
    assert max_violation(torch.tensor([3, 3, 3])) == 0.0
    rows = torch.tensor([[4.0, 2, 2, 0], [2, 2, 2, 2]])
    assert max_violation(rows) == pytest.approx(0.5)                             # mean over rows
    with pytest.raises(ValueError, match="routed token"):
        max_violation(torch.zeros(4))


def test_training_loss_contains_balance_loss():
    torch.manual_seed(9)
    model = DeepSeekV3(tiny(), aux_loss_alpha=1e-2).train()
    ids = torch.randint(0, 96, (2, 12))
    out = model(ids, targets=torch.roll(ids, -1, 1))
    aux = [m.aux_loss for m in model.modules() if isinstance(m, DeepseekMoE)]
    assert len(aux) == 3 and all(a.item() > 0 for a in aux)   # layers 1, 2 and the MTP block
    torch.testing.assert_close(out.aux_loss, torch.stack(aux).sum())
    model.eval()
    out = model(ids, targets=torch.roll(ids, -1, 1))
    assert out.aux_loss.item() == 0.0                          # computed only in training mode


# ------------------------------------------------------------------------------------------ fast path
def _twin_layers(cfg, seed: int, aux: float = 0.0, bias=None):
    """Two DeepseekMoE layers with the same random O(1) weights: the fast path and the reference loop."""
    torch.manual_seed(seed)
    fast = DeepseekMoE(cfg, aux_loss_alpha=aux, impl="fast").train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in fast.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        if bias is not None:
            fast.gate.e_score_correction_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    loop = DeepseekMoE(cfg, aux_loss_alpha=aux, impl="loop").train()
    loop.load_state_dict(fast.state_dict())
    return fast, loop


def _grads(module):
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


@pytest.mark.parametrize("seed,shape,routing,d,width", [
    (0, (2, 7), (8, 4, 2, 2), 64, 64),
    (1, (3, 33), (16, 4, 2, 4), 32, 16),
    (2, (1, 50), (16, 8, 3, 5), 48, 24),
    (3, (4, 16), (12, 1, 1, 3), 32, 8),
])
def test_fast_experts_equal_the_loop_in_forward_and_gradients(seed, shape, routing, d, width):
    n_e, n_g, k_g, k = routing
    cfg = tiny(hidden_size=d, moe_intermediate_size=width, n_routed_experts=n_e, n_group=n_g, topk_group=k_g,
               num_experts_per_tok=k)
    # uneven loads: a bias that favours a few experts strongly
    bias = 0.3 * torch.randn(n_e, generator=torch.Generator().manual_seed(seed))
    fast, loop = _twin_layers(cfg, seed, aux=1e-2, bias=bias)
    x = torch.randn(*shape, d, generator=torch.Generator().manual_seed(100 + seed))
    xf, xl = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_f, out_l = fast(xf), loop(xl)
    torch.testing.assert_close(out_f, out_l, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.last_counts, loop.last_counts) and fast.last_counts.max() > fast.last_counts.min()
    torch.testing.assert_close(fast.aux_loss, loop.aux_loss)
    upstream = torch.randn(out_f.shape, generator=torch.Generator().manual_seed(200 + seed))
    ((out_f * upstream).sum() + fast.aux_loss).backward()
    ((out_l * upstream).sum() + loop.aux_loss).backward()
    gf, gl = _grads(fast), _grads(loop)
    assert gf.keys() == gl.keys() and "gate.weight" in gf
    for name in gf:
        torch.testing.assert_close(gf[name], gl[name], rtol=1e-4, atol=1e-5, msg=name)
    assert gf["gate.weight"].abs().sum() > 0                      # the gate learns through g and the aux loss
    torch.testing.assert_close(xf.grad, xl.grad, rtol=1e-4, atol=1e-5)


def test_fast_experts_with_unused_experts():
    """Experts of groups that are never selected receive no token: outputs and gradients still match,
    and their weight gradients are exactly zero (the loop leaves them None)."""
    cfg = tiny(hidden_size=32, moe_intermediate_size=16)            # 8 experts in 4 groups, keep 2, K=2
    bias = [5.0, 5.0, 4.0, 4.0, -5.0, -5.0, -5.0, -5.0]              # groups 2, 3 can never win
    fast, loop = _twin_layers(cfg, 7, bias=bias)
    x = torch.randn(2, 9, 32)
    fast(x).sum().backward()
    loop(x).sum().backward()
    assert fast.last_counts[4:].sum() == 0 and fast.last_counts[:4].sum() == 2 * 9 * 2
    for e in range(4, 8):
        assert loop.experts[e].gate_proj.weight.grad is None
        assert torch.equal(fast.experts[e].gate_proj.weight.grad, torch.zeros(16, 32))
        assert torch.equal(fast.experts[e].down_proj.weight.grad, torch.zeros(32, 16))
    gf, gl = _grads(fast), _grads(loop)
    for name in gf:
        torch.testing.assert_close(gf[name], gl[name], rtol=1e-4, atol=1e-5, msg=name)


def test_fast_path_never_calls_an_expert_module_and_keeps_checkpoint_names():
    cfg = tiny(hidden_size=32, moe_intermediate_size=16)
    fast, loop = _twin_layers(cfg, 3)

    def boom(*_):
        raise AssertionError("the fast path must not run experts one module at a time")

    for e in fast.experts:
        e.forward = boom
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(fast(x), loop(x), rtol=1e-5, atol=1e-5)
    names = set(fast.state_dict())
    assert {f"experts.{i}.{p}.weight" for i in range(8) for p in ("gate_proj", "up_proj", "down_proj")} <= names
    assert names == set(loop.state_dict())


def test_fast_path_falls_back_to_the_loop_where_grouped_mm_cannot_run():
    # float64 is not a grouped_mm dtype; width 6 breaks its 16-byte row alignment
    for cfg, dtype in ((tiny(hidden_size=32, moe_intermediate_size=16), torch.float64),
                       (tiny(hidden_size=32, moe_intermediate_size=6), torch.float32)):
        fast, loop = _twin_layers(cfg, 4)
        fast, loop = fast.to(dtype), loop.to(dtype)
        x = torch.randn(2, 6, 32, dtype=dtype)
        torch.testing.assert_close(fast(x), loop(x), rtol=1e-5, atol=1e-5)


def test_moe_impl_is_validated():
    with pytest.raises(ValueError, match="impl must be 'fast' or 'loop'"):
        DeepseekMoE(tiny(), impl="grouped")
