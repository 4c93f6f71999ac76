"""The assembled model: causality, cached decoding, MTP alignment/order/sharing, losses, input errors.

Oracles: properties that hold for any causal LM (changing a later token never changes earlier logits;
prefill + chunked decoding on the latent cache equals one full forward), hand-computed cross-entropies with the
shifts written out (V3 §2.2 eqs. 21–25: depth k at position i predicts t_{i+k+1}), and the released weights'
``eh_proj`` convention (embedding first: the order the released checkpoint's weights expect, the opposite of
the order printed in V3 eq. 21). Weights are perturbed to O(1) so that wrong wiring is visible.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_lessons.model.config import count_parameters, tiny
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

V, D = 96, 64
SETTINGS = settings(max_examples=25, deadline=None)


def build(seed: int = 0, **kwargs) -> DeepSeekV3:
    torch.manual_seed(seed)
    model = DeepSeekV3(tiny(vocab_size=V), **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return build(0)


def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean −log p(target) over entries with target != −100, written out (not F.cross_entropy)."""
    logp = logits.float().log_softmax(-1)
    keep = target != -100
    picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return -(picked * keep).sum() / keep.sum()


# ------------------------------------------------------------------------------------------ causality
@SETTINGS
@given(data=st.data())
def test_later_tokens_never_change_earlier_logits(model, data):
    T = data.draw(st.integers(4, 24))
    p = data.draw(st.integers(1, T - 1))
    seed = data.draw(st.integers(0, 10_000))
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(seed))
    changed = ids.clone()
    changed[:, p:] = (ids[:, p:] + data.draw(st.integers(1, V - 1))) % V
    with torch.no_grad():
        a = model(ids, compute_mtp=True)
        b = model(changed, compute_mtp=True)
    # tolerance: the MoE experts see different token batches, so only float rounding (~1e-6) may differ
    torch.testing.assert_close(a.logits[:, :p], b.logits[:, :p], rtol=1e-5, atol=1e-5)
    assert (a.logits[:, p] - b.logits[:, p]).abs().max() > 1e-3        # the change is visible at p
    # depth-1 position i reads tokens t_0 … t_{i+1}: positions < p − 1 are untouched
    torch.testing.assert_close(a.mtp_logits[0][:, :p - 1], b.mtp_logits[0][:, :p - 1], rtol=1e-5, atol=1e-5)
    assert (a.mtp_logits[0][:, p - 1] - b.mtp_logits[0][:, p - 1]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ cache
@SETTINGS
@given(chunks=st.lists(st.integers(1, 7), min_size=1, max_size=12), attn_impl=st.sampled_from(["naive", "absorb"]),
       seed=st.integers(0, 10_000))
def test_cached_decoding_equals_full_forward(model, chunks, attn_impl, seed):
    T = sum(chunks)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(seed))
    for layer in model.layers:
        layer.self_attn.attn_impl = attn_impl
    try:
        with torch.no_grad():
            full = model(ids).logits
            cache = model.new_cache(2, T + 3)
            pieces, start = [], 0
            for c in chunks:
                pieces.append(model(ids[:, start:start + c], cache=cache).logits)
                start += c
    finally:
        for layer in model.layers:
            layer.self_attn.attn_impl = "naive"
    assert cache[0].length == T
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=0, atol=2e-5)


def test_cache_errors(model):
    ids = torch.randint(0, V, (1, 4))
    with pytest.raises(ValueError, match="compute_mtp with a cache"):
        model(ids, cache=model.new_cache(1, 8), compute_mtp=True)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.new_cache(1, 10_000)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 257, dtype=torch.long))


# ------------------------------------------------------------------------------------------ MTP labels
def test_mtp_depth1_predicts_token_two_ahead(model):
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, V, (2, 17), generator=g)       # t_0 … t_16
    ids, targets = stream[:, :16], stream[:, 1:]              # targets[:, i] = t_{i+1}
    with torch.no_grad():
        out = model(ids, targets=targets)
    lg = out.mtp_logits[0]
    assert lg.shape == (2, 15, V)                             # positions i = 0 … T−2
    torch.testing.assert_close(out.main_loss, ce(out.logits, stream[:, 1:17]))
    torch.testing.assert_close(out.mtp_loss, ce(lg, stream[:, 2:17]))      # position i -> t_{i+2}
    wrong = ce(lg, stream[:, 1:16])                                        # a double/missing shift differs
    assert abs(wrong - out.mtp_loss) > 1e-2


def test_ignore_index_is_respected(model):
    g = torch.Generator().manual_seed(2)
    stream = torch.randint(0, V, (2, 13), generator=g)
    ids, targets = stream[:, :12], stream[:, 1:].clone()
    targets[0, 3] = targets[1, 7:] = -100
    with torch.no_grad():
        out = model(ids, targets=targets)
    torch.testing.assert_close(out.main_loss, ce(out.logits, targets))
    torch.testing.assert_close(out.mtp_loss, ce(out.mtp_logits[0], targets[:, 1:]))
    only_first = torch.full_like(targets, -100)
    only_first[:, 0] = targets[:, 0]                          # depth 1 has no valid target at all
    with torch.no_grad():
        out = model(ids, targets=only_first)
    assert out.mtp_loss.item() == 0.0 and torch.isfinite(out.loss)


