"""Chapter 2 exercise checkers: placeholder, typical wrong answers (with the diagnosis each gets), right answers.

Right answers come from independent arithmetic on the released V3 config (SPEC §1–2) or from oracles written here
(a per-head loop, explicit concatenation), not from the checkers. The bug hunt's unfixed code is taken from the
chapter's notebook cell itself, so the text the learner reads is the text that is checked.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___, hint
from dsv3_lessons.course.ch02_mla.exercises import (BUGGY_MLA_FORWARD, check_chunk_attention,
                                                    check_key_rank_prediction, check_keys_first_rows,
                                                    check_mla_forward, plain_config_test)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_mla_latent_spaces.ipynb"
SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions" / "02_mla_latent_spaces_solutions.ipynb"

# V3: n_h = 128, d_h = d_v = 128 (SPEC §1). Keys-first: head 36's "keys" start at row 36·128 = 4608 = 18·256,
# the first row of head 18's block (its W^UK); head 5's "values" start at 128·128 + 5·128 = 17024 = 66·256 + 128,
# the value half of head 66's block.
KEYS_FIRST_RIGHT = {"keys of head 36": (18, "W^UK"), "values of head 5": (66, "W^UV")}


def _status(result, status, *words):
    assert result.status == status, result
    for w in words:
        assert w in result.message, (w, result.message)


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


# ------------------------------------------------------------------------------------------------ 2.1
def _spectrum(rank: int, width: int = 64) -> torch.Tensor:
    """Singular values whose r90 is exactly ``rank``: ``rank`` equal large values, then a small flat tail."""
    s = torch.full((width,), 1e-3, dtype=torch.float64)
    s[:rank] = 1.0
    return s


TRAINED, INIT = _spectrum(2), _spectrum(19)          # r90 = 2 and ceil(0.9·19) = 18


def test_spectrum_helper_has_the_intended_r90():
    from dsv3_lessons.course.ch02_mla.steps import rank_for_energy

    assert rank_for_energy(TRAINED, 0.9) == 2 and rank_for_energy(INIT, 0.9) == 18


def test_2_1_placeholder(capsys):
    _status(check_key_rank_prediction(___, TRAINED, INIT, 32), NOT_ATTEMPTED, "BEFORE")
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("guess", [1, 2, 3, 5, np.int64(4), torch.tensor(2)])
def test_2_1_right(guess):
    _status(check_key_rank_prediction(guess, TRAINED, INIT, 32), RIGHT, "2 directions", "18 at initialisation")


@pytest.mark.parametrize("guess, words", [
    (32, ["at or above d_c = 32", "bottleneck"]),
    (60, ["at or above d_c"]),
    (17, ["Half right", "below d_c = 32", "untrained keys need (18)"]),
    (12, ["Half right", "untrained keys need (18)"]),
    (6, ["Half right"]),                              # as far (log scale) from 2 as from 18: not nearer to 2
    (25, ["more directions than even the random, untrained keys"]),
    (0, ["outside 1..64"]),
    (65, ["outside 1..64"]),
    (2.5, ["whole number"]),
    ("few", ["must be a number"]),
])
def test_2_1_wrong_explains_the_gap(guess, words):
    r = check_key_rank_prediction(guess, TRAINED, INIT, 32)
    _status(r, WRONG, *words)
    if r.message.startswith(("you guessed", )):
        assert "measured: r90 = 2 of 64" in r.message            # every miss reports the measurement


def test_2_1_too_low_is_named():
    _status(check_key_rank_prediction(1, _spectrum(8), INIT, 32), WRONG, "fewer than measured")


# ------------------------------------------------------------------------------------------------ 2.2
def test_2_2_truth_from_an_independent_row_walk():
    """Walk V3's kv_b_proj rows in the true per-head layout and in the keys-first reading (no divmod)."""
    from dsv3_lessons.model.config import deepseek_v3_671b

    c = deepseek_v3_671b()
    owner = []                                                      # true (head, matrix) of every row
    for h in range(c.num_attention_heads):
        owner += [(h, "W^UK")] * c.qk_nope_head_dim + [(h, "W^UV")] * c.v_head_dim
    keys36 = owner[36 * c.qk_nope_head_dim: 37 * c.qk_nope_head_dim]
    values5 = owner[c.num_attention_heads * c.qk_nope_head_dim + 5 * c.v_head_dim:][: c.v_head_dim]
    assert set(keys36) == {KEYS_FIRST_RIGHT["keys of head 36"]} and set(values5) == {KEYS_FIRST_RIGHT["values of head 5"]}


