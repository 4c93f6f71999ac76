"""Chapter 04's mechanism figure: drawn from a config, labels computed, both sizes render at notebook width."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from dsv3_lessons.course.ch04_mla_inference.figures import (absorbed_decode_labels, draw_absorbed_decode)  # noqa: E402
from dsv3_lessons.course.common.style import DPI, FIG_WIDTH  # noqa: E402
from dsv3_lessons.model.config import deepseek_v3_671b, tiny  # noqa: E402


def _texts(dg):
    return [t.get_text() for t in dg.ax.texts] + [dg.ax.get_title()]


def test_v3_labels_are_the_papers_sizes():
    lab = absorbed_decode_labels(deepseek_v3_671b())
    # V3 report §2.1.1 / SPEC §2: one shared key of d_c + d_h^R = 576, value c^KV of d_c = 512
    assert lab["key"] == "576" and lab["value"] == "512"
    assert lab["q_tilde"] == "128 × 512" and lab["o_heads"] == "128 × 128" and lab["h"] == "7,168"


def test_draw_v3_and_tiny(tmp_path):
    import matplotlib.pyplot as plt

    for cfg in (deepseek_v3_671b(), tiny()):
        dg = draw_absorbed_decode(cfg)
        key = cfg.kv_lora_rank + cfg.qk_rope_head_dim
        texts = " ".join(_texts(dg))
        assert f"{key} wide" in texts and f"{cfg.num_attention_heads} × {cfg.kv_lora_rank}" in texts
        assert {"cache_c", "cache_r", "fold", "q_tilde", "w_uv", "attention"} <= set(dg.boxes)
        assert "cached" in dg.kinds_used and "rope" in dg.kinds_used
        w, _ = dg.fig.get_size_inches()
        assert w == FIG_WIDTH and dg.fig.dpi == DPI
        assert min(t.get_fontsize() for t in dg.ax.texts) >= 9
        # everything drawn stays inside the canvas (nothing cut off)
        dg.fig.canvas.draw()
        renderer = dg.fig.canvas.get_renderer()
        fig_box = dg.fig.bbox
        for t in dg.ax.texts:
            bb = t.get_window_extent(renderer)
            assert bb.x0 >= fig_box.x0 - 1 and bb.x1 <= fig_box.x1 + 1, t.get_text()
        dg.fig.savefig(tmp_path / f"ch04_{cfg.num_attention_heads}.png")
        plt.close(dg.fig)


def test_bad_config():
    with pytest.raises(ValueError, match="cfg must be a DeepseekV3Config"):
        draw_absorbed_decode({"kv_lora_rank": 512})
