"""Exercise checkers of chapter 03 (RoPE decoupling (exercises 3.1–3.3)).

LEGACY CONTENT moved here from the old ``exercises.py``: rewrite with the never-raising pattern
of :mod:`dsv3_lessons.course.checking`.
"""
from __future__ import annotations

import numbers as _numbers

from ..checking import ___, Wrong, as_bool, as_number, checker  # noqa: F401  (the pattern to follow)


class ExerciseError(AssertionError):
    """LEGACY (raising checkers): replace with the never-raising ``checker`` pattern of ``..checking``."""


# ==================================================================================================
# Chapter 03 -- RoPE decoupling (exercises 3.1–3.3)
# ==================================================================================================
#: Exercise 3.1's model: rope dim 64, θ base 10000, YaRN factor 16 over an original window of 8192.
ROPE_EXERCISE_CONFIG = {"dim": 64, "base": 10000.0, "factor": 16, "original_max_position_embeddings": 8192,
                        "beta_fast": 32, "beta_slow": 1}


def check_yarn_range(answer, config: dict | None = None) -> bool:
    """Exercise 3.1: YaRN's (low, high) pair indices for ``config`` (default :data:`ROPE_EXERCISE_CONFIG`).

    ``answer``: a pair of ints ``(low, high)``. Graded against
    :func:`dsv3_lessons.model.rope.yarn_correction_range` (checked in the tests against V3's (10, 23) and
    transformers' YaRN frequencies). Source: YaRN paper (arXiv 2309.00071) §3.2; V3 report §4.3.
    """
    import math as _m

    from dsv3_lessons.model.rope import yarn_correction_range

    c = dict(ROPE_EXERCISE_CONFIG if config is None else config)
    dim, base, orig = int(c["dim"]), float(c["base"]), int(c["original_max_position_embeddings"])
    bf, bs = c.get("beta_fast", 32), c.get("beta_slow", 1)
    right = yarn_correction_range(dim, base, orig, bf, bs)
    try:
        low, high = answer
    except (TypeError, ValueError):
        raise ExerciseError(f"answer must be a pair (low, high), got {answer!r}") from None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ExerciseError(f"low and high must be numbers (pair indices), got {answer!r}")
    if (low, high) == right and all(float(v) == int(v) for v in (low, high)):
        return True

    def raw(rot, length):
        return dim * _m.log(length / (rot * 2 * _m.pi)) / (2 * _m.log(base))

    if (high, low) == right:
        raise ExerciseError(f"{answer!r} is swapped: low comes from beta_fast (fast pairs, many turns), "
                            f"high from beta_slow.")
    if "factor" in c and (low, high) == yarn_correction_range(dim, base, orig * int(c["factor"]), bf, bs):
        raise ExerciseError(f"{answer!r} uses the extended length original·factor; YaRN's range comes from the "
                            f"ORIGINAL pre-training window ({orig} tokens).")
    if abs(float(low) - raw(bf, orig)) < 0.05 and abs(float(high) - raw(bs, orig)) < 0.05:
        raise ExerciseError(f"{answer!r} are the unrounded indices: round low DOWN (floor) and high UP (ceil).")
    raise ExerciseError(f"{answer!r} is not right. Pair i makes original_len·θ_i/(2π) turns in the window; "
                        f"find i where that equals beta_fast ({bf}) and beta_slow ({bs}): "
                        f"i = d·ln(L/(2π·β))/(2·ln base), then floor / ceil.")


def check_fold_prediction(answer: dict) -> bool:
    """Exercise 3.2: for each RoPE placement, can W^UK be absorbed into the query exactly?

    ``answer``: dict mapping each of ``"no_rope"``, ``"rope_on_keys"``, ``"decoupled"``,
    ``"rope_on_latents"`` to True/False. Graded by measuring it: :func:`dsv3_lessons.course.rope_lessons.fold_check`
    at small sizes (fold error ≤ 1e-5 means it folds). Source: V2 report §2.1.3; V3 report §2.1.1.
    """
    from ..rope_lessons import FOLD_CASES, fold_check

    if not isinstance(answer, dict) or set(answer) != set(FOLD_CASES):
        raise ExerciseError(f"answer must be a dict with exactly the keys {FOLD_CASES}, got {answer!r}")
    for k, v in answer.items():
        if not isinstance(v, bool):
            raise ExerciseError(f"answer[{k!r}] must be True or False, got {v!r}")
    hints = {
        "no_rope": "without RoPE, q·(W^UK c) = (W^UKᵀ q)·c: plain associativity.",
        "rope_on_keys": "with RoPE on k^C the rotation R_t sits between W^UK and the query and changes "
                        "with the key position t; no single matrix can be absorbed.",
        "decoupled": "the content part carries no rotation (it folds); the rotation lives only on q^R and "
                     "the shared k^R, which are dotted directly.",
        "rope_on_latents": "it DOES fold (cache the rotated latent), but look at shift_error: the scores stop "
                           "depending only on m − n, because W^UQᵀW^UK does not commute with the rotations.",
    }
    wrong = []
    for case in FOLD_CASES:
        truth = fold_check(case, n_tokens=6, n_heads=1, hidden_size=32, q_lora_rank=24, kv_lora_rank=16,
                           qk_nope_head_dim=8, qk_rope_head_dim=4).folds()
        if answer[case] != truth:
            wrong.append(f"{case}: {hints[case]}")
    if wrong:
        raise ExerciseError("Not yet:\n  " + "\n  ".join(wrong))
    return True


