"""Exercise checkers of chapter 02 (MLA: two latent spaces), on the never-raising pattern of ``..common.checking``.

Four exercises of four kinds (DESIGN.md, "the chapter recipe", item 6), each needing an idea of the chapter rather
than a copied cell:

* 2.1 **predict, then run**: before the spectrum cell, guess r90 -- how many directions carry 90 % of the energy
  of the trained MHA model's stacked keys (layer 1, all heads, ``[tokens, n_h·d_h]``). The intuitive guess
  ("well below d_c, a dozen or so") is far too high: training leaves about two. Graded fairly: a guess is right
  when it sits nearer (on a log scale) to the trained measurement than to the untrained one, and a guess that is
  below d_c but near the untrained value is told what it got right (:func:`check_key_rank_prediction`). The
  experiment cell shows its result only once the prediction is written (``revealed``).
* 2.2 **explain with a number**, two steps: a loader that reads ``kv_b_proj`` "all keys first" (the chapter's
  pitfall) hands head 36 some rows as its W^UK and head 5 some rows as its W^UV; whose matrices are those rows
  really (:func:`check_keys_first_rows`)? Step one finds the rows the wrong reading takes, step two places them
  in the true per-head layout.
* 2.3 **bug hunt**: :data:`BUGGY_MLA_FORWARD`, a whole MLA layer written with PyTorch's fused attention, as ports
  do. It calls ``scaled_dot_product_attention`` without ``scale=``, so the softmax scale is the default
  ``1/sqrt(d_h + d_h^R)`` and YaRN's mscale² is lost (SPEC §9, "missing mscale²"). Its author tested it on a
  config without YaRN, where that default is right (:func:`plain_config_test`); the checker's ✗ on the unfixed
  code states only the symptom (:func:`check_mla_forward`).
* 2.4 **variation** (code): eqs. (10)–(11) for a *chunk* of T new tokens appended to a cache that already holds
  P tokens (chunked prefill; T = 1 is a decoding step). The chapter's square causal mask is wrong there: query i
  of the chunk sits at position P + i (:func:`check_chunk_attention`), graded on random sizes and splits, P = 0
  and T = 1 included, and on a library layer with another head count fed through its cache.

Each checker prints one line: "not attempted yet" and a nudge for the placeholder ``___``, ``✗`` and a diagnosis
for a wrong answer (pointing to ``hint("2.N")`` for the next step), ``✓`` for a right one, and returns the
:class:`~dsv3_lessons.course.common.checking.Result`. Right answers are computed from the library
(:func:`~dsv3_lessons.model.config.deepseek_v3_671b`, :func:`~dsv3_lessons.model.mla.split_kv_b`,
:class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`) or measured in the learner's own run, never typed in.
The formulas are in the worked solutions (``notebooks/solutions/02_mla_latent_spaces_solutions.ipynb``), not here.
"""
from __future__ import annotations

import math
import textwrap

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker

__all__ = ["check_key_rank_prediction", "check_keys_first_rows", "BUGGY_MLA_FORWARD", "plain_config_test",
           "check_mla_forward", "check_chunk_attention", "SPECTRA_READING", "MEAN_KEY_READING"]


def _v3():
    from dsv3_lessons.model.config import deepseek_v3_671b

    return deepseek_v3_671b()


