"""Exercise checkers: ``check_…(answer)`` grades a learner's answer and explains what is off.

Every checker returns ``True`` when the answer is right and raises :class:`ExerciseError` with a
hint otherwise, so a wrong answer stops the notebook cell with a readable message.
"""
from __future__ import annotations

__all__ = ["ExerciseError"]


class ExerciseError(AssertionError):
    """The learner's answer is not right yet; the message says what to look at."""


# ==================================================================================================
# Chapter 01 -- KV cache (why the KV cache is the bottleneck)
# ==================================================================================================
import numbers as _numbers  # noqa: E402


def _kv_number(answer, what: str) -> float:
    if isinstance(answer, bool) or not isinstance(answer, _numbers.Real):
        raise ExerciseError(f"{what} must be a number, got {answer!r} ({type(answer).__name__})")
    return float(answer)


def check_kv_bytes_per_token(answer) -> bool:
    """Exercise 1.1: bytes of KV cache that ONE token of ONE sequence adds to LLaMA-2-7B, all layers, BF16.

    The facts are in ``data/model_configs/llama-2-7b.json`` (MHA). The expected value is computed
    here from that file with :mod:`dsv3_lessons.course.kv_cache`, not typed in.
    """
    from .kv_cache import bytes_per_token, dtype_bytes, load_model_config

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
    from .kv_cache import GB, bytes_per_token, load_model_config, max_context

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
    from .kv_cache import equivalent_gqa_groups, mla_what_if

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


__all__ += ["check_kv_bytes_per_token", "check_max_context_80gb", "check_mla_rank_for_gqa_groups"]


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
    from .rope_lessons import FOLD_CASES, fold_check

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
    from .rope_lessons import V3_ROPE_SCALING, convention_scores, position_zero_probe

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


__all__ += ["ROPE_EXERCISE_CONFIG", "POSITION_ZERO_MISTAKES", "check_yarn_range", "check_fold_prediction",
            "check_position_zero"]


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
    from .mla_decode import cache_elements_per_token, v3_attention_config

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
    from .mla_decode import decode_flops

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


__all__ += ["check_mla_cache_elements", "check_absorb_flop_ratio"]


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


__all__ += ["check_moe_activated_params"]


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
    from .mla_steps import mla_cost

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


__all__ += ["check_w_uk_shape", "check_kv_b_rows_of_w_uv", "check_query_latent_savings"]
