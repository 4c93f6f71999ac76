"""Exercise checkers of chapter 02 (MLA: two latent spaces), on the never-raising pattern of ``..checking``.

* 2.1 rows of V3's fused ``kv_b_proj.weight`` that hold head 5's W^UV (a slice ``(start, stop)``);
* 2.2 parameters per layer that V3's query latent saves against a plain W^Q (a number);
* 2.3 write ``fuse_kv_b(w_uk, w_uv)``: per-head W^UK_i, W^UV_i back into the checkpoint's fused tensor (code);
* 2.4 write ``split_scores(q_c, q_r, k_c, k_r)``: the score of eq. (10) as a content part plus a RoPE part,
  without building the concatenated q and k (code).

Each checker prints one line: "not attempted yet" and a hint for the placeholder ``___``, ``✗`` and a diagnosis
for a wrong answer, ``✓`` for a right one, and returns the :class:`~dsv3_lessons.course.common.checking.Result`.
Right answers are computed from :func:`~dsv3_lessons.model.config.deepseek_v3_671b` and
:func:`~dsv3_lessons.course.ch02_mla.steps.mla_cost`, never typed in.
"""
from __future__ import annotations

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, checker, is_placeholder

__all__ = ["check_kv_b_rows_of_w_uv", "check_query_latent_savings", "check_fuse_kv_b", "check_split_scores"]


def _v3():
    from dsv3_lessons.model.config import deepseek_v3_671b

    return deepseek_v3_671b()


def _whole(x, what: str) -> int:
    value = as_number(x, what)
    if value != int(value):
        raise Wrong(f"{what} must be a whole number, got {value}")
    return int(value)


def _pair(answer, what: str) -> tuple[int, int]:
    if isinstance(answer, slice):
        answer = (answer.start, answer.stop)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"{what} must be a pair (start, stop), got {answer!r}")
    return _whole(answer[0], f"{what}[0]"), _whole(answer[1], f"{what}[1]")


# ----------------------------------------------------------------------------------------------- 2.1
@checker("2.1", hint="kv_b_proj.weight is viewed [n_h, d_h + d_v, d_c]: head i owns a block of d_h + d_v rows, its "
                     "W^UK_i first, then its W^UV_i. Use v3.qk_nope_head_dim and v3.v_head_dim.")
def check_kv_b_rows_of_w_uv(answer, head: int = 5):
    """Exercise 2.1: rows ``(start, stop)`` (stop exclusive; a ``slice`` works too) of V3's fused
    ``kv_b_proj.weight`` ``[n_h·(d_h+d_v), d_c]`` that hold W^UV of head ``head`` (0-based).

    Layout: per head [W^UK_i (d_h rows) ; W^UV_i (d_v rows)] (V3 report §2.1.1; the official inference code views
    ``wkv_b`` as ``[n_heads, qk_nope_head_dim + v_head_dim, kv_lora_rank]``).
    """
    c = _v3()
    start, stop = _pair(answer, "the answer (start, stop)")
    per_head = c.qk_nope_head_dim + c.v_head_dim
    right = (head * per_head + c.qk_nope_head_dim, (head + 1) * per_head)
    if (start, stop) == right:
        return f"rows {right[0]:,} to {right[1] - 1:,}: head {head}'s block starts at {head}·{per_head}, and its " \
               f"values follow its {c.qk_nope_head_dim} key rows."
    keys_first = c.num_attention_heads * c.qk_nope_head_dim + head * c.v_head_dim
    diagnoses = {
        (keys_first, keys_first + c.v_head_dim):
            "that is the 'all keys first' reading (keys = first n_h·d_h rows), the pitfall of this chapter: rows are "
            "grouped by head, keys then values inside each head",
        (head * per_head, head * per_head + c.qk_nope_head_dim):
            f"those are head {head}'s W^UK rows: inside a head's block the {c.qk_nope_head_dim} key rows come first, "
            "then the value rows",
        (right[0], right[1] - 1): "almost: stop is exclusive, as in a Python slice",
        (right[0] + 1, right[1] + 1): "off by one: rows count from 0",
        (head * c.v_head_dim, (head + 1) * c.v_head_dim):
            f"each head owns d_h + d_v = {per_head} rows, not {c.v_head_dim}",
        ((head + 1) * per_head + c.qk_nope_head_dim, (head + 2) * per_head):
            "that is head 6: heads are counted from 0 here",
    }
    if (start, stop) in diagnoses:
        raise Wrong(f"{(start, stop)}: {diagnoses[(start, stop)]}.")
    if stop - start != c.v_head_dim:
        raise Wrong(f"{(start, stop)} spans {stop - start} rows; W^UV_i has d_v = {c.v_head_dim} rows")
    raise Wrong(f"{(start, stop)} has the right length but the wrong place: head i's block starts at row "
                f"i·(d_h + d_v), and its values start d_h rows later.")


