"""Chapter 5 figures: one token routed through groups to experts, and what each trained expert receives.

:func:`draw_routing` draws a :class:`~dsv3_lessons.course.ch05_routing.routing.RouteReport` -- any N_r, n_group,
topk_group, K_r, so the tiny model and V3's 256 experts in 8 groups both render: one row per group with its
score (sum of its two best biased scores), kept groups outlined, masked groups greyed, the chosen experts
marked with their combine weights. Source: V3 report §2.1.2 eqs. 13–16 and the official ``Gate``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from dsv3_lessons.course.common.style import PALETTE, subplots

__all__ = ["draw_routing", "plot_specialisation", "routing_canvas", "RoutingFigure"]

_CMAP = plt.get_cmap("Blues")
_BIAS_COLOUR = PALETTE["purple"]
_X_TOKEN, _X_GROUP, _GROUP_W, _X_CELLS = 1.3, 4.75, 3.5, 6.6
_WIDTH = 17.0


def _cell_width(per_group: int) -> float:
    """Expert-cell width in canvas units: wide cells when a group has few experts (so the drawing fills the
    figure), down to 13 / per_group for V3's 32 per group."""
    return min(2.4, 13.0 / per_group)


def _has_side_panel(per_group: int) -> bool:
    return _X_CELLS + per_group * _cell_width(per_group) + 0.6 <= _WIDTH - 5.0


def routing_canvas(n_group: int, per_group: int) -> tuple[float, float]:
    """Canvas (width, height) in diagram units that :func:`draw_routing` uses for ``n_group`` rows of
    ``per_group`` experts (before any ``min_aspect`` padding)."""
    row_h = 1.25 if per_group <= 16 else 0.75
    return max(_WIDTH, _X_CELLS + per_group * _cell_width(per_group) + 0.6), n_group * row_h + 2.9


