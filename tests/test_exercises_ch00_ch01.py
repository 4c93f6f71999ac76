"""Exercise checkers of chapters 00 and 01: placeholder (and half-filled bodies), the right answer, typical wrong
answers with the diagnosis each gets, the bug hunts' unfixed code (the text the notebooks show) as ✗, and that no
input makes a checker raise.

Oracles: closed-form arithmetic from the released configs (V3: one expert 3·7168·2048 = 44,040,192; gate
256·7168 + 256), ``count_parameters`` for the MoE variants, the published config.json fields of the exercise
models, H(next | previous) counted by hand, ``torch.nn.functional.scaled_dot_product_attention`` (``enable_gqa``) and the
library's ``generate`` for the bug hunts, a brute-force scan over context lengths for 1.4. The stored notebooks are checked too: exercises unattempted in the chapters (bug hunts ✗),
✓ in the solutions.
"""
from __future__ import annotations

import collections
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, hint
from dsv3_lessons.course.ch00_tour.exercises import (BUGGY_GENERATE_SOURCE, ENTROPY_CASES, ___,
                                                     check_conditional_entropy_function, check_first_step_loss,
                                                     check_greedy_generate, check_moe_layer_params,
                                                     conditional_entropy_reference, moe_cases)
from dsv3_lessons.tools.train import History
from dsv3_lessons.course.ch01_kv_cache.exercises import (BUGGY_ATTENTION_SOURCE, EXERCISE_CONFIGS, GQA_SHAPES,
                                                         _gqa_reference, check_fit_prediction,
                                                         check_kv_cache_bytes_function, check_last_token_attention,
                                                         check_window_crossover, models_that_fit, window_crossover)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def status(result, expected_status, *words):
    assert result.status == expected_status, result
    for w in words:
        assert w in result.message, (w, result.message)


def defined(source: str, name: str):
    """The function ``name`` that ``source`` (a notebook's code, as shown) defines."""
    ns = {"torch": torch}
    exec(source, ns)
    return ns[name]


