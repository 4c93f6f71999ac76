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
