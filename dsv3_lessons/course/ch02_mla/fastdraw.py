"""Fast redraws for the report widgets of chapters 2 and 3: draw the static part of a figure once, then only the
artists that move.

A widget update used to build a new figure and render all of it to PNG: axes, ticks, tick labels (mathtext on log
axes), titles, legends. Profiling the chapter-2 widget showed glyph layout and rendering of those unchanging texts,
and PNG compression, taking most of an update. :class:`BlitRenderer` is matplotlib's blitting recipe applied to
off-screen PNG output:

1. the widget builds its figure once, with fixed axis limits, and names the artists an update can change;
2. the renderer draws the figure once with those artists hidden and keeps the pixels (the *background*);
3. each update restores the background, draws only the named artists on it (``Figure.draw_artist``) and encodes
   the pixels as PNG at a low zlib level (the same picture; a larger but much faster PNG).

Nothing is lost for callers: after the background is captured the artists are ordinary again, so
``figure.savefig`` still draws the whole figure. The figure must not change outside the named artists (its limits,
ticks and static texts are part of the background); :meth:`BlitRenderer.refresh` recaptures it when they do.
Chapter 3's widget imports this module (a chapter may import an earlier chapter's package).
"""
from __future__ import annotations

import io
from typing import Iterable

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["BlitRenderer"]


class BlitRenderer:
    """Render ``fig`` to PNG bytes by redrawing only ``dynamic`` artists over a cached background.

    Args:
        fig: the figure (its dpi is the PNG's resolution).
        dynamic: the artists an update may change (bars, lines, texts, legends, patches), drawn in this order on
            top of the background.
        compress_level: zlib level of the PNG (0–9; 1 is several times faster to encode than the default 6).
    Raises:
        ValueError: ``compress_level`` outside 0..9, or an artist that does not belong to ``fig``.
    """

    def __init__(self, fig: Figure, dynamic: Iterable[Artist], compress_level: int = 1):
        if not (isinstance(compress_level, int) and 0 <= compress_level <= 9):
            raise ValueError(f"compress_level must be an integer in 0..9, got {compress_level!r}")
        self.fig = fig
        self.dynamic = list(dynamic)
        for artist in self.dynamic:
            if artist.get_figure(root=True) is not fig:
                raise ValueError(f"{artist!r} does not belong to this figure")
        self.compress_level = compress_level
        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)          # an Agg canvas of our own: pixels we can copy (headless too)
        self._background = None
        self.refresh()

    def refresh(self) -> None:
        """(Re)capture the background: the whole figure drawn without the dynamic artists."""
        visible = [a.get_visible() for a in self.dynamic]
        for artist in self.dynamic:
            artist.set_visible(False)
        self.fig.canvas.draw()
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        for artist, was in zip(self.dynamic, visible):
            artist.set_visible(was)

    def png(self) -> bytes:
        """The figure as PNG bytes: background plus the dynamic artists in their current state."""
        from PIL import Image

        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self.dynamic:
            if artist.get_visible():
                self.fig.draw_artist(artist)
        width, height = canvas.get_width_height(physical=True)
        image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        buf = io.BytesIO()
        image.save(buf, format="png", compress_level=self.compress_level, dpi=(self.fig.dpi, self.fig.dpi))
        return buf.getvalue()
