"""KV-cache arithmetic (dsv3_lessons.course.ch01_kv_cache.kv_cache) against published numbers and independent configs.

Oracles: the published per-token table ("Insights into DeepSeek-V3",
arXiv 2505.09343; KB = 1000 B), the 2.25-group statement of the
DeepSeek-V2 report (Table 1), transformers' default configs (LlamaConfig() is LLaMA-2-7B,
FalconConfig() is Falcon-7B, DeepseekV3Config() is DeepSeek-V3), our 671B preset, the MLA module's
own LatentCache, and closed-form properties (linearity, floor).
"""
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_lessons.course.ch01_kv_cache import kv_cache as kc
from dsv3_lessons.course.ch01_kv_cache.kv_cache import (GB, KB, AttentionSpec, bytes_per_token, cache_bytes,
                                                        cache_ratio, dtype_bytes, elements_per_token,
                                                        equivalent_gqa_groups, format_report, kv_cache_report,
                                                        load_model_config, load_model_configs, max_context,
                                                        mla_what_if, naive_mla_elements_per_token_per_layer)

CONFIGS = load_model_configs()


def test_published_table_bf16_exact():
    # arXiv 2505.09343: DeepSeek-V3 70.272 · Qwen-2.5-72B 327.680 · LLaMA-3.1-405B 516.096 KB per token (BF16)
    assert bytes_per_token("DeepSeek-V3", "bf16") == 70_272
    assert bytes_per_token("Qwen-2.5-72B", "bf16") == 327_680
    assert bytes_per_token("LLaMA-3.1-405B", "bf16") == 516_096
    assert [f"{bytes_per_token(m) / KB:.3f}" for m in ("DeepSeek-V3", "Qwen2.5-72B", "LLaMA-3.1-405B")] == \
        ["70.272", "327.680", "516.096"]
    # released config.json: 61·(512+64) elements
    assert elements_per_token("DeepSeek-V3") == 61 * (512 + 64)


def test_published_multipliers_two_readings():
    """The paper's table prints 4.66x and 7.28x; its own KB column gives 4.66x and 7.34x (chapter 1 §5).

    Guard both readings: our ratio is 516,096 / 70,272 = 7.34 (never the printed 7.28), the printed 4.66
    follows from the KB column, no DeepSeek-V3 denominator prints 7.28 without breaking 4.66, and the one
    reading that prints both is 125 LLaMA layers cut (not rounded) to two decimals.
    """
    table = kc.PUBLISHED_KV_TABLE
    assert table["LLaMA-3.1-405B"] == (516.096, 7.28) and table["Qwen2.5-72B"] == (327.680, 4.66)
    for name, (kb, _) in table.items():
        assert bytes_per_token(name) == round(kb * KB)
    assert f"{cache_ratio('Qwen2.5-72B'):.2f}" == "4.66" == f"{table['Qwen2.5-72B'][1]:.2f}"
    assert f"{cache_ratio('LLaMA-3.1-405B'):.2f}" == "7.34" != f"{table['LLaMA-3.1-405B'][1]:.2f}"
    # any V3 denominator that prints 7.28 makes Qwen print something other than 4.66
    for den in (516.096 / 7.2849, 516.096 / 7.2751):
        assert f"{327.680 / den:.2f}" != "4.66"
    # 62 layers (MTP counted) is not it either
    assert f"{516.096 / (62 * 576 * 2 / KB):.2f}" == "7.23"
    # 125 layers of 2·8·128·2 B = 512.000 KB: 7.2860, rounds to 7.29, truncates to 7.28
    r = 125 * 2 * 8 * 128 * 2 / 70_272
    assert f"{r:.2f}" == "7.29" and math.floor(r * 100) / 100 == 7.28