#: Exercise 3.3's mistakes (keys of the answer dict).
POSITION_ZERO_MISTAKES = ("wrong_yarn_factor", "yarn_range_from_extended_length", "missing_mscale_squared",
                          "rotate_half_without_permutation")


def check_position_zero(answer: dict) -> bool:
    """Exercise 3.3: which mistakes would a test that compares only the attention logits at query position 0 catch?

    With causal attention the query at position 0 sees only the key at position 0, so the test compares one
    logit, scale·q·k, with both vectors at position 0. (A test of the layer's *output* at position 0 catches
    none of these mistakes: that query's softmax runs over a single key and gives it weight 1 whatever the
    logit.)

    ``answer``: dict mapping each of :data:`POSITION_ZERO_MISTAKES` to True (that logit comparison catches it)
    or False. Graded by measuring the logit at query and key position 0 with :func:`dsv3_lessons.course.rope_lessons.position_zero_probe` and
    :func:`dsv3_lessons.course.rope_lessons.convention_scores`. Source: YaRN paper (arXiv 2309.00071) §3.2–3.4;
    V3 report §4.3; the official inference code (``inference/model.py``: mscale² in the softmax scale).
    """
    import torch as _t

    from dsv3_lessons.model.rope import rope_inv_freq
    from ..rope_lessons import V3_ROPE_SCALING, convention_scores, position_zero_probe

    if not isinstance(answer, dict) or set(answer) != set(POSITION_ZERO_MISTAKES):
        raise ExerciseError(f"answer must be a dict with exactly the keys {POSITION_ZERO_MISTAKES}, got {answer!r}")
    for k, v in answer.items():
        if not isinstance(v, bool):
            raise ExerciseError(f"answer[{k!r}] must be True or False, got {v!r}")
    p_factor = position_zero_probe([0], dict(V3_ROPE_SCALING, factor=20))
    p_range = position_zero_probe([0], dict(V3_ROPE_SCALING, original_max_position_embeddings=4096 * 40))
    g = _t.Generator().manual_seed(0)
    q, k = _t.randn(1, 64, generator=g), _t.randn(1, 64, generator=g)
    f = rope_inv_freq(64)
    conv = (convention_scores(q, k, [0], [0], f, "interleaved")
            - convention_scores(q, k, [0], [0], f, "half_unpermuted")).abs().max().item()
    truth = {"wrong_yarn_factor": p_factor.logit_diff_freq[0].item() > 1e-6,
             "yarn_range_from_extended_length": p_range.logit_diff_freq[0].item() > 1e-6,
             "missing_mscale_squared": p_factor.logit_diff_mscale[0].item() > 1e-6,
             "rotate_half_without_permutation": conv > 1e-6}
    hints = {True: "this one multiplies the logit by a constant factor at every position, 0 included, so a "
                   "logit comparison at position 0 sees it (the layer's output at position 0 would not: a "
                   "softmax over one key is 1 whatever the logit).",
             False: "at position 0 every rotation is the identity (angle 0·θ = 0), so any frequency table "
                    "or channel pairing gives the same logit there; probe positions ≥ 1."}
    wrong = [f"{m}: {hints[truth[m]]}" for m in POSITION_ZERO_MISTAKES if answer[m] != truth[m]]
    if wrong:
        raise ExerciseError("Not yet:\n  " + "\n  ".join(wrong))
    return True


__all__ = ["ROPE_EXERCISE_CONFIG", "POSITION_ZERO_MISTAKES", "check_yarn_range", "check_fold_prediction",
            "check_position_zero"]