# ------------------------------------------------------------------------------------------ 0.1 (variation)
def moe_right(cfg):
    expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    gate = cfg.n_routed_experts * cfg.hidden_size + cfg.n_routed_experts
    return ((cfg.n_shared_experts + cfg.n_routed_experts) * expert + gate,
            (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert + gate)


def test_0_1_cases_are_new_and_the_oracle_is_independent():
    from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b

    cases = moe_cases()
    assert len(cases) == 3 and all(c != deepseek_v3_671b() for c in cases.values())
    for cfg in cases.values():          # the hand-written closed form equals the library's count
        assert moe_right(cfg)[0] == count_parameters(cfg).moe_layer
    v2 = cases["V2-sized MoE layer"]
    assert moe_right(v2) == ((2 + 160) * 3 * 5120 * 1536 + 160 * 5121, (2 + 6) * 3 * 5120 * 1536 + 160 * 5121)


def test_0_1_placeholder_half_filled_and_right(capsys):
    def stub(cfg):
        total = ___
        per_token = ___
        return total, per_token
    status(check_moe_layer_params(stub), NOT_ATTEMPTED, "which experts")
    assert "not attempted yet" in capsys.readouterr().out

    def half(cfg):
        total = ___ * 3
        return total, 1
    status(check_moe_layer_params(half), NOT_ATTEMPTED)
    status(check_moe_layer_params(moe_right), RIGHT, "398,196,992", "11,320,164,608")
    status(check_moe_layer_params(lambda c: tuple(np.int64(x) for x in moe_right(c))), RIGHT)
    status(check_moe_layer_params(lambda c: list(map(float, moe_right(c)))), RIGHT)


def _variant(**change):
    def fn(cfg):
        d, m, n_r, n_s, k = (cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts,
                             cfg.n_shared_experts, cfg.num_experts_per_tok)
        n_s, k = change.get("n_s", n_s), change.get("k", k)
        e = change.get("matrices", 3) * d * m
        gate = n_r * d + (0 if change.get("no_bias") else n_r)
        tok_gate = k * d + k if change.get("gate_per_selected") else gate
        total = (0 if change.get("no_shared_total") else n_s) * e + n_r * e + gate
        tok_shared = 0 if change.get("no_shared_token") else n_s
        return total, (tok_shared + k) * e + tok_gate
    return fn


@pytest.mark.parametrize("fn, words", [
    (_variant(gate_per_selected=True), ["ALL N_r routed experts"]),
    (_variant(no_shared_token=True), ["left out the shared expert"]),
    (_variant(no_shared_total=True), ["misses the shared expert"]),
    (_variant(no_bias=True), ["balancing biases"]),
    (_variant(matrices=2), ["THREE matrices"]),
    (_variant(n_s=1), ["n_shared_experts", "not always 1"]),
    (_variant(k=8), ["num_experts_per_tok", "not always 8"]),
    # learner review: the dense width and the group count only got generic messages
    (lambda c: ((c.n_shared_experts + c.n_routed_experts) * 3 * c.hidden_size * c.intermediate_size
                + c.n_routed_experts * (c.hidden_size + 1), moe_right(c)[1]), ["intermediate_size", "dense FFN"]),
    (lambda c: (moe_right(c)[0], (c.n_shared_experts + c.topk_group) * 3 * c.hidden_size * c.moe_intermediate_size
                + c.n_routed_experts * (c.hidden_size + 1)), ["topk_group", "GROUPS"]),
    (lambda c: moe_right(c)[::-1], ["swapped"]),
    (lambda c: moe_right(c)[1], ["return a pair"]),
    (lambda c: ("a", "b"), ["must be a number"]),
    ("not a function", ["pass your function"]),
])
def test_0_1_wrong_answers_get_their_diagnosis(fn, words, capsys):
    r = check_moe_layer_params(fn)
    status(r, WRONG, *words)
    assert 'hint("0.1")' in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ 0.2 (prediction)
def first_step(main=4.46, mtp=4.43, aux=0.0003, lam=0.3):
    """A History holding only a first step with these terms (total = main + λ·mtp + aux)."""
    return History(step=[1], loss=[main + lam * mtp + aux], main_loss=[main], mtp_loss=[mtp], aux_loss=[aux])


def test_0_2_measured_first_step_is_near_one_plus_lambda_ln_v():
    """The checker's premise, measured: an untrained tiny model's first total loss is ≈ (1 + λ)·ln V."""
    from dsv3_lessons import tiny
    from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

    torch.manual_seed(0)
    model = DeepSeekV3(tiny(vocab_size=84)).train()
    x = torch.randint(0, 84, (8, 65), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x[:, :-1], x[:, 1:])
    assert model.mtp_loss_weight == 0.3
    assert abs(out.loss.item() - 1.3 * math.log(84)) < 0.2 and abs(out.main_loss.item() - math.log(84)) < 0.15
    hist = History(step=[1], loss=[out.loss.item()], main_loss=[out.main_loss.item()],
                   mtp_loss=[out.mtp_loss.item()], aux_loss=[out.aux_loss.item()])
    status(check_first_step_loss(1.3 * math.log(84), hist), RIGHT, "ln 84 = 4.43", "0.3 x")


def test_0_2_prediction():
    ln_v, hist = math.log(84), first_step()
    status(check_first_step_loss(___, hist), NOT_ATTEMPTED, "which number does the optimizer minimise")
    status(check_first_step_loss(1.3 * ln_v, hist), RIGHT, "ln 84 = 4.43", "1.3 x 4.43 = 5.76", "5.79")
    status(check_first_step_loss(torch.tensor(5.9), hist), RIGHT)          # within reach of the measurement
    status(check_first_step_loss(5.76, None), WRONG, "pass the training History")


@pytest.mark.parametrize("prediction, words", [
    (math.log(84), ["main model alone"]),                         # the intuitive answer
    (2 * math.log(84), ["weight 1"]),
    (1.1 * math.log(84), ["late in training"]),
    (math.log(84) + 0.3, ["not a loss of its own"]),
    (math.log2(84), ["bits"]),
    (3.3, ["unigram entropy", "KNOWS"]),
    (-4.43, ["never negative"]),                                  # learner review: the sign error got "certain"
    (1 / 84, ["looks like a probability"]),                       # learner review: the probability got "certain"
    (0.0, ["certain"]),
    (84, ["number of characters"]),
    (2.0, ["too low"]),
    (20.0, ["too high"]),
    ("five", ["must be a number"]),
])
def test_0_2_wrong_predictions_get_their_diagnosis(prediction, words):
    status(check_first_step_loss(prediction, first_step()), WRONG, *words)


# ------------------------------------------------------------------------------------------ 0.3 (bug hunt)
def _generate(*edits, source=BUGGY_GENERATE_SOURCE):
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    return defined(source, "greedy_generate")


_SEEN_FIX = ("        seen += 1\n", "        seen = ids.shape[1]\n")


def test_0_3_the_code_as_shown_is_wrong_with_a_symptom_only():
    res = check_greedy_generate(_generate())
    status(res, WRONG, "right for a 1-token prompt", "6-token prompt", "differ from the library's from new token 2 on")
    for cause in ("seen", "count", "calls", "re-fed", "already held"):       # the symptom, never the cause
        assert cause not in res.message, cause


def test_0_3_fixed_and_other_attempts():
    status(check_greedy_generate(_generate(_SEEN_FIX)), RIGHT, "one token per step into the same cache")
    # learner review (FALSE ✓): a fresh cache every step, re-fed the whole sequence, got ✓
    new_cache = "    cache = model.new_cache(1, model.cfg.max_position_embeddings)\n"
    fresh = _generate((new_cache, ""), ("    for _ in range(n_new):\n", "    for _ in range(n_new):\n    " + new_cache),
                      ("model(ids[:, seen:], cache=cache)", "model(ids, cache=cache)"))
    status(check_greedy_generate(fresh), WRONG, "right tokens", "caches for one", "keep one cache")
    status(check_greedy_generate(_generate(("model(ids[:, seen:], cache=cache)", "model(ids)"))), WRONG,
           "right tokens", "without the cache")
    status(check_greedy_generate(_generate(_SEEN_FIX, ("model(ids[:, seen:], cache=cache)", "model(ids[:, seen:])"))),
           WRONG, "one token but no cache")
    status(check_greedy_generate(_generate(_SEEN_FIX, ("return ids[0]", "return ids[0, 1:]"))), WRONG,
           "return 9 ids (prompt included), got 8")

    def stub(model, prompt, n_new):
        return ___
    status(check_greedy_generate(stub), NOT_ATTEMPTED, "follow `seen`")
    status(check_greedy_generate(lambda m, p, n: [1, 2]), WRONG, "as a tensor")
    status(check_greedy_generate("greedy_generate"), WRONG, "pass your function")


# ------------------------------------------------------------------------------------------ 0.4 (variation)
def entropy_right(ids):
    """H(next | previous) from the N - 1 pairs, with numpy (pairs as a 2-D unique over rows)."""
    a = ids.numpy()
    pairs, n_ab = np.unique(np.stack([a[:-1], a[1:]], 1), axis=0, return_counts=True)
    starts, n_a = np.unique(a[:-1], return_counts=True)
    per_a = dict(zip(starts.tolist(), n_a.tolist()))
    return float(-sum(c / n_ab.sum() * math.log(c / per_a[x]) for (x, _), c in zip(pairs.tolist(), n_ab)))


def test_0_4_hand_computed_cases():
    # [0, 0, 1, 0]: pairs (0,0), (0,1), (1,0); given 0 the next is 0 or 1 (1/2 each), given 1 it is 0
    assert math.isclose(conditional_entropy_reference([0, 0, 1, 0]), 2 / 3 * math.log(2), rel_tol=1e-12)
    assert conditional_entropy_reference([0, 1, 2] * 4) == 0 == conditional_entropy_reference([3, 7])
    for ids in ENTROPY_CASES.values():
        assert math.isclose(entropy_right(torch.tensor(ids)), conditional_entropy_reference(ids), abs_tol=1e-12)
    with pytest.raises(ValueError, match="at least two ids"):
        conditional_entropy_reference([4])


def test_0_4_placeholder_half_filled_and_right():
    status(check_conditional_entropy_function(lambda ids: ___), NOT_ATTEMPTED, "previous id")

    def half(ids):
        p = ___
        return -(p * p.log()).sum()
    status(check_conditional_entropy_function(half), NOT_ATTEMPTED)
    status(check_conditional_entropy_function(entropy_right), RIGHT, "right on all 5 sequences")
    held = torch.tensor([0, 1, 0, 2, 0, 1, 1, 0] * 20)
    status(check_conditional_entropy_function(lambda ids: torch.tensor(entropy_right(ids)), held), RIGHT, "(unigram)")


def _counts(ids):
    a = ids.tolist()
    return a, collections.Counter(zip(a[:-1], a[1:])), collections.Counter(a[:-1]), collections.Counter(a)


def _joint(ids):
    a, pairs, _, _ = _counts(ids)
    n = len(a) - 1
    return -sum(c / n * math.log(c / n) for c in pairs.values())


def _all_n_denominator(ids):
    a, pairs, _, every = _counts(ids)
    return -sum(c / (len(a) - 1) * math.log(c / every[x]) for (x, _), c in pairs.items())


def _unweighted(ids):
    a, pairs, first, _ = _counts(ids)
    per = [-sum(c / first[x] * math.log(c / first[x]) for (y, _), c in pairs.items() if y == x) for x in first]
    return sum(per) / len(per)


def _table(ids):                          # a full V x V table: 0 * ln 0 = NaN
    v = int(ids.max()) + 1
    t = torch.zeros(v, v).index_put_((ids[:-1], ids[1:]), torch.tensor(1.0), accumulate=True)
    p_ab, p_b_a = t / t.sum(), t / t.sum(1, keepdim=True)
    return float(-(p_ab * p_b_a.log()).sum())


def _unigram(ids):
    _, c = torch.unique(ids, return_counts=True)
    p = c / ids.numel()
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("fn, words", [
    (_joint, ["entropy of the PAIRS"]),
    (_all_n_denominator, ["STARTS a pair"]),
    (_unweighted, ["equal weights"]),
    (_unigram, ["unigram entropy", "ignores the previous id"]),
    (_table, ["0·ln 0", "NaN"]),
    (lambda ids: entropy_right(ids) / math.log(2), ["bits"]),
    (lambda ids: -entropy_right(ids), ["sign"]),
    (lambda ids: 1.0, ["average, over the N − 1 adjacent pairs"]),
    ("not a function", ["pass your function"]),
])
def test_0_4_wrong_answers_get_their_diagnosis(fn, words, capsys):
    status(check_conditional_entropy_function(fn), WRONG, *words)
    assert 'hint("0.4")' in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ 1.1 (variation)
def right_1_1(config, context, b):
    layers = config["num_hidden_layers"]
    if "kv_lora_rank" in config:
        per = config["kv_lora_rank"] + config["qk_rope_head_dim"]
    else:
        n_kv = config.get("num_key_value_heads", config["num_attention_heads"])
        per = 2 * n_kv * config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    window = config.get("sliding_window")
    kinds = config.get("layer_types", ["sliding_attention" if window else "full_attention"] * layers)
    return sum(per * (min(context, window) if k == "sliding_attention" else context) * b for k in kinds)


def test_1_1_oracle_values():
    # closed form from the published config.json files, written out by hand
    assert right_1_1(EXERCISE_CONFIGS["Mistral-7B-v0.1"], 8192, 2) == 2 * 8 * 128 * 32 * 4096 * 2
    assert right_1_1(EXERCISE_CONFIGS["Mistral-7B-v0.1"], 1000, 2) == 2 * 8 * 128 * 32 * 1000 * 2
    assert right_1_1(EXERCISE_CONFIGS["Gemma-2-9B"], 8192, 2) == 2 * 8 * 256 * (21 * 4096 + 21 * 8192) * 2
    assert right_1_1(EXERCISE_CONFIGS["LLaMA-1-7B"], 1000, 1) == 2 * 32 * 128 * 32 * 1000
    assert right_1_1(EXERCISE_CONFIGS["DeepSeek-V2-Lite"], 1000, 2) == (512 + 64) * 27 * 1000 * 2


def test_1_1_placeholder_half_filled_and_right():
    def stub(config, context, b):
        return ___
    status(check_kv_cache_bytes_function(stub), NOT_ATTEMPTED, "how many tokens does that layer keep")

    def half(config, context, b):           # the review's case: a half-filled body is "not attempted", no TypeError
        per_layer = ___
        return per_layer * config["num_hidden_layers"] * b
    status(check_kv_cache_bytes_function(half), NOT_ATTEMPTED)

    def raises(config, context, b):
        raise NotImplementedError
    status(check_kv_cache_bytes_function(raises), NOT_ATTEMPTED)
    # the ✓ no longer prints Mistral's capped cache (0.54 GB): that number is half of exercise 1.4's answer
    right = check_kv_cache_bytes_function(right_1_1)
    status(right, RIGHT, "2.11 GB at 8K", "11.98 GB at 64K")
    assert "Mistral" not in right.message and "0.54" not in right.message
    status(check_kv_cache_bytes_function(lambda c, t, b: np.int64(right_1_1(c, t, b))), RIGHT)


def _drop(field):
    return lambda c, t, b: right_1_1({k: v for k, v in c.items() if k != field}, t, b)


def _window_not_min(c, t, b):
    """A sliding layer counted as `sliding_window` tokens even when the sequence is shorter."""
    if not c.get("sliding_window"):
        return right_1_1(c, t, b)
    return right_1_1({k: v for k, v in c.items() if k != "sliding_window"}, c["sliding_window"], b) \
        if "layer_types" not in c else right_1_1(c, t, b)


def _no_default_head_dim(c, t, b):
    if "kv_lora_rank" in c:
        return right_1_1(c, t, b)
    return 2 * c["num_key_value_heads"] * c["head_dim"] * c["num_hidden_layers"] * t * b


@pytest.mark.parametrize("fn, words", [
    (lambda c, t, b: right_1_1(c, t, b) // b, ["multiply by bytes_per_element"]),     # the review's case
    (lambda c, t, b: right_1_1(c, t, 1), ["multiply by bytes_per_element"]),          # b ignored, not divided
    (_drop("sliding_window"), ["sliding-window layer keeps only the last sliding_window = 4,096"]),
    (_drop("layer_types"), ["applied the window to every layer", "21 of 42"]),
    (_window_not_min, ["cannot keep more tokens"]),
    (lambda c, t, b: right_1_1(c, t, b) // 2 if "kv_lora_rank" not in c else right_1_1(c, t, b), ["keys AND values"]),
    (lambda c, t, b: right_1_1(c, t, b) // c["num_hidden_layers"], ["one layer"]),
    (lambda c, t, b: right_1_1(c, t, b) * c["num_attention_heads"] // c.get("num_key_value_heads",
                                                                            c["num_attention_heads"])
     if "kv_lora_rank" not in c else right_1_1(c, t, b), ["num_key_value_heads (8)"]),
    (_no_default_head_dim, ["no field 'head_dim'", "it is hidden_size // num_attention_heads"]),
    # learner review: the missing-num_key_value_heads message lacked a verb
    (lambda c, t, b: right_1_1(dict(c, num_key_value_heads=c["num_key_value_heads"]), t, b),
     ["no field 'num_key_value_heads'", "when it is missing, it equals num_attention_heads (MHA)"]),
    (lambda c, t, b: right_1_1({k: v for k, v in c.items() if k != "head_dim"}, t, b), ["head_dim (256) explicitly"]),
    (lambda c, t, b: 2 * right_1_1(c, t, b) if "kv_lora_rank" in c else right_1_1(c, t, b), ["ONE latent"]),
    (lambda c, t, b: c["kv_lora_rank"] * c["num_hidden_layers"] * t * b if "kv_lora_rank" in c
     else right_1_1(c, t, b), ["k^R"]),
    (lambda c, t, b: "lots", ["must be a number"]),
    (42, ["pass your function"]),
])
def test_1_1_wrong_functions_get_their_diagnosis(fn, words, capsys):
    status(check_kv_cache_bytes_function(fn), WRONG, *words)
    assert 'hint("1.1")' in capsys.readouterr().out


def test_1_1_hint_ladder_steps_and_never_states_the_formula(capsys):
    shown = [hint("1.1") for _ in range(4)]
    assert shown[0].startswith("Hint 1/3") and shown[2].startswith("Hint 3/3") and "last hint" in shown[3]
    assert "notebooks/solutions/01_kv_cache_solutions.ipynb" in shown[3]      # the file's own name, no pattern
    for text in shown + [check_kv_cache_bytes_function.hint]:
        assert "2 * n_kv" not in text and "min(" not in text


# ------------------------------------------------------------------------------------------ 1.2 (bug hunt)
def _attention(source=BUGGY_ATTENTION_SOURCE, edits=()):
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    return defined(source, "last_token_attention")


_FIX = ("kv.repeat(1, n_rep, 1)", "kv.repeat_interleave(n_rep, dim=1)")


def test_1_2_oracle_is_torch_grouped_query_attention():
    """The checker's reference equals torch's own GQA (scaled_dot_product_attention, enable_gqa=True) on every
    shape it tries."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    for n_h, n_kv, t in GQA_SHAPES:
        q, k, v = torch.randn(n_h, 16, generator=gen), torch.randn(t, n_kv, 16, generator=gen), \
            torch.randn(t, n_kv, 16, generator=gen)
        ref = F.scaled_dot_product_attention(q[:, None], k.transpose(0, 1), v.transpose(0, 1), enable_gqa=True)
        assert torch.allclose(_gqa_reference(q, k, v), ref[:, 0], atol=1e-5)


def test_1_2_the_code_as_shown_passes_its_authors_test_and_is_wrong_with_a_symptom_only():
    from dsv3_lessons.course.ch01_kv_cache import GroupedQueryAttention

    fn = _attention()
    x = torch.randn(1, 12, 128)
    for kv_heads, right in ((8, True), (1, True), (2, False)):      # MHA and MQA pass, GQA does not
        torch.manual_seed(1)
        lay = GroupedQueryAttention(128, 8, kv_heads).eval()
        q, k, v = lay.qkv(x, torch.arange(12))
        mine = lay.o_proj(fn(q[0, -1], k[0], v[0]).reshape(1, -1))
        assert torch.allclose(mine, lay(x)[:, -1], atol=1e-5) == right, kv_heads
    res = check_last_token_attention(fn)
    status(res, WRONG, "right for MHA (n_h = 8, n_kv = 8) and MQA", "GQA (n_h = 8, n_kv = 2)",
           "query heads 1, 3, 4, 6 differ")
    for cause in ("repeat", "interleave", "tile", "i % n_kv", "block"):      # the symptom, never the cause
        assert cause not in res.message, cause


def test_1_2_fixed_and_typical_attempts():
    right = ["right for all 6 head counts", "MHA, MQA and GQA"]
    status(check_last_token_attention(_attention(edits=[_FIX])), RIGHT, *right)
    status(check_last_token_attention(_attention(edits=[("kv.repeat(1, n_rep, 1)",
                                                         "kv[:, torch.arange(kv.shape[1] * n_rep) // n_rep]")])),
           RIGHT, *right)
    # a reshape after expand that puts the copies on the wrong side still tiles: same symptom as the original
    tiled = ("kv[:, None].expand(-1, n_rep, -1, -1).reshape(kv.shape[0], -1, kv.shape[2])")
    status(check_last_token_attention(_attention(edits=[("kv.repeat(1, n_rep, 1)", tiled)])), WRONG,
           "query heads 1, 3, 4, 6 differ")
    status(check_last_token_attention(_attention(edits=[_FIX, ("softmax(dim=0)", "softmax(dim=1)")])), WRONG,
           "over the HEADS", "T = 5 tokens")
    status(check_last_token_attention(_attention(edits=[_FIX, (" / q.shape[-1] ** 0.5", "")])), WRONG,
           "1/sqrt(d_h)")
    status(check_last_token_attention(_attention(edits=[_FIX, (")[:, :, None] * v).sum(0)", ")[:, :, None] * v)")])),
           WRONG, "return a tensor [n_h, d_h] = [8, 16]", "(5, 8, 16)")
    status(check_last_token_attention(lambda q, k, v: v.mean(0).repeat_interleave(q.shape[0] // k.shape[1], 0)),
           WRONG, "differ from grouped-query attention")
    status(check_last_token_attention(lambda q, k, v: ___), NOT_ATTEMPTED, "which key/value head")
    status(check_last_token_attention(42), WRONG, "pass your function")


# ------------------------------------------------------------------------------------------ 1.3 (prediction)
def test_1_3_prediction():
    budget = 80e9 / (8 * 131072)                       # bytes per token, all layers
    by_hand = [n for n in ("DeepSeek-V3", "DeepSeek-V2", "Falcon-7B", "LLaMA-2-7B", "LLaMA-3.1-405B")
               if {"DeepSeek-V3": 61 * 576 * 2, "DeepSeek-V2": 60 * 576 * 2, "Falcon-7B": 32 * 2 * 64 * 2,
                   "LLaMA-2-7B": 32 * 2 * 32 * 128 * 2, "LLaMA-3.1-405B": 126 * 2 * 8 * 128 * 2}[n] <= budget]
    assert sorted(models_that_fit()) == sorted(by_hand) == ["DeepSeek-V2", "DeepSeek-V3", "Falcon-7B"]
    status(check_fit_prediction(___), NOT_ATTEMPTED, "a guess is fine")
    status(check_fit_prediction(3), RIGHT, "DeepSeek-V3, DeepSeek-V2, Falcon-7B", "76.3 KB")
    status(check_fit_prediction(np.int64(3)), RIGHT)
    status(check_fit_prediction(7), WRONG, "8 times the cache")
    status(check_fit_prediction(0), WRONG, "some designs cache less")
    status(check_fit_prediction(5), WRONG, "the run says 3", "76.3 KB per token",
           f"LLaMA-3.1-70B and Qwen2.5-72B, cache {80 * 2 * 8 * 128 * 2 / 1e3:.1f} KB per token")
    status(check_fit_prediction(0), WRONG, "you predicted 0, the run says 3")
    status(check_fit_prediction(2), WRONG, "the run says 3", f"DeepSeek-V3 ({61 * 576 * 2 / 1e3:.1f} KB)",
           f"Falcon-7B ({32 * 2 * 64 * 2 / 1e3:.1f} KB)", "Which of them did you leave out")
    status(check_fit_prediction(2.5), WRONG, "not a count")


# ------------------------------------------------------------------------------------------ 1.4 (number)
def test_1_4_oracle_by_brute_force():
    mistral = lambda t: 2 * 8 * 128 * 32 * 2 * min(t, 4096)           # BF16, every layer slides (window 4,096)
    v3 = lambda t: 61 * (512 + 64) * 2 * t
    first = next(t for t in range(1, 20_000) if v3(t) > mistral(t))
    assert all(v3(t) > mistral(t) for t in range(first, 40_000))        # and V3 stays the larger one
    assert window_crossover() == first == 7640


@pytest.mark.parametrize("answer, words", [
    (4096, ["where Mistral's window starts to cap", "V3 still holds less"]),
    (4097, ["where Mistral's window starts"]),
    (1.87, ["ratio of the two caches"]),
    (7639.9, ["not a whole number"]),
    (7639, ["V3 is not yet the larger one"]),
    (7641, ["give the FIRST context length"]),
    (0, ["does overtake"]),
    (3820, ["half of Mistral's capped cache", "keys AND values", "counted twice", "one latent for both"]),
    (536870912, ["536,870,912 looks like the size of Mistral's capped cache"]),
    (0.537, ["0.537 looks like the size of Mistral's capped cache (in bytes or GB)"]),
    (-7640, ["not a context length"]),
    (30560, ["32 query heads share 8 key/value heads"]),
    (15280, ["BF16 (2 B per element)"]),
    (8595, ["rotated key k^R"]),
    (7517, ["61 layers"]),
    (None, ["must be a number"]),
])
def test_1_4_wrong_answers_get_their_diagnosis(answer, words):
    status(check_window_crossover(answer), WRONG, *words)


def test_1_4_placeholder_and_right():
    status(check_window_crossover(___), NOT_ATTEMPTED, "sketch both caches")
    status(check_window_crossover(7640), RIGHT, "7,640 tokens", "0.537 GB")
    status(check_window_crossover(np.float64(7640)), RIGHT)


@pytest.mark.parametrize("check", [check_moe_layer_params, check_first_step_loss, check_greedy_generate,
                                   check_conditional_entropy_function, check_kv_cache_bytes_function,
                                   check_last_token_attention, check_fit_prediction, check_window_crossover])
def test_nudges_never_state_a_formula(check):
    text = check.hint + " ".join(check.more)
    for formula in ("3 * v3", "-(p * p.log())", "2 * n_kv *", "min(context", "[:length]", "ln 84", "4.43",
                    "model(nxt", "1984", "76.3", "5.76", "ids.shape[1]", "n(a, b)", "repeat_interleave", "7640", "7,640", "i % n_kv"):
        assert formula not in text, (check.exercise, formula)


# ------------------------------------------------------------------------------------------ stored notebooks
def cells_of(name):
    return json.loads((NOTEBOOKS / name).read_text())["cells"]


def code_cells(name):
    return [c for c in cells_of(name) if c["cell_type"] == "code"]


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]))
        elif "data" in o:
            out.append("".join(o["data"].get("text/plain", "")))
    return "".join(out)


@pytest.mark.parametrize("chapter, solutions, placeholders, bug_hunt", [
    ("00_tour.ipynb", "solutions/00_tour_solutions.ipynb", 3, BUGGY_GENERATE_SOURCE),
    ("01_kv_cache.ipynb", "solutions/01_kv_cache_solutions.ipynb", 3, BUGGY_ATTENTION_SOURCE),
])
def test_exercises_stored_unattempted_and_solved(chapter, solutions, placeholders, bug_hunt):
    checks = [c for c in code_cells(chapter) if "check_" in "".join(c["source"])
              and "import" not in "".join(c["source"]).splitlines()[-1]]
    assert len(checks) == 4                                   # four exercises per chapter
    unattempted = [c for c in checks if "not attempted yet" in text_of(c)]
    assert len(unattempted) == placeholders
    # the code as shown (in the checker's cell, or in the cell right before it) is stored ✗
    cells = code_cells(chapter)
    shown = [i for i, c in enumerate(cells) if bug_hunt.strip() in "".join(c["source"])]
    assert len(shown) == 1
    hunt = [c for c in cells[shown[0]:shown[0] + 2] if c in checks]
    assert len(hunt) == 1 and "✗ Exercise" in text_of(hunt[0])
    solved = [text_of(c) for c in code_cells(solutions) if re.search(r"^check_\w+\(", "".join(c["source"]), re.M)]
    # the checker's line is the last one not indented (its text wraps onto indented lines)
    last = [[line for line in t.splitlines() if line.strip() and not line.startswith(" ")][-1] for t in solved]
    assert len(solved) == 4 and all(line.startswith("✓ Exercise") for line in last), solved
    assert not any("___" in "".join(c["source"]) for c in code_cells(solutions))
    # every solution explains itself: a paragraph with "Why." before its code
    prose = [("".join(c["source"])) for c in cells_of(solutions) if c["cell_type"] == "markdown"]
    assert sum("**Why.**" in p for p in prose) == 4 and sum("**Answer.**" in p for p in prose) == 4


@pytest.mark.parametrize("name", ["00_tour.ipynb", "01_kv_cache.ipynb", "solutions/00_tour_solutions.ipynb",
                                  "solutions/01_kv_cache_solutions.ipynb"])
def test_output_hygiene(name):
    cells = code_cells(name)
    assert "%matplotlib inline" in "".join(cells[0]["source"])
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    for c in cells:
        src = "".join(c["source"])
        assert "NBVAL" not in src, src                      # markers live in cell tags
        assert text_of(c).strip() not in ("True", "False"), src
        assert "KVCacheWidget(children" not in text_of(c)
        assert len(src.splitlines()) <= 15, src            # short cells
    nb = json.loads((NOTEBOOKS / name).read_text())
    prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    for word in ("nbval", "pytest", "output comparison", "not compared"):
        assert word not in prose, word


def test_predictions_come_before_their_experiments():
    """A prediction cell holds ___ and sits before the cell that runs the experiment; its checker after it."""
    for name, predicted, experiment, check in (
            ("00_tour.ipynb", "prediction_0_2 = ___", "hist = train(", "check_first_step_loss("),
            ("01_kv_cache.ipynb", "prediction_1_3 = ___", "batch=8", "check_fit_prediction(")):
        src = ["".join(c["source"]) for c in code_cells(name)]
        i = next(k for k, s in enumerate(src) if predicted in s)
        j = next(k for k, s in enumerate(src) if experiment in s)
        k = next(k for k, s in enumerate(src) if check in s)
        assert i < j <= k, name


def test_stored_chapters_do_not_give_the_predictions_away():
    """Learner review: 0.2's answer was given by an assert on the first loss in the training cell; 1.3's by the
    stored batch-8 figure. Now the training cell asserts nothing about the first loss, and 1.3's figure and list
    stay hidden until a prediction is written (revealed)."""
    src = ["".join(c["source"]) for c in code_cells("00_tour.ipynb")]
    training = next(s for s in src if "hist = train(" in s)
    assert "log(" not in training and "vocab_size" not in training
    cells = code_cells("01_kv_cache.ipynb")
    reveal = next(c for c in cells if 'revealed("1.3", prediction_1_3)' in "".join(c["source"]))
    shown = text_of(reveal)
    assert "Hidden until you predict" in shown and "exceeds" not in shown and "fits in" not in shown
    assert not any(o.get("data", {}).get("image/png") for o in reveal["outputs"])
