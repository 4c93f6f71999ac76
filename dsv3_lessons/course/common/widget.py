"""The pattern every "report" widget shares: controls → a pure report function → readout + figure.

A subclass supplies three pure pieces -- :meth:`compute` (numbers from the control values),
:meth:`draw` (a matplotlib Figure from the report) and :meth:`describe` (readout text) -- and the
base class wires them: any control's ``.value`` change recomputes synchronously; the figure is
rendered to PNG bytes in an ``ipywidgets.Image`` (the same in JupyterLab and headless tests, no
``Output``-widget capture); a ``ValueError`` is shown in red in the readout *and* re-raised, so an
error is never swallowed inside a callback.

Hooks a subclass may override instead of :meth:`update` (one update always runs compute → draw → render →
readout):

* :meth:`render` -- the PNG bytes of the drawn figure. Default: a full ``savefig`` (zlib level
  :attr:`png_compress_level`), then ``plt.close``; for a figure handed to :meth:`blit_figure` (one persistent
  figure updated in place), only its changing artists over a cached background
  (:class:`~dsv3_lessons.course.common.blit.BlitRenderer`).
* :meth:`render_error` -- what the figure shows for a setting :meth:`compute` rejected. Default: nothing new; the
  last valid figure stays, framed in dashed red with a tooltip saying it shows the last valid setting (the frame
  goes with the next valid setting). A widget whose stale figure would mislead (chapter 8: the previous prompt's
  bars) returns a PNG of its own (e.g. a greyed figure that says why).
* :meth:`readout_markup` -- the readout's HTML from the :meth:`describe` text (default: a ``<pre>`` block).
* :meth:`draw` may return None: "the figure shown is still right" (nothing is rendered; e.g. a control that
  changes only the readout).

For tests that drive a widget from outside (the browser suite, ``tests/browser``): ``controls`` names the
observed controls, :meth:`readout_for` gives the readout text for any control values without touching the
displayed widget, and the views carry CSS classes (``dsv3-report``, ``dsv3-model-<model id>``,
``dsv3-control-<name>`` on every input, ``dsv3-readout``, ``dsv3-figure``) so a page can find them.
"""
from __future__ import annotations

import html
import inspect
import io
import types
from html.parser import HTMLParser
from typing import Any, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

from dsv3_lessons.course.common.blit import BlitRenderer
from dsv3_lessons.course.common.style import DPI

__all__ = ["ReportWidget"]


