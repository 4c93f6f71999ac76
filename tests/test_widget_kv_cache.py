"""KV-cache widget driven headless: set ``.value`` on the controls, check the numbers and the figure.

Expected numbers are closed-form (bytes/token × context × batch / 1e9) from the published configs,
not values copied from a run. The figure shows the cache of ONE sequence (lines that depend only on the dtype)
and the accelerator's budget per sequence (80 GB / batch).
"""
import itertools
import math

import numpy as np
import pytest
from traitlets import TraitError

from dsv3_lessons.course.ch01_kv_cache.kv_cache import GB, load_model_configs
from dsv3_lessons.course.ch01_kv_cache.figures import kv_mathtext
from dsv3_lessons.course.ch01_kv_cache.widget import LABELS, kv_cache_widget, readout_html

CONFIGS = load_model_configs()


def lines(w):
    return {name: ln for name, ln in w.plot.lines.items()}


def per_token(name, dtype_bytes=2):
    s = CONFIGS[name]
    if s.attention == "MLA":
        per_layer = s.kv_lora_rank + s.qk_rope_head_dim
    else:
        per_layer = 2 * s.num_key_value_heads * s.head_dim
    return per_layer * s.num_hidden_layers * dtype_bytes


@pytest.fixture(scope="module")
def w():
    return kv_cache_widget()


def test_initial_state(w):
    r = w.last_result
    assert (r.model, r.context, r.batch, r.dtype) == ("DeepSeek-V3", 131072, 1, "BF16")
    assert r.total_bytes == 70_272 * 131072
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "70.272 KB" in w.readout.value
    ls = lines(w)
    assert set(CONFIGS) == set(ls)
    assert list(w.plot.budget_line.get_ydata()) == [80.0, 80.0]
    assert "80 GB accelerator / batch 1 = 80 GB per sequence" == w.plot.budget_text.get_text()
    assert ls["DeepSeek-V3"].get_linewidth() > ls["LLaMA-2-7B"].get_linewidth()  # selected model highlighted
    assert repr(w) == "[KVCacheWidget: run this cell to use the widget]"


def test_model_picker_changes_numbers_and_highlight(w):
    before = w.image.value
    w.model.value = "LLaMA-3.1-405B"
    r = w.last_result
    assert r.bytes_per_token == 516_096 == per_token("LLaMA-3.1-405B")
    assert r.total_gb == 516_096 * 131072 / GB
    assert "516.096 KB" in w.readout.value and "LLaMA-3.1-405B" in w.readout.value
    assert r.ratio_to_deepseek_v3 == 516_096 / 70_272
    ls = lines(w)
    assert ls["LLaMA-3.1-405B"].get_linewidth() > ls["DeepSeek-V3"].get_linewidth()
    assert w.image.value != before


def test_context_slider_moves_marker_and_total(w):
    w.model.value = "LLaMA-3.1-405B"
    w.context.value = 2**19
    r = w.last_result
    assert r.total_bytes == 516_096 * 2**19 and not r.fits_budget
    assert r.max_context_in_budget == 80 * GB // 516_096
    assert list(w.plot.marker_line.get_xdata()) == [2**19, 2**19] and w.plot.marker_line.get_visible()
    w.context.value = 1024
    assert w.last_result.total_bytes == 516_096 * 1024 and w.last_result.fits_budget


def test_batch_moves_the_budget_line_and_dtype_scales_every_line(w):
    w.model.value = "Qwen2.5-72B"
    w.context.value = 4096
    w.batch.value = 8
    ls = lines(w)
    xs = list(ls["Qwen2.5-72B"].get_xdata())
    # one sequence per line: the batch does not move the lines, it moves the budget (80 GB / 8 per sequence)
    assert list(ls["Qwen2.5-72B"].get_ydata()) == pytest.approx([per_token("Qwen2.5-72B") * c / GB for c in xs])
    assert list(w.plot.budget_line.get_ydata()) == [10.0, 10.0]
    assert w.last_result.total_bytes == 327_680 * 4096 * 8
    w.dtype.value = "fp8"
    ls = lines(w)
    assert w.last_result.bytes_per_token == 327_680 // 2 and w.last_result.dtype == "FP8"
    assert list(ls["Falcon-7B"].get_ydata()) == pytest.approx([per_token("Falcon-7B", 1) * c / GB for c in xs])
    assert w.plot.dtype_text.get_text().startswith("cache in FP8")
    w.dtype.value = "bf16"
    w.batch.value = 1


