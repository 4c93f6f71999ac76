"""Exercise checkers of chapter 01 (why the KV cache is the bottleneck), on the pattern of
:mod:`dsv3_lessons.course.common.checking`: they never raise and print "not attempted yet" + a nudge, a ✗ diagnosis
(with a pointer to ``hint("1.N")``), or ✓.

* 1.1 (variation, code): ``kv_cache_bytes(config, context, bytes_per_element)``: the KV cache of ONE sequence for
  any ``config.json``, including what the chapter does not show -- sliding-window layers (Mistral-7B v0.1: every
  layer; Gemma-2: every other layer), missing ``head_dim`` / ``num_key_value_heads`` fields, and MLA -- checked on
  four published configurations (:data:`EXERCISE_CONFIGS`) at two context lengths and two element sizes;
* 1.2 (bug hunt, code): the newest token's attention written with a ``repeat_kv`` helper that tiles the key/value
  heads (``Tensor.repeat``) instead of giving each its block of g consecutive query heads
  (:data:`BUGGY_ATTENTION_SOURCE`). Its author tested MHA and MQA, the two head counts where tiling and blocking
  agree; the checker adds GQA shapes and states only the symptom (which query heads differ);
* 1.3 (predict, then run): how many of the chapter's seven models fit the KV cache of 8 sequences of 128K
  tokens in one 80 GB accelerator, written before the plot that shows it (the plot stays hidden until then);
* 1.4 (explain with a number, two steps): from which context length on one DeepSeek-V3 sequence caches more than
  one Mistral-7B v0.1 sequence, whose sliding window stops its cache at 4,096 tokens.

Every expected value is computed here from the configs and the closed-form cache formula (2·n_kv·d_h·l·b, or
(d_c + d_h^R)·l·b for MLA; V2 report arXiv 2405.04434 Table 1), never typed in.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker, hint,  # noqa: F401
                                                 is_placeholder)  # (___ and hint are re-exported for the notebook)

__all__ = ["___", "hint", "EXERCISE_CONFIGS", "MISTRAL_7B", "EXERCISE_CONTEXTS", "reference_cache_bytes",
           "check_kv_cache_bytes_function", "BUGGY_ATTENTION_SOURCE", "GQA_SHAPES", "check_last_token_attention",
           "PREDICTION_SETTING", "models_that_fit", "check_fit_prediction", "window_crossover",
           "check_window_crossover"]


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
    where = (f"for {name} at {context:,} tokens with bytes_per_element={b} you return {got:,.{0 if got >= 1 else 3}f}, "
             f"expected {right:,}")
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
                    default = {"head_dim": "it is hidden_size // num_attention_heads",
                               "num_key_value_heads": "it equals num_attention_heads (MHA)",
                               "layer_types": "every layer slides",
                               "sliding_window": "there is no window: every layer keeps every token"}.get(field)
                    tip = f"; when it is missing, {default}" if default else ""
                    raise Wrong(f"{name}'s config has no field {field!r}{tip} (use config.get)") from None
                if is_placeholder(got):
                    raise NotImplementedError
                value = as_number(got, f"the bytes your function returns for {name}")
                right = reference_cache_bytes(cfg, context, b)
                if value != right:
                    raise Wrong(_diagnose_1_1(name, cfg, context, b, value, right, fn))
    gemma = [reference_cache_bytes(EXERCISE_CONFIGS["Gemma-2-9B"], c, 2) for c in (8192, 65_536)]
    return (f"right for all {len(EXERCISE_CONFIGS)} configs, both contexts, BF16 and FP8. Gemma-2-9B's window "
            f"halves the growth, it does not stop it: {gemma[0] / 1e9:.2f} GB at 8K, {gemma[1] / 1e9:.2f} GB at 64K "
            f"(its global layers keep every token).")


# ---------------------------------------------------------------------------------------------------------- 1.2
#: The attention step exercise 1.2 shows (one line is wrong: ``repeat`` tiles the key/value heads, so query head i
#: reads key/value head i % n_kv instead of i // g). Right whenever n_kv = n_h or n_kv = 1.
BUGGY_ATTENTION_SOURCE = """\
def repeat_kv(kv, n_rep):
    \"\"\"[T, n_kv, d_h] -> [T, n_kv * n_rep, d_h]: a copy of each key/value head per query head.\"\"\"
    return kv.repeat(1, n_rep, 1)


