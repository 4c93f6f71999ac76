"""MLA rank widget (chapter 2): move d_c' (q_lora_rank), d_c (kv_lora_rank) and n_h; see what they cost.

Numbers come from :func:`dsv3_lessons.course.mla_steps.mla_rank_report` (closed-form arithmetic, V3's other
sizes) and the figure from :func:`dsv3_lessons.course.plots.plot_mla_rank_costs`; the notebook calls both
directly once before building the widget, so an error surfaces in the cell, not inside a callback.
The figure is rendered to PNG bytes in an ``ipywidgets.Image`` (works the same headless).

Driving it headless (what ``tests/test_widget_mla_ranks.py`` does)::

    w = mla_rank_widget()
    w.kv_lora_rank.value = 256
    w.last_result.variant.cache_bytes_per_token   # 61 · (256 + 64) · 2 = 39,040 bytes
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.mla_steps import MLARankReport, format_mla_rank_report, mla_rank_report
from dsv3_lessons.course.plots import plot_mla_rank_costs
from .base import ReportWidget

__all__ = ["MLARankWidget", "mla_rank_widget"]

#: slider (min, max, step) per control
_RANGES = {"q_lora_rank": (64, 7168, 64), "kv_lora_rank": (32, 2048, 32), "num_attention_heads": (8, 256, 8)}


def _slider(name: str) -> dict:
    lo, hi, step = _RANGES[name]
    return {"min": lo, "max": hi, "step": step}


class MLARankWidget(ReportWidget):
    """Controls as attributes: ``q_lora_rank`` (IntSlider 64..7168, step 64), ``kv_lora_rank``
    (IntSlider 32..2048, step 32), ``num_attention_heads`` (IntSlider 8..256, step 8). Outputs:
    ``readout`` (HTML table), ``image`` (PNG), ``figure`` (latest Figure, closed), ``last_result``
    (latest :class:`~dsv3_lessons.course.mla_steps.MLARankReport`). Every ``.value`` change recomputes
    synchronously (sliders use ``continuous_update=False``: on release, not while dragging); an error is shown in red in the readout and re-raised (never swallowed).
    """

    def __init__(self, q_lora_rank: int = 1536, kv_lora_rank: int = 512, num_attention_heads: int = 128):
        for name, value, (lo, hi, step) in (("q_lora_rank", q_lora_rank, _RANGES["q_lora_rank"]),
                                            ("kv_lora_rank", kv_lora_rank, _RANGES["kv_lora_rank"]),
                                            ("num_attention_heads", num_attention_heads,
                                             _RANGES["num_attention_heads"])):
            # a slider would silently clamp an out-of-range start value: refuse it instead
            if not (isinstance(value, int) and lo <= value <= hi and (value - lo) % step == 0):
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}] in steps of {step}, got {value!r}")
        # recompute on release, not on every drag tick (one update draws a figure: ~0.5 s)
        lazy = {"style": {"description_width": "170px"}, "layout": widgets.Layout(width="520px"),
                "continuous_update": False}
        self.q_lora_rank = widgets.IntSlider(value=q_lora_rank, **_slider("q_lora_rank"),
                                             description="d_c' (q_lora_rank)", **lazy)
        self.kv_lora_rank = widgets.IntSlider(value=kv_lora_rank, **_slider("kv_lora_rank"),
                                              description="d_c (kv_lora_rank)", **lazy)
        self.num_attention_heads = widgets.IntSlider(value=num_attention_heads, **_slider("num_attention_heads"),
                                                     description="n_h (num_attention_heads)", **lazy)
        self._build([self.q_lora_rank, self.kv_lora_rank, self.num_attention_heads])

    def compute(self) -> MLARankReport:
        """The report for the current slider values (no drawing)."""
        return mla_rank_report(self.q_lora_rank.value, self.kv_lora_rank.value, self.num_attention_heads.value)

    def draw(self, report: MLARankReport):
        return plot_mla_rank_costs(report)

    def describe(self, report: MLARankReport) -> str:
        return format_mla_rank_report(report)


def mla_rank_widget(**initial) -> MLARankWidget:
    """Build the MLA rank widget (see :class:`MLARankWidget`); ``initial`` sets starting values
    (``q_lora_rank``, ``kv_lora_rank``, ``num_attention_heads``).

    Raises ValueError for a starting value outside a slider's range or off its step.
    """
    return MLARankWidget(**initial)