def test_2_2_placeholder(capsys):
    _status(check_keys_first_rows({"keys of head 36": (___, ___), "values of head 5": (___, ___)}), NOT_ATTEMPTED,
            "two steps")
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [KEYS_FIRST_RIGHT,
                                    {"keys of head 36": [18, "UK"], "values of head 5": (np.int64(66), "w_uv")}])
def test_2_2_right(answer, capsys):
    _status(check_keys_first_rows(answer), RIGHT, "head 18's W^UK", "head 66's W^UV")
    assert capsys.readouterr().out.startswith("✓ Exercise 2.2")


@pytest.mark.parametrize("keys36, values5, words", [
    ((36, "W^UK"), (66, "W^UV"), ["what the loader believes"]),                       # the loader's own belief
    ((19, "W^UK"), (67, "W^UV"), ["2 of 2", "one head off", "counted from 0"]),         # heads counted from 1
    ((18, "W^UV"), (66, "W^UV"), ["the right head, the wrong part"]),                   # key/value part swapped
    ((18, "W^UK"), (133, "W^UV"), ["divided the row number by 128", "256 rows"]),       # rows / d_h
    ((18, "W^UK"), (2, "W^UV"), ["key rows first", "not at row 0"]),                    # values' offset forgotten
    ((18, "W^UK"), (40, "W^UK"), ["is off"]),
])
def test_2_2_wrong(keys36, values5, words, capsys):
    _status(check_keys_first_rows({"keys of head 36": keys36, "values of head 5": values5}), WRONG, *words)
    out = capsys.readouterr().out
    assert out.startswith("✗ Exercise 2.2") and 'hint("2.2")' in out


@pytest.mark.parametrize("answer, words", [
    ((18, "W^UK"), ["must be a dict"]),
    ({"keys of head 36": (18, "W^UK")}, ["exactly the keys"]),
    ({"keys of head 36": 18, "values of head 5": (66, "W^UV")}, ["must be a pair"]),
    ({"keys of head 36": (18, "W^Q"), "values of head 5": (66, "W^UV")}, ["\"W^UK\" or \"W^UV\""]),
    ({"keys of head 36": (18.5, "W^UK"), "values of head 5": (66, "W^UV")}, ["whole number"]),
])
def test_2_2_malformed(answer, words):
    _status(check_keys_first_rows(answer), WRONG, *words)


# ------------------------------------------------------------------------------------------------ 2.3
def _exec(source: str):
    from dsv3_lessons.model.rope import yarn_mscale

    def mscale_of(layer):                     # YaRN's temperature of the layer's config, for the wrong fixes
        rs = layer.cfg.rope_scaling
        return yarn_mscale(float(rs["factor"]), float(rs["mscale_all_dim"]))

    namespace: dict = {"torch": torch, "F": torch.nn.functional, "mscale_of": mscale_of}
    exec(source, namespace)  # noqa: S102  (the chapter's own cell text, or an edit of it)
    return namespace["mla_forward"]


def _with_scale(expr: str | None, causal: bool = True):
    """The notebook's function with its attention call edited: ``scale=<expr>`` added, the mask switched."""
    call = "is_causal=True)"
    new = ("is_causal=True" if causal else "is_causal=False") + (f", scale={expr})" if expr else ")")
    assert call in BUGGY_MLA_FORWARD
    return _exec(BUGGY_MLA_FORWARD.replace(call, new))


WIDTH = "(layer.qk_nope_head_dim + layer.qk_rope_head_dim)"


def test_2_3_notebook_shows_the_checked_buggy_code():
    cell = next(c for c in _cells(NOTEBOOK) if "def mla_forward" in c)
    assert BUGGY_MLA_FORWARD.strip() in cell and "plain_config_test(mla_forward)" in cell
    assert any("check_mla_forward(___)" in c for c in _cells(NOTEBOOK))       # stored unattempted


def test_2_3_unfixed_code_passes_the_authors_test_and_is_wrong_by_a_symptom_only():
    buggy = _exec(BUGGY_MLA_FORWARD)
    assert "passes" in plain_config_test(buggy)
    r = check_mla_forward(buggy)
    _status(r, WRONG, "matches the library's at position 0", "differs from position 1 on")
    for cause in ("scale", "mscale", "sqrt"):                      # the ✗ never names the cause
        assert cause not in r.message, cause


def test_2_3_placeholder():
    _status(check_mla_forward(___), NOT_ATTEMPTED, "author's test")


