"""Chapter 2's mechanism figure: computed labels for tiny and V3, cached/RoPE boxes marked, readable layout."""
import matplotlib

matplotlib.use("Agg")
import itertools

import pytest
import torch

from dsv3_lessons.course.ch02_mla.figures import draw_mla_data_path, mla_shapes
from dsv3_lessons.course.common.style import PALETTE
from dsv3_lessons.model.config import deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import MultiHeadLatentAttention

CONFIGS = {"tiny": tiny(), "v3": deepseek_v3_671b(), "odd": tiny(kv_lora_rank=24, qk_rope_head_dim=6, v_head_dim=12)}


def _texts(dg):
    return [t.get_text() for t in dg.ax.texts]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_widths_match_the_module(name):
    cfg = CONFIGS[name]
    with torch.device("meta"):
        mla = MultiHeadLatentAttention(cfg)
    s = mla_shapes(cfg)
    assert s["c^Q"] == mla.q_a_proj.weight.shape[0]
    assert s["c^KV"] + s["k^R"] == mla.kv_a_proj_with_mqa.weight.shape[0]
    assert s["heads"] * s["q"] == mla.q_b_proj.weight.shape[0]
    assert s["heads"] * (s["k^C"] + s["v^C"]) == mla.kv_b_proj.weight.shape[0]
    assert s["o_all"] == mla.o_proj.weight.shape[1]
    cache = mla.new_cache(1, 1)
    assert s["cached"] == cache.kv.shape[-1] + cache.k_pe.shape[-1]


def test_v3_labels_are_computed():
    dg = draw_mla_data_path(CONFIGS["v3"])
    text = "\n".join(_texts(dg))
    for piece in ("[7,168]", "[1,536]", "[512]", "[64]", "128+64 = 192", "512 + 64 = 576", "[16,384] → [7,168]",
                  "[1,536 × 7,168]", "i = 0 … 127", "n_h = 128"):
        assert piece in text + dg.ax.get_title(), piece


def test_tiny_labels_follow_the_config():
    cfg = CONFIGS["odd"]
    dg = draw_mla_data_path(cfg)
    text = "\n".join(_texts(dg))
    assert f"[{cfg.kv_lora_rank}]" in text and f"{cfg.kv_lora_rank} + 6 = {cfg.kv_lora_rank + 6}" in text
    assert f"[{cfg.v_head_dim}]" in text


@pytest.mark.parametrize("name", ["tiny", "v3"])
def test_cached_and_rope_boxes(name):
    dg = draw_mla_data_path(CONFIGS[name])
    assert {k for k, v in dg.kinds.items() if v == "cached"} == {"c^KV", "k^R"}
    assert dg.kinds["q^R"] == "rope" and dg.kinds["c^Q"] == "tensor"
    # k^R is both cached (outline) and rotated (fill); no other box is purple
    faces = {matplotlib.colors.to_hex(p.get_facecolor()) for p in dg.ax.patches}
    assert PALETTE["rope"] in faces
    legend = [t.get_text() for t in dg.ax.get_legend().get_texts()]
    assert "kept in the KV cache" in legend and "rotated by RoPE" in legend


@pytest.mark.parametrize("name", ["tiny", "v3"])
def test_readable_and_nothing_overlaps(name):
    dg = draw_mla_data_path(CONFIGS[name])
    fig = dg.fig
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert fig.get_size_inches()[0] == pytest.approx(10.0) and fig.dpi >= 110
    assert min(t.get_fontsize() for t in dg.ax.texts) >= 9
    fig_box = fig.bbox
    for t in dg.ax.texts:
        bb = t.get_window_extent(renderer)
        assert fig_box.x0 <= bb.x0 and bb.x1 <= fig_box.x1 and fig_box.y0 <= bb.y0 and bb.y1 <= fig_box.y1, t.get_text()
    boxes = list(dg.boxes.items())
    for (na, a), (nb, b) in itertools.combinations(boxes, 2):
        apart = abs(a.x - b.x) >= (a.w + b.w) / 2 or abs(a.y - b.y) >= (a.h + b.h) / 2
        assert apart, (na, nb)
    # each box's text fits inside its box
    checked = 0
    for t in dg.ax.texts:
        for name_, b in dg.boxes.items():
            if t.get_position() == (b.x, b.y):
                bb = t.get_window_extent(renderer).transformed(dg.ax.transData.inverted())
                assert bb.width <= b.w + 0.05 and bb.height <= b.h + 0.05, (name_, t.get_text())
                checked += 1
    assert checked == len(dg.boxes)
    # the legend sits below the drawing: inside the figure, clear of every box, arrow, text and the dashed
    # "for each head" frame (it used to cover the frame's top-right corner)
    legend = dg.ax.get_legend().get_window_extent(renderer)
    assert fig_box.x0 <= legend.x0 and legend.x1 <= fig_box.x1 and fig_box.y0 <= legend.y0
    assert len(dg.ax.patches) > len(dg.boxes)            # the frame and the arrows are checked too
    for p in dg.ax.patches:
        assert not legend.overlaps(p.get_window_extent(renderer)), p
    for t in dg.ax.texts:
        assert not legend.overlaps(t.get_window_extent(renderer)), t.get_text()
    matplotlib.pyplot.close(fig)


def test_config_without_query_latent_is_refused():
    with pytest.raises(ValueError, match="q_lora_rank"):
        draw_mla_data_path(tiny(q_lora_rank=None))
    with pytest.raises(ValueError, match="DeepseekV3Config"):
        mla_shapes({"hidden_size": 64})
