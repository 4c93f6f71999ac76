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
from dsv3_lessons.course.ch02_mla.exercises import (BUGGY_KEYS_AND_VALUES, check_key_rank_prediction,
                                                    check_keys_and_values, check_kv_b_rows_of_w_uv,
                                                    check_latent_scores, one_head_test)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_mla_latent_spaces.ipynb"
SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions" / "02_mla_latent_spaces_solutions.ipynb"

# V3: d = 7168, n_h = 128, d_h = d_v = 128, d_h^R = 64 (SPEC §1)
W_UV5 = (5 * 256 + 128, 6 * 256)                                 # (1408, 1536)


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


@pytest.mark.parametrize("guess", [1, 2, 3, 6, np.int64(4), torch.tensor(2)])
def test_2_1_right(guess):
    _status(check_key_rank_prediction(guess, TRAINED, INIT, 32), RIGHT, "2 directions", "18 at initialisation")


@pytest.mark.parametrize("guess, words", [
    (32, ["at or above d_c = 32", "bottleneck"]),
    (60, ["at or above d_c"]),
    (17, ["untrained keys"]),
    (16, ["untrained keys"]),
    (10, ["even more concentrated"]),
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
def test_2_2_placeholder(capsys):
    r = check_kv_b_rows_of_w_uv(___)
    _status(r, NOT_ATTEMPTED, "one head own")
    assert "d_h + d_v" not in r.message                         # the nudge no longer gives the layout away
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("answer, words", [
    ((128 * 128 + 5 * 128, 128 * 128 + 6 * 128), ["all keys first"]),
    ((1280, 1408), ["W^UK rows"]),
    ((1408, 1535), ["exclusive"]),
    ((640, 768), ["256 rows"]),
    ((1400, 1528), ["right length"]),
    ((1408, 1600), ["spans 192 rows"]),
    ("1408:1536", ["pair"]),
])
def test_2_2_wrong(answer, words, capsys):
    _status(check_kv_b_rows_of_w_uv(answer), WRONG, *words)
    out = capsys.readouterr().out
    assert out.startswith("✗ Exercise 2.2") and 'hint("2.2")' in out


@pytest.mark.parametrize("answer", [W_UV5, list(W_UV5), slice(*W_UV5), (np.int64(1408), torch.tensor(1536))])
def test_2_2_right(answer, capsys):
    _status(check_kv_b_rows_of_w_uv(answer), RIGHT)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.2")


# ------------------------------------------------------------------------------------------------ 2.3
def _exec(source: str):
    namespace: dict = {"torch": torch}
    exec(source, namespace)  # noqa: S102  (the chapter's own cell text)
    return namespace["keys_and_values"]


def _fixed(c_kv, w, n_h, d_h, d_v):
    """Oracle written differently from the library: one head at a time, rows sliced out of the weight."""
    per = d_h + d_v
    ks = [c_kv @ w[i * per:i * per + d_h].T for i in range(n_h)]
    vs = [c_kv @ w[i * per + d_h:(i + 1) * per].T for i in range(n_h)]
    return torch.stack(ks, 2), torch.stack(vs, 2)


def test_2_3_notebook_shows_the_checked_buggy_code():
    cell = next(c for c in _cells(NOTEBOOK) if "def keys_and_values" in c)
    assert BUGGY_KEYS_AND_VALUES.strip() in cell and "one_head_test(keys_and_values)" in cell
    assert any("check_keys_and_values(___)" in c for c in _cells(NOTEBOOK))   # stored unattempted


def test_2_3_unfixed_code_passes_the_one_head_test_and_is_wrong():
    buggy = _exec(BUGGY_KEYS_AND_VALUES)
    assert "passes" in one_head_test(buggy)
    _status(check_keys_and_values(buggy), WRONG, "still the 'all keys first' split", "head(s) [0]")


def test_2_3_placeholder():
    _status(check_keys_and_values(___), NOT_ATTEMPTED, "one-head test")
    _status(check_keys_and_values(lambda *a: ___), NOT_ATTEMPTED)


def test_2_3_right():
    _status(check_keys_and_values(_fixed), RIGHT, "head by head", "one head both splits coincide")
    fixed_text = BUGGY_KEYS_AND_VALUES.replace(
        "k_c, v_c = kv.split([n_h * d_h, n_h * d_v], dim=-1)       # keys, then values",
        "k_c, v_c = kv.view(b, T, n_h, d_h + d_v).split([d_h, d_v], dim=-1)")
    assert fixed_text != BUGGY_KEYS_AND_VALUES
    _status(check_keys_and_values(_exec(fixed_text)), RIGHT)


def _values_first(c_kv, w, n_h, d_h, d_v):
    kv = (c_kv @ w.T).view(*c_kv.shape[:2], n_h, d_h + d_v)
    v, k = kv.split([d_v, d_h], dim=-1)
    return k, v


@pytest.mark.parametrize("fn, words", [
    (_values_first, ["values were taken before its keys"]),
    (lambda *a: (_fixed(*a)[0], 2 * _fixed(*a)[1]), ["keys are right, the values are not"]),
    (lambda *a: (2 * _fixed(*a)[0], _fixed(*a)[1]), ["values are right, the keys are not"]),
    (lambda *a: (_fixed(*a)[0].transpose(1, 2), _fixed(*a)[1]), ["shapes", "[b, T, n_h, d_h]"]),
    (lambda c_kv, w, n_h, d_h, d_v: _fixed(c_kv, w, 3, 4, 6), ["with n_h = 4 heads", "shapes"]),
    (lambda *a: _fixed(*a)[0], ["two tensors"]),
    (lambda c_kv, w, n_h, d_h, d_v: (c_kv @ w).split([d_h, d_v], -1), ["raised RuntimeError"]),
    (lambda c_kv, w, n_h, d_h, d_v: _fixed(c_kv, w, n_h, 4, 6), ["right on the random test weights", "fixed numbers"]),
    ("keys_and_values", ["pass your fixed function"]),
])
def test_2_3_wrong(fn, words, capsys):
    _status(check_keys_and_values(fn), WRONG, *words)
    assert 'hint("2.3")' in capsys.readouterr().out


def test_2_3_hint_ladder_never_states_the_fix(capsys):
    from dsv3_lessons.course.common import checking

    checking._SHOWN.pop("2.3", None)
    texts = [hint("2.3") for _ in range(3)]
    assert texts[0].startswith("Hint 1/2") and texts[1].startswith("Hint 2/2") and "solutions" in texts[2]
    assert not any("view(" in t or "split([d_h" in t for t in texts)


# ------------------------------------------------------------------------------------------------ 2.4
def _latent_right(q_c, q_r, c_kv, k_r, w_uk):
    """Oracle: a loop over heads with explicit matrix products (W^UK_iᵀ q), then the shared rope key."""
    heads_q, heads_s = [], []
    for i in range(q_c.shape[2]):
        q_t = q_c[:, :, i] @ w_uk[i]                                   # [b, t, d_c]
        heads_q.append(q_t)
        heads_s.append(q_t @ c_kv.transpose(1, 2) + q_r[:, :, i] @ k_r.transpose(1, 2))
    return torch.stack(heads_q, 2), torch.stack(heads_s, 1)


def test_2_4_oracle_equals_the_concatenated_form():
    from dsv3_lessons.course.ch02_mla.exercises import _score_inputs

    q_c, q_r, c_kv, k_r, w_uk = _score_inputs()
    k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
    q = torch.cat([q_c, q_r], -1)
    k = torch.cat([k_c, k_r[:, :, None].expand(-1, -1, q_c.shape[2], -1)], -1)
    assert torch.allclose(_latent_right(q_c, q_r, c_kv, k_r, w_uk)[1], torch.einsum("btik,bjik->bitj", q, k),
                          atol=1e-5)


def test_2_4_placeholder():
    _status(check_latent_scores(___), NOT_ATTEMPTED, "regrouped")

    def half_filled(q_c, q_r, c_kv, k_r, w_uk):
        q_tilde = torch.einsum("btih,ihc->btic", q_c, w_uk)
        scores = ___
        return q_tilde, scores

    _status(check_latent_scores(half_filled), NOT_ATTEMPTED)


def test_2_4_right():
    _status(check_latent_scores(_latent_right), RIGHT, "d_c numbers per head", "8 heads")


def _reexpanded(q_c, q_r, c_kv, k_r, w_uk):
    """Right scores, but by rebuilding k^C, and q^C handed back as 'q_tilde'."""
    k_c = torch.einsum("ihc,bjc->bjih", w_uk, c_kv)
    return q_c, torch.einsum("btih,bjih->bitj", q_c, k_c) + torch.einsum("btir,bjr->bitj", q_r, k_r)


@pytest.mark.parametrize("fn, words", [
    (_reexpanded, ["q^C's shape", "latent space"]),
    (lambda *a: (_latent_right(*a)[0], _latent_right(*a)[1] - torch.einsum("btir,bjr->bitj", a[1], a[3])),
     ["only the content part"]),
    (lambda *a: (_latent_right(*a)[0], torch.einsum("btir,bjr->bitj", a[1], a[3])), ["only the RoPE part"]),
    (lambda *a: (_latent_right(*a)[0], _latent_right(*a)[1].transpose(-1, -2)), ["t and j are swapped"]),
    (lambda *a: (_latent_right(*a)[0], _latent_right(*a)[1] / 24 ** 0.5), ["times 0.2041", "softmax scale"]),
    (lambda *a: (_latent_right(*a)[0], _latent_right(*a)[1].permute(0, 2, 1, 3)), ["[b, t, n_h, j]"]),
    (lambda *a: (2 * _latent_right(*a)[0], _latent_right(*a)[1]), ["must equal q^C·k^C"]),
    (lambda *a: (_latent_right(*a)[0] + 1, _latent_right(*a)[1]), ["must equal q^C·k^C"]),
    (lambda *a: _latent_right(*a)[1], ["return a pair"]),
    (lambda q_c, q_r, c_kv, k_r, w_uk: (q_c @ w_uk, None), ["raised RuntimeError"]),
])
def test_2_4_wrong(fn, words):
    _status(check_latent_scores(fn), WRONG, *words)


def test_2_4_hard_coded_head_count_fails_on_the_other_layer():
    def three_heads_only(q_c, q_r, c_kv, k_r, w_uk):
        q_t = torch.stack([q_c[:, :, i] @ w_uk[i] for i in range(3)], 2)
        s = torch.einsum("btic,bjc->bitj", q_t, c_kv) + torch.einsum("btir,bjr->bitj", q_r[:, :, :3], k_r)
        return q_t, s

    _status(check_latent_scores(three_heads_only), WRONG, "8 heads")


# ------------------------------------------------------------------------------------------------ notebooks
def test_exercises_stored_unattempted_and_solutions_explain():
    """Issue 16: four exercises of four kinds, stored with ___, the 'not attempted' line stored; solutions give a
    'why' for each."""
    nb = json.loads(NOTEBOOK.read_text())
    outs = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    for n in ("2.1", "2.2", "2.3", "2.4"):
        assert f"Exercise {n}: not attempted yet" in outs
    text = " ".join(_cells(NOTEBOOK))
    for kind in ("predict, then run", "explain with a number", "bug hunt", "variation"):
        assert kind in text
    solutions = " ".join(_cells(SOLUTIONS))
    assert solutions.count("Why") >= 4 and "✓" in solutions
