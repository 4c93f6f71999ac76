"""Exercise checkers of chapter 02 (MLA latent spaces (exercises 2.1–2.3)).

LEGACY CONTENT moved here from the old ``exercises.py``: rewrite with the never-raising pattern
of :mod:`dsv3_lessons.course.checking`.
"""
from __future__ import annotations

import numbers as _numbers

from ..checking import ___, Wrong, as_bool, as_number, checker  # noqa: F401  (the pattern to follow)


class ExerciseError(AssertionError):
    """LEGACY (raising checkers): replace with the never-raising ``checker`` pattern of ``..checking``."""


# ==================================================================================================
# Chapter 02 -- MLA latent spaces (exercises 2.1–2.3)
# ==================================================================================================
def _ch02_int(answer, what: str) -> int:
    import numbers

    if isinstance(answer, bool) or not isinstance(answer, numbers.Real) or answer != int(answer):
        raise ExerciseError(f"{what} must be a whole number, got {answer!r}")
    return int(answer)


def _ch02_pair(answer, what: str) -> tuple[int, int]:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseError(f"{what} must be a pair (a, b), got {answer!r}")
    return _ch02_int(answer[0], f"{what}[0]"), _ch02_int(answer[1], f"{what}[1]")


def check_w_uk_shape(answer) -> bool:
    """Exercise 2.1: the shape (rows, columns) of ONE head's W^UK_i in DeepSeek-V3, in the paper's
    convention k^C_{t,i} = W^UK_i c^KV_t (rows = output size). Expected from ``deepseek_v3_671b()``.
    """
    from dsv3_lessons.model.config import deepseek_v3_671b

    c = deepseek_v3_671b()
    rows, cols = _ch02_pair(answer, "answer (rows, columns)")
    right = (c.qk_nope_head_dim, c.kv_lora_rank)
    if (rows, cols) == right:
        return True
    hints = {
        right[::-1]: "transposed: W^UK_i maps the d_c-wide latent c^KV to the d_h-wide k^C_i, so it has d_h rows",
        (c.num_attention_heads * c.qk_nope_head_dim, c.kv_lora_rank): "that is W^UK for all heads stacked; one head is asked",
        (c.qk_head_dim, c.kv_lora_rank): "the key's rope part k^R does not come from c^KV: W^UK_i only makes the "
                                         "content part k^C_i (d_h rows)",
        (c.qk_nope_head_dim, c.q_lora_rank): "d_c' = 1536 is the QUERY latent's width; keys read the KV latent c^KV",
        (c.qk_nope_head_dim, c.kv_lora_rank + c.qk_rope_head_dim): "576 = d_c + d_h^R is what is cached, but "
                                                                    "W^UK_i reads only c^KV (d_c columns)",
    }
    raise ExerciseError(f"{answer!r} is not right: {hints.get((rows, cols), 'rows = width of k^C_i, columns = width of c^KV')}.")


def check_kv_b_rows_of_w_uv(answer, head: int = 5) -> bool:
    """Exercise 2.2: which rows of V3's fused ``kv_b_proj.weight`` hold W^UV_i of head ``head`` (0-based)?

    Answer a Python slice as a pair ``(start, stop)`` (stop exclusive). Expected from the per-head
    layout [W^UK_0 ; W^UV_0 ; W^UK_1 ; W^UV_1 ; …] and ``deepseek_v3_671b()``.
    """
    from dsv3_lessons.model.config import deepseek_v3_671b

    c = deepseek_v3_671b()
    if not (isinstance(head, int) and 0 <= head < c.num_attention_heads):
        raise ValueError(f"head must be in [0, {c.num_attention_heads}), got {head!r}")
    start, stop = _ch02_pair(answer, "answer (start, stop)")
    per_head = c.qk_nope_head_dim + c.v_head_dim
    right = (head * per_head + c.qk_nope_head_dim, (head + 1) * per_head)
    if (start, stop) == right:
        return True
    keys_first = c.num_attention_heads * c.qk_nope_head_dim + head * c.v_head_dim
    hints = {
        (keys_first, keys_first + c.v_head_dim): "that is the 'all keys first' split, the pitfall of this chapter: "
                                                 "the rows are grouped by head, keys then values inside each head",
        (head * per_head, head * per_head + c.qk_nope_head_dim): "those rows are head's W^UK_i: inside a head the "
                                                                 "keys come first, then the values",
        (right[0], right[1] - 1): "stop is exclusive, as in Python slices",
        (head * c.v_head_dim, (head + 1) * c.v_head_dim): "each head owns d_h + d_v = 256 rows, not 128",
    }
    raise ExerciseError(f"{answer!r} is not right: "
                        f"{hints.get((start, stop), 'head i owns rows i*(d_h+d_v) ... (i+1)*(d_h+d_v); values are its last d_v')}.")


def check_query_latent_savings(answer) -> bool:
    """Exercise 2.3: how many parameters per layer does V3's query latent save, compared with a plain
    W^Q (d → n_h·(d_h + d_h^R)) that makes the same queries? Count q_a_proj, q_a_layernorm and
    q_b_proj against q_proj. Expected from :func:`dsv3_lessons.course.mla_steps.mla_cost`.
    """
    from ..mla_steps import mla_cost

    x = _ch02_int(answer, "answer (parameters)")
    right = mla_cost(q_lora_rank=None).params_per_layer - mla_cost().params_per_layer
    if x == right:
        return True
    from dsv3_lessons.model.config import deepseek_v3_671b

    c = mla_cost()
    d_cq = deepseek_v3_671b().q_lora_rank
    hints = {
        right + d_cq: f"almost: q_a_layernorm's {d_cq} weights belong to the query latent path too",
        right * c.num_layers: "that is all 61 layers; the question asks per layer",
        -right: "the sign: a positive number of parameters saved",
    }
    default = "plain: d*n_h*(d_h+d_h^R); latent: d*d_c' + d_c' + d_c'*n_h*(d_h+d_h^R), with d_c' = q_lora_rank"
    raise ExerciseError(f"{answer!r} is not right: {hints.get(x, default)}.")


__all__ = ["check_w_uk_shape", "check_kv_b_rows_of_w_uv", "check_query_latent_savings"]
