"""Exercise checkers of chapter 04 (MLA at inference: weight absorption, decoding on the latent cache).

All follow :mod:`dsv3_lessons.course.common.checking`: they never raise and print one line -- "not attempted yet"
+ a nudge for the placeholder ``___``, a ✗ diagnosis for a wrong answer (pointing to ``hint("4.N")``), ✓ for a right
one. The nudges say what to think about; the formulas are in the worked solutions only.

* 4.1 (predict, then run) -- per cached token, how many times the FLOPs of a per-head cache the absorbed decode
  step does at V3 sizes (3.4: MORE, where the intuition "absorption saves compute" says fewer); predicted before
  section 5 counts it, its printout hidden until then (``revealed``).
* 4.2 (code) -- merge W^UV_i into the output projection, the V2 report's phrasing of absorption
  (§2.1.2: "W^UV can be absorbed into W^O"), and see why the official code does not.
* 4.3 (variation, code) -- one absorbed decode step for a BATCH of sequences of different lengths over padded
  latent buffers (continuous batching): each sequence at its own RoPE position, its new row written at its own
  index, the stale slots after it kept out of the softmax. The chapter's step assumes one shared t.
* 4.4 (bug hunt, code) -- absorbed decoding written as multi-query attention with
  ``F.scaled_dot_product_attention`` (the shape of section 3, not of section 4's step), whose scale lacks YaRN's
  mscale² (a mistake public implementations made: "missing mscale²"). The author's test -- the first token on an
  empty cache, where one key gets softmax weight 1 whatever its score -- passes; the ✗ on the code as given states
  only the symptom.
* 4.5 (explain with a number) -- the number of simultaneous queries from which re-expanding the cache is cheaper
  than absorbing: why absorption is a decode-time choice.

Expected values are computed from the config, from the library layer and from
:func:`dsv3_lessons.course.ch04_mla_inference.decode.attention_flops`, never typed in.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import LatentCache, MultiHeadLatentAttention, split_kv_b
from dsv3_lessons.model.rope import apply_rope_interleaved

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, hint, unchanged_source
from dsv3_lessons.course.ch04_mla_inference.decode import attention_flops, build_mla

__all__ = ["check_merged_output", "check_flops_ratio_prediction", "check_ragged_decode", "check_mqa_decode",
           "check_break_even_queries", "merged_output_matrix", "break_even_queries", "ragged_decode_reference",
           "mqa_decode_reference", "absorbed_flops_ratio", "v3_decode_intensity", "MQA_DECODE_WITH_BUG",
           "BREAK_EVEN_CONTEXT", "hint"]

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
    c_major = torch.einsum("dhv,hvc->dch", w_o, w_uv).reshape(d, -1).to(torch.float64)
    if torch.allclose(m, c_major, atol=tol, rtol=1e-4):
        raise Wrong(f"every number of W_OV is right but in the wrong column: your columns run latent-major "
                    f"(column c·n_h + i holds head i's latent c), while o^lat.reshape(-1) lists head 0's "
                    f"{d_c} latents first, then head 1's, ... Lay the heads' [{d}, {d_c}] blocks side by side")
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


def absorbed_flops_ratio(cfg=None) -> float:
    """Per cached token and decode step: FLOPs of absorbed MLA over FLOPs of a per-head (MHA-style) cache.

    Absorbed, every head dots the (d_c + d_h^R)-wide cached key and adds the d_c-wide value; with a per-head cache
    it dots a (d_h + d_h^R)-wide key and adds a d_v-wide value. The head count cancels:
    (2·d_c + d_h^R) / (d_h + d_h^R + d_v) = 1088 / 320 = 3.4 for V3."""
    cfg = cfg or deepseek_v3_671b()
    dc, r, dh, dv = cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim, cfg.v_head_dim
    return (2 * dc + r) / (dh + r + dv)


@checker("4.1", hint="write your guess before you run the counting cells: per cached token, what does each head "
                     "do with the cached row in each layout, and how wide is what it works on?",
         more=["absorption removes the re-expansion (kv_b_proj on every cached token); it does not remove the "
               "per-head work on each cached token: every head still scores it and mixes it",
               "section 3: after the fold a head's query and key live in the latent space. How wide are they, "
               "and how wide is the value a head mixes, compared with a per-head cache's key and value?",
               "count, per head and cached token, a dot product with the key and an add of the value; the head "
               "count is the same on both sides"])
def check_flops_ratio_prediction(prediction):
    """Exercise 4.1 (predict, then run): the learner's prediction of FLOPs(absorbed) / FLOPs(per-head cache) per
    cached token of a V3 decode step. Within 4 % of 3.4 is ✓; otherwise the gap is explained."""
    x = as_number(prediction, "your prediction (a ratio: absorbed FLOPs / per-head-cache FLOPs)")
    cfg = deepseek_v3_671b()
    right = absorbed_flops_ratio(cfg)
    h, dc, r, dh, dv = (cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim,
                        cfg.v_head_dim)
    latent_w, per_head_w = dc + r, dh + r
    if x <= 0:
        raise Wrong(f"{x:g} is not a ratio of two FLOP counts: both are positive")
    if math.isclose(x, right, rel_tol=0.04):
        return (f"you predicted {x:g}; it is {right:.1f}: per cached token and head, absorbed decode dots a "
                f"{latent_w}-wide key and adds a {dc}-wide value, a per-head cache a {per_head_w}-wide key and a "
                f"{dv}-wide value: ({latent_w} + {dc}) / ({per_head_w} + {dv}). Absorption saves the re-expansion "
                f"and the BYTES (one {latent_w}-element row for all {h} heads), not the per-pair arithmetic.")
    bytes_ratio = h * (dh + r + dv) / (dc + r)
    naive = 2 * dc * h * (dh + dv) + 2 * h * (dh + r + dv)
    gaps = [
        (1.0, "the same: re-association keeps the RESULT (sections 2 and 4 matched the library), not the cost. "
              "After the fold each head works in the latent space, on a wider key and a wider value than a "
              "per-head cache's"),
        (1 / bytes_ratio, f"1/{bytes_ratio:.0f} is the BYTES per cached token (one {latent_w}-element row against "
                          f"{h}·({dh + r} + {dv}) elements); the question is the arithmetic, and it goes the "
                          f"other way"),
        (bytes_ratio, f"{bytes_ratio:.0f} is the ratio of the bytes cached (per-head over latent); the question "
                      f"is FLOPs, absorbed over per-head"),
        (1 / right, "you have the ratio upside down: the absorbed step does MORE arithmetic per cached token"),
        (latent_w / per_head_w, f"{latent_w}/{per_head_w} counts only the scores; each head also adds the cached "
                                f"value into its weighted sum, {dc} wide absorbed against {dv} per head"),
        (dc / dv, f"{dc}/{dv} counts only the weighted sum of the values; each head also scores the key, "
                  f"{latent_w} wide against {per_head_w}"),
        (naive / (2 * h * (dc + r + dc)), "that is naive (re-expanded) MLA over absorbed MLA, which is what "
                                          "absorption saves; the question compares absorbed with a per-head cache"),
        (naive / (2 * h * (dh + r + dv)), "that is naive (re-expanded) MLA over a per-head cache; the question "
                                          "is the absorbed step"),
    ]
    for value, message in gaps:
        if math.isclose(x, value, rel_tol=0.03):
            raise Wrong(f"you predicted {x:g}; it is {right:.1f}: {message}.")
    if x < 1:
        raise Wrong(f"you predicted {x:g} (fewer FLOPs); it is {right:.1f}, more. Absorption removes the "
                    f"re-expansion of the cache, not the work each head does on each cached token, and that work "
                    f"is on wider vectors after the fold.")
    side = "low" if x < right else "high"
    raise Wrong(f"you predicted {x:g}; it is {right:.1f} (too {side}). Count per head and cached token: one dot "
                f"product with the key and one add of the value, in each layout.")


# ---------------------------------------------------------------------------------------------- shared trial code
def _trial_layers() -> list[MultiHeadLatentAttention]:
    """Small MLA layers with 2, 4 and 8 heads (the notebook's tiny layer has 4; YaRN factor 4, so the softmax
    scale carries mscale²)."""
    with torch.random.fork_rng(devices=[]):      # build_mla seeds torch: leave the learner's random state alone
        return [build_mla(tiny(num_attention_heads=n, num_key_value_heads=n), seed=10 + n) for n in (2, 4, 8)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-4))


def _layer_error(exc: RuntimeError, mla, name: str) -> None:
    """A shape error on a layer whose head count is not the notebook's 4: the global W_UK/W_UV were used."""
    if mla.n_heads != 4 and any(w in str(exc) for w in ("einsum", "size", "shape", "match")):
        raise Wrong(f"your {name} failed on a layer with {mla.n_heads} heads ({type(exc).__name__}: "
                    f"{str(exc)[:120]}). Take W^UK and W^UV from the layer you are given "
                    f"(mla.kv_b_proj), not the notebook's 4-head W_UK, W_UV") from None


