"""dsv3_lessons.model.rope against independent oracles.

Oracles: closed-form arithmetic in float64 (θ_i = base^(-2i/d), 2×2 rotation matrices, the rotated
dot product (q0k0+q1k1)cos a + (q1k0−q0k1)sin a), V3's numbers from the YaRN formulas (arXiv 2309.00071) and
the released config (low/high = 10/23, mscale 1.3688879, softmax scale 0.1352338), and transformers' DeepseekV3 code
(``apply_rotary_pos_emb_interleave``, ``apply_rotary_pos_emb``, ``ROPE_INIT_FUNCTIONS['yarn']``,
``DeepseekV3RotaryEmbedding``, ``DeepseekV3Attention.scaling``).
"""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import DeepseekV3Config as HFConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf

from dsv3_lessons.model.rope import (RotaryEmbedding, apply_rope_half, apply_rope_interleaved,
                               interleaved_to_half_permutation, rope_inv_freq, softmax_scale,
                               yarn_correction_range, yarn_inv_freq, yarn_mscale)

V3 = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
      "mscale": 1.0, "mscale_all_dim": 1.0}


def hf_config(rope_dim=64, rope_scaling=V3, base=10000.0, **kw):
    """A small transformers DeepseekV3Config whose rope part has ``rope_dim`` channels."""
    return HFConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=16,
                    qk_nope_head_dim=8, qk_rope_head_dim=rope_dim, v_head_dim=8, rope_theta=base,
                    rope_scaling=dict(rope_scaling) if rope_scaling else None, max_position_embeddings=163840, **kw)


def cos_sin(positions, inv_freq):
    a = torch.as_tensor(positions).float()[:, None] * inv_freq[None, :]
    return a.cos(), a.sin()


def rotation_matrix(pos, inv_freq):
    """Block-diagonal float64 rotation for interleaved pairs, built entry by entry."""
    d = 2 * inv_freq.numel()
    r = torch.zeros(d, d, dtype=torch.float64)
    for i, th in enumerate(inv_freq.double().tolist()):
        a = pos * th
        r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = math.cos(a), -math.sin(a)
        r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = math.sin(a), math.cos(a)
    return r