def test_mla_what_if_sliders(w):
    w.model.value = "LLaMA-3.1-70B"
    w.context.value = 131072
    w.kv_lora_rank.value = 256
    w.rope_dim.value = 32
    r = w.last_result
    assert (r.mla.kv_lora_rank, r.mla.qk_rope_head_dim, r.mla.num_hidden_layers) == (256, 32, 80)
    assert r.mla_bytes_per_token == (256 + 32) * 80 * 2
    assert r.ratio_to_mla == (2 * 8 * 128) / (256 + 32)
    assert r.mla_equivalent_gqa_groups == 288 / 256
    # the legend writes the symbols as mathtext ($d_c$, $d_h^R$), never the raw "d_h^R"
    assert kv_mathtext(r.mla.name) == "MLA $d_c$=256, $d_h^R$=32, 80 layers"
    texts = [t.get_text() for t in w.plot.legend_now.get_texts()]
    assert "what-if MLA $d_c$=256, $d_h^R$=32, 80 layers" in texts
    what_if = w.plot.what_if_line
    assert what_if.get_linestyle() == "--" and what_if.get_visible()
    xs = list(what_if.get_xdata())
    assert list(what_if.get_ydata()) == pytest.approx([288 * 80 * 2 * c / GB for c in xs])
    # the readout types the same symbols as the labels and the figure: d<sub>c</sub>, d<sub>h</sub><sup>R</sup>
    assert "<i>d</i><sub>c</sub> 256 + <i>d</i><sub>h</sub><sup>R</sup> 32" in w.readout.value
    assert "d_c" not in w.readout.value and "d_h^R" not in w.readout.value
    # back to V3's sizes: the what-if MLA with 80 layers caches 576 per layer
    w.kv_lora_rank.value, w.rope_dim.value = 512, 64
    assert w.last_result.ratio_to_mla == 2048 / 576


def test_bad_input():
    with pytest.raises(ValueError, match="unknown model 'GPT-9'"):
        kv_cache_widget(model="GPT-9")
    with pytest.raises(ValueError, match="context must be one of"):
        kv_cache_widget(context=-4096)
    with pytest.raises(ValueError, match="dtype must be one of"):
        kv_cache_widget(dtype="int4")
    w = kv_cache_widget(model="Falcon-7B", context=2048)
    with pytest.raises(TraitError):
        w.context.value = 3000  # not one of the slider's powers of two
    with pytest.raises(TraitError):
        w.model.value = "GPT-9"
    with pytest.raises(TraitError):
        w.batch.value = 3  # a slider over powers of two: no value outside them (the browser review typed "2.5")
    with pytest.raises(ValueError, match="batch must be one of"):
        kv_cache_widget(batch=25)
    assert w.batch.value == 1 and w.last_result.batch == 1
    # an error inside the arithmetic is shown in the readout AND raised, never swallowed
    w.budget_gb = -1.0
    with pytest.raises(ValueError, match="budget_gb must be a positive"):
        w.batch.value = 2
    assert "error" in w.readout.value and "budget_gb" in w.readout.value
    assert w.last_error is not None


def test_labels_render_maths_in_one_column():
    """Browser review items 3 and 11: a control's HTML description lost its <sub>/<sup> ("dc", "dhR"), and toggle
    buttons put their label on a line of their own. Every control now has no description and sits beside an
    HTMLMath label of one fixed width (the same x for every control); the symbols are TeX."""
    import ipywidgets as widgets

    w = kv_cache_widget()
    controls = {"model": w.model, "context": w.context, "batch": w.batch, "dtype": w.dtype,
                "kv_lora_rank": w.kv_lora_rank, "rope_dim": w.rope_dim}
    rows = w.children[:len(controls)]
    for (name, control), row in zip(controls.items(), rows):
        assert isinstance(row, widgets.HBox) and row.children == (w.labels[name], control), name
        assert isinstance(w.labels[name], widgets.HTMLMath) and control.description == ""
        assert w.labels[name].layout.width == rows[0].children[0].layout.width
    assert "$d_c$" in LABELS["kv_lora_rank"] and "kv_lora_rank" in LABELS["kv_lora_rank"]
    assert "$d_h^R$" in LABELS["rope_dim"] and "qk_rope_head_dim" in LABELS["rope_dim"]
    assert readout_html("d_c 512 + d_h^R 64 <") == ("<pre style='margin:0.2em 0'><i>d</i><sub>c</sub> 512 + "
                                                    "<i>d</i><sub>h</sub><sup>R</sup> 64 &lt;</pre>")


