"""Exercise checkers of chapter 03 (RoPE, decoupled RoPE, YaRN): exercises 3.1–3.5, five kinds.

Every checker follows :mod:`dsv3_lessons.course.common.checking`: it never raises and prints one line -- "not
attempted yet" with a nudge (never the formula) for the placeholder ``___``, ``✗`` with a precise diagnosis and a
pointer to ``hint("3.N")``, ``✓`` for a right one. The right answers are computed here from the library
(:mod:`dsv3_lessons.model.rope`), from the YaRN paper's definitions, or measured in the learner's own run, never
typed in; the tests check them against closed-form arithmetic and the V3 numbers. The formulas are in the worked
solutions.

* 3.1 **predict, then run** -- on the trained model of the chapter, how does the spread of the rope part of layer
  0's logits compare with the content part's? The intuitive answer ("less: 8 channels against 16") is wrong by an
  order of magnitude: layer 0 puts its positional rule in the rope channels. The experiment cells show their
  numbers only once the prediction is written (``revealed``).
* 3.2 **variation** (code) -- the YaRN paper's own ramp, linear in the number of turns r (YaRN, arXiv 2309.00071,
  §3.2, eq. for h(θ) and γ(r)); the chapter wrote the released code's ramp, linear in the pair index.
* 3.3 **explain** -- three RoPE placements the chapter did not show: does W^UK fold, is the score relative? (V2
  report arXiv 2405.04434 §2.1.3; RoFormer arXiv 2104.09864 §3.2.2, eq. 16).
* 3.4 **explain with a number** -- the softmax scale, and the factor on the rope part of the logit, of a config
  whose ``mscale`` and ``mscale_all_dim`` differ.
* 3.5 **bug hunt** -- :data:`BUGGY_ROPE_SCORES_STEP`, one serving step of the rope scores with a k^R cache that
  rotates the new tokens at positions 0..T−1 of their own call instead of their place in the sequence: right for
  the prompt (its author's test), wrong for every token decoded after it -- each decoded key enters the cache
  rotated at angle 0, i.e. not rotated (SPEC §9, "cached rope key rotated … not at all").
"""
from __future__ import annotations

import math
import textwrap

import torch

from dsv3_lessons.course.common.checking import ___, Wrong, as_bool, as_number, call_learner, checker  # noqa: F401

__all__ = ["___", "YARN_EXERCISE_CONFIGS", "PLACEMENTS", "SCALE_EXERCISE_CONFIG", "BUGGY_ROPE_SCORES_STEP",
           "check_rope_spread_prediction", "check_yarn_paper_ramp", "check_rope_placements", "check_softmax_scale",
           "prompt_test", "check_rope_scores_step", "yarn_paper_inv_freq", "ROPE_CHANNELS_READING"]


# ================================================================================================ 3.1
@checker("3.1", hint="predict before you run: the rope part has 8 channels per head, the content part 16. What does "
                     "each part of layer 0's logit get to see: which characters meet, how far apart they are, or "
                     "both? A positive number: std(rope part) / std(content part).",
         more=["Look at the left panel of the figure: which curve swings with the distance t − j, and by how much "
               "next to the other?",
               "The content part of layer 0's logit sees only which two characters meet (layer 0's input is just "
               "the token's embedding). What can it know about how far apart they are?",
               "Compare the printed weight on the previous character with and without the rope part: what rule did "
               "layer 0 learn, and which channels are the only ones that can carry it?"])
