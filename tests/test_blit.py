"""The shared blitting renderer (dsv3_lessons.course.common.blit.BlitRenderer). Oracle: a full render of the same
figure (``savefig`` at the figure's dpi) -- the blitted PNG must have exactly its pixels, after every update."""
import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from dsv3_lessons.course.common.blit import BlitRenderer


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _full(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return _pixels(buf.getvalue())


class _Plot:
    """Two axes with log ticks, mathtext labels and a legend (the static part), and what a widget moves: bars,
    a line, their number labels, an axes title (placed automatically at every draw), an axis label, an axes legend
    and a figure-level title. The moving artists sit above every
    static one (zorder), so a full draw also paints them last and the pictures can be compared pixel for pixel."""

    def __init__(self):
        self.fig = Figure(figsize=(6, 3), dpi=72)
        self.fig.subplots_adjust(left=0.12, right=0.97, bottom=0.18, top=0.8, wspace=0.35)
        a1, a2 = self.fig.subplots(1, 2)
        self.bars = list(a1.bar([0, 1, 2], [1, 2, 3], color=["C0", "C1", "C2"], zorder=3))
        self.labels = [a1.text(i, 0.5, "", ha="center", zorder=4) for i in range(3)]
        a1.set_ylim(0, 10)
        a1.set_xticks([0, 1, 2], ["$d_c$", "$d_h^R$", "MHA"])
        self.axes_title = a1.set_title(" ")
        self.line, = a2.plot([1, 10, 100], [1, 1, 1], color="C3", label="moving", zorder=3)
        a2.plot([1, 10, 100], [2, 20, 200], color="0.6", label="static")
        a2.set_xscale("log")
        a2.set_yscale("log")
        a2.set_ylim(0.1, 1e4)
        a2.set_title("static title")
        self.xlabel = a2.xaxis.label
        self.legend = a2.legend(loc="upper left")
        self.legend.set_zorder(6)
        self.title = self.fig.suptitle("")
        self.dynamic = [*self.bars, *self.labels, self.axes_title, self.xlabel, self.line, self.legend, self.title]

    def update(self, k: int) -> None:
        for i, (bar, label) in enumerate(zip(self.bars, self.labels)):
            h = 1 + (3 * k + 2 * i) % 8
            bar.set_height(h)
            label.set_y(h + 0.2)
            label.set_text(f"{h:.1f}")
        self.bars[2].set_visible(k % 3 != 1)            # a hidden artist is hidden in both pictures
        self.line.set_ydata([1 + k, 10 * (k + 1), 5 + k])
        self.legend.get_texts()[0].set_text(f"moving, step {k}")
        self.title.set_text(f"update {k}: " + ("$\\theta_i$" if k % 2 else "no maths"))
        self.axes_title.set_text(f"bars of step {k}")
        self.xlabel.set_text(f"distance (step {k})")


def test_blitted_png_equals_a_full_render_after_every_update():
    plot = _Plot()
    blit = BlitRenderer(plot.fig, plot.dynamic)
    for k in range(6):
        plot.update(k)
        fast = _pixels(blit.png())
        full = _full(plot.fig)                           # savefig draws the whole figure, moving artists included
        assert fast.shape == full.shape and np.array_equal(fast, full), k
    assert not any(a.get_animated() for a in plot.dynamic)   # ordinary artists: nothing hidden from savefig
    for artist in plot.dynamic:                            # and the moving artists are really in both pictures
        artist.set_visible(False)
    assert not np.array_equal(_full(plot.fig), fast)


def test_backgrounds_per_key_follow_a_changing_static_part():
    """A static part with a few states (a static line's data here) keeps one background per state."""
    plot = _Plot()
    static = plot.fig.axes[1].lines[1]
    blit = BlitRenderer(plot.fig, plot.dynamic, max_backgrounds=2)
    for k, state in enumerate(["a", "b", "a", "c", "b"]):
        static.set_ydata({"a": [2, 20, 200], "b": [3, 3, 3], "c": [100, 10, 1]}[state])
        plot.update(k)
        assert np.array_equal(_pixels(blit.png(key=state)), _full(plot.fig)), (k, state)
    assert list(blit._backgrounds) == ["c", "b"]          # the two most recently used
    static.set_ydata([7, 7, 7])                            # changed without a new key: refresh, then it shows
    blit.refresh("b")
    assert np.array_equal(_pixels(blit.png(key="b")), _full(plot.fig))


def test_png_is_at_the_figure_dpi_and_the_compress_level_changes_only_the_size():
    plot = _Plot()
    plot.update(1)
    stored, small = BlitRenderer(plot.fig, plot.dynamic, 0).png(), BlitRenderer(plot.fig, plot.dynamic, 9).png()
    assert _pixels(small).shape == (3 * 72, 6 * 72, 4) and np.array_equal(_pixels(stored), _pixels(small))
    assert len(small) < len(stored) / 4                    # level 0 stores the pixels uncompressed
    assert Image.open(io.BytesIO(small)).mode == "RGB"     # an opaque figure: no alpha channel to encode


def test_a_transparent_figure_keeps_its_alpha():
    plot = _Plot()
    plot.fig.patch.set_alpha(0.0)
    blit = BlitRenderer(plot.fig, plot.dynamic)
    plot.update(2)
    png = blit.png()
    assert Image.open(io.BytesIO(png)).mode == "RGBA" and np.array_equal(_pixels(png), _full(plot.fig))
    assert _pixels(png)[0, 0, 3] == 0                      # the corner is see-through


def test_bad_arguments_are_refused():
    plot, other = _Plot(), _Plot()
    with pytest.raises(ValueError, match="does not belong to this figure"):
        BlitRenderer(plot.fig, [*plot.dynamic, other.line])
    for level in (-1, 10, 1.5, True, "1"):
        with pytest.raises(ValueError, match="compress_level must be an integer in 0..9"):
            BlitRenderer(plot.fig, plot.dynamic, compress_level=level)
    for n in (0, 2.0):
        with pytest.raises(ValueError, match="max_backgrounds must be an integer >= 1"):
            BlitRenderer(plot.fig, plot.dynamic, max_backgrounds=n)
    constrained = Figure(layout="constrained")
    line, = constrained.subplots().plot([0, 1])
    with pytest.raises(ValueError, match="fixed layout.*ConstrainedLayoutEngine"):
        BlitRenderer(constrained, [line])
    FigureCanvasAgg(constrained).draw()
    constrained.set_layout_engine("none")                  # solved once, then frozen: accepted
    assert _pixels(BlitRenderer(constrained, [line]).png()).shape[2] == 4
