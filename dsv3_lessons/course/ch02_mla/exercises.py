"""Exercise checkers of chapter 02 (MLA: two latent spaces), on the never-raising pattern of ``..common.checking``.

Four exercises of four kinds (DESIGN.md, "the chapter recipe", item 6):

* 2.1 **predict, then run**: before the spectrum cell, guess r90 -- how many directions carry 90 % of the energy
  of the trained MHA model's stacked keys (layer 1, all heads, ``[tokens, n_h·d_h]``) -- and compare after the
  run (:func:`check_key_rank_prediction`);
* 2.2 **explain with a number**: the rows of V3's fused ``kv_b_proj.weight`` that hold head 5's W^UV
  (:func:`check_kv_b_rows_of_w_uv`);
* 2.3 **bug hunt**: :data:`BUGGY_KEYS_AND_VALUES`, a ``keys_and_values`` that splits ``kv_b_proj``'s output
  "all keys first" -- the fused-kv_b mistake of public implementations (SPEC §9) -- and passes its author's
  one-head test (:func:`one_head_test`); the learner finds and fixes the line (:func:`check_keys_and_values`);
* 2.4 **variation** (code): scores straight from the cache with W^UK folded into the query, a case the chapter
  did not write (it re-expanded k^C), graded on random inputs and on an MLA layer with another head count and
  query-latent width than the chapter's (:func:`check_latent_scores`).

Each checker prints one line: "not attempted yet" and a nudge for the placeholder ``___``, ``✗`` and a diagnosis
for a wrong answer (pointing to ``hint("2.N")`` for the next step), ``✓`` for a right one, and returns the
:class:`~dsv3_lessons.course.common.checking.Result`. Right answers are computed from the library
(:func:`~dsv3_lessons.model.config.deepseek_v3_671b`, :func:`~dsv3_lessons.model.mla.split_kv_b`,
:class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`) or measured in the learner's own run, never typed in.
The formulas are in the worked solutions (``notebooks/solutions/02_mla_latent_spaces_solutions.ipynb``), not here.
"""
from __future__ import annotations

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker

__all__ = ["check_key_rank_prediction", "check_kv_b_rows_of_w_uv", "BUGGY_KEYS_AND_VALUES", "one_head_test",
           "check_keys_and_values", "check_latent_scores"]


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
@checker("2.1", hint="write your guess BEFORE running the spectrum cell: a whole number of directions between 1 and "
                     "the matrix's width. Think of what training does to 4 heads that all read the same characters.",
         more=["At initialisation the key projections are random, so their keys spread their energy over many "
               "directions. Ask whether the 4 heads of a trained layer need independent directions, or reuse the "
               "same few.",
               "The figure's legend prints r90 for every curve, dashed at initialisation and solid after training: "
               "compare your guess with the solid layer-1 key curve and with MLA's d_c."])
