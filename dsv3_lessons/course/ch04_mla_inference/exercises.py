"""Exercise checkers of chapter 04 (MLA at inference: weight absorption, decoding on the latent cache).

All three follow :mod:`dsv3_lessons.course.common.checking`: they never raise and print one line -- "not attempted
yet" + a hint for the placeholder ``___``, a ✗ diagnosis for a wrong answer, ✓ for a right one.

* 4.1 (code) -- merge W^UV_i into the output projection, the V2 report's phrasing of absorption
  (§2.1.2: "W^UV can be absorbed into W^O"), and see why the official code does not.
* 4.2 -- arithmetic intensity (FLOPs per byte of cache read) of absorbed decode attention for a config the
  chapter did not show, DeepSeek-V2-Lite (16 heads, the same latent widths).
* 4.3 -- the number of simultaneous queries from which re-expanding the cache is cheaper than absorbing:
  why absorption is a decode-time choice.

Expected values are computed from the config and from
:func:`dsv3_lessons.course.ch04_mla_inference.decode.attention_flops`, never typed in.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.model.config import deepseek_v3_671b
from dsv3_lessons.model.mla import MultiHeadLatentAttention, split_kv_b

from dsv3_lessons.course.common.checking import Wrong, as_number, checker
from dsv3_lessons.course.ch04_mla_inference.decode import attention_flops

__all__ = ["check_merged_output", "check_arithmetic_intensity", "check_break_even_queries",
           "merged_output_matrix", "break_even_queries", "deepseek_v2_lite_attention", "BREAK_EVEN_CONTEXT"]

#: the context length (cached tokens) of exercise 4.3.
BREAK_EVEN_CONTEXT = 4096


# ---------------------------------------------------------------------------------------------- 4.1
def merged_output_matrix(mla: MultiHeadLatentAttention) -> torch.Tensor:
    """W^O with every head's W^UV_i multiplied in: ``[d, n_h·d_c]``, head i's block = W^O_i W^UV_i.

    W^O_i are the columns ``i·d_v … (i+1)·d_v - 1`` of ``o_proj.weight [d, n_h·d_v]``; W^UV_i ``[d_v, d_c]``
    comes from :func:`~dsv3_lessons.model.mla.split_kv_b`. Then ``out = M @ concat_i(o^lat_i)`` equals
    ``o_proj(concat_i(W^UV_i o^lat_i))`` (V2 report §2.1.2).
    """
    n_h, d_v = mla.n_heads, mla.v_head_dim
    _, w_uv = split_kv_b(mla.kv_b_proj.weight.detach(), n_h, mla.qk_nope_head_dim, d_v)  # [n_h, d_v, d_c]
    w_o = mla.o_proj.weight.detach().view(-1, n_h, d_v)                                   # [d, n_h, d_v]
    return torch.einsum("dhv,hvc->dhc", w_o, w_uv).reshape(w_o.shape[0], -1)


def _as_matrix(answer) -> torch.Tensor:
    if isinstance(answer, torch.Tensor):
        return answer.detach().to(torch.float64)
    try:
        import numpy as np

        if isinstance(answer, np.ndarray):
            return torch.from_numpy(answer).to(torch.float64)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    raise Wrong(f"W_OV must be a torch tensor (or numpy array), got {type(answer).__name__}")


@checker("4.1", hint="head i's block of o_proj.weight is the columns i·d_v … (i+1)·d_v − 1 (view it as "
                     "[d, n_h, d_v]); multiply each block by W_UV[i] ([d_v, d_c]) with one einsum, then "
                     "put the heads side by side: the result is [d, n_h·d_c].")
def check_merged_output(W_OV, mla: MultiHeadLatentAttention):
    """Exercise 4.1: ``W_OV`` = W^O with W^UV folded in, ``[d, n_h·d_c]`` for the layer ``mla``."""
    m = _as_matrix(W_OV)
    right = merged_output_matrix(mla).to(torch.float64)
    d, n_h, d_v, d_c = mla.cfg.hidden_size, mla.n_heads, mla.v_head_dim, mla.kv_lora_rank
    shape = tuple(m.shape)
    if shape == (n_h, d, d_c):
        raise Wrong(f"shape {shape} is per head; put the heads side by side: "
                    f"W_OV.permute(1, 0, 2).reshape({d}, {n_h * d_c}) -> [d, n_h·d_c]")
    if shape == (n_h * d_c, d):
        raise Wrong(f"shape {shape} is transposed: like o_proj.weight, the merged matrix maps the "
                    f"n_h·d_c = {n_h * d_c} latent outputs to d = {d}, so it is [{d}, {n_h * d_c}]")
    if shape == (d, n_h * d_v) and d_v != d_c:
        raise Wrong(f"shape {shape} is W^O's own shape: multiply each head's block W^O_i [{d}, {d_v}] by "
                    f"W^UV_i [{d_v}, {d_c}] so it takes the {d_c}-wide o^lat_i directly")
    if shape != tuple(right.shape):
        raise Wrong(f"W_OV has shape {shape}; expected [d, n_h·d_c] = {tuple(right.shape)}")
    tol = 1e-4 * float(right.abs().max())
    if torch.allclose(m, right, atol=tol, rtol=1e-4):
        w = deepseek_v3_671b()
        merged = w.hidden_size * w.num_attention_heads * w.kv_lora_rank
        separate = w.hidden_size * w.num_attention_heads * w.v_head_dim + w.num_attention_heads * w.v_head_dim * w.kv_lora_rank
        return (f"W_OV is {d} × {n_h * d_c} and gives the layer's output from o^lat directly. At V3 sizes it "
                f"would hold {merged:,} numbers against {separate:,} for W^O and W^UV kept apart "
                f"({merged / separate:.1f}× more to read every step) -- which is why the official code "
                f"applies W^UV and W^O one after the other instead of merging them.")
    w_uk, w_uv = split_kv_b(mla.kv_b_proj.weight.detach(), n_h, mla.qk_nope_head_dim, d_v)
    w_o = mla.o_proj.weight.detach().view(d, n_h, d_v)
    if w_uk.shape == w_uv.shape:
        with_uk = torch.einsum("dhv,hvc->dhc", w_o, w_uk).reshape(d, -1).to(torch.float64)
        if torch.allclose(m, with_uk, atol=tol, rtol=1e-4):
            raise Wrong("that uses W^UK, the key half of kv_b_proj; the output side needs W^UV "
                        "(per head: rows d_h … d_h+d_v−1 of the head's block)")
    wrong_heads = mla.o_proj.weight.detach().view(d, d_v, n_h).permute(0, 2, 1)
    if torch.allclose(m, torch.einsum("dhv,hvc->dhc", wrong_heads, w_uv).reshape(d, -1).to(torch.float64),
                      atol=tol, rtol=1e-4):
        raise Wrong("the head blocks of o_proj are contiguous columns: view its weight as [d, n_h, d_v], "
                    "not [d, d_v, n_h]")
    blocks = m.view(d, n_h, d_c)
    good = [i for i in range(n_h) if torch.allclose(blocks[:, i], right.view(d, n_h, d_c)[:, i], atol=tol, rtol=1e-4)]
    if good:
        raise Wrong(f"heads {good} are right, the others not: check how you index the heads of W^UV and o_proj")
    raise Wrong("no head block matches W^O_i W^UV_i; check the einsum letters: "
                "'dhv,hvc->dhc' contracts over v = d_v")


# ---------------------------------------------------------------------------------------------- 4.2
def deepseek_v2_lite_attention():
    """The attention widths of DeepSeek-V2-Lite (its released ``config.json``): 16 heads, d = 2048, no query
    latent (``q_lora_rank`` null), d_c = 512, d_h = 128, d_h^R = 64, d_v = 128, 27 layers. Only the attention
    fields matter here; the rest is V3's."""
    return deepseek_v3_671b().replace(num_attention_heads=16, num_key_value_heads=16, hidden_size=2048,
                                      q_lora_rank=None, num_hidden_layers=27, quantization_config=None)


