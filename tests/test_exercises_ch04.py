"""Checkers of chapter 04's exercises: placeholder, typical wrong answers (with the hint each gets), right answer.

Oracles: the merged matrix is checked against the layer itself (o_proj after W^UV on a random o^lat);
4.2 against hand arithmetic on the released config (V3 report §2.1.1 widths); 4.3 against a brute-force
search over s with the FLOPs torch counts when it runs both paths at a small size, and against the
closed-form break-even s(T + s)·ΔA > T·E at V3 size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch04_mla_inference.exercises import (break_even_queries, check_arithmetic_intensity,
                                                              check_break_even_queries, check_merged_output,
                                                              merged_output_matrix)
from dsv3_lessons.course.ch04_mla_inference.decode import build_mla
from dsv3_lessons.model.config import tiny
from dsv3_lessons.model.mla import split_kv_b


@pytest.fixture(scope="module")
def mla():
    return build_mla(tiny(), seed=0)


def _parts(mla):
    cfg = mla.cfg
    d, h, dv = cfg.hidden_size, cfg.num_attention_heads, cfg.v_head_dim
    w_uk, w_uv = split_kv_b(mla.kv_b_proj.weight, h, cfg.qk_nope_head_dim, dv)
    return d, h, dv, w_uk, w_uv, mla.o_proj.weight.detach()


def test_merged_matrix_reproduces_the_layer_output(mla):
    d, h, dv, _, w_uv, _ = _parts(mla)
    o_lat = torch.randn(3, h, mla.kv_lora_rank, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = mla.o_proj(torch.einsum("bhc,hvc->bhv", o_lat, w_uv).reshape(3, h * dv))
    assert torch.allclose(o_lat.reshape(3, -1) @ merged_output_matrix(mla).T, ref, atol=1e-5)


def test_check_merged_output(mla, capsys):
    d, h, dv, w_uk, w_uv, w_o = _parts(mla)
    assert check_merged_output(___, mla).status == NOT_ATTEMPTED
    assert "not attempted yet" in capsys.readouterr().out
    right = torch.einsum("dhv,hvc->dhc", w_o.view(d, h, dv), w_uv).reshape(d, -1)
    for answer in (right, right.numpy(), right.double()):
        assert check_merged_output(answer, mla).status == RIGHT
    out = capsys.readouterr().out
    assert out.count("✓ Exercise 4.1") == 3 and "469,762,048" in out   # 7168 · 128 · 512 at V3 size
    cases = [
        (right.T, "transposed"),
        (w_o, "W^O's own shape"),
        (torch.einsum("dhv,hvc->dhc", w_o.view(d, h, dv), w_uk).reshape(d, -1), "uses W^UK"),
        (torch.einsum("dhv,hvc->dhc", w_o.view(d, dv, h).permute(0, 2, 1), w_uv).reshape(d, -1), "[d, n_h, d_v]"),
        (torch.einsum("dhv,hvc->hdc", w_o.view(d, h, dv), w_uv), "is per head"),
        (torch.zeros_like(right), "no head block matches"),
        (3, "must be a torch tensor"),
    ]
    for answer, hint in cases:
        res = check_merged_output(answer, mla)
        assert res.status == WRONG and hint in res.message, (hint, res.message)
    assert check_merged_output(lambda: 1 / 0, mla).status == WRONG  # never raises


def test_check_arithmetic_intensity(capsys):
    # DeepSeek-V2-Lite (released config.json): 16 heads, d_c = 512, d_h^R = 64, d_h = d_v = 128
    flops = 16 * 2 * ((512 + 64) + 512)    # every head: score on 576 + mix of 512, 2 FLOPs per multiply-add
    right = flops / ((512 + 64) * 2)       # one BF16 row, read once for all heads
    assert math.isclose(right, 30.222, rel_tol=1e-4)
    assert check_arithmetic_intensity(___).status == NOT_ATTEMPTED
    for answer in (right, round(right, 1), np.float64(right), torch.tensor(right)):
        res = check_arithmetic_intensity(answer)
        assert res.status == RIGHT and "241.8 for V3's 128" in res.message
    v3 = 128 * 2 * 1088 / 1152
    cases = [(v3, "DeepSeek-V3 with 128 heads"), (1.0, "per-head cache"), (right / 2, "float32"),
             (16.0, "only the scores"), (right / 16, "per head"), (1 / right, "upside down"),
             (500, "with n_h = 16"), (True, "must be a number"), ("30.2", "must be a number")]
    for answer, hint in cases:
        res = check_arithmetic_intensity(answer)
        assert res.status == WRONG and hint in res.message, (answer, res.message)
    capsys.readouterr()


def test_break_even_against_counted_flops():
    """Brute force with FlopCounterMode on both paths of a small layer = the closed-form search."""
    cfg = tiny()
    mla = build_mla(cfg, seed=1)
    context = 6

    def counted(s, impl):
        x = torch.randn(1, context + s, cfg.hidden_size, generator=torch.Generator().manual_seed(s))
        cache = mla.new_cache(1, context + s)
        with torch.inference_mode():
            mla(x[:, :context], start_pos=0, cache=cache, attn_impl=impl)
            with FlopCounterMode(display=False) as counter:
                mla(x[:, context:], start_pos=context, cache=cache, attn_impl=impl)
        return counter.get_total_flops()

    first = next(s for s in range(1, 40) if counted(s, "naive") < counted(s, "absorb"))
    assert first == break_even_queries(context, cfg)


def test_break_even_closed_form_v3():
    e, d_a = 2 * 512 * 128 * 256, 2 * 128 * ((512 + 64 + 512) - (128 + 64 + 128))
    t = 4096
    s_star = (-t + math.sqrt(t * t + 4 * t * e / d_a)) / 2   # root of s(T + s)·ΔA = T·E
    assert break_even_queries(t) == math.floor(s_star) + 1 == 165
    assert break_even_queries(t, causal=True) == 168
    assert break_even_queries(0) == 1   # a prefill from an empty cache: re-expanding is always cheaper
    with pytest.raises(ValueError, match="context"):
        break_even_queries(-1)


def test_check_break_even_queries(capsys):
    assert check_break_even_queries(___).status == NOT_ATTEMPTED
    for answer in (165, 165.0, np.int64(165), torch.tensor(165)):
        assert check_break_even_queries(answer).status == RIGHT
    res = check_break_even_queries(168)
    assert res.status == RIGHT and "causal" in res.message
    cases = [(164, "round the break-even up"), (171, "limit for a very long context"), (1, "decode step"),
             (4096, "context length"), (100, "still cheaper"), (300, "already was"), (164.1, "whole number")]
    for answer, hint in cases:
        res = check_break_even_queries(answer)
        assert res.status == WRONG and hint in res.message, (answer, res.message)
    capsys.readouterr()