# ---------------------------------------------------------------------------------------------- 4.3
@torch.no_grad()
def ragged_decode_reference(mla: MultiHeadLatentAttention, h: torch.Tensor, lengths: torch.Tensor,
                            c_buf: torch.Tensor, k_buf: torch.Tensor, mask: str = "right",
                            position: int | None = None, scale: float | None = None) -> torch.Tensor:
    """One absorbed decode step for a batch of sequences of different lengths (exercise 4.3's answer).

    ``h [B, 1, d]``: sequence b's new token, at position ``lengths[b]``; ``c_buf [B, L, d_c]``, ``k_buf [B, L,
    d_h^R]``: padded latent buffers, sequence b's cached rows are 0 … lengths[b]−1 (rows after that are stale).
    Writes the new rows at index ``lengths[b]`` (in place) and returns the layer output ``[B, 1, d]``.

    The flags give the typical mistakes the checker diagnoses: ``mask`` "none" (stale slots in the softmax) or
    "strict" (the request's own new row hidden too); ``position`` (every request rotated, and written, at that
    one position); ``scale`` (another softmax scale).
    """
    b_size, length = c_buf.shape[:2]
    pos = lengths if position is None else torch.full_like(lengths, position)
    q_c, q_r = mla.query(h.transpose(0, 1), pos)                    # the batch laid along the sequence axis
    c_new, k_new = mla.latent(h.transpose(0, 1), pos)
    rows = torch.arange(b_size)
    c_buf[rows, pos], k_buf[rows, pos] = c_new[0], k_new[0]
    w_uk, w_uv = split_kv_b(mla.kv_b_proj.weight, mla.n_heads, mla.qk_nope_head_dim, mla.v_head_dim)
    q_lat = torch.einsum("bhd,hdc->bhc", q_c[0], w_uk)
    s = (torch.einsum("bhc,bjc->bhj", q_lat, c_buf)
         + torch.einsum("bhr,bjr->bhj", q_r[0], k_buf)) * (mla.softmax_scale if scale is None else scale)
    j = torch.arange(length)[None, :]
    if mask != "none":
        hidden = j > pos[:, None] if mask == "right" else j >= pos[:, None]
        s = s.masked_fill(hidden[:, None, :], float("-inf"))
    o_lat = torch.einsum("bhj,bjc->bhc", torch.softmax(s, dim=-1), c_buf)
    return mla.o_proj(torch.einsum("bhc,hvc->bhv", o_lat, w_uv).reshape(b_size, 1, -1))


