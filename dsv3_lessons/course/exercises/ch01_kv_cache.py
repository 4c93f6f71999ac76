"""Exercise checkers of chapter 01 (KV cache (why the KV cache is the bottleneck)).

LEGACY CONTENT moved here from the old ``exercises.py``: rewrite with the never-raising pattern
of :mod:`dsv3_lessons.course.checking`.
"""
from __future__ import annotations

import numbers as _numbers

from ..checking import ___, Wrong, as_bool, as_number, checker  # noqa: F401  (the pattern to follow)


class ExerciseError(AssertionError):
    """LEGACY (raising checkers): replace with the never-raising ``checker`` pattern of ``..checking``."""


# ==================================================================================================
# Chapter 01 -- KV cache (why the KV cache is the bottleneck)
# ==================================================================================================


def _kv_number(answer, what: str) -> float:
    if isinstance(answer, bool) or not isinstance(answer, _numbers.Real):
        raise ExerciseError(f"{what} must be a number, got {answer!r} ({type(answer).__name__})")
    return float(answer)


def check_kv_bytes_per_token(answer) -> bool:
    """Exercise 1.1: bytes of KV cache that ONE token of ONE sequence adds to LLaMA-2-7B, all layers, BF16.

    The facts are in ``data/model_configs/llama-2-7b.json`` (MHA). The expected value is computed
    here from that file with :mod:`dsv3_lessons.course.kv_cache`, not typed in.
    """
    from ..kv_cache import bytes_per_token, dtype_bytes, load_model_config

    spec = load_model_config("LLaMA-2-7B")
    right = bytes_per_token(spec, "bf16")
    x = _kv_number(answer, "answer (bytes)")
    if x == right:
        return True
    hints = {
        right / 2: "that is half of it: count both keys AND values, and 2 bytes per BF16 element",
        right / spec.num_hidden_layers: f"that is one layer: every one of the {spec.num_hidden_layers} layers keeps its own cache",
        right * 2: "that is twice too much: BF16 takes 2 bytes per element (FP32 would take 4)",
        right / (2 * spec.num_hidden_layers): "count keys and values, and all layers",
        right / dtype_bytes("bf16") / spec.num_hidden_layers: "that counts elements of one layer: x layers, x 2 bytes",
    }
    for wrong, hint in hints.items():
        if x == wrong:
            raise ExerciseError(f"{answer!r} is not right: {hint}.")
    if x in (right / 1000, right / 1024):
        raise ExerciseError(f"{answer!r} looks like kilobytes; give the answer in bytes.")
    raise ExerciseError(f"{answer!r} is not right. Per token and layer an MHA/GQA cache holds 2 (K and V) "
                        f"x num_key_value_heads x head_dim elements; multiply by the layers and by the bytes "
                        f"per element.")


def check_max_context_80gb(answer) -> bool:
    """Exercise 1.2: the longest context (whole tokens) whose BF16 KV cache of LLaMA-3.1-70B, batch 1,
    fits in 80 GB = 80·10⁹ bytes (cache only: ignore the weights). Expected from the JSON config.
    """
    from ..kv_cache import GB, bytes_per_token, load_model_config, max_context

    spec = load_model_config("LLaMA-3.1-70B")
    right = max_context(spec, 80 * GB, batch=1, dtype="bf16")
    x = _kv_number(answer, "answer (tokens)")
    if x == right:
        return True
    per_token = bytes_per_token(spec, "bf16")
    if x == 80 * 2**30 // per_token:
        raise ExerciseError(f"{answer!r} uses 80 GiB (80·2³⁰ B); here GB means 10⁹ bytes, as accelerator specs do.")
    if x == right + 1 or (x != int(x) and int(x) == right):
        raise ExerciseError(f"{answer!r}: the cache must fit, and a context is a whole number of tokens: round down.")
    if x == 2 * right or x == 2 * right + 1:
        raise ExerciseError(f"{answer!r} is twice the answer: a BF16 element takes 2 bytes.")
    raise ExerciseError(f"{answer!r} is not right: divide the budget in bytes by the bytes per token "
                        f"(all layers, keys and values, BF16) and round down.")


def check_mla_rank_for_gqa_groups(answer) -> bool:
    """Exercise 1.3: with head_dim 128 and a decoupled rope key of d_h^R = 64, which kv_lora_rank d_c
    makes one MLA layer cache exactly as much per token as GQA with 8 key/value heads?
    """
    from ..kv_cache import equivalent_gqa_groups, mla_what_if

    x = _kv_number(answer, "answer (kv_lora_rank)")
    if x != int(x) or x <= 0:
        raise ExerciseError(f"kv_lora_rank must be a positive whole number of channels, got {answer!r}")
    groups = equivalent_gqa_groups(mla_what_if(int(x), 64), head_dim=128)
    if groups == 8:
        return True
    if groups == 8 + 64 / 256:
        raise ExerciseError(f"{answer!r}: MLA also caches the shared rope key k^R (64 elements); leave room for it.")
    if 2 * groups == 8 or 2 * groups == 8 + 64 / 128:
        raise ExerciseError(f"{answer!r}: a GQA layer caches keys AND values, 2 x 8 x 128 elements per token.")
    raise ExerciseError(f"{answer!r} gives MLA the cache of GQA with {groups:.3g} groups, not 8. "
                        f"Solve d_c + d_h^R = 2 x n_kv x head_dim for d_c.")


__all__ = ["check_kv_bytes_per_token", "check_max_context_80gb", "check_mla_rank_for_gqa_groups"]


