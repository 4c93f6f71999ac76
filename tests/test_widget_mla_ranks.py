"""Chapter 2 widget, driven headless: set ``.value`` and check the new numbers and figure data."""
import pytest

from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b
from dsv3_lessons.course.ch02_mla.figures import plot_mla_rank_costs
from dsv3_lessons.course.ch02_mla.steps import mla_rank_report
from dsv3_lessons.course.ch02_mla.widget import mla_rank_widget

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


def test_axes_stay_fixed_while_sliders_move():
    # the review found the axes rescaling on every move, so the fixed V3 bar seemed to change height
    w = mla_rank_widget()
    before = [ax.get_ylim() for ax in w.figure.axes]
    v3_bars = [_bars(w.figure, p)[1] for p in range(3)]
    for name, value in (("kv_lora_rank", 2048), ("num_attention_heads", 256), ("q_lora_rank", 7168),
                        ("kv_lora_rank", 32), ("num_attention_heads", 8), ("q_lora_rank", 64)):
        getattr(w, name).value = value
        assert [ax.get_ylim() for ax in w.figure.axes] == before
        assert [_bars(w.figure, p)[1] for p in range(3)] == pytest.approx(v3_bars)
        for p, key in enumerate(("params", "flops", "cache")):   # every bar stays inside the fixed axes
            lo, hi = w.ylims[key]
            assert all(lo <= b < hi for b in _bars(w.figure, p))


def test_fixed_limits_cover_the_extreme_corner():
    from dsv3_lessons.course.ch02_mla.widget import fixed_axis_limits

    lim = fixed_axis_limits()
    # MHA with 256 heads at V3's other sizes (closed form): 2·d·n_h·192 + 2·d·n_h·128 parameters
    mha_params = (2 * 7168 * 256 * 192 + 2 * 7168 * 256 * 128) / 1e6
    assert mha_params < lim["params"][1] < 1.5 * mha_params
    # smallest cache: d_c = 32 -> 61·(32 + 64)·2 bytes
    assert lim["cache"][0] < 61 * (32 + 64) * 2 / 1e3


def test_labels_are_shown_in_full():
    w = mla_rank_widget()
    for slider, field in ((w.q_lora_rank, "q_lora_rank"), (w.kv_lora_rank, "kv_lora_rank"),
                          (w.num_attention_heads, "num_attention_heads")):
        assert f"({field})" in slider.description
        assert slider.description_allow_html and "<sub>" in slider.description   # d_c, d_c', n_h as HTML
        assert slider.style.description_width == "initial"
