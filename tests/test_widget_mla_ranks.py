"""Chapter 2 widget, driven headless: set ``.value`` and check the new numbers and figure data."""
import pytest

from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b
from dsv3_lessons.course.plots import plot_mla_rank_costs
from dsv3_lessons.course.mla_steps import mla_rank_report
from dsv3_lessons.course.widgets.mla_ranks import mla_rank_widget

V3 = deepseek_v3_671b()


def _bars(fig, panel):
    return [p.get_height() for p in fig.axes[panel].patches]


def test_defaults_are_v3():
    w = mla_rank_widget()
    r = w.last_result
    assert r.variant.params_per_layer == count_parameters(V3).attention_per_layer
    assert r.variant.cache_bytes_per_token == V3.num_hidden_layers * (V3.kv_lora_rank + V3.qk_rope_head_dim) * 2
    assert r.variant == r.v3
    assert "70.272" in w.readout.value
    assert w.image.value[:4] == b"\x89PNG"


def test_moving_kv_rank_changes_cache_and_figure():
    w = mla_rank_widget()
    png_before = w.image.value
    w.kv_lora_rank.value = 256
    r = w.last_result
    assert r.kv_lora_rank == 256
    assert r.variant.cache_bytes_per_token == 61 * (256 + 64) * 2 == 39_040
    assert r.v3.cache_bytes_per_token == 70_272  # the reference column does not move
    assert "39.040" in w.readout.value
    assert _bars(w.figure, 2)[0] == pytest.approx(39.040)
    assert w.image.value != png_before
    # parameters drop by (512 - 256) * (d + 1 + n_h * (d_h + d_v)) (W^DKV rows, norm, W^UK/W^UV columns)
    drop = 256 * (V3.hidden_size + 1 + V3.num_attention_heads * (V3.qk_nope_head_dim + V3.v_head_dim))
    assert r.v3.params_per_layer - r.variant.params_per_layer == drop


def test_moving_q_rank_and_heads():
    w = mla_rank_widget()
    w.q_lora_rank.value = 768
    r = w.last_result
    per_q_dim = V3.hidden_size + 1 + V3.num_attention_heads * V3.qk_head_dim  # W^DQ row, norm, W^UQ/W^QR column
    assert r.v3.params_per_layer - r.variant.params_per_layer == 768 * per_q_dim
    assert r.v3.flops_per_token_per_layer - r.variant.flops_per_token_per_layer == 2 * 768 * (per_q_dim - 1)
    assert r.variant.cache_bytes_per_token == 70_272  # the query latent is never cached
    w.num_attention_heads.value = 64
    r = w.last_result
    assert r.mha.cache_elements_per_token_per_layer == 64 * (192 + 128)
    assert r.variant.cache_elements_per_token_per_layer == 576  # MLA's cache does not grow with heads
    assert _bars(w.figure, 0)[2] == pytest.approx(r.mha.params_per_layer / 1e6)
    assert "MHA (64 heads)" in w.readout.value


def test_plot_function_directly():
    r = mla_rank_report(1024, 128, 32)
    fig = plot_mla_rank_costs(r)
    assert len(fig.axes) == 3
    assert _bars(fig, 1) == pytest.approx([c.flops_per_token_per_layer / 1e6 for c in (r.variant, r.v3, r.mha)])


@pytest.mark.parametrize("kwargs", [{"kv_lora_rank": 5000}, {"q_lora_rank": 100}, {"num_attention_heads": 0}])
def test_bad_start_values_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        mla_rank_widget(**kwargs)


def test_sliders_recompute_on_release_only():
    # one update draws a 3-panel figure; recomputing on every drag tick would lag behind the mouse
    w = mla_rank_widget()
    assert all(s.continuous_update is False for s in (w.q_lora_rank, w.kv_lora_rank, w.num_attention_heads))