#: (heads, lengths, buffer rows) of exercise 4.3's trials: an empty sequence, equal lengths, a buffer that the
#: new row fills to the last slot, four sequences
_RAGGED_TRIALS = ((2, (3, 0, 5), 6), (4, (2, 2, 2), 4), (8, (5, 1, 3, 4), 6), (4, (0, 4, 1), 5))


def _ragged_case(mla, lengths: tuple[int, ...], length: int, g: torch.Generator):
    """Inputs of one trial and the library's answer: (h, lengths, c_buf, k_buf, want [B, 1, d], new rows)."""
    d, b_size = mla.cfg.hidden_size, len(lengths)
    c_buf = 3 * torch.randn(b_size, length, mla.kv_lora_rank, generator=g)      # stale data everywhere first
    k_buf = 3 * torch.randn(b_size, length, mla.qk_rope_head_dim, generator=g)
    h = torch.randn(b_size, 1, d, generator=g)
    want, new_rows = [], []
    with torch.no_grad():
        for b, n in enumerate(lengths):
            prompt = torch.randn(1, n, d, generator=g)
            cache = LatentCache(1, length, mla.kv_lora_rank, mla.qk_rope_head_dim)
            if n:
                mla(prompt, start_pos=0, cache=cache, attn_impl="absorb")
                c_buf[b, :n], k_buf[b, :n] = cache.kv[0, :n], cache.k_pe[0, :n]
            want.append(mla(h[b:b + 1], start_pos=n, cache=cache, attn_impl="absorb"))
            new_rows.append((cache.kv[0, n].clone(), cache.k_pe[0, n].clone()))
    return h, torch.tensor(lengths), c_buf, k_buf, torch.cat(want), new_rows


