"""Tests of dsv3_lessons.course.ch04_mla_inference.decode (the four decode variants, cache bytes, closed-form FLOPs).

Oracles: absorbed/naive MLA and transformers' ``DeepseekV3Attention`` for the outputs; the cache
tensors themselves for byte counts, compared with the closed forms of V3 report §2.1.1 (576 and 40,960 elements
per token per layer at V3 sizes; 70,272 BF16 bytes per token over 61 layers, arXiv 2505.09343); torch's
``FlopCounterMode`` (counts every matmul actually executed) for :func:`decode_flops`.
No timing is asserted here -- ratios are measured in ``bench/mla_decode.py``.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import LatentCache
from dsv3_lessons.course.ch04_mla_inference.decode import (VARIANTS, PerHeadKVCache, attention_flops, build_mla,
                                                           decode_bytes_read, cache_elements_per_token,
                                                           context_latents, decode_flops, decode_weight_bytes,
                                                           expand_latent, flop_ratio, make_variants,
                                                           max_output_difference, per_head_forward,
                                                           time_decode_step, time_variants, v3_attention_config)

SLICE = dict(num_attention_heads=4, hidden_size=256)  # V3 per-head and latent widths, 4 heads


@pytest.fixture(scope="module", params=["tiny", "v3_slice"])
def setup(request):
    cfg = tiny() if request.param == "tiny" else v3_attention_config(**SLICE)
    mla = build_mla(cfg, seed=0)
    c_kv, k_pe = context_latents(mla, 37, batch=2, seed=1)
    x = torch.randn(2, 1, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    return cfg, mla, c_kv, k_pe, x


def test_variants_agree(setup):
    cfg, mla, c_kv, k_pe, x = setup
    variants = make_variants(mla, c_kv, k_pe)
    assert list(variants) == list(VARIANTS)
    with torch.inference_mode():
        ref = variants["absorb"].step(x)
    variants["absorb"].reset()
    assert ref.abs().max() > 1e-2  # non-trivial output
    diffs = max_output_difference(variants, x)
    assert set(diffs) == set(VARIANTS)
    assert max(diffs.values()) <= 1e-5, diffs


def test_cache_bytes_match_formula(setup):
    cfg, mla, c_kv, k_pe, x = setup
    variants = make_variants(mla, c_kv, k_pe)
    t = c_kv.shape[1]
    latent = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    per_head = cfg.num_attention_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)
    for name, var in variants.items():
        expected = per_head if name == "per_head" else latent
        assert var.cache_elements_per_token() == expected == cache_elements_per_token(cfg, name)
        assert var.cache_bytes == 2 * t * expected * 4  # batch 2, float32
    # reset really restores the context: a step appends one token, reset drops it
    with torch.inference_mode():
        variants["naive"].step(x)
    variants["naive"].reset()
    assert variants["naive"].cache_bytes == 2 * t * latent * 4


def test_v3_cache_elements_from_real_caches():
    """At V3 sizes (no weights needed): 576 vs 40,960 elements per token per layer, ratio 71.1."""
    cfg = deepseek_v3_671b()
    t = 3
    lat = LatentCache(1, t, cfg.kv_lora_rank, cfg.qk_rope_head_dim, dtype=torch.bfloat16)
    lat.append(torch.randn(1, t, cfg.kv_lora_rank), torch.randn(1, t, cfg.qk_rope_head_dim))
    ph = PerHeadKVCache(1, t, cfg.num_attention_heads, cfg.qk_head_dim, cfg.v_head_dim, dtype=torch.bfloat16)
    ph.append(torch.randn(1, cfg.num_attention_heads, t, cfg.qk_head_dim),
              torch.randn(1, cfg.num_attention_heads, t, cfg.v_head_dim))
    assert lat.nbytes_used // t == 576 * 2 == cache_elements_per_token(cfg, "absorb") * 2
    assert ph.nbytes_used // t == 40_960 * 2 == cache_elements_per_token(cfg, "per_head") * 2
    assert (lat.kv.numel() + lat.k_pe.numel()) // t == 576
    assert (ph.k.numel() + ph.v.numel()) // t == 40_960
    assert cfg.num_hidden_layers * lat.nbytes_used // t == 70_272  # arXiv 2505.09343: BF16, all 61 layers
    assert round(40_960 / 576, 2) == 71.11


@pytest.mark.parametrize("variant", VARIANTS)
def test_decode_flops_equal_counted_matmuls(variant):
    """The closed form equals the matmul FLOPs torch actually executes in one decode step."""
    cfg = v3_attention_config(**SLICE)
    mla = build_mla(cfg)
    t = 29
    c_kv, k_pe = context_latents(mla, t)
    var = make_variants(mla, c_kv, k_pe, names=(variant,))[variant]
    x = torch.randn(1, 1, cfg.hidden_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        var.step(x)
    assert counter.get_total_flops() == decode_flops(cfg, t, variant)["total"]


def test_v3_flop_ratio_about_90_at_4k():
    cfg = deepseek_v3_671b()
    naive, absorb = decode_flops(cfg, 4096, "naive"), decode_flops(cfg, 4096, "absorb")
    # hand count of the dominant terms: re-expanding 4097 latents vs attending over them in d_c space
    assert naive["expand"] == 2 * 512 * 128 * 256 * 4097
    assert absorb["attention"] == 2 * 128 * 4097 * (512 + 64 + 512)
    assert 88 < flop_ratio(cfg, 4096, "transformers") < 94
    assert flop_ratio(cfg, 4096, "transformers") == flop_ratio(cfg, 4096, "naive")
    assert decode_weight_bytes(cfg) == 187_107_328 * 4  # attention parameters per layer, released config


def test_per_head_prefill_decode_equals_full_forward():
    mla = build_mla(tiny(), seed=3)
    x = torch.randn(1, 9, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        full = mla(x, start_pos=0)
        cache = PerHeadKVCache(1, 9, 4, 24, 16)
        parts = [per_head_forward(mla, x[:, :5], 0, cache)]
        parts += [per_head_forward(mla, x[:, t:t + 1], t, cache) for t in range(5, 9)]
    assert (torch.cat(parts, 1) - full).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="start_pos=2 but the per-head cache holds 9"):
        per_head_forward(mla, x[:, :1], 2, cache)


def test_expand_latent_layout():
    mla = build_mla(tiny(), seed=5)
    c_kv, k_pe = context_latents(mla, 3)
    k, v = expand_latent(mla, c_kv, k_pe)
    w = mla.kv_b_proj.weight.view(4, 32, 32)  # per head: 16 key rows then 16 value rows
    assert torch.allclose(k[0, 2, 1, :16], w[2, :16] @ c_kv[0, 1], atol=1e-6)
    assert torch.allclose(v[0, 2, 1], w[2, 16:] @ c_kv[0, 1], atol=1e-6)
    assert torch.equal(k[0, 3, 1, 16:], k_pe[0, 1])  # the shared rope key, copied to every head


def test_context_latents_are_the_layer_latents_at_true_positions():
    mla = build_mla(tiny(), seed=6)
    c_kv, k_pe = context_latents(mla, 10, seed=7, chunk=4)
    gen = torch.Generator().manual_seed(7)
    for start in (0, 4, 8):
        n = min(4, 10 - start)
        h = torch.randn(1, n, 64, generator=gen)
        c, k = mla.latent(h, torch.arange(start, start + n))
        assert torch.equal(c_kv[:, start:start + n], c) and torch.equal(k_pe[:, start:start + n], k)


def test_time_variants_runs_and_restores(setup):
    cfg, mla, c_kv, k_pe, x = setup
    variants = make_variants(mla, c_kv, k_pe, names=("naive", "absorb"))
    calls, outs = [], {}
    times = time_variants(variants, x, repeats=2, warmup=1, on_step=calls.append, outputs=outs)
    assert calls == ["naive", "absorb"] * 3
    assert set(times) == {"naive", "absorb"} and all(v > 0 for v in times.values())
    assert (outs["naive"] - outs["absorb"]).abs().max() <= 1e-5
    assert all(v.cache_elements_per_token() * v.context * 2 == sum(t.numel() for t in v.cache_tensors())
               for v in variants.values())
    with pytest.raises(ValueError, match="repeats"):
        time_variants(variants, x, repeats=0)
    before = torch.get_num_threads()
    assert time_decode_step(variants["absorb"], x, repeats=1, warmup=0, threads=1) > 0
    assert torch.get_num_threads() == before  # the fixed thread count is restored
    with pytest.raises(ValueError, match="threads"):
        time_decode_step(variants["absorb"], x, threads=0)


def test_time_variants_estimators(setup, monkeypatch):
    """"min" returns the fastest timed step (the usual estimate of the work on a busy machine), "median" the
    middle one; an unknown estimator is refused by name."""
    import dsv3_lessons.course.ch04_mla_inference.decode as md
    cfg, mla, c_kv, k_pe, x = setup
    variants = make_variants(mla, c_kv, k_pe, names=("naive", "absorb"))
    steps = {"naive": [0.9, 0.2, 0.5, 0.7, 0.3], "absorb": [0.04, 0.05, 0.01, 0.08, 0.02]}
    monkeypatch.setattr(md, "_time_round_robin", lambda *a: {k: list(v) for k, v in steps.items()})
    assert time_variants(variants, x, repeats=5, estimator="min") == {"naive": 0.2, "absorb": 0.01}
    assert time_variants(variants, x, repeats=5) == {"naive": 0.5, "absorb": 0.04}
    assert time_decode_step(variants["absorb"], x, repeats=5, estimator="min") == 0.01
    with pytest.raises(ValueError, match="estimator must be one of"):
        time_variants(variants, x, estimator="mean")


def test_errors():
    mla = build_mla(tiny())
    c_kv, k_pe = context_latents(mla, 4)
    with pytest.raises(ValueError, match="unknown variant"):
        make_variants(mla, c_kv, k_pe, names=("flash",))
    with pytest.raises(ValueError, match="c_kv must be"):
        make_variants(mla, c_kv[..., :-1], k_pe)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        context_latents(mla, 0)
    with pytest.raises(ValueError, match="variant must be one of"):
        decode_flops(tiny(), 4, "mha")
    cache = PerHeadKVCache(1, 2, 4, 24, 16)
    with pytest.raises(ValueError, match="cache full"):
        cache.append(torch.zeros(1, 4, 3, 24), torch.zeros(1, 4, 3, 16))
    with pytest.raises(ValueError, match="k must be"):
        cache.append(torch.zeros(1, 4, 1, 24), torch.zeros(1, 4, 2, 16))


@pytest.mark.parametrize("impl", ["naive", "absorb"])
@pytest.mark.parametrize("queries,context", [(5, 0), (3, 4)])
def test_attention_flops_equal_counted_matmuls(impl, queries, context):
    """Prefill (context 0) and a chunk over a cache: the closed form = the matmul FLOPs torch executes."""
    cfg = v3_attention_config(**SLICE)
    mla = build_mla(cfg, seed=2)
    x = torch.randn(1, context + queries, cfg.hidden_size, generator=torch.Generator().manual_seed(3))
    cache = mla.new_cache(1, context + queries)
    with torch.inference_mode():
        if context:
            mla(x[:, :context], start_pos=0, cache=cache, attn_impl=impl)
        with FlopCounterMode(display=False) as counter:
            mla(x[:, context:], start_pos=context, cache=cache, attn_impl=impl)
    assert counter.get_total_flops() == attention_flops(cfg, queries, context, impl)["total"]


def test_prefill_is_cheaper_re_expanded_decode_is_cheaper_absorbed():
    """V3 sizes: absorption is a decode-time choice (hand count of the per-pair and per-token terms)."""
    cfg = deepseek_v3_671b()
    e = 2 * 512 * 128 * (128 + 128)                          # kv_b_proj on one token = the two folds of one query
    pair_naive, pair_absorb = 2 * 128 * (128 + 64 + 128), 2 * 128 * (512 + 64 + 512)
    for t in (1, 512, 4096):
        naive, absorb = attention_flops(cfg, t, 0, "naive"), attention_flops(cfg, t, 0, "absorb")
        assert naive["expand"] == absorb["absorb_folds"] == t * e
        assert naive["attention"] == t * t * pair_naive and absorb["attention"] == t * t * pair_absorb
        assert absorb["total"] > naive["total"]                # prefill: re-expanding always cheaper
        assert decode_flops(cfg, t, "absorb")["total"] < decode_flops(cfg, t, "naive")["total"]
    assert round(pair_absorb / pair_naive, 2) == 3.4
    assert decode_flops(cfg, 7, "per_head") == attention_flops(cfg, 1, 7, "per_head")
    with pytest.raises(ValueError, match="queries must be a positive integer"):
        attention_flops(cfg, 0, 3, "naive")
    with pytest.raises(ValueError, match="context must be a non-negative integer"):
        attention_flops(cfg, 1, -1, "naive")


def test_plot_decode_times():
    from dsv3_lessons.course.ch04_mla_inference.figures import plot_decode_times
    from dsv3_lessons.course.common.style import DPI, FIG_WIDTH

    fig = plot_decode_times([1, 2], {"naive": [1e-3, 2e-3], "absorb": [1e-3, 1e-3]},
                            {"per_head": [10, 20], "naive": [1, 2], "absorb": [1, 2]})
    assert len(fig.axes) == 2 and fig.dpi == DPI and fig.get_size_inches()[0] == FIG_WIDTH
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 2.0]  # milliseconds
    # coinciding latent-cache lines: the later one dashed and hollow, its label naming the one it hides
    lines = fig.axes[1].lines
    assert lines[1].get_linestyle() == "-" and lines[2].get_linestyle() != "-"
    assert lines[2].get_markerfacecolor() == "none"
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["per_head", "naive", "absorb (= naive)"]
    with pytest.raises(ValueError, match="2 contexts"):
        plot_decode_times([1, 2], {"a": [1e-3]})


def test_plot_decode_costs_and_tradeoff():
    from dsv3_lessons.course.ch04_mla_inference.figures import plot_absorb_tradeoff, plot_decode_costs

    fig = plot_decode_costs([1, 10], {"naive": [2e9, 4e9], "absorb": [1e9, 1e9]}, {"naive": [1e6, 2e6]})
    assert len(fig.axes) == 2 and list(fig.axes[0].lines[0].get_ydata()) == [2.0, 4.0]  # GFLOP
    assert list(fig.axes[1].lines[0].get_ydata()) == [1.0, 2.0]                          # MB
    fig = plot_absorb_tradeoff([1, 10], {"decode": [0.5, 0.1], "prefill": [2.0, 3.0]})
    assert [ln.get_label() for ln in fig.axes[0].lines[:2]] == ["decode", "prefill"]
    with pytest.raises(ValueError, match="1 values for 2 contexts"):
        plot_absorb_tradeoff([1, 10], {"decode": [0.5]})


def test_bench_script_smoke(capsys):
    """bench/mla_decode.py runs end to end at a toy size and prints the measured cache sizes."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "mla_decode.py"
    spec = importlib.util.spec_from_file_location("bench_mla_decode", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--contexts", "8", "16", "--repeats", "1", "--heads", "2", "--hidden", "64"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"per_head\s+640\s+2,560\s", out)      # 2 heads · (192 + 128) elements, 4 B each
    assert re.search(r"absorb\s+576\s+2,304\s", out)        # 512 + 64
    assert "per-head / MLA cache ratio: 1.11x" in out
    assert bench.main(["--contexts", "8", "--repeats", "1", "--heads", "2", "--hidden", "64", "--prefill", "16"]) == 0
    out = capsys.readouterr().out
    ratio = attention_flops(v3_attention_config(2, 64), 16, 0, "absorb")["total"] / \
        attention_flops(v3_attention_config(2, 64), 16, 0, "naive")["total"]
    assert re.search(r"prefill of 16 tokens .*naive [\d.]+, absorb [\d.]+; absorbed / naive: time [\d.]+x, "
                     rf"FLOPs {ratio:.2f}x", out)


def test_v3_absorbed_decode_costs_more_flops_and_fewer_bytes_than_per_head():
    """The chapter's verdict on "MLA cuts attention compute": per cached token, more FLOPs, 71x fewer bytes."""
    cfg = deepseek_v3_671b()
    per_token = {v: decode_flops(cfg, 4097, v)["total"] - decode_flops(cfg, 4096, v)["total"] for v in VARIANTS}
    assert per_token["absorb"] == 2 * 128 * (512 + 64 + 512) == 278_528
    assert per_token["per_head"] == 2 * 128 * (128 + 64 + 128) == 81_920
    assert per_token["absorb"] > per_token["per_head"]
    cache = {v: decode_bytes_read(cfg, 4096, v, bytes_per_element=2)["cache"] for v in ("per_head", "absorb")}
    assert cache["per_head"] / cache["absorb"] == 40_960 / 576


def test_chapter04_notebook_hygiene():
    """No timings typed into prose, no NBVAL comments, no bare True, timing cells tagged, exercises unattempted."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "04_mla_inference.ipynb").read_text())
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not re.search(r"\d\s*(ms|seconds?)\b|\d+(\.\d+)?\s*[x×]\s+faster", prose), "timings typed into the prose"
    assert not re.search(r"nbval|pytest|\btests?\b", prose, re.I), "test tooling named in the prose"
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for c in code_cells:
        src = "".join(c["source"])
        assert "NBVAL" not in src
        for out in c.get("outputs", []):
            assert "".join(out.get("data", {}).get("text/plain", "")).strip() != "True"
        if "perf_counter" in src or "time_variants" in src or "plot_decode_times" in src:
            assert "nbval-ignore-output" in c["metadata"].get("tags", []), src[:60]
    exercises = [c for c in code_cells if "check_" in "".join(c["source"]) and "___" in "".join(c["source"])]
    assert len(exercises) >= 3
    for c in exercises:
        text = "".join("".join(o.get("text", "")) for o in c["outputs"])
        assert "not attempted yet" in text and "✓" not in text