def _explicit_mla(layer, h):
    """Oracle written differently from the library: keys and values rebuilt per head from split_kv_b, a loop over
    heads, the softmax scale recomputed from the config with the YaRN temperature."""
    from dsv3_lessons.model.mla import split_kv_b
    from dsv3_lessons.model.rope import yarn_mscale

    c = layer.cfg
    T = h.shape[1]
    pos = torch.arange(T)
    q_c, q_r = layer.query(h, pos)
    c_kv, k_r = layer.latent(h, pos)
    w_uk, w_uv = split_kv_b(layer.kv_b_proj.weight, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim)
    rs = c.rope_scaling
    scale = (c.qk_nope_head_dim + c.qk_rope_head_dim) ** -0.5 * yarn_mscale(float(rs["factor"]),
                                                                           float(rs["mscale_all_dim"])) ** 2
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    heads = []
    for i in range(c.num_attention_heads):
        k_i, v_i = c_kv @ w_uk[i].T, c_kv @ w_uv[i].T
        s = (q_c[:, :, i] @ k_i.transpose(1, 2) + q_r[:, :, i] @ k_r.transpose(1, 2)) * scale
        heads.append(s.masked_fill(~mask, float("-inf")).softmax(-1) @ v_i)
    return layer.o_proj(torch.cat(heads, dim=-1))


def test_2_3_oracle_equals_the_library_on_the_checked_configs():
    from dsv3_lessons.course.ch02_mla.exercises import _mla_forward_cases

    for _, layer, h in _mla_forward_cases():
        with torch.no_grad():
            assert torch.allclose(_explicit_mla(layer, h), layer(h), atol=1e-5)


@pytest.mark.parametrize("fn", [_explicit_mla, lambda: _with_scale("layer.softmax_scale")], ids=["oracle", "fix"])
def test_2_3_right(fn, capsys):
    fn = fn() if fn.__name__ == "<lambda>" else fn
    _status(check_mla_forward(fn), RIGHT, "mscale²", "Position 0")
    assert capsys.readouterr().out.startswith("✓ Exercise 2.3")


@pytest.mark.parametrize("expr, causal, words", [
    (f"{WIDTH} ** -0.5 * mscale_of(layer)", True, ["mscale once", "squared"]),
    ("(layer.cfg.kv_lora_rank + layer.qk_rope_head_dim) ** -0.5 * mscale_of(layer) ** 2", True,
     ["cached width d_c + d_h^R"]),
    ("layer.qk_nope_head_dim ** -0.5 * mscale_of(layer) ** 2", True, ["content width d_h"]),
    (f"layer.softmax_scale * {WIDTH} ** -0.5", True, ["scaled twice"]),
    ("layer.softmax_scale", False, ["causal mask is gone"]),
    ("1.0", True, ["differs from the library's by up to"]),
])
def test_2_3_wrong_fixes_are_named(expr, causal, words, capsys):
    _status(check_mla_forward(_with_scale(expr, causal)), WRONG, *words)
    assert 'hint("2.3")' in capsys.readouterr().out


def _with_scale_and_factor(expr: str, factor: str, on: str = "q"):
    """The notebook's function with ``scale=<expr>`` passed AND ``q`` (or ``k``) multiplied by ``factor``: a fix
    that applies a scaling twice."""
    line = {"q": "q = torch.cat([q_c, q_r], dim=-1).transpose(1, 2)",
            "k": "k = torch.cat([k_c, k_r.unsqueeze(2).expand_as(q_r)], dim=-1).transpose(1, 2)"}[on]
    source = BUGGY_MLA_FORWARD.replace("is_causal=True)", f"is_causal=True, scale={expr})")
    assert line in source and f"scale={expr}" in source
    return _exec(source.replace(line, f"{line} * ({factor})"))


@pytest.mark.parametrize("expr, factor, on, words", [
    ("layer.softmax_scale", "mscale_of(layer) ** 2", "q", ["YaRN temperature is applied twice", "already holds"]),
    ("layer.softmax_scale", "mscale_of(layer) ** 2", "k", ["YaRN temperature is applied twice"]),
    (f"{WIDTH} ** -0.5 * mscale_of(layer) ** 2", "mscale_of(layer) ** 2", "q",
     ["YaRN temperature is applied twice"]),
    ("layer.softmax_scale", "mscale_of(layer)", "q", ["on top of a scale that already holds it"]),
    ("layer.softmax_scale", "layer.softmax_scale", "q", ["softmax scale is applied twice", "scale="]),
], ids=["q_mscale2", "k_mscale2", "explicit_scale_q_mscale2", "q_mscale", "q_softmax_scale"])
def test_2_3_scaling_applied_twice_is_named(expr, factor, on, words, capsys):
    r = check_mla_forward(_with_scale_and_factor(expr, factor, on))
    _status(r, WRONG, *words)
    assert "layer.softmax_scale" not in r.message and "0.26" not in r.message       # no fix, no number
    assert 'hint("2.3")' in capsys.readouterr().out


