"""Tests of dsv3_lessons.model.mla against independent oracles.

Oracle: transformers' ``DeepseekV3Attention`` (transformers/models/deepseek_v3/modeling_deepseek_v3.py)
holding a *copy* of our weights, with YaRN configured (tiny config: factor 4 over 64 positions) and
inputs at positions >= 1 (position 0 cannot reveal a wrong rotation or scale). Closed-form values come
from the V3 report (§2.1.1, §4.3), the YaRN paper and the released config.

Each attention mistake seen in public implementations has a test that checks the right behaviour AND a mutation
that shows the
check would fail if the pitfall were present (so no test here passes vacuously).
"""
from __future__ import annotations

import math

import pytest
import torch

import dsv3_lessons.model.mla as mla_module
from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import LatentCache, MultiHeadLatentAttention, causal_mask, split_kv_b
from dsv3_lessons.course.ch04_mla_inference.decode import (build_hf_attention, build_mla, hf_attention_forward,
                                                           v3_attention_config)
from dsv3_lessons.model.rope import apply_rope_interleaved, interleaved_to_half_permutation

TOL32 = 1e-5


def sharp_mla(cfg=None, std: float = 0.2, seed: int = 0, dtype=torch.float32) -> MultiHeadLatentAttention:
    """A layer whose weights are large enough that attention is far from uniform.

    With PyTorch's default init the softmax is almost flat, and a wrong scale changes little; with
    std 0.2 logits are O(1–10), so every pitfall below moves the output by >> 1e-5.
    """
    mla = build_mla(cfg or tiny(), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in mla.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            else:  # RMSNorm weights: not all ones, so a missing norm weight would show
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return mla.to(dtype)


def hidden(b: int, s: int, cfg, seed: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, s, cfg.hidden_size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def layer():
    return sharp_mla()


@pytest.fixture(scope="module")
def oracle(layer):
    return build_hf_attention(layer, share_weights=False)  # cloned weights


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- oracle parity
@pytest.mark.parametrize("impl", ["naive", "absorb"])
@pytest.mark.parametrize("start_pos", [1, 5])
def test_matches_transformers_full_forward(layer, oracle, impl, start_pos):
    x = hidden(2, 7, layer.cfg)
    ours = layer(x, start_pos=start_pos, attn_impl=impl)
    theirs = hf_attention_forward(oracle, x, start_pos=start_pos)
    assert ours.abs().max() > 0.5  # a non-trivial output, so the tolerance below means something
    assert max_diff(ours, theirs) <= TOL32


def test_oracle_has_yarn_configured(layer, oracle):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    rs = oracle.config.rope_parameters
    assert rs["rope_type"] == "yarn" and rs["factor"] == layer.cfg.rope_scaling["factor"]
    d = layer.qk_rope_head_dim
    plain = 1.0 / (layer.cfg.rope_theta ** (torch.arange(0, d, 2).float() / d))
    hf_freq = DeepseekV3RotaryEmbedding(oracle.config).inv_freq
    assert not torch.allclose(hf_freq, plain)          # YaRN changes some frequencies ...
    assert torch.allclose(hf_freq, layer.rotary.inv_freq)  # ... and ours agree with transformers'


@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_cached_decode_matches_transformers_dynamic_cache(layer, oracle, impl):
    from transformers.cache_utils import DynamicCache

    x = hidden(1, 9, layer.cfg, seed=4)
    cache, hf_cache = layer.new_cache(1, 16), DynamicCache()
    ours = [layer(x[:, :5], 0, cache, attn_impl=impl)]
    theirs = [hf_attention_forward(oracle, x[:, :5], 0, hf_cache)]
    for t in range(5, 9):
        ours.append(layer(x[:, t:t + 1], t, cache, attn_impl=impl))
        theirs.append(hf_attention_forward(oracle, x[:, t:t + 1], t, hf_cache))
    assert max_diff(torch.cat(ours, 1), torch.cat(theirs, 1)) <= TOL32
    # the caches hold the same things: normalised c^KV, and k^R rotated once (transformers: [evens|odds])
    perm = interleaved_to_half_permutation(layer.qk_rope_head_dim)
    assert max_diff(cache.kv[:, :9], hf_cache.layers[0].keys[:, 0]) <= TOL32
    assert max_diff(cache.k_pe[:, :9, perm], hf_cache.layers[0].values[:, 0]) <= TOL32


# ---------------------------------------------------------------------------------------------- naive == absorb
@pytest.mark.parametrize("cfg_name", ["tiny", "v3_slice"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_absorb_equals_naive(cfg_name, dtype, tol):
    cfg = tiny() if cfg_name == "tiny" else v3_attention_config(num_attention_heads=4, hidden_size=256)
    mla = build_mla(cfg, seed=1).to(dtype)
    x = hidden(2, 6, cfg, dtype=dtype)
    cache_n, cache_a = mla.new_cache(2, 6), mla.new_cache(2, 6)
    naive = mla(x, start_pos=0, cache=cache_n, attn_impl="naive")
    absorb = mla(x, start_pos=0, cache=cache_a, attn_impl="absorb")
    assert naive.dtype == dtype and naive.abs().max() > 1e-2
    assert max_diff(naive, absorb) <= tol


# ---------------------------------------------------------------------------------------------- cache == full
@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_prefill_then_decode_equals_full_forward(layer, impl):
    x = hidden(2, 10, layer.cfg, seed=5)
    full = layer(x, start_pos=0, attn_impl=impl)
    cache = layer.new_cache(2, 12)
    parts = [layer(x[:, :6], 0, cache, attn_impl=impl)]
    parts += [layer(x[:, t:t + 1], t, cache, attn_impl=impl) for t in range(6, 10)]
    assert cache.length == 10
    assert max_diff(torch.cat(parts, 1), full) <= TOL32


# ------------------------------------------------------------------- mistakes seen in public implementations
def test_softmax_scale_is_192_and_mscale_squared():
    from dsv3_lessons.model.rope import softmax_scale

    cfg = deepseek_v3_671b()
    mscale = 0.1 * 1.0 * math.log(40) + 1.0
    assert abs(mscale - 1.3688879) < 1e-7  # YaRN §3.4: 0.1·ln 40 + 1
    assert abs(softmax_scale(cfg.qk_head_dim, cfg.rope_scaling) - 192 ** -0.5 * mscale ** 2) < 1e-12
    assert abs(softmax_scale(cfg.qk_head_dim, cfg.rope_scaling) - 0.1352338) < 1e-7


def test_layer_scale_matches_oracle(layer, oracle):
    m = 0.1 * math.log(layer.cfg.rope_scaling["factor"]) + 1.0
    assert layer.softmax_scale == pytest.approx((16 + 8) ** -0.5 * m * m, rel=1e-12)
    assert layer.softmax_scale == pytest.approx(oracle.scaling, rel=1e-12)


@pytest.mark.parametrize("wrong", ["hidden_over_heads", "latent_576_analogue", "missing_mscale2", "mscale_once"])
def test_wrong_softmax_scale_is_caught_by_oracle(wrong):
    """Mutations of the scale (mistakes seen in public implementations: from hidden/heads, from 576, missing
    mscale²) break parity."""
    mla = sharp_mla()
    oracle = build_hf_attention(mla)
    cfg = mla.cfg
    m = 0.1 * math.log(cfg.rope_scaling["factor"]) + 1.0
    mla.softmax_scale = {
        "hidden_over_heads": (cfg.hidden_size // cfg.num_attention_heads) ** -0.5 * m * m,
        "latent_576_analogue": (cfg.kv_lora_rank + cfg.qk_rope_head_dim) ** -0.5 * m * m,
        "missing_mscale2": cfg.qk_head_dim ** -0.5,
        "mscale_once": cfg.qk_head_dim ** -0.5 * m,
    }[wrong]
    x = hidden(1, 6, cfg)
    assert max_diff(mla(x, start_pos=2), hf_attention_forward(oracle, x, start_pos=2)) > 1e-3


def test_split_kv_b_is_per_head():
    n_h, d_h, d_v, d_c = 3, 4, 2, 5
    w = torch.arange(n_h * (d_h + d_v), dtype=torch.float32)[:, None].expand(-1, d_c)  # row r holds r
    w_uk, w_uv = split_kv_b(w, n_h, d_h, d_v)
    assert w_uk.shape == (n_h, d_h, d_c) and w_uv.shape == (n_h, d_v, d_c)
    for i in range(n_h):
        base = i * (d_h + d_v)
        assert w_uk[i, :, 0].tolist() == list(range(base, base + d_h))
        assert w_uv[i, :, 0].tolist() == list(range(base + d_h, base + d_h + d_v))
    with pytest.raises(ValueError, match="kv_b_proj.weight has"):
        split_kv_b(w[:-1], n_h, d_h, d_v)


def test_kv_b_split_across_heads_is_caught(monkeypatch):
    """The pitfall "first n_h·d_h rows are keys": absorb then disagrees with naive and with the oracle."""
    mla = sharp_mla()
    x = hidden(1, 5, mla.cfg)
    naive = mla(x, start_pos=1, attn_impl="naive")
    assert max_diff(mla(x, start_pos=1, attn_impl="absorb"), naive) <= TOL32

    def split_across_heads(w, n_heads, d_h, d_v):
        keys, values = w[: n_heads * d_h], w[n_heads * d_h:]
        return keys.reshape(n_heads, d_h, -1), values.reshape(n_heads, d_v, -1)

    monkeypatch.setattr(mla_module, "split_kv_b", split_across_heads)
    assert max_diff(mla(x, start_pos=1, attn_impl="absorb"), naive) > 1e-3


def test_cached_rope_key_rotated_exactly_once(layer):
    x = hidden(1, 6, layer.cfg, seed=6)
    cache = layer.new_cache(1, 8)
    layer(x, start_pos=0, cache=cache)
    raw = layer.kv_a_proj_with_mqa(x)[..., layer.kv_lora_rank:]          # k^R before RoPE
    cos, sin = layer.rotary(torch.arange(6))
    once = apply_rope_interleaved(raw, cos, sin)
    twice = apply_rope_interleaved(once, cos, sin)
    assert max_diff(cache.k_pe[:, :6], once) <= 1e-6
    assert max_diff(cache.k_pe[:, 1:6], raw[:, 1:]) > 1e-2      # it is rotated (positions >= 1) ...
    assert max_diff(cache.k_pe[:, 1:6], twice[:, 1:]) > 1e-2    # ... but not twice


def test_double_rotation_on_cache_read_is_caught(monkeypatch):
    """If the cached k^R were rotated again when read back, cached decode would leave the full forward."""
    mla = sharp_mla()
    x = hidden(1, 8, mla.cfg, seed=7)
    full = mla(x, start_pos=0)
    original_append = LatentCache.append

    def append_and_rotate_again(self, c_kv, k_pe):
        kv, pe = original_append(self, c_kv, k_pe)
        cos, sin = mla.rotary(torch.arange(pe.shape[1]))
        return kv, apply_rope_interleaved(pe, cos, sin)

    cache = mla.new_cache(1, 8)
    monkeypatch.setattr(LatentCache, "append", append_and_rotate_again)
    out = torch.cat([mla(x[:, :4], 0, cache)] + [mla(x[:, t:t + 1], t, cache) for t in range(4, 8)], 1)
    assert max_diff(out, full) > 1e-3


@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_unused_cache_slots_never_enter_softmax(layer, impl):
    x = hidden(1, 7, layer.cfg, seed=8)
    clean, dirty = layer.new_cache(1, 32), layer.new_cache(1, 32)
    dirty.kv.fill_(1e4)      # large, finite garbage in every slot, valid or not
    dirty.k_pe.fill_(-1e4)
    a = [layer(x[:, :4], 0, clean, attn_impl=impl)] + [layer(x[:, t:t + 1], t, clean, attn_impl=impl) for t in (4, 5, 6)]
    b = [layer(x[:, :4], 0, dirty, attn_impl=impl)] + [layer(x[:, t:t + 1], t, dirty, attn_impl=impl) for t in (4, 5, 6)]
    assert torch.isfinite(dirty.kv).all() and dirty.kv[0, 10, 0] == 1e4   # garbage still there past `length`
    assert torch.equal(torch.cat(a, 1), torch.cat(b, 1))


def test_causal_mask_offsets():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


# ---------------------------------------------------------------------------------------------- errors
def test_latent_cache_overflow_names_max_len():
    cache = LatentCache(1, 4, 32, 8)
    cache.append(torch.zeros(1, 3, 32), torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="max_len 4"):
        cache.append(torch.zeros(1, 2, 32), torch.zeros(1, 2, 8))
    assert cache.length == 3


@pytest.mark.parametrize("c_shape,k_shape", [((1, 2, 31), (1, 2, 8)),   # wrong d_c
                                             ((2, 2, 32), (2, 2, 8)),   # wrong batch
                                             ((1, 2, 32), (1, 2, 6))])  # wrong d_h^R
def test_latent_cache_shape_mismatch(c_shape, k_shape):
    cache = LatentCache(1, 4, 32, 8)
    with pytest.raises(ValueError, match="cache holds"):
        cache.append(torch.zeros(c_shape), torch.zeros(k_shape))


@pytest.mark.parametrize("c_shape,k_shape", [((1, 3, 32), (1, 1, 8)), ((2, 3, 32), (1, 3, 8))])
def test_latent_cache_k_pe_batch_or_length_mismatch(c_shape, k_shape):
    """k_pe whose batch or token count differs from c_kv's must not be broadcast silently."""
    cache = LatentCache(2 if c_shape[0] == 2 else 1, 4, 32, 8)
    with pytest.raises(ValueError, match="cache holds"):
        cache.append(torch.zeros(c_shape), torch.zeros(k_shape))


def test_start_pos_mismatch(layer):
    cache = layer.new_cache(1, 8)
    x = hidden(1, 2, layer.cfg)
    layer(x, 0, cache)
    with pytest.raises(ValueError, match="start_pos=3 but the cache holds 2"):
        layer(x, 3, cache)


def test_forward_input_errors(layer):
    with pytest.raises(ValueError, match="attn_impl"):
        layer(hidden(1, 2, layer.cfg), attn_impl="flash")
    with pytest.raises(ValueError, match=r"x must be \[batch, seq, 64\]"):
        layer(torch.zeros(1, 2, 63))