def _whole(x, what: str) -> int:
    value = as_number(x, what)
    if value != int(value):
        raise Wrong(f"{what} must be a whole number, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------- 2.1
@checker("2.1", hint="write your guess BEFORE running the spectrum cell: a whole number of directions between 1 and "
                     "the matrix's width. Think of what training does to 4 heads that all read the same characters.",
         more=["Read the left panel's legend for the solid layer-1 curve: r99 beside r90. Is the energy shared by "
               "a few directions of similar size, or does one direction carry most of it?",
               "The cell after this checker splits layer 1's keys into their average over all tokens (one fixed "
               "key per head) and the rest. A key that is the same for every token: what can it add to the score "
               "of query t against key j, once RoPE has rotated it by j?",
               "Count the directions of the rest (the keys minus their average) in that cell's output: the keys' "
               "content needs only a few more, still far below d_c."])
def check_key_rank_prediction(prediction, trained, init, d_c: int = 32):
    """Exercise 2.1 (predict, then run): the learner's guess of r90 for layer 1's stacked MHA keys after training.

    Args:
        prediction: the guess written before the run (a whole number of directions).
        trained, init: singular values ``[k]`` (descending) of the stacked keys ``[tokens, n_h·d_h]`` after
            training and at initialisation (``k`` = n_h·d_h = 64 for the tiny config).
        d_c: MLA's latent width in the same config, the yardstick of the question (32 for ``tiny()``).
    ✓ when the guess is nearer, on a log scale, to the measured r90 than to the untrained r90 (it predicted that
    training concentrates the keys) and within a factor 3 of the measurement; ✗ otherwise, with the measurement,
    what the guess got right (below d_c) and what the gap means (near the untrained value, at or above d_c, too
    low).
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
    to_trained, to_init = abs(math.log(guess / measured)), abs(math.log(guess / at_init))
    if to_trained < to_init and to_trained <= math.log(3):
        return (f"you guessed {guess}; {measured} directions carry 90 % of the trained keys' energy, against "
                f"{at_init} at initialisation. Training made the 4 heads' keys redundant, so a shared latent far "
                f"narrower than n_h·d_h = {width} loses little: the bet MLA makes with d_c = {d_c}. The chapter's "
                f"cell after this checker shows what the largest direction is.")
    if guess >= d_c:
        raise Wrong(f"you guessed {guess}, at or above d_c = {d_c}: a latent of d_c numbers would then be a "
                    f"bottleneck for these keys. Training did the opposite and concentrated them {tail}.")
    if guess < measured:
        raise Wrong(f"you guessed {guess}, fewer than measured: the trained keys are concentrated, but they still "
                    f"need {measured} directions for 90 % of their energy {tail}.")
    if guess > at_init:
        raise Wrong(f"you guessed {guess}: below d_c = {d_c}, right, but more directions than even the random, "
                    f"untrained keys need; training concentrated them instead {tail}.")
    raise Wrong(f"you guessed {guess}. Half right: it is below d_c = {d_c}, so you expected the latent to be wide "
                f"enough, and it is. But {guess} is nearer to what random, untrained keys need ({at_init}) than to "
                f"what training left ({measured}): training concentrated the keys far more than you expected "
                f"{tail}. Why so few: the chapter's cell after this checker shows where the energy went.")


def _paragraphs(text: str) -> str:
    """``text``'s paragraphs (separated by blank lines) each joined and wrapped at 100 characters."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 100, break_long_words=False, break_on_hyphens=False)
                       for p in text.strip().split("\n\n"))


#: What the spectrum figure of exercise 2.1 shows, printed under it once the prediction is written: the chapter's
#: prose around the exercise says what to look at, never what is there (the spectrum cell asserts each claim).
SPECTRA_READING = _paragraphs("""
What the figure shows. After training, the keys of all heads sit close to a subspace of a few dimensions and
the values to a somewhat larger one, while at initialisation the energy is spread over many more directions:
compare the dashed and solid r90 in each legend.

The right panel is the one MLA's design answers: keys and values together need fewer than d_c = 32 directions
for 90 % of their energy in both layers (the cell asserts it), so one shared latent for both is not a tighter
squeeze than two separate ones would be. The heads did not coordinate to make this happen. Training made their
keys and values redundant, and MLA turns that redundancy into a design: one shared latent, read by every head.
""")

#: Why layer 1's trained keys need so few directions, printed under the split into average key and rest once
#: exercise 2.1 has a prediction (the cell asserts the claims).
MEAN_KEY_READING = _paragraphs("""
Why so few. In the left panel one direction of the trained layer-1 keys is far larger than all the others: this
average key, the same for every token. Most of layer 1's keys' energy is that fixed, positional part (the
markdown below shows why a fixed key still carries position), and the content that remains needs only a few
directions more. Both are small next to d_c = 32.
""")


# ----------------------------------------------------------------------------------------------- 2.2
#: Exercise 2.2's question: the matrices a keys-first loader hands these heads, and the chapter's answer format.
KEYS_FIRST_QUESTION = {"keys of head 36": ("UK", 36), "values of head 5": ("UV", 5)}


def _matrix_name(value, what: str) -> str:
    if not isinstance(value, str):
        raise Wrong(f"{what} must be the string \"W^UK\" or \"W^UV\", got {value!r}")
    name = value.strip().upper().replace("W", "").replace("^", "").replace("_", "").replace(" ", "")
    if name not in ("UK", "UV"):
        raise Wrong(f"{what} must be \"W^UK\" or \"W^UV\", got {value!r}")
    return name


