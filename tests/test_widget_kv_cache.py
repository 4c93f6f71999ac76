"""KV-cache widget driven headless: set ``.value`` on the controls, check the numbers and the figure.

Expected numbers are closed-form (bytes/token × context × batch / 1e9) from the published configs,
not values copied from a run.
"""
import pytest
from traitlets import TraitError

from dsv3_lessons.course.ch01_kv_cache.kv_cache import GB, load_model_configs
from dsv3_lessons.course.ch01_kv_cache.figures import kv_mathtext
from dsv3_lessons.course.ch01_kv_cache.widget import kv_cache_widget

CONFIGS = load_model_configs()


def lines(w):
    return {ln.get_label().split(" (")[0]: ln for ln in w.figure.axes[0].get_lines()}


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
    assert set(CONFIGS) <= set(ls) and "80 GB accelerator" in ls
    assert list(ls["80 GB accelerator"].get_ydata()) == [80.0, 80.0]
    assert ls["DeepSeek-V3"].get_linewidth() > ls["LLaMA-2-7B"].get_linewidth()  # selected model highlighted


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
    marker = [ln for ln in w.figure.axes[0].get_lines() if ln.get_label().startswith("context")]
    assert len(marker) == 1 and list(marker[0].get_xdata()) == [2**19, 2**19]
    w.context.value = 1024
    assert w.last_result.total_bytes == 516_096 * 1024 and w.last_result.fits_budget


def test_batch_and_dtype_scale_every_line(w):
    w.model.value = "Qwen2.5-72B"
    w.context.value = 4096
    w.batch.value = 8
    ls = lines(w)
    xs = list(ls["Qwen2.5-72B"].get_xdata())
    assert list(ls["Qwen2.5-72B"].get_ydata()) == pytest.approx([per_token("Qwen2.5-72B") * c * 8 / GB for c in xs])
    assert w.last_result.total_bytes == 327_680 * 4096 * 8
    w.dtype.value = "fp8"
    ls = lines(w)
    assert w.last_result.bytes_per_token == 327_680 // 2 and w.last_result.dtype == "FP8"
    assert list(ls["Falcon-7B"].get_ydata()) == pytest.approx([per_token("Falcon-7B", 1) * c * 8 / GB for c in xs])
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
    what_if = lines(w)[kv_mathtext(r.mla.name)]
    assert what_if.get_linestyle() == "--"
    xs = list(what_if.get_xdata())
    assert list(what_if.get_ydata()) == pytest.approx([288 * 80 * 2 * c / GB for c in xs])
    assert "d_c 256 + d_h^R 32" in w.readout.value
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
    w.batch.value = -3  # the bounded box clamps instead of computing a negative cache
    assert w.batch.value == 1 and w.last_result.batch == 1
    # an error inside the arithmetic is shown in the readout AND raised, never swallowed
    w.budget_gb = -1.0
    with pytest.raises(ValueError, match="budget_gb must be a positive"):
        w.batch.value = 2
    assert "error" in w.readout.value and "budget_gb" in w.readout.value
    assert w.last_error is not None


def test_full_labels_and_fixed_axes():
    w = kv_cache_widget()
    for control in (w.model, w.context, w.batch, w.dtype, w.kv_lora_rank, w.rope_dim):
        assert control.style.description_width == "initial", control.description   # never cut off
    assert "kv_lora_rank" in w.kv_lora_rank.description and "qk_rope_head_dim" in w.rope_dim.description
    # paper symbols with real sub/superscripts (HTML descriptions), not the raw "d_h^R"
    assert w.kv_lora_rank.description_allow_html and w.rope_dim.description_allow_html
    assert "d<sub>c</sub>" in w.kv_lora_rank.description and "d<sub>h</sub><sup>R</sup>" in w.rope_dim.description
    assert all("^" not in c.description for c in (w.kv_lora_rank, w.rope_dim))
    ylim = w.figure.axes[0].get_ylim()
    for control, value in ((w.context, 2**19), (w.kv_lora_rank, 2048), (w.rope_dim, 256), (w.batch, 1024),
                           (w.dtype, "fp8"), (w.model, "Falcon-7B"), (w.kv_lora_rank, 32), (w.rope_dim, 0),
                           (w.batch, 1), (w.context, 1024)):
        control.value = value
        ax = w.figure.axes[0]
        assert ax.get_ylim() == pytest.approx(ylim)                # the axes never move
        lo, hi = ylim
        for ln in ax.get_lines():                                  # and every line stays inside them
            if ln.get_label().startswith("context"):
                continue                                           # the vertical marker spans the axes
            ys = [y for y in ln.get_ydata()]
            assert lo <= min(ys) and max(ys) <= hi, ln.get_label()


def test_deepseek_v3_line_is_visible_next_to_v2():
    w = kv_cache_widget(model="DeepSeek-V3")
    ls = {ln.get_label().split(" (")[0]: ln for ln in w.figure.axes[0].get_lines()}
    v3, v2 = ls["DeepSeek-V3"], ls["DeepSeek-V2"]
    assert (v3.get_linestyle(), v3.get_marker()) != (v2.get_linestyle(), v2.get_marker())
    assert "DeepSeek-V2" in v3.get_label() and "DeepSeek-V3" in v2.get_label()