def _intensity_parts(cfg):
    h, dc, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    dh, dv = cfg.qk_nope_head_dim, cfg.v_head_dim
    flops = 2 * h * (dc + r) + 2 * h * dc        # scores on the 576-wide key + mix of the 512-wide value
    nbytes = (dc + r) * 2                        # one cached row in BF16
    per_head = (2 * h * (dh + r) + 2 * h * dv) / (h * (dh + r + dv) * 2)
    return flops, nbytes, per_head


@checker("4.2", hint="per cached token, every head computes one score on the (d_c + d_h^R)-wide key and adds "
                     "the d_c-wide c^KV_j into its weighted sum (2 FLOPs per multiply-add); the bytes are that one "
                     "cached row in BF16, read once for all heads. Divide FLOPs by bytes, with V2-Lite's head count.")
def check_arithmetic_intensity(answer):
    """Exercise 4.2: FLOPs per byte of cache read in the absorbed decode attention of DeepSeek-V2-Lite (BF16)."""
    x = as_number(answer, "the intensity (FLOPs per byte)")
    cfg = deepseek_v2_lite_attention()
    flops, nbytes, per_head = _intensity_parts(cfg)
    right = flops / nbytes
    h = cfg.num_attention_heads
    v3 = deepseek_v3_671b()
    v3_flops, v3_bytes, _ = _intensity_parts(v3)
    if math.isclose(x, right, rel_tol=0.01):
        return (f"{right:.1f} FLOPs per byte: {flops:,} FLOPs on a {nbytes:,}-byte row that all {h} heads reuse. "
                f"The intensity grows with the number of heads sharing the row ({v3_flops / v3_bytes:.1f} for V3's "
                f"{v3.num_attention_heads}), while a per-head cache stays at {per_head:.1f} FLOP per byte whatever "
                f"the head count: that is multi-query attention's advantage, and absorbed MLA's.")
    diagnoses = [
        (v3_flops / v3_bytes, f"that is DeepSeek-V3 with {v3.num_attention_heads} heads; V2-Lite has {h}"),
        (per_head, "that is the per-head cache's intensity (every head reads its own key and value); the "
                   "question is about the absorbed step reading the latent row"),
        (right / 2, "half of it: either you counted a multiply-add as 1 FLOP (count 2) or stored the cache in "
                    "float32 (4 B); the question asks BF16, 2 bytes per element"),
        (2 * h * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) / nbytes,
         "that counts only the scores; each head also adds the d_c-wide c^KV_j into its weighted sum"),
        (right / h, f"that is per head; all {h} heads read the same cached row, so its bytes are paid once "
                    f"for {h} heads' FLOPs"),
        (1 / right, "upside down: FLOPs divided by bytes"),
        (right * 2, "twice too much: a BF16 element is 2 bytes"),
    ]
    for value, message in diagnoses:
        if math.isclose(x, value, rel_tol=0.01):
            raise Wrong(f"{x:g} is not right: {message}.")
    raise Wrong(f"{x:g} is not right. Per cached token: FLOPs = n_h · 2 · ((d_c + d_h^R) + d_c); "
                f"bytes = (d_c + d_h^R) · 2, with n_h = {h}.")


