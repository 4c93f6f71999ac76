"""Checkers of chapter 04's exercises: placeholder, typical wrong answers (with the diagnosis each gets), right answer.

Oracles: 4.1 against hand arithmetic on the released config (V3 report §2.1.1 widths); the merged matrix (4.2)
against the layer itself (o_proj after W^UV on a random o^lat); 4.3 and 4.4 against the library layer's absorbed
forward over a cache (and the reference chunk step against the naive path); 4.5 against a brute-force search over s
with the FLOPs torch counts when it runs both paths at a small size, and against the closed-form break-even
s(T + s)·ΔA > T·E at V3 size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch04_mla_inference.exercises import (DECODE_STEP_WITH_BUG, absorbed_chunk_reference,
                                                              break_even_queries, check_break_even_queries,
                                                              check_chunk_step, check_decode_step,
                                                              check_intensity_prediction, check_merged_output,
                                                              merged_output_matrix, v3_decode_intensity)
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
    assert out.count("✓ Exercise 4.2") == 3 and "469,762,048" in out   # 7168 · 128 · 512 at V3 size
    cases = [
        (right.T, "transposed"),
        (w_o, "W^O's own shape"),
        (torch.einsum("dhv,hvc->dhc", w_o.view(d, h, dv), w_uk).reshape(d, -1), "uses W^UK"),
        (torch.einsum("dhv,hvc->dhc", w_o.view(d, dv, h).permute(0, 2, 1), w_uv).reshape(d, -1), "[d, n_h, d_v]"),
        (torch.einsum("dhv,hvc->hdc", w_o.view(d, h, dv), w_uv), "is per head"),
        (torch.zeros_like(right), "no head block matches"),
        (3, "must be a torch tensor"),
        (right.to(torch.bfloat16), "bfloat16"),               # review: a bf16 result was told to check its einsum
        (right.to(torch.float16), "float16"),
    ]
    for answer, hint in cases:
        res = check_merged_output(answer, mla)
        assert res.status == WRONG and hint in res.message, (hint, res.message)
    assert check_merged_output(lambda: 1 / 0, mla).status == WRONG  # never raises


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
    assert "formula" not in check_break_even_queries.hint and "attention_flops" not in check_break_even_queries.hint
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


# ---------------------------------------------------------------------------------------------- 4.1 prediction
def test_intensity_by_hand():
    # V3: 128 heads · 2 FLOPs · (576-wide key + 512-wide value) per cached token, over one 576-element BF16 row
    assert v3_decode_intensity() == 128 * 2 * (576 + 512) / 1152 == 278_528 / 1_152
    assert math.isclose(v3_decode_intensity(), 241.78, rel_tol=1e-4)


def test_check_intensity_prediction(capsys):
    assert check_intensity_prediction(___).status == NOT_ATTEMPTED
    for answer in (241.8, 242, 220, 280, np.float64(250), torch.tensor(230.0)):
        res = check_intensity_prediction(answer)
        assert res.status == RIGHT and "compute-bound" in res.message, (answer, res.message)
    cases = [
        (1, "per-head cache"),
        # the review: 2·(576 + 512) B of "value bytes counted separately" gives 128, like scores-only: name both
        (278_528 / (2 * (576 + 512)), "counting the value's bytes a second time"),
        (128, "counting only the scores"),
        (30.2, "16 heads"),
        (483.6, "two queries per step"),
        (1.9, "one head"),
        (120.9, "half of it"),
        (483.0, "two queries"),
        (50, "too low"),
        (5000, "too high"),
        ("242", "must be a number"),
    ]
    for answer, words in cases:
        res = check_intensity_prediction(answer)
        assert res.status == WRONG and words in res.message, (answer, res.message)
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- 4.3 chunk step
def _layer(heads):
    return build_mla(tiny(num_attention_heads=heads, num_key_value_heads=heads), seed=3)


@pytest.mark.parametrize("heads", [2, 8])
def test_chunk_reference_equals_the_naive_path(heads):
    """The reference chunk step against the library's OTHER path (re-expanded), 3 new tokens after 5 cached."""
    mla = _layer(heads)
    x = torch.randn(1, 8, mla.cfg.hidden_size, generator=torch.Generator().manual_seed(heads))
    with torch.no_grad():
        cache = mla.new_cache(1, 8)
        mla(x[:, :5], start_pos=0, cache=cache, attn_impl="naive")
        got = absorbed_chunk_reference(mla, x[:, 5:], 5, cache)
        want = mla(x, attn_impl="naive")[:, 5:]        # one causal forward over all 8 tokens
    assert torch.allclose(got, want, atol=1e-5)


def _ref(mla, h, t, cache):
    return absorbed_chunk_reference(mla, h, t, cache)


