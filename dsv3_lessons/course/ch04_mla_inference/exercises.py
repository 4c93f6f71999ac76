"""Exercise checkers of chapter 04 (MLA at inference: weight absorption, decoding on the latent cache).

All follow :mod:`dsv3_lessons.course.common.checking`: they never raise and print one line -- "not attempted yet"
+ a nudge for the placeholder ``___``, a ✗ diagnosis for a wrong answer (pointing to ``hint("4.N")``), ✓ for a right
one. The nudges say what to think about; the formulas are in the worked solutions only.

* 4.1 (predict, then run) -- the arithmetic intensity (FLOPs per cached byte) of V3's absorbed decode attention,
  predicted before the chapter prints it; the checker explains the gap.
* 4.2 (code) -- merge W^UV_i into the output projection, the V2 report's phrasing of absorption
  (§2.1.2: "W^UV can be absorbed into W^O"), and see why the official code does not.
* 4.3 (variation, code) -- the absorbed step for s new tokens at once (an MTP draft verified together with the
  next token, a prefill chunk) on a layer with any head count: the causal mask among the new tokens.
* 4.4 (bug hunt, code) -- an absorbed decode step that rotates the cached rope key a second time (SPEC §9,
  "cached rope key rotated twice"): find the line, fix it; the checker runs the fix against the library.
* 4.5 (explain with a number) -- the number of simultaneous queries from which re-expanding the cache is cheaper
  than absorbing: why absorption is a decode-time choice.

Expected values are computed from the config, from the library layer and from
:func:`dsv3_lessons.course.ch04_mla_inference.decode.attention_flops`, never typed in.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import MultiHeadLatentAttention, split_kv_b
from dsv3_lessons.model.rope import apply_rope_interleaved

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, hint
from dsv3_lessons.course.ch04_mla_inference.decode import attention_flops, build_mla

__all__ = ["check_merged_output", "check_intensity_prediction", "check_chunk_step", "check_decode_step",
           "check_break_even_queries", "merged_output_matrix", "break_even_queries", "absorbed_chunk_reference",
           "v3_decode_intensity", "DECODE_STEP_WITH_BUG", "BREAK_EVEN_CONTEXT", "hint"]

#: the context length (cached tokens) of exercise 4.5.
BREAK_EVEN_CONTEXT = 4096


# ---------------------------------------------------------------------------------------------- 4.2
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


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _as_matrix(answer) -> torch.Tensor:
    if isinstance(answer, torch.Tensor):
        if answer.dtype in _LOW_PRECISION:
            return answer.detach()       # kept as is: the checker names the dtype instead of the einsum
        return answer.detach().to(torch.float64)
    try:
        import numpy as np

        if isinstance(answer, np.ndarray):
            return torch.from_numpy(answer).to(torch.float64)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    raise Wrong(f"W_OV must be a torch tensor (or numpy array), got {type(answer).__name__}")


@checker("4.2", hint="which columns of o_proj.weight belong to head i, and which matrix turns head i's "
                     "d_c-wide o^lat into the d_v numbers those columns expect?",
         more=["o_proj.weight is [d, n_h·d_v] with each head's d_v columns side by side: a view as "
               "[d, n_h, d_v] gives W^O_i for every head at once",
               "head i's merged block is [d, d_c]; one einsum over the heads can form all of them, contracting "
               "the d_v dimension",
               "the result has the heads side by side like o_proj.weight: [d, n_h·d_c]"])
def check_merged_output(W_OV, mla: MultiHeadLatentAttention):
    """Exercise 4.2: ``W_OV`` = W^O with W^UV folded in, ``[d, n_h·d_c]`` for the layer ``mla``."""
    m = _as_matrix(W_OV)
    right = merged_output_matrix(mla).to(torch.float64)
    d, n_h, d_v, d_c = mla.cfg.hidden_size, mla.n_heads, mla.v_head_dim, mla.kv_lora_rank
    shape = tuple(m.shape)
    if m.dtype in _LOW_PRECISION:
        near = shape == tuple(right.shape) and torch.allclose(m.to(torch.float64), right, rtol=2e-2,
                                                               atol=2e-2 * float(right.abs().max()))
        raise Wrong(f"your W_OV is {m.dtype}: "
                    + ("its values match to that precision, but " if near else "")
                    + "build it in float32, the layer's dtype (a bf16 matrix rounds every entry to 3 significant "
                      "digits; compare with the float32 layer and nothing matches exactly)")
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
    raise Wrong("no head block matches W^O_i W^UV_i: check which dimension your product contracts (it must "
                "be the d_v outputs of W^UV_i, which are the d_v inputs of W^O_i)")


# ---------------------------------------------------------------------------------------------- 4.1
def v3_decode_intensity(cfg=None, queries: int = 1) -> float:
    """FLOPs per cached byte of absorbed decode attention (BF16): per cached token every head scores the
    (d_c + d_h^R)-wide key and mixes the d_c-wide value, 2 FLOPs per multiply-add, for each of ``queries`` new
    tokens; the bytes are that one cached row, read once for all heads and queries. V3: 278,528 / 1,152."""
    cfg = cfg or deepseek_v3_671b()
    h, dc, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    return queries * 2 * h * (dc + r + dc) / ((dc + r) * 2)


@checker("4.1", hint="write your guess before the next cells print it: how many heads read each cached row, and "
                     "what does each head do with it?",
         more=["a per-head cache gives every head its own key and value: about one FLOP per byte read",
               "after absorption all n_h heads read the SAME cached row [c^KV_j | k^R_j]: its bytes are paid once, "
               "the arithmetic n_h times",
               "per head and cached token: a dot product with the 576-wide key, and adding the 512-wide value "
               "(which is part of the same row) into the weighted sum"])
def check_intensity_prediction(prediction):
    """Exercise 4.1 (predict, then run): the learner's prediction of the FLOPs per cached byte of V3's absorbed
    decode attention (128 heads, one query, BF16). Within 20 % is ✓; otherwise the gap is explained."""
    x = as_number(prediction, "your prediction (FLOPs per byte)")
    cfg = deepseek_v3_671b()
    right = v3_decode_intensity(cfg)
    h, dc, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    row = (dc + r) * 2
    if math.isclose(x, right, rel_tol=0.2):
        return (f"you predicted {x:g}; it is {right:.1f} FLOP per cached byte: {h} heads × 2·({dc + r} + {dc}) "
                f"FLOPs on one {row:,}-byte row. That is at or past an H800's ridge (~220 FLOP/B), so absorption "
                f"moves V3's decode attention from memory-bound towards compute-bound.")
    gaps = [
        (1.0, "that is a per-head cache (or MHA): every head reads its own key and value, about one FLOP per "
              "byte. After absorption all heads share one cached row, so its bytes are paid once"),
        (2 * h * (dc + r) / row,
         "128 comes out two ways: counting only the scores (the weighted sum of the 512-wide values runs too), or "
         "counting the value's bytes a second time (the value c^KV_j is the first 512 elements of the same "
         "cached row, read once)"),
        (v3_decode_intensity(cfg.replace(num_attention_heads=16, num_key_value_heads=16)), "that is 16 heads (DeepSeek-V2-Lite); V3 has 128"),
        (v3_decode_intensity(cfg, queries=2), "that is two queries per step (an MTP draft verified together "
                                              "with the next token); plain decode has one"),
        (right / h, "that is one head; all 128 heads reuse the row they read"),
        (right / 2, "half of it: a multiply-add is 2 FLOPs, and a BF16 element is 2 bytes"),
        (right * 2, "twice too much: a BF16 element is 2 bytes"),
    ]
    for value, message in gaps:
        if math.isclose(x, value, rel_tol=0.02):
            raise Wrong(f"you predicted {x:g}; it is {right:.1f}: {message}.")
    side = "low" if x < right else "high"
    raise Wrong(f"you predicted {x:g}; it is {right:.1f} ({right / x:.2g}× yours: too {side}). Count per cached "
                f"token: the FLOPs all {h} heads do with it, over the bytes of the one row they share.")


# ---------------------------------------------------------------------------------------------- 4.3 / 4.4
def absorbed_chunk_reference(mla: MultiHeadLatentAttention, h: torch.Tensor, t: int, cache, causal: bool = True,
                             scale: float | None = None, rotate_cached_again: bool = False) -> torch.Tensor:
    """Absorbed MLA attention for the ``s`` new tokens ``h [1, s, d]`` at positions t … t+s−1 over a cache that
    holds t rows: appends their rows, returns ``[1, s, d]``. New token k sees cache rows 0 … t+k (causal).

    The checkers' oracle is the library layer (``mla(h, start_pos=t, cache=…, attn_impl="absorb")``); the flags
    reproduce typical mistakes for their diagnoses: ``causal=False`` (no mask among the new tokens),
    ``scale`` (another softmax scale, e.g. 576^-1/2), ``rotate_cached_again`` (RoPE applied to the cached k^R a
    second time, SPEC §9).
    """
    s = h.shape[1]
    pos = torch.arange(t, t + s)
    q_c, q_r = mla.query(h, pos)                                   # [1, s, n_h, d_h], [1, s, n_h, d_h^R]
    c_kv, k_r = cache.append(*mla.latent(h, pos))                  # [1, t+s, d_c], [1, t+s, d_h^R]
    if rotate_cached_again:
        k_r = apply_rope_interleaved(k_r, *mla.rotary(torch.arange(t + s)))
    w_uk, w_uv = split_kv_b(mla.kv_b_proj.weight, mla.n_heads, mla.qk_nope_head_dim, mla.v_head_dim)
    q_lat = torch.einsum("bshd,hdc->bshc", q_c, w_uk)
    scores = (torch.einsum("bshc,bjc->bshj", q_lat, c_kv)
              + torch.einsum("bshr,bjr->bshj", q_r, k_r)) * (mla.softmax_scale if scale is None else scale)
    if causal:
        visible = torch.arange(t + s)[None, :] <= (t + torch.arange(s))[:, None]      # [s, t+s]
        scores = scores.masked_fill(~visible[None, :, None, :], float("-inf"))
    o_lat = torch.einsum("bshj,bjc->bshc", torch.softmax(scores, dim=-1), c_kv)
    out = torch.einsum("bshc,hvc->bshv", o_lat, w_uv)
    return mla.o_proj(out.reshape(1, s, -1))


def _trial_layers() -> list[MultiHeadLatentAttention]:
    """Small MLA layers with 2, 4 and 8 heads (the notebook's tiny layer has 4)."""
    return [build_mla(tiny(num_attention_heads=n, num_key_value_heads=n), seed=10 + n) for n in (2, 4, 8)]


def _prefilled(mla, prompt: torch.Tensor):
    cache = mla.new_cache(1, prompt.shape[1] + 4)
    mla(prompt, start_pos=0, cache=cache, attn_impl="absorb")
    return cache


def _run_trials(fn, new_tokens: tuple[int, ...], name: str):
    """Run the learner's ``fn(mla, h, t, cache)`` and the library on the same inputs; yield the comparisons.

    Yields ``(mla, prompt, h, got, want)``; raises :class:`Wrong` for errors and shapes."""
    g = torch.Generator().manual_seed(4)
    for mla in _trial_layers():
        d = mla.cfg.hidden_size
        prompt = torch.randn(1, 5, d, generator=g)
        for s in new_tokens:
            h = torch.randn(1, s, d, generator=g)
            with torch.no_grad():
                try:
                    got = call_learner(fn, mla, h, prompt.shape[1], _prefilled(mla, prompt))
                except RuntimeError as exc:
                    if mla.n_heads != 4 and any(w in str(exc) for w in ("einsum", "size", "shape", "match")):
                        raise Wrong(f"your {name} failed on a layer with {mla.n_heads} heads ({type(exc).__name__}: "
                                    f"{str(exc)[:120]}). Take W^UK and W^UV from the layer you are given "
                                    f"(mla.kv_b_proj), not the notebook's 4-head W_UK, W_UV") from None
                    raise
                want = mla(h, start_pos=prompt.shape[1], cache=_prefilled(mla, prompt), attn_impl="absorb")
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"{name} must return a torch.Tensor [1, s, d], got {type(got).__name__}")
            if tuple(got.shape) != tuple(want.shape):
                raise Wrong(f"for {s} new token{'s' if s > 1 else ''} on a {d}-wide layer {name} must return "
                            f"[1, {s}, {d}] (the layer output), got {tuple(got.shape)}")
            yield mla, prompt, h, got.detach().float(), want


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-4))