def test_loss_is_main_plus_lambda_mtp_plus_aux():
    g = torch.Generator().manual_seed(3)
    stream = torch.randint(0, V, (2, 11), generator=g)
    ids, targets = stream[:, :10], stream[:, 1:]
    losses = {}
    for lam in (0.3, 0.1):
        model = build(4, aux_loss_alpha=1e-2, mtp_loss_weight=lam).train()
        out = model(ids, targets=targets)
        aux = sum(m.aux_loss for m in model.modules() if hasattr(m, "aux_loss") and hasattr(m, "gate"))
        expect = ce(out.logits, targets) + lam * ce(out.mtp_logits[0], targets[:, 1:]) + aux
        torch.testing.assert_close(out.loss, expect)
        assert out.aux_loss > 0
        losses[lam] = out
    diff = losses[0.3].loss - losses[0.1].loss
    torch.testing.assert_close(diff, 0.2 * losses[0.3].mtp_loss)


# ------------------------------------------------------------------------------------------ MTP wiring
def test_eh_proj_takes_embedding_first(model):
    module = model.mtp[0]
    g = torch.Generator().manual_seed(5)
    h, h2 = torch.randn(2, 1, 6, D, generator=g)
    e, e2 = torch.randn(2, 1, 6, D, generator=g)
    saved = module.eh_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            module.eh_proj.weight[:, :D] = 0                  # the embedding half (released order)
            assert torch.equal(module(h, e), module(h, e2))   # depends only on hnorm(h)
            assert (module(h, e) - module(h2, e)).abs().max() > 1e-3
            module.eh_proj.weight.copy_(saved)
            module.eh_proj.weight[:, D:] = 0                  # the hidden half
            assert torch.equal(module(h, e), module(h2, e))
    finally:
        with torch.no_grad():
            module.eh_proj.weight.copy_(saved)


def test_mtp_shares_embedding_and_head():
    model = build(6)
    assert not any(p.shape == (V, D) for p in model.mtp.parameters())     # no own embedding / head
    c = count_parameters(model.cfg)
    assert sum(p.numel() for p in model.mtp.parameters()) + model.cfg.n_routed_experts == c.mtp
    ids = torch.randperm(V, generator=torch.Generator().manual_seed(6))[:9][None]   # distinct tokens
    out = model(ids, compute_mtp=True)
    out.mtp_logits[0].square().mean().backward()               # an MTP-only objective
    assert model.lm_head.weight.grad.abs().sum() > 0
    emb_grad = model.embed_tokens.weight.grad
    assert emb_grad[ids[0, 0]].abs().sum() > 0                 # through h^0
    assert emb_grad[ids[0, -1]].abs().sum() > 0                # t_{T−1} is read only by the MTP embedding


def test_bad_inputs_raise_value_error(model):
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, 2, V]]))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, -1, 3]]))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="targets"):
        model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[1, 2]]))


# ------------------------------------------------------------------------------------------ fast paths
@pytest.mark.parametrize("overrides", [{}, {"v_head_dim": 32}, {"qk_rope_head_dim": 4, "v_head_dim": 8}])
def test_fused_attention_equals_the_written_out_path(overrides):
    """Cache-free "naive" attention runs through F.scaled_dot_product_attention (q/k or v zero-padded to
    one width); it must equal the einsum/mask/softmax path in values and in every gradient."""
    from dsv3_lessons.model.mla import MultiHeadLatentAttention

    torch.manual_seed(11)
    cfg = tiny(vocab_size=V, **overrides)
    fused = MultiHeadLatentAttention(cfg)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in fused.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]) if p.dim() > 1
                    else 1 + 0.3 * torch.randn(p.shape, generator=g))
    written = MultiHeadLatentAttention(cfg)
    written.load_state_dict(fused.state_dict())
    written.use_sdpa = False
    x = torch.randn(2, 40, cfg.hidden_size, generator=g)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = fused(xa), written(xb)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    up = torch.randn(a.shape, generator=g)
    (a * up).sum().backward()
    (b * up).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(fused.named_parameters(), written.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # the absorbed form is never routed through the fused kernel, and agrees too
    with torch.no_grad():
        torch.testing.assert_close(fused(x, attn_impl="absorb"), b.detach(), rtol=1e-5, atol=1e-5)


def test_fused_rmsnorm_equals_the_formula():
    from dsv3_lessons.model.layers import RMSNorm

    norm = RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(64, generator=torch.Generator().manual_seed(1)))
    x = 3 * torch.randn(5, 7, 64, generator=torch.Generator().manual_seed(2))
    expect = norm.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    torch.testing.assert_close(norm(x), expect)
    torch.testing.assert_close(norm(x), norm.reference_forward(x), rtol=1e-6, atol=1e-6)
    xb = x.to(torch.bfloat16)                                   # statistics in fp32, cast back, then the gain
    torch.testing.assert_close(norm(xb), norm.reference_forward(xb), rtol=0, atol=0)
    with pytest.raises(ValueError, match="last dim 64"):
        norm(torch.zeros(2, 63))


def test_whole_model_fast_paths_equal_reference_paths():
    """The assembled model with fused attention, fused norms and grouped-matmul experts equals the same
    weights run through the reference paths (loop experts, einsum attention, op-by-op norms), MTP included."""
    from dsv3_lessons.model.deepseek_v3 import use_reference_paths

    fast = build(12, aux_loss_alpha=1e-2).train()
    ref = use_reference_paths(build(12, aux_loss_alpha=1e-2).train())
    stream = torch.randint(0, V, (3, 25), generator=torch.Generator().manual_seed(12))
    out_f, out_r = fast(stream[:, :-1], stream[:, 1:]), ref(stream[:, :-1], stream[:, 1:])
    torch.testing.assert_close(out_f.logits, out_r.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_f.loss, out_r.loss, rtol=1e-5, atol=1e-5)
    out_f.loss.backward()
    out_r.loss.backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        pg = p.grad if p.grad is not None else torch.zeros_like(p)
        qg = q.grad if q.grad is not None else torch.zeros_like(q)
        torch.testing.assert_close(pg, qg, rtol=1e-3, atol=1e-5, msg=name)