@checker("4.3", hint="the chapter's step had one t for everything. Here every request has its own: what in the "
                     "step depends on t, and which rows of a request's buffer may its new token see?",
         more=["three things depend on a request's length n_b: the RoPE position of its query and of its new key "
               "(n_b), the buffer index its new row is written to (n_b), and which rows its softmax may see "
               "(0 … n_b)",
               "mla.query(x, positions) and mla.latent(x, positions) rotate the k-th token along x's SEQUENCE axis "
               "by positions[k]: lay the batch along that axis (h.transpose(0, 1)) or call them once per request",
               "rows after a request's new row hold stale numbers of an earlier request: a [B, L] boolean made of "
               "an arange and the lengths, filled with −inf before the softmax; write the new rows with advanced "
               "indexing, c_buf[torch.arange(B), lengths] = …"])
def check_ragged_decode(ragged_decode):
    """Exercise 4.3 (variation): the learner's ``ragged_decode(mla, h [B, 1, d], lengths [B], c_buf [B, L, d_c],
    k_buf [B, L, d_h^R]) -> [B, 1, d]`` against the library's cached absorbed decode run on each sequence alone,
    on layers with 2, 4 and 8 heads and lengths that include 0, equal lengths and a buffer filled to its last slot.
    The buffers' rows after each sequence's length hold random stale numbers."""
    if not callable(ragged_decode):
        raise Wrong(f"pass your function itself (ragged_decode), got {type(ragged_decode).__name__}")
    g = torch.Generator().manual_seed(43)
    layers = {m.n_heads: m for m in _trial_layers()}
    for heads, lengths, length in _RAGGED_TRIALS:
        mla = layers[heads]
        h, lens, c_buf, k_buf, want, new_rows = _ragged_case(mla, lengths, length, g)
        c_given, k_given = c_buf.clone(), k_buf.clone()
        with torch.no_grad():
            try:
                got = call_learner(ragged_decode, mla, h.clone(), lens.clone(), c_buf, k_buf)
            except RuntimeError as exc:
                _layer_error(exc, mla, "ragged_decode")
                raise
        b_size, d = len(lengths), mla.cfg.hidden_size
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"ragged_decode must return a torch.Tensor [B, 1, d], got {type(got).__name__}")
        if tuple(got.shape) != (b_size, 1, d):
            raise Wrong(f"for {b_size} requests on a {d}-wide layer ragged_decode must return [{b_size}, 1, {d}], "
                        f"got {tuple(got.shape)}")
        got = got.detach().float()
        case = f"lengths {list(lengths)}, a {length}-row buffer, {heads} heads"
        ok = [_close(got[b], want[b]) for b in range(b_size)]
        if all(ok):
            for b, n in enumerate(lengths):
                if not (_close(c_buf[b, n], new_rows[b][0]) and _close(k_buf[b, n], new_rows[b][1])):
                    raise Wrong(f"the outputs are right ({case}), but request {b}'s new row is not in the "
                                f"buffers at index lengths[{b}] = {n}: the next step would not see it. Write "
                                f"c^KV and the rotated k^R of each new token into its own request's buffers")
                if n and not (torch.equal(c_buf[b, :n], c_given[b, :n]) and torch.equal(k_buf[b, :n], k_given[b, :n])):
                    raise Wrong(f"the outputs are right ({case}), but request {b}'s cached rows 0 … {n - 1} were "
                                f"overwritten: write only row lengths[b]")
            continue
        nan = [f"{b} (length {n})" for b, n in enumerate(lengths) if bool(torch.isnan(got[b]).any())]
        if nan:
            raise Wrong(f"requests {', '.join(nan)} come out NaN ({case}): a softmax whose every score is −inf. "
                        f"A request's own new row (index lengths[b]) must stay visible, also when its cache was "
                        f"empty")
        variants = [
            (dict(mask="none"), "every request's softmax also sees the stale rows after its new row (the buffer "
                                "is padded to a common length, and those slots hold numbers of an earlier "
                                "request): hide rows j > lengths[b] with −inf"),
            (dict(mask="strict"), "each request's new token does not see its own new row: row lengths[b] is "
                                  "visible (it was just written), the rows after it are not"),
            (dict(position=max(lengths)), f"every request is treated as if it sat at position {max(lengths)} (the "
                                          f"longest): each one's query, new key and new row go at its own "
                                          f"length"),
            (dict(position=lengths[0]), f"every request is treated as if it sat at position {lengths[0]} (the "
                                        f"first one's length): each one's query, new key and new row go at its "
                                        f"own length"),
            (dict(scale=(mla.kv_lora_rank + mla.qk_rope_head_dim) ** -0.5),
             "the scale is (d_c + d_h^R)^-1/2; the 576-wide dot product equals the 192-wide one, so keep the "
             "layer's mla.softmax_scale"),
        ]
        for flags, message in variants:
            if _close(got, ragged_decode_reference(mla, h, lens, c_given.clone(), k_given.clone(), **flags)):
                raise Wrong(f"{message} ({case}).")
        right = [f"{b} (length {n})" for b, (n, good) in enumerate(zip(lengths, ok)) if good]
        wrong = [f"{b} (length {n})" for b, (n, good) in enumerate(zip(lengths, ok)) if not good]
        diff = float((got - want).abs().max())
        raise Wrong(f"with {case}: requests {', '.join(wrong)} differ from the library (max |Δ| = {diff:.3g})"
                    + (f", requests {', '.join(right)} are right" if right else "")
                    + ". Check, for each request, its positions, the row it writes and the rows its softmax sees")
    return ("equal to the library on every request, for lengths that include an empty cache, equal lengths and a "
            "buffer filled to its last slot (2, 4 and 8 heads). This is decode as a server runs it: one step for "
            "many requests, each at its own position, over padded (or paged) latent buffers whose unused slots "
            "must never reach the softmax.")


