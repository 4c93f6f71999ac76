"""Exercise checkers of chapters 00 and 01: placeholder, typical wrong answers (with the hint each gets), the
right answer in Python / numpy / 0-d torch form, and that no input makes a checker raise.

Oracles: closed-form arithmetic from the released configs (V3: one expert 3·7168·2048 = 44,040,192; gate
256·7168 + 256), the published config.json fields of the exercise models, H = −Σ p ln p by hand. The stored
notebooks are checked too: exercises unattempted in the chapter, ✓ in the solutions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch00_tour.exercises import ___, check_moe_activated_params, check_unigram_entropy_function
from dsv3_lessons.course.ch01_kv_cache.exercises import (EXERCISE_CONFIGS, check_kv_cache_bytes_function,
                                                         check_max_batch_80gb, check_mla_rank_for_gqa_heads)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPERT = 3 * 7168 * 2048            # one V3 SwiGLU expert (released config.json)
GATE = 256 * 7168 + 256             # centroids + biases
MOE_RIGHT = 9 * EXPERT + GATE       # 1 shared + 8 routed


def status(result, expected_status, *words):
    assert result.status == expected_status, result
    for w in words:
        assert w in result.message, (w, result.message)


# ------------------------------------------------------------------------------------------ 0.1
def test_0_1_placeholder(capsys):
    r = check_moe_activated_params(___)
    status(r, NOT_ATTEMPTED, "SwiGLU", "three")
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("right", [MOE_RIGHT, np.int64(MOE_RIGHT), torch.tensor(MOE_RIGHT), float(MOE_RIGHT)])
def test_0_1_right_in_any_number_type(right, capsys):
    status(check_moe_activated_params(right), RIGHT, "398,196,992")
    assert capsys.readouterr().out.startswith("✓ Exercise 0.1")


@pytest.mark.parametrize("wrong, hint", [
    (257 * EXPERT + GATE, "all 257 experts"),
    (8 * EXPERT + GATE, "add the shared expert"),
    (9 * EXPERT, "add the gate"),
    (9 * EXPERT + 256 * 7168, "biases"),
    (9 * 2 * 7168 * 2048 + GATE, "THREE matrices"),
    (12345, "SwiGLU with 3 matrices"),
    ("398M", "must be a number"),
    (True, "must be a number"),
])
def test_0_1_wrong_answers_get_their_hint(wrong, hint, capsys):
    status(check_moe_activated_params(wrong), WRONG, hint)
    assert capsys.readouterr().out.startswith("✗ Exercise 0.1")


# ------------------------------------------------------------------------------------------ 0.2
def entropy_right(ids):
    _, counts = torch.unique(ids, return_counts=True)
    p = counts / ids.numel()
    return -(p * p.log()).sum()          # a 0-d tensor: accepted


def test_0_2_placeholder_and_right():
    status(check_unigram_entropy_function(lambda ids: ___), NOT_ATTEMPTED, "return_counts")
    status(check_unigram_entropy_function(entropy_right), RIGHT, "nats")
    status(check_unigram_entropy_function(lambda ids: float(entropy_right(ids))), RIGHT)


def test_0_2_hand_computed_case():
    # [0]*6 + [1]*3 + [2]: p = .6, .3, .1 -> H = 0.8979 nats, computed here by hand
    h = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    assert math.isclose(float(entropy_right(torch.tensor([0] * 6 + [1] * 3 + [2]))), h, rel_tol=1e-6)


@pytest.mark.parametrize("fn, hint", [
    (lambda ids: entropy_right(ids) / math.log(2), "bits"),
    (lambda ids: -entropy_right(ids), "sign"),
    (lambda ids: math.log(len(set(ids.tolist()))), "UNIFORM"),
    (lambda ids: float(-sum(c * math.log(c) for c in torch.unique(ids, return_counts=True)[1].tolist())), "divide the counts"),
    (lambda ids: 1.0, "H = -Σ_c p_c ln p_c"),
    (lambda ids: ids.float().mean() / 0, "must be a finite number"),
    (lambda ids: 1 / 0, "ZeroDivisionError"),
    ("not a function", "pass your function"),
])
def test_0_2_wrong_answers_get_their_hint(fn, hint):
    status(check_unigram_entropy_function(fn), WRONG, hint)


# ------------------------------------------------------------------------------------------ 1.1
def right_1_1(config, b):
    layers = config["num_hidden_layers"]
    if "kv_lora_rank" in config:
        return (config["kv_lora_rank"] + config["qk_rope_head_dim"]) * layers * b
    n_kv = config.get("num_key_value_heads", config["num_attention_heads"])
    d_h = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    return 2 * n_kv * d_h * layers * b


def test_1_1_oracle_values():
    # closed form from the published config.json files, written out by hand
    assert right_1_1(EXERCISE_CONFIGS["Mistral-7B"], 2) == 2 * 8 * 128 * 32 * 2 == 131_072
    assert right_1_1(EXERCISE_CONFIGS["Gemma-2-9B"], 2) == 2 * 8 * 256 * 42 * 2 == 344_064
    assert right_1_1(EXERCISE_CONFIGS["LLaMA-1-7B"], 1) == 2 * 32 * 128 * 32 == 262_144
    assert right_1_1(EXERCISE_CONFIGS["DeepSeek-V2-Lite"], 2) == (512 + 64) * 27 * 2 == 31_104


def test_1_1_placeholder_and_right():
    def stub(config, b):
        return ___
    status(check_kv_cache_bytes_function(stub), NOT_ATTEMPTED, "2 * n_kv * head_dim")

    def raises(config, b):
        raise NotImplementedError
    status(check_kv_cache_bytes_function(raises), NOT_ATTEMPTED)
    status(check_kv_cache_bytes_function(right_1_1), RIGHT, "344,064", "31,104")
    status(check_kv_cache_bytes_function(lambda c, b: np.int64(right_1_1(c, b))), RIGHT)


def _no_default_head_dim(c, b):
    return right_1_1(c, b) if "kv_lora_rank" in c else 2 * c["num_key_value_heads"] * c["head_dim"] * c["num_hidden_layers"] * b


def _ignores_head_dim(c, b):
    if "kv_lora_rank" in c:
        return right_1_1(c, b)
    return 2 * c.get("num_key_value_heads", c["num_attention_heads"]) * (c["hidden_size"] // c["num_attention_heads"]) \
        * c["num_hidden_layers"] * b


@pytest.mark.parametrize("fn, hint", [
    (lambda c, b: right_1_1(c, b) // 2, "keys AND values"),
    (lambda c, b: right_1_1(c, b) // b, "bytes_per_element"),
    (lambda c, b: right_1_1(c, b) // c["num_hidden_layers"], "num_hidden_layers"),
    (lambda c, b: right_1_1(c, b) * c["num_attention_heads"] // c.get("num_key_value_heads", c["num_attention_heads"])
     if "kv_lora_rank" not in c else right_1_1(c, b), "num_key_value_heads (8)"),
    (_no_default_head_dim, "no field 'head_dim'"),
    (_ignores_head_dim, "head_dim (256) explicitly"),
    (lambda c, b: 2 * right_1_1(c, b) if "kv_lora_rank" in c else right_1_1(c, b), "ONE latent"),
    (lambda c, b: c["kv_lora_rank"] * c["num_hidden_layers"] * b if "kv_lora_rank" in c else right_1_1(c, b), "k^R"),
    (lambda c, b: "lots", "must be a number"),
    (42, "pass your function"),
])
def test_1_1_wrong_functions_get_their_hint(fn, hint):
    status(check_kv_cache_bytes_function(fn), WRONG, hint)


# ------------------------------------------------------------------------------------------ 1.2
PER_SEQ = 131_072 * 32_768          # Mistral-7B BF16 bytes per token x 32K tokens


def test_1_2():
    right = 80 * 10**9 // PER_SEQ
    assert right == 18
    status(check_max_batch_80gb(___), NOT_ATTEMPTED, "Round down")
    for form in (right, np.int32(right), torch.tensor(right), 18.0):
        status(check_max_batch_80gb(form), RIGHT, "18 sequences")
    status(check_max_batch_80gb(19), WRONG, "round down")
    status(check_max_batch_80gb(80 * 2**30 // PER_SEQ), WRONG, "GiB")
    status(check_max_batch_80gb(80 * 10**9 // (PER_SEQ // 2)), WRONG, "keys AND values")
    status(check_max_batch_80gb(80 * 10**9 // (PER_SEQ * 4)), WRONG, "8 key/value heads")
    status(check_max_batch_80gb(18.6), WRONG, "round DOWN")
    status(check_max_batch_80gb(torch.tensor([18, 18])), WRONG, "single number")


# ------------------------------------------------------------------------------------------ 1.3
def test_1_3():
    right = 2 * 8 * 128 - 64
    status(check_mla_rank_for_gqa_heads(___), NOT_ATTEMPTED, "solve for d_c")
    status(check_mla_rank_for_gqa_heads(np.float64(right)), RIGHT, "1984")
    status(check_mla_rank_for_gqa_heads(2048), WRONG, "rope key")
    status(check_mla_rank_for_gqa_heads(960), WRONG, "keys AND values")
    status(check_mla_rank_for_gqa_heads(2112), WRONG, "subtract")
    status(check_mla_rank_for_gqa_heads(448), WRONG, "GQA with 2 key/value heads")
    status(check_mla_rank_for_gqa_heads(None), WRONG, "must be a number")


# ------------------------------------------------------------------------------------------ stored notebooks
def code_cells(name):
    return [c for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "code"]


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]))
        elif "data" in o:
            out.append("".join(o["data"].get("text/plain", "")))
    return "".join(out)


@pytest.mark.parametrize("chapter, solutions, n_exercises", [
    ("00_tour.ipynb", "solutions/00_tour_solutions.ipynb", 2),
    ("01_kv_cache.ipynb", "solutions/01_kv_cache_solutions.ipynb", 3),
])
def test_exercises_stored_unattempted_and_solved(chapter, solutions, n_exercises):
    checks = [c for c in code_cells(chapter) if "check_" in "".join(c["source"]) and "___" in "".join(c["source"])]
    assert len(checks) == n_exercises
    for c in checks:
        assert "not attempted yet" in text_of(c), "".join(c["source"])
    solved = [text_of(c) for c in code_cells(solutions) if "check_" in "".join(c["source"])]
    assert len(solved) == n_exercises and all(t.startswith("✓ Exercise") for t in solved), solved
    assert not any("___" in "".join(c["source"]) for c in code_cells(solutions))


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
    nb = json.loads((NOTEBOOKS / name).read_text())
    prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    for word in ("nbval", "pytest", "output comparison", "not compared"):
        assert word not in prose, word
