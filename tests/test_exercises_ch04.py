"""Checkers of chapter 04's exercises: placeholder, typical wrong answers (with the diagnosis each gets), right answer.

Oracles: 4.1 against the FLOPs torch counts in one absorbed and one per-head decode step at V3 widths (one head);
the merged matrix (4.2) against the layer itself (o_proj after W^UV on a random o^lat); 4.3 and 4.4 against the
library layer's absorbed forward over a cache, each request decoded alone (and the reference ragged step against
the naive path); 4.5 against a brute-force search over s with the FLOPs torch counts when it runs both paths at a
small size, and against the closed-form break-even s(T + s)·ΔA > T·E at V3 size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch04_mla_inference.exercises import (MQA_DECODE_WITH_BUG, absorbed_flops_ratio,
                                                              break_even_queries, check_break_even_queries,
                                                              check_flops_ratio_prediction, check_merged_output,
                                                              check_mqa_decode, check_ragged_decode,
                                                              merged_output_matrix, mqa_decode_reference,
                                                              ragged_decode_reference, v3_decode_intensity)
from dsv3_lessons.course.ch04_mla_inference.decode import build_mla
from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import LatentCache, split_kv_b
from exercise_helpers import NOTEBOOKS, assert_stored_unattempted, assert_wrong, notebook_cell, output_texts

NOTEBOOK = NOTEBOOKS / "04_mla_inference.ipynb"


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
        # the learner report: a latent-major layout got "check which dimension your product contracts"
        (torch.einsum("dhv,hvc->dch", w_o.view(d, h, dv), w_uv).reshape(d, -1), "latent-major"),
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
def test_flops_ratio_against_counted_flops():
    """One head at V3 widths: the FLOPs torch counts for the attention over T cached rows, absorbed vs per-head."""
    cfg = deepseek_v3_671b()
    dc, r, dh, dv, t = cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim, cfg.v_head_dim, 64
    g = torch.Generator().manual_seed(0)

    def counted(q_w, v_w):
        q, k, v = torch.randn(1, q_w, generator=g), torch.randn(t, q_w, generator=g), torch.randn(t, v_w, generator=g)
        with FlopCounterMode(display=False) as counter:
            torch.softmax(q @ k.T, dim=-1) @ v
        return counter.get_total_flops()

    assert counted(dc + r, dc) / counted(dh + r, dv) == absorbed_flops_ratio(cfg) == 1088 / 320
    assert v3_decode_intensity() == 128 * 2 * (576 + 512) / 1152


def test_check_flops_ratio_prediction(capsys):
    assert check_flops_ratio_prediction(___).status == NOT_ATTEMPTED
    for answer in (3.4, 3.3, 3.5, np.float64(3.4), torch.tensor(3.4)):
        res = check_flops_ratio_prediction(answer)
        assert res.status == RIGHT and "not the per-pair arithmetic" in res.message, (answer, res.message)
    cases = [
        (1, "re-association keeps the RESULT"),
        (1 / 71.1, "BYTES per cached token"),
        (71, "ratio of the bytes cached"),
        (1 / 3.4, "upside down"),
        (3.0, "counts only the scores"),
        (4.0, "counts only the weighted sum"),
        (121, "what absorption saves"),
        (410.6, "over a per-head cache"),
        (0.5, "fewer FLOPs"),
        (2.0, "too low"),
        (10, "too high"),
        (0, "not a ratio"),
        ("3.4", "must be a number"),
    ]
    for answer, words in cases:
        assert_wrong(check_flops_ratio_prediction(answer), words)
    capsys.readouterr()


def test_prediction_is_hidden_in_the_stored_chapter():
    """The learner report: 4.1's answer was printed above its prediction cell. Now nothing before the checker
    prints 3.4 (or the counts it comes from), and the counting cell is stored hidden."""
    texts = output_texts(NOTEBOOK)
    check = next(i for i, t in enumerate(texts) if "Exercise 4.1: not attempted yet" in t)
    before = "".join(texts[:check])
    for spoiler in ("3.4x", "278,528", "81,920 FLOPs"):
        assert spoiler not in before, spoiler
    assert "Hidden until you predict" in texts[check - 1]
    cells = [c for c in __import__("json").loads(NOTEBOOK.read_text())["cells"]]
    prose = "".join("".join(c["source"]) for c in cells[:next(i for i, c in enumerate(cells)
                                                               if "my_prediction = ___" in "".join(c["source"]))])
    assert "3.4" not in prose


# ---------------------------------------------------------------------------------------------- 4.3 ragged decode
@pytest.mark.parametrize("heads", [2, 8])
def test_ragged_reference_equals_the_naive_path(heads):
    """The reference ragged step against the library's OTHER path (re-expanded, no cache), request by request."""
    mla = build_mla(tiny(num_attention_heads=heads, num_key_value_heads=heads), seed=3)
    g = torch.Generator().manual_seed(heads)
    lengths, length, d = (3, 0, 5), 6, mla.cfg.hidden_size
    xs = [torch.randn(1, n + 1, d, generator=g) for n in lengths]
    c_buf = torch.randn(len(lengths), length, mla.kv_lora_rank, generator=g)
    k_buf = torch.randn(len(lengths), length, mla.qk_rope_head_dim, generator=g)
    with torch.no_grad():
        for b, (n, x) in enumerate(zip(lengths, xs)):
            if n:
                c, k = mla.latent(x[:, :n], torch.arange(n))
                c_buf[b, :n], k_buf[b, :n] = c[0], k[0]
        got = ragged_decode_reference(mla, torch.cat([x[:, -1:] for x in xs]), torch.tensor(lengths), c_buf, k_buf)
        for b, x in enumerate(xs):
            assert torch.allclose(got[b], mla(x, attn_impl="naive")[0, -1:], atol=1e-5)


