"""Chapter 3's mechanism figure (course/ch03_rope/figures.py): labels computed from the config, readable,
nothing cut off or overlapping, for the V3 and the tiny sizes.

Oracles: the config fields themselves (d_c, d_c', d_h, d_h^R, n_h, d) and the SPEC's 512 + 64 = 576 cached
elements per token and layer for V3.
"""
import dataclasses

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dsv3_lessons import deepseek_v3_671b, tiny  # noqa: E402
from dsv3_lessons.course.ch03_rope.figures import draw_rope_placement  # noqa: E402


@pytest.fixture(scope="module", params=["v3", "tiny"])
def drawn(request):
    cfg = deepseek_v3_671b() if request.param == "v3" else tiny()
    fig = draw_rope_placement(cfg)
    fig.canvas.draw()
    yield cfg, fig
    plt.close(fig)


def texts(fig):
    return [t for t in fig.axes[0].texts if t.get_text().strip()]


def test_labels_are_computed_from_the_config(drawn):
    cfg, fig = drawn
    words = " ".join(t.get_text() for t in texts(fig))
    for width in (cfg.kv_lora_rank, cfg.q_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.hidden_size):
        assert f"[{width}]" in words, width
    cached = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    assert f"= {cached} elements" in words and f"all {cfg.num_attention_heads} heads share" in words
    if cfg.kv_lora_rank == 512:
        assert "= 576 elements" in words                         # SPEC §2 for V3


def test_both_panels_and_the_blocked_fold_are_there(drawn):
    _, fig = drawn
    words = " ".join(t.get_text() for t in texts(fig))
    # the letters of the chapter's core argument: (b) RoPE on k^C blocks the fold, (c) decoupled (browser review)
    assert "(b) RoPE on the expanded key" in words and "(c) Decoupled RoPE" in words
    assert "(a)" not in words and "(d)" not in words
    assert "R_{j-t}" in words and "✗" in words                  # the rotation between W^UK and c^KV
    assert "folded into the query" in words
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["activation", "learned weight", "kept in the KV cache", "rotated by RoPE", "operation"]


def test_readable_and_inside_the_figure(drawn):
    _, fig = drawn
    assert fig.get_figwidth() == pytest.approx(10) and fig.dpi == 110
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    items = texts(fig) + list(fig.axes[0].get_legend().get_texts())
    for t in items:
        assert t.get_fontsize() >= 9, t.get_text()
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= fig_box.x0 - 1 and bb.x1 <= fig_box.x1 + 1, t.get_text()
        assert bb.y0 >= fig_box.y0 - 1 and bb.y1 <= fig_box.y1 + 1, t.get_text()


def test_no_two_texts_overlap(drawn):
    _, fig = drawn
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer).shrunk(0.97, 0.9)) for t in texts(fig)]
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    for i, (a, ba) in enumerate(boxes):
        assert not ba.overlaps(legend), a
        for b, bb in boxes[i + 1:]:
            assert not ba.overlaps(bb), (a, b)


def test_bad_config_is_named():
    fields = {f.name: getattr(tiny(), f.name) for f in dataclasses.fields(tiny())}
    no_query_latent = type("Cfg", (), dict(fields, q_lora_rank=None))()   # a config without c^Q
    with pytest.raises(ValueError, match="q_lora_rank"):
        draw_rope_placement(no_query_latent)


def test_free_text_does_not_sit_on_a_box(drawn):
    """Labels outside the boxes (annotations, arrow labels) must not cover a box (the first draft's
    "folded into the query" note ran over the q^C box)."""
    _, fig = drawn
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    patches = [p.get_window_extent(renderer) for p in ax.patches if type(p).__name__ == "FancyBboxPatch"]
    assert len(patches) >= 20
    for t in texts(fig):
        bb = t.get_window_extent(renderer)
        cx, cy = (bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2
        if any(p.contains(cx, cy) for p in patches):
            continue                                   # the label of that box
        for p in patches:
            assert not bb.shrunk(0.97, 0.85).overlaps(p), t.get_text()