def check_rope_spread_prediction(prediction, spread_rope, spread_content):
    """Exercise 3.1 (predict, then run): the learner's guess of std(rope part)/std(content part) of the trained
    model's layer-0 logits (over all heads and (t, j) pairs with j ≤ t), against the measured ``spread_rope`` and
    ``spread_content`` of the learner's own run.

    ✓ when the guess is nearer, on a log scale, to the measured ratio than to 1 (the two parts varying alike) and
    within a factor 3 of it; ✗ otherwise, saying what the guess expected and what was measured.
    """
    ratio = as_number(spread_rope, "spread_rope") / as_number(spread_content, "spread_content")
    guess = as_number(prediction, "your prediction (a ratio of spreads)")
    if guess <= 0:
        raise Wrong(f"{guess:g} is not a ratio of two spreads: a standard deviation is positive, so the ratio is a "
                    f"positive number (1 = equal spread)")
    tail = (f"(measured in your run: rope part {spread_rope:.2f}, content part {spread_content:.2f}, a ratio of "
            f"{ratio:.1f})")
    to_measured, to_one = abs(math.log(guess / ratio)), abs(math.log(guess))
    if to_measured < to_one and to_measured <= math.log(3):
        return (f"you predicted {guess:g}; the rope part varies {ratio:.1f} times as much as the content part "
                f"{tail}. With a third of the channels it carries most of what changes from pair to pair: layer 0 "
                f"learned a rule about position, and the rope channels are the only place position exists in MLA.")
    if guess <= 1:
        raise Wrong(f"you predicted {guess:g}: the rope part varying no more than the content part, as its 8 "
                    f"channels against 16 suggest. It varies {ratio:.1f} times as much {tail}. The content part "
                    f"of layer 0 sees only which characters meet; the figure shows what the rope part does.")
    if guess < ratio:
        raise Wrong(f"you predicted {guess:g}: the right direction, the rope part varies more. But it dominates far "
                    f"more than that {tail}. The figure and the weight on the previous character show why.")
    raise Wrong(f"you predicted {guess:g}: the rope part does dominate, but not by that much {tail}.")


#: What the run of exercise 3.1 shows, printed under its figure once the prediction is written: the chapter's prose
#: around the exercise says what to look at, never what is there (the experiment cells assert each claim).
ROPE_CHANNELS_READING = "\n\n".join(textwrap.fill(" ".join(p.split()), 100, break_long_words=False,
                                                break_on_hyphens=False) for p in ["""
What the run shows. In both layers the rope part of the trained model's logits spreads wider than the content
part, though it has only a third of the query-key channels (8 of 24); at initialisation both stay close to zero
at every distance (the grey curves; the printed bound says how close).""", """
Averaged over the probe, the trained rope part swings with the distance while the content part stays nearly
flat: the content part cannot know the distance, it only sees which characters meet. Layer 0's rope part peaks at
distance 1, and with it the attention gives the previous character more than twice the weight it gets from the
content part alone.""", """
A character model learned "look one step back" and put that rule in the 8 rope channels, the only place where
position exists in MLA. That is the job V3's 64 rope channels per head do at scale, beside 128 content channels:
the decoupled key has to be wide enough to carry the model's positional rules."""])


