"""Fast PNGs of a figure that a widget updates in place (blitting), used by the widgets of chapters 8 and 9.

A widget's figure has a static part (axes, ticks, labels, titles that never change) and a few artists that move
with the controls (bars, points, value labels). Rendering the whole figure on every change re-lays out and
re-rasterises every tick label, which was most of a widget update's time (measured: ~120 ms of CPU for the FP8
figure, most of it text). :class:`BlitPNG` renders the static part once into a background buffer; each
:meth:`BlitPNG.png` restores that buffer, draws only the moving artists on it (matplotlib's ``animated``
artists, the same mechanism interactive blitting uses) and encodes the RGBA buffer with a fast PNG setting
(zlib level 1: larger files, a fraction of the encoding time). The pixels equal a full render of the same
figure (``tests/test_speculative.py`` checks it).

It could move to ``course/common`` once the lead wants it there; chapter 9 imports it from here (a chapter may
import an earlier one).
"""
from __future__ import annotations

import io
from typing import Sequence

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["BlitPNG"]


class BlitPNG:
    """PNG bytes of ``fig`` where only ``animated`` artists are redrawn per call.

    Args:
        fig: a :class:`matplotlib.figure.Figure` with a fixed layout (no constrained layout: the background is
            computed once, so the axes must not move).
        animated: the artists that change between calls; they are marked ``animated`` (left out of the
            background) and drawn on top in the given order.
    Raises ValueError when an artist does not belong to ``fig`` or the figure uses a layout engine.
    """

    def __init__(self, fig: Figure, animated: Sequence[Artist]):
        if fig.get_layout_engine() is not None:
            raise ValueError("BlitPNG needs a fixed layout: build the figure without layout='constrained'/'tight'")
        for a in animated:
            if a.get_figure(root=True) is not fig:
                raise ValueError(f"animated artist {a!r} does not belong to this figure")
        self.fig = fig
        self.canvas = FigureCanvasAgg(fig)
        self.animated = list(animated)
        for a in self.animated:
            a.set_animated(True)
        self._background = None

    def invalidate(self) -> None:
        """Forget the background (call after changing a static artist)."""
        self._background = None

    def png(self) -> bytes:
        """Draw the animated artists over the cached background and return the PNG bytes (at ``fig.dpi``)."""
        if self._background is None:
            self.canvas.draw()                                   # static artists only (animated ones skipped)
            self._background = self.canvas.copy_from_bbox(self.fig.bbox)
        else:
            self.canvas.restore_region(self._background)
        renderer = self.canvas.get_renderer()
        for a in self.animated:
            if a.get_visible():
                a.draw(renderer)
        width, height = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        buf = io.BytesIO()
        image.save(buf, format="png", compress_level=1)
        return buf.getvalue()
