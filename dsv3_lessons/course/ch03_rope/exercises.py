"""Exercise checkers of chapter 03 (RoPE, decoupled RoPE, YaRN): exercises 3.1–3.4.

Every checker follows :mod:`dsv3_lessons.course.common.checking`: it never raises and prints one line -- "not
attempted yet" with a first hint for the placeholder ``___``, ``✗`` with a precise diagnosis for a wrong
answer, ``✓`` for a right one. The right answers are computed here from the library
(:mod:`dsv3_lessons.model.rope`) or measured (:func:`dsv3_lessons.course.ch03_rope.experiments.logit_with_mistake`),
never typed in; the tests check them against closed-form arithmetic and the V3 numbers.

* 3.1 (code) -- write YaRN's frequencies for any config: ramp between low and high, blend (V3 report §4.3;
  YaRN paper arXiv 2309.00071 §3.2).
* 3.2 -- three RoPE placements the chapter did not show: does W^UK fold, is the score relative? (V2 report
  arXiv 2405.04434 §2.1.3).
* 3.3 -- which mistakes does a test of the logit at query position 0 catch? (YaRN §3.4; official
  ``inference/model.py``, mscale² in the softmax scale).
* 3.4 -- the softmax scale and the cos/sin factor of a config whose ``mscale`` and ``mscale_all_dim`` differ.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.course.common.checking import (___, Wrong, as_bool, as_number, checker)  # noqa: F401  (``___`` re-exported)
from dsv3_lessons.course.ch03_rope.experiments import POSITION_ZERO_MISTAKES

__all__ = ["___", "YARN_EXERCISE_CONFIGS", "PLACEMENTS", "POSITION_ZERO_MISTAKES", "SCALE_EXERCISE_CONFIG",
           "check_yarn_frequencies", "check_rope_placements", "check_position_zero", "check_softmax_scale"]

# ================================================================================================ 3.1
#: Exercise 3.1 grades the learner's function on these configs (dim, base, rope_scaling): two the chapter did
#: not show -- factor 16 over 8192 tokens, and a small model with 8 rope channels (its low comes out negative
#: and is clamped to 0) -- and DeepSeek-V3's.
YARN_EXERCISE_CONFIGS: tuple[tuple[str, int, float, dict], ...] = (
    ("factor 16 over an original window of 8192", 64, 10000.0,
     {"type": "yarn", "factor": 16, "original_max_position_embeddings": 8192, "beta_fast": 32, "beta_slow": 1}),
    ("8 rope channels, factor 4 over 64 tokens (a small model)", 8, 10000.0,
     {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1}),
    ("DeepSeek-V3", 64, 10000.0,
     {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1}),
)


def _pair_index(turns: float, dim: int, base: float, length: float) -> float:
    """Pair index whose wavelength fits ``turns`` full turns in ``length`` tokens (unrounded)."""
    return dim * math.log(length / (2 * math.pi * turns)) / (2 * math.log(base))


def _yarn_variant(dim: int, base: float, rs: dict, *, length_mult: float = 1.0, rounded: bool = True,
                  clamp_range: bool = True, clamp_ramp: bool = True, reverse: bool = False,
                  multiply: bool = False) -> torch.Tensor:
    """YaRN frequencies (float64) with one knob turned the way a typical mistake turns it."""
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    s = float(rs["factor"])
    length = float(rs["original_max_position_embeddings"]) * length_mult
    lo = _pair_index(rs.get("beta_fast", 32), dim, base, length)
    hi = _pair_index(rs.get("beta_slow", 1), dim, base, length)
    if rounded:
        lo, hi = math.floor(lo), math.ceil(hi)
    if clamp_range:
        lo, hi = max(lo, 0), min(hi, dim - 1)
    if hi == lo:
        hi += 0.001
    ramp = (torch.arange(dim // 2, dtype=torch.float64) - lo) / (hi - lo)
    if clamp_ramp:
        ramp = ramp.clamp(0, 1)
    if reverse:
        ramp = 1 - ramp
    slow = theta * s if multiply else theta / s
    return theta * (1 - ramp) + slow * ramp


def _as_vector(value, n: int) -> torch.Tensor:
    """The learner's frequencies as a float64 vector of ``n`` numbers, or Wrong with what is off."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to(torch.float64)
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise Wrong(f"your function returned {type(value).__name__}; return d/2 numbers (a tensor or list), "
                        f"one frequency per pair") from None
    if t.shape != (n,):
        raise Wrong(f"your function returned shape {tuple(t.shape)}; it should return d/2 = {n} numbers, one "
                    f"frequency θ'_i per pair")
    return t


