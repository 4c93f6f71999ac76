"""Chapter 5 figures: one token routed through groups to experts, and what each trained expert receives.

:func:`draw_routing` draws a :class:`~dsv3_lessons.course.ch05_routing.routing.RouteReport` -- any N_r, n_group,
topk_group, K_r, so the tiny model and V3's 256 experts in 8 groups both render: one row per group with its
score (sum of its two best biased scores), kept groups outlined, masked groups greyed, the chosen experts
marked with their combine weights. Source: V3 report §2.1.2 eqs. 13–16 and the official ``Gate``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["draw_routing", "plot_specialisation", "routing_canvas"]

_CMAP = plt.get_cmap("Blues")


def routing_canvas(n_group: int, per_group: int) -> tuple[float, float]:
    """Canvas (width, height) in diagram units that :func:`draw_routing` uses for ``n_group`` rows of
    ``per_group`` experts (before any ``min_aspect`` padding)."""
    cell = min(1.3, 13.0 / per_group)
    row_h = 1.25 if per_group <= 16 else 0.75
    return max(17.0, 8.6 + per_group * cell + 0.6), n_group * row_h + 3.0


def draw_routing(report, token_label: str = "token $u_t$", title: str | None = None, fig=None,
                 min_aspect: float = 0.0):
    """Token → groups → experts for one routed token.

    Args:
        report: a :class:`~dsv3_lessons.course.ch05_routing.routing.RouteReport`.
        token_label: text of the token box (e.g. the character in its context).
        title: optional title.
    Returns: the matplotlib Figure. Expert cells are shaded by biased score; with ≤ 16 experts per group
    each cell shows its id and biased score, chosen experts get an orange outline and their weight g.
    ``min_aspect`` (height / width, default 0): pad the canvas below the groups to at least this aspect, so a
    widget keeps one figure height whatever ``n_group`` is.
    """
    n_g, per = report.n_group, report.per_group
    show_text = per <= 16
    cell = min(1.3, 13.0 / per)
    width, height = routing_canvas(n_g, per)
    row_h = 1.25 if show_text else 0.75
    height = max(height, min_aspect * width)
    dg = Diagram(width, height, title=title)
    ax = dg.ax
    lo, hi = float(report.biased.min()), float(report.biased.max())
    span = max(hi - lo, 1e-6)
    top = height - 1.1 - (0.3 if title else 0.0)
    dg.box(1.3, top - (n_g - 1) * row_h / 2, 2.2, 1.2, token_label, "tensor", fontsize=10)
    kept = set(report.kept_groups)
    chosen = {e: w for e, w in zip(report.chosen, report.weights)}
    for g in range(n_g):
        y = top - g * row_h
        ok = g in kept
        dg.box(4.75, y, 3.5, row_h * 0.8, f"group {g}: {float(report.group_scores[g]):.2f}"
               + ("" if ok else ("\nmasked: −∞" if show_text else "  (−∞)")), "op", fontsize=9.5 if show_text else 9,
               color="#d9f2e6" if ok else "#eeeeee", name=f"group{g}")
        if ok:
            dg.arrow((2.45, top - (n_g - 1) * row_h / 2), (3.0, y), color=PALETTE["green"], lw=1.6)
        for j in range(per):
            e = g * per + j
            x0 = 6.6 + j * cell
            val = (float(report.biased[e]) - lo) / span
            face = _CMAP(0.15 + 0.7 * val) if ok else "#f4f4f4"
            is_chosen = e in chosen
            ax.add_patch(Rectangle((x0, y - row_h * 0.38), cell * 0.92, row_h * 0.76, facecolor=face,
                                   edgecolor=PALETTE["red"] if is_chosen else "#999999",
                                   linewidth=2.8 if is_chosen else 0.6, zorder=2))
            if show_text:
                colour = "white" if ok and val > 0.6 else ("#999999" if not ok else "black")
                ax.text(x0 + cell * 0.46, y + 0.12, f"e{e}", ha="center", va="bottom", fontsize=8.5, color=colour,
                        zorder=3)
                ax.text(x0 + cell * 0.46, y + 0.08, f"{float(report.biased[e]):.2f}", ha="center", va="top",
                        fontsize=8.5, color=colour, zorder=3)
            if is_chosen and show_text:
                ax.text(x0 + cell * 0.46, y - row_h * 0.42, f"g={chosen[e]:.2f}", ha="center", va="top",
                        fontsize=8.5 if show_text else 7, color=PALETTE["red"], zorder=3)
    dg.text(0.3, 1.0, f"cells: biased score $s_i+b_i$ (used for selection only); kept groups: {report.topk_group} "
            f"of {n_g} (group score = sum of its 2 best); orange outline: the top-{report.top_k} chosen", fontsize=9.5, ha="left")
    picks = ", ".join(f"e{e}: {w:.2f}" for e, w in zip(report.chosen, report.weights))
    dg.text(0.3, 0.4, f"weights g = unbiased $s_i$ / Σ chosen $s$ × {report.scale:g}:  {picks}", fontsize=9.5,
            ha="left")
    return dg.fig


def plot_specialisation(counts: torch.Tensor, classes: tuple[str, ...], base: torch.Tensor | None = None,
                        title: str | None = None):
    """Heatmap of what each expert receives, relative to the text's own mix of character classes.

    ``counts [N_r, C]`` (tokens per expert and class, :func:`~dsv3_lessons.course.ch05_routing.routing.specialisation`);
    ``base [C]`` the class frequencies of the text (default: counts summed over experts). Each cell shows the
    share of the expert's tokens in that class divided by the class's share of the text: 1 = no preference,
    > 1 = the expert receives that class more often. Returns the Figure.
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
    im = ax.imshow(lift.log2().clamp(-3, 3).numpy(), cmap="RdBu_r", vmin=-3, vmax=3, aspect="auto")
    for i in range(n_r):
        for j in range(len(classes)):
            ax.text(j, i, f"{lift[i, j]:.1f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(float(lift[i, j].log2())) > 2 else "black")
    ax.set_xticks(range(len(classes)), [f"{c}\n({100 * float(b):.0f}% of text)" for c, b in zip(classes, base)],
                  fontsize=9)
    ax.set_yticks(range(n_r), [f"expert {i}" for i in range(n_r)])
    cb = fig.colorbar(im, ax=ax, ticks=[-3, -2, -1, 0, 1, 2, 3])
    cb.ax.set_yticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    cb.set_label("share vs text (×)")
    if title:
        ax.set_title(title)
    return fig