def test_2_3_mscale_squared_on_q_without_scale_is_right():
    """The other correct fix: no scale=, q multiplied by mscale² (the kernel's default supplies the width)."""
    fixed = _exec(BUGGY_MLA_FORWARD.replace("q = torch.cat([q_c, q_r], dim=-1).transpose(1, 2)",
                                            "q = torch.cat([q_c, q_r], dim=-1).transpose(1, 2) * mscale_of(layer) ** 2"))
    _status(check_mla_forward(fixed), RIGHT)


def test_2_3_malformed():
    _status(check_mla_forward("mla_forward"), WRONG, "pass your fixed function")
    _status(check_mla_forward(lambda layer, h: h[:, :, :3]), WRONG, "must return the layer's output")


def test_2_3_hint_ladder_never_states_the_fix():
    from dsv3_lessons.course.common import checking

    checking._SHOWN.pop("2.3", None)
    texts = [hint("2.3") for _ in range(4)]
    assert texts[0].startswith("Hint 1/3") and texts[2].startswith("Hint 3/3") and "solutions" in texts[3]
    assert not any("layer.softmax_scale" in t or "mscale" in t for t in texts)


# ------------------------------------------------------------------------------------------------ 2.4
def _chunk_oracle(q, c_kv, k_r, w_uk, w_uv, scale, *, start=None, see_own=True, rope=True):
    """Independent oracle: one query and one head at a time, positions written out (query i at P + i).
    ``rope=False``: the keys without k^R and the queries without q^R (a named mistake)."""
    b, T, n_h, _ = q.shape
    S = c_kv.shape[1]
    P = S - T if start is None else start
    d_h = w_uk.shape[1]
    out = torch.zeros(b, T, n_h, w_uv.shape[1])
    for i in range(T):
        n_visible = P + i + (1 if see_own else 0)
        for h in range(n_h):
            keys = torch.cat([c_kv[:, :n_visible] @ w_uk[h].T, k_r[:, :n_visible]], dim=-1)    # [b, n, d_h + d_r]
            q_ih = q[:, i, h]
            if not rope:
                keys, q_ih = keys[..., :d_h], q_ih[..., :d_h]
            w = (keys @ q_ih[..., None]).squeeze(-1).mul(scale).softmax(-1)                      # [b, n]
            out[:, i, h] = (w[:, :, None] * (c_kv[:, :n_visible] @ w_uv[h].T)).sum(1)
    return out


def _chunk_right(q, c_kv, k_r, w_uk, w_uv, scale):
    return _chunk_oracle(q, c_kv, k_r, w_uk, w_uv, scale)


def test_2_4_oracle_equals_the_library_layer_through_its_cache():
    """The library's chunked forward (start_pos, LatentCache) against the oracle fed with the layer's tensors."""
    from dsv3_lessons.course.ch02_mla.exercises import _layer
    from dsv3_lessons.model.mla import split_kv_b

    layer = _layer(num_attention_heads=3, num_key_value_heads=3)
    c = layer.cfg
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, c.hidden_size, generator=g)
    cache = layer.new_cache(batch=1, max_len=8)
    with torch.no_grad():
        layer(x[:, :4], start_pos=0, cache=cache)
        want = layer(x[:, 4:], start_pos=4, cache=cache)
        q = torch.cat(layer.query(x[:, 4:], torch.arange(4, 6)), dim=-1)
        c_kv, k_r = layer.latent(x, torch.arange(6))
        w_uk, w_uv = split_kv_b(layer.kv_b_proj.weight, 3, c.qk_nope_head_dim, c.v_head_dim)
        got = layer.o_proj(_chunk_oracle(q, c_kv, k_r, w_uk, w_uv, layer.softmax_scale).reshape(1, 2, -1))
    assert torch.allclose(got, want, atol=1e-5)


def test_2_4_placeholder():
    _status(check_chunk_attention(___), NOT_ATTEMPTED, "do not start at position 0")

    def half_filled(q, c_kv, k_r, w_uk, w_uv, scale):
        k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
        return ___

    _status(check_chunk_attention(half_filled), NOT_ATTEMPTED)


def test_2_4_right(capsys):
    _status(check_chunk_attention(_chunk_right), RIGHT, "P + i", "T = 1")
    assert capsys.readouterr().out.startswith("✓ Exercise 2.4")


def _square_mask(q, c_kv, k_r, w_uk, w_uv, scale):
    """The chapter's mask carried over: tril of a [T, P + T] block (query i sees keys 0..i)."""
    return _chunk_oracle(q, c_kv, k_r, w_uk, w_uv, scale, start=0)