# ================================================================================================ 3.2
#: Exercise 3.2 grades the learner's function on these configs (dim, base, rope_scaling): two the chapter did
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
                        gamma_means_divide: bool = False, inverse_turns: bool = False,
                        window_over_angle: bool = False) -> torch.Tensor:
    """YaRN's frequencies with the ramp exactly as the YaRN paper writes it (float64, ``[dim/2]`` rad/token).

    YaRN (Peng et al., arXiv 2309.00071) §3.2, "NTK-by-parts": r_i = L/λ_i = L·θ_i/2π is the number of full turns
    pair i makes in the original window L; γ(r) = 0 for r < α, 1 for r > β, (r − α)/(β − α) between, with
    α = ``beta_slow`` and β = ``beta_fast``; and h(θ_i) = (1 − γ)·θ_i/s + γ·θ_i. So γ = 1 KEEPS θ_i (the fast
    pairs), γ = 0 divides it by s -- the opposite of the index ramp of :func:`~dsv3_lessons.model.rope.yarn_inv_freq`
    (the released code's: linear in the pair index between the rounded low/high, 1 meaning "divide").
    The keyword knobs reproduce the mistakes the checker of exercise 3.2 names (the window ×``length_mult``,
    γ read the code's way, r inverted to λ/L, r written L/(2πθ) with θ in the denominator).
    """
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    s = float(rope_scaling["factor"])
    length = float(rope_scaling["original_max_position_embeddings"]) * length_mult
    alpha, beta = float(rope_scaling.get("beta_slow", 1)), float(rope_scaling.get("beta_fast", 32))
    turns = length / (2 * math.pi * theta) if window_over_angle else length * theta / (2 * math.pi)
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
    β swapped gives the same numbers), the window taken ×s, r written L/(2πθ) (θ in the denominator: on V3 it
    coincides with plain RoPE, so every config is compared before a diagnosis is picked), plain RoPE, every pair
    divided, r inverted (λ/L).
    """
    from dsv3_lessons.model.rope import yarn_inv_freq

    if not callable(fn):
        raise Wrong(f"pass your function itself (check_yarn_paper_ramp(yarn_paper_frequencies)), got "
                    f"{type(fn).__name__}")
    outputs = [_as_vector(call_learner(fn, dim, base, dict(rs)), dim // 2) for _, dim, base, rs in YARN_EXERCISE_CONFIGS]
    wrong = [k for k, (got, (_, dim, base, rs)) in enumerate(zip(outputs, YARN_EXERCISE_CONFIGS))
             if not torch.allclose(got, yarn_paper_inv_freq(dim, base, rs), rtol=1e-5, atol=0)]
    if not wrong:
        return (f"the paper's ramp on all {len(YARN_EXERCISE_CONFIGS)} configs. It is linear in r, and r grows "
                f"exponentially with the pair index, so it differs from the released code's index ramp inside the "
                f"blend band; the two agree on the pairs that are kept or fully divided.")

    def plain(dim, base, rs):
        return base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)

    # each named mistake as a function of the config; most specific first (on some configs two of them coincide:
    # with r = L/(2πθ) every pair of V3 looks fast and keeps θ, exactly like plain RoPE, but not on the narrow one)
    variants = [
        (lambda d, b, rs: yarn_inv_freq(d, b, rs).double(),
         "that is the released code's ramp, the chapter's: linear in the pair INDEX between the rounded low and "
         "high. The paper's γ is linear in the number of turns r itself, with no rounding."),
        (lambda d, b, rs: yarn_paper_inv_freq(d, b, rs, gamma_means_divide=True),
         "your γ = 1 divides by s. In the paper γ = 1 means the pair KEEPS θ_i (the fast pairs, many turns, have "
         "γ = 1); the chapter's index ramp uses the opposite convention. (Swapping α and β flips γ the same way: "
         "the ramp starts at beta_slow, 1 turn, and ends at beta_fast, 32 turns.)"),
        (lambda d, b, rs: yarn_paper_inv_freq(d, b, rs, length_mult=float(rs["factor"])),
         "r was counted in the extended window (original × s). YaRN counts the turns each pair makes in the "
         "ORIGINAL pre-training window."),
        (lambda d, b, rs: yarn_paper_inv_freq(d, b, rs, window_over_angle=True),
         "your r_i is L/(2π·θ_i): θ_i ended up in the denominator. Pair i turns θ_i radians per token, θ_i·L "
         "radians over the window, so its number of full turns grows WITH θ_i. With your r the slow pairs look "
         "fastest, every pair of V3 gets γ = 1 and keeps θ (your V3 table is plain RoPE)."),
        (lambda d, b, rs: yarn_paper_inv_freq(d, b, rs, inverse_turns=True),
         "r is upside down: it counts turns in the window, L/λ_i = L·θ_i/2π, not λ_i/L."),
        (plain, "every pair keeps θ_i: your γ(r) is 1 for all pairs, so nothing is interpolated. Check r_i for the "
                "slowest pair: it makes less than one turn in the original window."),
        (lambda d, b, rs: plain(d, b, rs) / float(rs["factor"]),
         "every pair is divided by s: only the slow pairs (r < α) are; fast pairs keep θ_i."),
    ]
    for variant, why in variants:                    # a mistake that explains the output on every config
        if all(torch.allclose(got, variant(dim, base, rs), rtol=1e-5, atol=0)
               for got, (_, dim, base, rs) in zip(outputs, YARN_EXERCISE_CONFIGS)):
            raise Wrong(f"on all {len(YARN_EXERCISE_CONFIGS)} configs: {why}")
    k = wrong[0]
    label, dim, base, rs = YARN_EXERCISE_CONFIGS[k]
    got, want = outputs[k], yarn_paper_inv_freq(dim, base, rs)
    where = f"for {label} (d = {dim}, s = {rs['factor']}, original window {rs['original_max_position_embeddings']})"
    for variant, why in variants:                    # a mistake that explains the first config that is off
        if torch.allclose(got, variant(dim, base, rs), rtol=1e-5, atol=0):
            raise Wrong(f"{where}: {why}")
    bad = int(((got - want).abs() > 1e-5 * want.abs()).nonzero()[0])
    raise Wrong(f"{where}: the first wrong frequency is pair i = {bad} (you return {got[bad].item():.6g}, the "
                f"paper's ramp gives {want[bad].item():.6g}). Check r_i and γ(r_i) for that pair.")


# ================================================================================================ 3.3
#: Exercise 3.3's placements of RoPE (none of them shown in the chapter) and, for each, the truth
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
    return ("all 6 entries right. Relative: only a rotation on BOTH sides, R_tᵀR_j = R_{j−t}, makes the score a "
            "function of t − j. Folds: W^UK can be absorbed as long as nothing that depends on the KEY position j "
            "sits between it and the cached latent; a rotation on the query side (query_only) depends on t only "
            "and is folded into q̃ with the query.")


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


def _v3_widths_and_scale() -> tuple[int, int, float]:
    """V3's d_h, d_h^R (qk_nope_head_dim 128, qk_rope_head_dim 64) and softmax scale (0.1352338), from the
    library's config: the numbers the chapter printed, which a learner may carry over to exercise 3.4's model."""
    from dsv3_lessons.model.config import deepseek_v3_671b
    from dsv3_lessons.model.rope import softmax_scale

    c = deepseek_v3_671b()
    return c.qk_nope_head_dim, c.qk_rope_head_dim, softmax_scale(c.qk_head_dim, c.rope_scaling)


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
        v3_d_h, v3_d_r, v3_scale = _v3_widths_and_scale()
        v3_width = v3_d_h + v3_d_r
        used_v3 = (f"you used {v3_width}, V3's query/key head width (d_h + d_h^R = {v3_d_h} + {v3_d_r}, the "
                   f"chapter's number). This model's heads have their own widths: take them from its config "
                   f"(the scale counts the channels of one query, the same as of one key)")
        scale_wrongs = [
            (v3_scale, "that is V3's softmax scale, the chapter's number; this model has its own head widths and "
                       "its own YaRN settings"),
            (v3_width ** -0.5 * m_all ** 2, used_v3),
            (v3_width ** -0.5 * m_rope ** 2, f"{used_v3}; and the softmax uses `mscale_all_dim`, not "
                                             f"`mscale`"),
            (v3_width ** -0.5 * m_all, f"{used_v3}; and mscale enters twice (once per side, q and k): "
                                        f"square it"),
            (v3_width ** -0.5, f"{used_v3}; and the YaRN temperature is missing"),
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
#: Exercise 3.5's code, exactly as the notebook shows it (the test checks the notebook cell holds this text). It uses
#: the library's ``apply_rope_interleaved(x [..., T, d], cos [T, d/2], sin)``. The mistake: the angles of the new
#: tokens are built from ``torch.arange(T)``, the positions inside this call, instead of their positions in the
#: sequence (``start + i``). For the prompt, the first call, the two coincide; every token decoded later is rotated
#: as if it stood at position 0, its key enters the cache unrotated (SPEC §9, "cached rope key rotated ... not at
#: all"), and its scores against earlier keys depend on their positions instead of the distance.
BUGGY_ROPE_SCORES_STEP = '''\
def rope_scores_step(cache, q_raw, k_raw, theta):
    """One serving step of the rope scores q^R·k^R: the prompt's tokens in one call, then one
    token per call. cache: list of the rotated k^R of earlier calls ([n, d] each), extended
    here; q_raw, k_raw: [T, d] unrotated, the T new tokens; theta: [d/2] rad/token.
    Returns [T, tokens so far], -inf for keys after each query."""
    T = q_raw.shape[0]
    angles = torch.arange(T)[:, None] * theta[None, :]        # the new tokens' angles, [T, d/2]
    cos, sin = angles.cos(), angles.sin()
    cache.append(apply_rope_interleaved(k_raw, cos, sin))     # keys enter the cache already rotated
    keys = torch.cat(cache)                                   # [tokens so far, d]
    start = keys.shape[0] - T                                 # position of the first new token
    scores = apply_rope_interleaved(q_raw, cos, sin) @ keys.T
    # keys after each query, [T, tokens so far]
    later = torch.arange(start + T)[None, :] > start + torch.arange(T)[:, None]
    return scores.masked_fill(later, float("-inf"))
'''


def _exec_rope_scores_step(source: str = BUGGY_ROPE_SCORES_STEP):
    from dsv3_lessons.model.rope import apply_rope_interleaved

    namespace: dict = {"torch": torch, "apply_rope_interleaved": apply_rope_interleaved}
    exec(source, namespace)  # noqa: S102  (our own constant text)
    return namespace["rope_scores_step"]


def _reference_rope(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The chapter's rotation (interleaved pairs), angles in float64: x ``[..., seq, d]``, pos ``[seq]``."""
    from dsv3_lessons.model.rope import apply_rope_interleaved

    ang = pos.double()[:, None] * theta.double()[None, :]
    return apply_rope_interleaved(x, ang.cos().float(), ang.sin().float())