class ReportWidget(widgets.VBox):
    """Base class. Attributes: ``readout`` (HTML), ``image`` (PNG of the figure), ``figure`` (the latest
    Figure, already closed), ``last_result`` (the latest report), ``last_error`` (the latest ValueError), ``blit``
    (the :class:`~dsv3_lessons.course.common.blit.BlitRenderer` of :meth:`blit_figure`, or None)."""

    dpi = DPI
    #: the persistent figure's renderer, set by :meth:`blit_figure` (None: every render is a full savefig)
    blit: BlitRenderer | None = None
    #: zlib level of the default :meth:`render`'s PNG (None: matplotlib's default, 6; 1 encodes several times
    #: faster, into a somewhat larger file)
    png_compress_level: int | None = None
    #: the image's frame: invisible while the figure is current, dashed red while it shows the last valid setting
    #: (the same width, so nothing moves)
    _FRAME, _STALE_FRAME = "2px solid transparent", "2px dashed #b00"
    #: the image's tooltip while it shows the last valid setting
    STALE_TOOLTIP = "the figure shows the last valid setting"

    def __repr__(self) -> str:
        # The text a notebook stores beside the widget view: what a learner sees when the notebook is opened
        # before its cells run (no kernel, no widget state). A one-line note, never the children's repr.
        return f"[{type(self).__name__}: run this cell to use the widget]"

    def _build(self, controls: Sequence[widgets.Widget], layout: Sequence[widgets.Widget] | None = None) -> None:
        """Call at the end of a subclass ``__init__`` once the controls exist."""
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(border=self._FRAME))
        self.figure = None
        self.last_result: Any = None
        self.last_error: Exception | None = None
        super().__init__(children=[*(layout if layout is not None else controls), self.readout, self.image])
        self.controls = self._name_inputs(controls)
        self.update()
        for control in controls:
            control.observe(self._on_change, names="value")

    def _name_inputs(self, controls: Sequence[widgets.Widget]) -> dict[str, widgets.Widget]:
        """``{attribute name: control}`` for ``controls``; tags every input (controls and e.g. a Play linked to
        one) and the outputs with CSS classes for the browser tests."""
        names: dict[int, str] = {}
        shown_only = (widgets.HTML, widgets.HTMLMath, widgets.Label)     # text a learner reads, not an input
        for name, value in vars(self).items():
            if (isinstance(value, widgets.ValueWidget) and not isinstance(value, shown_only)
                    and value is not self.readout and value is not self.image):
                names.setdefault(id(value), name)
        unnamed = [type(c).__name__ for c in controls if id(c) not in names]
        if unnamed:
            raise ValueError(f"controls must be attributes of the widget (self.<name> = ...); unnamed: {unnamed}")
        for value in vars(self).values():
            if id(value) in names:
                value.add_class(f"dsv3-control-{names[id(value)]}")
        self.add_class("dsv3-report")
        self.add_class(f"dsv3-model-{self.model_id}")
        self.readout.add_class("dsv3-readout")
        self.image.add_class("dsv3-figure")
        return {names[id(c)]: c for c in controls}

    def readout_for(self, **values: Any) -> str:
        """The readout text the widget shows for these control values, from the same :meth:`compute`,
        :meth:`describe` and :meth:`readout_markup`, without drawing and without touching the displayed controls,
        readout or figure.

        ``values``: control name (a key of :attr:`controls`) -> value; controls not named keep their current
        value. Returns the text of the readout's HTML as a page shows it (its ``textContent``: tags dropped,
        entities decoded; chapter 1's ``d<sub>c</sub>`` reads ``dc``), or ``"error: <message>"`` when
        :meth:`compute` raises ValueError (what the readout shows then). Raises ValueError for a name that is not
        a control.
        """
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"readout_for: unknown control(s) {unknown}; controls are {list(self.controls)}")
        twin = _Settings(self, {n: values.get(n, c.value) for n, c in self.controls.items()})
        try:
            report = twin.compute()
        except ValueError as exc:
            return f"error: {exc}"
        return _text_content(twin.readout_markup(twin.describe(report)))

    # ---- to implement -------------------------------------------------------------------------
    def compute(self) -> Any:
        """The report for the current control values (no drawing)."""
        raise NotImplementedError

    def draw(self, report: Any):
        """A matplotlib Figure for ``report`` (or None: the figure shown is still right, render nothing)."""
        raise NotImplementedError

    def describe(self, report: Any) -> str:
        """Plain-text readout for ``report``."""
        raise NotImplementedError

    # ---- hooks (see the module docstring) ----------------------------------------------------------
    def blit_figure(self, fig, dynamic, **options):
        """Make ``fig`` the widget's persistent figure: closed in pyplot (only the widget's PNG shows it) and, from
        now on, rendered by blitting the ``dynamic`` artists (those :meth:`draw` changes) over a cached background:
        ``self.blit`` is its :class:`~dsv3_lessons.course.common.blit.BlitRenderer` (``options``: its
        ``compress_level``, ``max_backgrounds``). Returns ``fig``. Raises ValueError as ``BlitRenderer`` does."""
        plt.close(fig)
        self.blit = BlitRenderer(fig, dynamic, **options)
        return fig

    def render(self, fig) -> bytes:
        """PNG bytes of ``fig`` (what :meth:`draw` returned): blitted for the figure of :meth:`blit_figure`, else
        a full ``savefig`` at :attr:`dpi`, then ``plt.close(fig)`` so pyplot's inline backend never shows it a
        second time."""
        if self.blit is not None and fig is self.blit.fig:
            return self.blit.png()
        buf = io.BytesIO()
        extra = {} if self.png_compress_level is None else {"pil_kwargs": {"compress_level": self.png_compress_level}}
        fig.savefig(buf, format="png", dpi=self.dpi, **extra)
        plt.close(fig)
        return buf.getvalue()

    def render_error(self, exc: ValueError) -> bytes | None:
        """The PNG to show for a setting :meth:`compute` rejected with ``exc``, or None (default) to keep the last
        valid figure, which the base class then frames as stale (:data:`STALE_TOOLTIP`)."""
        return None

    def readout_markup(self, text: str) -> str:
        """The readout's HTML for the :meth:`describe` text."""
        return f"<pre>{html.escape(text)}</pre>"

    # ---- shared machinery ---------------------------------------------------------------------
    def _on_change(self, change) -> None:
        self.update()

    def _mark_stale(self, stale: bool) -> None:
        frame = self._STALE_FRAME if stale else self._FRAME
        if self.image.layout.border != frame:            # no message to the page when nothing changes
            with self.image.layout.hold_sync():
                self.image.layout.border = frame
            self.image.tooltip = self.STALE_TOOLTIP if stale else None

    def update(self) -> Any:
        """Recompute the numbers, the readout and the figure from the current values.

        A ValueError from :meth:`compute` is shown in red in the readout (the figure as :meth:`render_error` says)
        and re-raised; nothing else changes, ``last_result`` keeps the last valid report."""
        try:
            report = self.compute()
        except ValueError as exc:
            self.last_error = exc
            png = self.render_error(exc)
            if png is None:
                self._mark_stale(True)
            else:
                self._mark_stale(False)
                self.image.value = png
            self.readout.value = f"<pre style='color:#b00'>error: {html.escape(str(exc))}</pre>"
            raise
        self.last_error = None
        fig = self.draw(report)
        if fig is not None:
            self.figure = fig
            self.image.value = self.render(fig)
        self._mark_stale(False)
        self.readout.value = self.readout_markup(self.describe(report))
        self.last_result = report
        return report


class _TextContent(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text_content(markup: str) -> str:
    """The text of an HTML fragment as a browser's ``textContent`` gives it (tags dropped, entities decoded)."""
    parser = _TextContent()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


class _Setting:
    """A control as :meth:`ReportWidget.readout_for` shows it to compute/describe: ``value`` is the given one,
    other attributes are the real control's, and writes (e.g. ``disabled``) stay on this stand-in."""

    def __init__(self, control: widgets.Widget, value: Any):
        self.__dict__.update(_control=control, value=value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._control, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value


class _Settings:
    """Stands in for a ReportWidget: its controls read as :class:`_Setting` values, its methods and properties
    run on this stand-in, everything else (data, geometry, caches) is the widget's own."""

    def __init__(self, widget: ReportWidget, values: dict[str, Any]):
        self.__dict__.update(_widget=widget, _settings={n: _Setting(widget.controls[n], v) for n, v in values.items()})

    def __getattr__(self, name: str) -> Any:
        if name in self._settings:
            return self._settings[name]
        attr = inspect.getattr_static(type(self._widget), name, None)
        if isinstance(attr, (types.FunctionType, property)):
            return attr.__get__(self, type(self._widget))
        return getattr(self._widget, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value
