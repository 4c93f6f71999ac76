"""Chapter 3's exercise checkers: placeholder, typical wrong answers (with the diagnosis each gets), right answer.

Oracles: YaRN's frequencies written out here in float64 (numpy), the released code's index ramp and the YaRN
paper's ramp in r (YaRN arXiv 2309.00071 §3.2, h(θ) = (1 − γ)θ/s + γθ); the fold/relative truth of exercise 3.3
MEASURED here with explicit float64 rotation matrices; mscale(s, c) = 0.1·c·ln s + 1 in closed form and the issue's
numbers (mscale² 1.6889 for s = 20, 1.8739 for s = 40); transformers' YaRN softmax scale and cos/sin factor; the
bug hunt's serving-loop scores from explicit 2×2 rotation matrices. The bug hunt's unfixed code is taken from the chapter's
notebook cell itself.
"""
import math

import numpy as np
import pytest
import torch

import json
from pathlib import Path

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch03_rope.exercises import (BUGGY_ROPE_SCORES_STEP, PLACEMENTS, SCALE_EXERCISE_CONFIG,
                                                     YARN_EXERCISE_CONFIGS, ___, check_rope_placements,
                                                     check_rope_scores_step, check_rope_spread_prediction,
                                                     check_softmax_scale, check_yarn_paper_ramp, prompt_test)
