"""MLA rank widget (chapter 2): move d_c' (q_lora_rank), d_c (kv_lora_rank) and n_h; see what they cost.

Numbers come from :func:`dsv3_lessons.course.ch02_mla.steps.mla_rank_report` (closed-form arithmetic, V3's other
sizes) and the figure from :func:`dsv3_lessons.course.ch02_mla.figures.plot_mla_rank_costs`; the notebook calls
both directly once before building the widget, so an error surfaces in the cell, not inside a callback.
The figure is rendered to PNG bytes in an ``ipywidgets.Image`` (works the same headless).

Speed: the widget keeps one :class:`~dsv3_lessons.course.ch02_mla.figures.MLARankCostsFigure` and moves its bars
and labels in place on each release (no new axes, no layout solve); the limits are fixed once for the whole
slider range (:func:`fixed_axis_limits`).

Driving it headless (what ``tests/test_widget_mla_ranks.py`` does)::

    w = mla_rank_widget()
    w.kv_lora_rank.value = 256
    w.last_result.variant.cache_bytes_per_token   # 61 · (256 + 64) · 2 = 39,040 bytes
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch02_mla.steps import MLARankReport, format_mla_rank_report, mla_rank_report
from dsv3_lessons.course.ch02_mla.figures import MLARankCostsFigure
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["MLARankWidget", "mla_rank_widget", "fixed_axis_limits", "LABELS"]

#: slider (min, max, step) per control
_RANGES = {"q_lora_rank": (64, 7168, 64), "kv_lora_rank": (32, 2048, 32), "num_attention_heads": (8, 256, 8)}


#: full slider labels: the paper symbol in TeX, exactly as the figure's title writes it (JupyterLab typesets a
#: description's ``$…$`` with MathJax; HTML ``<sub>`` is stripped by the widget manager's sanitizer, which is why
#: the labels once read "dc"), then the config field, which is also what the readout names.
LABELS = {"q_lora_rank": "query latent width $d_c'$ (q_lora_rank)",
          "kv_lora_rank": "KV latent width $d_c$ (kv_lora_rank)",
          "num_attention_heads": "attention heads $n_h$ (num_attention_heads)"}


def fixed_axis_limits(ranges: dict | None = None, headroom: float = 1.25) -> dict[str, tuple[float, float]]:
    """Y limits that hold every bar the sliders can produce, so the axes do not move with the sliders.

    Every cost grows with each of the three controls, so the largest bars sit at the sliders' maxima and the
    smallest cache at their minima (closed form, :func:`mla_rank_report`). Returns
    ``{"params": (0, hi), "flops": (0, hi), "cache": (lo, hi)}`` in the figure's units (M, M, KB), with
    ``headroom`` above the largest bar for its number label (and below the smallest, on the log axis).
    """
    ranges = ranges or _RANGES
    hi = mla_rank_report(*(ranges[k][1] for k in ("q_lora_rank", "kv_lora_rank", "num_attention_heads")))
    lo = mla_rank_report(*(ranges[k][0] for k in ("q_lora_rank", "kv_lora_rank", "num_attention_heads")))
    costs_hi = (hi.variant, hi.v3, hi.mha)
    params = max(c.params_per_layer for c in costs_hi) / 1e6
    flops = max(c.flops_per_token_per_layer for c in costs_hi) / 1e6
    cache_hi = max(c.cache_bytes_per_token for c in costs_hi) / 1e3
    cache_lo = min(c.cache_bytes_per_token for c in (lo.variant, lo.v3, lo.mha)) / 1e3
    return {"params": (0.0, params * headroom), "flops": (0.0, flops * headroom),
            "cache": (cache_lo / headroom ** 2, cache_hi * headroom ** 3)}


def _slider(name: str) -> dict:
    lo, hi, step = _RANGES[name]
    return {"min": lo, "max": hi, "step": step}


class MLARankWidget(ReportWidget):
    """Controls as attributes: ``q_lora_rank`` (IntSlider 64..7168, step 64), ``kv_lora_rank``
    (IntSlider 32..2048, step 32), ``num_attention_heads`` (IntSlider 8..256, step 8). The steps are for dragging;
    a whole number typed into a slider's readout is kept as typed (JupyterLab does not snap it to the step), and
    the numbers are computed for it: every width in range is valid, the readout names the value used. Outputs:
    ``readout`` (HTML table), ``image`` (PNG), ``figure`` (latest Figure, closed), ``last_result``
    (latest :class:`~dsv3_lessons.course.ch02_mla.steps.MLARankReport`), ``ylims`` (the fixed axis limits of
    :func:`fixed_axis_limits`: the axes do not rescale while the sliders move, so the V3 reference bar keeps
    its height). Labels are shown in full (``description_width: initial``). Every ``.value`` change recomputes
    synchronously (sliders use ``continuous_update=False``: on release, not while dragging); an error is shown in red in the readout and re-raised (never swallowed).
    """

    def __init__(self, q_lora_rank: int = 1536, kv_lora_rank: int = 512, num_attention_heads: int = 128):
        for name, value, (lo, hi, step) in (("q_lora_rank", q_lora_rank, _RANGES["q_lora_rank"]),
                                            ("kv_lora_rank", kv_lora_rank, _RANGES["kv_lora_rank"]),
                                            ("num_attention_heads", num_attention_heads,
                                             _RANGES["num_attention_heads"])):
            # a slider would silently clamp an out-of-range start value: refuse it instead. Any whole number in
            # range is accepted, as a value typed into the slider's readout is: dragging moves in `step`s, typing
            # gives any width (the costs are closed forms, e.g. the break-even width is not a multiple of 64)
            if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
                raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}")
        # recompute on release, not on every drag tick (one update draws a figure: ~0.5 s); full labels
        lazy = {"style": {"description_width": "initial"}, "layout": widgets.Layout(width="640px"),
                "continuous_update": False}
        self.q_lora_rank = widgets.IntSlider(value=q_lora_rank, **_slider("q_lora_rank"),
                                             description=LABELS["q_lora_rank"], **lazy)
        self.kv_lora_rank = widgets.IntSlider(value=kv_lora_rank, **_slider("kv_lora_rank"),
                                              description=LABELS["kv_lora_rank"], **lazy)
        self.num_attention_heads = widgets.IntSlider(value=num_attention_heads, **_slider("num_attention_heads"),
                                                     description=LABELS["num_attention_heads"], **lazy)
        self.ylims = fixed_axis_limits()
        self._costs_figure: MLARankCostsFigure | None = None
        self._build([self.q_lora_rank, self.kv_lora_rank, self.num_attention_heads])

    def compute(self) -> MLARankReport:
        """The report for the current slider values (no drawing)."""
        return mla_rank_report(self.q_lora_rank.value, self.kv_lora_rank.value, self.num_attention_heads.value)

    def draw(self, report: MLARankReport):
        """The persistent figure, updated in place (built, and its background captured, on the first call)."""
        if self._costs_figure is None:             # re-rendered by blitting: only bars, labels and title
            self._costs_figure = MLARankCostsFigure(report, ylims=self.ylims)
            return self.blit_figure(self._costs_figure.fig, self._costs_figure.dynamic)
        return self._costs_figure.update(report)

    def describe(self, report: MLARankReport) -> str:
        return format_mla_rank_report(report)


def mla_rank_widget(**initial) -> MLARankWidget:
    """Build the MLA rank widget (see :class:`MLARankWidget`); ``initial`` sets starting values
    (``q_lora_rank``, ``kv_lora_rank``, ``num_attention_heads``).

    Raises ValueError for a starting value that is not a whole number in a slider's range.
    """
    return MLARankWidget(**initial)
