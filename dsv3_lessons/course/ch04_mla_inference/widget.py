"""Decode-cost widget (chapter 4): context, heads, batch and queries per step against FLOPs and bytes per token.

The numbers come from :func:`dsv3_lessons.course.ch04_mla_inference.costs.decode_cost_report` (closed form) and
the figure from :class:`dsv3_lessons.course.ch04_mla_inference.figures.DecodeCostFigure`; the notebook calls both
once directly before building the widget, so an error surfaces in the cell, not inside a callback.

Speed: the figure is built once (layout solved once) and every update only moves data (``set_ydata``) and
re-renders just the artists that changed over a cached background (blitting); the y axes are fixed to hold every
curve the controls can produce (:func:`fixed_cost_limits`), so they do not move either.

Headless use (what ``tests/test_widget_mla_decode.py`` does)::

    w = decode_cost_widget()
    w.heads.value = 16
    w.last_result.core_intensity["absorb"]    # 30.2 FLOP per cached byte at 16 heads
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch04_mla_inference.costs import (CONTROL_OPTIONS, COST_LABELS, COST_VARIANTS, H800_RIDGE,
                                                          DecodeCostReport, decode_cost_report, fixed_cost_limits)
from dsv3_lessons.course.ch04_mla_inference.figures import DecodeCostFigure
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["CONTROL_OPTIONS", "fixed_cost_limits", "format_decode_cost_report", "DecodeCostWidget",
           "decode_cost_widget", "READOUT_WIDTH"]

#: the longest readout line (characters): the output area beside JupyterLab's prompt holds about 100 at the
#: default font, and a ``<pre>`` line longer than the area wraps anywhere, even inside "every T"
READOUT_WIDTH = 95

def format_decode_cost_report(r: DecodeCostReport) -> str:
    """The readout: the three layers' FLOPs, bytes and intensities at the chosen setting, and the crossover.

    Every line is at most :data:`READOUT_WIDTH` characters, so the readout's ``<pre>`` never wraps inside a phrase
    beside the controls."""
    width = f"{r.mha_qk_width}/128"
    head = (f"T = {r.context:,} cached tokens, {r.heads} heads, batch {r.batch}, {r.queries} new token"
            f"{'s' if r.queries > 1 else ''} per sequence and step, BF16;\nper decoded token, one layer:\n")
    names = {"mha": f"MHA ({width}-wide heads)", "per_head": COST_LABELS["per_head"],
             "absorb": COST_LABELS["absorb"]}
    rows = [f"  {'':<26}{'MFLOP':>10}{'MB read':>10}{'cache row B':>13}{'core FLOP/B':>13}{'step FLOP/B':>13}"]
    for v in COST_VARIANTS:
        rows.append(f"  {names[v]:<26}{r.flops[v] / 1e6:>10,.1f}{r.bytes[v] / 1e6:>10,.2f}"
                    f"{r.cache_row_bytes[v]:>13,}{r.core_intensity[v]:>13,.1f}{r.step_intensity[v]:>13,.1f}")
    if r.crossover is None:
        cross = "absorbed MLA needs fewer FLOPs than MHA at every context"
    else:
        side = "fewer" if r.context < r.crossover else "more"
        cross = (f"absorbed MLA needs fewer FLOPs than MHA below T = {r.crossover:,} and more from there on "
                 f"(here: {side});\nit reads fewer bytes than MHA at every T")
    core = r.core_intensity["absorb"]
    bound = "at or past" if core >= H800_RIDGE else "below"
    return (head + "\n".join(rows) + f"\n{cross}\nabsorbed attention core: {core:,.0f} FLOP per cached byte, "
            f"{bound} an H800's ridge of {H800_RIDGE:.0f} FLOP/B:\n"
            f"{'compute-bound' if core >= H800_RIDGE else 'memory-bound'} there "
            f"(FlashMLA's H800 figures: 660 TFLOPS, 3000 GB/s)")


class DecodeCostWidget(ReportWidget):
    """Controls (attributes): ``context`` (SelectionSlider, powers of two 64 … 131,072), ``heads``
    (SelectionSlider 8 … 128), ``batch`` (SelectionSlider 1 … 256), ``queries`` (ToggleButtons 1 or 2),
    ``mha_qk_width`` (ToggleButtons 192 or 128). Outputs as every :class:`ReportWidget`; ``ylims`` holds the
    fixed axis limits."""

    def __init__(self, context: int = 16_384, heads: int = 128, batch: int = 1, queries: int = 1,
                 mha_qk_width: int = 192):
        for name, value in (("context", context), ("heads", heads), ("batch", batch), ("queries", queries),
                            ("mha_qk_width", mha_qk_width)):
            if value not in CONTROL_OPTIONS[name]:
                raise ValueError(f"{name} must be one of {CONTROL_OPTIONS[name]}, got {value!r}")
        style = {"description_width": "initial"}
        lay = widgets.Layout(width="520px")
        self.context = widgets.SelectionSlider(options=[(f"{t:,}", t) for t in CONTROL_OPTIONS["context"]],
                                               value=context, description="context T (cached tokens)",
                                               style=style, layout=lay, continuous_update=False)
        self.heads = widgets.SelectionSlider(options=CONTROL_OPTIONS["heads"], value=heads,
                                             description="attention heads n_h", style=style, layout=lay,
                                             continuous_update=False)
        self.batch = widgets.SelectionSlider(options=CONTROL_OPTIONS["batch"], value=batch,
                                             description="batch (sequences decoded together)", style=style,
                                             layout=lay, continuous_update=False)
        # ToggleButtons share one button width (ipywidgets' default, 148 px, cut "2 (MTP draft verified)"): size
        # it for the longest label
        buttons = {"description_width": "initial", "button_width": "190px"}
        self.queries = widgets.ToggleButtons(options=[("1 (plain decode)", 1), ("2 (MTP draft verified)", 2)],
                                             value=queries, description="new tokens per step", style=buttons)
        self.mha_qk_width = widgets.ToggleButtons(options=[("192 (V3's q/k width)", 192), ("128", 128)],
                                                  value=mha_qk_width, description="MHA key width", style=buttons)
        self.ylims = fixed_cost_limits()
        self._plot: DecodeCostFigure | None = None
        controls = [self.context, self.heads, self.batch, self.queries, self.mha_qk_width]
        self._build(controls)

    def compute(self) -> DecodeCostReport:
        return decode_cost_report(self.context.value, self.heads.value, self.batch.value, self.queries.value,
                                  self.mha_qk_width.value)

    def draw(self, report: DecodeCostReport):
        if self._plot is None:       # blitted: ticks, labels and legend drawn once, then curves, markers and texts
            self._plot = DecodeCostFigure(report, ylims=self.ylims)
            return self.blit_figure(self._plot.fig, self._plot.dynamic())
        self._plot.update(report)
        return self._plot.fig

    def describe(self, report: DecodeCostReport) -> str:
        return format_decode_cost_report(report)


def decode_cost_widget(**initial) -> DecodeCostWidget:
    """Build the decode-cost widget (see :class:`DecodeCostWidget`); ``initial`` sets starting values.

    Raises ValueError for a starting value a control does not offer."""
    return DecodeCostWidget(**initial)