#: the serving run exercise 3.5's checker drives: a 4-token prompt in one call, two decoding steps, a 2-token
#: chunk, one more decoding step (9 tokens)
SERVING_CALLS = (4, 1, 1, 2, 1)


def _serving_case(d: int = 8, seed: int = 5):
    from dsv3_lessons.model.rope import yarn_inv_freq

    g = torch.Generator().manual_seed(seed)
    n = sum(SERVING_CALLS)
    q, k = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    theta = yarn_inv_freq(d, 10000.0, {"factor": 4.0, "original_max_position_embeddings": 64})
    return q, k, theta


def _rotation_positions(rule: str, calls=SERVING_CALLS) -> list[int]:
    """The position each token is rotated at under ``rule``: ``"sequence"`` (right: start + i), ``"call"`` (the
    unfixed code: i, the index inside its call), ``"calls_so_far"`` (start taken as the number of earlier calls,
    ``len(cache)``), ``"after_append"`` (start + T + i, the token count after appending)."""
    out, start = [], 0
    for n_call, T in enumerate(calls):
        offset = {"sequence": start, "call": 0, "calls_so_far": n_call, "after_append": start + T}[rule]
        out += [offset + i for i in range(T)]
        start += T
    return out


def _serving_scores(q, k, theta, q_rule: str, k_rule: str, calls=SERVING_CALLS) -> list[torch.Tensor]:
    """Per call, the [T, tokens so far] scores with queries rotated by ``q_rule`` and keys by ``k_rule``."""
    qp, kp = torch.tensor(_rotation_positions(q_rule, calls)), torch.tensor(_rotation_positions(k_rule, calls))
    q_rot, k_rot = _reference_rope(q, qp, theta), _reference_rope(k, kp, theta)
    out, start = [], 0
    for T in calls:
        s = q_rot[start:start + T] @ k_rot[:start + T].T
        later = torch.arange(start + T)[None, :] > start + torch.arange(T)[:, None]
        out.append(s.masked_fill(later, float("-inf")))
        start += T
    return out


