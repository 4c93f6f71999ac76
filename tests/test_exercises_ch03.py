"""Chapter 3's exercise checkers: placeholder, typical wrong answers (with the diagnosis each gets), right answer.

Oracles: YaRN's frequencies written out here in float64 (numpy), the released code's index ramp and the YaRN
paper's ramp in r (YaRN arXiv 2309.00071 §3.2, h(θ) = (1 − γ)θ/s + γθ); the fold/relative truth of exercise 3.3
MEASURED here with explicit float64 rotation matrices; mscale(s, c) = 0.1·c·ln s + 1 in closed form and the issue's
numbers (mscale² 1.6889 for s = 20, 1.8739 for s = 40); transformers' YaRN softmax scale and cos/sin factor; the
bug hunt's scores from explicit 2×2 rotation matrices. The bug hunt's unfixed code is taken from the chapter's
notebook cell itself.
"""
import math

import numpy as np
import pytest
import torch

import json
from pathlib import Path

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch03_rope.exercises import (BUGGY_DECODE_ROPE_SCORES, PLACEMENTS, POSITION_ZERO_MISTAKES,
                                                     SCALE_EXERCISE_CONFIG, YARN_EXERCISE_CONFIGS, ___,
                                                     check_decode_rope_scores, check_position_zero,
                                                     check_rope_placements, check_softmax_scale,
                                                     check_yarn_paper_ramp, position_zero_test)
from dsv3_lessons.course.ch03_rope.experiments import logit_with_mistake

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_rope_decoupling.ipynb"
SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions" / "03_rope_decoupling_solutions.ipynb"


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


# ------------------------------------------------------------------ 3.2 YaRN with the paper's ramp (code)
def yarn64(d, base, rs, *, length=None, floor_ceil=True, clamp_low=True, reverse=False):
    """float64, the released code's ramp: linear in the pair index between floor(low) and ceil(high)."""
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