# ---------------------------------------------------------------------------------------------- 4.3
def break_even_queries(context: int = BREAK_EVEN_CONTEXT, cfg=None, causal: bool = False) -> int:
    """Smallest number s of new tokens, over ``context`` cached ones, for which re-expanding costs fewer FLOPs.

    Uses :func:`~dsv3_lessons.course.ch04_mla_inference.decode.attention_flops` (every query scored against all
    context + s keys); ``causal=True`` counts only the unmasked pairs instead (query k sees context + k keys).
    The projections are the same for both paths and cancel. V3 at 4096 cached tokens: 165 (dense), 168 (causal).

    Raises:
        ValueError: ``context`` not a non-negative integer.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    cfg = cfg or deepseek_v3_671b()
    h, dc, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    dh, dv = cfg.qk_nope_head_dim, cfg.v_head_dim
    for s in range(1, 100_000):
        if causal:
            pairs = s * context + s * (s + 1) // 2
            expand = 2 * dc * h * (dh + dv)
            naive = (context + s) * expand + pairs * 2 * h * (dh + r + dv)
            absorb = s * expand + pairs * 2 * h * (2 * dc + r)
        else:
            naive = attention_flops(cfg, s, context, "naive")["total"]
            absorb = attention_flops(cfg, s, context, "absorb")["total"]
        if naive < absorb:
            return s
    raise RuntimeError("no break-even below 100,000 queries")  # pragma: no cover


@checker("4.3", hint=f"write the FLOPs of s new tokens over T = {BREAK_EVEN_CONTEXT} cached ones for both paths "
                     "(attention_flops(cfg, s, T, 'naive') and (…, 'absorb'), or your own count: the naive path "
                     "expands all T + s tokens, the absorbed one folds s queries and pays more per query-key "
                     "pair); find the first s where the naive total is smaller.")
def check_break_even_queries(answer):
    """Exercise 4.3: the smallest s at which re-expanding beats absorbing, V3 sizes, 4096 cached tokens."""
    x = as_number(answer, "s (a number of new tokens)")
    right = break_even_queries()
    causal = break_even_queries(causal=True)
    t = BREAK_EVEN_CONTEXT
    if x == right:
        return (f"s = {right}: from about {right} queries at once (a prefill chunk, a long speculative draft) "
                f"re-expanding the cache costs less arithmetic than absorbing; one decode query is far below "
                f"that, which is why serving engines absorb for decode and re-expand for prefill.")
    if x == causal:
        return (f"s = {causal}, counting only the causal (unmasked) pairs; with every query scored against all "
                f"T + s keys, as the layer computes it, it is {right}. Either way: absorb for decode, "
                f"re-expand for prefill.")
    if x != int(x) or x < 1:
        raise Wrong(f"{x:g} is not a whole number of tokens ≥ 1; round the break-even UP to the first s "
                    f"where re-expanding is cheaper")
    cfg = deepseek_v3_671b()
    if x == right - 1:
        s = int(x)
        gap = attention_flops(cfg, s, t, "naive")["total"] - attention_flops(cfg, s, t, "absorb")["total"]
        raise Wrong(f"at s = {s} re-expanding still costs {gap / 1e6:,.1f} MFLOP more; round the break-even up")
    limit = math.ceil(2 * cfg.kv_lora_rank * (cfg.qk_nope_head_dim + cfg.v_head_dim)
                      / (2 * (2 * cfg.kv_lora_rank + cfg.qk_rope_head_dim)
                         - 2 * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)))
    if x == limit:
        raise Wrong(f"{limit} is the limit for a very long context: each of the s new tokens also adds a key, "
                    f"so count s·(T + s) query-key pairs with T = {t}")
    if x == 1:
        raise Wrong("s = 1 is a decode step, where absorption wins by two orders of magnitude; the break-even "
                    "lies much higher")
    if x == t:
        raise Wrong(f"{t} is the context length; the question asks how many NEW tokens processed together")
    if x < right:
        raise Wrong(f"at s = {int(x)} absorbing is still cheaper; compare the two totals again")
    raise Wrong(f"at s = {int(x)} re-expanding is cheaper, but it already was for a smaller s; find the first one")