# ---------------------------------------------------------------------------------------------- 4.4
#: the function of exercise 4.4 as the notebook shows it, with its bug (the tests run this very text)
MQA_DECODE_WITH_BUG = '''def mqa_decode(mla, x, cache, t):
    """Absorbed decode as MQA: x [1, 1, d] is token t, the cache rows 0..t-1; returns [1, 1, d]."""
    n_h, d_h, d_c = mla.n_heads, mla.qk_nope_head_dim, mla.kv_lora_rank
    w_kv = mla.kv_b_proj.weight.view(n_h, -1, d_c)          # per head: [W^UK_i ; W^UV_i]
    pos = torch.tensor([t])
    q_nope, q_rope = mla.query(x, pos)                      # [1, 1, n_h, d_h], [1, 1, n_h, d_h^R]
    rows = torch.cat(cache.append(*mla.latent(x, pos)), dim=-1)  # [1, t+1, d_c + d_h^R]: MQA's key
    q = torch.cat([torch.einsum("bshd,hdc->bhsc", q_nope, w_kv[:, :d_h]), q_rope.transpose(1, 2)],
                  dim=-1)
    o = F.scaled_dot_product_attention(
        q, rows[:, None], rows[:, None, :, :d_c], enable_gqa=True,
        scale=mla.qk_head_dim ** -0.5)   # the 192-wide dot product's scale
    o = torch.einsum("bhsc,hvc->bshv", o, w_kv[:, d_h:])    # W^UV_i after attention
    return mla.o_proj(o.flatten(2))
'''


