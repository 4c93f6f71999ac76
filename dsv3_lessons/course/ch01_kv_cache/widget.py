"""KV-cache widget (chapter 1): pick a model, a context, a batch and a dtype; see the cache grow.

All numbers come from :func:`dsv3_lessons.course.ch01_kv_cache.kv_cache.kv_cache_report` and the figure from
:class:`dsv3_lessons.course.ch01_kv_cache.figures.KVCachePlot` (what :func:`plot_kv_cache_vs_context` draws); the
notebook calls both directly once before building the widget, so an error surfaces in the cell instead of inside a
callback.

Why it is built this way:

* **Labels with real maths.** ipywidgets 8 sanitises a control's HTML ``description`` and drops ``<sub>``/``<sup>``
  (the browser review saw "dc" and "dhR"). Each control therefore has no description and sits in a row beside an
  ``HTMLMath`` label (``$d_c$``, ``$d_h^R$``, typeset by JupyterLab's MathJax), in a label column of fixed width, so
  every control -- toggle buttons included -- starts at the same x. The readout and the figure write the same
  symbols (``d<sub>c</sub>`` in the readout's HTML, ``$d_c$`` in the figure's mathtext): one notation per symbol.
* **Fast updates.** The figure is built once (:class:`KVCachePlot`, a fixed layout) and each change only sets the
  lines' data, the highlighted model, the budget line and a few texts. Its PNG is blitted
  (:meth:`~dsv3_lessons.course.common.widget.ReportWidget.blit_figure`): axes, ticks, titles and the models'
  legend -- most of the glyphs, and text rendering was most of the time -- are drawn once; each update draws only
  the lines and the right-hand legend on a copy of that background. Rebuilding the figure per change (the earlier
  version) also re-laid out every text.
* **Axes that use their space.** The y axis is the cache of ONE sequence, so the model lines depend only on the
  dtype; the batch moves the accelerator's line (80 GB / batch per sequence) instead of shifting every line by up to
  three decades, and the fixed range (:attr:`KVCacheWidget.ylim`) still holds every value the controls allow. The
  legend sits below the axes, so the plot gets the full width.

The figure is rendered to PNG bytes and shown in an ``ipywidgets.Image``: that works the same in
JupyterLab and headless (tests), with no ``Output``-widget capture involved.

Driving it headless (what ``tests/test_widget_kv_cache.py`` does)::

    w = kv_cache_widget()
    w.model.value = "LLaMA-3.1-405B"; w.context.value = 131072
    w.last_result.total_gb        # 67.65 (GB, BF16, batch 1)
"""
from __future__ import annotations

import html
from typing import Mapping

import ipywidgets as widgets

from dsv3_lessons.course.ch01_kv_cache.kv_cache import (AttentionSpec, KVCacheReport, format_report,
                                                        kv_cache_report, load_model_configs)
from dsv3_lessons.course.ch01_kv_cache.figures import KV_CONTEXTS, KVCachePlot, kv_ylim
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["KVCacheWidget", "kv_cache_widget", "LABELS", "readout_html", "BATCHES"]

_DTYPES = (("BF16", "bf16"), ("FP8", "fp8"))

#: the batch slider's values: powers of two, 1..1024 (a log scale, like the context slider; a slider cannot be
#: given a value it does not list, where a typed box turned "2.5" into 25 in the browser review)
BATCHES = tuple(2**k for k in range(11))

#: the label shown left of each control (HTMLMath: paper symbols in $…$, config fields in <code>)
LABELS = {"model": "model",
          "context": "context (tokens per sequence)",
          "batch": "batch (sequences)",
          "dtype": "cache dtype",
          "kv_lora_rank": "what-if MLA latent $d_c$ (<code>kv_lora_rank</code>)",
          "rope_dim": "what-if MLA rope key $d_h^R$ (<code>qk_rope_head_dim</code>)"}

#: width of the label column (every control starts at the same x)
LABEL_WIDTH = "300px"


def _label(n: int) -> str:
    return f"{n // 1024}K"


def readout_html(text: str) -> str:
    """The plain-text readout (:func:`format_report`) as HTML, with ``d_c`` and ``d_h^R`` typeset as
    d<sub>c</sub> and d<sub>h</sub><sup>R</sup> (the symbols of the labels and the figure)."""
    body = html.escape(text)
    body = body.replace("d_h^R", "<i>d</i><sub>h</sub><sup>R</sup>").replace("d_c", "<i>d</i><sub>c</sub>")
    return f"<pre style='margin:0.2em 0'>{body}</pre>"