def test_axes_fixed_and_every_line_inside_them():
    w = kv_cache_widget()
    ylim = w.figure.axes[0].get_ylim()
    for control, value in ((w.context, 2**19), (w.kv_lora_rank, 2048), (w.rope_dim, 256), (w.batch, 1024),
                           (w.dtype, "fp8"), (w.model, "Falcon-7B"), (w.kv_lora_rank, 32), (w.rope_dim, 0),
                           (w.batch, 1), (w.context, 1024)):
        control.value = value
        ax = w.figure.axes[0]
        assert ax.get_ylim() == pytest.approx(ylim)                # the axes never move
        lo, hi = ylim
        for ln in [*w.plot.lines.values(), w.plot.what_if_line, w.plot.budget_line]:
            ys = list(ln.get_ydata())
            assert lo <= min(ys) and max(ys) <= hi, ln.get_label()


def _corner_settings(w):
    """Every min/max combination of the widget's controls (model: the smallest and the largest cache)."""
    models = [list(CONFIGS)[-1], list(CONFIGS)[0]]
    return itertools.product(models, (w.context.options[0][1], w.context.options[-1][1]), (w.batch.options[0][1], w.batch.options[-1][1]),
                             ("bf16", "fp8"), (w.kv_lora_rank.min, w.kv_lora_rank.max),
                             (w.rope_dim.min, w.rope_dim.max))


def test_corner_sweep_plain_function_and_widget():
    """Robustness (issue 18): the plain function at every corner of the controls gives finite numbers, and the
    widget shows them without an exception; no line crosses the corner legend (the docstring's promise)."""
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import kv_cache_report

    w = kv_cache_widget()
    fig = w.figure
    n = 0
    for model, context, batch, dtype, d_c, rope in _corner_settings(w):
        r = kv_cache_report(model, context, batch, dtype, d_c, rope)
        numbers = [r.bytes_per_token, r.total_bytes, r.total_gb, r.max_context_in_budget, r.mla_bytes_per_token,
                   r.mla_total_gb, r.ratio_to_mla, r.ratio_to_deepseek_v3, r.mla_equivalent_gqa_groups]
        assert all(math.isfinite(x) and x >= 0 for x in numbers), (model, context, batch, dtype, d_c, rope)
        w.model.value, w.context.value, w.batch.value = model, context, batch
        w.dtype.value, w.kv_lora_rank.value, w.rope_dim.value = dtype, d_c, rope
        assert w.last_error is None and w.last_result.total_bytes == r.total_bytes
        renderer = fig.canvas.get_renderer()
        box = w.plot.legend_now.get_window_extent(renderer)
        ax = fig.axes[0]
        for ln in [*w.plot.lines.values(), w.plot.what_if_line]:
            pts = ax.transData.transform(np.column_stack([ln.get_xdata(), ln.get_ydata()]))
            # the segments between markers too: sample each segment in log space
            xs, ys = np.log(np.asarray(ln.get_xdata(), float)), np.log(np.asarray(ln.get_ydata(), float))
            fine = np.column_stack([np.exp(np.interp(np.linspace(0, len(xs) - 1, 200), range(len(xs)), xs)),
                                    np.exp(np.interp(np.linspace(0, len(ys) - 1, 200), range(len(ys)), ys))])
            pts = np.vstack([pts, ax.transData.transform(fine)])
            inside = (pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)
            assert not inside.any(), (ln.get_label(), model, context, batch, dtype, d_c, rope)
        n += 1
    assert n == 64


def test_deepseek_v3_line_is_visible_next_to_v2():
    w = kv_cache_widget(model="DeepSeek-V3")
    ls = lines(w)
    v3, v2 = ls["DeepSeek-V3"], ls["DeepSeek-V2"]
    assert (v3.get_linestyle(), v3.get_marker(), v3.get_fillstyle()) != \
        (v2.get_linestyle(), v2.get_marker(), v2.get_fillstyle())
    assert "DeepSeek-V2" in v3.get_label() and "DeepSeek-V3" in v2.get_label()


def test_blitted_png_equals_a_full_redraw():
    """The widget draws the static parts once and the lines and corner legend per update (blitting); its PNG must
    show what a full redraw of the same figure shows."""
    import io

    from PIL import Image

    w = kv_cache_widget(model="Qwen2.5-72B", batch=16, dtype="fp8", kv_lora_rank=1024)
    blitted = np.asarray(Image.open(io.BytesIO(w.image.value)).convert("RGB"), dtype=int)
    for artist in w.plot._dynamic:
        artist.set_animated(False)
    buf = io.BytesIO()
    w.figure.savefig(buf, format="png", dpi=w.figure.dpi)
    full = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=int)
    assert blitted.shape == full.shape
    assert np.abs(blitted - full).max() <= 8 and (np.abs(blitted - full) > 0).mean() < 0.002