@torch.no_grad()
def mqa_decode_reference(mla: MultiHeadLatentAttention, x: torch.Tensor, cache, t: int, scale: float | None = None,
                         rotate_cached_again: bool = False) -> torch.Tensor:
    """Exercise 4.4's function fixed (``scale`` None: the layer's ``softmax_scale``, mscale² included), or with one
    of the typical mistakes: another ``scale``; the cached k^R rotated a second time."""
    n_h, d_h, d_c = mla.n_heads, mla.qk_nope_head_dim, mla.kv_lora_rank
    w_kv = mla.kv_b_proj.weight.view(n_h, -1, d_c)
    pos = torch.tensor([t])
    q_nope, q_rope = mla.query(x, pos)
    c_kv, k_r = cache.append(*mla.latent(x, pos))
    if rotate_cached_again:
        k_r = apply_rope_interleaved(k_r, *mla.rotary(torch.arange(t + 1)))
    rows = torch.cat([c_kv, k_r], dim=-1)
    q = torch.cat([torch.einsum("bshd,hdc->bhsc", q_nope, w_kv[:, :d_h]), q_rope.transpose(1, 2)], dim=-1)
    o = F.scaled_dot_product_attention(q, rows[:, None], rows[:, None, :, :d_c], enable_gqa=True,
                                       scale=mla.softmax_scale if scale is None else scale)
    return mla.o_proj(torch.einsum("bhsc,hvc->bshv", o, w_kv[:, d_h:]).flatten(2))


def _mqa_trials(fn):
    """The learner's ``fn(mla, x, cache, t)`` and the library at t = 5 (after a 5-token prompt) on 2-, 4- and
    8-head layers: yields ``(mla, prompt, x, got, want)``; raises :class:`Wrong` for errors and shapes."""
    g = torch.Generator().manual_seed(4)
    for mla in _trial_layers():
        d = mla.cfg.hidden_size
        prompt, x = torch.randn(1, 5, d, generator=g), torch.randn(1, 1, d, generator=g)
        with torch.no_grad():
            try:
                got = call_learner(fn, mla, x, _prefilled(mla, prompt), prompt.shape[1])
            except RuntimeError as exc:
                _layer_error(exc, mla, "mqa_decode")
                raise
            want = mla(x, start_pos=prompt.shape[1], cache=_prefilled(mla, prompt), attn_impl="absorb")
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"mqa_decode must return a torch.Tensor [1, 1, d], got {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise Wrong(f"mqa_decode must return [1, 1, {d}] (the layer output), got {tuple(got.shape)}")
        yield mla, prompt, x, got.detach().float(), want


