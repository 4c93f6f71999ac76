"""MHA / GQA / MQA baseline (dsv3_lessons.course.ch01_kv_cache.attention) against independent oracles.

Oracles: transformers' ``LlamaAttention`` (eager) with the same weights; a textbook per-head
attention written with ``F.scaled_dot_product_attention``; closed-form cache sizes and K/V counts.
"""
import pytest
import torch
import torch.nn.functional as F

from dsv3_lessons.course.ch01_kv_cache.attention import (GroupedQueryAttention, KVCache, as_mha, attention_kind,
                                                         causal_mask, decode)
from dsv3_lessons.course.ch01_kv_cache.kv_cache import AttentionSpec, bytes_per_token
from dsv3_lessons.model.rope import apply_rope_interleaved, interleaved_to_half_permutation, rope_inv_freq

HID, HEADS, HDIM = 64, 4, 16


def make(n_kv, layout="interleaved", seed=0, bias=False):
    torch.manual_seed(seed)
    layer = GroupedQueryAttention(HID, HEADS, n_kv, HDIM, rope_layout=layout, bias=bias).eval()
    if bias:  # nn.Linear biases start random anyway; make sure they are not all tiny
        with torch.no_grad():
            for lin in (layer.q_proj, layer.k_proj, layer.v_proj, layer.o_proj):
                lin.bias.normal_()
    return layer