def test_coinciding_lines_are_drawn_distinguishable():
    """Three pairs of models have (nearly) the same cache per token; their lines must stay visible."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsv3_lessons.course.ch01_kv_cache.figures import (kv_coinciding_groups, plot_kv_cache_vs_context,
                                                           plot_kv_bytes_per_token)

    groups = kv_coinciding_groups(CONFIGS)
    assert sorted(map(sorted, groups)) == [["DeepSeek-V2", "DeepSeek-V3"], ["LLaMA-2-7B", "LLaMA-3.1-405B"],
                                           ["LLaMA-3.1-70B", "Qwen2.5-72B"]]
    fig = plot_kv_cache_vs_context(CONFIGS, highlight="DeepSeek-V3")
    lines = {ln.get_label().split(" (")[0]: ln for ln in fig.axes[0].get_lines()}
    for a, b in groups:
        la, lb = lines[a], lines[b]
        assert (la.get_linestyle(), la.get_marker(), la.get_fillstyle()) != \
            (lb.get_linestyle(), lb.get_marker(), lb.get_fillstyle())
        assert b in la.get_label() and a in lb.get_label()     # the legend names the partner
    assert lines["DeepSeek-V3"].get_linewidth() > lines["DeepSeek-V2"].get_linewidth()
    legend = fig.axes[0].get_legend()
    fig.canvas.draw()
    assert not legend.get_window_extent().overlaps(fig.axes[0].get_window_extent())   # legend outside the data
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9 and fig.dpi >= 110 and fig.get_figwidth() >= 9.5
    plt.close(fig)
    bars = plot_kv_bytes_per_token(CONFIGS)
    widths = [p.get_width() for p in bars.axes[0].patches]
    assert widths == [bytes_per_token(s) / KB for s in CONFIGS.values()]
    # a colour key for the four designs, each patch in its bars' colour
    legend = bars.axes[0].get_legend()
    key = {t.get_text(): h.get_facecolor() for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert set(key) == {"MHA", "GQA", "MQA", "MLA"}
    for p, s in zip(bars.axes[0].patches, CONFIGS.values()):
        assert p.get_facecolor() == key[s.attention], s.name
    # MLA labels write the symbols as mathtext, never the raw "d_h^R"
    labels = [t.get_text() for t in bars.axes[0].texts]
    assert "70.272 KB · MLA, 61 layers, $d_c$ 512 + $d_h^R$ 64" in labels
    assert not any("d_h^R" in t.replace("$d_h^R$", "") for t in labels)
    plt.close(bars)


def test_required_models_present_with_sources():
    names = set(CONFIGS)
    assert {"DeepSeek-V3", "DeepSeek-V2", "LLaMA-3.1-405B", "LLaMA-3.1-70B", "Qwen2.5-72B", "LLaMA-2-7B"} <= names
    assert {s.attention for s in CONFIGS.values()} == {"MHA", "GQA", "MQA", "MLA"}
    for spec in CONFIGS.values():
        assert spec.source.startswith("https://") and ("arXiv" in spec.source or "Shazeer" in spec.source)


def test_configs_match_spec_section_8_facts():
    facts = {  # (layers, kv heads, head dim) for GQA; (layers, d_c, d_h^R) for MLA -- published configs
        "Qwen2.5-72B": (80, 8, 128), "LLaMA-3.1-405B": (126, 8, 128), "LLaMA-3.1-70B": (80, 8, 128),
    }
    for name, (layers, n_kv, d_h) in facts.items():
        s = CONFIGS[name]
        assert (s.num_hidden_layers, s.num_key_value_heads, s.head_dim) == (layers, n_kv, d_h)
    for name, layers in (("DeepSeek-V3", 61), ("DeepSeek-V2", 60)):
        s = CONFIGS[name]
        assert (s.num_hidden_layers, s.kv_lora_rank, s.qk_rope_head_dim) == (layers, 512, 64)


def test_configs_match_transformers_defaults_and_our_preset():
    import transformers

    from dsv3_lessons.model.config import deepseek_v3_671b

    llama = transformers.LlamaConfig()  # defaults are LLaMA-2-7B
    s = CONFIGS["LLaMA-2-7B"]
    assert (s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads, s.head_dim, s.hidden_size) == \
        (llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads, llama.head_dim,
         llama.hidden_size)
    falcon = transformers.FalconConfig()  # defaults are Falcon-7B: multi-query attention
    s = CONFIGS["Falcon-7B"]
    assert falcon.multi_query and not falcon.new_decoder_architecture
    assert (s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads, s.head_dim, s.hidden_size) == \
        (falcon.num_hidden_layers, falcon.num_attention_heads, 1, falcon.head_dim, falcon.hidden_size)
    for ref in (transformers.DeepseekV3Config(), deepseek_v3_671b()):
        s = CONFIGS["DeepSeek-V3"]
        assert (s.num_hidden_layers, s.num_attention_heads, s.kv_lora_rank, s.qk_rope_head_dim,
                s.qk_nope_head_dim, s.v_head_dim, s.hidden_size) == \
            (ref.num_hidden_layers, ref.num_attention_heads, ref.kv_lora_rank, ref.qk_rope_head_dim,
             ref.qk_nope_head_dim, ref.v_head_dim, ref.hidden_size)


def test_closed_form_per_kind():
    for s in CONFIGS.values():
        per_layer = (s.kv_lora_rank + s.qk_rope_head_dim) if s.attention == "MLA" \
            else 2 * s.num_key_value_heads * s.head_dim
        assert elements_per_token(s, per_layer=True) == per_layer
        for dt, nbytes in (("bf16", 2), ("fp8", 1), ("fp32", 4)):
            assert bytes_per_token(s, dt) == per_layer * s.num_hidden_layers * nbytes
    # MHA caches a K and a V for every query head; MQA for one head only
    assert elements_per_token("LLaMA-2-7B", per_layer=True) == 2 * 32 * 128
    assert elements_per_token("Falcon-7B", per_layer=True) == 2 * 64


def test_mla_is_gqa_with_2_25_groups():
    assert equivalent_gqa_groups("DeepSeek-V3") == 2.25 == 576 / 256
    assert equivalent_gqa_groups("DeepSeek-V2") == 2.25
    assert equivalent_gqa_groups("LLaMA-3.1-405B") == 8
    assert equivalent_gqa_groups("LLaMA-2-7B") == 32
    assert equivalent_gqa_groups("Falcon-7B") == 1
    # V2 report Table 1: (d_c + d_h^R)·l ≈ (9/2)·d_h·l with d_c = 4·d_h and d_h^R = d_h/2
    assert elements_per_token("DeepSeek-V3") == 4.5 * 128 * 61


def test_ratios_and_naive_mla():
    assert cache_ratio("LLaMA-3.1-405B") == 516_096 / 70_272
    assert cache_ratio("DeepSeek-V3") == 1.0
    assert cache_ratio("Qwen2.5-72B", "LLaMA-3.1-405B") == 327_680 / 516_096
    naive = naive_mla_elements_per_token_per_layer("DeepSeek-V3")
    assert naive == 128 * (128 + 64 + 128) == 40_960  # V3 report §2.1.1 widths
    assert naive / elements_per_token("DeepSeek-V3", per_layer=True) > 71
    with pytest.raises(ValueError, match="not an MLA spec"):
        naive_mla_elements_per_token_per_layer("LLaMA-2-7B")


def test_mla_latent_cache_module_agrees():
    # the real MLA cache of one layer stores exactly d_c + d_h^R elements per token
    from dsv3_lessons.model.mla import LatentCache

    c = LatentCache(batch=1, max_len=4, kv_lora_rank=512, rope_dim=64, dtype=torch.bfloat16)
    c.append(torch.zeros(1, 3, 512), torch.zeros(1, 3, 64))
    assert c.nbytes_used == 3 * bytes_per_token("DeepSeek-V3", "bf16", per_layer=True) == 3 * 1152


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), context=st.integers(1, 2**20), batch=st.integers(1, 512),
       dtype=st.sampled_from(["bf16", "fp8", "fp32", "BF16"]))
def test_cache_bytes_is_linear(name, context, batch, dtype):
    per = bytes_per_token(name, dtype)
    assert cache_bytes(name, context, batch, dtype) == per * context * batch
    assert cache_bytes(name, 2 * context, batch, dtype) == 2 * cache_bytes(name, context, batch, dtype)
    assert 2 * cache_bytes(name, context, batch, "fp8") == cache_bytes(name, context, batch, "bf16")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), budget_gb=st.floats(0.5, 2000), batch=st.integers(1, 64))
def test_max_context_is_the_floor(name, budget_gb, batch):
    n = max_context(name, budget_gb * GB, batch)
    assert n * batch * bytes_per_token(name) <= budget_gb * GB
    assert (n + 1) * batch * bytes_per_token(name) > budget_gb * GB


def test_max_context_80gb_values():
    assert max_context("LLaMA-3.1-70B") == math.floor(80e9 / 327_680) == 244_140
    assert max_context("DeepSeek-V3") == 80 * GB // 70_272
    assert max_context("DeepSeek-V3", dtype="fp8") == 80 * GB // 35_136


def test_mla_what_if():
    v3 = mla_what_if()
    assert elements_per_token(v3) == elements_per_token("DeepSeek-V3")
    assert equivalent_gqa_groups(mla_what_if(2 * 8 * 128 - 64, 64)) == 8
    assert elements_per_token(mla_what_if(256, 32, 10)) == 288 * 10
    with pytest.raises(ValueError, match="qk_rope_head_dim must be a non-negative even"):
        mla_what_if(512, 63)
    with pytest.raises(ValueError, match="kv_lora_rank must be a positive integer"):
        mla_what_if(0, 64)


def test_report_numbers():
    r = kv_cache_report("LLaMA-3.1-405B", 131072, batch=2, dtype="bf16")
    assert r.bytes_per_token == 516_096
    assert r.total_bytes == 516_096 * 131072 * 2 and r.total_gb == r.total_bytes / 1e9
    assert not r.fits_budget and r.max_context_in_budget == 80 * GB // (2 * 516_096)
    assert r.mla.num_hidden_layers == 126 and r.mla_bytes_per_token == 576 * 126 * 2
    assert r.ratio_to_mla == (2 * 8 * 128) / 576
    assert r.ratio_to_deepseek_v3 == 516_096 / 70_272
    v3 = kv_cache_report("DeepSeek-V3", 4096, dtype="fp8")
    assert v3.ratio_to_mla == 1.0 and v3.bytes_per_token == 35_136 and v3.fits_budget
    text = format_report(kv_cache_report("deepseek-v3", 1024))
    assert "70.272 KB in BF16" in text and "the cache of 2.25 key/value heads of d_h = 128" in text
    # (256 + 32) / 256 = 1.125 exactly: the readout must not round it to 1.12
    what_if = format_report(kv_cache_report("Qwen2.5-72B", 32768, kv_lora_rank=256, rope_dim=32))
    assert "the cache of 1.125 key/value heads of d_h = 128" in what_if


def test_readout_uses_the_models_head_size_short_decimals_and_separators():
    """Learner review (ch00_01): the readout said "groups of 128" for Falcon-7B, whose heads are 64 wide; a typed
    d_c = 100 gave "0.640625 groups"; large caches had no thousands separators ("138538.47 GB")."""
    falcon = kv_cache_report("Falcon-7B", 131072)
    assert falcon.gqa_head_dim == 64 and falcon.mla_equivalent_gqa_groups == 576 / 128 == 4.5
    assert "the cache of 4.5 key/value heads of d_h = 64 per layer" in format_report(falcon)
    odd = format_report(kv_cache_report("LLaMA-2-7B", 131072, kv_lora_rank=100))
    assert "the cache of 0.641 key/value heads" in odd and "0.640625" not in odd     # (100 + 64) / 256
    huge = kv_cache_report("LLaMA-2-7B", 524288, batch=1024)
    assert huge.total_gb > 1000 and f"{huge.total_gb:,.2f} GB" in format_report(huge)
    for name in ("DeepSeek-V3", "Falcon-7B", "LLaMA-3.1-405B", "Qwen2.5-72B"):
        text = format_report(kv_cache_report(name, 524288, batch=1024, kv_lora_rank=2048, rope_dim=256))
        assert max(map(len, text.splitlines())) <= 100, text


def test_lookup_is_lenient_but_unknown_names_fail():
    assert load_model_config("qwen-2.5-72b").name == "Qwen2.5-72B"
    assert load_model_config("LLAMA-3.1-405B").num_hidden_layers == 126
    with pytest.raises(ValueError, match=r"unknown model 'GPT-9'.*DeepSeek-V3"):
        load_model_config("GPT-9")
    with pytest.raises(ValueError, match="unknown model"):
        kv_cache_report("GPT-9", 1024)


def test_bad_numbers_raise_clear_errors():
    with pytest.raises(ValueError, match="context must be a positive integer, got -5"):
        cache_bytes("DeepSeek-V3", -5)
    with pytest.raises(ValueError, match="context must be a positive integer"):
        kv_cache_report("DeepSeek-V3", 0)
    with pytest.raises(ValueError, match="context must be a positive integer"):
        cache_bytes("DeepSeek-V3", 1.5)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        cache_bytes("DeepSeek-V3", 10, batch=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        bytes_per_token("DeepSeek-V3", "int3")
    with pytest.raises(ValueError, match="budget_bytes must be a positive"):
        max_context("DeepSeek-V3", -1)
    with pytest.raises(ValueError, match="budget_gb must be a positive"):
        kv_cache_report("DeepSeek-V3", 1024, budget_gb=0)
    with pytest.raises(TypeError, match="spec must be"):
        elements_per_token(42)


def test_dtype_names():
    assert [dtype_bytes(d) for d in ("BF16", "bfloat16", "fp8", "FP32", "float16")] == [2, 2, 1, 4, 2]
    assert dtype_bytes(torch.bfloat16) == 2 and dtype_bytes(torch.float8_e4m3fn) == 1
    assert dtype_bytes(torch.float32) == 4


def test_spec_validation_names_the_problem():
    base = dict(name="x", num_hidden_layers=2, num_attention_heads=8, head_dim=64)
    with pytest.raises(ValueError, match="attention 'MHA' needs num_key_value_heads == num_attention_heads"):
        AttentionSpec(attention="MHA", num_key_value_heads=4, **base).validate()
    with pytest.raises(ValueError, match="attention 'GQA' needs 1 < num_key_value_heads"):
        AttentionSpec(attention="GQA", num_key_value_heads=1, **base).validate()
    with pytest.raises(ValueError, match="must divide"):
        AttentionSpec(attention="GQA", num_key_value_heads=3, **base).validate()
    with pytest.raises(ValueError, match="attention must be one of"):
        AttentionSpec(attention="SWA", num_key_value_heads=8, **base).validate()


def test_loading_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model config"):
        load_model_configs(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_model_configs(tmp_path)
    (tmp_path / "broken.json").write_text(json.dumps({"name": "m", "attention": "GQA", "num_hidden_layers": 4}))
    with pytest.raises(ValueError, match="broken.json: missing field 'num_attention_heads'"):
        load_model_configs(tmp_path)
    (tmp_path / "broken.json").unlink()
    good = json.loads((kc.CONFIG_DIR / "deepseek-v3.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(good))
    assert list(load_model_configs(tmp_path)) == ["DeepSeek-V3"]
    (tmp_path / "b.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="b.json: model name 'DeepSeek-V3' appears in two files"):
        load_model_configs(tmp_path)