def divmod_head(row: int, per_head: int, d_h: int) -> tuple[int, str]:
    """(head, "UK"/"UV") of ``row`` in the per-head layout with blocks of ``per_head`` rows, ``d_h`` key rows first."""
    head, offset = divmod(row, per_head)
    return head, "UK" if offset < d_h else "UV"


def keys_first_truth(cfg=None) -> dict[str, tuple[int, str]]:
    """For each entry of :data:`KEYS_FIRST_QUESTION`: (true head, "UK"/"UV") of the rows that an "all keys first"
    reading of ``kv_b_proj.weight`` hands that head. Computed from the config (V3 by default): the wrong reading
    gives head i the rows ``[i·d_h, (i+1)·d_h)`` as W^UK_i and ``[n_h·d_h + i·d_v, ...)`` as W^UV_i; in the true
    layout head h owns rows ``[h·(d_h+d_v), (h+1)·(d_h+d_v))``, its d_h key rows first."""
    c = cfg or _v3()
    n_h, d_h, d_v = c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim
    per_head = d_h + d_v
    out = {}
    for label, (part, head) in KEYS_FIRST_QUESTION.items():
        first_row = head * d_h if part == "UK" else n_h * d_h + head * d_v
        out[label] = divmod_head(first_row, per_head, d_h)
    return out


@checker("2.2", hint="two steps: first the rows the keys-first reading takes for that head, then where those rows sit "
                     "in the real layout, which is grouped by head. Read every size from v3's fields.",
         more=["Step 1: the keys-first reading takes the first n_h·d_h rows as all heads' keys, d_h rows per head, "
               "and the rest as the values, d_v rows per head. Which row does head 36's 'W^UK' start at? Head 5's "
               "'W^UV'?",
               "Step 2: in the real layout each head owns a block of d_h + d_v rows, its key rows first. Divide the "
               "row number by the block size: the quotient is the head (counted from 0), the remainder says key or "
               "value part.",
               "Check with the chapter's tiny example (cell 'keys-first reading'): there head 1's 'keys' start with "
               "the first row of head 0's W^UV. Your rule should give that too."])