from dsv3_lessons.course.ch03_rope.experiments import POSITION_ZERO_MISTAKES, logit_with_mistake

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
    (lambda d, b, rs: np.array([b ** (-2 * i / d) for i in range(d // 2)]), "every pair keeps θ_i"),
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


def test_3_2_theta_in_the_denominator_is_named_not_as_plain_rope():
    """Learner report: r = L/(2πθ) got "plain RoPE" (the symptom on V3); it must name θ in the denominator."""
    def over_theta(d, b, rs):
        theta = np.array([b ** (-2 * i / d) for i in range(d // 2)])
        r = rs["original_max_position_embeddings"] / (2 * math.pi * theta)
        g = np.clip((r - rs["beta_slow"]) / (rs["beta_fast"] - rs["beta_slow"]), 0, 1)
        return (1 - g) * theta / rs["factor"] + g * theta

    v3 = next(c for c in YARN_EXERCISE_CONFIGS if c[1] == 64 and c[3]["factor"] == 40)
    _, d, b, rs = v3
    assert np.allclose(over_theta(d, b, rs), [b ** (-2 * i / d) for i in range(d // 2)])   # plain RoPE on V3
    r = check_yarn_paper_ramp(over_theta)
    assert r.status == WRONG and "θ_i ended up in the denominator" in r.message, r.message
    assert "every pair keeps" not in r.message


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


# ------------------------------------------------------------------ chapter's position-0 table (cell after YaRN)
def test_wrong_factor_changes_the_logit_at_position_zero_by_the_mscale_ratio():
    m2 = lambda s: (0.1 * math.log(s) + 1) ** 2  # noqa: E731
    assert m2(20) == pytest.approx(1.6889, abs=5e-5) and m2(40) == pytest.approx(1.8739, abs=5e-5)
    right, wrong = logit_with_mistake(None, 0, 0), logit_with_mistake("wrong_yarn_factor", 0, 0)
    assert wrong / right == pytest.approx(m2(20) / m2(40), rel=1e-6)
    assert logit_with_mistake("missing_mscale_squared", 0, 0) == pytest.approx(right / m2(40), rel=1e-6)
    for m in ("yarn_range_from_extended_length", "rotate_half_without_permutation"):
        assert logit_with_mistake(m, 0, 0) == pytest.approx(right, rel=1e-7)
        assert abs(logit_with_mistake(m, 5, 0) - logit_with_mistake(None, 5, 0)) > 1e-3   # visible at t ≥ 1
    assert len(POSITION_ZERO_MISTAKES) == 4


# ------------------------------------------------------------------ 3.1 spread of the rope part, predict then run
# a run where the rope part varies 8 times as much as the content part (rope 1.6, content 0.2)
SPREADS = (1.6, 0.2)


def test_3_1_placeholder():
    r = check_rope_spread_prediction(___, *SPREADS)
    assert r.status == NOT_ATTEMPTED and "8 channels per head" in r.message
    assert "8.0" not in r.message


@pytest.mark.parametrize("guess", [8, 4, 20, np.float64(6.5), torch.tensor(10.0)])
def test_3_1_right(guess):
    r = check_rope_spread_prediction(guess, *SPREADS)
    assert r.status == RIGHT and "8.0 times as much" in r.message, r.message


@pytest.mark.parametrize("guess, words", [
    (0.5, ["no more than the content part", "8 channels against 16", "ratio of 8.0"]),   # the intuitive answer
    (1, ["no more than the content part"]),
    (2, ["the right direction", "far more than that"]),                 # nearer to 1 than to 8 on a log scale
    (2.7, ["the right direction"]),                                     # within 3× of 8 but nearer to 1
    (30, ["not by that much"]),
    (0, ["positive number"]),
    (-2, ["positive number"]),
    ("a lot", ["must be a number"]),
])
def test_3_1_wrong(guess, words, capsys):
    r = check_rope_spread_prediction(guess, *SPREADS)
    assert r.status == WRONG, r.message
    for w in words:
        assert w in r.message, (w, r.message)
    assert 'hint("3.1")' in capsys.readouterr().out


def test_3_1_notebook_hides_the_spreads_until_predicted():
    """Round 2: the stored chapter shows neither the spreads nor the figure before the prediction is written."""
    nb = json.loads(NOTEBOOK.read_text())
    cells = nb["cells"]
    k = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("prediction_3_1 = ___"))
    before = "".join("".join(o.get("text", "")) for c in cells[:k] if c["cell_type"] == "code" for o in c["outputs"])
    assert "std over" not in before and "rope part" not in before
    shown = [c for c in cells[k + 1:k + 4] if c["cell_type"] == "code" and "revealed(\"3.1\"" in "".join(c["source"])]
    assert len(shown) == 2
    for c in shown:
        text = "".join("".join(o.get("text", "")) for o in c["outputs"])
        assert "Hidden until you predict" in text and "std over" not in text
        assert not any(o.get("output_type") == "display_data" for o in c["outputs"])


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


@pytest.mark.parametrize("which, words", [
    ("v3_width", ["you used 192", "V3's query/key head width", "128 + 64", "take them from its config"]),
    ("v3_width_mscale_field", ["you used 192", "not `mscale`"]),
    ("v3_width_not_squared", ["you used 192", "square it"]),
    ("v3_width_no_temperature", ["you used 192", "temperature is missing"]),
    ("v3_scale", ["V3's softmax scale", "its own head widths"]),
], ids=lambda x: x if isinstance(x, str) else "")
def test_3_4_v3_width_192_is_named(which, words):
    """The head width carried over from V3 (192 = 128 + 64, the chapter's number) instead of this model's."""
    scale, factor, ratio, m, width = closed_3_4()
    rs = SCALE_EXERCISE_CONFIG["rope_scaling"]
    m_all, m_rope = m(rs["mscale_all_dim"]), m(rs["mscale"])
    v3_scale = 192 ** -0.5 * (0.1 * 1.0 * math.log(40) + 1) ** 2                 # the chapter's 0.1352338
    assert v3_scale == pytest.approx(0.1352338, abs=1e-7)
    answer = {"v3_width": 192 ** -0.5 * m_all ** 2, "v3_width_mscale_field": 192 ** -0.5 * m_rope ** 2,
              "v3_width_not_squared": 192 ** -0.5 * m_all, "v3_width_no_temperature": 192 ** -0.5,
              "v3_scale": v3_scale}[which]
    r = check_softmax_scale((answer, factor))
    assert r.status == WRONG and all(w in r.message for w in words), r.message
    assert "rope-part factor" not in r.message                                 # the right factor is not blamed
    for leak in (str(width), f"{scale:.4f}", f"{scale:.3f}", "^-1/2"):         # neither the width nor the answer
        assert leak not in r.message, (leak, r.message)


def test_3_4_malformed_never_raises():
    assert "pair" in check_softmax_scale(0.146).message
    assert "must be a number" in check_softmax_scale((True, 1.0)).message
    assert "single number" in check_softmax_scale((torch.ones(2), 1.0)).message


# ------------------------------------------------------------------ 3.5 bug hunt: decoded keys rotated at angle 0
def rot2(x, pos, theta):
    """Oracle rotation: explicit 2×2 matrices per pair, float64. x [n, d], pos [n]."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for n in range(x.shape[0]):
        for i in range(x.shape[1] // 2):
            a = float(pos[n]) * float(theta[i])
            m = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
            out[n, 2 * i:2 * i + 2] = m @ x[n, 2 * i:2 * i + 2].double()
    return out


def _exec(source):
    from dsv3_lessons.model.rope import apply_rope_interleaved

    ns = {"torch": torch, "apply_rope_interleaved": apply_rope_interleaved}
    exec(source, ns)  # noqa: S102  (the chapter's own cell text, or an edit of it)
    return ns["rope_scores_step"]


ANGLES = "angles = torch.arange(T)[:, None] * theta[None, :]"
START = "start = keys.shape[0] - T                                 # position of the first new token"


def _edit(*pairs):
    source = BUGGY_ROPE_SCORES_STEP
    for old, new in pairs:
        assert old in source, old
        source = source.replace(old, new)
    return _exec(source)


def _fixed():
    """The one-line fix: the new tokens' angles from their positions in the sequence (tokens already cached + i)."""
    return _edit((ANGLES, "angles = (sum(len(c) for c in cache) + torch.arange(T))[:, None] * theta[None, :]"))


def test_3_5_notebook_shows_the_checked_buggy_code():
    cells = _cells(NOTEBOOK)
    cell = next(c for c in cells if "def rope_scores_step" in c)
    assert BUGGY_ROPE_SCORES_STEP.strip() in cell and "prompt_test(rope_scores_step)" in cell
    assert any("check_rope_scores_step(___)" in c for c in cells)


def test_3_5_unfixed_code_passes_the_prompt_test_and_gets_a_symptom_only():
    buggy = _exec(BUGGY_ROPE_SCORES_STEP)
    assert "passes" in prompt_test(buggy)
    r = check_rope_scores_step(buggy)
    assert r.status == WRONG, r.message
    for w in ("the first call (the prompt) agrees", "call 2 (1 new token at position 4)", "own key is right"):
        assert w in r.message, (w, r.message)
    for cause in ("angle", "rotated at", "cache", "offset"):                 # the ✗ never names the cause
        assert cause not in r.message, cause


def test_3_5_right_against_explicit_rotations():
    """The fix, driven like a serving loop (prompt 3, then 1, 1, chunk 2), against 2×2 rotation matrices."""
    fixed = _fixed()
    assert check_rope_scores_step(fixed).status == RIGHT
    g = torch.Generator().manual_seed(0)
    n, d = 7, 8
    q, k = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    theta = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)])
    want = rot2(q, torch.arange(n), theta) @ rot2(k, torch.arange(n), theta).T
    cache, start = [], 0
    for T in (3, 1, 1, 2):
        got = fixed(cache, q[start:start + T], k[start:start + T], theta).double()
        ref = want[start:start + T, :start + T]
        visible = torch.arange(start + T)[None, :] <= start + torch.arange(T)[:, None]
        assert torch.allclose(got[visible], ref[visible], atol=1e-5) and torch.isinf(got[~visible]).all()
        start += T


def test_3_5_placeholder():
    r = check_rope_scores_step(___)
    assert r.status == NOT_ATTEMPTED and "prompt in one call" in r.message
    assert check_rope_scores_step(lambda cache, q, k, th: ___).status == NOT_ATTEMPTED


@pytest.mark.parametrize("edit, words", [
    ((ANGLES, "angles = (len(cache) + torch.arange(T))[:, None] * theta[None, :]"), ["number of earlier CALLS"]),
    ((ANGLES, "angles = (sum(len(c) for c in cache) + T + torch.arange(T))[:, None] * theta[None, :]"),
     ["T positions too far"]),
], ids=["calls-so-far", "after-append"])
def test_3_5_wrong_offsets_are_named(edit, words):
    r = check_rope_scores_step(_edit(edit))
    assert r.status == WRONG, r.message
    for w in words:
        assert w in r.message, (w, r.message)


def _half_fixed(which: str):
    """Only the keys (or only the queries) rotated at their sequence positions."""
    moved = "(sum(len(c) for c in cache) + torch.arange(T))[:, None] * theta[None, :]"
    pairs = [(ANGLES, f"{ANGLES}\n    angles_seq = {moved}\n    cos_s, sin_s = angles_seq.cos(), angles_seq.sin()")]
    if which == "keys":
        pairs.append(("cache.append(apply_rope_interleaved(k_raw, cos, sin))",
                      "cache.append(apply_rope_interleaved(k_raw, cos_s, sin_s))"))
    else:
        pairs.append(("scores = apply_rope_interleaved(q_raw, cos, sin) @ keys.T",
                      "scores = apply_rope_interleaved(q_raw, cos_s, sin_s) @ keys.T"))
    return _edit(*pairs)


def test_3_5_half_fixes_are_named():
    r = check_rope_scores_step(_half_fixed("keys"))
    assert r.status == WRONG and "each new query is still rotated at its index inside the call" in r.message, r.message
    r = check_rope_scores_step(_half_fixed("queries"))
    assert r.status == WRONG and "each new key is still rotated at its index" in r.message, r.message


def test_3_5_mask_and_malformed():
    fixed = _fixed()
    r = check_rope_scores_step(lambda cache, q, k, th: fixed(cache, q, k, th).nan_to_num(neginf=0.0))
    assert r.status == WRONG and "-inf entries are off" in r.message, r.message
    r = check_rope_scores_step(lambda cache, q, k, th: 2 * fixed(cache, q, k, th))
    assert r.status == WRONG and "differ by up to" in r.message, r.message
    assert "[T, tokens so far] = [4, 4]" in check_rope_scores_step(lambda cache, q, k, th: torch.zeros(3)).message
    assert "pass your fixed function" in check_rope_scores_step("rope_scores_step").message


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
    assert 'revealed("3.1", prediction_3_1)' in text
    solutions = " ".join(_cells(SOLUTIONS))
    assert solutions.count("Why") >= 5


def test_half_filled_bodies_are_not_attempted():
    """Expert review: a half-filled body reported "raised TypeError"; call_learner makes it "not attempted"."""
    def half_ramp(d, base, rope_scaling):
        theta = base ** (-torch.arange(0, d, 2) / d)
        gamma = ___
        return (1 - gamma) * theta + gamma * theta

    assert check_yarn_paper_ramp(half_ramp).status == NOT_ATTEMPTED

    def half_step(cache, q_raw, k_raw, theta):
        keys = ___
        return q_raw @ keys.T

    assert check_rope_scores_step(half_step).status == NOT_ATTEMPTED
