"""Chapter 3's exercise checkers: placeholder, typical wrong answers (with the hint each gets), right answer.

Oracles: YaRN's frequencies written out here in float64 from the paper's definitions (V3 report §4.3, YaRN
arXiv 2309.00071 §3.2); the fold/relative truth of exercise 3.2 MEASURED here with explicit float64 rotation
matrices; mscale(s, c) = 0.1·c·ln s + 1 in closed form and the issue's numbers (mscale² 1.6889 for s = 20,
1.8739 for s = 40); transformers' YaRN softmax scale.
"""
import math

import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch03_rope.exercises import (PLACEMENTS, POSITION_ZERO_MISTAKES, SCALE_EXERCISE_CONFIG,
                                                     YARN_EXERCISE_CONFIGS, ___, check_position_zero,
                                                     check_rope_placements, check_softmax_scale,
                                                     check_yarn_frequencies)
from dsv3_lessons.course.ch03_rope.experiments import logit_with_mistake


# ------------------------------------------------------------------ 3.1 YaRN frequencies (code)
def yarn64(d, base, rs, *, length=None, floor_ceil=True, clamp_low=True, reverse=False):
    """float64 YaRN written from the paper: r_i = L θ_i / 2π turns; low/high where r = β_fast / β_slow."""
    L = rs["original_max_position_embeddings"] if length is None else length
    theta = np.array([base ** (-2 * i / d) for i in range(d // 2)])
    idx = lambda beta: d * math.log(L / (2 * math.pi * beta)) / (2 * math.log(base))  # noqa: E731
    lo, hi = idx(rs["beta_fast"]), idx(rs["beta_slow"])
    if floor_ceil:
        lo, hi = math.floor(lo), math.ceil(hi)
    if clamp_low:
        lo, hi = max(lo, 0), min(hi, d - 1)
    ramp = np.clip((np.arange(d // 2) - lo) / (hi - lo), 0, 1)
    if reverse:
        ramp = 1 - ramp
    return theta * (1 - ramp) + theta / rs["factor"] * ramp


def test_yarn_oracle_matches_v3_numbers():
    _, d, base, rs = YARN_EXERCISE_CONFIGS[2]
    t = yarn64(d, base, rs)
    theta = np.array([base ** (-2 * i / d) for i in range(d // 2)])
    assert np.allclose(t[:11], theta[:11]) and np.allclose(t[23:], theta[23:] / 40)   # low 10, high 23
    assert YARN_EXERCISE_CONFIGS[1][1] == 8          # the narrow config: low is negative before clamping
    assert math.floor(8 * math.log(64 / (2 * math.pi * 32)) / (2 * math.log(1e4))) < 0


def test_3_1_placeholder():
    r = check_yarn_frequencies(lambda d, base, rs: ___)
    assert r.status == NOT_ATTEMPTED and "ORIGINAL window" in r.message


def test_3_1_right_answer_in_numpy_and_torch():
    assert check_yarn_frequencies(lambda d, base, rs: yarn64(d, base, rs)).status == RIGHT
    assert check_yarn_frequencies(lambda d, base, rs: torch.tensor(yarn64(d, base, rs)).float()).status == RIGHT
    assert check_yarn_frequencies(lambda d, base, rs: list(yarn64(d, base, rs))).status == RIGHT


@pytest.mark.parametrize("fn,hint", [
    (lambda d, b, rs: np.array([b ** (-2 * i / d) for i in range(d // 2)]), "plain RoPE frequencies"),
    (lambda d, b, rs: yarn64(d, b, rs, length=rs["original_max_position_embeddings"] * rs["factor"]),
     "extended window"),
    (lambda d, b, rs: yarn64(d, b, rs, reverse=True), "wrong way"),
    (lambda d, b, rs: yarn64(d, b, rs, floor_ceil=False), "floor"),
    (lambda d, b, rs: yarn64(d, b, rs, clamp_low=False), "clamp it at 0"),
    (lambda d, b, rs: np.ones(3), "d/2 = 32 numbers"),
    (lambda d, b, rs: 1 / 0, "ZeroDivisionError"),
    ("not a function", "pass your function"),
], ids=["no-yarn", "extended", "reversed", "unrounded", "no-clamp", "shape", "raises", "not-callable"])
def test_3_1_wrong_answers(fn, hint, capsys):
    r = check_yarn_frequencies(fn)
    assert r.status == WRONG and hint in r.message, r.message
    assert capsys.readouterr().out.startswith("✗ Exercise 3.1")


def test_3_1_no_clamp_is_only_wrong_on_the_narrow_config():
    r = check_yarn_frequencies(lambda d, b, rs: yarn64(d, b, rs, clamp_low=False))
    assert "8 rope channels" in r.message     # V3 and the 8192 config pass without the clamp


# ------------------------------------------------------------------ 3.2 placements (measured truth)
def rot(pos, d, base=10000.0):
    r = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = pos * base ** (-2 * i / d)
        r[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                                          dtype=torch.float64)
    return r


def measure(placement, T=6, dh=8, dc=12, dr=4, shift=5):
    """(folds, relative) measured: folded score from the cache only vs the direct one; positions shifted."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(T, dh, generator=g, dtype=torch.float64)          # q^C per query
    c = torch.randn(T, dc, generator=g, dtype=torch.float64)          # c^KV per key
    W = torch.randn(dh, dc, generator=g, dtype=torch.float64)         # W^UK
    qr0 = torch.randn(T, dr, generator=g, dtype=torch.float64)        # W^QR c^Q (unrotated)
    Wkr = torch.randn(dr, dc, generator=g, dtype=torch.float64)       # W^KR acting on the latent

    def direct(off):
        s = torch.zeros(T, T, dtype=torch.float64)
        for t in range(T):
            for j in range(T):
                qt, kj = q[t], W @ c[j]
                if placement == "query_only":
                    qt = rot(t + off, dh) @ qt
                if placement == "keys_only":
                    kj = rot(j + off, dh) @ kj
                s[t, j] = qt @ kj
                if placement == "k_rope_from_latent":
                    s[t, j] += (rot(t + off, dr) @ qr0[t]) @ (rot(j + off, dr) @ (Wkr @ c[j]))
        return s

    def folded():   # absorb W^UK into whatever the query is; dot with the cached (un-rotated) latent
        s = torch.zeros(T, T, dtype=torch.float64)
        for t in range(T):
            qt = rot(t, dh) @ q[t] if placement == "query_only" else q[t]
            q_lat = W.T @ qt
            for j in range(T):
                s[t, j] = q_lat @ c[j]
                if placement == "k_rope_from_latent":
                    k_cached = rot(j, dr) @ (Wkr @ c[j])                     # cached rotated k^R
                    s[t, j] += (rot(t, dr) @ qr0[t]) @ k_cached
        return s

    d0 = direct(0)
    folds = torch.allclose(folded(), d0, atol=1e-9)
    relative = torch.allclose(direct(shift), d0, atol=1e-9)
    return folds, relative


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_3_2_truth_table_is_what_we_measure(placement):
    assert measure(placement) == PLACEMENTS[placement]


RIGHT_3_2 = {k: v for k, v in PLACEMENTS.items()}


def test_3_2_placeholder_and_right():
    r = check_rope_placements({k: (___, ___) for k in PLACEMENTS})
    assert r.status == NOT_ATTEMPTED and "R_{j-t}" in r.message
    assert check_rope_placements(RIGHT_3_2).status == RIGHT
    as_torch = {k: (torch.tensor(a), np.bool_(b)) for k, (a, b) in PLACEMENTS.items()}
    assert check_rope_placements(as_torch).status == RIGHT


@pytest.mark.parametrize("change,hint", [
    ({"keys_only": (True, False)}, "sits between W^UK and c^KV_j"),            # thinks a key rotation folds
    ({"query_only": (True, True)}, "absolute position t"),                     # thinks one-sided RoPE is relative
    ({"k_rope_from_latent": (False, True)}, "content path carries no rotation"),
    ({"query_only": (False, False)}, "computed once per query"),
], ids=["keys-fold", "query-relative", "latent-k-fold", "query-fold"])
def test_3_2_wrong_answers(change, hint):
    r = check_rope_placements(RIGHT_3_2 | change)
    assert r.status == WRONG and hint in r.message, r.message
    assert "1 of 6" in r.message


def test_3_2_malformed():
    assert "exactly the keys" in check_rope_placements({"query_only": (True, False)}).message
    assert "True or False" in check_rope_placements(RIGHT_3_2 | {"keys_only": (0, 1)}).message
    assert "pair" in check_rope_placements(RIGHT_3_2 | {"keys_only": True}).message


# ------------------------------------------------------------------ 3.3 position zero (the review's defect)
RIGHT_3_3 = {"wrong_yarn_factor": True, "yarn_range_from_extended_length": False,
             "missing_mscale_squared": True, "rotate_half_without_permutation": False}


def test_3_3_wrong_factor_changes_the_logit_at_position_zero_by_the_mscale_ratio():
    m2 = lambda s: (0.1 * math.log(s) + 1) ** 2  # noqa: E731
    assert m2(20) == pytest.approx(1.6889, abs=5e-5) and m2(40) == pytest.approx(1.8739, abs=5e-5)
    right, wrong = logit_with_mistake(None, 0, 0), logit_with_mistake("wrong_yarn_factor", 0, 0)
    assert wrong / right == pytest.approx(m2(20) / m2(40), rel=1e-6)
    assert logit_with_mistake("missing_mscale_squared", 0, 0) == pytest.approx(right / m2(40), rel=1e-6)
    for m in ("yarn_range_from_extended_length", "rotate_half_without_permutation"):
        assert logit_with_mistake(m, 0, 0) == pytest.approx(right, rel=1e-7)
        assert abs(logit_with_mistake(m, 5, 0) - logit_with_mistake(None, 5, 0)) > 1e-3   # visible at t ≥ 1
    assert set(RIGHT_3_3) == set(POSITION_ZERO_MISTAKES)


def test_3_3_placeholder_and_right():
    r = check_position_zero({k: ___ for k in POSITION_ZERO_MISTAKES})
    assert r.status == NOT_ATTEMPTED and "identity" in r.message
    assert check_position_zero(RIGHT_3_3).status == RIGHT
    assert check_position_zero({k: torch.tensor(v) for k, v in RIGHT_3_3.items()}).status == RIGHT


@pytest.mark.parametrize("change,hint", [
    ({"wrong_yarn_factor": False}, "1.6889 for s = 20 against 1.8739 for s = 40"),   # the old, rewarded answer
    ({"missing_mscale_squared": False}, "position 0 included"),
    ({"rotate_half_without_permutation": True}, "nothing rotates"),
    ({"yarn_range_from_extended_length": True}, "mscale depends on s alone"),
], ids=["factor-missed", "mscale-missed", "rotate-half", "range"])
def test_3_3_wrong_answers(change, hint):
    r = check_position_zero(RIGHT_3_3 | change)
    assert r.status == WRONG and hint in r.message, r.message


def test_3_3_old_answer_is_now_wrong():
    """The review's defect: the previous checker rewarded wrong_yarn_factor = False."""
    old = RIGHT_3_3 | {"wrong_yarn_factor": False}
    assert check_position_zero(old).status == WRONG
    assert "True or False" in check_position_zero(RIGHT_3_3 | {"wrong_yarn_factor": "yes"}).message


# ------------------------------------------------------------------ 3.4 softmax scale and cos/sin factor
def closed_3_4():
    rs = SCALE_EXERCISE_CONFIG["rope_scaling"]
    width = SCALE_EXERCISE_CONFIG["qk_nope_head_dim"] + SCALE_EXERCISE_CONFIG["qk_rope_head_dim"]
    m = lambda c: 0.1 * c * math.log(rs["factor"]) + 1  # noqa: E731
    return width ** -0.5 * m(rs["mscale_all_dim"]) ** 2, m(rs["mscale"]) / m(rs["mscale_all_dim"]), m, width


def test_3_4_right_answer_matches_closed_form_and_transformers():
    scale, factor, _, width = closed_3_4()
    assert scale == pytest.approx(0.1459966, abs=1e-6) and factor == pytest.approx(1.0679225, abs=1e-6)
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import yarn_apply_mscale
    params = dict(SCALE_EXERCISE_CONFIG["rope_scaling"], rope_type="yarn")
    assert yarn_apply_mscale(params, width ** -0.5) == pytest.approx(scale, rel=1e-9)
    assert check_softmax_scale((scale, factor)).status == RIGHT
    assert check_softmax_scale((torch.tensor(round(scale, 5)), np.float64(round(factor, 4)))).status == RIGHT


def test_3_4_placeholder():
    r = check_softmax_scale((___, ___))
    assert r.status == NOT_ATTEMPTED and "mscale_all_dim" in r.message


@pytest.mark.parametrize("which,hint", [
    ("mscale_field", "you used the `mscale` field"),
    ("not_squared", "square it"),
    ("content_width", "content AND rope"),
    ("factor_one", "for V3 the two coefficients are equal"),
    ("factor_inverted", "upside down"),
], ids=lambda x: x)
def test_3_4_wrong_answers(which, hint):
    scale, factor, m, width = closed_3_4()
    rs = SCALE_EXERCISE_CONFIG["rope_scaling"]
    answer = {"mscale_field": (width ** -0.5 * m(rs["mscale"]) ** 2, factor),
              "not_squared": (width ** -0.5 * m(rs["mscale_all_dim"]), factor),
              "content_width": (SCALE_EXERCISE_CONFIG["qk_nope_head_dim"] ** -0.5 * m(rs["mscale_all_dim"]) ** 2,
                                factor),
              "factor_one": (scale, 1.0),
              "factor_inverted": (scale, 1 / factor)}[which]
    r = check_softmax_scale(answer)
    assert r.status == WRONG and hint in r.message, r.message


def test_3_4_malformed_never_raises():
    assert "pair" in check_softmax_scale(0.146).message
    assert "must be a number" in check_softmax_scale((True, 1.0)).message
    assert "single number" in check_softmax_scale((torch.ones(2), 1.0)).message
