"""KV-cache widget (chapter 1): pick a model, a context, a batch and a dtype; see the cache grow.

All numbers come from :func:`dsv3_lessons.course.ch01_kv_cache.kv_cache.kv_cache_report` and the figure from
:func:`dsv3_lessons.course.plots.plot_kv_cache_vs_context`; the notebook calls both directly once before
building the widget, so an error surfaces in the cell instead of inside a callback.

The figure is rendered to PNG bytes and shown in an ``ipywidgets.Image``: that works the same in
JupyterLab and headless (tests), with no ``Output``-widget capture involved.

Driving it headless (what ``tests/test_widget_kv_cache.py`` does)::

    w = kv_cache_widget()
    w.model.value = "LLaMA-3.1-405B"; w.context.value = 131072
    w.last_result.total_gb        # 67.65 (GB, BF16, batch 1)
"""
from __future__ import annotations

from typing import Mapping

import ipywidgets as widgets

from dsv3_lessons.course.ch01_kv_cache.kv_cache import (GB, AttentionSpec, KVCacheReport, bytes_per_token,
                                                        format_report, kv_cache_report, load_model_configs,
                                                        mla_what_if)
from dsv3_lessons.course.ch01_kv_cache.figures import KV_CONTEXTS, plot_kv_cache_vs_context
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["KVCacheWidget", "kv_cache_widget", "LABELS"]

_DTYPES = (("BF16", "bf16"), ("FP8", "fp8"))

#: full labels of the what-if sliders (HTML: paper symbol with its sub/superscript, then the config field)
LABELS = {"kv_lora_rank": "what-if MLA latent d<sub>c</sub> (kv_lora_rank)",
          "rope_dim": "what-if MLA rope key d<sub>h</sub><sup>R</sup> (qk_rope_head_dim)"}


def _label(n: int) -> str:
    return f"{n // 1024}K"


class KVCacheWidget(ReportWidget):
    """The KV-cache explorer. Controls are attributes so code and tests can drive them:

    ``model`` (Dropdown of published configs), ``context`` (SelectionSlider over powers of two,
    1K..512K tokens, i.e. a log scale), ``batch`` (BoundedIntText, 1..1024), ``dtype``
    (ToggleButtons BF16/FP8), ``kv_lora_rank`` and ``rope_dim`` (IntSliders: d_c and d_h^R of the
    MLA what-if); outputs ``readout`` (HTML text), ``image`` (PNG of the figure), ``figure`` (the
    latest matplotlib Figure, closed) and ``last_result`` (the latest :class:`KVCacheReport`).

    Labels are shown in full (``description_width: initial``). The figure's y range (:attr:`ylim`, GB) is
    computed once from the controls' bounds, so the axes stay fixed while any control moves; models whose
    caches coincide are drawn with distinct dashes/markers (see ``plot_kv_cache_vs_context``).

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
        style = {"description_width": "initial"}   # full labels, never cut off
        wide = widgets.Layout(width="560px")
        lazy = {"style": style, "continuous_update": False}  # recompute on release, not on every drag tick
        self.model = widgets.Dropdown(options=list(self.configs), value=model, description="model", style=style)
        self.context = widgets.SelectionSlider(options=[(_label(c), c) for c in KV_CONTEXTS], value=context,
                                               description="context (tokens)", layout=wide, **lazy)
        self.batch = widgets.BoundedIntText(value=batch, min=1, max=1024, description="batch", **lazy)
        self.dtype = widgets.ToggleButtons(options=list(_DTYPES), value=dtype, description="cache dtype",
                                           style=style)
        # HTML descriptions: the paper symbols render as d_c and d_h^R with real sub/superscripts
        self.kv_lora_rank = widgets.IntSlider(value=kv_lora_rank, min=32, max=2048, step=32, layout=wide,
                                              description=LABELS["kv_lora_rank"], description_allow_html=True,
                                              **lazy)
        self.rope_dim = widgets.IntSlider(value=rope_dim, min=0, max=256, step=16, layout=wide,
                                          description=LABELS["rope_dim"], description_allow_html=True, **lazy)
        self.ylim = self._fixed_ylim()
        self._build([self.model, self.context, self.batch, self.dtype, self.kv_lora_rank, self.rope_dim])

    def _fixed_ylim(self) -> tuple[float, float]:
        """A y range (GB) that holds every line for every value the controls allow, so the axes never move."""
        layers = [s.num_hidden_layers for s in self.configs.values()]
        small = [bytes_per_token(s, "fp8") for s in self.configs.values()]
        small.append(bytes_per_token(mla_what_if(self.kv_lora_rank.min, self.rope_dim.min, min(layers)), "fp8"))
        large = [bytes_per_token(s, "bf16") for s in self.configs.values()]
        large.append(bytes_per_token(mla_what_if(self.kv_lora_rank.max, self.rope_dim.max, max(layers)), "bf16"))
        low = min(small) * min(KV_CONTEXTS) * self.batch.min / GB
        high = max(max(large) * max(KV_CONTEXTS) * self.batch.max / GB, self.budget_gb)
        return low / 1.5, high * 1.5

    def compute(self) -> KVCacheReport:
        """The report for the current control values (no drawing)."""
        return kv_cache_report(self.model.value, self.context.value, self.batch.value, self.dtype.value,
                               self.kv_lora_rank.value, self.rope_dim.value, self.budget_gb, self.configs)

    def draw(self, report: KVCacheReport):
        return plot_kv_cache_vs_context(self.configs, KV_CONTEXTS, report.batch, self.dtype.value,
                                        self.budget_gb, highlight=report.model, what_if=report.mla,
                                        context_marker=report.context, ylim=self.ylim)

    def describe(self, report: KVCacheReport) -> str:
        return format_report(report)


def kv_cache_widget(configs: Mapping[str, AttentionSpec] | None = None, **initial) -> KVCacheWidget:
    """Build the KV-cache widget (see :class:`KVCacheWidget`); ``initial`` sets starting values.

    Raises ValueError for an unknown model, a context that is not a power of two in 1K..512K, or an
    unknown dtype.
    """
    return KVCacheWidget(configs, **initial)
