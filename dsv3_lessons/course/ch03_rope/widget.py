"""Chapter 3 widget: turn RoPE's knobs and watch a channel pair rotate, the score follow t − j, and YaRN
stretch the slow frequencies.

The computation is :func:`dsv3_lessons.course.ch03_rope.experiments.rope_explorer` (pure; notebook 03 calls it directly
once) and the figure is :func:`dsv3_lessons.course.ch03_rope.figures.plot_rope_explorer`; this module only wires
sliders to them through :class:`~dsv3_lessons.course.common.widget.ReportWidget`.

Speed: the widget keeps one :class:`~dsv3_lessons.course.ch03_rope.figures.RopeExplorerFigure`, moves only the
artists a control changes and re-renders just those over a cached background
(:class:`~dsv3_lessons.course.common.blit.BlitRenderer`); ``rope_explorer`` caches the score curves, which
depend on the YaRN factor only, so moving a position or the pair recomputes no curve.

The positions are typed (``BoundedIntText``, 0..max_pos): a learner asked to set t = j, or to move both by
the same amount, needs exact values, which a 0..8192 slider a few hundred pixels wide cannot give. Labels are
shown in full (``description_width: initial``) and the figure's axes are fixed, so they stay put while the
controls move. The figure is rendered to PNG bytes in an
``ipywidgets.Image`` (the same in JupyterLab and headless, nothing printed to stdout), and a
``ValueError`` from the computation is shown in red in the summary *and* re-raised, never swallowed.

Driving it headless (what ``tests/test_widget_rope.py`` does)::

    w = rope_widget()
    w.query_pos.value = 300
    w.last_result.angle_between      # (300 − 4)·θ'_16 under YaRN, wrapped to (−π, π]
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch03_rope.figures import RopeExplorerFigure
from dsv3_lessons.course.ch03_rope.experiments import ExplorerResult, rope_explorer
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["RopeWidget", "rope_widget"]

#: YaRN factor slider range (s = 1 is plain RoPE; V3 uses 40).
_FACTOR_RANGE = (1.0, 64.0)


class RopeWidget(ReportWidget):
    """The RoPE explorer. Controls are attributes so code and tests can drive them: ``query_pos`` (t) and
    ``key_pos`` (j) (BoundedIntText boxes, 0..max_pos, tokens), ``freq_index`` (IntSlider, pair 0..dim/2 − 1),
    ``yarn_factor`` (FloatSlider 1..64 in steps of 1, YaRN's s; 1 = plain RoPE, V3 = 40).

    Outputs: ``summary`` (HTML with the numbers; the base class's ``readout``), ``image`` (PNG of the
    figure), ``last_figure`` (the latest matplotlib Figure: rendered to PNG for ``image``, then closed so
    pyplot never displays it a second time), ``last_result`` (the latest
    :class:`~dsv3_lessons.course.ch03_rope.experiments.ExplorerResult`), ``last_error`` (the latest ValueError, or None)
    and ``update()`` (recompute now). The geometry (``dim``, ``base``, ``original_len``,
    ``max_distance``) is kept as plain attributes.

    Every ``.value`` change recomputes synchronously and with ``continuous_update=False`` (on release,
    not on every drag tick). A ValueError from :func:`~dsv3_lessons.course.ch03_rope.experiments.rope_explorer` is shown
    in red in ``summary`` and re-raised.
    """

    def __init__(self, query_pos: int = 12, key_pos: int = 4, freq_index: int = 16, yarn_factor: float = 40.0,
                 *, max_pos: int = 8192, dim: int = 64, base: float = 10000.0, original_len: int = 4096,
                 max_distance: int = 8192):
        if not (isinstance(max_pos, int) and max_pos >= 1):
            raise ValueError(f"max_pos must be a positive integer, got {max_pos!r}")
        if not (isinstance(dim, int) and dim >= 2 and dim % 2 == 0):
            raise ValueError(f"dim must be a positive even integer, got {dim!r}")
        # a slider would silently clamp an out-of-range start value: refuse it instead
        for name, value, hi in (("query_pos", query_pos, max_pos), ("key_pos", key_pos, max_pos),
                                ("freq_index", freq_index, dim // 2 - 1)):
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= hi):
                raise ValueError(f"{name} must be an integer in [0, {hi}], got {value!r}")
        lo, hi = _FACTOR_RANGE
        if not (isinstance(yarn_factor, (int, float)) and not isinstance(yarn_factor, bool)
                and lo <= yarn_factor <= hi and float(yarn_factor).is_integer()):
            raise ValueError(f"yarn_factor must be a whole number in [{lo:g}, {hi:g}] (the slider's steps), "
                             f"got {yarn_factor!r}")
        self.dim, self.base, self.original_len, self.max_distance = dim, base, original_len, max_distance
        style = {"description_width": "initial"}
        typed = {"style": style, "layout": widgets.Layout(width="280px"), "continuous_update": False}
        lazy = {"style": style, "layout": widgets.Layout(width="420px"), "continuous_update": False}
        # the range is in the label: a typed value outside it is clamped by the box (t = -5 becomes 0)
        self.query_pos = widgets.BoundedIntText(value=query_pos, min=0, max=max_pos, step=1,
                                                description=f"query position t (0–{max_pos})", **typed)
        self.key_pos = widgets.BoundedIntText(value=key_pos, min=0, max=max_pos, step=1,
                                              description=f"key position j (0–{max_pos})", **typed)
        self.freq_index = widgets.IntSlider(value=freq_index, min=0, max=dim // 2 - 1,
                                            description="channel pair i", **lazy)
        self.yarn_factor = widgets.FloatSlider(value=float(yarn_factor), min=lo, max=hi, step=1.0,
                                               description="YaRN factor s (1 = plain RoPE)", readout_format=".0f",
                                               **lazy)
        controls = [self.query_pos, self.key_pos, self.freq_index, self.yarn_factor]
        self._explorer_figure: RopeExplorerFigure | None = None
        grid = widgets.HBox([widgets.VBox([self.query_pos, self.key_pos]),
                             widgets.VBox([self.freq_index, self.yarn_factor])],
                            layout=widgets.Layout(grid_gap="24px"))
        self._build(controls, layout=[grid])
        self.summary = self.readout

    @property
    def last_figure(self):
        """The latest matplotlib Figure (closed; what ``image`` shows as PNG), or None before the first draw."""
        return self.figure

    def compute(self) -> ExplorerResult:
        """The explorer's numbers for the current control values (no drawing)."""
        return rope_explorer(self.query_pos.value, self.key_pos.value, self.freq_index.value,
                             float(self.yarn_factor.value), dim=self.dim, base=self.base,
                             original_len=self.original_len, max_distance=self.max_distance)

    def draw(self, report: ExplorerResult):
        """The persistent figure, updated in place (built, and its background captured, on the first call)."""
        if self._explorer_figure is None:          # re-rendered by blitting: only the changing artists
            self._explorer_figure = RopeExplorerFigure(report)
            return self.blit_figure(self._explorer_figure.fig, self._explorer_figure.dynamic)
        return self._explorer_figure.update(report)

    def describe(self, report: ExplorerResult) -> str:
        r = report
        # a key after its query: the rotation and the score are well defined, but causal attention masks the pair
        causal = ("" if r.key_pos <= r.query_pos else
                  f"note: the key comes after the query (j > t); a causal model never scores this pair, it masks "
                  f"every key j > t. Shown for the geometry only.\n")
        return causal + (f"t − j = {r.query_pos - r.key_pos}; θ_{r.freq_index}: {r.theta_rope:.4g} → {r.theta_yarn:.4g} "
                f"rad/token (YaRN s = {r.yarn_factor:g})\n"
                f"score RoPE(q,t)·RoPE(k,j) = {r.score:.4f}; the same vectors at (t − j, 0): "
                f"{r.score_shifted:.4f}\n"
                f"YaRN ramp low = {r.low}, high = {r.high} (from the original {r.original_len} tokens); "
                f"mscale = 0.1·ln s + 1 = {r.mscale:.4f} (logits × mscale² = {r.mscale ** 2:.4f})")


def rope_widget(query_pos: int = 12, key_pos: int = 4, freq_index: int = 16, yarn_factor: float = 40.0, *,
                max_pos: int = 8192, dim: int = 64, base: float = 10000.0, original_len: int = 4096,
                max_distance: int = 8192) -> RopeWidget:
    """Build the RoPE explorer (see :class:`RopeWidget`).

    Args: the starting positions t, j (tokens, 0..max_pos), the pair index (0..dim/2 − 1), the YaRN factor
    (a whole number in 1..64), and the rope geometry (V3 defaults: dim 64, base 10000, original window 4096).

    Raises: ValueError for a starting value outside its slider's range (a slider would clamp it silently),
    and any ValueError :func:`~dsv3_lessons.course.ch03_rope.experiments.rope_explorer` raises for the geometry.
    """
    return RopeWidget(query_pos, key_pos, freq_index, yarn_factor, max_pos=max_pos, dim=dim, base=base,
                      original_len=original_len, max_distance=max_distance)
