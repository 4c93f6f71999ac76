"""Exercise checkers of chapter 01 (why the KV cache is the bottleneck), on the pattern of
:mod:`dsv3_lessons.course.common.checking`: they never raise and print "not attempted yet" + a nudge, a ✗ diagnosis
(with a pointer to ``hint("1.N")``), or ✓.

* 1.1 (variation, code): ``kv_cache_bytes(config, context, bytes_per_element)``: the KV cache of ONE sequence for
  any ``config.json``, including what the chapter does not show -- sliding-window layers (Mistral-7B v0.1: every
  layer; Gemma-2: every other layer), missing ``head_dim`` / ``num_key_value_heads`` fields, and MLA -- checked on
  four published configurations (:data:`EXERCISE_CONFIGS`) at two context lengths and two element sizes;
* 1.2 (bug hunt, code): a decoding step on a pre-allocated cache that lets the unused slots into the softmax
  (:data:`BUGGY_DECODE_SOURCE`; SPEC pitfall "unused cache slots in the softmax"); the fixed function is run
  against ``torch.nn.functional.scaled_dot_product_attention`` on random inputs, with the unused slots holding
  zeros and then NaN;
* 1.3 (predict, then run): how many of the chapter's seven models fit the KV cache of 8 sequences of 128K
  tokens in one 80 GB accelerator, written before the plot that shows it;
* 1.4 (explain with a number): the ``kv_lora_rank`` that gives MLA the cache of GQA with 8 key/value heads.

Every expected value is computed here from the configs and the closed-form cache formula (2·n_kv·d_h·l·b, or
(d_c + d_h^R)·l·b for MLA; V2 report arXiv 2405.04434 Table 1), never typed in.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker, hint,  # noqa: F401
                                                 is_placeholder)  # (___ and hint are re-exported for the notebook)

__all__ = ["___", "hint", "EXERCISE_CONFIGS", "MISTRAL_7B", "EXERCISE_CONTEXTS", "reference_cache_bytes",
           "check_kv_cache_bytes_function", "BUGGY_DECODE_SOURCE", "check_decode_step", "PREDICTION_SETTING",
           "models_that_fit", "check_fit_prediction", "check_mla_rank_for_gqa_heads"]


# ---------------------------------------------------------------------------------------------------------- 1.1
#: Published ``config.json`` excerpts (field names as released) the chapter does not show. Fields a file omits take
#: transformers' defaults: ``head_dim`` = hidden_size // num_attention_heads and ``num_key_value_heads`` =
#: num_attention_heads. ``sliding_window``: a sliding layer keeps only the last ``sliding_window`` tokens; which
#: layers slide is ``layer_types`` ("sliding_attention" / "full_attention", as transformers writes it), and
#: without ``layer_types`` every layer slides.
EXERCISE_CONFIGS: dict[str, dict[str, Any]] = {
    # huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json: no head_dim field (4096 / 32 = 128);
    # sliding_window 4096 on every layer (Mistral 7B paper, arXiv 2310.06825, §2 "Sliding Window Attention")
    "Mistral-7B-v0.1": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "sliding_window": 4096},
    # huggingface.co/google/gemma-2-9b/blob/main/config.json: head_dim 256 given, NOT 3584 / 16 = 224;
    # local (4096-token window) and global attention alternate, layer 0 local (Gemma 2 report arXiv 2408.00118
    # §2; transformers' Gemma2Config.layer_types)
    "Gemma-2-9B": {"num_hidden_layers": 42, "hidden_size": 3584, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 256, "sliding_window": 4096,
                   "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(42)]},
    # huggingface.co/huggyllama/llama-7b/blob/main/config.json (LLaMA-1: MHA, no num_key_value_heads field)
    "LLaMA-1-7B": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32},
    # huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json (MLA: d_c 512 + d_h^R 64, 27 layers)
    "DeepSeek-V2-Lite": {"num_hidden_layers": 27, "hidden_size": 2048, "num_attention_heads": 16,
                         "num_key_value_heads": 16, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                         "qk_nope_head_dim": 128, "v_head_dim": 128},
}

#: The config printed in the notebook for the learner to try (Mistral-7B v0.1).
MISTRAL_7B = EXERCISE_CONFIGS["Mistral-7B-v0.1"]

#: Context lengths (tokens in the sequence) exercise 1.1 is checked at: below and above the 4096-token windows.
EXERCISE_CONTEXTS = (1000, 8192)


def _per_layer_elements(config: dict[str, Any]) -> int:
    if config.get("kv_lora_rank"):
        return config["kv_lora_rank"] + config["qk_rope_head_dim"]
    n_kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * n_kv * head_dim


def _sliding_layers(config: dict[str, Any]) -> int:
    if not config.get("sliding_window"):
        return 0
    types = config.get("layer_types")
    return config["num_hidden_layers"] if types is None else sum(t == "sliding_attention" for t in types)


def reference_cache_bytes(config: dict[str, Any], context: int, bytes_per_element: int) -> int:
    """KV-cache bytes of ONE sequence of ``context`` tokens, all layers: per layer 2·n_kv·d_h elements per token
    (d_c + d_h^R for MLA) times the tokens the layer keeps (``min(context, sliding_window)`` for a sliding layer,
    ``context`` otherwise) times ``bytes_per_element``. Missing fields take transformers' defaults (see
    :data:`EXERCISE_CONFIGS`). Raises KeyError for a config without layers or heads."""
    layers, per_layer = config["num_hidden_layers"], _per_layer_elements(config)
    sliding = _sliding_layers(config)
    window = config.get("sliding_window") or context
    return per_layer * ((layers - sliding) * context + sliding * min(context, window)) * bytes_per_element


def _diagnose_1_1(name: str, cfg: dict[str, Any], context: int, b: int, got: float, right: int, fn) -> str:
    """Why ``got`` differs from ``right`` for one config and context (a sentence naming the config and the fault)."""
    layers, per_layer = cfg["num_hidden_layers"], _per_layer_elements(cfg)
    n_slide = _sliding_layers(cfg)
    window = cfg.get("sliding_window")
    where = f"for {name} at {context:,} tokens with bytes_per_element={b} you return {got:,.0f}, expected {right:,}"
    full = per_layer * layers * context * b
    if window and n_slide and math.isclose(got, full) and context > window:
        return (f"{where}: that keeps all {context:,} tokens in every layer, but a sliding-window layer keeps only "
                f"the last sliding_window = {window:,}")
    if window and n_slide < layers and math.isclose(got, per_layer * layers * min(context, window) * b):
        return (f"{where}: you applied the window to every layer; only the layers whose layer_types entry is "
                f"'sliding_attention' ({n_slide} of {layers}) keep a window, the others keep every token")
    if window and context < window and math.isclose(got, right * window / context):
        return (f"{where}: a layer cannot keep more tokens than the sequence has: a window of {window:,} over "
                f"{context:,} tokens keeps {context:,}")
    r = got / right
    # a missing element size and a missing factor 2 both halve the BF16 answer: the function's own 1-byte and
    # 2-byte results tell them apart (equal when it ignores bytes_per_element)
    if math.isclose(r, 1 / b) and _same_for_b1_b2(fn, cfg, context):
        return f"{where}: multiply by bytes_per_element (the answer is in bytes, not elements)"
    if cfg.get("kv_lora_rank"):
        d_c, d_r = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
        if math.isclose(r, d_c / (d_c + d_r)):
            return f"{where}: MLA also caches the rotated key k^R (qk_rope_head_dim channels) beside c^KV"
        if math.isclose(r, 2.0) or math.isclose(r, 2 * d_c / (d_c + d_r)):
            return f"{where}: MLA caches ONE latent c^KV per token, not separate keys and values (no factor 2)"
        heads = 2 * cfg["num_attention_heads"] * cfg["qk_nope_head_dim"] * layers * context * b
        if math.isclose(got, heads) or math.isclose(got, 2 * cfg["hidden_size"] * layers * context * b):
            return (f"{where}: this is an MLA config (it has kv_lora_rank); it caches (kv_lora_rank + "
                    f"qk_rope_head_dim) elements per token and layer, not per-head keys and values")
    n_h = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_h
    if math.isclose(r, 0.5):
        return f"{where}: half of it: a layer caches keys AND values"
    if math.isclose(r, 1 / layers):
        return f"{where}: that is one layer: every layer keeps its own cache"
    if math.isclose(r, 1 / context):
        return f"{where}: that is one token: multiply by the tokens each layer keeps"
    if n_kv != n_h and math.isclose(r, n_h / n_kv):
        return (f"{where}: you counted num_attention_heads ({n_h}) heads; the cache holds only the "
                f"num_key_value_heads ({n_kv}) key/value heads the query heads share")
    if "head_dim" in cfg and math.isclose(r, (cfg["hidden_size"] // n_h) / cfg["head_dim"]):
        return (f"{where}: this config gives head_dim ({cfg['head_dim']}) explicitly and it is not "
                f"hidden_size // num_attention_heads ({cfg['hidden_size'] // n_h}): use the field when present")
    return (f"{where}: count, per layer, the elements one token caches and the tokens that layer keeps, then sum "
            f"over the layers")


def _same_for_b1_b2(fn, cfg, context) -> bool:
    """True when ``fn`` returns the same number for 1 and 2 bytes per element (it ignores the element size)."""
    try:
        return call_learner(fn, dict(cfg), context, 1) == call_learner(fn, dict(cfg), context, 2)
    except Exception:  # noqa: BLE001  (a diagnosis helper must never raise)
        return False


@checker("1.1", hint="per layer: how many elements does one token add, and how many tokens does that layer keep? "
                     "Mind the fields a config may leave out.",
         more=["Missing fields take transformers' defaults: head_dim = hidden_size // num_attention_heads, "
               "num_key_value_heads = num_attention_heads. config.get(...) tells you whether a field is there.",
               "An MLA config (it has kv_lora_rank) caches one latent and one rope key per token and layer: "
               "kv_lora_rank + qk_rope_head_dim elements, no factor 2.",
               "A sliding layer keeps at most sliding_window tokens (fewer if the sequence is shorter). Which layers "
               "slide: layer_types, or all of them when layer_types is missing."])
def check_kv_cache_bytes_function(fn: Callable[[dict, int, int], Any]):
    """Exercise 1.1: ``fn(config, context, bytes_per_element)`` must return the KV-cache bytes of one sequence.

    Checked on every config of :data:`EXERCISE_CONFIGS` (all-sliding GQA without ``head_dim``, alternating sliding
    GQA with an explicit ``head_dim``, MHA without ``num_key_value_heads``, MLA) at :data:`EXERCISE_CONTEXTS` in
    BF16 (2 B) and FP8 (1 B). A field read without a default is named; a function that ignores
    ``bytes_per_element`` is recognised by comparing its 1-byte and 2-byte results.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (kv_cache_bytes), not {type(fn).__name__}")
    for name, cfg in EXERCISE_CONFIGS.items():
        for context in EXERCISE_CONTEXTS:
            for b in (2, 1):
                try:
                    got = call_learner(fn, dict(cfg), context, b)
                except KeyError as exc:
                    field = exc.args[0] if exc.args else "?"
                    default = {"head_dim": "hidden_size // num_attention_heads",
                               "num_key_value_heads": "num_attention_heads",
                               "layer_types": "every layer slides",
                               "sliding_window": "no window: every layer keeps every token"}.get(field)
                    tip = f"; when it is missing, {default}" if default else ""
                    raise Wrong(f"{name}'s config has no field {field!r}{tip} (use config.get)") from None
                if is_placeholder(got):
                    raise NotImplementedError
                value = as_number(got, f"the bytes your function returns for {name}")
                right = reference_cache_bytes(cfg, context, b)
                if value != right:
                    raise Wrong(_diagnose_1_1(name, cfg, context, b, value, right, fn))
    mistral = reference_cache_bytes(MISTRAL_7B, 32_768, 2)
    gemma = reference_cache_bytes(EXERCISE_CONFIGS["Gemma-2-9B"], 8192, 2)
    return (f"right for all {len(EXERCISE_CONFIGS)} configs, both contexts, BF16 and FP8. With its window, "
            f"Mistral-7B v0.1 holds {mistral / 1e9:.2f} GB at 32K tokens, not {32_768 / 4096:.0f}x that; Gemma-2-9B "
            f"{gemma / 1e9:.2f} GB at 8K (its global layers keep everything).")