def _variant(mla, prompt, h, **flags) -> torch.Tensor:
    with torch.no_grad():
        return absorbed_chunk_reference(mla, h, prompt.shape[1], _prefilled(mla, prompt), **flags)


@checker("4.3", hint="what may new token k see: which cache rows exist for it, and which belong to new tokens "
                     "after it?",
         more=["section 4's step has one query and needs no mask: it may see every row. With s new tokens "
               "appended at once, the cache holds rows 0 … t+s−1",
               "new token k sits at position t+k; its scores against rows after t+k must not enter the softmax",
               "build a [s, t+s] bool mask from two aranges and fill the hidden scores with −inf; take W^UK and "
               "W^UV from the layer passed in (the checker uses layers with 2, 4 and 8 heads)"])
def check_chunk_step(chunk_step):
    """Exercise 4.3 (variation): the learner's ``absorbed_chunk(mla, h [1, s, d], t, cache) -> [1, s, d]``
    against ``mla(h, start_pos=t, cache, attn_impl="absorb")`` on layers with 2, 4 and 8 heads, s = 1, 2, 3."""
    if not callable(chunk_step):
        raise Wrong(f"pass your function itself (absorbed_chunk), got {type(chunk_step).__name__}")
    for mla, prompt, h, got, want in _run_trials(chunk_step, (1, 2, 3), "absorbed_chunk"):
        if _close(got, want):
            continue
        s = h.shape[1]
        if s > 1 and _close(got, _variant(mla, prompt, h, causal=False)):
            raise Wrong("every new token sees every new row: the earlier new tokens also attend to the tokens "
                        "after them. Mask scores of rows after a token's own position with −inf")
        scale_576 = (mla.kv_lora_rank + mla.qk_rope_head_dim) ** -0.5
        if _close(got, _variant(mla, prompt, h, scale=scale_576)):
            raise Wrong("the scale is (d_c + d_h^R)^-1/2; the 576-wide dot product equals the 192-wide one, so "
                        "keep the layer's mla.softmax_scale")
        if s > 1 and _close(got[:, :1], want[:, :1]):
            raise Wrong(f"the first new token is right, the later ones are not ({s} new tokens, {mla.n_heads} "
                        f"heads): new token k sees rows 0 … t+k, one more for each k")
        if s > 1 and _close(got[:, -1:], want[:, -1:]):
            raise Wrong(f"the last new token is right, the earlier ones are not ({s} new tokens): they must not "
                        f"see the rows of the new tokens after them")
        diff = float((got - want).abs().max())
        raise Wrong(f"with {s} new token{'s' if s > 1 else ''} on a {mla.n_heads}-head layer your output differs "
                    f"from the library's absorbed attention (max |Δ| = {diff:.3g}): check the fold, the scores, "
                    f"the mask and W^UV step by step against section 2")
    return ("equal to the library's absorbed attention for 1, 2 and 3 new tokens on layers with 2, 4 and 8 heads. "
            "With s queries per step every cached row serves s·n_h dot products: the intensity grows with s, "
            "which is why an MTP draft (s = 2) doubles it.")


