"""Parity with the reference implementation: transformers 5's ``DeepseekV3ForCausalLM`` (fp32, CPU).

Oracle: transformers' deepseek_v3 modeling code, loaded from the folder ``export_hf`` writes (and the
reverse: a transformers-built model, saved by transformers, read back by ``import_hf``). Weights are
random but *non-trivial*: linear weights ~ N(0, 1/fan_in) so activations are O(1) and attention is far
from uniform, RMSNorm weights 1 + noise, balancing biases random -- so a wrong mscale², YaRN frequency,
rope layout, bias use or eh_proj order shows up as an O(1e-1) logit difference (the "mutation" checks
below prove the tolerance is tight enough to notice them).
"""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import DeepseekV3Config as HFConfig  # noqa: E402
from transformers import DeepseekV3ForCausalLM  # noqa: E402

from dsv3_lessons.model.config import ConfigError, tiny  # noqa: E402
from dsv3_lessons.tools.hf_compat import (CheckpointError, dequantize_block_fp8, export_hf, import_hf,  # noqa: E402
                                    load_hf_tensors, to_hf_state_dict)
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3  # noqa: E402
from dsv3_lessons.model.rope import rope_inv_freq  # noqa: E402

TOL = 1e-4  # max abs logit difference allowed in fp32
V = 96
MEASURED: dict[str, float] = {}  # filled by the tests; printed with `pytest -s` for the report


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every tensor a non-trivial value (works for our model and for transformers')."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:                       # RMSNorm weights
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:                                  # [out, in] or fused experts [E, out, in]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model


def our_model(seed: int = 0, **overrides) -> DeepSeekV3:
    torch.manual_seed(seed)
    return perturb_(DeepSeekV3(tiny(vocab_size=V, **overrides)), seed).eval()


def load_transformers(folder) -> DeepseekV3ForCausalLM:
    hf, info = DeepseekV3ForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    assert hf.config._attn_implementation == "eager"
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return hf.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Our perturbed tiny model, its export folder and transformers' model loaded from it."""
    model = our_model(0)
    folder = export_hf(model, tmp_path_factory.mktemp("ours"))
    return model, folder, load_transformers(folder)


@pytest.fixture(scope="module")
def ref32(exported):
    """32 random tokens and transformers' logits and last hidden state for them (computed once)."""
    ids = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(32))
    with torch.no_grad():
        out = exported[2](ids, output_hidden_states=True)
    return ids, out.logits, out.hidden_states[-1]


# ------------------------------------------------------------------------------------------ (a) export
def test_export_folder_is_released_style(exported):
    model, folder, _ = exported
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["architectures"] == ["DeepseekV3ForCausalLM"]
    assert cfg["rope_scaling"] == {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
    assert cfg["num_nextn_predict_layers"] == 1 and "quantization_config" not in cfg
    names = set(load_hf_tensors(folder))
    L = 3
    for e in range(8):  # one tensor per expert, released names
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert f"model.layers.1.mlp.experts.{e}.{proj}.weight" in names
    for n in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
              "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
              "model.layers.1.mlp.shared_experts.down_proj.weight",
              "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "model.layers.0.mlp.gate_proj.weight",
              f"model.layers.{L}.embed_tokens.weight", f"model.layers.{L}.enorm.weight",
              f"model.layers.{L}.hnorm.weight", f"model.layers.{L}.eh_proj.weight",
              f"model.layers.{L}.shared_head.norm.weight", f"model.layers.{L}.shared_head.head.weight",
              f"model.layers.{L}.mlp.experts.7.down_proj.weight"):
        assert n in names, n
    assert not any(n.startswith("mtp.") or ".experts.gate_up_proj" in n for n in names)
    # exactly our parameters + bias buffers, plus the two MTP duplicates
    assert len(names) == len(model.state_dict()) + 2