def _run_serving(fn, q, k, theta, calls=SERVING_CALLS) -> list:
    cache, outs, start = [], [], 0
    for T in calls:
        outs.append(call_learner(fn, cache, q[start:start + T].clone(), k[start:start + T].clone(), theta.clone()))
        start += T
    return outs


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    finite = torch.isfinite(b)
    return bool(torch.equal(torch.isfinite(a), finite) and torch.allclose(a[finite], b[finite], atol=atol))


def prompt_test(fn) -> str:
    """The author's test of exercise 3.5's function: a 6-token prompt in one call, against the library's rotation.
    Returns (and the notebook prints) a sentence; raises AssertionError when ``fn`` fails (the buggy one passes)."""
    q, k, theta = _serving_case()
    got = fn([], q[:6].clone(), k[:6].clone(), theta.clone())
    assert _same(got, _serving_scores(q[:6], k[:6], theta, "sequence", "sequence", calls=(6,))[0], atol=1e-5)
    return "the author's test passes: a 6-token prompt in one call gives the library's scores (max |difference| <= 1e-5)"


@checker("3.5", hint="the function passes its author's test, a prompt in one call. A serving loop then calls it once "
                     "per new token: run it that way (prompt first, then single tokens) and compare each call's "
                     "scores with rope(q, t)·rope(k, j). Fix one line, then pass rope_scores_step to the checker.",
         more=["Which calls agree with the reference, and which entries of a disagreeing call are still right? A "
               "new token's score against its own key does not depend on where the two are, only on their "
               "distance.",
               "At which position is each new token's query rotated, and at which position is its key rotated "
               "before it enters the cache? Compare with where the token sits in the sequence.",
               "A later call must know how many tokens came before it; the cache can tell you (count tokens, not "
               "list entries)."])