def check_key_rank_prediction(prediction, trained, init, d_c: int = 32):
    """Exercise 2.1 (predict, then run): the learner's guess of r90 for layer 1's stacked MHA keys after training.

    Args:
        prediction: the guess written before the run (a whole number of directions).
        trained, init: singular values ``[k]`` (descending) of the stacked keys ``[tokens, n_h·d_h]`` after
            training and at initialisation (``k`` = n_h·d_h = 64 for the tiny config).
        d_c: MLA's latent width in the same config, the yardstick of the question (32 for ``tiny()``).
    ✓ when the guess is within a factor 2 of the measured r90 (plus 2 directions of slack); ✗ otherwise, with
    the measurement and what the gap means (above d_c, at the untrained value, too low).
    """
    from dsv3_lessons.course.ch02_mla.steps import rank_for_energy

    width = int(torch.as_tensor(trained).numel())
    guess = _whole(prediction, "your prediction (a number of directions)")
    if not 1 <= guess <= width:
        raise Wrong(f"{guess} is outside 1..{width}: the stacked keys have {width} columns, so r90 lies between "
                    f"1 and {width}")
    measured, at_init = rank_for_energy(trained, 0.9), rank_for_energy(init, 0.9)
    tail = (f"(measured: r90 = {measured} of {width} after training, {at_init} at initialisation; MLA's latent is "
            f"d_c = {d_c} wide)")
    if measured / 2 <= guess <= 2 * measured + 2:
        return (f"you guessed {guess}; {measured} directions carry 90 % of the trained keys' energy, against "
                f"{at_init} at initialisation. Training made the 4 heads' keys redundant, so a shared latent far "
                f"narrower than n_h·d_h = {width} loses little: the bet MLA makes with d_c = {d_c}.")
    if guess >= d_c:
        raise Wrong(f"you guessed {guess}, at or above d_c = {d_c}: that would make MLA's latent a bottleneck for "
                    f"this layer. The trained keys are far more redundant {tail}.")
    if abs(guess - at_init) <= max(2, at_init // 4):
        raise Wrong(f"you guessed {guess}, about what random, untrained keys need; training concentrated the keys "
                    f"into far fewer directions {tail}.")
    if guess < measured / 2:
        raise Wrong(f"you guessed {guess}, fewer than measured: the keys are low-rank but not one direction, since "
                    f"they still have to tell characters and contexts apart {tail}.")
    raise Wrong(f"you guessed {guess}: the right side of d_c, but the trained keys are even more concentrated than "
                f"that {tail}.")


# ----------------------------------------------------------------------------------------------- 2.2
@checker("2.2", hint="how many rows of the fused matrix does one head own, and in what order do its keys and values "
                     "sit inside its block? Read the sizes from v3's fields.",
         more=["Step 2 of the chapter views the weight as [n_h, d_h + d_v, d_c]: count how many rows lie before head "
               "5's block (heads count from 0).",
               "Inside a head's block the key rows (d_h of them) come first; the value rows follow. Give stop "
               "exclusive, as in a Python slice."])
def check_kv_b_rows_of_w_uv(answer, head: int = 5):
    """Exercise 2.2: rows ``(start, stop)`` (stop exclusive; a ``slice`` works too) of V3's fused
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
    raise Wrong(f"{(start, stop)} has the right length but the wrong place: count the rows of the heads before "
                f"head {head}, then the key rows of head {head} itself.")


# ----------------------------------------------------------------------------------------------- 2.3
#: Exercise 2.3's code, exactly as the notebook shows it (the test checks the notebook cell holds this text).
#: The mistake: ``kv_b_proj``'s output features come head by head, [k_0 | v_0 | k_1 | v_1 | ...], but this
#: split takes the first n_h·d_h features as "all keys" (SPEC §9, "fused kv_b split across heads").
BUGGY_KEYS_AND_VALUES = '''\
def keys_and_values(c_kv, kv_b_weight, n_h, d_h, d_v):
    """Per-head k^C [b, T, n_h, d_h] and v^C [b, T, n_h, d_v] from the cached latent c^KV [b, T, d_c]."""
    b, T, _ = c_kv.shape
    kv = c_kv @ kv_b_weight.T                                 # [b, T, n_h * (d_h + d_v)], one matmul
    k_c, v_c = kv.split([n_h * d_h, n_h * d_v], dim=-1)       # keys, then values
    return k_c.reshape(b, T, n_h, d_h), v_c.reshape(b, T, n_h, d_v)
'''


def _buggy_keys_and_values():
    namespace: dict = {}
    exec(BUGGY_KEYS_AND_VALUES, {"torch": torch}, namespace)  # noqa: S102  (our own constant text)
    return namespace["keys_and_values"]


def _kv_case(n_h: int, d_h: int = 4, d_v: int = 6, d_c: int = 5, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    c_kv = torch.randn(2, 7, d_c, generator=g)
    w = torch.randn(n_h * (d_h + d_v), d_c, generator=g)
    return c_kv, w, (n_h, d_h, d_v)


def _kv_right(c_kv, w, n_h, d_h, d_v):
    from dsv3_lessons.model.mla import split_kv_b

    w_uk, w_uv = split_kv_b(w, n_h, d_h, d_v)
    return torch.einsum("ihc,btc->btih", w_uk, c_kv), torch.einsum("ivc,btc->btiv", w_uv, c_kv)


def one_head_test(fn) -> str:
    """The author's test of exercise 2.3's function: one head, against the library. Returns (and the notebook
    prints) a sentence; raises AssertionError when ``fn`` fails it (the buggy function passes)."""
    c_kv, w, (n_h, d_h, d_v) = _kv_case(n_h=1)
    k_c, v_c = fn(c_kv, w, n_h, d_h, d_v)
    k_ref, v_ref = _kv_right(c_kv, w, n_h, d_h, d_v)
    assert torch.allclose(k_c, k_ref, atol=1e-6) and torch.allclose(v_c, v_ref, atol=1e-6)
    return "the author's test passes: with one head, keys_and_values equals the library (max |difference| <= 1e-6)"


@checker("2.3", hint="the function passes its author's one-head test. What is different about the fused output "
                     "when there are several heads? Fix one line, then pass keys_and_values to the checker.",
         more=["Compare the layout of kv_b_proj's output features with the layout of its weight rows in step 2 of "
               "the chapter: are the features of one head next to each other?",
               "With one head, 'all keys first' and 'keys first within each head' are the same split: that is why "
               "the author's test could not see the bug. Split per head instead."])
def check_keys_and_values(fn):
    """Exercise 2.3 (bug hunt): the learner's fixed ``keys_and_values(c_kv, kv_b_weight, n_h, d_h, d_v)``.

    Run on random c^KV ``[2, 7, d_c]`` and fused weights with n_h = 3 and 4 heads (d_h = 4 ≠ d_v = 6, so a mixed-up
    layout cannot pass by luck) against :func:`dsv3_lessons.model.mla.split_kv_b`, then on a tiny MLA layer's own
    ``kv_b_proj`` against the layer. Names what is still wrong: the keys-first split (the unfixed code), values
    before keys within a head, keys right but values wrong, wrong shapes, a transposed weight.
    """
    if not callable(fn):
        raise Wrong(f"pass your fixed function itself (check_keys_and_values(keys_and_values)), got "
                    f"{type(fn).__name__}")
    for n_h in (3, 4):
        c_kv, w, (n_h, d_h, d_v) = _kv_case(n_h)
        out = call_learner(fn, c_kv.clone(), w.clone(), n_h, d_h, d_v)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise Wrong(f"keys_and_values must return two tensors (k_c, v_c), got {type(out).__name__}")
        k_c, v_c = out
        k_ref, v_ref = _kv_right(c_kv, w, n_h, d_h, d_v)
        where = f"with n_h = {n_h} heads (d_h = {d_h}, d_v = {d_v}, d_c = {w.shape[1]})"
        if tuple(k_c.shape) != tuple(k_ref.shape) or tuple(v_c.shape) != tuple(v_ref.shape):
            raise Wrong(f"{where}: shapes {list(k_c.shape)} and {list(v_c.shape)}; expected k_c {list(k_ref.shape)} "
                        f"[b, T, n_h, d_h] and v_c {list(v_ref.shape)} [b, T, n_h, d_v]")
        k_ok, v_ok = torch.allclose(k_c, k_ref, atol=1e-5), torch.allclose(v_c, v_ref, atol=1e-5)
        if k_ok and v_ok:
            continue
        kv = c_kv @ w.T
        keys_first = kv.split([n_h * d_h, n_h * d_v], dim=-1)
        if torch.allclose(k_c, keys_first[0].reshape(k_ref.shape), atol=1e-5):
            right_heads = [i for i in range(n_h) if torch.allclose(k_c[:, :, i], k_ref[:, :, i], atol=1e-5)]
            raise Wrong(f"{where}: still the 'all keys first' split. Only head(s) {right_heads} get their own keys; "
                        f"head 1's 'keys' start with head 0's value features. kv_b_proj's output is grouped by head: "
                        f"[k_0 | v_0 | k_1 | v_1 | ...]")
        per_head = kv.view(*kv.shape[:2], n_h, d_h + d_v)
        if torch.allclose(k_c, per_head[..., d_v:], atol=1e-5):
            raise Wrong(f"{where}: split per head, but each head's values were taken before its keys; inside a "
                        f"head's block the d_h key features come first")
        if k_ok:
            raise Wrong(f"{where}: the keys are right, the values are not: they are the last d_v features of each "
                        f"head's block")
        if v_ok:
            raise Wrong(f"{where}: the values are right, the keys are not: they are the first d_h features of each "
                        f"head's block")
        worst = max((k_c - k_ref).abs().max().item(), (v_c - v_ref).abs().max().item())
        raise Wrong(f"{where}: k_c and v_c differ from the library by up to {worst:.3g}; view the output as "
                    f"[b, T, n_h, d_h + d_v] before splitting it")
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.mla import MultiHeadLatentAttention

    torch.manual_seed(0)
    layer = MultiHeadLatentAttention(tiny())
    c = layer.cfg
    c_kv = torch.randn(1, 5, c.kv_lora_rank)
    with torch.no_grad():
        k_ref, v_ref = layer.kv_b_proj(c_kv).view(1, 5, c.num_attention_heads, -1).split(
            [c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        k_c, v_c = call_learner(fn, c_kv, layer.kv_b_proj.weight.detach(), c.num_attention_heads,
                                c.qk_nope_head_dim, c.v_head_dim)
    if not (k_c.shape == k_ref.shape and v_c.shape == v_ref.shape and torch.allclose(k_c, k_ref, atol=1e-5)
            and torch.allclose(v_c, v_ref, atol=1e-5)):
        raise Wrong("right on the random test weights, but not on a tiny layer's own kv_b_proj: read n_h, d_h and d_v "
                    "from the arguments, not from fixed numbers")
    return ("fixed: kv_b_proj's output features come head by head, [k_0 | v_0 | k_1 | v_1 | ...], so the split is "
            "per head. With one head both splits coincide, which is why the author's test passed.")


# ----------------------------------------------------------------------------------------------- 2.4
def _score_inputs(b: int = 2, T: int = 5, n_h: int = 3, d_h: int = 4, d_r: int = 6, d_c: int = 7):
    g = torch.Generator().manual_seed(2)
    return (torch.randn(b, T, n_h, d_h, generator=g), torch.randn(b, T, n_h, d_r, generator=g),
            torch.randn(b, T, d_c, generator=g), torch.randn(b, T, d_r, generator=g),
            torch.randn(n_h, d_h, d_c, generator=g))


def _layer_inputs(n_h: int = 8, q_lora_rank: int = 24, T: int = 6):
    """A tiny-sized MLA layer with another head count and query-latent width than the chapter's, its pieces at
    positions 2..T+1 (RoPE is not the identity), and its raw logits q·k from the concatenated q and k."""
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.mla import MultiHeadLatentAttention, split_kv_b

    torch.manual_seed(1)
    layer = MultiHeadLatentAttention(tiny(num_attention_heads=n_h, num_key_value_heads=n_h,
                                          q_lora_rank=q_lora_rank))
    c = layer.cfg
    h = torch.randn(1, T, c.hidden_size)
    pos = torch.arange(2, 2 + T)
    with torch.no_grad():
        q_c, q_r = layer.query(h, pos)
        c_kv, k_r = layer.latent(h, pos)
        w_uk, _ = split_kv_b(layer.kv_b_proj.weight.detach(), n_h, c.qk_nope_head_dim, c.v_head_dim)
        k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
        q = torch.cat([q_c, q_r], -1)
        k = torch.cat([k_c, k_r[:, :, None].expand(-1, -1, n_h, -1)], -1)
        logits = torch.einsum("btik,bjik->bitj", q, k)
    return (q_c, q_r, c_kv, k_r, w_uk.clone()), logits, k_c


@checker("2.4", hint="q^C_{t,i}·(W^UK_i c^KV_j) can be regrouped so that W^UK_i moves to the query side: which of "
                     "its two axes does q^C contract with, and how wide is the result?",
         more=["Write the content score of one head as a double sum over the d_h channels and the d_c latent "
               "numbers, and do the sum over d_h first: that gives q̃, once per query and head.",
               "The RoPE part does not involve W^UK at all; k_r has no head axis, every head uses the same one.",
               "Shapes to aim for: q̃ [b, t, n_h, d_c], scores [b, n_h, t, j]. No tensor of yours should have both "
               "a key axis j and a d_h axis."])
def check_latent_scores(fn):
    """Exercise 2.4 (variation): ``fn(q_c, q_r, c_kv, k_r, w_uk) -> (q_tilde, scores)``.

    Inputs: ``q_c [b, t, n_h, d_h]``, ``q_r [b, t, n_h, d_h^R]`` (rotated), the cache ``c_kv [b, j, d_c]`` and
    ``k_r [b, j, d_h^R]`` (rotated, shared by the heads), ``w_uk [n_h, d_h, d_c]``. Returns the absorbed query
    q̃_{t,i} = W^UK_iᵀ q^C_{t,i} ``[b, t, n_h, d_c]`` and the raw scores q_{t,i}ᵀ k_{j,i} ``[b, n_h, t, j]``
    (unscaled, unmasked) computed from q̃ and the cache. Graded on random inputs (n_h = 3, d_h = 4, d_c = 7,
    d_h^R = 6), then on an MLA layer with 8 heads and d_c' = 24 at positions 2..7 against the concatenated form.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (check_latent_scores(latent_scores)), got {type(fn).__name__}")
    cases = [("random inputs (n_h = 3, d_h = 4, d_c = 7)", _score_inputs(), None, None)]
    layer_inputs, layer_logits, layer_k_c = _layer_inputs()
    cases.append(("an MLA layer with 8 heads and d_c' = 24", layer_inputs, layer_logits, layer_k_c))
    for where, (q_c, q_r, c_kv, k_r, w_uk), want, k_c in cases:
        b, T, n_h, d_h = q_c.shape
        d_c = c_kv.shape[-1]
        if k_c is None:
            k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
        content = torch.einsum("btih,bjih->bitj", q_c, k_c)
        rope = torch.einsum("btir,bjr->bitj", q_r, k_r)
        if want is None:
            want = content + rope
        out = call_learner(fn, q_c.clone(), q_r.clone(), c_kv.clone(), k_r.clone(), w_uk.clone())
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Wrong(f"return a pair (q_tilde, scores), got {type(out).__name__}")
        q_t, scores = out
        if not (isinstance(q_t, torch.Tensor) and isinstance(scores, torch.Tensor)):
            raise Wrong("q_tilde and scores must both be torch tensors")
        q_t, scores = q_t.detach().to(want.dtype), scores.detach().to(want.dtype)
        right_q = torch.einsum("btih,ihc->btic", q_c, w_uk)
        if tuple(q_t.shape) != tuple(right_q.shape):
            if tuple(q_t.shape) == tuple(q_c.shape):
                raise Wrong(f"for {where}: q_tilde has q^C's shape {list(q_t.shape)}. The absorbed query lives in the "
                            f"latent space: d_c = {d_c} numbers per head, [b, t, n_h, d_c]")
            raise Wrong(f"for {where}: q_tilde has shape {list(q_t.shape)}; expected [b, t, n_h, d_c] = "
                        f"{list(right_q.shape)}")
        tol = 1e-4 * max(1.0, want.abs().max().item())
        if not torch.allclose(q_t, right_q, atol=tol):
            raise Wrong(f"for {where}: q_tilde·c^KV_j must equal q^C·k^C = q^C·(W^UK c^KV_j), and it does not "
                        f"(largest difference {(torch.einsum('btic,bjc->bitj', q_t, c_kv) - content).abs().max():.3g}); "
                        f"check which axis of w_uk you contract with q_c")
        if tuple(scores.shape) != tuple(want.shape):
            if tuple(scores.shape) == (b, T, n_h, c_kv.shape[1]):
                raise Wrong(f"for {where}: scores have shape {list(scores.shape)}, i.e. [b, t, n_h, j]; put the "
                            f"head axis second: [b, n_h, t, j]")
            raise Wrong(f"for {where}: scores have shape {list(scores.shape)}; expected [b, n_h, t, j] = "
                        f"{list(want.shape)}")
        if torch.allclose(scores, want, atol=tol):
            continue
        if torch.allclose(scores, content, atol=tol):
            raise Wrong(f"for {where}: that is only the content part q̃·c^KV; add the RoPE part q^R·k^R")
        if torch.allclose(scores, rope, atol=tol):
            raise Wrong(f"for {where}: that is only the RoPE part q^R·k^R; add the content part q̃·c^KV")
        if torch.allclose(scores, want.transpose(-1, -2), atol=tol):
            raise Wrong(f"for {where}: t and j are swapped: the third axis is the query position t, the last the "
                        f"key position j")
        ratio = scores / want
        first = ratio.flatten()[0].item()
        if torch.allclose(ratio, torch.full_like(ratio, first), rtol=1e-3) and abs(first - 1) > 1e-3:
            raise Wrong(f"for {where}: your scores are the right ones times {first:.4g}; leave the softmax scale out "
                        f"here (the exercise asks for the raw dot products)")
        if torch.isinf(scores).any():
            raise Wrong(f"for {where}: the scores hold -inf; leave the causal mask out, the exercise asks for all "
                        f"(t, j) pairs")
        raise Wrong(f"for {where}: scores differ from q_{{t,i}}ᵀk_{{j,i}} by up to "
                    f"{(scores - want).abs().max().item():.3g}; every head uses the same k_r (it has no head axis)")
    return ("q̃ = W^UK_iᵀ q^C_i is d_c numbers per head, dotted with the cache directly: no key of width d_h is ever "
            "formed, for 8 heads as for 3. Chapter 3 shows why RoPE must stay out of this path, chapter 4 what the "
            "fold costs and saves.")