# ----------------------------------------------------------------------------------------------- 2.2
@checker("2.2", hint="plain W^Q: d·n_h·(d_h + d_h^R) weights. Query latent: W^DQ (d·d_c'), the q_a_layernorm gains "
                     "(d_c'), and q_b_proj (d_c'·n_h·(d_h + d_h^R)). Take v3's fields; the saving is plain minus latent.")
def check_query_latent_savings(answer):
    """Exercise 2.2: parameters per layer that V3's query latent (``q_a_proj``, ``q_a_layernorm``, ``q_b_proj``)
    saves against a plain ``q_proj`` d → n_h·(d_h + d_h^R) that makes the same 192-wide queries.

    Right answer from :func:`~dsv3_lessons.course.ch02_mla.steps.mla_cost` (``q_lora_rank=None`` minus the default).
    """
    from dsv3_lessons.course.ch02_mla.steps import mla_cost

    c = _v3()
    x = _whole(answer, "the answer (parameters)")
    right = mla_cost(q_lora_rank=None).params_per_layer - mla_cost().params_per_layer
    if x == right:
        return f"{right:,} parameters per layer, {right * c.num_hidden_layers / 1e9:.2f} B over " \
               f"{c.num_hidden_layers} layers."
    d, n_h, d_q, d_cq = c.hidden_size, c.num_attention_heads, c.qk_head_dim, c.q_lora_rank
    plain, latent = d * n_h * d_q, d * d_cq + d_cq + d_cq * n_h * d_q
    diagnoses = {
        right + d_cq: f"almost: the {d_cq} gains of q_a_layernorm belong to the query latent path too",
        right * c.num_hidden_layers: f"that is all {c.num_hidden_layers} layers; the question asks per layer",
        -right: "the sign: the saving is plain minus latent, a positive number",
        plain: "that is the plain W^Q alone; subtract the query latent path",
        latent: "that is the query latent path alone; subtract it from the plain W^Q",
        d * n_h * c.qk_nope_head_dim - (d * d_cq + d_cq + d_cq * n_h * c.qk_nope_head_dim):
            f"each head's query is d_h + d_h^R = {d_q} wide (content and RoPE parts), not {c.qk_nope_head_dim}",
    }
    if x in diagnoses:
        raise Wrong(f"{x:,}: {diagnoses[x]}.")
    raise Wrong(f"{x:,} is not it (off by {x - right:+,}). Plain: d·n_h·(d_h+d_h^R); latent: d·d_c' + d_c' + "
                f"d_c'·n_h·(d_h+d_h^R), with d_c' = q_lora_rank.")