def test_check_ragged_decode(capsys):
    assert check_ragged_decode(___).status == NOT_ATTEMPTED

    def half_filled(mla, h, lengths, c_buf, k_buf):
        B, L = c_buf.shape[:2]
        ___
        return ___

    assert check_ragged_decode(half_filled).status == NOT_ATTEMPTED
    assert check_ragged_decode(ragged_decode_reference).status == RIGHT

    four = build_mla(tiny(), seed=0)        # the notebook's 4-head layer: its W^UK as a global
    w_uk4, _ = split_kv_b(four.kv_b_proj.weight, 4, four.qk_nope_head_dim, four.v_head_dim)

    def global_weights(mla, h, lengths, c_buf, k_buf):
        q_c, _ = mla.query(h.transpose(0, 1), lengths)
        return torch.einsum("bhd,hdc->bhc", q_c[0], w_uk4)

    def no_write(mla, h, lengths, c_buf, k_buf):
        return ragged_decode_reference(mla, h, lengths, c_buf.clone(), k_buf.clone())

    def one_loop_mask(mla, h, lengths, c_buf, k_buf):     # right for equal lengths only: the first one's mask
        out = ragged_decode_reference(mla, h, lengths, c_buf, k_buf)
        out[1:] += 0.5
        return out

    cases = [
        (lambda *a: ragged_decode_reference(*a, mask="none"), ("stale rows", "−inf")),
        (lambda *a: ragged_decode_reference(*a, mask="strict"), ("NaN", "own new row")),
        (lambda m, h, n, c, k: ragged_decode_reference(m, h, n, c, k, position=int(n.max())), ("the longest",)),
        (lambda m, h, n, c, k: ragged_decode_reference(m, h, n, c, k, position=int(n[0])), ("the first one's",)),
        (lambda m, h, n, c, k: ragged_decode_reference(m, h, n, c, k, scale=(m.kv_lora_rank + m.qk_rope_head_dim) ** -0.5),
         ("(d_c + d_h^R)^-1/2",)),
        (global_weights, ("not the notebook's 4-head W_UK",)),
        (no_write, ("not in the buffers at index lengths[0]",)),
        (one_loop_mask, ("requests 1 (length 0), 2 (length 5) differ", "requests 0 (length 3) are right")),
        (lambda *a: ragged_decode_reference(*a)[:, :, :2], ("must return [3, 1, 64]",)),
        (lambda *a: ragged_decode_reference(*a).tolist(), ("must return a torch.Tensor",)),
        (3, ("pass your function itself",)),
    ]
    for answer, words in cases:
        assert_wrong(check_ragged_decode(answer), *words)

    def strict_no_empty(mla, h, lengths, c_buf, k_buf):   # a strict mask, seen on a trial without an empty request
        if int(lengths.min()) == 0:
            return ragged_decode_reference(mla, h, lengths, c_buf, k_buf)
        return ragged_decode_reference(mla, h, lengths, c_buf, k_buf, mask="strict")

    assert_wrong(check_ragged_decode(strict_no_empty), "does not see its own new row")

    def overwrites(mla, h, lengths, c_buf, k_buf):
        out = ragged_decode_reference(mla, h, lengths, c_buf, k_buf)
        c_buf[:, 0] = 0.0
        return out

    assert_wrong(check_ragged_decode(overwrites), "were overwritten")
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- 4.4 bug hunt
def _define(source: str, tmp_path, name="cell"):
    """Define the function from source text the way a notebook cell does (inspect can read its source)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    ns = {"torch": torch, "F": torch.nn.functional}
    exec(compile(source, str(path), "exec"), ns)
    return ns["mqa_decode"]


_BUG = "scale=mla.qk_head_dim ** -0.5)   # the 192-wide dot product's scale"


def test_bug_hunt_text_is_the_notebooks():
    cell = notebook_cell(NOTEBOOK, "def mqa_decode(")
    assert cell.strip() == MQA_DECODE_WITH_BUG.strip() and len(cell.splitlines()) <= 15
    texts = output_texts(NOTEBOOK)
    out = next(t for t in texts if "Exercise 4.4" in t)
    assert "the author's test passes" in out and "✗ Exercise 4.4: this is the function as given" in out
    for giveaway in ("mscale", "scale", "YaRN", "rope"):       # the symptom only, never the cause
        assert giveaway not in out.split("✗")[1], giveaway


def test_the_authors_test_passes_and_the_bug_shows_from_two_keys(tmp_path):
    given = _define(MQA_DECODE_WITH_BUG, tmp_path, "given")
    mla = build_mla(tiny(), seed=0)
    x = torch.randn(1, 3, mla.cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(given(mla, x[:, :1], mla.new_cache(1, 4), 0), mla(x[:, :1]), atol=1e-5)
        cache = mla.new_cache(1, 4)
        outs = [given(mla, x[:, t:t + 1], cache, t) for t in range(3)]
        want = mla(x)
    assert not torch.allclose(outs[1], want[:, 1:2], atol=1e-4)
    assert mla.softmax_scale != mla.qk_head_dim ** -0.5            # the tiny config has YaRN: mscale² > 1


def test_check_mqa_decode(tmp_path, capsys):
    assert _BUG in MQA_DECODE_WITH_BUG
    res = check_mqa_decode(_define(MQA_DECODE_WITH_BUG, tmp_path, "given"))
    assert_wrong(res, "this is the function as given", "author's test", "differs from the library's by up to")
    assert "scale" not in res.message and "mscale" not in res.message
    edited = MQA_DECODE_WITH_BUG.replace("# the 192-wide dot product's scale", "# edited, same bug")
    assert_wrong(check_mqa_decode(_define(edited, tmp_path, "edited")), "still computes what the given one computes")
    fixed = MQA_DECODE_WITH_BUG.replace(_BUG, "scale=mla.softmax_scale)")
    assert check_mqa_decode(_define(fixed, tmp_path, "fixed")).status == RIGHT
    by_hand = MQA_DECODE_WITH_BUG.replace(_BUG, "scale=softmax_scale(mla.qk_head_dim, mla.cfg.rope_scaling))")
    assert check_mqa_decode(_define("from dsv3_lessons.model.rope import softmax_scale\n" + by_hand, tmp_path,
                                    "by_hand")).status == RIGHT
    default = MQA_DECODE_WITH_BUG.replace(",\n        " + _BUG, ")")
    assert default != MQA_DECODE_WITH_BUG
    assert_wrong(check_mqa_decode(_define(default, tmp_path, "default")), "1/√(d_c + d_h^R)", "default")
    twice = fixed.replace('rows = torch.cat(cache.append(*mla.latent(x, pos)), dim=-1)',
                          'c, k = cache.append(*mla.latent(x, pos))\n'
                          '    rows = torch.cat([c, apply_rope_interleaved(k, *mla.rotary(torch.arange(t + 1)))], -1)')
    assert twice != fixed
    assert_wrong(check_mqa_decode(_define("from dsv3_lessons.model.rope import apply_rope_interleaved\n" + twice,
                                          tmp_path, "twice")), "rotated a second time")
    swapped = fixed.replace("w_kv[:, :d_h]), q_rope", "w_kv[:, d_h:]), q_rope").replace(
        'o, w_kv[:, d_h:])', 'o, w_kv[:, :d_h])')
    assert swapped != fixed
    assert_wrong(check_mqa_decode(_define(swapped, tmp_path, "swapped")), "not in the way the given function did")
    assert check_mqa_decode(___).status == NOT_ATTEMPTED
    assert_wrong(check_mqa_decode("mqa_decode"), "pass your function itself")
    capsys.readouterr()


def test_reference_mqa_decode_is_the_library(tmp_path):
    mla = build_mla(tiny(num_attention_heads=2, num_key_value_heads=2), seed=5)
    x = torch.randn(1, 6, mla.cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    cache = mla.new_cache(1, 6)
    with torch.no_grad():
        got = torch.cat([mqa_decode_reference(mla, x[:, t:t + 1], cache, t) for t in range(6)], dim=1)
        assert torch.allclose(got, mla(x, attn_impl="naive"), atol=1e-5)


# ---------------------------------------------------------------------------------------------- stored chapter
def test_exercises_stored_unattempted():
    assert_stored_unattempted(NOTEBOOK, 4, ("4.1", "4.2", "4.3", "4.5"), bug_hunts=("4.4",))


def test_hints_never_state_the_formula():
    for check in (check_flops_ratio_prediction, check_merged_output, check_ragged_decode, check_mqa_decode,
                  check_break_even_queries):
        assert len(check.more) >= 2
        for text in (check.hint, *check.more):
            for formula in ("1088", "3.4", "softmax_scale", "mscale", "j > lengths", "dch"):
                assert formula not in text, (check.exercise, formula, text)