class RoutingFigure:
    """The routing drawing for one layout (``n_group`` rows of ``per_group`` experts), built once and updated in
    place by :meth:`update` -- the routing explorer keeps one per layout, so moving a control only changes colours
    and texts.

    Left to right: the token; one box per group with its score (the sum of its two best biased scores), green when
    kept, grey and "−∞" when masked, an arrow to every kept group; the experts of each group as cells shaded by
    biased score (with ≤ 16 experts per group: id and biased score printed, and g inside the cell of a chosen expert);
    the chosen experts outlined in orange; the expert whose bias a widget moves outlined in purple dashes (its Δb in
    the caption and the side panel, so no label crosses the frame). With few experts
    per group a panel on the right lists the chosen experts; two caption lines at the bottom say how to read it.

    ``pyplot=False`` builds a bare matplotlib Figure (for a widget, which renders it to PNG itself); True a pyplot
    figure that ``plt.show()`` displays. Attributes: ``fig``, ``ax``.
    """

    def __init__(self, n_group: int, per_group: int, min_aspect: float = 0.0, pyplot: bool = True):
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

        from dsv3_lessons.course.common.style import DPI, FIG_WIDTH, RC

        self.n_group, self.per = n_group, per_group
        self.show_text = per_group <= 16
        self.side = _has_side_panel(per_group)
        width, height = routing_canvas(n_group, per_group)
        height = max(height, min_aspect * width)
        self.width, self.height = width, height
        size = (FIG_WIDTH, FIG_WIDTH * height / width)
        if pyplot:
            with plt.rc_context(RC):
                self.fig = plt.figure(figsize=size, dpi=DPI)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            self.fig = Figure(figsize=size, dpi=DPI)
            FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_axes((0.005, 0.005, 0.99, 0.99 - 0.55 / size[1]))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.set_aspect("equal")
        ax.axis("off")
        self.title = ax.set_title("", fontsize=RC["axes.titlesize"])
        row_h = self.row_h = 1.25 if self.show_text else 0.75
        cw = self.cell_w = _cell_width(per_group)
        top = self.top = height - 1.0
        mid = top - (n_group - 1) * row_h / 2
        ax.add_patch(FancyBboxPatch((_X_TOKEN - 1.1, mid - 0.6), 2.2, 1.2, boxstyle="square,pad=0.02",
                                    facecolor=PALETTE["tensor"], edgecolor="#333333", linewidth=1.0, zorder=2))
        self.token = ax.text(_X_TOKEN, mid, "", ha="center", va="center", fontsize=10, zorder=3)
        fs = 9.5 if self.show_text else 9
        self.group_box, self.group_text, self.arrows = [], [], []
        self.cells, self.values, self.weights = [], [], []
        for g in range(n_group):
            y = top - g * row_h
            box = FancyBboxPatch((_X_GROUP - _GROUP_W / 2, y - row_h * 0.4), _GROUP_W, row_h * 0.8,
                                 boxstyle="round,pad=0.02,rounding_size=0.25", facecolor="#eeeeee",
                                 edgecolor="#333333", linewidth=1.0, zorder=2)
            ax.add_patch(box)
            self.group_box.append(box)
            self.group_text.append(ax.text(_X_GROUP, y, "", ha="center", va="center", fontsize=fs, zorder=3))
            arrow = FancyArrowPatch((_X_TOKEN + 1.15, mid), (_X_GROUP - _GROUP_W / 2 - 0.05, y), arrowstyle="-|>",
                                    mutation_scale=12, color=PALETTE["green"], lw=1.6, zorder=1, shrinkA=1, shrinkB=1)
            ax.add_patch(arrow)
            self.arrows.append(arrow)
            for j in range(per_group):
                x0 = _X_CELLS + j * cw
                cell = Rectangle((x0, y - row_h * 0.38), cw * 0.92, row_h * 0.76, facecolor="#f4f4f4",
                                 edgecolor="#999999", linewidth=0.6, zorder=2)
                ax.add_patch(cell)
                self.cells.append(cell)
                if self.show_text:   # id and biased score in the upper part of the cell, g in the lower part:
                    xc = x0 + cw * 0.46  # both inside the cell, so no label crosses the purple frame around it
                    cell_fs = 8.5 if per_group <= 4 else 7.5      # narrower cells (n_group = 1): smaller
                    self.values.append(ax.text(xc, y + row_h * 0.12, "", ha="center", va="center", fontsize=cell_fs,
                                               zorder=3, linespacing=1.15))
                    self.weights.append(ax.text(xc, y - row_h * 0.25, "", ha="center", va="center", fontsize=cell_fs,
                                                fontweight="bold", zorder=3))
        self.bias_box = Rectangle((0, 0), cw * 0.96, row_h * 0.9, facecolor="none", edgecolor=_BIAS_COLOUR,
                                  linewidth=2.2, linestyle=(0, (3, 2)), zorder=4)
        ax.add_patch(self.bias_box)
        x_side = _X_CELLS + per_group * cw + 0.7
        self.side_text = ax.text(x_side, top + 0.35, "", ha="left", va="top", fontsize=9.5, zorder=3,
                                 family="DejaVu Sans") if self.side else None
        # the captions sit right under the last row, so a figure padded to a taller layout's height (the widget
        # keeps one height for every n_group) has its blank space at the bottom, not between rows and captions
        y_caption = top - (n_group - 1) * row_h - row_h - 0.75
        self.caption = [ax.text(0.3, y_caption - 0.5 * k, "", ha="left", va="center", fontsize=9.5)
                        for k in range(3)]

    def update(self, report, token_label: str = "token $u_t$", title: str | None = None,
               bias_expert: int | None = None, bias_delta: float = 0.0):
        """Draw ``report`` (a :class:`~dsv3_lessons.course.ch05_routing.routing.RouteReport` of this layout);
        ``bias_expert`` (optional) is outlined in purple dashes with its extra bias ``bias_delta``. Returns the
        Figure. Raises ValueError for a report of another layout."""
        if (report.n_group, report.per_group) != (self.n_group, self.per):
            raise ValueError(f"this figure draws {self.n_group} groups of {self.per} experts, the report has "
                             f"{report.n_group} of {report.per_group}")
        self.title.set_text(title or "")
        self.token.set_text(token_label)
        lo, hi = float(report.biased.min()), float(report.biased.max())
        span = max(hi - lo, 1e-6)
        kept = set(report.kept_groups)
        chosen = dict(zip(report.chosen, report.weights))
        biased = report.biased.tolist()
        for g in range(self.n_group):
            ok = g in kept
            self.group_box[g].set_facecolor("#d9f2e6" if ok else "#eeeeee")
            score = f"group {g}: {float(report.group_scores[g]):.2f}"
            self.group_text[g].set_text(score + ("" if ok else ("\nmasked: −∞" if self.show_text else "  (−∞)")))
            self.arrows[g].set_visible(ok)
            for j in range(self.per):
                e = g * self.per + j
                val = (biased[e] - lo) / span
                cell = self.cells[e]
                cell.set_facecolor(_CMAP(0.15 + 0.7 * val) if ok else "#f4f4f4")
                is_chosen = e in chosen
                cell.set_edgecolor(PALETTE["red"] if is_chosen else "#999999")
                cell.set_linewidth(2.8 if is_chosen else 0.6)
                if self.show_text:
                    colour = "white" if ok and val > 0.6 else ("#999999" if not ok else "black")
                    self.values[e].set_color(colour)
                    self.values[e].set_text(f"e{e}\n{biased[e]:.2f}")
                    self.weights[e].set_color(colour)
                    self.weights[e].set_text(f"g={chosen[e]:.2f}" if is_chosen else "")
        marked = bias_expert is not None and 0 <= bias_expert < self.n_group * self.per
        self.bias_box.set_visible(marked)
        if marked:
            g, j = divmod(bias_expert, self.per)
            y = self.top - g * self.row_h
            x0 = _X_CELLS + j * self.cell_w
            self.bias_box.set_xy((x0 - self.cell_w * 0.02, y - self.row_h * 0.45))
        picks = ", ".join(f"e{e}: {w:.2f}" for e, w in zip(report.chosen, report.weights))
        self.caption[0].set_text(f"cells: biased score $s_i+b_i$ (selection only). Kept: {report.topk_group} of "
                                 f"{self.n_group} groups; a group's score is the sum of its 2 best cells.")
        self.caption[1].set_text(f"orange outline: the top-{report.top_k} chosen, with their weight g"
                                 + (f"; purple dashes: e{bias_expert}, whose bias moves (Δb {bias_delta:+.2f})."
                                    if marked else "."))
        self.caption[2].set_text(f"weights g = unbiased $s_i$ / Σ chosen $s$ × {report.scale:g}:  {picks}")
        if self.side_text is not None:
            lines = [f"chosen (top-{report.top_k}):"]
            lines += [f"  e{e}:  g = {w:.2f}   (s = {float(report.scores[e]):.2f})"
                      for e, w in zip(report.chosen, report.weights)]
            lines += ["", f"kept groups: {', '.join(str(g) for g in report.kept_groups)}"]
            if marked:
                lines += [f"Δb on e{bias_expert}: {bias_delta:+.2f}"]
            self.side_text.set_text("\n".join(lines))
        return self.fig