# ---------------------------------------------------------------------------------------------------------- 1.2
#: The decoding step exercise 1.2 shows (one line is wrong: it attends over the whole pre-allocated buffer).
BUGGY_DECODE_SOURCE = '''\
def decode_step(q, k_new, v_new, cache_k, cache_v, length):
    """One MHA decoding step on a pre-allocated cache.

    q, k_new, v_new: [n_h, d_h] for the new token; cache_k, cache_v: [max_len, n_h, d_h] buffers whose first
    `length` rows hold the earlier tokens. Returns the new token's output [n_h, d_h] and the new length."""
    cache_k[length], cache_v[length] = k_new, v_new            # append the new token's key and value
    length += 1
    scores = torch.einsum("hd,jhd->hj", q, cache_k) / q.shape[-1] ** 0.5   # [n_h, max_len]
    probs = scores.softmax(dim=-1)
    return torch.einsum("hj,jhd->hd", probs, cache_v), length
'''


def _reference_decode(q, k, v):
    """Causal attention of every position over the earlier ones: ``[T, n_h, d_h]`` each -> ``[T, n_h, d_h]``."""
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
    return out.transpose(0, 1)


@checker("1.2", hint="run it: the checker compares it with causal attention. Then ask which rows of the buffer hold "
                     "a token when the step computes its scores.",
         more=["The buffers have max_len rows, but only the first `length` rows hold tokens; the rest are whatever "
               "the buffer was filled with.",
               "What does the softmax give a row whose key is all zeros? And what does a NaN row do to the sum over "
               "rows, even with weight 0?",
               "Hiding the unused rows from the scores is not enough if they still enter the value sum."])