class KVCacheWidget(ReportWidget):
    """The KV-cache explorer. Controls are attributes so code and tests can drive them:

    ``model`` (Dropdown of published configs), ``context`` (SelectionSlider over powers of two,
    1K..512K tokens, i.e. a log scale), ``batch`` (SelectionSlider over :data:`BATCHES`, 1..1024), ``dtype``
    (ToggleButtons BF16/FP8), ``kv_lora_rank`` and ``rope_dim`` (IntSliders: d_c and d_h^R of the
    MLA what-if); ``labels`` maps each control's name to its ``HTMLMath`` label. Outputs: ``readout`` (HTML text),
    ``image`` (PNG of the figure), ``figure`` (the persistent matplotlib Figure), ``plot`` (its
    :class:`KVCachePlot`) and ``last_result`` (the latest :class:`KVCacheReport`).

    The figure's y range (:attr:`ylim`, GB per sequence) is computed once from the controls' bounds, so the axes
    stay fixed while any control moves; models whose caches coincide are drawn with distinct dashes/markers.

    Any ``.value`` change recomputes everything synchronously. A value the arithmetic rejects is
    shown in red in the readout *and* re-raised, so it is never silently swallowed.
    """

    def __init__(self, configs: Mapping[str, AttentionSpec] | None = None, model: str = "DeepSeek-V3",
                 context: int = 131072, batch: int = 1, dtype: str = "bf16", kv_lora_rank: int = 512,
                 rope_dim: int = 64, budget_gb: float = 80.0):
        self.configs = dict(load_model_configs() if configs is None else configs)
        if model not in self.configs:
            raise ValueError(f"unknown model {model!r}; model must be one of {list(self.configs)}")
        if context not in KV_CONTEXTS:
            raise ValueError(f"context must be one of {list(KV_CONTEXTS)} (powers of two, 1K..512K), got {context!r}")
        if dtype not in dict(_DTYPES).values():
            raise ValueError(f"dtype must be one of {[v for _, v in _DTYPES]}, got {dtype!r}")
        self.budget_gb = budget_gb
        wide = widgets.Layout(width="440px")
        lazy = {"continuous_update": False}  # recompute on release, not on every drag tick
        self.model = widgets.Dropdown(options=list(self.configs), value=model, layout=widgets.Layout(width="220px"))
        self.context = widgets.SelectionSlider(options=[(_label(c), c) for c in KV_CONTEXTS], value=context,
                                               layout=wide, **lazy)
        if batch not in BATCHES:
            raise ValueError(f"batch must be one of {list(BATCHES)} (powers of two, 1..1024), got {batch!r}")
        self.batch = widgets.SelectionSlider(options=[(str(b), b) for b in BATCHES], value=batch, layout=wide,
                                             **lazy)
        self.dtype = widgets.ToggleButtons(options=list(_DTYPES), value=dtype,
                                           style={"button_width": "64px"})
        self.kv_lora_rank = widgets.IntSlider(value=kv_lora_rank, min=32, max=2048, step=32, layout=wide, **lazy)
        self.rope_dim = widgets.IntSlider(value=rope_dim, min=0, max=256, step=16, layout=wide, **lazy)
        controls = {"model": self.model, "context": self.context, "batch": self.batch, "dtype": self.dtype,
                    "kv_lora_rank": self.kv_lora_rank, "rope_dim": self.rope_dim}
        self.labels = {name: widgets.HTMLMath(value=LABELS[name], layout=widgets.Layout(width=LABEL_WIDTH))
                       for name in controls}
        rows = [widgets.HBox([self.labels[name], control], layout=widgets.Layout(align_items="center"))
                for name, control in controls.items()]
        self.ylim = self._fixed_ylim()
        self.plot = KVCachePlot(self.configs, KV_CONTEXTS, dtype, budget_gb, self.ylim)
        # drawn into the widget's PNG only, never shown by the inline backend; axes, ticks and the models' legend
        # drawn once, the lines and readings per update (blitted)
        self.blit_figure(self.plot.fig, self.plot._dynamic, compress_level=3)
        self._build(list(controls.values()), layout=rows)

    def _fixed_ylim(self) -> tuple[float, float]:
        """A y range (GB per sequence) that holds every line for every value the controls allow, and the budget
        line for every batch, so the axes never move (:func:`kv_ylim`)."""
        return kv_ylim(self.configs, self.budget_gb, max(BATCHES), (self.kv_lora_rank.min, self.kv_lora_rank.max),
                       (self.rope_dim.min, self.rope_dim.max))

    def compute(self) -> KVCacheReport:
        """The report for the current control values (no drawing)."""
        return kv_cache_report(self.model.value, self.context.value, self.batch.value, self.dtype.value,
                               self.kv_lora_rank.value, self.rope_dim.value, self.budget_gb, self.configs)

    def draw(self, report: KVCacheReport):
        """Update the persistent figure in place (no new figure, no layout solve) and return it."""
        return self.plot.update(report.batch, self.dtype.value, report.model, report.mla, report.context)

    def describe(self, report: KVCacheReport) -> str:
        return format_report(report)

    def readout_markup(self, text: str) -> str:
        """The readout with the symbols of the labels and the figure (:func:`readout_html`)."""
        return readout_html(text)


def kv_cache_widget(configs: Mapping[str, AttentionSpec] | None = None, **initial) -> KVCacheWidget:
    """Build the KV-cache widget (see :class:`KVCacheWidget`); ``initial`` sets starting values.

    Raises ValueError for an unknown model, a context that is not a power of two in 1K..512K, a batch that is
    not a power of two in 1..1024, or an unknown dtype.
    """
    return KVCacheWidget(configs, **initial)
