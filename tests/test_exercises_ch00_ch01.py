"""Exercise checkers of chapters 00 and 01: placeholder (and half-filled bodies), the right answer, typical wrong
answers with the diagnosis each gets, the bug hunts' unfixed code (the text the notebooks show) as ✗, and that no
input makes a checker raise.

Oracles: closed-form arithmetic from the released configs (V3: one expert 3·7168·2048 = 44,040,192; gate
256·7168 + 256), ``count_parameters`` for the MoE variants, the published config.json fields of the exercise
models, H = −Σ p ln p by hand, ``torch.nn.functional.scaled_dot_product_attention`` and the library's ``generate``
for the bug hunts. The stored notebooks are checked too: exercises unattempted in the chapters (bug hunts ✗),
✓ in the solutions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG, hint
from dsv3_lessons.course.ch00_tour.exercises import (BUGGY_GENERATE_SOURCE, ___, check_greedy_generate,
                                                     check_moe_layer_params, check_step0_prediction,
                                                     check_unigram_entropy_function, moe_cases)
from dsv3_lessons.course.ch01_kv_cache.exercises import (BUGGY_DECODE_SOURCE, EXERCISE_CONFIGS, check_decode_step,
                                                         check_fit_prediction, check_kv_cache_bytes_function,
                                                         check_mla_rank_for_gqa_heads, models_that_fit)

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
def test_0_2_prediction():
    ln_v = math.log(84)
    status(check_step0_prediction(___, 4.46), NOT_ATTEMPTED, "probability")
    status(check_step0_prediction(ln_v, 4.4616), RIGHT, "ln 84 = 4.43", "measured 4.46")
    status(check_step0_prediction(torch.tensor(4.5), 4.4616), RIGHT)      # within reach of the measurement
    status(check_step0_prediction(3.3, 4.4616), WRONG, "unigram entropy", "KNOWS")
    status(check_step0_prediction(math.log2(84), 4.4616), WRONG, "bits")
    status(check_step0_prediction(math.log(129_280), 4.4616), WRONG, "129,280")
    status(check_step0_prediction(0.0, 4.4616), WRONG, "certain")
    status(check_step0_prediction(84, 4.4616), WRONG, "-ln of the probability")
    status(check_step0_prediction(2.0, 4.4616), WRONG, "too low")
    status(check_step0_prediction("4.43", 4.4616), WRONG, "must be a number")


def test_0_2_measured_step0_loss_is_near_ln_v():
    """The checker's premise, measured: an untrained tiny model scores ≈ ln V on random held-out-like ids."""
    from dsv3_lessons import tiny
    from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

    torch.manual_seed(0)
    model = DeepSeekV3(tiny(vocab_size=84)).eval()
    x = torch.randint(0, 84, (8, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = model(x[:, :-1], x[:, 1:], compute_mtp=False).main_loss.item()
    assert abs(loss - math.log(84)) < 0.15


# ------------------------------------------------------------------------------------------ 0.3 (bug hunt)
def test_0_3_the_code_as_shown_is_wrong_and_the_diagnosis_counts_the_cache():
    r = check_greedy_generate(defined(BUGGY_GENERATE_SOURCE, "greedy_generate"))
    status(r, WRONG, "fed 7 tokens to a cache that already held 6", "51 tokens for a sequence of 11")


def test_0_3_fixed_and_other_attempts():
    step = "logits = model(ids, cache=cache).logits[:, -1]         # one decoding step"
    fixed = BUGGY_GENERATE_SOURCE.replace(step, step.replace("model(ids", "model(nxt"))
    assert fixed.count("model(nxt, cache=cache)") == 1
    status(check_greedy_generate(defined(fixed, "greedy_generate")), RIGHT, "one token per step")
    no_cache = BUGGY_GENERATE_SOURCE.replace("logits = model(ids, cache=cache).logits[:, -1]         # one",
                                             "logits = model(ids).logits[:, -1]         # one")
    status(check_greedy_generate(defined(no_cache, "greedy_generate")), WRONG, "right tokens", "without the cache")
    one_no_cache = BUGGY_GENERATE_SOURCE.replace("logits = model(ids, cache=cache).logits[:, -1]         # one",
                                                 "logits = model(nxt).logits[:, -1]         # one")
    status(check_greedy_generate(defined(one_no_cache, "greedy_generate")), WRONG, "one token but no cache")
    short = fixed.replace("return ids[0]", "return ids[0, :-1]")
    status(check_greedy_generate(defined(short, "greedy_generate")), WRONG, "return 11 ids")

    def stub(model, prompt, n_new):
        return ___
    status(check_greedy_generate(stub), NOT_ATTEMPTED, "cache already holds")
    status(check_greedy_generate(lambda m, p, n: [1, 2]), WRONG, "as a tensor")


# ------------------------------------------------------------------------------------------ 0.4
def entropy_right(ids):
    _, counts = torch.unique(ids, return_counts=True)
    p = counts / ids.numel()
    return -(p * p.log()).sum()          # a 0-d tensor: accepted


def test_0_4_placeholder_half_filled_and_right():
    status(check_unigram_entropy_function(lambda ids: ___), NOT_ATTEMPTED, "surprise")

    def half(ids):                         # the review's case: a method called on ___ -> not attempted, no crash
        p = ___
        return -(p * p.log()).sum()
    status(check_unigram_entropy_function(half), NOT_ATTEMPTED)
    status(check_unigram_entropy_function(entropy_right), RIGHT, "nats")
    status(check_unigram_entropy_function(lambda ids: float(entropy_right(ids))), RIGHT)


def test_0_4_hand_computed_case():
    # [0]*6 + [1]*3 + [2]: p = .6, .3, .1 -> H = 0.8979 nats, computed here by hand
    h = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    assert math.isclose(float(entropy_right(torch.tensor([0] * 6 + [1] * 3 + [2]))), h, rel_tol=1e-6)


def _bincount_entropy(ids):
    c = torch.bincount(ids)
    p = c / c.sum()
    return -(p * p.log()).sum()


@pytest.mark.parametrize("fn, hint_words", [
    (_bincount_entropy, ["0·ln 0", "NaN", "bincount"]),
    (lambda ids: entropy_right(ids) / math.log(2), ["bits"]),
    (lambda ids: -entropy_right(ids), ["sign"]),
    (lambda ids: math.log(len(set(ids.tolist()))), ["UNIFORM"]),
    (lambda ids: float(-sum(c * math.log(c) for c in torch.unique(ids, return_counts=True)[1].tolist())),
     ["divide the counts"]),
    (lambda ids: 1.0, ["share p_c"]),
    (lambda ids: 1 / 0, ["ZeroDivisionError"]),
    ("not a function", ["pass your function"]),
])
def test_0_4_wrong_answers_get_their_diagnosis(fn, hint_words):
    status(check_unigram_entropy_function(fn), WRONG, *hint_words)


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
    status(check_kv_cache_bytes_function(right_1_1), RIGHT, "0.54 GB at 32K", "2.11 GB at 8K")
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
    (_no_default_head_dim, ["no field 'head_dim'"]),
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
    for text in shown + [check_kv_cache_bytes_function.hint]:
        assert "2 * n_kv" not in text and "min(" not in text


# ------------------------------------------------------------------------------------------ 1.2 (bug hunt)
def test_1_2_the_code_as_shown_is_wrong_with_a_named_fault():
    status(check_decode_step(defined(BUGGY_DECODE_SOURCE, "decode_step")), WRONG,
           "attention over all 10 rows", "unused ones (zeros)")


def _edit(old, new):
    src = BUGGY_DECODE_SOURCE
    for o, n in zip(old, new):
        assert o in src, o
        src = src.replace(o, n)
    return defined(src, "decode_step")


def test_1_2_fixed_and_typical_attempts():
    k_all, v_all = 'q, cache_k)', 'probs, cache_v)'
    status(check_decode_step(_edit([k_all, v_all], ['q, cache_k[:length])', 'probs, cache_v[:length])'])),
           RIGHT, "zeros and with NaN")
    masked = _edit(["    probs = scores.softmax(dim=-1)"],
                   ["    scores[:, length:] = float('-inf')\n    probs = scores.softmax(dim=-1)"])
    status(check_decode_step(masked), WRONG, "0·NaN = NaN", "with zeros there it was right")
    status(check_decode_step(_edit([k_all, v_all], ['q, cache_k[:length - 1])', 'probs, cache_v[:length - 1])'])),
           WRONG, "does not attend to itself")
    status(check_decode_step(_edit([k_all, v_all, " / q.shape[-1] ** 0.5"],
                                   ['q, cache_k[:length])', 'probs, cache_v[:length])', ""])), WRONG, "1/sqrt(d_h)")
    status(check_decode_step(_edit(["    length += 1\n", k_all, v_all, "), length\n"],
                                   ["", 'q, cache_k[:length + 1])', 'probs, cache_v[:length + 1])',
                                    "), length\n"])), WRONG, "returned length")

    def stub(q, k_new, v_new, cache_k, cache_v, length):
        return ___, length + 1
    status(check_decode_step(stub), NOT_ATTEMPTED, "which rows")
    status(check_decode_step(lambda *a: "out"), WRONG, "return a pair")


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
    status(check_fit_prediction(5), WRONG, "the run says 3", "76.3 KB per token")
    status(check_fit_prediction(2.5), WRONG, "not a count")


# ------------------------------------------------------------------------------------------ 1.4 (number)
def test_1_4():
    right = 2 * 8 * 128 - 64
    status(check_mla_rank_for_gqa_heads(___), NOT_ATTEMPTED, "ONE layer caches")
    status(check_mla_rank_for_gqa_heads(np.float64(right)), RIGHT, "1984")
    status(check_mla_rank_for_gqa_heads(2048), WRONG, "rope key")
    status(check_mla_rank_for_gqa_heads(960), WRONG, "keys AND values")
    status(check_mla_rank_for_gqa_heads(2112), WRONG, "subtract")
    status(check_mla_rank_for_gqa_heads(448), WRONG, "GQA with 2 key/value heads")
    status(check_mla_rank_for_gqa_heads(None), WRONG, "must be a number")


@pytest.mark.parametrize("check", [check_moe_layer_params, check_step0_prediction, check_greedy_generate,
                                   check_unigram_entropy_function, check_kv_cache_bytes_function, check_decode_step,
                                   check_fit_prediction, check_mla_rank_for_gqa_heads])
def test_nudges_never_state_a_formula(check):
    text = check.hint + " ".join(check.more)
    for formula in ("3 * v3", "-(p * p.log())", "2 * n_kv *", "min(context", "[:length]", "ln 84", "4.43",
                    "model(nxt", "1984", "76.3"):
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
    ("01_kv_cache.ipynb", "solutions/01_kv_cache_solutions.ipynb", 3, BUGGY_DECODE_SOURCE),
])
def test_exercises_stored_unattempted_and_solved(chapter, solutions, placeholders, bug_hunt):
    checks = [c for c in code_cells(chapter) if "check_" in "".join(c["source"])
              and "import" not in "".join(c["source"]).splitlines()[-1]]
    assert len(checks) == 4                                   # four exercises per chapter
    unattempted = [c for c in checks if "not attempted yet" in text_of(c)]
    assert len(unattempted) == placeholders
    hunt = [c for c in checks if bug_hunt in "".join(c["source"])]
    assert len(hunt) == 1 and text_of(hunt[0]).startswith("✗ Exercise")   # the code as shown, stored ✗
    solved = [text_of(c) for c in code_cells(solutions) if "check_" in "".join(c["source"])]
    assert len(solved) == 4 and all(t.strip().splitlines()[-1].startswith("✓ Exercise") for t in solved), solved
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
            ("00_tour.ipynb", "prediction_0_2 = ___", "hist = train(", "check_step0_prediction("),
            ("01_kv_cache.ipynb", "prediction_1_3 = ___", "batch=8", "check_fit_prediction(")):
        src = ["".join(c["source"]) for c in code_cells(name)]
        i = next(k for k, s in enumerate(src) if predicted in s)
        j = next(k for k, s in enumerate(src) if experiment in s)
        k = next(k for k, s in enumerate(src) if check in s)
        assert i < j <= k, name
