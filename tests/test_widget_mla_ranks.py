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
    assert "MHA, 64 heads" in w.readout.value and "64 heads" not in w.readout.value.split("\n")[0].replace(
        "MHA, 64 heads", "")
    assert "$n_h$ = 64" in w.figure._suptitle.get_text()


def test_plot_function_directly():
    r = mla_rank_report(1024, 128, 32)
    fig = plot_mla_rank_costs(r)
    assert len(fig.axes) == 3
    assert _bars(fig, 1) == pytest.approx([c.flops_per_token_per_layer / 1e6 for c in (r.variant, r.v3, r.mha)])


@pytest.mark.parametrize("kwargs", [{"kv_lora_rank": 5000}, {"q_lora_rank": 10}, {"num_attention_heads": 0},
                                    {"q_lora_rank": 1000.5}, {"kv_lora_rank": True}])
def test_bad_start_values_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        mla_rank_widget(**kwargs)


def test_off_step_width_is_computed_as_typed():
    """Learner report: 1000 typed into the q_lora_rank readout (step 64) is kept by JupyterLab; the numbers are
    then computed for 1000 (a closed form, checked against the parameter count of that config)."""
    from dsv3_lessons.model.config import deepseek_v3_671b

    w = mla_rank_widget(q_lora_rank=1000)
    r = w.last_result
    assert w.q_lora_rank.value == 1000 and r.q_lora_rank == 1000
    v3 = deepseek_v3_671b()
    d, n_h, qk = v3.hidden_size, v3.num_attention_heads, v3.qk_nope_head_dim + v3.qk_rope_head_dim
    q_part = d * 1000 + 1000 + 1000 * n_h * qk                      # W^DQ, q_a_layernorm, W^UQ;W^QR
    q_part_v3 = d * 1536 + 1536 + 1536 * n_h * qk
    assert r.variant.params_per_layer - r.v3.params_per_layer == q_part - q_part_v3


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
        assert slider.style.description_width == "initial"
        # the widget manager's sanitizer strips <sub>/<sup> (the browser review saw "dc"); TeX is typeset instead
        assert "<sub>" not in slider.description and not slider.description_allow_html


def test_one_notation_per_symbol():
    """Browser review item 3: the label said dc′, the readout d_c', the title $d'_c$. Now the label and the figure
    title write the same TeX, and the readout names the config fields the labels carry in brackets."""
    w = mla_rank_widget()
    title = w.figure._suptitle.get_text()
    for slider, tex, field in ((w.q_lora_rank, "$d_c'$", "q_lora_rank"), (w.kv_lora_rank, "$d_c$", "kv_lora_rank"),
                               (w.num_attention_heads, "$n_h$", "num_attention_heads")):
        assert tex in slider.description and tex in title
        assert field in slider.description
    text = w.readout.value
    assert "q_lora_rank = 1536" in text and "kv_lora_rank = 512" in text
    assert not any(x in text for x in ("d_c", "dc", "n_h"))              # no third spelling of the symbols


def test_mha_column_is_named_by_its_widths():
    """Expert review: the MHA column is an MHA at V3's decompressed widths (40,960 = 128·(192 + 128) elements),
    not chapter 1's 2·n_h·d_h = 32,768; the readout says so and gives both."""
    w = mla_rank_widget()
    r = w.last_result
    assert r.mha.cache_elements_per_token_per_layer == 128 * (192 + 128) == 40_960
    text = w.readout.value
    assert "(q/k 192, v 128)" in text and "2 x 128 heads x 128 = 32,768" in text
    assert [t.get_text() for t in w.figure.axes[0].get_xticklabels()][2] == "MHA\n192/128"
    assert "keys 192 wide" in w.figure._suptitle.get_text()


def test_corner_sweep_finite():
    """Robustness: every min/max corner of the three sliders gives finite, positive numbers and a PNG."""
    import itertools
    import math

    from dsv3_lessons.course.ch02_mla.widget import _RANGES

    w = mla_rank_widget()
    names = ("q_lora_rank", "kv_lora_rank", "num_attention_heads")
    for corner in itertools.product(*[(_RANGES[n][0], _RANGES[n][1]) for n in names]):
        r = mla_rank_report(*corner)                         # the plain function
        for cost in (r.variant, r.v3, r.mha):
            for value in (cost.params_per_layer, cost.flops_per_token_per_layer, cost.cache_bytes_per_token):
                assert math.isfinite(value) and value > 0
        for name, value in zip(names, corner):              # and the widget, driven to the same corner
            getattr(w, name).value = value
        assert w.last_error is None and w.last_result.variant == r.variant
        assert w.image.value[:4] == b"\x89PNG"
        assert all(math.isfinite(b) for p in range(3) for b in _bars(w.figure, p))


def test_update_moves_bars_and_labels_in_place():
    """The widget keeps one figure: its bars, number labels and title follow the sliders; the picture it sends is
    the same as a full redraw of that figure."""
    import io

    import numpy as np
    from PIL import Image

    w = mla_rank_widget()
    fig = w.figure
    w.kv_lora_rank.value = 256
    assert w.figure is fig
    labels = [t for t in fig.axes[2].texts]
    assert [t.get_text() for t in labels][0] == "39.0" and labels[0].xyann[1] == pytest.approx(39.040)
    blit = np.asarray(Image.open(io.BytesIO(w.image.value)).convert("RGB"), dtype=float)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    full = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=float)
    assert blit.shape == full.shape and np.abs(blit - full).mean() < 1.0   # the same picture
