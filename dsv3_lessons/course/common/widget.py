"""The pattern every "report" widget shares: controls → a pure report function → readout + figure.

A subclass supplies three pure pieces -- :meth:`compute` (numbers from the control values),
:meth:`draw` (a matplotlib Figure from the report) and :meth:`describe` (readout text) -- and the
base class wires them: any control's ``.value`` change recomputes synchronously; the figure is
rendered to PNG bytes in an ``ipywidgets.Image`` (the same in JupyterLab and headless tests, no
``Output``-widget capture); a ``ValueError`` is shown in red in the readout *and* re-raised, so an
error is never swallowed inside a callback.

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
from typing import Any, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

from dsv3_lessons.course.common.style import DPI

__all__ = ["ReportWidget"]


class ReportWidget(widgets.VBox):
    """Base class. Attributes: ``readout`` (HTML), ``image`` (PNG of the figure), ``figure`` (the latest
    Figure, already closed), ``last_result`` (the latest report), ``last_error`` (the latest ValueError)."""

    dpi = DPI

    def __repr__(self) -> str:
        # The text a notebook stores beside the widget view: what a learner sees when the notebook is opened
        # before its cells run (no kernel, no widget state). A one-line note, never the children's repr.
        return f"[{type(self).__name__}: run this cell to use the widget]"

    def _build(self, controls: Sequence[widgets.Widget], layout: Sequence[widgets.Widget] | None = None) -> None:
        """Call at the end of a subclass ``__init__`` once the controls exist."""
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
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
        for name, value in vars(self).items():
            if isinstance(value, widgets.ValueWidget) and value is not self.readout and value is not self.image:
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
        """The readout text the widget shows for these control values, from the same :meth:`compute` and
        :meth:`describe`, without drawing and without touching the displayed controls, readout or figure.

        ``values``: control name (a key of :attr:`controls`) -> value; controls not named keep their current
        value. Returns ``"error: <message>"`` when :meth:`compute` raises ValueError (what the readout shows
        then). Raises ValueError for a name that is not a control.
        """
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"readout_for: unknown control(s) {unknown}; controls are {list(self.controls)}")
        twin = _Settings(self, {n: values.get(n, c.value) for n, c in self.controls.items()})
        try:
            report = twin.compute()
        except ValueError as exc:
            return f"error: {exc}"
        return twin.describe(report)

    # ---- to implement -------------------------------------------------------------------------
    def compute(self) -> Any:
        """The report for the current control values (no drawing)."""
        raise NotImplementedError

    def draw(self, report: Any):
        """A matplotlib Figure for ``report``."""
        raise NotImplementedError

    def describe(self, report: Any) -> str:
        """Plain-text readout for ``report``."""
        raise NotImplementedError

    # ---- shared machinery ---------------------------------------------------------------------
    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> Any:
        """Recompute the numbers, the readout and the figure from the current values."""
        try:
            report = self.compute()
        except ValueError as exc:
            self.last_error = exc
            self.readout.value = f"<pre style='color:#b00'>error: {html.escape(str(exc))}</pre>"
            raise
        self.last_error = None
        fig = self.draw(report)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        plt.close(fig)  # keep pyplot's inline backend from showing it a second time
        self.figure = fig
        self.image.value = buf.getvalue()
        self.readout.value = f"<pre>{html.escape(self.describe(report))}</pre>"
        self.last_result = report
        return report


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