@checker("3.1", hint="start from θ_i = base**(-2i/d); find low (from beta_fast) and high (from beta_slow) in "
                     "the ORIGINAL window, build the ramp (i - low)/(high - low) clamped to [0, 1], then blend "
                     "θ_i·(1 - ramp) + (θ_i/s)·ramp.")
def check_yarn_frequencies(fn):
    """Exercise 3.1: ``fn(d, base, rope_scaling)`` must return YaRN's frequencies θ'_i (``[d/2]``, rad/token).

    Graded on :data:`YARN_EXERCISE_CONFIGS` against :func:`dsv3_lessons.model.rope.yarn_inv_freq`
    (relative tolerance 1e-5). Diagnosed mistakes: no YaRN at all, every pair divided, the ramp from the
    extended length, the ramp reversed, multiplying by s, unrounded low/high, low not clamped at 0, the ramp
    not clamped to [0, 1]. Source: V3 report §4.3; YaRN paper §3.2 ("NTK-by-parts").
    """
    from dsv3_lessons.model.rope import yarn_inv_freq

    if not callable(fn):
        raise Wrong(f"pass your function itself (check_yarn_frequencies(yarn_frequencies)), got "
                    f"{type(fn).__name__}")
    for label, dim, base, rs in YARN_EXERCISE_CONFIGS:
        out = fn(dim, base, dict(rs))
        if out is ___ or out is Ellipsis:
            raise NotImplementedError
        got = _as_vector(out, dim // 2)
        want = yarn_inv_freq(dim, base, rs).double()
        if torch.allclose(got, want, rtol=1e-5, atol=0):
            continue
        where = f"for {label} (d = {dim}, s = {rs['factor']}, original window {rs['original_max_position_embeddings']})"
        theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        s = float(rs["factor"])
        diagnoses = [
            (theta, "these are the plain RoPE frequencies: nothing was interpolated. Pairs from low to high "
                    "must move toward θ_i/s and pairs above high reach θ_i/s."),
            (theta / s, "every pair is divided by s. Only the slow pairs (i ≥ high) are; the fast pairs (i ≤ low) "
                        "keep θ_i, and the pairs between are blended."),
            (_yarn_variant(dim, base, rs, length_mult=s), "low and high came from the extended window "
                                                          "(original × s). YaRN counts the turns each pair makes "
                                                          "in the ORIGINAL pre-training window."),
            (_yarn_variant(dim, base, rs, reverse=True), "the ramp runs the wrong way: the fast pairs (i ≤ low, "
                                                         "many turns in the window) must keep θ_i; the slow "
                                                         "pairs are divided by s."),
            (_yarn_variant(dim, base, rs, multiply=True), "the slow pairs were multiplied by s. Interpolation "
                                                          "DIVIDES their frequency (a longer wavelength)."),
            (_yarn_variant(dim, base, rs, rounded=False), "low and high are unrounded. Round low down (floor) "
                                                          "and high up (ceil)."),
            (_yarn_variant(dim, base, rs, clamp_range=False), "for this config low comes out negative; clamp "
                                                              "it at 0 (and high at d - 1), as the official code "
                                                              "does."),
            (_yarn_variant(dim, base, rs, clamp_ramp=False), "the ramp is not clamped: it must stay 0 below low "
                                                             "and 1 above high (clamp it to [0, 1])."),
        ]
        for variant, why in diagnoses:
            if torch.allclose(got, variant, rtol=1e-5, atol=0):
                raise Wrong(f"{where}: {why}")
        bad = int(((got - want).abs() > 1e-5 * want.abs()).nonzero()[0])
        raise Wrong(f"{where}: the first wrong frequency is pair i = {bad} (you return {got[bad].item():.6g}). "
                    f"Check the part of the formula that covers that pair: keep (i ≤ low), blend, or divide by s "
                    f"(i ≥ high).")
    return (f"your YaRN frequencies match dsv3_lessons.model.rope.yarn_inv_freq on all "
            f"{len(YARN_EXERCISE_CONFIGS)} configs (rtol 1e-5).")


# ================================================================================================ 3.2
#: Exercise 3.2's placements of RoPE (none of them shown in the chapter) and, for each, the truth
#: (W^UK folds into the query exactly with only the latent (+ a rotated k^R) cached, the score depends only on t − j).
PLACEMENTS: dict[str, tuple[bool, bool]] = {
    "query_only": (True, False),
    "keys_only": (False, False),
    "k_rope_from_latent": (True, True),
}

_PLACEMENT_WHY = {
    ("query_only", 0): "RoPE only on the query: score = (R_t q^C_t)ᵀ W^UK c^KV_j. The absorbed query "
                       "W^UKᵀ R_t q^C_t is computed once per query (it depends on t only), so W^UK folds.",
    ("query_only", 1): "RoPE only on the query: the score (R_t q)ᵀ k sees the absolute position t of the query "
                       "and nothing of j, so it is not a function of t − j.",
    ("keys_only", 0): "RoPE only on the key: score = q^Cᵀ R_j W^UK c^KV_j. R_j changes with every key and sits "
                      "between W^UK and c^KV_j: no fixed matrix can be absorbed.",
    ("keys_only", 1): "RoPE only on the key: the score sees the absolute key position j (R_j alone), not t − j.",
    ("k_rope_from_latent", 0): "k^R_j = R_j W^KR c^KV_j is still a separate 64-wide key, rotated once and cached "
                               "(or recomputed) beside the latent; the content path carries no rotation, so "
                               "W^UK folds exactly.",
    ("k_rope_from_latent", 1): "both rope vectors are rotated, R_t on q^R and R_j on k^R, so the rope score is "
                               "q^Rᵀ R_{j-t} k^R: it depends only on j - t, whatever k^R was computed from.",
}


@checker("3.2", hint="write the score of query t and key j with the rotations in place, e.g. "
                     "(R_t q)ᵀ W^UK c_j. It folds if no rotation that depends on j sits between W^UK and c_j; it "
                     "is relative if the rotations meet as R_tᵀ R_j = R_{j-t}.")
def check_rope_placements(answer):
    """Exercise 3.2: for each of :data:`PLACEMENTS`, the pair (W^UK folds exactly, score depends only on t − j).

    ``answer``: dict mapping each placement to a pair of bools. Every wrong entry gets its reason.
    Source: V2 report §2.1.3; RoFormer §3.4.2.
    """
    if not isinstance(answer, dict):
        raise Wrong(f"answer must be a dict {{placement: (folds, relative)}}, got {type(answer).__name__}")
    if set(answer) != set(PLACEMENTS):
        raise Wrong(f"answer must have exactly the keys {tuple(PLACEMENTS)}, got {tuple(answer)}")
    wrong = []
    for name, truth in PLACEMENTS.items():
        pair = answer[name]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise Wrong(f"answer[{name!r}] must be a pair (folds, relative) of True/False, got {pair!r}")
        got = (as_bool(pair[0], f"answer[{name!r}][0] (folds)"), as_bool(pair[1], f"answer[{name!r}][1] (relative)"))
        for k, what in ((0, "folds"), (1, "relative")):
            if got[k] != truth[k]:
                wrong.append(f"{name} {what} = {got[k]}: {_PLACEMENT_WHY[(name, k)]}")
    if wrong:
        raise Wrong(f"{len(wrong)} of 6 entries are off.\n  " + "\n  ".join(wrong))
    return "all 6 entries right: only a rotation on BOTH sides gives a relative score, and only a rotation that " \
           "avoids the content path keeps the fold."


# ================================================================================================ 3.3
# The mistakes of exercise 3.3 (the keys of its answer dict) are rope_lessons.POSITION_ZERO_MISTAKES.


def _position_zero_truth() -> dict[str, bool]:
    """Measured: does the mistake change the logit of query 0 against key 0 (V3's rope settings)?"""
    from dsv3_lessons.course.ch03_rope.experiments import logit_with_mistake

    ref = logit_with_mistake(None, 0, 0)
    return {m: abs(logit_with_mistake(m, 0, 0) - ref) > 1e-6 * abs(ref) for m in POSITION_ZERO_MISTAKES}


def _mscale_sq(factor: float) -> float:
    from dsv3_lessons.model.rope import yarn_mscale

    return yarn_mscale(factor, 1.0) ** 2


@checker("3.3", hint="at position 0 every rotation is the identity (angle 0·θ_i = 0). So ask of each mistake: "
                     "does it change anything besides the rotation angles, e.g. the softmax scale?")
def check_position_zero(answer):
    """Exercise 3.3: which mistakes does a test that compares only the attention logit of query 0 against
    key 0 catch? ``answer``: dict mapping each of :data:`POSITION_ZERO_MISTAKES` to True (caught) / False.

    Graded by measuring the logit with each mistake in place, everything that follows from it included
    (:func:`~dsv3_lessons.course.ch03_rope.experiments.logit_with_mistake`): a wrong YaRN factor changes mscale and so the
    logit at position 0 (mscale² = 1.6889 for s = 20 against 1.8739 for s = 40); a range from the extended
    length and the rotate_half pairing change only rotation angles, invisible at position 0.
    Source: V3 report §4.3; YaRN paper §3.4; official ``inference/model.py``.
    """
    if not isinstance(answer, dict):
        raise Wrong(f"answer must be a dict {{mistake: True/False}}, got {type(answer).__name__}")
    if set(answer) != set(POSITION_ZERO_MISTAKES):
        raise Wrong(f"answer must have exactly the keys {POSITION_ZERO_MISTAKES}, got {tuple(answer)}")
    got = {m: as_bool(answer[m], f"answer[{m!r}]") for m in POSITION_ZERO_MISTAKES}
    truth = _position_zero_truth()
    m20, m40 = _mscale_sq(20), _mscale_sq(40)
    why = {
        ("wrong_yarn_factor", False): f"the factor s also sets the temperature mscale = 0.1·ln s + 1, which enters "
                                      f"the softmax scale squared: {m20:.4f} for s = 20 against {m40:.4f} for s = 40. "
                                      f"The logit at position 0 changes by that ratio even though the rotation "
                                      f"there is the identity.",
        ("yarn_range_from_extended_length", True): "the ramp range changes only the frequencies θ'_i, and at "
                                                   "position 0 every frequency gives the angle 0; mscale depends "
                                                   "on s alone, so the logit there is unchanged.",
        ("rotate_half_without_permutation", True): "pairing channel i with i + d/2 changes which channels rotate "
                                                   "together, but at position 0 nothing rotates: the logit is q·k "
                                                   "either way.",
        ("missing_mscale_squared", False): "mscale² multiplies every logit, position 0 included: leaving it out "
                                           f"divides the logit there by {m40:.4f}.",
    }
    wrong = [f"{m} = {got[m]}: {why.get((m, got[m]), '')}".rstrip(": ") for m in POSITION_ZERO_MISTAKES
             if got[m] != truth[m]]
    if wrong:
        raise Wrong(f"{len(wrong)} of {len(POSITION_ZERO_MISTAKES)} answers are off.\n  " + "\n  ".join(wrong))
    return ("right: the rotation cannot show at position 0, only what scales the logit can (a wrong factor, via "
            "mscale; a missing mscale²). Test rope code at positions ≥ 1.")


# ================================================================================================ 3.4
#: Exercise 3.4's model: the widths of its query/key head and its YaRN settings (``mscale`` differs from
#: ``mscale_all_dim``, unlike V3).
SCALE_EXERCISE_CONFIG: dict = {
    "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
    "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 4096, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707},
}


def _temperature(s: float, coef: float) -> float:
    return 0.1 * coef * math.log(s) + 1.0


@checker("3.4", hint="each config field is a coefficient in 0.1·coef·ln(s) + 1. The softmax scale is "
                     "(d_h + d_h^R)^-1/2 times the square of the one built from mscale_all_dim; cos/sin are "
                     "multiplied by the ratio of the two.")
def check_softmax_scale(answer):
    """Exercise 3.4: ``answer = (softmax_scale, cos_sin_factor)`` for :data:`SCALE_EXERCISE_CONFIG`.

    Right: softmax scale = (d_h + d_h^R)^-1/2 · mscale(s, mscale_all_dim)², cos/sin factor =
    mscale(s, mscale)/mscale(s, mscale_all_dim), with mscale(s, c) = 0.1·c·ln s + 1 -- read from the library
    (:func:`~dsv3_lessons.model.rope.softmax_scale`, :class:`~dsv3_lessons.model.rope.RotaryEmbedding`).
    Numbers are accepted to a relative 1e-3 (they may be typed rounded).
    Source: V3 report §4.3; YaRN paper §3.4; official ``inference/model.py``; transformers' DeepseekV3.
    """
    from dsv3_lessons.model.rope import RotaryEmbedding, softmax_scale

    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"answer must be a pair (softmax_scale, cos_sin_factor), got {answer!r}")
    scale = as_number(answer[0], "the softmax scale")
    factor = as_number(answer[1], "the cos/sin factor")
    c = SCALE_EXERCISE_CONFIG
    rs = c["rope_scaling"]
    width = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    s, m_coef, all_coef = float(rs["factor"]), float(rs["mscale"]), float(rs["mscale_all_dim"])
    right_scale = softmax_scale(width, rs)
    right_factor = RotaryEmbedding(c["qk_rope_head_dim"], 10000.0, rs).cos_sin_factor
    m_all, m_rope = _temperature(s, all_coef), _temperature(s, m_coef)

    def near(x, y):
        return math.isclose(x, y, rel_tol=1e-3)

    problems = []
    if not near(scale, right_scale):
        scale_wrongs = [
            (width ** -0.5 * m_rope ** 2, "you used the `mscale` field; the softmax uses `mscale_all_dim`"),
            (width ** -0.5 * m_all, "mscale is applied twice (once per side, q and k): square it"),
            (width ** -0.5, "the YaRN temperature is missing: multiply by mscale(s, mscale_all_dim)²"),
            (c["qk_nope_head_dim"] ** -0.5 * m_all ** 2, "the width is the whole query/key head, content AND rope "
                                                         f"channels: ({c['qk_nope_head_dim']} + "
                                                         f"{c['qk_rope_head_dim']})^-1/2"),
            (width ** -1 * m_all ** 2, "the scale is one over the SQUARE ROOT of the width"),
            (width ** -0.5 * m_all ** 2 * factor ** 2, "cos/sin carry their own factor; the softmax scale itself "
                                                       "is (d_h + d_h^R)^-1/2 · mscale(s, mscale_all_dim)² only"),
        ]
        msg = next((why for val, why in scale_wrongs if near(scale, val)),
                   "the softmax scale is off: (d_h + d_h^R)^-1/2 times mscale(s, mscale_all_dim)², "
                   "mscale(s, c) = 0.1·c·ln s + 1")
        problems.append(f"softmax scale {scale:.6g}: {msg}.")
    if not near(factor, right_factor):
        factor_wrongs = [
            (1.0, "for V3 the two coefficients are equal, so the ratio is 1; here `mscale` and "
                  "`mscale_all_dim` differ"),
            (1 / right_factor, "the ratio is upside down: mscale(s, mscale) / mscale(s, mscale_all_dim)"),
            (m_rope, "that is mscale(s, mscale) alone (the YaRN paper's rule when the config has no "
                     "mscale_all_dim); DeepSeek configs divide it by mscale(s, mscale_all_dim)"),
            (m_all, "that is mscale(s, mscale_all_dim), which belongs to the softmax scale; cos/sin get the "
                    "ratio mscale(s, mscale) / mscale(s, mscale_all_dim)"),
        ]
        msg = next((why for val, why in factor_wrongs if near(factor, val)),
                   "the cos/sin factor is mscale(s, mscale) / mscale(s, mscale_all_dim)")
        problems.append(f"cos/sin factor {factor:.6g}: {msg}.")
    if problems:
        raise Wrong(" ".join(problems))
    return (f"softmax scale {right_scale:.6f} and cos/sin factor {right_factor:.6f}: the logit temperature comes "
            f"from mscale_all_dim, cos/sin get the ratio of the two coefficients.")
