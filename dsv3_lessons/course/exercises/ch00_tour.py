"""Exercise checkers of chapter 00 (Tour (exercise 0.1: what "activated" means)).

LEGACY CONTENT moved here from the old ``exercises.py``: rewrite with the never-raising pattern
of :mod:`dsv3_lessons.course.checking`.
"""
from __future__ import annotations

import numbers as _numbers

from ..checking import ___, Wrong, as_bool, as_number, checker  # noqa: F401  (the pattern to follow)


class ExerciseError(AssertionError):
    """LEGACY (raising checkers): replace with the never-raising ``checker`` pattern of ``..checking``."""


# ==================================================================================================
# Chapter 00 -- Tour (exercise 0.1: what "activated" means)
# ==================================================================================================
def check_moe_activated_params(answer) -> bool:
    """Exercise 0.1: parameters ONE token uses in ONE MoE layer's FFN of DeepSeek-V3 (671B config).

    That is the shared expert and the K_r = 8 selected routed experts (each a SwiGLU: 3·d·d_moe), plus
    the gate's centroids and balancing biases (N_r·d + N_r), which score every expert for every token.
    The expected value is computed here from :func:`dsv3_lessons.model.config.deepseek_v3_671b`.
    """
    from dsv3_lessons.model.config import deepseek_v3_671b

    cfg = deepseek_v3_671b()
    d, m, n_r = cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts
    expert = 3 * d * m
    gate = n_r * d + n_r
    right = (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert + gate
    if isinstance(answer, bool) or not isinstance(answer, _numbers.Real):
        raise ExerciseError(f"answer must be a number of parameters, got {answer!r}")
    if answer == right:
        return True
    hints = {
        (cfg.n_shared_experts + cfg.n_routed_experts) * expert + gate:
            "that counts all 257 experts: a token runs only the shared one and its 8 selected ones",
        cfg.num_experts_per_tok * expert + gate: "add the shared expert: every token goes through it",
        (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert:
            "add the gate: its centroids e_i (N_r × d) and biases b_i (N_r) score every expert",
        (cfg.n_shared_experts + cfg.num_experts_per_tok) * 2 * d * m + gate:
            "a SwiGLU expert has THREE matrices (gate_proj, up_proj, down_proj)",
    }
    if answer in hints:
        raise ExerciseError(f"{answer!r} is not right: {hints[answer]}.")
    raise ExerciseError(f"{answer!r} is not right. One expert is a SwiGLU with 3 matrices of d × d_moe "
                        f"({d} × {m}); count the shared expert, the {cfg.num_experts_per_tok} routed ones "
                        f"and the gate (N_r·d weights + N_r biases).")


__all__ = ["check_moe_activated_params"]


