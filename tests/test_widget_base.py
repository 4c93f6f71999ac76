"""The ReportWidget base (dsv3_lessons.course.common.widget): one update runs compute -> draw -> render -> readout,
and a subclass changes a step through a hook (render, render_error, readout_markup, draw returning None) instead of
a copy of update()."""
import io

import ipywidgets as widgets
import numpy as np
import pytest
from PIL import Image

from dsv3_lessons.course.common.style import subplots
from dsv3_lessons.course.common.widget import ReportWidget


class _Square(ReportWidget):
    """x -> x²; a negative x is rejected; the figure is one bar of height x²."""

    def __init__(self, x: int = 2):
        self.x = widgets.IntSlider(value=x, min=-5, max=5)
        self.draws = 0
        self._build([self.x])

    def compute(self):
        if self.x.value < 0:
            raise ValueError(f"x must be >= 0, got {self.x.value}")
        return self.x.value ** 2

    def draw(self, report):
        self.draws += 1
        fig, ax = subplots(1, 1, height=2.0)
        ax.bar([0], [report])
        ax.set_ylim(0, 30)
        return fig

    def describe(self, report):
        return f"x² = {report} < 30"


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_default_update_renders_the_figure_and_escapes_the_readout():
    w = _Square()
    assert w.readout.value == "<pre>x² = 4 &lt; 30</pre>" and w.last_result == 4
    buf = io.BytesIO()
    w.figure.savefig(buf, format="png", dpi=w.dpi)
    assert np.array_equal(_pixels(w.image.value), _pixels(buf.getvalue()))   # the PNG is that figure
    w.x.value = 3
    assert w.last_result == 9 and w.draws == 2 and repr(w) == "[_Square: run this cell to use the widget]"


def test_compress_level_changes_the_file_not_the_picture():
    w, light = _Square(), type("Light", (_Square,), {"png_compress_level": 1})()
    assert np.array_equal(_pixels(w.image.value), _pixels(light.image.value))
    assert len(light.image.value) > len(w.image.value)


def test_a_rejected_setting_keeps_the_last_figure_framed_as_stale():
    w = _Square()
    good_png, good_figure = w.image.value, w.figure
    assert w.image.layout.border == w._FRAME and w.image.tooltip is None
    with pytest.raises(ValueError, match="x must be >= 0"):
        w.x.value = -1
    assert w.readout.value == "<pre style='color:#b00'>error: x must be &gt;= 0, got -1</pre>"
    assert isinstance(w.last_error, ValueError) and w.last_result == 4            # nothing half-updated
    assert (w.image.value, w.figure) == (good_png, good_figure)
    assert w.image.layout.border == "2px dashed #b00" and w.image.tooltip == w.STALE_TOOLTIP
    w.x.value = 1
    assert w.last_error is None and w.image.layout.border == w._FRAME and w.image.tooltip is None


def test_hooks_replace_the_png_the_error_figure_and_the_markup():
    class Hooked(_Square):
        def render(self, fig):
            return b"PNG " + str(self.x.value).encode()

        def render_error(self, exc):
            return b"greyed: " + str(exc).encode()

        def readout_markup(self, text):
            return f"<b>{text}</b>"

        def draw(self, report):                      # None: the figure shown is still right
            return None if report == 1 else super().draw(report)

    w = Hooked()
    assert (w.image.value, w.readout.value) == (b"PNG 2", "<b>x² = 4 < 30</b>")
    figure = w.figure
    w.x.value = 1
    assert w.image.value == b"PNG 2" and w.figure is figure and w.last_result == 1   # nothing rendered
    with pytest.raises(ValueError):
        w.x.value = -2
    assert w.image.value == b"greyed: x must be >= 0, got -2" and w.image.layout.border == w._FRAME
    assert w.readout_for(x=3) == "x² = 9 < 30"       # the markup's text, as the page shows it


def test_a_persistent_figure_handed_to_blit_figure_is_blitted():
    class Persistent(_Square):
        def draw(self, report):
            if self.blit is None:
                fig, ax = subplots(1, 1, height=2.0, layout=None)
                self.bar = ax.bar([0], [report], zorder=3)[0]     # above the spines, as blitting draws it
                ax.set_ylim(0, 30)
                return self.blit_figure(fig, [self.bar])
            self.bar.set_height(report)
            return self.blit.fig

    w = Persistent()
    fig, first = w.figure, w.image.value
    w.x.value = 5
    assert w.figure is fig is w.blit.fig and w.blit.dynamic == [w.bar]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    assert np.array_equal(_pixels(w.image.value), _pixels(buf.getvalue()))    # the bar of 25, as a full render
    assert not np.array_equal(_pixels(w.image.value), _pixels(first))          # not the bar of 4 any more
