"""The pattern every "report" widget shares: controls → a pure report function → readout + figure.

A subclass supplies three pure pieces -- :meth:`compute` (numbers from the control values),
:meth:`draw` (a matplotlib Figure from the report) and :meth:`describe` (readout text) -- and the
base class wires them: any control's ``.value`` change recomputes synchronously; the figure is
rendered to PNG bytes in an ``ipywidgets.Image`` (the same in JupyterLab and headless tests, no
``Output``-widget capture); a ``ValueError`` is shown in red in the readout *and* re-raised, so an
error is never swallowed inside a callback.
"""
from __future__ import annotations

import html
import io
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
        self.update()
        for control in controls:
            control.observe(self._on_change, names="value")

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