def draw_routing(report, token_label: str = "token $u_t$", title: str | None = None, fig=None,
                 min_aspect: float = 0.0, bias_expert: int | None = None, bias_delta: float = 0.0):
    """Token → groups → experts for one routed token (a pyplot figure; see :class:`RoutingFigure`).

    Args:
        report: a :class:`~dsv3_lessons.course.ch05_routing.routing.RouteReport`.
        token_label: text of the token box (e.g. the character in its context).
        title: optional title.
        min_aspect: pad the canvas below the groups to at least this aspect (height / width), so a widget keeps
            one figure height whatever ``n_group`` is.
        bias_expert, bias_delta: optionally outline that expert in purple dashes with its extra bias.
    Returns: the matplotlib Figure. Expert cells are shaded by biased score; with ≤ 16 experts per group each cell
    shows its id and biased score, chosen experts get an orange outline and their weight g.
    """
    drawing = RoutingFigure(report.n_group, report.per_group, min_aspect=min_aspect, pyplot=True)
    return drawing.update(report, token_label, title, bias_expert, bias_delta)


def plot_specialisation(counts: torch.Tensor, classes: tuple[str, ...], base: torch.Tensor | None = None,
                        title: str | None = None):
    """Heatmap of what each expert receives, relative to the text's own mix of character classes.

    ``counts [N_r, C]`` (tokens per expert and class, :func:`~dsv3_lessons.course.ch05_routing.routing.specialisation`);
    ``base [C]`` the class frequencies of the text (default: counts summed over experts). Each cell shows the
    share of the expert's tokens in that class divided by the class's share of the text: 1 = no preference,
    > 1 = the expert receives that class more often; a class the expert never received is grey with "0" (no
    ratio to shade on the log scale). Returns the Figure.
    """
    counts = counts.float()
    base = (counts.sum(0) if base is None else base.float())
    present = base > 0  # classes absent from the text are left out (no share to compare with)
    counts, base, classes = counts[:, present], base[present], tuple(c for c, p in zip(classes, present) if p)
    base = base / base.sum()
    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    lift = share / base.clamp(min=1e-9)
    n_r = counts.shape[0]
    fig, ax = subplots(1, 1, height=max(2.6, 0.42 * n_r + 1.4))
    none = (counts == 0).numpy()
    # an expert that received none of a class has no ratio on the log scale: paint it grey and write "0",
    # instead of the darkest blue that means "≤ 1/8"
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#e4e4e4")
    shown = np.ma.masked_array(lift.clamp(min=1e-9).log2().clamp(-3, 3).numpy(), mask=none)
    im = ax.imshow(shown, cmap=cmap, vmin=-3, vmax=3, aspect="auto")
    for i in range(n_r):
        for j in range(len(classes)):
            if none[i, j]:
                ax.text(j, i, "0", ha="center", va="center", fontsize=9, color="#777777")
                continue
            value = float(lift[i, j])
            ax.text(j, i, f"{value:.1f}" if value >= 0.095 else f"{value:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(float(lift[i, j].log2())) > 2 else "black")
    ax.set_xticks(range(len(classes)), [f"{c}\n({100 * float(b):.0f}% of text)" for c, b in zip(classes, base)],
                  fontsize=9)
    ax.set_yticks(range(n_r), [f"expert {i}" for i in range(n_r)])
    cb = fig.colorbar(im, ax=ax, ticks=[-3, -2, -1, 0, 1, 2, 3])
    cb.ax.set_yticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    cb.set_label("share vs text (×); grey: none")
    if title:
        ax.set_title(title)
    return fig
