"""Fast PNGs of a figure that a widget updates in place: draw the static part once, then only what moves.

A widget update that builds or fully renders a figure spends most of its time laying out and rasterising texts that
never change (axes, ticks, tick labels with mathtext, titles, legends) and compressing the PNG. :class:`BlitRenderer`
is matplotlib's blitting recipe applied to off-screen PNG output, for every chapter's persistent figure:

1. the widget builds its figure once, with a fixed layout, and names the artists an update may change (*dynamic*);
2. the renderer draws the figure once without those artists and keeps the pixels (the *background*);
3. each :meth:`BlitRenderer.png` restores the background, draws the visible dynamic artists on it
   (``Figure.draw_artist``, in the order a full draw would use) and encodes the pixels as PNG at a low zlib level
   (the same picture; a larger but several times faster PNG; RGB when the figure is opaque, RGBA otherwise).

After a background is captured the artists are ordinary again (``animated`` only during that one draw), so
``figure.savefig`` and ``canvas.draw`` still draw the whole figure -- what a test or a notebook cell that saves the widget's figure expects. The pixels equal a
full render of the same figure (``tests/test_blit.py``).

Everything outside the dynamic artists is part of the background: limits, ticks, static texts. A figure whose
static part changes between a few states (chapter 6: the heatmap and bias lines change with the method, the bars
with the step) keeps one background per state: pass ``key`` to :meth:`~BlitRenderer.png`; the ``max_backgrounds``
most recently used are kept. After any other change to the static part call :meth:`~BlitRenderer.refresh`.

Used by the widgets of chapters 1, 2, 3, 4, 6, 8 and 9 (each chapter's figure names its dynamic artists).
"""
from __future__ import annotations

import io
from collections import OrderedDict
from typing import Hashable, Iterable

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from PIL import Image

__all__ = ["BlitRenderer"]


class BlitRenderer:
    """Render ``fig`` to PNG bytes by redrawing only ``dynamic`` artists over a cached background.

    Args:
        fig: the figure, with a fixed layout (its dpi is the PNG's resolution). Unless its canvas is a plain
            Agg canvas it gets one of its own (pixels to copy, headless too; a GUI backend's canvas is left to the
            GUI): close it in pyplot first if pyplot manages it.
        dynamic: the artists an update may change (bars, lines, texts, legends, patches). Each is drawn, when
            visible, in the order a full draw uses: by axes (in their drawing order; figure-level artists after
            the axes), then by ``zorder``, then in the order given.
        compress_level: zlib level of the PNG, 0–9 (1 is several times faster to encode than PIL's default 6).
        max_backgrounds: how many backgrounds (one per ``key`` of :meth:`png`) are kept, ≥ 1; the least
            recently used goes first. A background is the figure's RGBA pixels (width × height × 4 bytes).
    Raises:
        ValueError: an artist that does not belong to ``fig``; ``compress_level`` not an integer in 0..9;
            ``max_backgrounds`` not an integer ≥ 1; a figure with an active layout engine (constrained or tight
            layout would move the axes at every full draw, away from the background: solve it once, then
            ``fig.set_layout_engine("none")``).
    """

    def __init__(self, fig: Figure, dynamic: Iterable[Artist], compress_level: int = 1, max_backgrounds: int = 1):
        if not (isinstance(compress_level, int) and not isinstance(compress_level, bool) and 0 <= compress_level <= 9):
            raise ValueError(f"compress_level must be an integer in 0..9, got {compress_level!r}")
        if not (isinstance(max_backgrounds, int) and not isinstance(max_backgrounds, bool) and max_backgrounds >= 1):
            raise ValueError(f"max_backgrounds must be an integer >= 1, got {max_backgrounds!r}")
        engine = fig.get_layout_engine()
        if engine is not None and not isinstance(engine, PlaceHolderLayoutEngine):
            raise ValueError(f"the figure must have a fixed layout, it has a {type(engine).__name__}: solve the "
                             f"layout once (fig.canvas.draw()), then fig.set_layout_engine('none')")
        dynamic = list(dynamic)
        for artist in dynamic:
            if artist.get_figure(root=True) is not fig:
                raise ValueError(f"dynamic artist {artist!r} does not belong to this figure")
        self.fig = fig
        self.compress_level = compress_level
        self.max_backgrounds = max_backgrounds
        if type(fig.canvas) is not FigureCanvasAgg:
            FigureCanvasAgg(fig)          # an Agg canvas of our own: pixels we can copy (headless too)
        axes = sorted(fig.axes, key=lambda ax: ax.get_zorder())          # a stable sort: a full draw's order
        rank = {id(ax): i for i, ax in enumerate(axes)}
        order = sorted(range(len(dynamic)), key=lambda i: (rank.get(id(dynamic[i].axes), len(axes)),
                                                           dynamic[i].get_zorder(), i))
        #: the dynamic artists in drawing order
        self.dynamic = [dynamic[i] for i in order]
        self._backgrounds: OrderedDict = OrderedDict()

    def refresh(self, key: Hashable | None = None, *, all_keys: bool = False) -> None:
        """Forget the background of ``key`` (or every background with ``all_keys=True``); the next :meth:`png`
        for it draws the static part anew. Call after changing anything outside the dynamic artists."""
        if all_keys:
            self._backgrounds.clear()
        else:
            self._backgrounds.pop(key, None)

    def _capture(self):
        """The whole figure drawn without the dynamic artists, as a restorable region.

        An artist the axes or the figure draws itself is left out by marking it ``animated`` for this one draw
        (hiding it instead would move an axes title: its automatic position is computed from its visible extent);
        a nested one (an axis label, a legend's text) by hiding it. Both are undone before returning."""
        direct = {id(a) for a in self.fig.get_children()}
        direct.update(id(a) for ax in self.fig.axes for a in ax.get_children())
        state = [(a, a.get_animated(), a.get_visible()) for a in self.dynamic]
        for artist in self.dynamic:
            if id(artist) in direct:
                artist.set_animated(True)
            else:
                artist.set_visible(False)
        try:
            self.fig.canvas.draw()
        finally:
            for artist, animated, visible in state:
                artist.set_animated(animated)
                artist.set_visible(visible)
        return self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def png(self, key: Hashable | None = None) -> bytes:
        """The figure as PNG bytes: the background of ``key`` (drawn now if it is not kept) plus the dynamic
        artists in their current state. ``key`` names the state of the static part (default: the only one)."""
        canvas = self.fig.canvas
        background = self._backgrounds.get(key)
        if background is None:
            background = self._backgrounds[key] = self._capture()
            while len(self._backgrounds) > self.max_backgrounds:
                self._backgrounds.popitem(last=False)
        else:
            self._backgrounds.move_to_end(key)
            canvas.restore_region(background)
        for artist in self.dynamic:
            if artist.get_visible():
                self.fig.draw_artist(artist)
        width, height = canvas.get_width_height(physical=True)
        image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        patch = self.fig.patch
        if patch.get_visible() and patch.get_facecolor()[3] == 1:
            image = image.convert("RGB")  # an opaque figure: every alpha is 255, and 3 channels encode faster
        buf = io.BytesIO()
        image.save(buf, format="png", compress_level=self.compress_level, dpi=(self.fig.dpi, self.fig.dpi))
        return buf.getvalue()