def last_token_attention(q, k, v):
    \"\"\"The newest token's output [n_h, d_h]. q [n_h, d_h]; k, v [T, n_kv, d_h]: the cache.\"\"\"
    n_rep = q.shape[0] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)            # [T, n_h, d_h]
    scores = (k * q).sum(-1) / q.shape[-1] ** 0.5              # [T, n_h]
    return (scores.softmax(dim=0)[:, :, None] * v).sum(0)      # [n_h, d_h]
"""

#: (n_h, n_kv, T) of the checker's trials: MHA and MQA first (what the author tested), then GQA of several sizes
GQA_SHAPES = ((8, 8, 5), (8, 1, 7), (8, 2, 6), (12, 4, 9), (6, 3, 4), (16, 4, 3))


def _gqa_reference(q, k, v, kv_of=None):
    """The newest token's attention with query head i reading key/value head ``kv_of[i]`` (default i // g, the
    GQA paper's grouping, arXiv 2305.13245): q [n_h, d_h], k, v [T, n_kv, d_h] -> [n_h, d_h]."""
    import torch

    n_h, n_kv = q.shape[0], k.shape[1]
    kv_of = torch.arange(n_h) // (n_h // n_kv) if kv_of is None else kv_of
    scores = torch.einsum("hd,thd->ht", q, k[:, kv_of]) / q.shape[-1] ** 0.5
    return torch.einsum("ht,thd->hd", scores.softmax(dim=-1), v[:, kv_of])


def _shape_name(n_h: int, n_kv: int) -> str:
    kind = "MHA" if n_kv == n_h else "MQA" if n_kv == 1 else "GQA"
    return f"{kind} (n_h = {n_h}, n_kv = {n_kv})"


@checker("1.2", hint="run it: the checker compares it with attention where query head i reads key/value head i // g, "
                     "for several head counts. Then ask which key/value head each query head really reads.",
         more=["Take n_h = 4 query heads and n_kv = 2 key/value heads and write down, head by head, which key/value "
               "head repeat_kv puts in front of each query head.",
               "Compare with the chapter's rule for which key/value head query head i reads. Why do the two agree "
               "when n_kv = n_h and when n_kv = 1?",
               "torch has a sibling of Tensor.repeat that copies each entry n times in place, one after the other."])
