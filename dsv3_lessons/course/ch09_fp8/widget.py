"""FP8 quantization widget (chapter 9): outlier magnitude, scaling granularity and format -> error plots.

The numbers come from :func:`dsv3_lessons.course.ch09_fp8.experiments.error_report` (every granularity, so the bar
chart compares them); the notebook calls :func:`fp8_report` directly once before building the widget, so an error
surfaces in the cell. The figure is one :class:`~dsv3_lessons.course.ch09_fp8.figures.ErrorReportFigure` per
widget, built once and updated in place (no rebuild, no layout solve, fixed ticks), which is what keeps a change
fast: rendering, not the numbers, was the cost. The controls sit in one label column (every label left of its
control, the toggle buttons included).

Driving it headless (what ``tests/test_widget_fp8.py`` does)::

    w = fp8_widget()
    w.outlier.value = 1e4; w.granularity.value = "tensor"; w.fmt.value = "e5m2"
    w.last_result["tensor"].underflow     # fraction of ordinary values flushed to zero
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch09_fp8.experiments import (GRANULARITIES, error_report, outlier_activations,
                                                      outlier_label)
from dsv3_lessons.course.ch09_fp8.figures import ErrorReportFigure
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["FP8Widget", "fp8_widget", "fp8_report"]

_FORMATS = (("E4M3 (V3)", "e4m3"), ("E5M2", "e5m2"), ("E4M3FNUZ", "e4m3fnuz"))

#: the outlier slider's step in log10 units: 10^0.05 ≈ ×1.12 per step (0.25 was ×1.78, too coarse to find
#: where flushing starts)
_LOG_STEP = 0.05
#: the label column: every control's label on its left, toggle buttons included (browser review, item 11)
_LABEL_WIDTH = "210px"


def fp8_report(outlier: float, fmt: str = "e4m3", tokens: int = 256, channels: int = 512, n_outliers: int = 4,
               seed: int = 0) -> dict:
    """``{granularity: ErrorReport}`` for activations with ``n_outliers`` channels ``outlier`` times larger.

    Raises ValueError for an outlier < 1 or an unknown format.
    """
    x, idx = outlier_activations(tokens, channels, outlier, n_outliers, seed)
    return {g: error_report(x, idx, g, fmt) for g in GRANULARITIES}


def _describe(reports: dict, selected: str, outlier: float) -> str:
    lines = [f"outlier channels ×{outlier_label(outlier)}; format {reports[selected].fmt}; "
             f"selected: {GRANULARITIES[selected]}"]
    for g, r in reports.items():
        mark = "→" if g == selected else " "
        lines.append(f"{mark} {GRANULARITIES[g]:<15} mean relative error {r.rel_error:7.2%}   "
                     f"flushed to zero {r.underflow:6.2%}")
    return "\n".join(lines)


class FP8Widget(ReportWidget):
    """Controls (attributes, so tests can drive them): ``outlier`` (FloatLogSlider 1 … 1e5, the outlier
    channels' magnitude factor, in steps of 10^0.05 ≈ ×1.12 so the onset of flushing can be found; a value can
    also be typed into its readout), ``granularity`` (ToggleButtons tensor / tile / block), ``fmt``
    (ToggleButtons E4M3 / E5M2 / E4M3FNUZ). ``last_result`` is ``{granularity: ErrorReport}``."""

    def __init__(self, outlier: float = 1e4, granularity: str = "tensor", fmt: str = "e4m3"):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
        if fmt not in dict(_FORMATS).values():
            raise ValueError(f"fmt must be one of {[v for _, v in _FORMATS]}, got {fmt!r}")
        if not 1 <= outlier <= 1e5:
            raise ValueError(f"outlier must lie in [1, 1e5], got {outlier!r}")
        self.outlier = widgets.FloatLogSlider(value=outlier, base=10, min=0, max=5, step=_LOG_STEP,
                                              continuous_update=False, readout_format=".3g",
                                              layout=widgets.Layout(width="360px"))
        self.granularity = widgets.ToggleButtons(options=[(v, k) for k, v in GRANULARITIES.items()],
                                                 value=granularity)
        self.fmt = widgets.ToggleButtons(options=list(_FORMATS), value=fmt)
        self._figure = ErrorReportFigure()
        self.blit_figure(self._figure.fig, self._figure.moving)
        self._reports: dict = {}
        rows = [widgets.HBox([widgets.Label(text, layout=widgets.Layout(width=_LABEL_WIDTH)), control])
                for text, control in (("outlier channels × (log scale)", self.outlier),
                                      ("scaling granularity", self.granularity), ("FP8 format", self.fmt))]
        self._build([self.outlier, self.granularity, self.fmt], layout=rows)

    def compute(self) -> dict:
        key = (self.outlier.value, self.fmt.value)          # the granularity only changes the drawing
        if key not in self._reports:
            if len(self._reports) > 64:
                self._reports.clear()
            self._reports[key] = fp8_report(*key)
        return self._reports[key]

    def draw(self, report: dict):
        return self._figure.update(report, self.granularity.value, self.outlier.value)

    def describe(self, report: dict) -> str:
        return _describe(report, self.granularity.value, self.outlier.value)


def fp8_widget(**initial) -> FP8Widget:
    """Build the FP8 widget (see :class:`FP8Widget`); ``initial`` sets ``outlier``, ``granularity``, ``fmt``.

    Raises ValueError for values outside the controls' options.
    """
    return FP8Widget(**initial)
