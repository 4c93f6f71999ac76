"""Exercise checkers of chapter 03 (RoPE, decoupled RoPE, YaRN): exercises 3.1–3.5, five kinds.

Every checker follows :mod:`dsv3_lessons.course.common.checking`: it never raises and prints one line -- "not
attempted yet" with a nudge (never the formula) for the placeholder ``___``, ``✗`` with a precise diagnosis and a
pointer to ``hint("3.N")``, ``✓`` for a right one. The right answers are computed here from the library
(:mod:`dsv3_lessons.model.rope`), from the YaRN paper's definitions, or measured
(:func:`dsv3_lessons.course.ch03_rope.experiments.logit_with_mistake`), never typed in; the tests check them against
closed-form arithmetic and the V3 numbers. The formulas are in the worked solutions.

* 3.1 **predict, then run** -- which mistakes does a test of the logit at query position 0 catch? The learner
  writes the prediction before the cell that measures it (YaRN §3.4; official ``inference/model.py``, mscale² in
  the softmax scale).
* 3.2 **variation** (code) -- the YaRN paper's own ramp, linear in the number of turns r (YaRN, arXiv 2309.00071,
  §3.2, eq. for h(θ) and γ(r)); the chapter wrote the released code's ramp, linear in the pair index.
* 3.3 **explain** -- three RoPE placements the chapter did not show: does W^UK fold, is the score relative? (V2
  report arXiv 2405.04434 §2.1.3; RoFormer arXiv 2104.09864 §3.2.2, eq. 16).
* 3.4 **explain with a number** -- the softmax scale, and the factor on the rope part of the logit, of a config
  whose ``mscale`` and ``mscale_all_dim`` differ.
* 3.5 **bug hunt** -- :data:`BUGGY_DECODE_ROPE_SCORES`, a decode loop that rotates the cached rope key a second
  time (SPEC §9, "cached rope key rotated twice"); it passes its author's position-0 test.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.course.common.checking import ___, Wrong, as_bool, as_number, call_learner, checker  # noqa: F401
from dsv3_lessons.course.ch03_rope.experiments import POSITION_ZERO_MISTAKES

__all__ = ["___", "YARN_EXERCISE_CONFIGS", "PLACEMENTS", "POSITION_ZERO_MISTAKES", "SCALE_EXERCISE_CONFIG",
           "BUGGY_DECODE_ROPE_SCORES", "check_position_zero", "check_yarn_paper_ramp", "check_rope_placements",
           "check_softmax_scale", "position_zero_test", "check_decode_rope_scores", "yarn_paper_inv_freq"]


# ================================================================================================ 3.1
# The mistakes of exercise 3.1 (the keys of its answer dict) are experiments.POSITION_ZERO_MISTAKES.


def _position_zero_truth() -> dict[str, bool]:
    """Measured: does the mistake change the logit of query 0 against key 0 (V3's rope settings)?"""
    from dsv3_lessons.course.ch03_rope.experiments import logit_with_mistake

    ref = logit_with_mistake(None, 0, 0)
    return {m: abs(logit_with_mistake(m, 0, 0) - ref) > 1e-6 * abs(ref) for m in POSITION_ZERO_MISTAKES}


def _mscale_sq(factor: float) -> float:
    from dsv3_lessons.model.rope import yarn_mscale

    return yarn_mscale(factor, 1.0) ** 2


@checker("3.1", hint="predict before you run: for each mistake, list everything it changes in softmax_scale·(q·k), "
                     "then ask which of those changes can still show when query and key both sit at position 0.",
         more=["The angle of pair i at position t is t·θ_i. What is it at t = 0, whatever θ_i is?",
               "Which of the four mistakes touch a number that is not an angle? Look at what the YaRN factor s "
               "feeds besides the frequencies (the section on the temperature)."])
def check_position_zero(answer):
    """Exercise 3.1 (predict, then run): which mistakes does a test that compares only the attention logit of
    query 0 against key 0 catch? ``answer``: dict mapping each of :data:`POSITION_ZERO_MISTAKES` to True
    (caught: the logit differs) / False.

    Graded by measuring the logit with each mistake in place, everything that follows from it included
    (:func:`~dsv3_lessons.course.ch03_rope.experiments.logit_with_mistake`): a wrong YaRN factor changes mscale and
    so the logit at position 0 (mscale² = 1.6889 for s = 20 against 1.8739 for s = 40); a range from the extended
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
        raise Wrong(f"{len(wrong)} of {len(POSITION_ZERO_MISTAKES)} predictions are off.\n  " + "\n  ".join(wrong))
    return ("right: the rotation cannot show at position 0, only what scales the logit can (a wrong factor, via "
            "mscale; a missing mscale²). Test rope code at positions ≥ 1.")


# ================================================================================================ 3.2
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


def yarn_paper_inv_freq(dim: int, base: float, rope_scaling: dict, *, length_mult: float = 1.0,
                        gamma_means_divide: bool = False, inverse_turns: bool = False) -> torch.Tensor:
    """YaRN's frequencies with the ramp exactly as the YaRN paper writes it (float64, ``[dim/2]`` rad/token).

    YaRN (Peng et al., arXiv 2309.00071) §3.2, "NTK-by-parts": r_i = L/λ_i = L·θ_i/2π is the number of full turns
    pair i makes in the original window L; γ(r) = 0 for r < α, 1 for r > β, (r − α)/(β − α) between, with
    α = ``beta_slow`` and β = ``beta_fast``; and h(θ_i) = (1 − γ)·θ_i/s + γ·θ_i. So γ = 1 KEEPS θ_i (the fast
    pairs), γ = 0 divides it by s -- the opposite of the index ramp of :func:`~dsv3_lessons.model.rope.yarn_inv_freq`
    (the released code's: linear in the pair index between the rounded low/high, 1 meaning "divide").
    The keyword knobs reproduce the mistakes the checker of exercise 3.2 names (the window ×``length_mult``,
    γ read the code's way, r inverted).
    """
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    s = float(rope_scaling["factor"])
    length = float(rope_scaling["original_max_position_embeddings"]) * length_mult
    alpha, beta = float(rope_scaling.get("beta_slow", 1)), float(rope_scaling.get("beta_fast", 32))
    turns = length * theta / (2 * math.pi)
    if inverse_turns:
        turns = 1 / turns
    gamma = ((turns - alpha) / (beta - alpha)).clamp(0, 1)
    if gamma_means_divide:
        return (1 - gamma) * theta + gamma * theta / s
    return (1 - gamma) * theta / s + gamma * theta


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


@checker("3.2", hint="the paper's ramp is a function of r, the number of turns a pair makes in the original window, "
                     "not of the pair index; and read carefully which end of its γ keeps θ.",
         more=["r_i depends on θ_i and the original window L only: how many radians does pair i turn over L tokens, "
               "and how many full turns is that?",
               "The paper's γ(r) is 0 below α and 1 above β, and γ = 1 means the pair is left alone. Which of "
               "beta_fast/beta_slow is α, which is β?",
               "No rounding and no clamping of low/high here: the paper's ramp has no pair indices in it."])
def check_yarn_paper_ramp(fn):
    """Exercise 3.2 (variation): ``fn(d, base, rope_scaling)`` returns YaRN's θ'_i ``[d/2]`` (rad/token) with the
    paper's ramp, linear in r (:func:`yarn_paper_inv_freq`), on the three :data:`YARN_EXERCISE_CONFIGS`.

    Named diagnoses: the released code's index ramp (the chapter's), γ read the code's way (γ = 1 dividing; α and
    β swapped gives the same numbers), the window taken ×s, plain RoPE, every pair divided, r inverted (λ/L).
    """
    from dsv3_lessons.model.rope import yarn_inv_freq

    if not callable(fn):
        raise Wrong(f"pass your function itself (check_yarn_paper_ramp(yarn_paper_frequencies)), got "
                    f"{type(fn).__name__}")
    for label, dim, base, rs in YARN_EXERCISE_CONFIGS:
        got = _as_vector(call_learner(fn, dim, base, dict(rs)), dim // 2)
        want = yarn_paper_inv_freq(dim, base, rs)
        if torch.allclose(got, want, rtol=1e-5, atol=0):
            continue
        where = f"for {label} (d = {dim}, s = {rs['factor']}, original window {rs['original_max_position_embeddings']})"
        theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        s = float(rs["factor"])
        diagnoses = [
            (yarn_inv_freq(dim, base, rs).double(),
             "that is the released code's ramp, the chapter's: linear in the pair INDEX between the rounded low "
             "and high. The paper's γ is linear in the number of turns r itself, with no rounding."),
            (yarn_paper_inv_freq(dim, base, rs, gamma_means_divide=True),
             "your γ = 1 divides by s. In the paper γ = 1 means the pair KEEPS θ_i (the fast pairs, many turns, "
             "have γ = 1); the chapter's index ramp uses the opposite convention. (Swapping α and β flips γ the "
             "same way: the ramp starts at beta_slow, 1 turn, and ends at beta_fast, 32 turns.)"),
            (yarn_paper_inv_freq(dim, base, rs, length_mult=s),
             "r was counted in the extended window (original × s). YaRN counts the turns each pair makes in the "
             "ORIGINAL pre-training window."),
            (theta, "these are the plain RoPE frequencies: nothing was interpolated."),
            (theta / s, "every pair is divided by s: only the slow pairs (r < α) are; fast pairs keep θ_i."),
            (yarn_paper_inv_freq(dim, base, rs, inverse_turns=True),
             "r is upside down: it counts turns in the window, L/λ_i = L·θ_i/2π, not λ_i/L."),
        ]
        for variant, why in diagnoses:
            if torch.allclose(got, variant, rtol=1e-5, atol=0):
                raise Wrong(f"{where}: {why}")
        bad = int(((got - want).abs() > 1e-5 * want.abs()).nonzero()[0])
        raise Wrong(f"{where}: the first wrong frequency is pair i = {bad} (you return {got[bad].item():.6g}, the "
                    f"paper's ramp gives {want[bad].item():.6g}). Check r_i and γ(r_i) for that pair.")
    return (f"the paper's ramp on all {len(YARN_EXERCISE_CONFIGS)} configs. It is linear in r, and r grows "
            f"exponentially with the pair index, so it differs from the released code's index ramp inside the "
            f"blend band; the two agree on the pairs that are kept or fully divided.")


# ================================================================================================ 3.3
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


@checker("3.3", hint="write the score of query t and key j with each rotation where this placement puts it, "
                     "e.g. (R_t q)ᵀ W^UK c_j, and test it for the two properties the chapter's cases (a)–(d) tested.",
         more=["Folds: can W^UK (and everything on the query side) be multiplied into one vector per query, with "
               "only things that depend on j on the other side?",
               "Relative: rotations of the same pair commute and R_tᵀ R_j = R_{j−t}. A rotation on one side only "
               "has nothing to meet."])
def check_rope_placements(answer):
    """Exercise 3.3: for each of :data:`PLACEMENTS`, the pair (W^UK folds exactly, score depends only on t − j).

    ``answer``: dict mapping each placement to a pair of bools. Every wrong entry gets its reason.
    Source: V2 report §2.1.3; RoFormer (arXiv 2104.09864) §3.2.2, eq. (16), the relative property.
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


@checker("3.4", hint="two numbers: what multiplies the whole logit, and by how much the rope part q^R·k^R grows "
                     "relative to the content part once cos and sin carry a factor. Which vectors do cos and sin "
                     "touch?",
         more=["Both config fields are coefficients c of one formula, mscale(s, c); the chapter's temperature "
               "section says which field feeds the softmax and which the cos/sin tables.",
               "cos and sin rotate q^R AND k^R, so a factor on them scales both vectors of the rope dot product. "
               "The softmax scale multiplies content and rope parts alike, so it cancels in the ratio."])
def check_softmax_scale(answer):
    """Exercise 3.4: ``answer = (softmax_scale, rope_part_factor)`` for :data:`SCALE_EXERCISE_CONFIG`.

    Right: softmax scale = (d_h + d_h^R)^-1/2 · mscale(s, mscale_all_dim)², read from the library
    (:func:`~dsv3_lessons.model.rope.softmax_scale`); the rope part q^R·k^R of the logit, relative to the content
    part, is multiplied by the square of the cos/sin factor mscale(s, mscale)/mscale(s, mscale_all_dim)
    (:class:`~dsv3_lessons.model.rope.RotaryEmbedding`'s ``cos_sin_factor``), since both q^R and k^R are rotated
    with the scaled tables. Numbers are accepted to a relative 1e-3 (they may be typed rounded).
    Source: V3 report §4.3; YaRN paper §3.4; official ``inference/model.py``; transformers' DeepseekV3.
    """
    from dsv3_lessons.model.rope import RotaryEmbedding, softmax_scale

    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"answer must be a pair (softmax_scale, rope_part_factor), got {answer!r}")
    scale = as_number(answer[0], "the softmax scale")
    factor = as_number(answer[1], "the factor on the rope part")
    c = SCALE_EXERCISE_CONFIG
    rs = c["rope_scaling"]
    width = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    s, m_coef, all_coef = float(rs["factor"]), float(rs["mscale"]), float(rs["mscale_all_dim"])
    right_scale = softmax_scale(width, rs)
    cos_sin = RotaryEmbedding(c["qk_rope_head_dim"], 10000.0, rs).cos_sin_factor
    right_factor = cos_sin ** 2
    m_all, m_rope = _temperature(s, all_coef), _temperature(s, m_coef)

    def near(x, y):
        return math.isclose(x, y, rel_tol=1e-3)

    problems = []
    if not near(scale, right_scale):
        scale_wrongs = [
            (width ** -0.5 * m_rope ** 2, "you used the `mscale` field; the softmax uses `mscale_all_dim`"),
            (width ** -0.5 * m_all, "mscale is applied twice (once per side, q and k): square it"),
            (width ** -0.5, "the YaRN temperature is missing: the logit carries mscale(s, mscale_all_dim)²"),
            (c["qk_nope_head_dim"] ** -0.5 * m_all ** 2, "the width is the whole query/key head, content AND rope "
                                                         f"channels: ({c['qk_nope_head_dim']} + "
                                                         f"{c['qk_rope_head_dim']})^-1/2"),
            (width ** -1 * m_all ** 2, "the scale is one over the SQUARE ROOT of the width"),
            (width ** -0.5 * m_all ** 2 * right_factor, "the cos/sin factor acts on the rope part only; the softmax "
                                                        "scale itself does not contain it"),
        ]
        msg = next((why for val, why in scale_wrongs if near(scale, val)),
                   "the softmax scale is off: it is the width's inverse square root times a squared temperature; "
                   "see hint(\"3.4\")")
        problems.append(f"softmax scale {scale:.6g}: {msg}.")
    if not near(factor, right_factor):
        factor_wrongs = [
            (cos_sin, "that is the cos/sin factor itself. cos and sin rotate both q^R and k^R, so their dot product "
                      "gets the factor twice: square it"),
            (1.0, "for V3 the two coefficients are equal and the factor is 1; here `mscale` and `mscale_all_dim` "
                  "differ"),
            (1 / right_factor, "the ratio is upside down: mscale(s, mscale) over mscale(s, mscale_all_dim)"),
            (1 / cos_sin, "the ratio is upside down (and it enters twice): mscale(s, mscale) over "
                          "mscale(s, mscale_all_dim), squared"),
            (m_rope ** 2, "that is mscale(s, mscale)² alone (the YaRN paper's rule for a config without "
                          "mscale_all_dim); DeepSeek configs divide by mscale(s, mscale_all_dim)"),
            (m_all ** 2 * right_factor, "relative to the content part: the softmax temperature multiplies both "
                                        "parts and cancels in the ratio"),
            (right_scale * right_factor, "relative to the content part: the softmax scale multiplies both parts and "
                                         "cancels in the ratio"),
        ]
        msg = next((why for val, why in factor_wrongs if near(factor, val)),
                   "the rope part's factor comes from the cos/sin tables of q^R and k^R; see hint(\"3.4\")")
        problems.append(f"rope-part factor {factor:.6g}: {msg}.")
    if problems:
        raise Wrong(" ".join(problems))
    return (f"softmax scale {right_scale:.6f} on the whole logit; the rope part grows {right_factor:.6f}-fold "
            f"against the content part (the cos/sin factor {cos_sin:.6f}, once on q^R and once on k^R).")


