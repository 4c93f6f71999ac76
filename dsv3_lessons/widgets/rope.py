"""Chapter 3 widget: turn RoPE's knobs and watch a channel pair rotate, the score follow m − n, and YaRN
stretch the slow frequencies.

The computation is :func:`dsv3_lessons.rope_lessons.rope_explorer` (pure; notebook 03 calls it directly
once) and the figure is :func:`dsv3_lessons.plots.plot_rope_explorer`; this module only wires sliders to
them. Tests drive it headless: set a control's ``.value`` and read ``last_result`` / ``last_figure``.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from ..plots import plot_rope_explorer
from ..rope_lessons import rope_explorer

__all__ = ["rope_widget"]


def rope_widget(query_pos: int = 12, key_pos: int = 4, freq_index: int = 16, yarn_factor: float = 40.0, *,
                max_pos: int = 8192, dim: int = 64, base: float = 10000.0, original_len: int = 4096,
                max_distance: int = 8192) -> widgets.VBox:
    """Build the RoPE explorer.

    Controls (also attributes of the returned box): ``query_pos`` and ``key_pos`` (IntSliders,
    0..max_pos, tokens), ``freq_index`` (IntSlider, pair 0..dim/2-1), ``yarn_factor`` (FloatSlider 1..64,
    YaRN's s; 1 = plain RoPE, V3 = 40). Other attributes: ``output`` (the Output widget holding the
    figure), ``summary`` (an HTML line with the numbers), ``last_result`` (the latest
    :class:`~dsv3_lessons.rope_lessons.ExplorerResult`), ``last_figure`` (the latest ``Figure``, closed
    after display) and ``update()`` (recompute now).

    Raises: ValueError (from :func:`~dsv3_lessons.rope_lessons.rope_explorer`) for out-of-range initial values.
    """
    style = {"description_width": "110px"}
    layout = widgets.Layout(width="360px")
    c_q = widgets.IntSlider(value=query_pos, min=0, max=max_pos, description="query pos m", style=style,
                            layout=layout, continuous_update=False)
    c_k = widgets.IntSlider(value=key_pos, min=0, max=max_pos, description="key pos n", style=style,
                            layout=layout, continuous_update=False)
    c_i = widgets.IntSlider(value=freq_index, min=0, max=dim // 2 - 1, description="pair index i", style=style,
                            layout=layout, continuous_update=False)
    c_s = widgets.FloatSlider(value=yarn_factor, min=1.0, max=64.0, step=1.0, description="YaRN factor s",
                              style=style, layout=layout, continuous_update=False, readout_format=".0f")
    out = widgets.Output()
    summary = widgets.HTML()
    box = widgets.VBox([widgets.HBox([widgets.VBox([c_q, c_k]), widgets.VBox([c_i, c_s])]), summary, out])
    box.query_pos, box.key_pos, box.freq_index, box.yarn_factor = c_q, c_k, c_i, c_s
    box.output, box.summary = out, summary
    box.last_result = None
    box.last_figure = None

    def update(change=None):
        res = rope_explorer(c_q.value, c_k.value, c_i.value, float(c_s.value), dim=dim, base=base,
                            original_len=original_len, max_distance=max_distance)
        fig = plot_rope_explorer(res)
        plt.close(fig)  # keep pyplot from showing it a second time; the Output widget holds it
        box.last_result, box.last_figure = res, fig
        summary.value = (f"m − n = {res.query_pos - res.key_pos}; θ_{res.freq_index}: {res.theta_rope:.4g} → "
                         f"{res.theta_yarn:.4g} rad/token (YaRN); score RoPE(q,m)·RoPE(k,n) = {res.score:.4f}, "
                         f"same pair moved to distance m − n: {res.score_shifted:.4f}; "
                         f"ramp low = {res.low}, high = {res.high}; mscale = {res.mscale:.4f}")
        with out:
            out.clear_output(wait=True)
            display(fig)
        return res

    for control in (c_q, c_k, c_i, c_s):
        control.observe(update, names="value")
    box.update = update
    update()
    return box
