"""Chapter 2 exercise checkers: placeholder, typical wrong answers (with the diagnosis each gets), right answers.

Right answers come from independent arithmetic on the released V3 config (SPEC §1–2), not from the checkers.
"""
import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, ___
from dsv3_lessons.course.ch02_mla.exercises import (check_fuse_kv_b, check_kv_b_rows_of_w_uv,
                                                    check_query_latent_savings, check_split_scores)

# V3: d = 7168, n_h = 128, d_h = d_v = 128, d_h^R = 64, d_c' = 1536 (SPEC §1)
W_UV5 = (5 * 256 + 128, 6 * 256)                                 # (1408, 1536)
SAVED = 7168 * 128 * 192 - (7168 * 1536 + 1536 + 1536 * 128 * 192)  # 127,400,448


def _status(result, status, *words):
    assert result.status == status, result
    for w in words:
        assert w in result.message, (w, result.message)


# ------------------------------------------------------------------------------------------------ 2.1
def test_2_1_placeholder(capsys):
    r = check_kv_b_rows_of_w_uv(___)
    _status(r, NOT_ATTEMPTED, "d_h + d_v")
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
def test_2_1_wrong(answer, words, capsys):
    _status(check_kv_b_rows_of_w_uv(answer), WRONG, *words)
    assert capsys.readouterr().out.startswith("✗ Exercise 2.1")


@pytest.mark.parametrize("answer", [W_UV5, list(W_UV5), slice(*W_UV5), (np.int64(1408), torch.tensor(1536))])
def test_2_1_right(answer, capsys):
    _status(check_kv_b_rows_of_w_uv(answer), RIGHT)
    assert capsys.readouterr().out.startswith("✓ Exercise 2.1")


# ------------------------------------------------------------------------------------------------ 2.2
def test_2_2_placeholder():
    _status(check_query_latent_savings(___), NOT_ATTEMPTED, "plain W^Q")


@pytest.mark.parametrize("answer, words", [
    (SAVED + 1536, ["q_a_layernorm"]),
    (SAVED * 61, ["61 layers"]),
    (-SAVED, ["sign"]),
    (7168 * 128 * 192, ["plain W^Q alone"]),
    (7168 * 1536 + 1536 + 1536 * 128 * 192, ["latent path alone"]),
    (7168 * 128 * 128 - (7168 * 1536 + 1536 + 1536 * 128 * 128), ["192"]),
    (SAVED + 7, ["off by +7"]),
    (SAVED + 0.5, ["whole number"]),
    (True, ["must be a number"]),
])
def test_2_2_wrong(answer, words):
    _status(check_query_latent_savings(answer), WRONG, *words)


@pytest.mark.parametrize("answer", [SAVED, float(SAVED), np.int64(SAVED), torch.tensor(SAVED)])
def test_2_2_right(answer):
    _status(check_query_latent_savings(answer), RIGHT, "127,400,448")


# ------------------------------------------------------------------------------------------------ 2.3
def _fuse_right(w_uk, w_uv):
    n_h, _, d_c = w_uk.shape
    return torch.stack([torch.cat([w_uk[i], w_uv[i]]) for i in range(n_h)]).reshape(-1, d_c)


def test_2_3_placeholder():
    _status(check_fuse_kv_b(___), NOT_ATTEMPTED, "merge")
    _status(check_fuse_kv_b(lambda w_uk, w_uv: ___), NOT_ATTEMPTED, "merge")


@pytest.mark.parametrize("fn, words", [
    (lambda uk, uv: torch.cat([uk.reshape(-1, uk.shape[-1]), uv.reshape(-1, uv.shape[-1])]), ["all keys first"]),
    (lambda uk, uv: torch.cat([uv, uk], 1).reshape(-1, uk.shape[-1]), ["values come before"]),
    (lambda uk, uv: _fuse_right(uk, uv).T, ["transposed"]),
    (lambda uk, uv: torch.cat([uk, uv], 1), ["shape [3, 10, 5]"]),
    (lambda uk, uv: _fuse_right(uk, uv).flip(0), ["head 0's block"]),
    (lambda uk, uv: _fuse_right(uk, uv).numpy(), ["torch tensor"]),
    (lambda uk, uv: torch.cat([uk, uv], 1).reshape(30, 5), ["fixed sizes"]),
    (lambda uk: uk, ["raised TypeError"]),
    (_fuse_right(*[torch.zeros(1, 1, 1)] * 2), ["pass your function"]),
])
def test_2_3_wrong(fn, words):
    _status(check_fuse_kv_b(fn), WRONG, *words)


def test_2_3_right():
    _status(check_fuse_kv_b(_fuse_right), RIGHT, "split_kv_b")
    _status(check_fuse_kv_b(lambda uk, uv: torch.cat([uk, uv], 1).reshape(-1, uk.shape[-1])), RIGHT)


# ------------------------------------------------------------------------------------------------ 2.4
def _scores_concat(q_c, q_r, k_c, k_r):
    """Oracle written differently from the checker: loop over heads, explicit concatenation and matmul."""
    heads = []
    for i in range(q_c.shape[2]):
        q = torch.cat([q_c[:, :, i], q_r[:, :, i]], -1)       # [b, t, d_h + d_r]
        k = torch.cat([k_c[:, :, i], k_r], -1)                # [b, j, d_h + d_r]
        heads.append(q @ k.transpose(1, 2))
    return torch.stack(heads, 1)


def test_2_4_placeholder():
    _status(check_split_scores(___), NOT_ATTEMPTED, "no head axis")
    _status(check_split_scores(lambda *a: ___), NOT_ATTEMPTED)


@pytest.mark.parametrize("fn, words", [
    (lambda qc, qr, kc, kr: torch.einsum("btih,bjih->bitj", qc, kc), ["only the content part"]),
    (lambda qc, qr, kc, kr: torch.einsum("btir,bjr->bitj", qr, kr), ["only the RoPE part"]),
    (lambda *a: _scores_concat(*a).transpose(-1, -2), ["swapped"]),
    (lambda *a: _scores_concat(*a) / 10 ** 0.5, ["times 0.3162"]),
    (lambda *a: _scores_concat(*a).permute(0, 2, 1, 3), ["[b, t, n_h, j]"]),
    (lambda *a: _scores_concat(*a).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf")), ["mask"]),
    (lambda qc, qr, kc, kr: torch.einsum("btih,bjih->bitj", qc, kc) + torch.einsum("btir,bjr->bitj", qr, kr.flip(1)),
     ["largest difference"]),
    (lambda qc, qr, kc, kr: qc @ kc, ["raised RuntimeError"]),
])
def test_2_4_wrong(fn, words):
    _status(check_split_scores(fn), WRONG, *words)


def test_2_4_right():
    _status(check_split_scores(_scores_concat), RIGHT, "q^C·k^C + q^R·k^R")