# ================================================================================================ 3.5
#: Exercise 3.5's code, exactly as the notebook shows it (the test checks the notebook cell holds this text). It
#: uses the chapter's ``rope(x, pos, theta)`` (interleaved pairs, ``x [..., seq, d]``). The mistake: the cache
#: keeps k^R already rotated, and this loop rotates what it reads from the cache again (SPEC §9, "cached rope key
#: rotated twice").
BUGGY_DECODE_ROPE_SCORES = '''\
def decode_rope_scores(q_raw, k_raw, theta):
    """Rope scores q^R_t·k^R_j of a decode loop with a rope-key cache; [T, T], -inf where j > t.
    q_raw, k_raw: [T, d] unrotated rope query/key of tokens 0..T-1; theta: [d/2] rad/token."""
    T = q_raw.shape[0]
    cache = []                                                        # k^R of the tokens so far
    scores = torch.full((T, T), float("-inf"))
    for t in range(T):                                                # one decode step per token
        cache.append(rope(k_raw[t:t + 1], torch.tensor([t]), theta))  # rotate the new key at its position
        keys = rope(torch.cat(cache), torch.arange(t + 1), theta)     # the cached keys 0..t
        q = rope(q_raw[t:t + 1], torch.tensor([t]), theta)           # the query at position t
        scores[t, : t + 1] = (q @ keys.T)[0]
    return scores
'''


