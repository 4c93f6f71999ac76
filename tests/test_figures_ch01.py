"""Chapter 1's mechanism figure (course.figures.ch01_heads): the head mapping it draws and that it renders.

Oracles: the GQA rule "query head i reads key/value head i // g" (Ainslie et al. 2023) evaluated by hand, the
published head counts in data/model_configs, and the cached widths 2·n_kv·d_h / d_c + d_h^R.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dsv3_lessons import tiny  # noqa: E402
from dsv3_lessons.course.ch01_kv_cache.attention import GroupedQueryAttention  # noqa: E402
from dsv3_lessons.course.ch01_kv_cache.figures import (HeadLayout, draw_kv_head_sharing, head_layout,  # noqa: E402
                                                    visible_slots)
from dsv3_lessons.course.ch01_kv_cache.kv_cache import load_model_configs  # noqa: E402

CONFIGS = load_model_configs()


def texts(fig):
    return [t for t in fig.axes[0].texts]


def check_slots(layout: HeadLayout):
    q, kv = visible_slots(layout)
    drawn = [h for h, _ in q if h != "…"]
    hidden = sum(n for h, n in q if h == "…")
    assert len(drawn) + hidden == layout.n_heads            # every query head drawn or counted
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)
    assert len(q) <= 16                                     # readable at notebook width
    if layout.kind != "MLA":
        g = layout.n_heads // layout.n_kv
        assert all(j == h // g for h, j in q if h != "…")   # the GQA rule
        kv_drawn = [j for j in kv if not isinstance(j, tuple)]
        kv_hidden = sum(j[1] for j in kv if isinstance(j, tuple))
        assert len(kv_drawn) + kv_hidden == layout.n_kv
        assert {j for h, j in q if h != "…"} == set(kv_drawn)
    return q, kv


@pytest.mark.parametrize("name", list(CONFIGS))
def test_real_sizes_draw_a_consistent_subset(name):
    check_slots(head_layout(CONFIGS[name]))


@pytest.mark.parametrize("n_h, n_kv", [(8, 8), (8, 2), (8, 1), (16, 4), (32, 32), (64, 8), (128, 8), (71, 1),
                                       (128, 128), (48, 3), (40, 2)])
def test_any_head_counts(n_h, n_kv):
    check_slots(HeadLayout("GQA" if 1 < n_kv < n_h else ("MHA" if n_kv == n_h else "MQA"), "x", n_h, n_kv, 64))


def test_small_layers_draw_every_head_and_the_rule():
    q, kv = check_slots(head_layout(GroupedQueryAttention(128, 8, 2)))
    assert q == [(i, i // 4) for i in range(8)] and kv == [0, 1]


def test_layout_from_each_source():
    v3 = head_layout(CONFIGS["DeepSeek-V3"])
    assert (v3.kind, v3.n_heads, v3.kv_lora_rank, v3.rope_dim) == ("MLA", 128, 512, 64)
    assert v3.cached_per_token_per_layer == 576
    llama = head_layout(CONFIGS["LLaMA-3.1-405B"])
    assert (llama.kind, llama.n_heads, llama.n_kv, llama.group_size, llama.cached_per_token_per_layer) == \
        ("GQA", 128, 8, 16, 2 * 8 * 128)
    cfg = tiny()
    t = head_layout(cfg, "tiny()")
    assert (t.kind, t.n_heads, t.kv_lora_rank, t.rope_dim) == \
        ("MLA", cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim)
    m = head_layout(GroupedQueryAttention(64, 4, 1))
    assert (m.kind, m.n_kv, m.head_dim, m.name) == ("MQA", 1, 16, "GroupedQueryAttention")


def test_bad_input():
    with pytest.raises(TypeError, match="AttentionSpec"):
        head_layout(object())
    with pytest.raises(ValueError, match="at least one"):
        draw_kv_head_sharing([])
    with pytest.raises(ValueError, match="must divide"):
        head_layout(HeadLayout("GQA", "bad", 8, 3, 16))


@pytest.mark.parametrize("which", ["real", "tiny"])
def test_figure_renders_with_computed_titles(which, tmp_path):
    if which == "real":
        items = [CONFIGS[n] for n in ("LLaMA-2-7B", "LLaMA-3.1-405B", "Falcon-7B", "DeepSeek-V3")]
    else:
        items = [GroupedQueryAttention(128, 8, n) for n in (8, 2, 1)] + [tiny()]
    fig = draw_kv_head_sharing(items)
    layouts = fig.layouts
    assert [x.kind for x in layouts] == ["MHA", "GQA", "MQA", "MLA"]
    words = [t.get_text() for t in texts(fig)]
    for lay in layouts:   # each panel states the cached elements per token and layer, computed
        assert any(t.startswith(lay.kind) and f"{lay.cached_per_token_per_layer:,} elements/token/layer" in t
                   for t in words), lay
    assert all(t.get_fontsize() >= 9 for t in texts(fig))
    assert fig.get_figwidth() >= 9.5 and fig.dpi >= 110
    fig.savefig(tmp_path / "f.png")
    # nothing drawn outside the canvas: every text's window extent lies inside the figure
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for t in texts(fig):
        e = t.get_window_extent(renderer)
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1, t.get_text()
    plt.close(fig)


def test_window_loss_plot():
    """The real-text experiment's figure: one point per window W on a log2 axis, references labelled inside the
    axes, and (with bytes_per_token) the cache of one sequence at each W under its tick."""
    import matplotlib.pyplot as plt

    from dsv3_lessons.course.ch01_kv_cache.figures import plot_window_losses

    windows, losses = (1, 2, 4, 8), (2.7, 2.6, 2.55, 2.54)
    fig = plot_window_losses(windows, losses, {"unigram entropy (held-out)": 3.3}, bytes_per_token=480)
    ax = fig.axes[0]
    curve = ax.lines[0]
    assert list(curve.get_xdata()) == list(windows) and list(curve.get_ydata()) == list(losses)
    assert ax.get_xscale() == "log" and ax.lines[1].get_ydata()[0] == 3.3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1\n480 B", "2\n960 B", "4\n1,920 B", "8\n3,840 B"]
    assert "nats" in ax.get_ylabel() and fig.get_figwidth() >= 9.5 and fig.dpi >= 110
    plt.close(fig)
    with pytest.raises(ValueError, match="equal length"):
        plot_window_losses((1, 2), (2.0,))