def llama_reference(layer, x, start_pos, permute):
    """transformers' LlamaAttention loaded with ``layer``'s weights (rotate_half layout)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    n_kv = layer.num_key_value_heads
    cfg = LlamaConfig(hidden_size=HID, num_attention_heads=HEADS, num_key_value_heads=n_kv, head_dim=HDIM,
                      rope_theta=layer.rope_theta, attention_bias=False)
    cfg._attn_implementation = "eager"
    hf = LlamaAttention(cfg, 0).eval()
    perm = interleaved_to_half_permutation(HDIM) if permute else torch.arange(HDIM)
    with torch.no_grad():
        hf.q_proj.weight.copy_(layer.q_proj.weight.view(HEADS, HDIM, HID)[:, perm].reshape(-1, HID))
        hf.k_proj.weight.copy_(layer.k_proj.weight.view(n_kv, HDIM, HID)[:, perm].reshape(-1, HID))
        hf.v_proj.weight.copy_(layer.v_proj.weight)
        hf.o_proj.weight.copy_(layer.o_proj.weight)
        b, s, _ = x.shape
        pos = torch.arange(start_pos, start_pos + s)[None].expand(b, -1)
        cos, sin = LlamaRotaryEmbedding(cfg)(x, pos)
        mask = torch.full((s, s), float("-inf")).triu(1)[None, None]
        return hf(x, position_embeddings=(cos, sin), attention_mask=mask)[0]


@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_matches_transformers_llama_attention(n_kv, layout):
    layer = make(n_kv, layout)
    x = torch.randn(2, 7, HID)
    with torch.no_grad():
        ours = layer(x, start_pos=3)
    ref = llama_reference(layer, x, 3, permute=(layout == "interleaved"))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_llama_comparison_can_fail_without_the_channel_permutation():
    # negative control: interleaved weights loaded as-is into a rotate_half model give other numbers
    layer = make(2, "interleaved")
    x = torch.randn(2, 7, HID)
    with torch.no_grad():
        ours = layer(x)
    ref = llama_reference(layer, x, 0, permute=False)
    assert (ours - ref).abs().max() > 1e-3


def textbook_attention(layer, x):
    """Per-head attention with K/V heads physically repeated, causal SDPA, RoPE on whole heads."""
    b, s, _ = x.shape
    g = layer.num_groups
    ang = torch.arange(s, dtype=torch.float32)[:, None] * rope_inv_freq(HDIM, layer.rope_theta)[None]
    cos, sin = ang.cos(), ang.sin()
    q = layer.q_proj(x).view(b, s, HEADS, HDIM).transpose(1, 2)
    k = layer.k_proj(x).view(b, s, -1, HDIM).transpose(1, 2).repeat_interleave(g, dim=1)
    v = layer.v_proj(x).view(b, s, -1, HDIM).transpose(1, 2).repeat_interleave(g, dim=1)
    q, k = apply_rope_interleaved(q, cos, sin), apply_rope_interleaved(k, cos, sin)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return layer.o_proj(out.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_matches_textbook_sdpa(n_kv):
    layer = make(n_kv)
    x = torch.randn(3, 6, HID)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), textbook_attention(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv,bias", [(2, False), (1, False), (2, True)])
def test_gqa_and_mqa_equal_mha_with_tied_kv_heads(n_kv, bias):
    layer = make(n_kv, bias=bias)
    mha = as_mha(layer)
    assert (layer.kind, mha.kind) == (attention_kind(HEADS, n_kv), "MHA")
    assert mha.num_key_value_heads == HEADS
    # the MHA copy caches num_groups times more per token: the memory GQA/MQA save
    assert mha.kv_elements_per_token() == layer.num_groups * layer.kv_elements_per_token()
    x = torch.randn(2, 8, HID)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), mha(x), atol=1e-6, rtol=1e-6)
    # and the tie matters: perturbing one copied head breaks the equality
    with torch.no_grad():
        mha.k_proj.weight[HDIM:2 * HDIM] += 0.5
        assert (layer(x) - mha(x)).abs().max() > 1e-3


def test_gqa_with_one_group_per_head_is_mha():
    layer = make(HEADS)
    assert layer.kind == "MHA" and layer.num_groups == 1
    x = torch.randn(2, 5, HID)
    with torch.no_grad():
        torch.testing.assert_close(as_mha(layer)(x), layer(x), atol=0, rtol=0)


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_cached_decoding_equals_full_forward(n_kv):
    layer = make(n_kv)
    x = torch.randn(2, 11, HID)
    with torch.no_grad():
        full = layer(x)
        cache = layer.new_cache(2, 16)
        parts = [layer(x[:, :4], 0, cache), layer(x[:, 4:6], 4, cache)]  # prefill, then a 2-token chunk
        parts += [layer(x[:, t:t + 1], t, cache) for t in range(6, 11)]  # then one token at a time
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 11


@pytest.mark.parametrize("prompt_len", [1, 4])
def test_decode_modes_agree_and_count_kv_rows(prompt_len):
    layer = make(2)
    T = 9
    x = torch.randn(1, T, HID)
    with torch.no_grad():
        full = layer(x)
    cached, rows_cached = decode(layer, x, prompt_len, use_cache=True)
    recomputed, rows_recomputed = decode(layer, x, prompt_len, use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recomputed, full, atol=1e-5, rtol=1e-5)
    assert rows_cached == T
    assert rows_recomputed == prompt_len + sum(range(prompt_len + 1, T + 1))


def test_unused_cache_slots_never_reach_the_softmax():
    layer = make(2)
    x = torch.randn(2, 5, HID)
    cache = layer.new_cache(2, 32)
    cache.k.fill_(float("nan"))  # a masked_fill(-inf) on the scores would still let NaN values leak
    cache.v.fill_(float("nan"))
    with torch.no_grad():
        out = torch.cat([layer(x[:, :3], 0, cache), layer(x[:, 3:], 3, cache)], 1)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)


def test_start_pos_shift_leaves_uncached_output_unchanged():
    # RoPE scores depend on relative positions only (RoFormer §3.2.2, eq. (16)); with a causal mask, shifting
    # every position by the same amount changes nothing -- while the rotated keys themselves change.
    layer = make(2)
    x = torch.randn(1, 6, HID)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, start_pos=0), layer(x, start_pos=37), atol=1e-4, rtol=1e-4)
        _, k0, _ = layer.qkv(x, torch.arange(6))
        _, k37, _ = layer.qkv(x, torch.arange(37, 43))
    assert (k0 - k37).abs().max() > 1e-2


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_cache_bytes_match_kv_cache_arithmetic(n_kv):
    layer = make(n_kv).to(torch.bfloat16)
    cache = layer.new_cache(3, 10)
    assert cache.k.dtype == torch.bfloat16
    with torch.no_grad():
        layer(torch.randn(3, 4, HID, dtype=torch.bfloat16), 0, cache)
    spec = AttentionSpec(name="toy", attention=attention_kind(HEADS, n_kv), num_hidden_layers=1,
                         num_attention_heads=HEADS, num_key_value_heads=n_kv, head_dim=HDIM).validate()
    assert cache.bytes_per_token == bytes_per_token(spec, "bf16") == 2 * n_kv * HDIM * 2
    assert cache.nbytes_used == 3 * 4 * cache.bytes_per_token
    assert cache.nbytes_allocated == 3 * 10 * cache.bytes_per_token


def test_causal_mask_truth_table():
    # two new queries at positions 2 and 3 over four keys: query 2 sees keys 0..2, query 3 sees 0..3
    expected = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert torch.equal(causal_mask(2, 4), expected)
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="q_len"):
        causal_mask(5, 4)


def test_kind_names():
    assert [attention_kind(8, k) for k in (8, 4, 2, 1)] == ["MHA", "GQA", "GQA", "MQA"]


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="num_key_value_heads .3. must divide num_attention_heads .4."):
        GroupedQueryAttention(HID, 4, 3)
    with pytest.raises(ValueError, match="head_dim must be even"):
        GroupedQueryAttention(HID, 4, 2, head_dim=15)
    with pytest.raises(ValueError, match="pass head_dim"):
        GroupedQueryAttention(65, 4, 2)
    with pytest.raises(ValueError, match="rope_layout"):
        GroupedQueryAttention(HID, 4, 2, rope_layout="rotate")
    with pytest.raises(ValueError, match="num_attention_heads must be a positive integer"):
        GroupedQueryAttention(HID, 0, 1)
    layer = make(2)
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.randn(2, 3, HID + 1))
    with pytest.raises(ValueError, match="start_pos must be a non-negative"):
        layer(torch.randn(1, 3, HID), start_pos=-1)
    cache = layer.new_cache(1, 4)
    layer(torch.randn(1, 2, HID), 0, cache)
    with pytest.raises(ValueError, match="start_pos=0 but the cache holds 2"):
        layer(torch.randn(1, 1, HID), 0, cache)
    with pytest.raises(ValueError, match="cache full"):
        layer(torch.randn(1, 3, HID), 2, cache)
    with pytest.raises(ValueError, match="n_kv_heads=2"):
        make(1)(torch.randn(1, 1, HID), 0, KVCache(1, 4, 2, HDIM))
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        KVCache(1, 0, 2, HDIM)
    with pytest.raises(ValueError, match="prompt_len"):
        decode(layer, torch.randn(1, 3, HID), 0)