def test_check_chunk_step(capsys):
    from dsv3_lessons.model.mla import split_kv_b

    assert check_chunk_step(___).status == NOT_ATTEMPTED

    def half_filled(mla, h, t, cache):
        s = h.shape[1]
        x = ___ * 2
        return x

    assert check_chunk_step(half_filled).status == NOT_ATTEMPTED
    assert check_chunk_step(_ref).status == RIGHT

    four = build_mla(tiny(), seed=0)        # the notebook's 4-head layer: its W^UK / W^UV as globals
    w_uk4, w_uv4 = split_kv_b(four.kv_b_proj.weight, 4, four.qk_nope_head_dim, four.v_head_dim)

    def global_weights(mla, h, t, cache):
        s = h.shape[1]
        pos = torch.arange(t, t + s)
        q_c, q_r = mla.query(h, pos)
        c_kv, k_r = cache.append(*mla.latent(h, pos))
        q_t = torch.einsum("bshd,hdc->bshc", q_c, w_uk4)
        return q_t

    cases = [
        (lambda m, h, t, c: absorbed_chunk_reference(m, h, t, c, causal=False), "every new token sees every new row"),
        (lambda m, h, t, c: absorbed_chunk_reference(m, h, t, c, scale=(m.kv_lora_rank + m.qk_rope_head_dim) ** -0.5),
         "(d_c + d_h^R)^-1/2"),
        (global_weights, "not the notebook's 4-head W_UK"),
        (lambda m, h, t, c: absorbed_chunk_reference(m, h, t, c)[:, :1], "must return [1, 2,"),
        (lambda m, h, t, c: absorbed_chunk_reference(m, h, t, c).tolist(), "must return a torch.Tensor"),
        (lambda m, h, t, c: absorbed_chunk_reference(m, h, t, c) * 1.01, "differs from the library"),
        (3, "pass your function itself"),
    ]
    for answer, words in cases:
        res = check_chunk_step(answer)
        assert res.status == WRONG and words in res.message, (words, res.message)

    def first_only(mla, h, t, cache):         # right for the first new token, garbage after it
        out = absorbed_chunk_reference(mla, h, t, cache).clone()
        out[:, 1:] += 1.0
        return out

    res = check_chunk_step(first_only)
    assert res.status == WRONG and "first new token is right" in res.message, res.message
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- 4.4 bug hunt
def _define(source: str, tmp_path, name="cell"):
    """Define the function from source text the way a notebook cell does (inspect can read its source)."""
    from dsv3_lessons.model.rope import apply_rope_interleaved

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    ns = {"torch": torch, "apply_rope_interleaved": apply_rope_interleaved}
    exec(compile(source, str(path), "exec"), ns)
    return ns["decode_step"]


_ROTATE_AGAIN = ("    cos, sin = mla.rotary(torch.arange(t + 1))\n"
                 "    k_R = apply_rope_interleaved(k_R, cos, sin)                  # each key rotated for its position\n")


def test_bug_hunt_text_is_the_notebooks():
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "04_mla_inference.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert sum(DECODE_STEP_WITH_BUG.strip() in c for c in cells) == 1
    stored = next(c for c in nb["cells"] if c["cell_type"] == "code" and DECODE_STEP_WITH_BUG.strip() in "".join(c["source"]))
    out = "".join("".join(o.get("text", "")) for o in stored["outputs"])
    assert "✗ Exercise 4.4: this is the function as given" in out and "rotated" not in out   # no give-away


def test_check_decode_step(tmp_path, capsys):
    assert _ROTATE_AGAIN in DECODE_STEP_WITH_BUG
    res = check_decode_step(_define(DECODE_STEP_WITH_BUG, tmp_path, "given"))
    assert res.status == WRONG and "this is the function as given" in res.message and "rotated" not in res.message
    edited = DECODE_STEP_WITH_BUG.replace("# each key rotated for its position", "# edited, same bug")
    res = check_decode_step(_define(edited, tmp_path, "edited"))
    assert res.status == WRONG and "rotated a second time" in res.message, res.message
    fixed = DECODE_STEP_WITH_BUG.replace(_ROTATE_AGAIN, "")
    assert check_decode_step(_define(fixed, tmp_path, "fixed")).status == RIGHT
    scale = fixed.replace("* mla.softmax_scale", "* (mla.kv_lora_rank + mla.qk_rope_head_dim) ** -0.5")
    res = check_decode_step(_define(scale, tmp_path, "scale"))
    assert res.status == WRONG and "softmax scale" in res.message, res.message
    no_rope = fixed.replace("+ torch.einsum(\"bhr,bjr->bhj\", q_R[:, 0], k_R)", "")
    assert no_rope != fixed
    res = check_decode_step(_define(no_rope, tmp_path, "no_rope"))
    assert res.status == WRONG and "differs from the library" in res.message, res.message
    keys_first = fixed.replace("W_UK, W_UV = W[:, :mla.qk_nope_head_dim], W[:, mla.qk_nope_head_dim:]",
                               "W_UK, W_UV = W[:, mla.qk_nope_head_dim:], W[:, :mla.qk_nope_head_dim]")
    res = check_decode_step(_define(keys_first, tmp_path, "swap"))
    assert res.status == WRONG and "differs from the library" in res.message, res.message
    assert check_decode_step(___).status == NOT_ATTEMPTED
    assert check_decode_step("decode_step").status == WRONG
    capsys.readouterr()