def check_rope_scores_step(fn):
    """Exercise 3.5 (bug hunt): the learner's fixed ``rope_scores_step(cache, q_raw [T, d], k_raw [T, d],
    theta [d/2]) -> [T, tokens so far]``.

    Driven through :data:`SERVING_CALLS` (a prompt, decoding steps and a chunk) on random rope vectors with YaRN
    frequencies, against scores built from the library's rotation (query n and key n rotated at position n). The
    unfixed code gets the symptom only (which calls agree, by how much the others differ, that each token's score
    against its own key is right). Wrong fixes are named: the offset taken as the number of earlier calls
    (``len(cache)``), as the token count after appending, only the keys or only the queries moved, the mask.
    """
    if not callable(fn):
        raise Wrong(f"pass your fixed function itself (check_rope_scores_step(rope_scores_step)), got "
                    f"{type(fn).__name__}")
    q, k, theta = _serving_case()
    outs = _run_serving(fn, q, k, theta)
    want = _serving_scores(q, k, theta, "sequence", "sequence")
    for n, (out, ref) in enumerate(zip(outs, want)):
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(ref.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise Wrong(f"call {n + 1} ({SERVING_CALLS[n]} new, {ref.shape[1]} tokens in the cache) must return "
                        f"[T, tokens so far] = {list(ref.shape)} scores, got {got}")
    outs = [o.detach().float() for o in outs]
    if all(_same(o, w) for o, w in zip(outs, want)):
        return ("fixed: a new token is rotated at its position in the sequence, start + i, for its query and for the "
                "key it caches. For the prompt, the first call, start is 0, which is why the author's test passed; "
                "every later call needs the number of tokens already cached.")
    for n, (o, w) in enumerate(zip(outs, want)):
        if not torch.equal(torch.isinf(o), torch.isinf(w)):
            raise Wrong(f"call {n + 1}: the -inf entries are off: scores[i, j] must be -inf exactly where key j comes "
                        f"after the query i (j > start + i)")
    named = [
        ("calls_so_far", "calls_so_far", "the new tokens are placed after len(cache), the number of earlier CALLS; "
                                         "the prompt was one call of several tokens. Count the cached tokens"),
        ("after_append", "after_append", "the new tokens are placed after the cache's length once they were "
                                         "appended, T positions too far: take the length before appending"),
        ("call", "sequence", "the keys are rotated at their positions in the sequence now, but each new query is "
                             "still rotated at its index inside the call"),
        ("sequence", "call", "the queries are rotated at their positions in the sequence now, but each new key is "
                             "still rotated at its index inside the call before it enters the cache"),
    ]
    for q_rule, k_rule, why in named:
        if all(_same(o, w) for o, w in zip(outs, _serving_scores(q, k, theta, q_rule, k_rule))):
            raise Wrong(why)
    ok = [_same(o, w) for o, w in zip(outs, want)]
    first = ok.index(False)
    start = sum(SERVING_CALLS[:first])
    worst = max((o - w)[torch.isfinite(w)].abs().max().item() for o, w in zip(outs, want))
    agree = ("the first call (the prompt) agrees with the reference; " if first > 0 else "")
    own = all(torch.allclose(o[i, sum(SERVING_CALLS[:n]) + i], w[i, sum(SERVING_CALLS[:n]) + i], atol=1e-4)
              for n, (o, w) in enumerate(zip(outs, want)) for i in range(SERVING_CALLS[n]))
    tail = " Each new token's score against its own key is right." if own else ""
    T = SERVING_CALLS[first]
    what = f"1 new token at position {start}" if T == 1 else f"{T} new tokens at positions {start}..{start + T - 1}"
    raise Wrong(f"{agree}call {first + 1} ({what}) differs from rope(q, t)·rope(k, j), and the scores differ by up to "
                f"{worst:.3g} over the run.{tail}")