def test_transformers_reads_our_config(exported):
    _, folder, hf = exported
    rp = hf.config.rope_parameters
    assert rp["rope_type"] == "yarn" and rp["factor"] == 4.0 and rp["original_max_position_embeddings"] == 64
    assert rp["rope_theta"] == 10000.0 and rp["mscale_all_dim"] == 1.0 and rp["mscale"] == 1.0
    assert hf.config.rope_interleave is True
    assert hf.config.num_nextn_predict_layers == 1
    # everything transformers loaded came from our file; only the MTP layer (which its main model
    # does not hold) is left over
    _, info = DeepseekV3ForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert info["unexpected_keys"] and all(k.startswith("model.layers.3.") for k in info["unexpected_keys"])


def test_logits_match_transformers(exported, ref32):
    model, _, hf = exported
    ids, ref, _ = ref32
    with torch.no_grad():
        d = max_diff(model(ids).logits, ref)
    MEASURED["(a) export -> transformers, T=32"] = d
    assert ref.abs().max() > 1.0  # logits are O(1): the tolerance is meaningful
    assert d <= TOL


def test_logits_match_transformers_beyond_original_window(exported):
    """200 tokens > original_max_position_embeddings = 64: the YaRN-interpolated frequencies matter."""
    model, _, hf = exported
    ids = torch.randint(0, V, (1, 200), generator=torch.Generator().manual_seed(200))
    with torch.no_grad():
        d = max_diff(model(ids).logits, hf(ids).logits)
    MEASURED["(a) export -> transformers, T=200"] = d
    assert d <= TOL


