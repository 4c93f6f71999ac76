"""One look for every figure of the course (DESIGN.md, "What a learner sees").

Figures fill the notebook cell: 10 in wide at 110 dpi (about 1100 px, JupyterLab's default cell width),
11-pt text and 10-pt legends. :func:`subplots` is ``plt.subplots`` with those defaults; every plot, diagram
and widget of the package draws through it so the chapters look alike. Widgets render their PNG at
:data:`DPI` too.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["FIG_WIDTH", "DPI", "RC", "subplots", "PALETTE"]

#: figure width in inches (fills the notebook cell) and resolution.
FIG_WIDTH = 10.0
DPI = 110

#: matplotlib settings applied inside :func:`subplots`.
RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}

#: colours with a fixed meaning across chapters (colour-blind safe: Okabe-Ito).
PALETTE = {
    "tensor": "#cfe3f5",      # activations / vectors
    "weight": "#e8e8e8",      # learned matrices
    "cached": "#f5b041",      # what the KV cache keeps (highlighted)
    "rope": "#c39bd3",        # rotated by RoPE
    "op": "#ffffff",          # an operation (norm, concat, softmax)
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "red": "#D55E00",
    "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000",
}


def subplots(nrows: int = 1, ncols: int = 1, height: float = 4.0, width: float = FIG_WIDTH, **kwargs):
    """``plt.subplots`` at the course's width, dpi and fonts, with a constrained layout.

    Args:
        nrows, ncols: the grid; height/width: inches (width defaults to the cell width).
        kwargs: passed to ``plt.subplots`` (``squeeze``, ``sharex`` …).
    Returns: ``(fig, axes)`` as ``plt.subplots`` does.
    """
    kwargs.setdefault("layout", "constrained")
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), dpi=DPI, **kwargs)
    for ax in (axes.flat if hasattr(axes, "flat") else [axes]):
        for item in ([ax.title, ax.xaxis.label, ax.yaxis.label]):
            item.set_fontsize(RC["axes.labelsize"] if item is not ax.title else RC["axes.titlesize"])
        ax.tick_params(labelsize=RC["xtick.labelsize"])
    return fig, axes
