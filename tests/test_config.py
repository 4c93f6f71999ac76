"""Config: published parameter counts (V3 report; released HF config.json), count_parameters vs the built model,
config.json I/O, validation.

Oracles: the numbers published for DeepSeek-V3 (V3 report §4.2 / model card: 671B total, 37B activated,
exact values that follow from the released config.json), re-derived here from a tensor-by-tensor inventory of the
released checkpoint's
shapes (written independently of ``count_parameters``); ``sum(numel)`` of the built tiny model; and
transformers' own ``DeepseekV3Config`` for the config.json dialect it writes.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from dsv3_lessons.model.config import ConfigError, DeepseekV3Config, count_parameters, deepseek_v3_671b, tiny
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3


# ------------------------------------------------------------------------------------------ 671B
def released_layer_shapes(moe: bool) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's tensors in the released checkpoint (names after ``model.layers.{i}.``), sizes from the
    released config.json."""
    d, h, dq, dc, dn, dr, dv = 7168, 128, 1536, 512, 128, 64, 128
    shapes = {
        "input_layernorm.weight": (d,),
        "post_attention_layernorm.weight": (d,),
        "self_attn.q_a_proj.weight": (dq, d),
        "self_attn.q_a_layernorm.weight": (dq,),
        "self_attn.q_b_proj.weight": (h * (dn + dr), dq),
        "self_attn.kv_a_proj_with_mqa.weight": (dc + dr, d),
        "self_attn.kv_a_layernorm.weight": (dc,),
        "self_attn.kv_b_proj.weight": (h * (dn + dv), dc),
        "self_attn.o_proj.weight": (d, h * dv),
    }
    if not moe:
        shapes.update({"mlp.gate_proj.weight": (18432, d), "mlp.up_proj.weight": (18432, d),
                       "mlp.down_proj.weight": (d, 18432)})
        return shapes
    shapes.update({"mlp.gate.weight": (256, d), "mlp.gate.e_score_correction_bias": (256,),
                   "mlp.shared_experts.gate_proj.weight": (2048, d), "mlp.shared_experts.up_proj.weight": (2048, d),
                   "mlp.shared_experts.down_proj.weight": (d, 2048)})
    for e in range(256):
        shapes.update({f"mlp.experts.{e}.gate_proj.weight": (2048, d), f"mlp.experts.{e}.up_proj.weight": (2048, d),
                       f"mlp.experts.{e}.down_proj.weight": (d, 2048)})
    return shapes


def numel(shapes) -> int:
    return sum(math.prod(s) for s in shapes.values())


def test_671b_counts_match_published_numbers():
    c = count_parameters(deepseek_v3_671b())
    dense, moe = numel(released_layer_shapes(False)), numel(released_layer_shapes(True))
    emb = head = 129280 * 7168
    total = 3 * dense + 58 * moe + emb + head + 7168          # + model.norm
    assert total == 671_026_419_200                          # V3 report: 671B total
    assert c.total == total
    attn = numel({k: v for k, v in released_layer_shapes(False).items() if k.startswith("self_attn.")})
    assert attn == 187_107_328 and c.attention_per_layer == attn
    assert 3 * 7168 * 2048 == 44_040_192 and c.expert == 44_040_192
    # a token uses the shared expert and 8 of the 256 routed experts
    unused = 58 * (256 - 8) * 44_040_192
    assert c.activated == total - unused == 37_552_297_472
    assert round(c.activated / 1e9, 2) == 37.55
    assert c.activated_no_embedding == total - unused - emb
    assert round(c.activated_no_embedding / 1e9, 2) == 36.63
    # MTP transformer block: one MoE layer (the shared embedding/head are not counted)
    assert c.mtp_block == moe
    assert round(c.mtp_block / 1e9, 1) == 11.5
    assert c.mtp == moe + 3 * 7168 + 2 * 7168 * 7168          # + enorm, hnorm, shared_head.norm, eh_proj


def test_671b_config_matches_spec():
    cfg = deepseek_v3_671b()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.first_k_dense_replace, cfg.n_routed_experts,
            cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group, cfg.routed_scaling_factor) == \
        (7168, 61, 3, 256, 8, 8, 4, 2.5)
    assert cfg.rope_scaling["factor"] == 40 and cfg.rope_scaling["original_max_position_embeddings"] == 4096
    assert cfg.quantization_config["weight_block_size"] == [128, 128]
    assert cfg.qk_head_dim == 192