#: the function of exercise 4.4 as the notebook shows it, with its bug (the tests run this very text)
DECODE_STEP_WITH_BUG = '''def decode_step(mla, h_t, t, cache):
    """One absorbed decode step: h_t [1, 1, d] at position t, cache holding t rows -> [1, 1, d]."""
    W = mla.kv_b_proj.weight.view(mla.n_heads, -1, mla.kv_lora_rank)
    W_UK, W_UV = W[:, :mla.qk_nope_head_dim], W[:, mla.qk_nope_head_dim:]
    pos = torch.tensor([t])
    q_C, q_R = mla.query(h_t, pos)                               # q^R rotated for position t
    c_KV, k_R = cache.append(*mla.latent(h_t, pos))              # rows 0..t of the cache
    cos, sin = mla.rotary(torch.arange(t + 1))
    k_R = apply_rope_interleaved(k_R, cos, sin)                  # each key rotated for its position
    q_tilde = torch.einsum("bhd,hdc->bhc", q_C[:, 0], W_UK)
    s = (torch.einsum("bhc,bjc->bhj", q_tilde, c_KV)
         + torch.einsum("bhr,bjr->bhj", q_R[:, 0], k_R)) * mla.softmax_scale
    o_lat = torch.einsum("bhj,bjc->bhc", torch.softmax(s, dim=-1), c_KV)
    o = torch.einsum("bhc,hvc->bhv", o_lat, W_UV)
    return mla.o_proj(o.reshape(1, 1, -1))
'''


