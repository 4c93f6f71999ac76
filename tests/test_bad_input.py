"""Bad input gets a clear error that names the argument -- never a NaN or an obscure torch error.

Covers the cases a learner (or a broken file) is likely to produce: wrong types and non-finite values
in a config, malformed token ids and caches, bad decoding arguments, and malformed checkpoint folders.
The parameter-count edge cases check ``count_parameters`` against the built model (an independent count).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from dsv3_lessons import count_parameters, tiny
from dsv3_lessons.model.config import ConfigError
from dsv3_lessons.tools.generate import generate
from dsv3_lessons.tools.hf_compat import CheckpointError, export_hf, import_hf
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field,value,message", [
    ("num_experts_per_tok", 2.5, "num_experts_per_tok must be a non-negative integer"),
    ("topk_group", 1.5, "topk_group must be a non-negative integer"),
    ("first_k_dense_replace", 1.5, "first_k_dense_replace must be a non-negative integer"),
    ("num_nextn_predict_layers", 1.5, "num_nextn_predict_layers must be a non-negative integer"),
    ("hidden_size", True, "hidden_size must be a positive integer"),
    ("rms_norm_eps", "1e-6", "rms_norm_eps must be a finite number"),
    ("rope_theta", None, "rope_theta must be a finite number"),
    ("routed_scaling_factor", math.inf, r"routed_scaling_factor must be a number in \(0, 1000\]"),
    ("routed_scaling_factor", 1e300, r"routed_scaling_factor must be a number in \(0, 1000\]"),   # was NaN logits
    ("initializer_range", -1.0, r"initializer_range must be a number in \[0, 1\]"),
    ("initializer_range", math.nan, r"initializer_range must be a number in \[0, 1\]"),
    ("initializer_range", 1e142, r"initializer_range must be a number in \[0, 1\]"),          # was NaN logits
    ("rms_norm_eps", 5e-324, "rms_norm_eps must be a finite number >= 1.18e-38"),             # is 0 in float32
    ("attention_bias", "no", "attention_bias must be True or False"),
    ("norm_topk_prob", "yes", "norm_topk_prob must be True or False"),
    ("tie_word_embeddings", 1, "tie_word_embeddings must be True or False"),
    ("topk_method", "greedy", "topk_method must be 'noaux_tc'"),                            # V2's rule: not built
])
def test_config_rejects_wrong_types_and_non_finite_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**{field: value})


@pytest.mark.parametrize("key,value", [("factor", math.inf), ("factor", "4"), ("beta_fast", math.nan),
                                       ("original_max_position_embeddings", 64.5), ("mscale_all_dim", None),
                                       # these crashed (ZeroDivisionError, math domain error, OverflowError)
                                       # or gave NaN logits before they were checked
                                       ("beta_slow", 0.0), ("beta_slow", -1.0), ("mscale", -1.0),
                                       ("mscale_all_dim", 1e150), ("original_max_position_embeddings", 10**400)])
def test_config_rejects_bad_yarn_values(key, value):
    rs = dict(tiny().rope_scaling, **{key: value})
    with pytest.raises(ConfigError, match=f"rope_scaling.{key}"):
        tiny(rope_scaling=rs)


def test_moe_fields_are_checked_when_only_the_mtp_block_is_moe():
    # every main layer dense, but the MTP block (index num_hidden_layers) is an MoE block
    with pytest.raises(ConfigError, match="divisible by n_group"):
        tiny(first_k_dense_replace=3, n_group=3)


@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True}, {"first_k_dense_replace": 3},
                                       {"moe_layer_freq": 2}, {"q_lora_rank": None, "attention_bias": True},
                                       {"num_nextn_predict_layers": 2}, {"tie_word_embeddings": True}])
def test_count_parameters_matches_the_built_model(overrides):
    cfg = tiny(**overrides)
    model = DeepSeekV3(cfg)
    counted = count_parameters(cfg)
    assert counted.total == model.num_parameters()
    assert counted.mtp == model.num_parameters(include_mtp=True) - model.num_parameters()
    assert cfg.num_moe_layers == sum(layer.is_moe for layer in model.layers)


# ------------------------------------------------------------------ model forward
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepSeekV3(tiny(vocab_size=20)).eval()


@pytest.mark.parametrize("ids,message", [
    ([[1, 2, 3]], "integer torch.Tensor"),
    (torch.ones(1, 3), "integer torch.Tensor"),
    (torch.ones(1, 3, dtype=torch.bool), "integer torch.Tensor"),
    (torch.ones(1, 0, dtype=torch.long), r"batch, seq >= 1"),
    (torch.ones(0, 4, dtype=torch.long), r"batch, seq >= 1"),
    (torch.ones(4, dtype=torch.long), r"\[batch, seq\]"),
    (torch.full((1, 3), 20), r"\[0, 20\)"),
])
def test_forward_rejects_bad_ids(model, ids, message):
    with pytest.raises(ValueError, match=message):
        model(ids)


def test_all_ignored_targets_raise_instead_of_nan(model):
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="ignore index"):
        model(ids, torch.full((1, 4), -100))


def test_cache_must_cover_every_layer(model):
    ids = torch.ones(1, 4, dtype=torch.long)
    for cache in ([], model.new_cache(1, 8)[:1]):
        with pytest.raises(ValueError, match="one LatentCache per layer"):
            model(ids, cache=cache)
    for bad in (-1, 0, 2.0, True):
        with pytest.raises(ValueError, match="batch must be a positive integer"):
            model.new_cache(bad, 8)


@pytest.mark.parametrize("kw", [{"aux_loss_alpha": math.inf}, {"mtp_loss_weight": math.nan},
                                {"mtp_loss_weight": -0.1}])
def test_loss_weights_must_be_finite(kw):
    with pytest.raises(ValueError, match="finite number >= 0"):
        DeepSeekV3(tiny(), **kw)


# ------------------------------------------------------------------ generation
@pytest.mark.parametrize("prompt,kw,message", [
    ("hello", {}, "not text"),
    ([1.7, 2.2], {}, "integer token ids"),
    ([], {}, "empty"),
    ([1, 25], {}, r"\[0, 20\)"),
    ([1, 2], {"temperature": math.nan}, "temperature must be a finite number"),
    ([1, 2], {"temperature": -1.0}, "temperature must be a finite number"),
    ([1, 2], {"temperature": 1.0, "top_k": 2.5}, "top_k must be"),
    ([1, 2], {"temperature": 1.0, "seed": 1.5}, "seed must be an integer"),
])
def test_generate_rejects_bad_arguments(model, prompt, kw, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompt, 3, **kw)


def test_generate_rejects_bool_length_and_foreign_models(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1, 2], True)
    with pytest.raises(ValueError, match="DeepSeekV3"):
        generate(torch.nn.Linear(2, 2), [1, 2], 3)


# ------------------------------------------------------------------ checkpoints
@pytest.fixture()
def folder(tmp_path, model):
    return export_hf(model, tmp_path / "ckpt")


def test_config_without_sizes_is_refused_before_building(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="lacks required field"):
        import_hf(tmp_path)


def test_corrupt_safetensors_names_the_file(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        import_hf(folder)


def test_index_with_a_list_weight_map(folder):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    with pytest.raises(CheckpointError, match="weight_map"):
        import_hf(folder)


def test_a_file_instead_of_a_folder(folder):
    with pytest.raises(FileNotFoundError, match="is a file"):
        import_hf(folder / "config.json")


def test_integer_weights_are_refused(folder):
    from safetensors.torch import load_file
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.int32)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        import_hf(folder)
