"""Exercise checkers of chapter 01 (why the KV cache is the bottleneck), on the pattern of
:mod:`dsv3_lessons.course.common.checking`: they never raise and print "not attempted yet" + a hint, a ✗ diagnosis,
or ✓.

* 1.1 (code): ``kv_cache_bytes_per_token(config, bytes_per_element)`` for any ``config.json`` (GQA/MHA/MQA or
  MLA), checked on four published configurations the chapter does not show (:data:`EXERCISE_CONFIGS`);
* 1.2: the largest batch of 32K-token Mistral-7B sequences whose BF16 cache fits in 80 GB;
* 1.3: the ``kv_lora_rank`` that gives MLA the cache of GQA with 8 key/value heads.

Every expected value is computed here from the configs and the closed-form cache formula (2·n_kv·d_h·l·b, or
(d_c + d_h^R)·l·b for MLA; V2 report arXiv 2405.04434 Table 1), never typed in.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, checker, is_placeholder)  # noqa: F401  (___ is re-exported for the notebook)

__all__ = ["___", "EXERCISE_CONFIGS", "MISTRAL_7B", "reference_bytes_per_token", "check_kv_cache_bytes_function",
           "check_max_batch_80gb", "check_mla_rank_for_gqa_heads"]

#: Published ``config.json`` excerpts (field names as released) the chapter does not show. Fields a file
#: omits take transformers' defaults: ``head_dim`` = hidden_size // num_attention_heads and
#: ``num_key_value_heads`` = num_attention_heads.
EXERCISE_CONFIGS: dict[str, dict[str, Any]] = {
    # huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json (no head_dim field: 4096 / 32 = 128)
    "Mistral-7B": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                   "num_key_value_heads": 8},
    # huggingface.co/google/gemma-2-9b/blob/main/config.json (head_dim 256 given, NOT 3584 / 16 = 224)
    "Gemma-2-9B": {"num_hidden_layers": 42, "hidden_size": 3584, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 256},
    # huggingface.co/huggyllama/llama-7b/blob/main/config.json (LLaMA-1: MHA, no num_key_value_heads field)
    "LLaMA-1-7B": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32},
    # huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json (MLA: d_c 512 + d_h^R 64, 27 layers)
    "DeepSeek-V2-Lite": {"num_hidden_layers": 27, "hidden_size": 2048, "num_attention_heads": 16,
                         "num_key_value_heads": 16, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                         "qk_nope_head_dim": 128, "v_head_dim": 128},
}

#: The config exercise 1.2 uses (Mistral-7B-v0.1).
MISTRAL_7B = EXERCISE_CONFIGS["Mistral-7B"]


def reference_bytes_per_token(config: dict[str, Any], bytes_per_element: int) -> int:
    """KV-cache bytes one token adds over all layers: 2·n_kv·d_h·l·b, or (d_c + d_h^R)·l·b for MLA.

    ``config`` holds ``config.json`` fields; missing ``head_dim`` / ``num_key_value_heads`` take
    transformers' defaults. Raises KeyError for a config without layers or heads.
    """
    layers = config["num_hidden_layers"]
    if config.get("kv_lora_rank"):
        return (config["kv_lora_rank"] + config["qk_rope_head_dim"]) * layers * bytes_per_element
    n_kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * n_kv * head_dim * layers * bytes_per_element


def _diagnose_1_1(name: str, cfg: dict[str, Any], b: int, got: float, right: int) -> str:
    """Why ``got`` differs from ``right`` for one config (a sentence naming the config and the fix)."""
    r = got / right
    layers = cfg["num_hidden_layers"]
    where = f"for {name} with bytes_per_element={b} you return {got:,.0f}, expected {right:,}"
    if cfg.get("kv_lora_rank"):
        d_c, d_r = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
        if math.isclose(r, d_c / (d_c + d_r)):
            return f"{where}: MLA also caches the rotated key k^R (qk_rope_head_dim channels) beside c^KV"
        if math.isclose(r, 2.0) or math.isclose(r, 2 * d_c / (d_c + d_r)):
            return f"{where}: MLA caches ONE latent c^KV per token, not separate keys and values (no factor 2)"
        if math.isclose(got, 2 * cfg["num_key_value_heads"] * cfg["qk_nope_head_dim"] * layers * b) or \
                math.isclose(got, 2 * cfg["num_attention_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"]) * layers * b):
            return (f"{where}: this is an MLA config (it has kv_lora_rank); it caches (kv_lora_rank + "
                    f"qk_rope_head_dim) elements per layer, not per-head keys and values")
    n_h = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_h
    if math.isclose(r, 0.5):
        return f"{where}: half of it: a layer caches keys AND values"
    if math.isclose(r, 1 / b) and b != 1:
        return f"{where}: multiply by bytes_per_element (the answer is in bytes, not elements)"
    if math.isclose(r, 1 / layers):
        return f"{where}: that is one layer: multiply by num_hidden_layers"
    if n_kv != n_h and math.isclose(r, n_h / n_kv):
        return (f"{where}: you counted num_attention_heads ({n_h}) heads; the cache holds only the "
                f"num_key_value_heads ({n_kv}) key/value heads the query heads share")
    if "head_dim" in cfg and math.isclose(r, (cfg["hidden_size"] // n_h) / cfg["head_dim"]):
        return (f"{where}: this config gives head_dim ({cfg['head_dim']}) explicitly and it is not "
                f"hidden_size // num_attention_heads ({cfg['hidden_size'] // n_h}): use the field when present")
    return f"{where}: per layer a GQA/MHA/MQA cache holds 2 x n_kv x head_dim elements, MLA kv_lora_rank + qk_rope_head_dim"


@checker("1.1", hint="start from 2 * n_kv * head_dim * num_hidden_layers * bytes_per_element; read n_kv and "
                     "head_dim with config.get(...) and fall back to the defaults when a field is missing; "
                     "an MLA config (it has 'kv_lora_rank') caches kv_lora_rank + qk_rope_head_dim per layer")
def check_kv_cache_bytes_function(fn: Callable[[dict, int], Any]):
    """Exercise 1.1: ``fn(config, bytes_per_element)`` must return the KV-cache bytes per token, all layers.

    Checked on every config of :data:`EXERCISE_CONFIGS` (GQA without ``head_dim``, GQA with an explicit
    ``head_dim`` that differs from hidden/heads, MHA without ``num_key_value_heads``, MLA) in BF16 (2 B) and
    FP8 (1 B). A missing field the function reads without a default is diagnosed by name.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (kv_cache_bytes_per_token), not {type(fn).__name__}")
    for name, cfg in EXERCISE_CONFIGS.items():
        for b in (2, 1):
            try:
                got = fn(dict(cfg), b)
            except KeyError as exc:
                field = exc.args[0] if exc.args else "?"
                default = {"head_dim": "hidden_size // num_attention_heads",
                           "num_key_value_heads": "num_attention_heads"}.get(field)
                tip = f"; when it is missing, transformers uses {default}" if default else ""
                raise Wrong(f"{name}'s config has no field {field!r}{tip} (use config.get)") from None
            if is_placeholder(got):
                raise NotImplementedError   # the stub still returns ___: not attempted yet
            value = as_number(got, f"the bytes your function returns for {name}")
            right = reference_bytes_per_token(cfg, b)
            if value != right:
                raise Wrong(_diagnose_1_1(name, cfg, b, value, right))
    gemma = reference_bytes_per_token(EXERCISE_CONFIGS["Gemma-2-9B"], 2)
    lite = reference_bytes_per_token(EXERCISE_CONFIGS["DeepSeek-V2-Lite"], 2)
    return (f"right for all {len(EXERCISE_CONFIGS)} configs in BF16 and FP8 (e.g. Gemma-2-9B {gemma:,} B, "
            f"DeepSeek-V2-Lite {lite:,} B per token in BF16).")


