"""Drawing primitives for the mechanism diagrams: a canvas in data units, boxes by kind, labelled arrows.

Kinds of box and their meaning (colours from :data:`dsv3_lessons.course.common.style.PALETTE`, the same in every
chapter): ``"tensor"`` an activation, ``"weight"`` a learned matrix, ``"cached"`` what the KV cache keeps
(thick outline), ``"rope"`` something rotated by RoPE, ``"op"`` an operation. Text sizes stay ≥ 9 pt so a
diagram is readable at notebook width.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from dsv3_lessons.course.common.style import DPI, FIG_WIDTH, PALETTE, RC

__all__ = ["Diagram", "Box"]

_KINDS = ("tensor", "weight", "cached", "rope", "op")


@dataclass(frozen=True)
class Box:
    """A drawn box: its centre and size in canvas units (for attaching arrows)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> tuple[float, float]:
        return (self.x - self.w / 2, self.y)

    @property
    def right(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y)

    @property
    def top(self) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self) -> tuple[float, float]:
        return (self.x, self.y - self.h / 2)


class Diagram:
    """A matplotlib figure whose axes run 0..``width`` × 0..``height`` canvas units, axes hidden.

    Args:
        width, height: canvas size in units; the figure is :data:`FIG_WIDTH` inches wide and keeps the
            aspect ratio (``height/width``), so one unit is the same length on both axes.
        title: optional title.
    Attributes: ``fig``, ``ax``, ``boxes`` (label -> :class:`Box`), ``kinds_used``.
    """

    def __init__(self, width: float = 20.0, height: float = 8.0, title: str | None = None,
                 fig_width: float = FIG_WIDTH):
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be > 0, got {width} x {height}")
        self.width, self.height = width, height
        with plt.rc_context(RC):
            self.fig, self.ax = plt.subplots(figsize=(fig_width, fig_width * height / width), dpi=DPI)
        self.fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.93 if title else 0.995)
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.set_aspect("equal")
        self.ax.axis("off")
        if title:
            self.ax.set_title(title, fontsize=RC["axes.titlesize"])
        self.boxes: dict[str, Box] = {}
        self.kinds_used: set[str] = set()

    def box(self, x: float, y: float, w: float, h: float, text: str, kind: str = "tensor",
            name: str | None = None, fontsize: float = 10.0, color: str | None = None) -> Box:
        """Draw a box centred at (x, y) with ``text`` (may hold ``$…$`` math and newlines); return it.

        ``kind`` picks colour and outline (see module docstring); ``name`` (default: ``text``) registers
        the box in :attr:`boxes`. Raises ValueError for an unknown kind.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        face = color or PALETTE[kind]
        lw, edge = (2.6, "#a04000") if kind == "cached" else (1.0, "#333333")
        style = "round,pad=0.02,rounding_size=0.25" if kind == "op" else "square,pad=0.02"
        self.ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, facecolor=face,
                                         edgecolor=edge, linewidth=lw, zorder=2))
        self.ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)
        b = Box(x, y, w, h)
        self.boxes[name or text] = b
        self.kinds_used.add(kind)
        return b

    def arrow(self, start: tuple[float, float], end: tuple[float, float], text: str | None = None,
              color: str = "#333333", style: str = "-|>", lw: float = 1.3, text_offset: tuple[float, float] = (0, 0.25),
              fontsize: float = 9.5, connectionstyle: str = "arc3") -> None:
        """An arrow from ``start`` to ``end`` (canvas units) with an optional label at its middle."""
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, lw=lw,
                                          zorder=1, connectionstyle=connectionstyle, shrinkA=1, shrinkB=1))
        if text:
            mx, my = (start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1]
            self.ax.text(mx, my, text, ha="center", va="bottom", fontsize=fontsize, color=color, zorder=3)

    def text(self, x: float, y: float, text: str, fontsize: float = 10.0, **kwargs) -> None:
        """Free text at (x, y) in canvas units (centred unless ``ha``/``va`` say otherwise)."""
        kwargs.setdefault("ha", "center")
        kwargs.setdefault("va", "center")
        self.ax.text(x, y, text, fontsize=fontsize, **kwargs)

    def legend(self, labels: dict[str, str] | None = None, loc: str = "lower right") -> None:
        """A legend of the box kinds used, with the meaning of each (``labels`` overrides the wording)."""
        words = {"tensor": "activation", "weight": "learned weight", "cached": "kept in the KV cache",
                 "rope": "rotated by RoPE", "op": "operation"}
        words.update(labels or {})
        handles = [Patch(facecolor=PALETTE[k], edgecolor="#a04000" if k == "cached" else "#333333",
                         linewidth=2.6 if k == "cached" else 1.0, label=words[k])
                   for k in _KINDS if k in self.kinds_used]
        self.ax.legend(handles=handles, loc=loc, fontsize=RC["legend.fontsize"], framealpha=0.95)