def check_last_token_attention(fn: Callable[..., Any]):
    """Exercise 1.2 (bug hunt): ``fn(q [n_h, d_h], k [T, n_kv, d_h], v [T, n_kv, d_h]) -> [n_h, d_h]`` must be the
    newest token's attention with grouped-query sharing (query head i reads key/value head i // g, g = n_h / n_kv).

    Oracle: :func:`_gqa_reference` (an einsum over the heads indexed by i // g; the tests also compare it with
    ``torch.nn.functional.scaled_dot_product_attention``). Run on :data:`GQA_SHAPES` with random inputs. A wrong
    output gets the symptom only -- the head counts it was right for and the query heads that differ -- except for
    two slips a fix attempt may add: the softmax taken over the heads instead of the tokens, and a missing 1/√d_h.
    """
    import torch

    if not callable(fn):
        raise Wrong(f"pass your function itself (last_token_attention), not {type(fn).__name__}")
    gen = torch.Generator().manual_seed(5)
    d_h = 16
    passed: list[str] = []
    for n_h, n_kv, t in GQA_SHAPES:
        q = torch.randn(n_h, d_h, generator=gen)
        k, v = torch.randn(t, n_kv, d_h, generator=gen), torch.randn(t, n_kv, d_h, generator=gen)
        out = call_learner(fn, q.clone(), k.clone(), v.clone())
        if is_placeholder(out):
            raise NotImplementedError
        shape = _shape_name(n_h, n_kv)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n_h, d_h):
            raise Wrong(f"for {shape} with T = {t} tokens return a tensor [n_h, d_h] = [{n_h}, {d_h}], got "
                        f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        right = _gqa_reference(q, k, v)
        if torch.allclose(out, right, atol=1e-5):
            passed.append(shape)
            continue
        g = n_h // n_kv
        for kv_of in (torch.arange(n_h) // g, torch.arange(n_h) % n_kv):
            kk, vv = k[:, kv_of], v[:, kv_of]
            scores = torch.einsum("hd,thd->ht", q, kk) / d_h ** 0.5
            over_heads = torch.einsum("ht,thd->hd", scores.softmax(dim=0), vv)
            if torch.allclose(out, over_heads, atol=1e-5):
                raise Wrong(f"for {shape} the weights of a query head sum to 1 over the HEADS; each head's "
                            f"softmax runs over the T = {t} tokens it attends to")
            unscaled = torch.einsum("ht,thd->hd", (scores * d_h ** 0.5).softmax(dim=-1), vv)
            if torch.allclose(out, unscaled, atol=1e-5) and not torch.allclose(unscaled, right, atol=1e-5):
                raise Wrong(f"for {shape} the scores miss the 1/sqrt(d_h) scale")
        bad = [i for i in range(n_h) if not torch.allclose(out[i], right[i], atol=1e-5)]
        earlier = f"right for {' and '.join(passed)}; " if passed else ""
        agree = f"; the other {n_h - len(bad)} heads agree" if len(bad) < n_h else "; no head agrees"
        raise Wrong(f"{earlier}for {shape} the outputs of query heads {', '.join(map(str, bad))} differ from "
                    f"grouped-query attention (by up to {float((out - right).abs().max()):.2f}){agree}")
    return (f"right for all {len(GQA_SHAPES)} head counts, MHA, MQA and GQA: each key/value head serves a block of "
            f"g consecutive query heads, as the GQA checkpoints (and the chapter's i // g) lay them out.")


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
         more=["How many tokens must the accelerator hold at once? Share the 80 GB among all of them.",
               "Compare that share with each bar of the 'what one token leaves behind' chart (KB = 1000 B)."])
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
        raise Wrong(f"you predicted 0, the run says {len(fit)}: some designs cache less than {per_token / 1e3:.1f} KB "
                    f"per token (80 GB / 8 sequences / 131,072 tokens)")
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import cache_bytes

    def kb(name: str) -> str:                           # one token, all layers, BF16
        return f"{cache_bytes(load_model_configs()[name], 1, 1, s['dtype']) / 1e3:.1f} KB"

    if x < len(fit):
        raise Wrong(f"you predicted {x:g}, the run says {len(fit)}: "
                    f"{', '.join(f'{n} ({kb(n)})' for n in fit)} all stay under the budget of {per_token / 1e3:.1f} "
                    f"KB per token. Which of them did you leave out, and what makes its token cheap?")
    past = {n: kb(n) for n in load_model_configs() if n not in fit}
    cheapest = [n for n in past if past[n] == min(past.values(), key=lambda v: float(v.split()[0]))]
    who = (f"the cheapest model past it, {cheapest[0]}, caches" if len(cheapest) == 1 else
           f"the cheapest models past it, {' and '.join(cheapest)}, cache")
    raise Wrong(f"you predicted {x:g}, the run says {len(fit)}: the budget is {per_token / 1e3:.1f} KB per token, "
                f"and {who} {past[cheapest[0]]} per token")


# ---------------------------------------------------------------------------------------------------------- 1.4
def _v3_bytes_per_token(layers: int | None = None, b: int = 2, rope: bool = True) -> int:
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import load_model_config

    v3 = load_model_config("DeepSeek-V3")
    return (v3.kv_lora_rank + (v3.qk_rope_head_dim if rope else 0)) * (layers or v3.num_hidden_layers) * b


def window_crossover(mistral: dict[str, Any] | None = None, v3_bytes_per_token: int | None = None) -> int:
    """The smallest context T (tokens) at which ONE DeepSeek-V3 sequence holds MORE KV cache than one sequence of
    the sliding-window model ``mistral`` (default :data:`MISTRAL_7B`), both in BF16.

    V3 grows by ``v3_bytes_per_token`` (default 61·576·2 = 70,272 B) per token for ever; the window model grows faster
    per token but stops at ``sliding_window`` tokens (:func:`reference_cache_bytes`). Raises ValueError when V3
    never passes it (V3 larger from the first token, or the window model never capped)."""
    mistral = MISTRAL_7B if mistral is None else mistral
    per = _v3_bytes_per_token() if v3_bytes_per_token is None else v3_bytes_per_token
    window = mistral.get("sliding_window")
    if not window or reference_cache_bytes(mistral, 1, 2) <= per:
        raise ValueError("no crossover: the window model must cap its cache and cache more per token than V3")
    cap = reference_cache_bytes(mistral, window, 2)
    return cap // per + 1


@checker("1.4", hint="sketch both caches against the context length: where does each one stop growing, and how fast "
                     "does each grow?",
         more=["Below 4,096 tokens both caches grow with every token: which of the two grows faster per token?",
               "From 4,096 tokens on, Mistral's cache no longer grows. How large is it then (every layer, keys and "
               "values, BF16)?",
               "DeepSeek-V3's cache grows by the same number of bytes with every token. The answer is the first "
               "whole number of tokens at which it is larger than Mistral's capped cache."])
def check_window_crossover(answer):
    """Exercise 1.4 (explain with a number): from which context length on (the smallest T, tokens) does one
    DeepSeek-V3 sequence hold more BF16 KV cache than one Mistral-7B v0.1 sequence? Two facts combined: Mistral's
    sliding window stops its cache at 4,096 tokens, and V3's MLA cache grows with every token for ever. The
    expected value comes from :func:`window_crossover`."""
    x = as_number(answer, "the context length (a whole number of tokens)")
    right = window_crossover()
    per_v3 = _v3_bytes_per_token()
    m = MISTRAL_7B
    per_m = reference_cache_bytes(m, 1, 2)
    window = m["sliding_window"]
    cap = reference_cache_bytes(m, window, 2)
    if x == right:
        return (f"{right:,} tokens. Up to {window:,} tokens Mistral caches {per_m:,} B per token against V3's "
                f"{per_v3:,}, so V3 holds less; then Mistral's window stops its cache at {cap / 1e9:.3f} GB, while V3 "
                f"keeps every token and passes that at {right:,} tokens (about {right / window:.2f}x the window). "
                f"A window caps the cache by forgetting; MLA shrinks each token and remembers them all.")
    if abs(x - cap) <= 1 or abs(x - cap / 1e9) < 5e-4 or abs(x - cap / 2**30) < 5e-4:
        shown = f"{x:,.0f}" if x >= 100 else f"{x:g}"
        raise Wrong(f"{shown} looks like the size of Mistral's capped cache (in bytes or GB), not a context "
                    f"length: give the number of tokens at which V3's cache passes it")
    if 1 < x < 10:
        raise Wrong(f"{x:g} looks like a ratio of the two caches, not a context length: give a number of tokens")
    if x != int(x):
        raise Wrong(f"{x:g} is not a whole number of tokens: give the first context length at which V3's cache is "
                    f"the larger one")
    if x < 0:
        raise Wrong(f"{x:g} is not a context length: give a positive number of tokens")
    if x <= 1:
        raise Wrong(f"{x:g}: V3's cache does overtake Mistral's. Below {window:,} tokens Mistral grows faster, but "
                    f"its window stops it there, and V3's grows for ever")
    if x in (window, window + 1):
        raise Wrong(f"{x:,.0f} is where Mistral's window starts to cap its cache; there V3 still holds less "
                    f"({per_v3:,} B per token against Mistral's {per_m:,}), so it passes Mistral later")

    def first_above(limit: int, per: int) -> int:
        return limit // per + 1

    named = {
        first_above(cap // 2, per_v3): "that is where V3 passes half of Mistral's capped cache. Either Mistral's "
                                        "values were left out (it caches keys AND values for each key/value "
                                        "head), or V3's latent was counted twice (MLA caches one latent for both, "
                                        "plus k^R)",
        first_above(cap * m["num_attention_heads"] // m["num_key_value_heads"], per_v3):
            f"Mistral's {m['num_attention_heads']} query heads share {m['num_key_value_heads']} key/value heads: "
            f"only those are cached",
        first_above(cap, _v3_bytes_per_token(b=1)): "both caches are in BF16 (2 B per element)",
        first_above(cap, _v3_bytes_per_token(rope=False)): "MLA also caches the rotated key k^R (64 elements per "
                                                           "layer) beside the latent",
        first_above(cap, _v3_bytes_per_token(layers=62)): "count V3's 61 layers, as the chapter does (the MTP "
                                                          "module is not part of plain decoding)",
    }
    if x in named and x != right:
        raise Wrong(f"{x:,.0f}: {named[x]}")

    def v3(t):
        return per_v3 * t

    def mistral(t):
        return reference_cache_bytes(m, int(t), 2)

    if v3(x) <= mistral(x):
        raise Wrong(f"at {x:,.0f} tokens V3 holds {v3(x):,.0f} B and Mistral {mistral(x):,} B: V3 is not yet the "
                    f"larger one")
    if v3(x - 1) > mistral(x - 1):
        raise Wrong(f"at {x - 1:,.0f} tokens V3 already holds more ({v3(x - 1):,.0f} B against "
                    f"{mistral(x - 1):,} B): give the FIRST context length at which it does")
    raise Wrong(f"{x:,.0f} tokens: compare both caches there")  # unreachable: one of the tests above holds