def _normalised(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def unchanged_source(fn, given: str) -> bool:
    """True when ``fn``'s source is the bug hunt's code as given (trailing spaces aside); False when it was
    edited or its source cannot be read (then the checker judges by behaviour only)."""
    import inspect

    try:
        return _normalised(inspect.getsource(fn)) == _normalised(given)
    except (OSError, TypeError):
        return False


_HINT_44 = ("it runs, its shapes are right, and at position 0 it even gives the library's output. Which step of a "
            "decode can go wrong only away from position 0?")


@checker("4.4", hint=_HINT_44,
         more=["which position has every key been rotated for when it reaches the score?",
               "section 1: the cache stores k^R already rotated for its own position j (mla.latent does it before "
               "cache.append)",
               "a rotation applied a second time adds another j·θ to each key: the score then depends on t − 2j "
               "instead of t − j"])
def check_decode_step(decode_step):
    """Exercise 4.4 (bug hunt): the learner's fixed ``decode_step(mla, h_t, t, cache)`` against the library's
    absorbed decode on layers with 2, 4 and 8 heads at position 5; names what is still wrong."""
    if not callable(decode_step):
        raise Wrong(f"pass your function itself (decode_step), got {type(decode_step).__name__}")
    for mla, prompt, h, got, want in _run_trials(decode_step, (1,), "decode_step"):
        if _close(got, want):
            continue
        if unchanged_source(decode_step, DECODE_STEP_WITH_BUG):
            raise Wrong(f"this is the function as given: on a {mla.n_heads}-head layer at position "
                        f"{prompt.shape[1]} its output differs from the library's absorbed decode. Find the "
                        f"line(s) and fix them. Nudge: {_HINT_44}")
        if _close(got, _variant(mla, prompt, h, rotate_cached_again=True)):
            raise Wrong("still the bug: the cached keys' rope part is rotated a second time, so every key carries "
                        "twice its position and the scores stop depending on the distance t − j alone")
        scale_576 = (mla.kv_lora_rank + mla.qk_rope_head_dim) ** -0.5
        if _close(got, _variant(mla, prompt, h, scale=scale_576)):
            raise Wrong("the softmax scale is now (d_c + d_h^R)^-1/2; keep mla.softmax_scale (section 3)")
        diff = float((got - want).abs().max())
        raise Wrong(f"on a {mla.n_heads}-head layer at position {prompt.shape[1]} the output differs from the "
                    f"library's absorbed decode (max |Δ| = {diff:.3g}); the bug is one pair of lines, everything "
                    f"else was right: compare your change with the original")
    return ("equal to the library's absorbed decode on layers with 2, 4 and 8 heads. The bug is a real one "
            "(SPEC §9: a cached rope key rotated twice); note that at position 0 it is invisible, since a "
            "rotation by 0 changes nothing: test RoPE code at positions ≥ 1.")


# ---------------------------------------------------------------------------------------------- 4.5
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


@checker("4.5", hint="what does each path pay once per NEW token, and what once per query-key pair? Which of the "
                     "two grows faster as s grows?",
         more=["the projections are the same for both paths: they cancel",
               "re-expanding runs kv_b_proj on every cached and new token; absorbing runs the two folds once per "
               "new token, but each query-key pair costs 576 + 512 wide per head instead of 192 + 128",
               "section 6's attention_flops(cfg, queries, context, impl) counts both paths: compare them for "
               "growing s"])
def check_break_even_queries(answer):
    """Exercise 4.5: the smallest s at which re-expanding beats absorbing, V3 sizes, 4096 cached tokens."""
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