def _heads_mixed(q, c_kv, k_r, w_uk, w_uv, scale):
    """Every head uses the sum of all heads' W^UK and W^UV: right with one head only."""
    n_h = q.shape[2]
    return _chunk_oracle(q, c_kv, k_r, w_uk.sum(0, keepdim=True).expand(n_h, -1, -1),
                         w_uv.sum(0, keepdim=True).expand(n_h, -1, -1), scale)


def _content_only(q, c_kv, k_r, w_uk, w_uv, scale):
    """A learner's answer that forgets k^R: W^UK folded into q^C, scores against the latent alone, right mask."""
    b, T, n_h, _ = q.shape
    S, d_h = c_kv.shape[1], w_uk.shape[1]
    q_lat = torch.einsum("btih,ihc->btic", q[..., :d_h], w_uk)                 # W^UK folded into the query
    scores = torch.einsum("btic,bjc->bitj", q_lat, c_kv) * scale
    visible = torch.arange(S)[None, :] <= S - T + torch.arange(T)[:, None]
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    return torch.einsum("bitj,bjc,ivc->btiv", probs, c_kv, w_uv)


@pytest.mark.parametrize("fn, words", [
    (_content_only, ["rope part of the score is missing", "k^R", "q^R"]),
    (lambda *a: _chunk_oracle(*a, rope=False), ["rope part of the score is missing"]),
    (lambda *a: _chunk_oracle(*a, start=0, rope=False),
     ["rope part of the score is missing", "as if the chunk started at position 0"]),
    (lambda *a: _chunk_oracle(*a, start=10 ** 6, rope=False),
     ["rope part of the score is missing", "every query sees every key"]),
    (_square_mask, ["as if the chunk started at position 0", "P + i = 3 + i"]),
    (lambda *a: _chunk_oracle(*a, start=10 ** 6), ["every query sees every key"]),
    (lambda *a: _chunk_oracle(*a, see_own=False), ["kept from its own key"]),
    (lambda *a: _chunk_oracle(*a[:-1], 1.0), ["scale is missing"]),
    (lambda *a: _chunk_oracle(*a[:-1], a[-1] ** 2), ["scaled twice"]),
    (_heads_mixed, ["right with one head, wrong with several", "head letters"]),
    (lambda *a: _chunk_right(*a).transpose(1, 2), ["[b, n_h, T, d_v]", "return [b, T, n_h, d_v]"]),
    (lambda *a: _chunk_right(*a)[..., :1], ["expected [b, T, n_h, d_v]"]),
    (lambda *a: 2 * _chunk_right(*a), ["differs from the reference"]),
    ("chunk_attention", ["pass your function itself"]),
])
def test_2_4_wrong(fn, words, capsys):
    _status(check_chunk_attention(fn), WRONG, *words)
    assert 'hint("2.4")' in capsys.readouterr().out


def test_2_4_own_key_hidden_at_p0_gives_nan_and_is_named():
    def strict_mask(q, c_kv, k_r, w_uk, w_uv, scale):         # j < P + i, without nan_to_num: query 0 of P = 0
        out = _chunk_oracle(q, c_kv, k_r, w_uk, w_uv, scale, see_own=False)
        if c_kv.shape[1] == q.shape[1]:
            out[:, 0] = float("nan")
        return out

    # the first case (P = 3) already names the mistake; a NaN-only variant is named where it first shows
    _status(check_chunk_attention(lambda *a: torch.full_like(_chunk_right(*a), float("nan"))), WRONG, "NaN")
    _status(check_chunk_attention(strict_mask), WRONG, "kept from its own key")


# ------------------------------------------------------------------------------------------------ notebooks
def test_exercises_stored_unattempted_and_solutions_explain():
    """Issue 16: four exercises of four kinds, stored with ___, the 'not attempted' line stored; the prediction's
    answer stays hidden in the stored chapter; solutions give a 'why' for each."""
    nb = json.loads(NOTEBOOK.read_text())
    outs = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    for n in ("2.1", "2.2", "2.3", "2.4"):
        assert f"Exercise {n}: not attempted yet" in outs
    assert "Hidden until you predict: write your answer to exercise 2.1" in outs
    text = " ".join(_cells(NOTEBOOK))
    for kind in ("predict, then run", "explain with a number", "bug hunt", "variation"):
        assert kind in text
    assert 'revealed("2.1", prediction_2_1)' in text
    solutions = " ".join(_cells(SOLUTIONS))
    assert solutions.count("Why") >= 4 and "✓" in solutions