# ------------------------------------------------------------------------------------------ tiny
def test_tiny_count_equals_built_model():
    torch.manual_seed(0)
    cfg = tiny()
    model = DeepSeekV3(cfg)
    c = count_parameters(cfg)
    params = {n: p for n, p in model.named_parameters()}
    biases = {n: b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")}
    assert len(biases) == 3  # layers 1, 2 and the MTP block
    main = sum(p.numel() for n, p in {**params, **biases}.items() if not n.startswith("mtp."))
    mtp = sum(p.numel() for n, p in {**params, **biases}.items() if n.startswith("mtp."))
    assert c.total == main == model.num_parameters()
    assert c.mtp == mtp == model.num_parameters(include_mtp=True) - main
    experts = sum(p.numel() for n, p in params.items() if n.startswith("layers.1.mlp.experts."))
    assert c.expert * cfg.n_routed_experts == experts


def test_tiny_preset_exercises_every_mechanism():
    cfg = tiny()
    assert cfg.q_lora_rank and cfg.rope_scaling["type"] == "yarn" and cfg.n_group > cfg.topk_group > 0
    assert 0 < cfg.first_k_dense_replace < cfg.num_hidden_layers and cfg.num_nextn_predict_layers == 1
    assert cfg.n_shared_experts == 1 and cfg.num_experts_per_tok < cfg.n_routed_experts


# ------------------------------------------------------------------------------------------ I/O
def test_config_json_round_trip(tmp_path):
    cfg = tiny(vocab_size=123, rope_theta=50000.0)
    path = cfg.save(tmp_path)
    assert path.name == "config.json"
    d = json.loads(path.read_text())
    assert d["model_type"] == "deepseek_v3" and d["rope_scaling"]["type"] == "yarn"
    assert DeepseekV3Config.load(tmp_path) == cfg
    assert DeepseekV3Config.load(path) == cfg
    big = deepseek_v3_671b()
    assert DeepseekV3Config.load(big.save(tmp_path / "big.json")) == big


def test_load_transformers_style_rope_parameters(tmp_path):
    """The config.json transformers 5 writes (rope_parameters, no rope_scaling) loads to the same config."""
    transformers = pytest.importorskip("transformers")
    cfg = tiny()
    hf_cfg = transformers.DeepseekV3Config(**cfg.to_dict())
    hf_cfg.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in written and "rope_scaling" not in written
    assert DeepseekV3Config.load(tmp_path) == cfg
    d = cfg.to_dict()
    d.pop("rope_scaling")
    d.pop("rope_theta")  # transformers 5 keeps rope_theta inside rope_parameters
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    plain = DeepseekV3Config.from_dict(d)
    assert plain.rope_scaling is None and plain.rope_theta == 500000.0


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DeepseekV3Config.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DeepseekV3Config.load(tmp_path)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("changes, field", [
    ({"qk_rope_head_dim": 7}, "qk_rope_head_dim"),
    ({"n_routed_experts": 10}, "n_routed_experts"),                      # 10 experts in 4 groups
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),                 # > topk_group·per_group = 2·2
    ({"topk_group": 5}, "topk_group"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.type"),
    ({"rope_scaling": {"type": "yarn", "factor": 0.5, "original_max_position_embeddings": 64}},
     "rope_scaling.factor"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "original_max_position_embeddings"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                       "beta_fast": 1, "beta_slow": 32}}, "beta_fast"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_key_value_heads": 2}, "num_key_value_heads"),
    ({"scoring_func": "softmax"}, "scoring_func"),
    ({"n_routed_experts": 4}, "n_routed_experts / n_group = 4 / 4 = 1; raise n_routed_experts or lower n_group"),
    ({"n_routed_experts": 4, "n_group": 2, "topk_group": 1, "num_experts_per_tok": 3},
     r"topk_group·\(n_routed_experts/n_group\) = 1·\(4/2\) = 2; lower num_experts_per_tok"),
    ({"num_experts_per_tok": 0}, r"= 4; raise num_experts_per_tok to at least 1$"),   # not "lower"
])
def test_validation_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny(**changes)


def test_validation_through_from_dict():
    d = tiny().to_dict()
    d["n_group"] = 3
    with pytest.raises(ConfigError, match=r"n_routed_experts \(8\) must be divisible by n_group \(3\)"):
        DeepseekV3Config.from_dict(d)