def paper64(d, base, rs, *, length=None, keep_means_zero=False, alpha=None, beta=None):
    """float64, the YaRN paper's ramp: r = L/λ = L·θ/2π turns, γ(r) = clip((r − α)/(β − α)), h = (1 − γ)θ/s + γθ."""
    L = rs["original_max_position_embeddings"] if length is None else length
    a = rs["beta_slow"] if alpha is None else alpha
    b = rs["beta_fast"] if beta is None else beta
    theta = np.array([base ** (-2 * i / d) for i in range(d // 2)])
    r = L / (2 * math.pi / theta)
    gamma = np.clip((r - a) / (b - a), 0, 1)
    if keep_means_zero:
        return (1 - gamma) * theta + gamma * theta / rs["factor"]
    return (1 - gamma) * theta / rs["factor"] + gamma * theta


def test_yarn_oracles_on_v3():
    _, d, base, rs = YARN_EXERCISE_CONFIGS[2]
    theta = np.array([base ** (-2 * i / d) for i in range(d // 2)])
    t = yarn64(d, base, rs)
    assert np.allclose(t[:11], theta[:11]) and np.allclose(t[23:], theta[23:] / 40)   # low 10, high 23
    p = paper64(d, base, rs)
    r = 4096 * theta / (2 * math.pi)
    assert np.allclose(p[r > 32], theta[r > 32]) and np.allclose(p[r < 1], theta[r < 1] / 40)
    band = (r > 1) & (r < 32)
    assert band.sum() >= 10 and not np.allclose(p[band], t[band], rtol=1e-3)        # the two ramps differ there
    assert YARN_EXERCISE_CONFIGS[1][1] == 8          # the narrow config: low is negative before clamping


def test_3_2_placeholder():
    r = check_yarn_paper_ramp(lambda d, base, rs: ___)
    assert r.status == NOT_ATTEMPTED and "turns" in r.message
    assert check_yarn_paper_ramp(___).status == NOT_ATTEMPTED


def test_3_2_right_answer_in_numpy_and_torch():
    assert check_yarn_paper_ramp(lambda d, base, rs: paper64(d, base, rs)).status == RIGHT
    assert check_yarn_paper_ramp(lambda d, base, rs: torch.tensor(paper64(d, base, rs)).float()).status == RIGHT
    assert check_yarn_paper_ramp(lambda d, base, rs: list(paper64(d, base, rs))).status == RIGHT


@pytest.mark.parametrize("fn,hint", [
    (lambda d, b, rs: yarn64(d, b, rs), "released code's ramp"),                 # the chapter's ramp: named
    (lambda d, b, rs: paper64(d, b, rs, keep_means_zero=True), "γ = 1 means the pair KEEPS"),
    (lambda d, b, rs: paper64(d, b, rs, length=rs["original_max_position_embeddings"] * rs["factor"]),
     "extended window"),
    (lambda d, b, rs: np.array([b ** (-2 * i / d) for i in range(d // 2)]), "plain RoPE frequencies"),
    (lambda d, b, rs: np.array([b ** (-2 * i / d) for i in range(d // 2)]) / rs["factor"], "every pair is divided"),
    (lambda d, b, rs: paper64(d, b, rs, alpha=rs["beta_fast"], beta=rs["beta_slow"]), "Swapping α and β"),
    (lambda d, b, rs: np.ones(3), "d/2 = 32 numbers"),
    (lambda d, b, rs: 1 / 0, "ZeroDivisionError"),
    (lambda d, b, rs: paper64(d, b, rs) * np.r_[np.ones(d // 2 - 1), 2.0], "first wrong frequency is pair i = 31"),
    ("not a function", "pass your function"),
], ids=["index-ramp", "gamma-flipped", "extended", "no-yarn", "all-divided", "swapped", "shape", "raises", "other",
        "not-callable"])
def test_3_2_wrong_answers(fn, hint, capsys):
    r = check_yarn_paper_ramp(fn)
    assert r.status == WRONG and hint in r.message, r.message
    out = capsys.readouterr().out
    assert out.startswith("✗ Exercise 3.2") and 'hint("3.2")' in out


def test_3_2_inverse_turns_is_named():
    def inverse(d, b, rs):
        theta = np.array([b ** (-2 * i / d) for i in range(d // 2)])
        r = (2 * math.pi / theta) / rs["original_max_position_embeddings"]
        g = np.clip((r - rs["beta_slow"]) / (rs["beta_fast"] - rs["beta_slow"]), 0, 1)
        return (1 - g) * theta / rs["factor"] + g * theta

    assert "upside down" in check_yarn_paper_ramp(inverse).message


# ------------------------------------------------------------------ 3.3 placements (measured truth)
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
def test_3_3_truth_table_is_what_we_measure(placement):
    assert measure(placement) == PLACEMENTS[placement]


RIGHT_3_3P = {k: v for k, v in PLACEMENTS.items()}


def test_3_3_placeholder_and_right():
    r = check_rope_placements({k: (___, ___) for k in PLACEMENTS})
    assert r.status == NOT_ATTEMPTED and "(R_t q)ᵀ W^UK c_j" in r.message
    assert "R_{j-t}" not in r.message                          # the nudge no longer states the criterion
    assert check_rope_placements(RIGHT_3_3P).status == RIGHT
    as_torch = {k: (torch.tensor(a), np.bool_(b)) for k, (a, b) in PLACEMENTS.items()}
    assert check_rope_placements(as_torch).status == RIGHT


@pytest.mark.parametrize("change,hint", [
    ({"keys_only": (True, False)}, "sits between W^UK and c^KV_j"),            # thinks a key rotation folds
    ({"query_only": (True, True)}, "absolute position t"),                     # thinks one-sided RoPE is relative
    ({"k_rope_from_latent": (False, True)}, "content path carries no rotation"),
    ({"query_only": (False, False)}, "computed once per query"),
], ids=["keys-fold", "query-relative", "latent-k-fold", "query-fold"])
def test_3_3_placement_wrong_answers(change, hint):
    r = check_rope_placements(RIGHT_3_3P | change)
    assert r.status == WRONG and hint in r.message, r.message
    assert "1 of 6" in r.message


def test_3_3_malformed():
    assert "exactly the keys" in check_rope_placements({"query_only": (True, False)}).message
    assert "True or False" in check_rope_placements(RIGHT_3_3P | {"keys_only": (0, 1)}).message
    assert "pair" in check_rope_placements(RIGHT_3_3P | {"keys_only": True}).message


# ------------------------------------------------------------------ 3.1 position zero, predict then run
RIGHT_3_1 = {"wrong_yarn_factor": True, "yarn_range_from_extended_length": False,
             "missing_mscale_squared": True, "rotate_half_without_permutation": False}


def test_3_1_wrong_factor_changes_the_logit_at_position_zero_by_the_mscale_ratio():
    m2 = lambda s: (0.1 * math.log(s) + 1) ** 2  # noqa: E731
    assert m2(20) == pytest.approx(1.6889, abs=5e-5) and m2(40) == pytest.approx(1.8739, abs=5e-5)
    right, wrong = logit_with_mistake(None, 0, 0), logit_with_mistake("wrong_yarn_factor", 0, 0)
    assert wrong / right == pytest.approx(m2(20) / m2(40), rel=1e-6)
    assert logit_with_mistake("missing_mscale_squared", 0, 0) == pytest.approx(right / m2(40), rel=1e-6)
    for m in ("yarn_range_from_extended_length", "rotate_half_without_permutation"):
        assert logit_with_mistake(m, 0, 0) == pytest.approx(right, rel=1e-7)
        assert abs(logit_with_mistake(m, 5, 0) - logit_with_mistake(None, 5, 0)) > 1e-3   # visible at t ≥ 1
    assert set(RIGHT_3_1) == set(POSITION_ZERO_MISTAKES)


def test_3_1_placeholder_and_right():
    r = check_position_zero({k: ___ for k in POSITION_ZERO_MISTAKES})
    assert r.status == NOT_ATTEMPTED and "position 0" in r.message
    assert "softmax scale?" not in r.message and "identity" not in r.message     # the old hint gave it away
    assert check_position_zero(RIGHT_3_1).status == RIGHT
    assert check_position_zero({k: torch.tensor(v) for k, v in RIGHT_3_1.items()}).status == RIGHT


@pytest.mark.parametrize("change,hint", [
    ({"wrong_yarn_factor": False}, "1.6889 for s = 20 against 1.8739 for s = 40"),   # the old, rewarded answer
    ({"missing_mscale_squared": False}, "position 0 included"),
    ({"rotate_half_without_permutation": True}, "nothing rotates"),
    ({"yarn_range_from_extended_length": True}, "mscale depends on s alone"),
], ids=["factor-missed", "mscale-missed", "rotate-half", "range"])
def test_3_1_wrong_answers(change, hint):
    r = check_position_zero(RIGHT_3_1 | change)
    assert r.status == WRONG and hint in r.message, r.message


def test_3_1_old_answer_is_now_wrong():
    """The review's defect: the previous checker rewarded wrong_yarn_factor = False."""
    old = RIGHT_3_1 | {"wrong_yarn_factor": False}
    assert check_position_zero(old).status == WRONG
    assert "True or False" in check_position_zero(RIGHT_3_1 | {"wrong_yarn_factor": "yes"}).message


# ------------------------------------------------------------------ 3.4 softmax scale and the rope part's factor
def closed_3_4():
    rs = SCALE_EXERCISE_CONFIG["rope_scaling"]
    width = SCALE_EXERCISE_CONFIG["qk_nope_head_dim"] + SCALE_EXERCISE_CONFIG["qk_rope_head_dim"]
    m = lambda c: 0.1 * c * math.log(rs["factor"]) + 1  # noqa: E731
    ratio = m(rs["mscale"]) / m(rs["mscale_all_dim"])
    return width ** -0.5 * m(rs["mscale_all_dim"]) ** 2, ratio ** 2, ratio, m, width


def test_3_4_right_answer_matches_closed_form_and_transformers():
    scale, factor, ratio, _, width = closed_3_4()
    assert scale == pytest.approx(0.1459966, abs=1e-6) and ratio == pytest.approx(1.0679225, abs=1e-6)
    from transformers import DeepseekV3Config as HFConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import yarn_apply_mscale
    params = dict(SCALE_EXERCISE_CONFIG["rope_scaling"], rope_type="yarn")
    assert yarn_apply_mscale(params, width ** -0.5) == pytest.approx(scale, rel=1e-9)
    hf = HFConfig(qk_rope_head_dim=32, rope_theta=10000.0, rope_scaling=dict(SCALE_EXERCISE_CONFIG["rope_scaling"]),
                  max_position_embeddings=65536)
    _, hf_factor = ROPE_INIT_FUNCTIONS["yarn"](hf)
    assert hf_factor == pytest.approx(ratio, rel=1e-6)          # transformers scales cos AND sin by it
    # both q^R and k^R are rotated with the scaled tables: their dot product carries the factor twice
    q, k = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    assert ((hf_factor * q) @ (hf_factor * k)) / (q @ k) == pytest.approx(factor, rel=1e-9)
    assert check_softmax_scale((scale, factor)).status == RIGHT
    assert check_softmax_scale((torch.tensor(round(scale, 5)), np.float64(round(factor, 4)))).status == RIGHT


def test_3_4_placeholder():
    r = check_softmax_scale((___, ___))
    assert r.status == NOT_ATTEMPTED and "Which vectors do cos and sin touch" in r.message
    assert "mscale_all_dim" not in r.message                       # the old hint was the formula


@pytest.mark.parametrize("which,hint", [
    ("mscale_field", "you used the `mscale` field"),
    ("not_squared", "square it"),
    ("no_temperature", "temperature is missing"),
    ("content_width", "content AND rope"),
    ("factor_once", "gets the factor twice"),
    ("factor_one", "for V3 the two coefficients are equal"),
    ("factor_inverted", "upside down"),
    ("with_temperature", "mscale(s, mscale)² alone"),            # m_all²·ratio² is m_rope²
    ("with_softmax_scale", "cancels in the ratio"),
], ids=lambda x: x)
def test_3_4_wrong_answers(which, hint):
    scale, factor, ratio, m, width = closed_3_4()
    rs = SCALE_EXERCISE_CONFIG["rope_scaling"]
    answer = {"mscale_field": (width ** -0.5 * m(rs["mscale"]) ** 2, factor),
              "not_squared": (width ** -0.5 * m(rs["mscale_all_dim"]), factor),
              "no_temperature": (width ** -0.5, factor),
              "content_width": (SCALE_EXERCISE_CONFIG["qk_nope_head_dim"] ** -0.5 * m(rs["mscale_all_dim"]) ** 2,
                                factor),
              "factor_once": (scale, ratio),                     # the cos/sin factor itself: the common answer
              "factor_one": (scale, 1.0),
              "factor_inverted": (scale, 1 / factor),
              "with_temperature": (scale, factor * m(rs["mscale_all_dim"]) ** 2),
              "with_softmax_scale": (scale, factor * scale)}[which]
    r = check_softmax_scale(answer)
    assert r.status == WRONG and hint in r.message, r.message


def test_3_4_malformed_never_raises():
    assert "pair" in check_softmax_scale(0.146).message
    assert "must be a number" in check_softmax_scale((True, 1.0)).message
    assert "single number" in check_softmax_scale((torch.ones(2), 1.0)).message


# ------------------------------------------------------------------ 3.5 bug hunt: the cached rope key rotated twice
def rot2(x, pos, theta):
    """Oracle rotation: explicit 2×2 matrices per pair, float64. x [n, d], pos [n]."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for n in range(x.shape[0]):
        for i in range(x.shape[1] // 2):
            a = float(pos[n]) * float(theta[i])
            m = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
            out[n, 2 * i:2 * i + 2] = m @ x[n, 2 * i:2 * i + 2].double()
    return out


def chapter_rope(x, pos, theta):                      # the chapter's rope (cell "def rope"), for the exec'd code
    ang = pos[:, None].float() * theta[None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * ang.cos() - x1 * ang.sin(), x0 * ang.sin() + x1 * ang.cos()), dim=-1).flatten(-2)


def _exec(source):
    ns = {"torch": torch, "rope": chapter_rope}
    exec(source, ns)  # noqa: S102  (the chapter's own cell text)
    return ns["decode_rope_scores"]


FIX = ("keys = rope(torch.cat(cache), torch.arange(t + 1), theta)     # the cached keys 0..t",
       "keys = torch.cat(cache)")


def test_3_5_notebook_shows_the_checked_buggy_code():
    cells = _cells(NOTEBOOK)
    cell = next(c for c in cells if "def decode_rope_scores" in c)
    assert BUGGY_DECODE_ROPE_SCORES.strip() in cell and "position_zero_test(decode_rope_scores)" in cell
    assert any("check_decode_rope_scores(___)" in c for c in cells)
    assert any(c.startswith("def rope(x, pos, theta):") for c in cells)   # the rope the exercise uses


def test_3_5_unfixed_code_passes_position_zero_and_is_wrong():
    buggy = _exec(BUGGY_DECODE_ROPE_SCORES)
    assert "passes" in position_zero_test(buggy)
    r = check_decode_rope_scores(buggy)
    assert r.status == WRONG and "still rotated twice" in r.message and "2j·θ" in r.message


def test_3_5_right_against_explicit_rotations():
    fixed = _exec(BUGGY_DECODE_ROPE_SCORES.replace(*FIX))
    assert check_decode_rope_scores(fixed).status == RIGHT
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    theta = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)])
    want = rot2(q, torch.arange(5), theta) @ rot2(k, torch.arange(5), theta).T
    got = fixed(q, k, theta).double()
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    assert torch.allclose(got[causal], want[causal], atol=1e-5) and torch.isinf(got[~causal]).all()


def test_3_5_placeholder():
    r = check_decode_rope_scores(___)
    assert r.status == NOT_ATTEMPTED and "two decode steps" in r.message
    assert check_decode_rope_scores(lambda q, k, th: ___).status == NOT_ATTEMPTED


@pytest.mark.parametrize("edit,hint", [
    ((("cache.append(rope(k_raw[t:t + 1], torch.tensor([t]), theta))", "cache.append(k_raw[t:t + 1])"), FIX),
     "never rotated"),
    ((("cache.append(rope(k_raw[t:t + 1], torch.tensor([t]), theta))", "cache.append(k_raw[t:t + 1])"),
      ("keys = rope(torch.cat(cache), torch.arange(t + 1), theta)", "keys = rope(torch.cat(cache), torch.full((t + 1,), t), theta)")),
     "current step t"),
    ((FIX, ("q = rope(q_raw[t:t + 1], torch.tensor([t]), theta)", "q = q_raw[t:t + 1]")), "query is not rotated"),
    ((("keys = rope(torch.cat(cache), torch.arange(t + 1), theta)", "keys = rope(torch.cat(cache), torch.full((t + 1,), t), theta)"),),
     "again by the step t"),                      # the same numbers as an un-rotated query: one message for both
    ((FIX, ('scores = torch.full((T, T), float("-inf"))', "scores = torch.zeros(T, T)")), "mask"),
], ids=["unrotated", "rotated-at-t", "query", "j-plus-t", "mask"])
def test_3_5_wrong_fixes_are_named(edit, hint):
    source = BUGGY_DECODE_ROPE_SCORES
    for old, new in edit:
        assert old in source
        source = source.replace(old, new)
    r = check_decode_rope_scores(_exec(source))
    assert r.status == WRONG and hint in r.message, r.message


def test_3_5_other_wrong_and_malformed():
    fixed = _exec(BUGGY_DECODE_ROPE_SCORES.replace(*FIX))
    r = check_decode_rope_scores(lambda q, k, th: 2 * fixed(q, k, th))
    assert r.status == WRONG and "first differ at t = 0, j = 0" in r.message
    assert "[T, T] = [7, 7]" in check_decode_rope_scores(lambda q, k, th: torch.zeros(3)).message
    assert "pass your fixed function" in check_decode_rope_scores("decode_rope_scores").message


# ------------------------------------------------------------------ notebooks
def test_exercises_stored_unattempted_and_solutions_explain():
    """Issue 16: five exercises of five kinds, stored with ___ and the 'not attempted' line; solutions say why."""
    nb = json.loads(NOTEBOOK.read_text())
    outs = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    for n in ("3.1", "3.2", "3.3", "3.4", "3.5"):
        assert f"Exercise {n}: not attempted yet" in outs
    text = " ".join(_cells(NOTEBOOK))
    for kind in ("predict, then run", "variation", "explain with a number", "bug hunt"):
        assert kind in text
    solutions = " ".join(_cells(SOLUTIONS))
    assert solutions.count("Why") >= 5


def test_half_filled_bodies_are_not_attempted():
    """Expert review: a half-filled body reported "raised TypeError"; call_learner makes it "not attempted"."""
    def half_ramp(d, base, rope_scaling):
        theta = base ** (-torch.arange(0, d, 2) / d)
        gamma = ___
        return (1 - gamma) * theta + gamma * theta

    assert check_yarn_paper_ramp(half_ramp).status == NOT_ATTEMPTED

    def half_decode(q_raw, k_raw, theta):
        keys = ___
        return q_raw @ keys.T

    assert check_decode_rope_scores(half_decode).status == NOT_ATTEMPTED