# ------------------------------------------------------------------ plain RoPE
@pytest.mark.parametrize("dim,base", [(2, 10000.0), (8, 10000.0), (64, 10000.0), (128, 500000.0)])
def test_inv_freq_closed_form(dim, base):
    want = torch.tensor([base ** (-2 * i / dim) for i in range(dim // 2)], dtype=torch.float64)
    got = rope_inv_freq(dim, base)
    assert got.shape == (dim // 2,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dim", [7, 63, 0, -2])
def test_odd_or_nonpositive_dim_raises(dim):
    with pytest.raises(ValueError, match="even"):
        rope_inv_freq(dim)


def test_interleaved_equals_rotation_matrices():
    f = rope_inv_freq(16)
    x = torch.randn(5, 16, dtype=torch.float64)
    pos = [0, 1, 7, 100, 4095]
    got = apply_rope_interleaved(x, *cos_sin(pos, f))
    want = torch.stack([rotation_matrix(p, f) @ x[j] for j, p in enumerate(pos)])
    for j, p in enumerate(pos):  # float32 angles: rounding grows with the position (~p·2^-24 rad)
        tol = 1e-6 + 4 * p * 2.0 ** -24 * x[j].abs().max().item()
        assert (got[j] - want[j]).abs().max().item() <= tol, p


def test_interleaved_channel_mismatch_raises():
    with pytest.raises(ValueError, match="rope channels"):
        apply_rope_interleaved(torch.randn(3, 8), *cos_sin([0, 1, 2], rope_inv_freq(6)))


def test_rotation_preserves_norm_and_dtype():
    f = rope_inv_freq(64)
    x = torch.randn(2, 4, 9, 64)
    y = apply_rope_interleaved(x, *cos_sin(range(9), f))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert apply_rope_interleaved(x.bfloat16(), *cos_sin(range(9), f)).dtype == torch.bfloat16
    assert apply_rope_half(x.bfloat16(), *cos_sin(range(9), f)).dtype == torch.bfloat16


def _hf_tables(positions, inv_freq):
    """transformers' cos/sin layout: cat(freqs, freqs), batch dim first."""
    a = torch.as_tensor(positions).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((a, a), dim=-1)[None]
    return emb.cos(), emb.sin()


def test_interleaved_matches_transformers_interleave():
    """Same rotation as transformers' interleave path; its output is written [evens | odds]."""
    d, s = 64, 11
    f = yarn_inv_freq(d, 10000.0, V3)
    q, k = torch.randn(1, 3, s, d), torch.randn(1, 1, s, d)
    pos = torch.arange(5, 5 + s)
    ours_q, ours_k = apply_rope_interleaved(q, *cos_sin(pos, f)), apply_rope_interleaved(k, *cos_sin(pos, f))
    hf_q, hf_k = hf.apply_rotary_pos_emb_interleave(q, k, *_hf_tables(pos, f))
    perm = interleaved_to_half_permutation(d)
    torch.testing.assert_close(ours_q[..., perm], hf_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_k[..., perm], hf_k, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_q @ ours_k.transpose(-1, -2), hf_q @ hf_k.transpose(-1, -2), rtol=1e-5, atol=1e-5)


def test_half_matches_transformers_rotate_half():
    d, s = 32, 6
    f = rope_inv_freq(d)
    q, k = torch.randn(2, 2, s, d), torch.randn(2, 2, s, d)
    cos, sin = cos_sin(range(s), f)
    hf_q, hf_k = hf.apply_rotary_pos_emb(q, k, *_hf_tables(range(s), f))
    torch.testing.assert_close(apply_rope_half(q, cos, sin), hf_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_rope_half(k, cos, sin), hf_k, rtol=0, atol=1e-6)


def test_permutation_links_the_two_layouts():
    d = 16
    perm = interleaved_to_half_permutation(d)
    assert perm.tolist() == list(range(0, d, 2)) + list(range(1, d, 2))
    x = torch.randn(4, d)
    cs = cos_sin([0, 3, 9, 30], rope_inv_freq(d))
    torch.testing.assert_close(apply_rope_half(x[..., perm], *cs), apply_rope_interleaved(x, *cs)[..., perm])


def test_rotate_half_on_interleaved_weights_is_wrong_except_at_position_0():
    """A mistake seen in public implementations: without the permutation rotate_half pairs the wrong channels."""
    d = 64
    q, k = torch.randn(1, d), torch.randn(1, d)
    f = rope_inv_freq(d)
    for m, n in [(0, 0), (5, 2), (40, 1)]:
        right = apply_rope_interleaved(q, *cos_sin([m], f)) @ apply_rope_interleaved(k, *cos_sin([n], f)).T
        wrong = apply_rope_half(q, *cos_sin([m], f)) @ apply_rope_half(k, *cos_sin([n], f)).T
        if m == n == 0:
            torch.testing.assert_close(wrong, right)
        else:
            assert (wrong - right).abs().item() > 1e-2


# ------------------------------------------------------------------ relative position (property)
@given(half=st.integers(1, 32), m=st.integers(0, 2048), n=st.integers(0, 2048), shift=st.integers(0, 2048),
       yarn=st.booleans(), seed=st.integers(0, 2**16))
def test_score_depends_only_on_relative_position(half, m, n, shift, yarn, seed):
    d = 2 * half
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(d, generator=g), torch.randn(d, generator=g)
    f = yarn_inv_freq(d, 10000.0, V3 if yarn else None)

    def score(a, b):
        return (apply_rope_interleaved(q[None], *cos_sin([a], f)) @ apply_rope_interleaved(k[None], *cos_sin([b], f)).T).item()

    # closed form in float64: R_m q · R_n k = Σ_i (q0k0+q1k1) cos((n−m)θ_i) + (q1k0−q0k1) sin((n−m)θ_i)
    qd, kd, th = q.double(), k.double(), f.double()
    ang = (n - m) * th
    closed = ((qd[0::2] * kd[0::2] + qd[1::2] * kd[1::2]) * ang.cos()
              + (qd[1::2] * kd[0::2] - qd[0::2] * kd[1::2]) * ang.sin()).sum().item()
    tol = 1e-3 * (q.norm() * k.norm()).item()  # float32 angles at positions up to 4096
    assert abs(score(m, n) - closed) <= tol
    assert abs(score(m + shift, n + shift) - closed) <= tol


# ------------------------------------------------------------------ YaRN: published numbers
def test_v3_yarn_range_is_10_23():
    assert yarn_correction_range(64, 10000.0, 4096, 32, 1) == (10, 23)  # YaRN §3.2 with V3's config


def test_yarn_range_from_extended_length_is_not_v3():
    """A mistake seen in public implementations: computing the range from 4096·40 instead of 4096 moves it."""
    assert yarn_correction_range(64, 10000.0, 4096 * 40, 32, 1) != (10, 23)


def test_v3_mscale_and_softmax_scale():
    assert yarn_mscale(40, 1.0) == pytest.approx(1.3688879, abs=5e-8)          # YaRN §3.4: 0.1·ln 40 + 1
    assert yarn_mscale(40, 1.0) == pytest.approx(0.1 * math.log(40) + 1, rel=1e-15)
    assert yarn_mscale(1.0) == 1.0 and yarn_mscale(0.5) == 1.0
    s = softmax_scale(192, V3)
    assert s == pytest.approx(0.1352338, abs=5e-8)                              # 192^-0.5·mscale² (official code)
    assert s == pytest.approx(192 ** -0.5 * 1.8738542, rel=1e-7)
    assert softmax_scale(192, None) == pytest.approx(192 ** -0.5, rel=1e-15)
    # mistakes seen in public implementations: not from hidden/heads, not from the 576-wide latent,
    # mscale squared not single
    assert abs(s - (7168 / 128) ** -0.5 * 1.8738542) > 1e-3
    assert abs(s - 576 ** -0.5 * 1.8738542) > 1e-3
    assert abs(s - 192 ** -0.5 * 1.3688879) > 1e-3


@pytest.mark.parametrize("rope_scaling", [
    V3,
    dict(V3, mscale=0.707, mscale_all_dim=0.707),    # DeepSeek-V2's values
    dict(V3, factor=4, original_max_position_embeddings=64),
    None,
], ids=["v3", "v2-mscale", "tiny", "no-yarn"])
def test_softmax_scale_matches_transformers_attention(rope_scaling):
    cfg = hf_config(rope_scaling=rope_scaling)
    attn = hf.DeepseekV3Attention(cfg, layer_idx=0)
    assert softmax_scale(8 + 64, rope_scaling) == pytest.approx(attn.scaling, rel=1e-12)


@pytest.mark.parametrize("dim,base,factor,orig,beta_fast,beta_slow", [
    (64, 10000.0, 40, 4096, 32, 1),     # DeepSeek-V3
    (8, 10000.0, 4, 64, 32, 1),         # the course's tiny config
    (128, 500000.0, 8, 8192, 32, 1),
    (64, 10000.0, 16, 2048, 16, 2),
    (16, 10000.0, 2, 16, 32, 1),        # low clipped at 0
])
def test_yarn_inv_freq_matches_transformers(dim, base, factor, orig, beta_fast, beta_slow):
    rs = {"type": "yarn", "factor": factor, "original_max_position_embeddings": orig,
          "beta_fast": beta_fast, "beta_slow": beta_slow, "mscale": 1.0, "mscale_all_dim": 1.0}
    want, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config(dim, rs, base))
    got = yarn_inv_freq(dim, base, rs)
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=0)
    assert RotaryEmbedding(dim, base, rs).cos_sin_factor == pytest.approx(attention_factor, rel=1e-12)


def test_v3_yarn_frequencies_closed_form():
    """Pairs ≤ low untouched, ≥ high divided by s, linear blend between (V3 §4.3)."""
    plain, yarn = rope_inv_freq(64).double(), yarn_inv_freq(64, 10000.0, V3).double()
    i = torch.arange(32, dtype=torch.float64)
    ramp = ((i - 10) / 13).clamp(0, 1)
    torch.testing.assert_close(yarn, plain * (1 - ramp) + plain / 40 * ramp, rtol=1e-6, atol=0)
    assert torch.equal(yarn[:11], plain[:11])


@pytest.mark.parametrize("rope_scaling", [V3, dict(V3, mscale=0.707, mscale_all_dim=0.707),
                                          dict(V3, mscale=1.0, mscale_all_dim=0.707)])
def test_rotary_tables_match_transformers(rope_scaling):
    """cos/sin (YaRN frequencies, cos/sin factor) equal DeepseekV3RotaryEmbedding's first half."""
    cfg = hf_config(rope_scaling=rope_scaling)
    pos = torch.tensor([0, 1, 2, 17, 1000, 4095, 4096, 5000])
    hf_cos, hf_sin = hf.DeepseekV3RotaryEmbedding(cfg)(torch.zeros(1), pos[None])
    cos, sin = RotaryEmbedding(64, 10000.0, rope_scaling)(pos)
    torch.testing.assert_close(cos, hf_cos[0, :, :32], rtol=0, atol=2e-5)
    torch.testing.assert_close(sin, hf_sin[0, :, :32], rtol=0, atol=2e-5)
    torch.testing.assert_close(hf_cos[0, :, :32], hf_cos[0, :, 32:])


def test_position_zero_is_the_identity():
    cos, sin = RotaryEmbedding(64, 10000.0, V3)(torch.tensor([0]))
    assert torch.equal(cos, torch.ones(1, 32)) and torch.equal(sin, torch.zeros(1, 32))
    x = torch.randn(1, 64)
    assert torch.equal(apply_rope_interleaved(x, cos, sin), x)


# ------------------------------------------------------------------ regressions found while writing chapter 3
def test_cos_sin_factor_without_mscale_keys_matches_transformers():
    rs = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096}
    _, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config(rope_scaling=rs))
    assert attention_factor == pytest.approx(yarn_mscale(40))  # the oracle's own value: 1.3688879
    assert RotaryEmbedding(64, 10000.0, rs).cos_sin_factor == pytest.approx(attention_factor)


@pytest.mark.parametrize("channels,pairs", [(8, 1), (7, 3)])
def test_apply_rope_half_channel_mismatch_raises(channels, pairs):
    with pytest.raises(ValueError, match="channels"):
        apply_rope_half(torch.randn(3, channels), *cos_sin([0, 1, 2], rope_inv_freq(2 * pairs)))