def test_parity_check_detects_missing_mscale_and_yarn(exported):
    """Mutations: drop mscale² from the softmax scale, or YaRN from the frequencies -> far outside TOL."""
    model, _, hf = exported
    ids = torch.randint(0, V, (1, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        attns = [m for m in model.modules() if hasattr(m, "softmax_scale")]
        saved = [a.softmax_scale for a in attns]
        for a in attns:
            a.softmax_scale = a.qk_head_dim ** -0.5
        no_mscale = max_diff(model(ids).logits, ref)
        for a, s in zip(attns, saved):
            a.softmax_scale = s
        freqs = [a.rotary.inv_freq.clone() for a in attns]
        for a in attns:
            a.rotary.inv_freq.copy_(rope_inv_freq(a.qk_rope_head_dim))
        no_yarn = max_diff(model(ids).logits, ref)
        for a, f in zip(attns, freqs):
            a.rotary.inv_freq.copy_(f)
        restored = max_diff(model(ids).logits, ref)
    assert no_mscale > 100 * TOL and no_yarn > 100 * TOL
    assert restored <= TOL


# ------------------------------------------------------------------------------------------ (b) import
def hf_tiny_config(**kw) -> HFConfig:
    """A transformers config written from transformers' own field names (independent of our to_dict)."""
    args = dict(vocab_size=V, hidden_size=64, intermediate_size=192, moe_intermediate_size=64,
                num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                routed_scaling_factor=2.5, max_position_embeddings=256,
                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
                                 "mscale": 1.0, "mscale_all_dim": 1.0})
    args.update(kw)
    return HFConfig(**args)


@pytest.fixture(scope="module")
def hf_built(tmp_path_factory):
    torch.manual_seed(1)
    hf = perturb_(DeepseekV3ForCausalLM(hf_tiny_config()), seed=1).eval()
    hf.config._attn_implementation = "eager"
    folder = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(folder)
    return hf, folder


def test_import_transformers_checkpoint(hf_built):
    hf, folder = hf_built
    with pytest.warns(UserWarning, match="no MTP tensors"):  # save_pretrained drops MTP
        model = import_hf(folder)
    assert len(model.mtp) == 0 and model.cfg.rope_scaling["type"] == "yarn"
    ids = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d = max_diff(model(ids).logits, hf(ids).logits)
    MEASURED["(b) transformers save_pretrained -> import_hf, T=32"] = d
    assert d <= TOL
    with pytest.raises(CheckpointError, match=r"missing tensor.*model\.layers\.3\."):
        import_hf(folder, load_mtp=True)


def test_import_fused_expert_layout(hf_built, tmp_path):
    """transformers' in-memory layout (experts.gate_up_proj / experts.down_proj) is accepted too."""
    hf, _ = hf_built
    sd = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert "model.layers.1.mlp.experts.gate_up_proj" in sd
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf.config.save_pretrained(tmp_path)
    model = import_hf(tmp_path, load_mtp=False)
    ids = torch.randint(0, V, (1, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        d = max_diff(model(ids).logits, hf(ids).logits)
    MEASURED["(b) fused experts -> import_hf, T=32"] = d
    assert d <= TOL
    up = hf.model.layers[2].mlp.experts.gate_up_proj[5, 64:]          # up rows come after gate rows
    assert torch.equal(model.layers[2].mlp.experts[5].up_proj.weight, up)


def test_export_import_round_trip_is_exact(exported, tmp_path):
    model, folder, _ = exported
    back = import_hf(folder)
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert back.mtp[0].mlp.gate.e_score_correction_bias.abs().sum() > 0
    sharded = export_hf(model, tmp_path / "sharded", max_shard_bytes=200_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    sd3 = import_hf(sharded).state_dict()
    assert all(torch.equal(sd[k], sd3[k]) for k in sd)


# ------------------------------------------------------------------------------------------ (c) cache
@pytest.mark.parametrize("attn_impl", ["naive", "absorb"])
def test_cached_decoding_matches_transformers(exported, ref32, attn_impl):
    """Prefill 16 tokens, then 6 single-token steps, then two chunks of 5, on the latent cache."""
    model, _, _ = exported
    ids, ref, _ = ref32
    for layer in model.layers:
        layer.self_attn.attn_impl = attn_impl
    try:
        with torch.no_grad():
            cache = model.new_cache(2, 32)
            bounds = [0, 16, 17, 18, 19, 20, 21, 22, 27, 32]
            steps = [model(ids[:, a:b], cache=cache).logits for a, b in zip(bounds, bounds[1:])]
    finally:
        for layer in model.layers:
            layer.self_attn.attn_impl = "naive"
    assert cache[0].length == 32
    d = max_diff(torch.cat(steps, dim=1), ref)
    MEASURED[f"(c) cached decoding ({attn_impl}) vs transformers, T=32"] = d
    assert d <= TOL


# ------------------------------------------------------------------------------------------ (d) bias
def test_balancing_bias_is_used_for_selection_by_both(tmp_path):
    model = our_model(5)
    ids = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(5))
    gate = model.layers[2].mlp.gate
    with torch.no_grad():
        before = model(ids).logits
        sel_before = model.layers[2].mlp.last_counts.clone()
        gate.e_score_correction_bias.zero_()
        gate.e_score_correction_bias[7] = 1.0     # biased score of expert 7 beats every unbiased one
        after = model(ids).logits
        sel_after = model.layers[2].mlp.last_counts.clone()
    assert sel_after[7] == ids.numel() and sel_before[7] < ids.numel()   # the routing really changed
    hf = load_transformers(export_hf(model, tmp_path))
    with torch.no_grad():
        ref = hf(ids).logits
    d = max_diff(after, ref)
    MEASURED["(d) routing-changing bias, T=32"] = d
    assert d <= TOL
    assert max_diff(before, ref) > 100 * TOL  # the bias changed the output, and transformers agrees with it


# ------------------------------------------------------------------------------------------ MTP
def _hf_mtp(model: DeepSeekV3, hf: DeepseekV3ForCausalLM):
    """transformers' MtpModel (its MTP drafting module) holding our MTP weights."""
    from transformers.modeling_layers import MtpModel

    mtp = MtpModel(hf, 1).eval()
    module = model.mtp[0]
    sd = {}
    for n, v in module.state_dict().items():
        if n.startswith("shared_head.norm."):
            sd["layers.0.post_norm.weight"] = v
        elif n.split(".")[0] in ("enorm", "hnorm", "eh_proj"):
            sd["layers.0." + n] = v
        elif ".experts." not in n:
            sd["layers.0.mtp_block." + n] = v
    experts = module.mlp.experts
    sd["layers.0.mtp_block.mlp.experts.gate_up_proj"] = torch.stack(
        [torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in experts])
    sd["layers.0.mtp_block.mlp.experts.down_proj"] = torch.stack([e.down_proj.weight for e in experts])
    missing, unexpected = mtp.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) == {"embed_tokens.weight", "shared_head.weight"}  # shared, tied
    return mtp


def test_mtp_module_matches_transformers_mtp_layer(exported):
    """Same h^{k-1} in, same depth-1 logits out: checks eh_proj order, enorm/hnorm, block, shared_head.norm."""
    model, _, hf = exported
    ids = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(6))
    mtp = _hf_mtp(model, hf)
    T = ids.shape[1]
    with torch.no_grad():
        h = torch.randn(2, T - 1, 64, generator=torch.Generator().manual_seed(7))
        pos = torch.arange(1, T)[None].expand(2, -1)
        ref = mtp._project_to_logits(mtp.forward_layer(0, h, pos, None, input_ids=ids[:, 1:]))
        ours = model.lm_head(model.mtp[0].shared_head.norm(model.mtp[0](h, model.embed_tokens(ids[:, 1:]))))
    d = max_diff(ours, ref)
    MEASURED["MTP module vs transformers MtpLayer, T=31"] = d
    assert d <= TOL


def test_mtp_logits_match_transformers_pipeline(exported, ref32):
    model, _, hf = exported
    ids, _, h0 = ref32
    mtp = _hf_mtp(model, hf)
    T = ids.shape[1]
    with torch.no_grad():
        pos = torch.arange(1, T)[None].expand(2, -1)
        ref = mtp._project_to_logits(mtp.forward_layer(0, h0[:, :T - 1], pos, None, input_ids=ids[:, 1:]))
        ours = model(ids, compute_mtp=True).mtp_logits[0]
    assert max_diff(ours, ref) <= TOL


# ------------------------------------------------------------------------------------------ FP8
def quantize_block_fp8(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-side quantizer: scale = amax/448 per block (floored at 1e-4), q = clamp(w/scale) in E4M3."""
    rows, cols = w.shape
    gr, gc = math.ceil(rows / block), math.ceil(cols / block)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    s = torch.empty(gr, gc)
    for i in range(gr):
        for j in range(gc):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            s[i, j] = blk.abs().max().clamp(min=1e-4) / 448.0
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s[i, j]).clamp(-448, 448).to(q.dtype)
    return q, s


def test_dequantize_multiplies_block_scales_on_a_non_divisible_grid():
    g = torch.Generator().manual_seed(9)
    w = torch.randn(200, 300, generator=g)
    q, s = quantize_block_fp8(w)
    assert s.shape == (2, 3)  # ceil(200/128) x ceil(300/128)
    deq = dequantize_block_fp8(q, s)
    for i in range(2):           # element-wise oracle, block by block
        for j in range(3):
            rs, cs = slice(i * 128, (i + 1) * 128), slice(j * 128, (j + 1) * 128)
            assert torch.equal(deq[rs, cs], q[rs, cs].float() * s[i, j])
    assert (deq - w).abs().max() <= w.abs().max() * 2.0 ** -4  # E4M3: 3 mantissa bits
    doubled = dequantize_block_fp8(q, 2 * s)
    assert torch.equal(doubled, 2 * deq)                     # multiply, never divide
    assert dequantize_block_fp8(q, s, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_dequantize_rejects_wrong_scale_grid():
    q = torch.zeros(200, 300, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"ceil\(200/128\) x ceil\(300/128\) = \(2, 3\)"):
        dequantize_block_fp8(q, torch.ones(1, 2))
    with pytest.raises(ValueError, match="2-D"):
        dequantize_block_fp8(q[0], torch.ones(3))


def test_import_fp8_checkpoint(exported, tmp_path):
    """A released-style FP8 folder (weight_scale_inv, 32x32 blocks so tiny shapes span several blocks)."""
    model, folder, _ = exported
    tensors = load_hf_tensors(folder)
    fp8 = {}
    quantized = []
    for name, t in tensors.items():
        if t.dim() == 2 and ("self_attn." in name or "mlp." in name) and ".gate.weight" not in name:
            q, s = quantize_block_fp8(t, block=32)
            fp8[name], fp8[name + "_scale_inv"] = q, s
            quantized.append(name)
        else:
            fp8[name] = t
    save_file(fp8, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [32, 32]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    back = import_hf(tmp_path)
    sd = to_hf_state_dict(back)
    kv = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"  # 40 x 64 -> a partial second block row
    assert fp8[kv + "_scale_inv"].shape == (2, 2) and kv in quantized
    for name in quantized:
        assert torch.equal(sd[name], dequantize_block_fp8(fp8[name], fp8[name + "_scale_inv"], (32, 32)))
    assert torch.equal(sd["model.embed_tokens.weight"], tensors["model.embed_tokens.weight"])
    del fp8[kv + "_scale_inv"]
    save_file(fp8, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="FP8 tensor.*without.*scale.*kv_a_proj_with_mqa"):
        import_hf(tmp_path)


# ------------------------------------------------------------------------------------------ (e) errors
def _broken(folder, tmp_path, edit) -> str:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    out = tmp_path / "broken"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def test_missing_tensor_is_named(exported, tmp_path):
    _, folder, _ = exported
    out = _broken(folder, tmp_path, lambda t: t.pop("model.layers.1.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\): model\.layers\.1\.mlp\.experts\.3\.up_proj"):
        import_hf(out)


def test_unexpected_tensor_is_named(exported, tmp_path):
    _, folder, _ = exported
    out = _broken(folder, tmp_path, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(4)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): model\.layers\.0\.self_attn\.q_norm"):
        import_hf(out)


def test_shape_mismatch_names_expected_and_got(exported, tmp_path):
    _, folder, _ = exported
    out = _broken(folder, tmp_path,
                  lambda t: t.update({"model.layers.1.self_attn.kv_b_proj.weight": torch.zeros(96, 32)}))
    with pytest.raises(CheckpointError, match=r"kv_b_proj\.weight: expected \(128, 32\), got \(96, 32\)"):
        import_hf(out)


def test_nan_weight_is_rejected(exported, tmp_path):
    _, folder, _ = exported

    def poison(t):
        t["model.layers.2.self_attn.q_b_proj.weight"][3, 5] = float("nan")
        t["model.norm.weight"][0] = float("inf")
    out = _broken(folder, tmp_path, poison)
    with pytest.raises(CheckpointError, match=r"NaN/Inf.*model\.layers\.2\.self_attn\.q_b_proj\.weight \(1 of"):
        import_hf(out)


def test_missing_config_and_missing_shard(exported, tmp_path):
    _, folder, _ = exported
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        import_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_hf(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="missing shard.*model-00002-of-00002"):
        import_hf(tmp_path)


def test_bad_config_values_are_config_errors(exported, tmp_path):
    _, folder, _ = exported
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_group"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="n_group"):
        import_hf(tmp_path)


def test_mtp_duplicate_embedding_is_checked(exported, tmp_path):
    _, folder, _ = exported
    out = _broken(folder, tmp_path, lambda t: t["model.layers.3.embed_tokens.weight"].mul_(2))
    with pytest.warns(UserWarning, match=r"model\.layers\.3\.embed_tokens\.weight differs from model\.embed_tokens"):
        import_hf(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the faithful export loads without any warning
        import_hf(folder)


def test_report_measured_differences():
    """Runs last in this file; prints what the parity tests measured (``pytest -s``)."""
    for k, v in MEASURED.items():
        print(f"{k}: max |Δlogit| = {v:.2e}")
    assert all(v <= TOL for v in MEASURED.values())