# ----------------------------------------------------------------------------------------------- 2.3
def _test_per_head(n_h: int = 3, d_h: int = 4, d_v: int = 6, d_c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head matrices whose every entry is different (d_h ≠ d_v, so a mixed-up layout cannot pass)."""
    w = torch.arange(n_h * (d_h + d_v) * d_c, dtype=torch.float32).view(n_h, d_h + d_v, d_c)
    return w[:, :d_h].clone(), w[:, d_h:].clone()


@checker("2.3", hint="undo step 2's view: first put each head's W^UK_i and W^UV_i rows together (which axis of "
                     "[n_h, rows, d_c] holds the rows?), then merge the head and row axes into one.")
def check_fuse_kv_b(fuse_kv_b):
    """Exercise 2.3: ``fuse_kv_b(w_uk [n_h, d_h, d_c], w_uv [n_h, d_v, d_c]) -> kv_b_proj.weight [n_h·(d_h+d_v), d_c]``.

    Checked on matrices with n_h = 3, d_h = 4, d_v = 6, d_c = 5 and distinct entries against the layout the
    library reads (:func:`dsv3_lessons.model.mla.split_kv_b`), then on a tiny layer's own weights.
    """
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.mla import MultiHeadLatentAttention, split_kv_b

    if not callable(fuse_kv_b):
        raise Wrong(f"pass your function itself (check_fuse_kv_b(fuse_kv_b)), got {type(fuse_kv_b).__name__}")
    w_uk, w_uv = _test_per_head()
    n_h, d_h, d_c = w_uk.shape
    d_v = w_uv.shape[1]
    got = fuse_kv_b(w_uk.clone(), w_uv.clone())
    if is_placeholder(got):
        raise NotImplementedError
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"fuse_kv_b must return a torch tensor, got {type(got).__name__}")
    rows = n_h * (d_h + d_v)
    if tuple(got.shape) == (d_c, rows):
        raise Wrong(f"the result is transposed: kv_b_proj.weight is [n_h·(d_h+d_v), d_c] = {[rows, d_c]}, one row "
                    "per output feature, as every nn.Linear weight")
    if tuple(got.shape) != (rows, d_c):
        raise Wrong(f"shape {list(got.shape)}; expected [n_h·(d_h+d_v), d_c] = {[rows, d_c]} for w_uk "
                    f"{list(w_uk.shape)} and w_uv {list(w_uv.shape)}")
    keys_first = torch.cat([w_uk.reshape(-1, d_c), w_uv.reshape(-1, d_c)])
    if torch.equal(got, keys_first):
        raise Wrong("that is the 'all keys first' layout (every head's keys, then every head's values). The checkpoint "
                    "groups rows by head: [W^UK_0 ; W^UV_0 ; W^UK_1 ; W^UV_1 ; …]")
    if torch.equal(got, torch.cat([w_uv, w_uk], 1).reshape(rows, d_c)):
        raise Wrong("grouped by head, but each head's values come before its keys; the keys (d_h rows) come first")
    back_k, back_v = split_kv_b(got, n_h, d_h, d_v)
    for i in range(n_h):
        if not (torch.equal(back_k[i], w_uk[i]) and torch.equal(back_v[i], w_uv[i])):
            raise Wrong(f"head {i}'s block (rows {i * (d_h + d_v)}..{(i + 1) * (d_h + d_v) - 1}) should hold "
                        f"W^UK_{i} then W^UV_{i}, and does not; print your result next to w_uk[{i}] and w_uv[{i}]")
    mla = MultiHeadLatentAttention(tiny())
    cfg = mla.cfg
    w = mla.kv_b_proj.weight.detach()
    uk, uv = split_kv_b(w, cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim)
    advice = "do not use fixed sizes, read n_h, d_h, d_v and d_c from the inputs' shapes"
    try:
        fused = fuse_kv_b(uk.clone(), uv.clone())
    except Exception as exc:
        raise Wrong(f"right on the small test matrices, but on a tiny layer's own weights your function raised "
                    f"{type(exc).__name__}: {exc}; {advice}") from None
    if not (isinstance(fused, torch.Tensor) and fused.shape == w.shape and torch.equal(fused, w)):
        raise Wrong(f"right on the small test matrices, but not on a tiny layer's own kv_b_proj weights: {advice}")
    return "the per-head layout the checkpoint stores; split_kv_b reads it back exactly."


# ----------------------------------------------------------------------------------------------- 2.4
def _score_inputs(b: int = 2, T: int = 5, n_h: int = 3, d_h: int = 4, d_r: int = 6):
    g = torch.Generator().manual_seed(2)
    return (torch.randn(b, T, n_h, d_h, generator=g), torch.randn(b, T, n_h, d_r, generator=g),
            torch.randn(b, T, n_h, d_h, generator=g), torch.randn(b, T, d_r, generator=g))


@checker("2.4", hint="one einsum for the content dot product of each head, one for the RoPE dot product (k_r has "
                     "no head axis: every head uses the same one), then add the two [b, n_h, t, j] results.")
def check_split_scores(split_scores):
    """Exercise 2.4: ``split_scores(q_c, q_r, k_c, k_r) -> [b, n_h, t, j]``, the unscaled, unmasked q_{t,i}ᵀk_{j,i}
    of eq. (10) written as q^Cᵀk^C + q^Rᵀk^R, without concatenating.

    Inputs: ``q_c [b, t, n_h, d_h]``, ``q_r [b, t, n_h, d_h^R]``, ``k_c [b, j, n_h, d_h]``, ``k_r [b, j, d_h^R]``
    (one RoPE key shared by all heads). Checked against the concatenated form on random inputs.
    """
    if not callable(split_scores):
        raise Wrong(f"pass your function itself (check_split_scores(split_scores)), got {type(split_scores).__name__}")
    q_c, q_r, k_c, k_r = _score_inputs()
    b, T, n_h, _ = q_c.shape
    got = split_scores(q_c, q_r, k_c, k_r)
    if is_placeholder(got):
        raise NotImplementedError
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"split_scores must return a torch tensor, got {type(got).__name__}")
    q = torch.cat([q_c, q_r], -1)
    k = torch.cat([k_c, k_r[:, :, None].expand(-1, -1, n_h, -1)], -1)
    right = torch.einsum("btik,bjik->bitj", q, k)
    if tuple(got.shape) != tuple(right.shape):
        if tuple(got.shape) == (b, T, n_h, T):
            raise Wrong(f"shape {list(got.shape)} is [b, t, n_h, j]; put the head axis second: [b, n_h, t, j]")
        raise Wrong(f"shape {list(got.shape)}; expected [b, n_h, t, j] = {list(right.shape)}")
    got = got.detach().to(right.dtype)
    if torch.allclose(got, right, atol=1e-5):
        return "q·k = q^C·k^C + q^R·k^R: the concatenation only adds two dot products. Chapter 4 folds W^UK into " \
               "the first one."
    content = torch.einsum("btih,bjih->bitj", q_c, k_c)
    rope = torch.einsum("btir,bjr->bitj", q_r, k_r)
    if torch.allclose(got, content, atol=1e-5):
        raise Wrong("that is only the content part q^C·k^C; add the RoPE part q^R·k^R")
    if torch.allclose(got, rope, atol=1e-5):
        raise Wrong("that is only the RoPE part q^R·k^R; add the content part q^C·k^C")
    if torch.allclose(got, right.transpose(-1, -2), atol=1e-5):
        raise Wrong("t and j are swapped: the third axis is the query position t, the last the key position j")
    ratio = got / right
    if torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4) and abs(ratio.flatten()[0].item() - 1) > 1e-3:
        raise Wrong(f"the result is the right scores times {ratio.flatten()[0].item():.4g}; leave out the softmax "
                    "scale here (the exercise asks for the raw dot products)")
    if torch.isinf(got).any():
        raise Wrong("the result holds -inf: leave the causal mask out, the exercise asks for all (t, j) pairs")
    worst = (got - right).abs().max().item()
    raise Wrong(f"largest difference from q_{{t,i}}ᵀk_{{j,i}} is {worst:.3g}; check that every head uses the same "
                "k_r (it has no head axis) and that each einsum sums over the feature axis only")