def _reference_rope(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The chapter's rotation (interleaved pairs) on the library's tables: x ``[..., seq, d]``."""
    from dsv3_lessons.model.rope import apply_rope_interleaved

    ang = pos.double()[:, None] * theta.double()[None, :]
    return apply_rope_interleaved(x, ang.cos().float(), ang.sin().float())


def _decode_case(T: int = 7, d: int = 8, seed: int = 5):
    from dsv3_lessons.model.rope import yarn_inv_freq

    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(T, d, generator=g), torch.randn(T, d, generator=g)
    theta = yarn_inv_freq(d, 10000.0, {"factor": 4.0, "original_max_position_embeddings": 64})
    return q, k, theta


def _rope_scores(q, k, theta, q_angle_pos, k_angle_pos):
    """Causal [T, T] scores with q rotated at ``q_angle_pos[t]`` and key j at ``k_angle_pos(t, j)``."""
    T = q.shape[0]
    out = torch.full((T, T), float("-inf"))
    for t in range(T):
        qt = _reference_rope(q[t:t + 1], torch.tensor([q_angle_pos[t]]), theta)
        for j in range(t + 1):
            kj = _reference_rope(k[j:j + 1], torch.tensor([k_angle_pos(t, j)]), theta)
            out[t, j] = (qt @ kj.T)[0, 0]
    return out


def position_zero_test(fn) -> str:
    """The author's test of exercise 3.5's function: one token, at position 0, against the library's rotation.
    Returns (and the notebook prints) a sentence; raises AssertionError when ``fn`` fails (the buggy one passes)."""
    q, k, theta = _decode_case(T=1)
    want = _rope_scores(q, k, theta, [0], lambda t, j: j)
    assert torch.allclose(fn(q, k, theta), want, atol=1e-5)
    return "the author's test passes: one token at position 0 gives the library's score (max |difference| <= 1e-5)"


@checker("3.5", hint="the function passes its author's test, which has one token at position 0. Follow one key "
                     "through two decode steps: how many times is it rotated, and by which angle? Fix one line, then "
                     "pass decode_rope_scores to the checker.",
         more=["What does the cache hold: k^R before or after its rotation? (The chapter's section (c) says what "
               "MLA caches.)",
               "Which line applies a rotation to something that came out of the cache?"])
def check_decode_rope_scores(fn):
    """Exercise 3.5 (bug hunt): the learner's fixed ``decode_rope_scores(q_raw [T, d], k_raw [T, d], theta [d/2])``.

    Run on random rope queries/keys with T = 7 tokens and YaRN frequencies against scores built from the library's
    rotation (query at t, key at its own position j, each rotated once). Named: the cached key rotated twice (the
    unfixed code: key j at angle 2j·θ), keys never rotated, keys rotated at the query's position t, the query not
    rotated, the mask.
    """
    if not callable(fn):
        raise Wrong(f"pass your fixed function itself (check_decode_rope_scores(decode_rope_scores)), got "
                    f"{type(fn).__name__}")
    q, k, theta = _decode_case()
    T = q.shape[0]
    out = call_learner(fn, q.clone(), k.clone(), theta.clone())
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (T, T):
        raise Wrong(f"decode_rope_scores must return a [T, T] = [{T}, {T}] tensor, got "
                    f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    out = out.detach().float()
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    if not torch.isinf(out[~causal]).all() or torch.isinf(out[causal]).any():
        raise Wrong("the mask is off: scores[t, j] must be -inf exactly where j > t (keys the query cannot see yet)")
    want = _rope_scores(q, k, theta, list(range(T)), lambda t, j: j)
    if torch.allclose(out[causal], want[causal], atol=1e-4):
        return ("fixed: the cache holds k^R already rotated at its own position j, so reading it must not rotate "
                "it again. At position 0 both versions rotate by angle 0, which is why the author's test passed.")
    variants = [
        (lambda t, j: 2 * j, list(range(T)),
         "still rotated twice: key j is rotated once when it enters the cache and again when it is read, so it "
         "ends up at angle 2j·θ and the score depends on j, not on t − j. The cache already holds rotated keys"),
        (lambda t, j: 0, list(range(T)),
         "the keys are never rotated now: the score sees the query's absolute position only. Rotate each new key "
         "once, at its own position, before it enters the cache"),
        (lambda t, j: t, list(range(T)),
         "every cached key is rotated at the current step t instead of its own position j, so q^R·k^R no longer "
         "depends on the distance t − j"),
        (lambda t, j: j, [0] * T,
         "the scores are those of an un-rotated query against keys rotated at j: either the query is not rotated "
         "(q^R must be rotated at its own position t), or each cached key is rotated by its position and again by "
         "the step t (the two give the same numbers). Rotate the query once at t and each key once at j"),
    ]
    for k_pos, q_pos, why in variants:
        if torch.allclose(out[causal], _rope_scores(q, k, theta, q_pos, k_pos)[causal], atol=1e-4):
            raise Wrong(why)
    first = int((~torch.isclose(out[causal], want[causal], atol=1e-4)).nonzero()[0])
    t_bad, j_bad = (int(x) for x in causal.nonzero()[first])
    raise Wrong(f"the scores first differ at t = {t_bad}, j = {j_bad}: check which rotation each cached key and the "
                f"query receive, and at which position")