def check_decode_step(fn: Callable[..., Any]):
    """Exercise 1.2 (bug hunt): ``fn(q, k_new, v_new, cache_k, cache_v, length) -> (out [n_h, d_h], length + 1)``
    must equal causal attention (``torch.nn.functional.scaled_dot_product_attention``, ``is_causal=True``) at every
    step, whatever the unused rows of the buffers hold.

    Run on random inputs twice: buffers filled with zeros (what ``torch.zeros`` gives) and with NaN (what stale or
    uninitialised memory may hold). Names the fault: unused rows given softmax weight (the bug as shown), a mask
    on the scores that still lets NaN through the value sum, the newest token left out, a missing 1/√d_h, a wrong
    returned length.
    """
    import torch

    if not callable(fn):
        raise Wrong(f"pass your function itself (decode_step), not {type(fn).__name__}")
    gen = torch.Generator().manual_seed(11)
    n_h, d_h, steps, max_len = 4, 8, 6, 10
    q, k, v = (torch.randn(steps, n_h, d_h, generator=gen) for _ in range(3))
    right = _reference_decode(q, k, v)
    for fill in (0.0, float("nan")):
        cache_k = torch.full((max_len, n_h, d_h), fill)
        cache_v = torch.full((max_len, n_h, d_h), fill)
        length = 0
        for t in range(steps):
            result = call_learner(fn, q[t], k[t], v[t], cache_k, cache_v, length)
            if not isinstance(result, tuple) or len(result) != 2:
                raise Wrong(f"return a pair (output [n_h, d_h], new length); got {type(result).__name__}")
            out, new_length = result
            if is_placeholder(out) or is_placeholder(new_length):
                raise NotImplementedError
            if new_length != length + 1:
                raise Wrong(f"at step {t} the cache held {length} tokens and you returned length {new_length!r}; "
                            f"after appending one token it holds {length + 1}")
            length = new_length
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n_h, d_h):
                raise Wrong(f"the output must be a tensor [n_h, d_h] = [{n_h}, {d_h}], got "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
            if torch.allclose(out, right[t], atol=1e-5):
                continue
            what = "zeros" if fill == 0.0 else "NaN"
            if torch.isnan(out).any():
                raise Wrong(f"with NaN in the {max_len - length} unused rows your step {t} output holds NaN "
                            f"(with zeros there it was right): a -inf score gives those rows weight 0, but "
                            f"0·NaN = NaN in the value sum; read only the rows that hold tokens")
            everything = torch.nan_to_num(torch.einsum("hd,jhd->hj", q[t], cache_k) / d_h**0.5).softmax(-1)
            if fill == 0.0 and torch.allclose(out, torch.einsum("hj,jhd->hd", everything, cache_v), atol=1e-5):
                raise Wrong(f"step {t} (cache holding {length} of {max_len} rows) differs from causal attention by "
                            f"up to {float((out - right[t]).abs().max()):.2f}: your output equals attention over all "
                            f"{max_len} rows, the {max_len - length} unused ones ({what}) included, each with a "
                            f"score of 0 and so a share of the softmax")
            if t == 0:
                skips_self = torch.allclose(out, torch.zeros_like(out))   # an empty softmax over no rows
            else:
                earlier = (torch.einsum("hd,jhd->hj", q[t], k[:t]) / d_h**0.5).softmax(-1)
                skips_self = torch.allclose(out, torch.einsum("hj,jhd->hd", earlier, v[:t]), atol=1e-5)
            if skips_self:
                raise Wrong(f"step {t}: the new token does not attend to itself: include the row you just wrote")
            unscaled = torch.einsum("hj,jhd->hd", torch.einsum("hd,jhd->hj", q[t], k[:t + 1]).softmax(-1), v[:t + 1])
            if torch.allclose(out, unscaled, atol=1e-5):
                raise Wrong(f"step {t}: the scores miss the 1/sqrt(d_h) scale")
            raise Wrong(f"step {t} (unused rows holding {what}) differs from causal attention by up to "
                        f"{float((out - right[t]).abs().max()):.3g}")
    return ("equal to causal attention at every step, with zeros and with NaN in the unused rows: the step reads "
            "only the valid prefix, as the module's KVCache does.")


# ---------------------------------------------------------------------------------------------------------- 1.3
#: The workload of exercise 1.3: sequences of this many tokens, this many of them, this dtype, this budget (GB).
PREDICTION_SETTING = {"context": 128 * 1024, "batch": 8, "dtype": "bf16", "budget_gb": 80.0}


def models_that_fit(configs=None, context: int = PREDICTION_SETTING["context"], batch: int = PREDICTION_SETTING["batch"],
                    dtype: str = PREDICTION_SETTING["dtype"], budget_gb: float = PREDICTION_SETTING["budget_gb"]):
    """Names of the published models whose KV cache for ``batch`` sequences of ``context`` tokens fits in
    ``budget_gb`` GB (10⁹ B), from :func:`dsv3_lessons.course.ch01_kv_cache.kv_cache.cache_bytes`."""
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import cache_bytes, load_model_configs

    configs = load_model_configs() if configs is None else configs
    return [name for name, spec in configs.items() if cache_bytes(spec, context, batch, dtype) <= budget_gb * 1e9]


@checker("1.3", hint="a guess is fine, but you can reason: what may one token cost at most, all layers together, so "
                     "that 8 x 131,072 of them fit in 80 GB? Then look at the bar chart of section 4.",
         more=["The budget per token is 80·10⁹ B / (8 · 131,072 tokens).",
               "Compare that budget with each bar of the 'what one token leaves behind' chart (KB = 1000 B)."])
def check_fit_prediction(prediction):
    """Exercise 1.3 (predict, then run): how many of the chapter's seven published models fit the BF16 KV cache of
    8 sequences of 131,072 tokens in 80 GB (cache only). Expected: :func:`models_that_fit`."""
    x = as_number(prediction, "your prediction (a number of models)")
    fit = models_that_fit()
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import load_model_configs

    n_models = len(load_model_configs())
    s = PREDICTION_SETTING
    per_token = s["budget_gb"] * 1e9 / (s["batch"] * s["context"])
    if x == len(fit):
        return (f"{len(fit)} of {n_models}: {', '.join(fit)}. The budget is {per_token / 1e3:.1f} KB per token; only "
                f"MLA's 576 elements per layer and Falcon-7B's single key/value head stay under it.")
    if x != int(x) or not 0 <= x <= n_models:
        raise Wrong(f"{x:g} is not a count of the {n_models} models")
    if x == n_models:
        raise Wrong(f"the run says {len(fit)}, not all {n_models}: at batch 1 every model fits 128K tokens, but 8 "
                    f"sequences need 8 times the cache; the budget is {per_token / 1e3:.1f} KB per token")
    if x == 0:
        raise Wrong(f"the run says {len(fit)}: some designs cache less than {per_token / 1e3:.1f} KB per token "
                    f"(80 GB / 8 sequences / 131,072 tokens)")
    raise Wrong(f"you predicted {x:g}, the run says {len(fit)}: the budget is {per_token / 1e3:.1f} KB per token; "
                f"compare it with each model's bar in section 4")


# ---------------------------------------------------------------------------------------------------------- 1.4
@checker("1.4", hint="write down what ONE layer caches per token in each design, then ask which d_c makes the two "
                     "equal",
         more=["A GQA layer keeps a key AND a value for each of its n_kv heads.",
               "MLA keeps the latent c^KV (d_c wide) and the shared rope key k^R (d_h^R wide)."])
def check_mla_rank_for_gqa_heads(answer):
    """Exercise 1.4: with d_h = 128 and d_h^R = 64, the ``kv_lora_rank`` d_c for which one MLA layer caches as
    much per token as GQA with 8 key/value heads (2·8·128 = d_c + 64)."""
    x = as_number(answer, "kv_lora_rank (a whole number of channels)")
    n_kv, d_h, d_r = 8, 128, 64
    right = 2 * n_kv * d_h - d_r
    if x == right:
        return (f"d_c = {right}: {right} + {d_r} = {right + d_r} = 2·{n_kv}·{d_h}. V3's d_c = 512 is a quarter of "
                f"that: MLA bets that keys and values of 128 heads fit in a latent as wide as GQA's 2 heads.")
    wrongs = {
        2 * n_kv * d_h: "MLA also caches the shared rope key k^R (64 elements): leave room for it",
        n_kv * d_h - d_r: "a GQA layer caches keys AND values for each of its 8 heads",
        2 * n_kv * d_h + d_r: "k^R is part of MLA's cache, not of GQA's: subtract d_h^R, do not add it",
        n_kv * d_h: "count GQA's keys and values, and leave room for MLA's rope key",
    }
    if x in wrongs:
        raise Wrong(f"{x:g}: {wrongs[x]}")
    groups = (x + d_r) / (2 * d_h)
    raise Wrong(f"{x:g} gives MLA the cache of GQA with {groups:.3g} key/value heads, not 8")