@checker("1.2", hint="bytes per token (all layers, K and V, 2 B in BF16) x 32,768 tokens = one sequence; "
                     "how many of those fit in 80 x 10**9 bytes? Round down (use //)")
def check_max_batch_80gb(answer):
    """Exercise 1.2: the largest batch of 32,768-token Mistral-7B sequences whose BF16 KV cache fits in 80 GB
    (80·10⁹ B, cache only). Expected from :data:`MISTRAL_7B`.
    """
    x = as_number(answer, "the batch (a whole number of sequences)")
    context, budget = 32_768, 80 * 10**9
    per_seq = reference_bytes_per_token(MISTRAL_7B, 2) * context
    right = budget // per_seq
    if x == right:
        return f"{right} sequences: {right * per_seq / 1e9:.1f} GB of cache; one more would need {(right + 1) * per_seq / 1e9:.1f} GB."
    if x != int(x):
        raise Wrong(f"{x:g} is not a whole batch: round DOWN, a partial sequence does not fit")
    n_h = MISTRAL_7B["num_attention_heads"]
    wrongs = {
        right + 1: "one too many: the cache must fit, so round down (//), not to the nearest",
        80 * 2**30 // per_seq: "that uses 80 GiB = 80·2³⁰ B; accelerator memory is quoted in GB = 10⁹ B",
        budget // (per_seq // 2): "twice the answer: count keys AND values, and 2 bytes per BF16 element",
        budget // (per_seq // 4): "four times the answer: count keys AND values, and 2 bytes per BF16 element",
        budget // (per_seq * n_h // MISTRAL_7B["num_key_value_heads"]):
            "that counts all 32 query heads; Mistral caches only its 8 key/value heads (GQA)",
        budget // (per_seq // MISTRAL_7B["num_hidden_layers"]): "one layer only: every layer keeps its own cache",
    }
    if x in wrongs:
        raise Wrong(f"{x:g}: {wrongs[x]}")
    raise Wrong(f"{x:g} is not right: one sequence holds 2 x 8 KV heads x 128 x 32 layers x 2 B x 32,768 tokens; "
                f"divide 80·10⁹ B by that and round down")