def _prefilled(mla, prompt: torch.Tensor):
    cache = mla.new_cache(1, prompt.shape[1] + 4)
    mla(prompt, start_pos=0, cache=cache, attn_impl="absorb")
    return cache


_HINT_44 = ("it passes its author's test, the first token on an empty cache. What is special about attention over "
            "a single key, and what does a test at a later position exercise that this one cannot?")


@checker("4.4", hint=_HINT_44,
         more=["with one key, the softmax gives it weight 1 whatever its score: the first-token test cannot see "
               "anything that only changes the scores' sizes",
               "list what sets a score's size in this function, line by line, and compare each with what the "
               "library layer uses (its attributes are on `mla`)",
               "section 3 printed V3's softmax scale next to two numbers it is NOT; chapter 3 says what YaRN "
               "adds to it"])
def check_mqa_decode(mqa_decode):
    """Exercise 4.4 (bug hunt): the learner's fixed ``mqa_decode(mla, x, cache, t)`` against the library's absorbed
    decode at position 5 on layers with 2, 4 and 8 heads. The code as given gets only the symptom; a function that
    computes what the given one computes gets "the bug is still there"; other edits get their diagnosis."""
    if not callable(mqa_decode):
        raise Wrong(f"pass your function itself (mqa_decode), got {type(mqa_decode).__name__}")
    worst, given = 0.0, unchanged_source(mqa_decode, MQA_DECODE_WITH_BUG)
    for mla, prompt, x, got, want in _mqa_trials(mqa_decode):
        if _close(got, want):
            continue
        t = prompt.shape[1]
        still = _close(got, mqa_decode_reference(mla, x, _prefilled(mla, prompt), t, scale=mla.qk_head_dim ** -0.5))
        if given or still:
            worst = max(worst, float((got - want).abs().max()))
            continue
        if _close(got, mqa_decode_reference(mla, x, _prefilled(mla, prompt), t,
                                            scale=(mla.kv_lora_rank + mla.qk_rope_head_dim) ** -0.5)):
            raise Wrong("the scores are now scaled by 1/√(d_c + d_h^R), the width of the concatenated query (that "
                        "is also scaled_dot_product_attention's default). The 576-wide dot product is the same "
                        "number as the 192-wide one, so its scale is the layer's")
        if _close(got, mqa_decode_reference(mla, x, _prefilled(mla, prompt), t, rotate_cached_again=True)):
            raise Wrong("the cached keys' rope part is now rotated a second time: mla.latent returns k^R already "
                        "rotated for its own position, and the cache stores it that way")
        diff = float((got - want).abs().max())
        raise Wrong(f"on a {mla.n_heads}-head layer at position {t} the output differs from the library's absorbed "
                    f"decode (max |Δ| = {diff:.3g}), and not in the way the given function did: compare your change "
                    f"with the original, one line at a time")
    if given:
        raise Wrong(f"this is the function as given: it passes its author's test (the first token on an empty cache), "
                    f"but decoding token 5 after a 5-token prompt its output differs from the library's by up to "
                    f"{worst:.2g} (layers with 2, 4 and 8 heads). Find the line and fix it.")
    if worst:
        raise Wrong(f"your function still computes what the given one computes (the same outputs, up to "
                    f"{worst:.2g} away from the library's at position 5): the bug is still there")
    return ("equal to the library's absorbed decode on layers with 2, 4 and 8 heads. The scale was "
            "(d_h + d_h^R)^-1/2 without YaRN's mscale²: right for a model without long-context scaling, 1/mscale² "
            "too small for V3 (mscale² = 1.87 at factor 40), which flattens every attention distribution. The "
            "author's one-token test could not see it: a single key gets weight 1 whatever its score.")


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
