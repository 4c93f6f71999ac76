"""Exercise checkers of chapter 04 (MLA inference (weight absorption; exercises 4.1–4.2)).

LEGACY CONTENT moved here from the old ``exercises.py``: rewrite with the never-raising pattern
of :mod:`dsv3_lessons.course.checking`.
"""
from __future__ import annotations

import numbers as _numbers

from ..checking import ___, Wrong, as_bool, as_number, checker  # noqa: F401  (the pattern to follow)


class ExerciseError(AssertionError):
    """LEGACY (raising checkers): replace with the never-raising ``checker`` pattern of ``..checking``."""


# ==================================================================================================
# Chapter 04 -- MLA inference (weight absorption; exercises 4.1–4.2)
# ==================================================================================================
def _ch04_number(answer, what: str) -> float:
    import numbers

    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        raise ExerciseError(f"{what} must be a number, got {answer!r} ({type(answer).__name__})")
    return float(answer)


def check_mla_cache_elements(latent, per_head, num_attention_heads: int = 16) -> bool:
    """Exercise 4.1: elements cached per token per layer in a V3-width MLA layer with fewer heads.

    The layer keeps V3's widths (d_c = 512, d_h = 128, d_h^R = 64, d_v = 128) but has
    ``num_attention_heads`` heads (16 in the notebook). ``latent``: what the latent cache stores
    (c^KV and k^R); ``per_head``: what an MHA-style cache of the same layer stores (k_i = [k^C_i ; k^R]
    and v^C_i for every head). Expected values come from the config (V3 report §2.1.1), not typed in.
    """
    from ..mla_decode import cache_elements_per_token, v3_attention_config

    cfg = v3_attention_config(num_attention_heads=num_attention_heads, hidden_size=2048)
    right_latent = cache_elements_per_token(cfg, "absorb")
    right_per_head = cache_elements_per_token(cfg, "per_head")
    lat = _ch04_number(latent, "latent")
    ph = _ch04_number(per_head, "per_head")
    h = cfg.num_attention_heads
    if lat != right_latent:
        hint = {cfg.kv_lora_rank: "the cache also holds the shared, already rotated rope key k^R (d_h^R elements)",
                h * right_latent: "the latent is shared by all heads: it is stored once per token, not per head",
                cfg.kv_lora_rank + h * cfg.qk_rope_head_dim: "k^R is ONE key shared by every head, stored once"}
        raise ExerciseError(f"latent={latent!r} is not right: "
                            f"{hint.get(lat, 'count d_c (c^KV) plus d_h^R (k^R) for one token')}.")
    if ph != right_per_head:
        hint = {h * (cfg.qk_nope_head_dim + cfg.v_head_dim): "each head's key is [k^C_i ; k^R]: d_h + d_h^R wide",
                h * cfg.qk_head_dim: "the per-head cache holds values v^C_i too",
                cfg.qk_head_dim + cfg.v_head_dim: "that is one head: every head has its own key and value"}
        raise ExerciseError(f"per_head={per_head!r} is not right: "
                            f"{hint.get(ph, 'per head: a (d_h + d_h^R)-wide key and a d_v-wide value')}.")
    return True


def check_absorb_flop_ratio(answer) -> bool:
    """Exercise 4.2: per CACHED token, FLOPs of naive MLA (re-expansion + attention) / absorbed MLA.

    At V3 sizes, one decode step spends on every cached token: naive -- re-expanding c^KV with
    ``kv_b_proj`` (2·d_c·n_h·(d_h+d_v)) plus scores and weighted sum on 192/128-wide heads
    (2·n_h·(d_h+d_h^R+d_v)); absorbed -- scores on 576-wide keys and a weighted sum of 512-wide
    latents (2·n_h·(d_c+d_h^R+d_c)). Accepted within 1 % (so dropping the small naive-attention term
    is fine). The whole-step ratio is smaller because both variants share the projections.
    """
    from dsv3_lessons.model.config import deepseek_v3_671b
    from ..mla_decode import decode_flops

    cfg = deepseek_v3_671b()
    naive = decode_flops(cfg, 1, "naive")
    absorb = decode_flops(cfg, 1, "absorb")
    # context 1 -> T' = 2 tokens attended; both terms are linear in T', so their ratio is the per-token one
    right = (naive["expand"] + naive["attention"]) / absorb["attention"]
    x = _ch04_number(answer, "answer (ratio)")
    if abs(x - right) <= 0.01 * right:
        return True
    whole = decode_flops(cfg, 4096, "naive")["total"] / decode_flops(cfg, 4096, "absorb")["total"]
    if abs(x - whole) <= 0.02 * whole:
        raise ExerciseError(f"{answer!r} is the whole-step ratio at 4K context, projections included; "
                            "the question asks per cached token (only the terms that grow with T).")
    if abs(x - 1 / right) <= 0.01 / right:
        raise ExerciseError(f"{answer!r} is upside down: divide naive by absorbed.")
    raise ExerciseError(f"{answer!r} is not right: per cached token, naive pays 2·d_c·n_h·(d_h+d_v) for the "
                        "re-expansion plus 2·n_h·(d_h+d_h^R+d_v) for attention; absorbed pays "
                        "2·n_h·(d_c+d_h^R+d_c).")


__all__ = ["check_mla_cache_elements", "check_absorb_flop_ratio"]