@checker("1.3", hint="per layer MLA caches d_c + d_h^R elements and GQA 2 x n_kv x d_h; "
                     "set them equal with n_kv = 8, d_h = 128, d_h^R = 64 and solve for d_c")
def check_mla_rank_for_gqa_heads(answer):
    """Exercise 1.3: with d_h = 128 and d_h^R = 64, the ``kv_lora_rank`` d_c for which one MLA layer caches as
    much per token as GQA with 8 key/value heads (2·8·128 = d_c + 64)."""
    x = as_number(answer, "kv_lora_rank (a whole number of channels)")
    n_kv, d_h, d_r = 8, 128, 64
    right = 2 * n_kv * d_h - d_r
    if x == right:
        return f"d_c = {right}: {right} + {d_r} = {right + d_r} = 2·{n_kv}·{d_h}, so MLA would be 'GQA with 8 groups'."
    wrongs = {
        2 * n_kv * d_h: "MLA also caches the shared rope key k^R (64 elements): leave room for it",
        n_kv * d_h - d_r: "a GQA layer caches keys AND values: 2 x 8 x 128 elements per token",
        2 * n_kv * d_h + d_r: "k^R is part of MLA's 576-style budget: subtract d_h^R, do not add it",
        n_kv * d_h: "count keys and values (x 2) and subtract the rope key (64)",
    }
    if x in wrongs:
        raise Wrong(f"{x:g}: {wrongs[x]}")
    groups = (x + d_r) / (2 * d_h)
    raise Wrong(f"{x:g} gives MLA the cache of GQA with {groups:.3g} key/value heads, not 8: solve "
                f"d_c + 64 = 2 x 8 x 128")