def check_keys_first_rows(answer):
    """Exercise 2.2 (explain with a number, two steps): ``answer`` maps each key of :data:`KEYS_FIRST_QUESTION`
    (``"keys of head 36"``, ``"values of head 5"``) to ``(head, "W^UK" or "W^UV")``: the head (counted from 0)
    and matrix that the rows a keys-first loader hands it really belong to, in V3's ``kv_b_proj.weight``.

    Truth from :func:`keys_first_truth` on :func:`~dsv3_lessons.model.config.deepseek_v3_671b` (per head
    [W^UK_i (d_h rows) ; W^UV_i (d_v rows)], V3 report §2.1.1; the official inference code views ``wkv_b`` as
    ``[n_heads, qk_nope_head_dim + v_head_dim, kv_lora_rank]``). Named mistakes: the loader's own belief (head
    36's W^UK), a head counted from 1, the rows divided by d_h instead of the block size, the key and value part
    of a block swapped, the values' offset n_h·d_h forgotten.
    """
    c = _v3()
    n_h, d_h, d_v = c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim
    per_head = d_h + d_v
    if not isinstance(answer, dict):
        raise Wrong(f"answer must be a dict {{question: (head, \"W^UK\" or \"W^UV\")}}, got {type(answer).__name__}")
    if set(answer) != set(KEYS_FIRST_QUESTION):
        raise Wrong(f"answer must have exactly the keys {tuple(KEYS_FIRST_QUESTION)}, got {tuple(answer)}")
    truth = keys_first_truth(c)
    problems = []
    for label, (part, head) in KEYS_FIRST_QUESTION.items():
        pair = answer[label]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise Wrong(f"answer[{label!r}] must be a pair (head, \"W^UK\" or \"W^UV\"), got {pair!r}")
        got = (_whole(pair[0], f"the head of answer[{label!r}]"), _matrix_name(pair[1], f"answer[{label!r}][1]"))
        right = truth[label]
        if got == right:
            continue
        first_row = head * d_h if part == "UK" else n_h * d_h + head * d_v
        shown = f"{label}: ({got[0]}, \"W^{got[1]}\")"
        if got == (head, part):
            problems.append(f"{shown} is what the loader believes it reads; the question is whose rows it really "
                            f"takes. Find the first row it reads, then place that row in the per-head layout.")
        elif got[0] in (right[0] + 1, right[0] - 1) and got[1] == right[1]:
            problems.append(f"{shown} is one head off: heads are counted from 0 here (head h owns rows "
                            f"h·{per_head} to h·{per_head} + {per_head - 1}).")
        elif got[0] == right[0]:
            problems.append(f"{shown}: the right head, the wrong part. Inside a head's block of {per_head} rows the "
                            f"first {d_h} are keys, the next {d_v} values.")
        elif got[0] in (first_row // d_h, first_row // d_v):
            problems.append(f"{shown}: you divided the row number by {d_h}, one matrix's height. In the real layout "
                            f"a head's block is d_h + d_v = {per_head} rows.")
        elif part == "UV" and got == divmod_head(head * d_v, per_head, d_h):
            problems.append(f"{shown}: the keys-first reading puts all n_h·d_h = {n_h * d_h:,} key rows first; "
                            f"its values start after them, not at row 0.")
        else:
            problems.append(f"{shown} is off. The keys-first reading starts that matrix at one row; find that row, "
                            f"then the head whose block of {per_head} rows contains it.")
    if problems:
        raise Wrong(f"{len(problems)} of {len(KEYS_FIRST_QUESTION)} answers are off.\n  " + "\n  ".join(problems))
    (h1, p1), (h2, p2) = truth["keys of head 36"], truth["values of head 5"]
    return (f"the 'keys' it gives head 36 are head {h1}'s W^{p1}, and the 'values' it gives head 5 are head {h2}'s "
            f"W^{p2}. Every shape fits, nothing raises, and only head 0 gets its own keys: that is why this "
            f"misreading survives in public code.")


# ----------------------------------------------------------------------------------------------- 2.3
#: Exercise 2.3's code, exactly as the notebook shows it (the test checks the notebook cell holds this text).
#: The mistake: ``F.scaled_dot_product_attention`` without ``scale=`` uses 1/sqrt(E) of the q/k width, d_h + d_h^R:
#: right without YaRN, but a YaRN config multiplies every logit by mscale² as well (SPEC §3 and §9, "missing
#: mscale²"). The layer's own ``query``/``latent`` are used, so the rotation itself is right.
BUGGY_MLA_FORWARD = '''\
def mla_forward(layer, h):
    """The MLA layer's output for a whole sequence h [b, T, d] at positions 0..T-1,
    with PyTorch's fused attention."""
    b, T, _ = h.shape
    pos = torch.arange(T)
    # [b, T, n_h, d_h], [b, T, n_h, d_h^R] (rotated)
    q_c, q_r = layer.query(h, pos)
    c_kv, k_r = layer.latent(h, pos)                      # [b, T, d_c], [b, T, d_h^R] (rotated)
    k_c, v = layer.kv_b_proj(c_kv).unflatten(-1, (layer.n_heads, -1)).split(
        [layer.qk_nope_head_dim, layer.v_head_dim], dim=-1)
    q = torch.cat([q_c, q_r], dim=-1).transpose(1, 2)     # [b, n_h, T, d_h + d_h^R]
    k = torch.cat([k_c, k_r.unsqueeze(2).expand_as(q_r)], dim=-1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True)   # [b, n_h, T, d_v]
    return layer.o_proj(o.transpose(1, 2).flatten(2))
'''


def _exec_mla_forward(source: str = BUGGY_MLA_FORWARD):
    import torch.nn.functional as F

    namespace: dict = {"torch": torch, "F": F}
    exec(source, namespace)  # noqa: S102  (our own constant text)
    return namespace["mla_forward"]


def _layer(**overrides):
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.mla import MultiHeadLatentAttention

    torch.manual_seed(4)
    layer = MultiHeadLatentAttention(tiny(**overrides)).eval()
    with torch.no_grad():                          # trained-looking norm gains, so a forgotten gain would show
        layer.q_a_layernorm.weight.uniform_(0.5, 1.5)
        layer.kv_a_layernorm.weight.uniform_(0.5, 1.5)
    return layer


def plain_config_test(fn) -> str:
    """The author's test of exercise 2.3's function: the tiny config WITHOUT YaRN (``rope_scaling=None``), a batch
    of 2 sequences of 7 tokens, against the library layer. Returns (and the notebook prints) a sentence; raises
    AssertionError when ``fn`` fails it (the buggy function passes: without YaRN the default scale is right)."""
    layer = _layer(rope_scaling=None)
    h = torch.randn(2, 7, layer.cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(fn(layer, h), layer(h), atol=1e-5)
    return ("the author's test passes: on the tiny config without YaRN, mla_forward equals the library layer "
            "(|difference| <= 1e-5)")


def _mla_forward_cases():
    """(description, layer, h): the tiny config (YaRN s = 4) and a wider-headed one with s = 40 (V3's factor)."""
    from dsv3_lessons.model.config import tiny

    rs = dict(tiny().rope_scaling, factor=40.0)
    cases = [("the tiny config (YaRN factor 4)", _layer()),
             ("8 heads, YaRN factor 40", _layer(num_attention_heads=8, num_key_value_heads=8, rope_scaling=rs))]
    g = torch.Generator().manual_seed(2)
    return [(where, layer, torch.randn(2, 7, layer.cfg.hidden_size, generator=g)) for where, layer in cases]


def _forward_with_scale(layer, h, scale: float, causal: bool = True) -> torch.Tensor:
    """The layer's output with every logit multiplied by ``scale`` (an oracle for the named wrong scales)."""
    T = h.shape[1]
    pos = torch.arange(T)
    q_c, q_r = layer.query(h, pos)
    c_kv, k_r = layer.latent(h, pos)
    n_h = layer.n_heads
    kv = layer.kv_b_proj(c_kv).view(*c_kv.shape[:2], n_h, -1)
    k_c, v = kv.split([layer.qk_nope_head_dim, layer.v_head_dim], dim=-1)
    logits = (torch.einsum("bthd,bjhd->bhtj", q_c, k_c) + torch.einsum("bthr,bjr->bhtj", q_r, k_r)) * scale
    if causal:
        logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    o = torch.einsum("bhtj,bjhv->bthv", logits.softmax(-1), v)
    return layer.o_proj(o.flatten(2))


@checker("2.3", hint="the function passes its author's test, on a config without YaRN. The chapter's tiny config "
                     "has YaRN: run the function on it and compare with the layer position by position. Fix one "
                     "line, then pass mla_forward to the checker.",
         more=["Which position agrees with the library, and which do not? At position 0 the query sees one key: "
               "what in attention can be wrong and still give the right output there?",
               "The rotations come from the layer's own query() and latent(), so they are right. List what else in "
               "attention depends on the config's rope_scaling (the chapter's step 5).",
               "Which number multiplies the logits inside F.scaled_dot_product_attention when no scale= is passed? "
               "Compare it with the scale the chapter printed for the tiny config."])
def check_mla_forward(fn):
    """Exercise 2.3 (bug hunt): the learner's fixed ``mla_forward(layer, h [b, T, d]) -> [b, T, d]``.

    Run on two YaRN configs (:func:`_mla_forward_cases`) against the library layer. The unfixed code (the default
    scale 1/sqrt(d_h + d_h^R)) gets the symptom only: where the outputs agree and by how much they differ.
    Wrong fixes are named: mscale once instead of squared, the scale from the cached width d_c + d_h^R, from the
    content width d_h alone, a scale applied on top of the default one (twice), the right scale passed AND q (or
    k, or the scores) multiplied by mscale², mscale or the softmax scale once more (twice), the causal mask
    dropped.
    """
    from dsv3_lessons.model.rope import softmax_scale, yarn_mscale

    if not callable(fn):
        raise Wrong(f"pass your fixed function itself (check_mla_forward(mla_forward)), got {type(fn).__name__}")
    for where, layer, h in _mla_forward_cases():
        c = layer.cfg
        with torch.no_grad():
            out = call_learner(fn, layer, h.clone())
            want = layer(h)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(want.shape):
            raise Wrong(f"for {where}: mla_forward must return the layer's output [b, T, d] = {list(want.shape)}, "
                        f"got {list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        out = out.detach().float()
        if torch.allclose(out, want, atol=1e-5):
            continue
        width = c.qk_nope_head_dim + c.qk_rope_head_dim
        mscale = yarn_mscale(float(c.rope_scaling["factor"]), float(c.rope_scaling["mscale_all_dim"]))
        right = softmax_scale(width, c.rope_scaling)
        with torch.no_grad():
            variants = [
                (width ** -0.5, None),                                    # the unfixed code: symptom only
                (width ** -0.5 * mscale, "the logits carry mscale once; the softmax scale multiplies them by "
                                         "mscale squared"),
                ((c.kv_lora_rank + c.qk_rope_head_dim) ** -0.5 * mscale ** 2,
                 f"that is a scale from the cached width d_c + d_h^R = {c.kv_lora_rank + c.qk_rope_head_dim}; the "
                 f"dot product q·k runs over d_h + d_h^R = {width} channels"),
                (c.qk_nope_head_dim ** -0.5 * mscale ** 2,
                 f"that is a scale from the content width d_h = {c.qk_nope_head_dim} alone; q and k are "
                 f"d_h + d_h^R = {width} wide"),
                (right * width ** -0.5, "the logits are scaled twice: once by your factor and once more by the "
                                        "fused kernel's own default"),
                (right * mscale ** 2, "the YaRN temperature is applied twice: the scale you pass already holds "
                                      "mscale², and your extra factor on q, k or the scores multiplies the "
                                      "logits by mscale² once more"),
                (right * mscale, "the YaRN temperature is applied on top of a scale that already holds it: the "
                                 "scale you pass includes mscale², and your extra factor mscale on q, k or the "
                                 "scores multiplies the logits once more"),
                (right * right, "the softmax scale is applied twice: once through scale= and once more on q, k "
                                "or the scores"),
            ]
            for scale, why in variants:
                if torch.allclose(out, _forward_with_scale(layer, h, scale), atol=1e-5):
                    if why is None:
                        per_pos = (out - want).abs().amax(dim=(0, 2))
                        first = int((per_pos > 1e-5).nonzero()[0])
                        raise Wrong(f"for {where}: your output matches the library's at position"
                                    f"{'s 0..' + str(first - 1) if first > 1 else ' 0'} and differs from position "
                                    f"{first} on, by up to {per_pos.max().item():.3g} (the output's largest entry "
                                    f"is {want.abs().max().item():.3g}).")
                    raise Wrong(f"for {where}: {why}.")
            if torch.allclose(out, _forward_with_scale(layer, h, right, causal=False), atol=1e-5):
                raise Wrong(f"for {where}: the scale is right now, but the causal mask is gone: query t must see only "
                            f"keys j <= t (is_causal=True)")
        per_pos = (out - want).abs().amax(dim=(0, 2))
        raise Wrong(f"for {where}: your output differs from the library's by up to {per_pos.max().item():.3g} "
                    f"(per position: {', '.join(f'{x:.2g}' for x in per_pos.tolist())}). Fix only the line the "
                    f"bug is in; compare with the layer position by position.")
    return ("fixed: F.scaled_dot_product_attention uses 1/sqrt(d_h + d_h^R) unless told otherwise, which is the "
            "whole scale only without YaRN. With YaRN every logit also carries mscale², so pass "
            "scale=layer.softmax_scale. Position 0 could not show it: one key gets softmax weight 1 whatever its "
            "logit.")


# ----------------------------------------------------------------------------------------------- 2.4
def _chunk_inputs(b: int, P: int, T: int, n_h: int, d_h: int, d_r: int, d_c: int, d_v: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    S = P + T
    return (torch.randn(b, T, n_h, d_h + d_r, generator=g), torch.randn(b, S, d_c, generator=g),
            torch.randn(b, S, d_r, generator=g), torch.randn(n_h, d_h, d_c, generator=g) / d_c ** 0.5,
            torch.randn(n_h, d_v, d_c, generator=g) / d_c ** 0.5, 0.37)


def chunk_attention_reference(q, c_kv, k_r, w_uk, w_uv, scale, *, offset: int | None = None,
                              mask: str = "causal", rope: bool = True) -> torch.Tensor:
    """Oracle of exercise 2.4: per head, explicit keys ``[k^C ; k^R]`` and a visibility mask, ``o [b, T, n_h, d_v]``.

    ``mask``: ``"causal"`` (query i at position P + i sees keys j <= P + i, P = ``offset`` or S − T), or, for the
    named mistakes, ``"none"`` (every key visible) and ``"own_excluded"`` (j < P + i). ``rope=False``, a named
    mistake too: the score without its rope part q^R·k^R (the content part q^C·W^UK c^KV alone).
    """
    b, T, n_h, _ = q.shape
    S = c_kv.shape[1]
    P = S - T if offset is None else offset
    d_h = w_uk.shape[1]
    k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
    v_c = torch.einsum("ivc,bjc->bjiv", w_uv, c_kv)
    logits = torch.einsum("btih,bjih->bitj", q[..., :d_h], k_c)
    if rope:
        logits = logits + torch.einsum("btir,bjr->bitj", q[..., d_h:], k_r)
    logits = logits * scale
    q_pos, k_pos = torch.arange(T)[:, None] + P, torch.arange(S)[None, :]
    if mask == "causal":
        visible = k_pos <= q_pos
    elif mask == "own_excluded":
        visible = k_pos < q_pos
    else:
        visible = torch.ones(T, S, dtype=torch.bool)
    probs = logits.masked_fill(~visible, float("-inf")).softmax(-1).nan_to_num(0.0)
    return torch.einsum("bitj,bjiv->btiv", probs, v_c)


#: Exercise 2.4's random cases: (b, P, T, n_h, d_h, d_h^R, d_c, d_v) -- one head first, then several, with a chunk
#: after a cached prefix, a whole prompt (P = 0) and a decoding step (T = 1)
CHUNK_CASES = ((2, 3, 4, 1, 4, 2, 5, 6), (2, 3, 4, 3, 4, 2, 5, 6), (1, 0, 5, 3, 4, 2, 5, 6), (2, 6, 1, 3, 4, 2, 5, 6),
               (1, 2, 7, 2, 6, 4, 3, 5))


@checker("2.4", hint="a chunk's queries do not start at position 0. Work out, for query i of the chunk, which of the "
                     "P + T cached keys it may see; the rest of the layer is the chapter's steps 2, 4 and 5.",
         more=["Write down the positions: the cache holds keys at 0 .. P+T−1, the chunk's queries sit at P .. P+T−1. "
               "Query i of the chunk may see key j when j ≤ its own position.",
               "A mask built as torch.ones(T, P + T).tril() lets query i see keys 0..i: check that against your "
               "list for P = 3, T = 2.",
               "Test your function yourself on the two edges: P = 0 must give the chapter's square causal mask, and "
               "T = 1 (one decoding step) must see every cached key."])
def check_chunk_attention(fn):
    """Exercise 2.4 (variation): ``fn(q, c_kv, k_r, w_uk, w_uv, scale) -> o [b, T, n_h, d_v]``.

    Inputs: the chunk's queries ``q [b, T, n_h, d_h + d_h^R]`` (``[q^C ; q^R]``, q^R rotated), the cache after the
    chunk was appended, ``c_kv [b, P + T, d_c]`` and ``k_r [b, P + T, d_h^R]`` (rotated, shared by the heads),
    ``w_uk [n_h, d_h, d_c]``, ``w_uv [n_h, d_v, d_c]`` and the softmax ``scale``. Graded on :data:`CHUNK_CASES`
    against :func:`chunk_attention_reference`, then through a library layer with 8 heads and its
    :class:`~dsv3_lessons.model.mla.LatentCache` (a 5-token prompt, then a 3-token chunk). Named: the mask
    aligned with the start of the cache (query i sees keys 0..i), no mask, each query's own key hidden, the rope
    part q^R·k^R left out of the score (alone or with one of those masks), heads mixed (right with one head,
    wrong with several), the scale left out or applied twice, wrong shapes.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (check_chunk_attention(chunk_attention)), got {type(fn).__name__}")
    one_head_ok = False
    for b, P, T, n_h, d_h, d_r, d_c, d_v in CHUNK_CASES:
        args = _chunk_inputs(b, P, T, n_h, d_h, d_r, d_c, d_v, seed=10 * P + T + n_h)
        q, c_kv, k_r, w_uk, w_uv, scale = args
        where = f"with P = {P} cached tokens and a chunk of T = {T} ({n_h} head{'s' if n_h > 1 else ''})"
        out = call_learner(fn, *(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        want = chunk_attention_reference(*args)
        if not isinstance(out, torch.Tensor):
            raise Wrong(f"chunk_attention must return a tensor o [b, T, n_h, d_v], got {type(out).__name__}")
        if tuple(out.shape) != tuple(want.shape):
            if tuple(out.shape) == (b, n_h, T, d_v):
                raise Wrong(f"{where}: o has shape {list(out.shape)}, [b, n_h, T, d_v]; return [b, T, n_h, d_v]")
            raise Wrong(f"{where}: o has shape {list(out.shape)}; expected [b, T, n_h, d_v] = {list(want.shape)}")
        out = out.detach().float()
        if torch.isnan(out).any():
            raise Wrong(f"{where}: o holds NaN: some query sees no key at all (a softmax over only -inf)")
        if torch.allclose(out, want, atol=1e-5):
            one_head_ok = one_head_ok or n_h == 1
            continue
        named = [
            (chunk_attention_reference(*args, offset=0),
             "your mask lets query i of the chunk see keys 0..i, as if the chunk started at position 0. It sits at "
             f"position P + i = {P} + i"),
            (chunk_attention_reference(*args, mask="none"),
             "every query sees every key, the chunk's later tokens included: a query may see keys up to its own "
             "position only"),
            (chunk_attention_reference(*args, mask="own_excluded"),
             "each query is kept from its own key: key j is visible while j ≤ the query's position, itself "
             "included"),
            (chunk_attention_reference(*args[:-1], 1.0), "the scale is missing: multiply the logits by `scale`"),
            (chunk_attention_reference(*args[:-1], scale ** 2), "the logits are scaled twice"),
        ]
        for variant, why in named:
            if torch.allclose(out, variant, atol=1e-5):
                raise Wrong(f"{where}: {why}.")
        no_rope = ("the rope part of the score is missing: your scores use only the content part (the latent "
                   "through w_uk). Each key also carries the shared, rotated k^R (in k_r), which meets q^R, the "
                   "last d_h^R channels of each query; without it the scores know no positions")
        for extra, kwargs in (("", {}),
                              (f"; and the mask lets query i see keys 0..i, as if the chunk started at position 0 "
                               f"(it sits at P + i = {P} + i)", {"offset": 0}),
                              ("; and every query sees every key", {"mask": "none"}),
                              ("; and each query is kept from its own key", {"mask": "own_excluded"})):
            if torch.allclose(out, chunk_attention_reference(*args, rope=False, **kwargs), atol=1e-5):
                raise Wrong(f"{where}: {no_rope}{extra}.")
        if one_head_ok and n_h > 1:
            raise Wrong(f"{where}: right with one head, wrong with several: head i's query must meet head i's keys "
                        f"(w_uk[i]) and head i's values (w_uv[i]) only; check the head letters of your einsums")
        raise Wrong(f"{where}: o differs from the reference by up to {(out - want).abs().max().item():.3g}; check "
                    f"the keys [k^C ; k^R] (k^R shared by the heads), the values and the mask")
    _check_chunk_on_layer(fn)
    return ("query i of the chunk sits at position P + i and sees keys 0..P+i: the mask is the chapter's causal "
            "mask shifted by P. With P = 0 it is square; with T = 1, a decoding step, every cached key is visible "
            "and no mask is needed. That is the library's causal_mask(q_len, kv_len).")


def _check_chunk_on_layer(fn) -> None:
    """Exercise 2.4 on a library layer with 8 heads: a 5-token prompt through its cache, then a 3-token chunk whose
    output the layer computes with ``start_pos=5``; the learner's o, through ``o_proj``, must equal it."""
    from dsv3_lessons.model.mla import split_kv_b

    layer = _layer(num_attention_heads=8, num_key_value_heads=8)
    c = layer.cfg
    g = torch.Generator().manual_seed(7)
    prompt, chunk = torch.randn(1, 5, c.hidden_size, generator=g), torch.randn(1, 3, c.hidden_size, generator=g)
    cache = layer.new_cache(batch=1, max_len=12)
    with torch.no_grad():
        layer(prompt, start_pos=0, cache=cache)
        want = layer(chunk, start_pos=5, cache=cache)
        pos = torch.arange(5, 8)
        q = torch.cat(layer.query(chunk, pos), dim=-1)
        w_uk, w_uv = split_kv_b(layer.kv_b_proj.weight, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim)
        o = call_learner(fn, q, cache.kv[:, :8].clone(), cache.k_pe[:, :8].clone(), w_uk.clone(), w_uv.clone(),
                         layer.softmax_scale)
        got = layer.o_proj(o.reshape(1, 3, -1))
    if not torch.allclose(got, want, atol=1e-5):
        raise Wrong(f"right on the random cases, but through a library layer with 8 heads (prompt of 5, chunk of 3) "
                    f"the output differs by up to {(got - want).abs().max().item():.3g}: read every size from the "
                    f"inputs' shapes, none from fixed numbers")
