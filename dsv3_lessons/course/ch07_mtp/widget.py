"""Chapter 7's widget: a packed-window explorer -- document lengths and the number of MTP depths D give the labels
every depth trains on, and what the λ-weighted MTP term becomes under the course's convention and under eq. 24.

The pure function :func:`window_report` computes everything (from :func:`~dsv3_lessons.course.ch07_mtp.experiments.
pack_documents` and :func:`dsv3_lessons.model.mtp.mtp_labels`); the notebook calls it once directly, then shows
:class:`WindowExplorer`. Controls: ``docs`` (Text, comma-separated document lengths in tokens), ``depths`` (D,
IntSlider 1–3), ``lam`` (λ, FloatSlider 0.05–0.5).

The loss term. Every label costs the same cross-entropy ``ce`` here (default ln V, an untrained model's loss), so
the explorer shows only how the two normalisations weigh the depths (V3 report §2.2):

* course (the library): L_MTP = (λ/D)·Σ_k mean over depth k's own unmasked labels = (λ/D)·Σ_{k: n_k > 0} ce;
* eq. 24 as printed: L_MTP = (λ/D)·Σ_k (1/T)·Σ_i CE = (λ/D)·Σ_k (n_k/T)·ce -- a depth that lost labels to the
  tail and to document boundaries counts for less.

The figure: one row per depth (main model first), one column per position i; a cell is coloured by the document
of the token it learns, grey where the label is masked at a document boundary, blank where the position has no
label inside the window (the dropped tail). Built once (:class:`WindowFigure`, fixed layout) and updated in place:
one ``imshow`` for the grid (fast at any T); token names are written in the cells only when T ≤ 16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import torch
from matplotlib.colors import to_rgb

from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_labels
from dsv3_lessons.course.common.style import subplots
from dsv3_lessons.course.common.widget import ReportWidget
from dsv3_lessons.course.ch07_mtp.experiments import pack_lengths

__all__ = ["WindowReport", "window_report", "WindowFigure", "plot_window", "WindowExplorer", "parse_lengths",
           "MAX_TOKENS", "MAX_DEPTHS", "TEXT_MAX_T"]

MAX_TOKENS = 129          # a window of at most 128 positions
MAX_DEPTHS = 3
_DOC_COLOURS = ["#9ecae1", "#fdae6b", "#a1d99b", "#dadaeb", "#fcbba1", "#c7e9c0", "#fdd0a2", "#bcbddc"]
_MASKED, _TAIL = "#8c8c8c", "#ffffff"
_SUB = "₀₁₂₃₄₅₆₇₈₉"


@dataclass(frozen=True)
class WindowReport:
    """What the explorer shows for one setting.

    Attributes: ``doc_lengths``; ``depths`` (D); ``lam`` (λ); ``ce`` (the per-label cross-entropy assumed, nats);
    ``T`` (positions: tokens − 1); ``labels`` ``[D + 1][T]`` label token index j of t_j per position, −100 where
    masked, −1 where the position has no label (tail); ``label_doc`` the same shape, the document of the label's
    token (−1 if none); ``positions[k]`` = T − k; ``counts[k]`` unmasked labels of depth k (0 = main model);
    ``term_course`` / ``term_eq24``: the MTP loss term (nats per token) under each convention.
    """

    doc_lengths: tuple[int, ...]
    depths: int
    lam: float
    ce: float
    T: int
    labels: tuple[tuple[int, ...], ...]
    label_doc: tuple[tuple[int, ...], ...]
    positions: tuple[int, ...]
    counts: tuple[int, ...]
    term_course: float
    term_eq24: float


def parse_lengths(text: str | tuple | list) -> tuple[int, ...]:
    """``"20, 30, 2"`` (or a sequence of ints) -> ``(20, 30, 2)``. Raises ValueError naming what is wrong."""
    if isinstance(text, str):
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            lengths = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"document lengths must be whole numbers separated by commas, got {text!r}") from None
    else:
        lengths = tuple(int(n) for n in text)
    if not lengths or any(n < 1 for n in lengths):
        raise ValueError(f"document lengths must be positive token counts, got {text!r}")
    if len(lengths) > len(_DOC_COLOURS):
        raise ValueError(f"at most {len(_DOC_COLOURS)} documents, got {len(lengths)}")
    if not 2 <= sum(lengths) <= MAX_TOKENS:
        raise ValueError(f"the documents must hold 2 to {MAX_TOKENS} tokens in all (a window of up to "
                         f"{MAX_TOKENS - 1} positions), got {sum(lengths)}")
    return lengths


def window_report(doc_lengths, depths: int = 2, lam: float = 0.3, ce: float = math.log(84)) -> WindowReport:
    """Labels per depth of a window packing documents of ``doc_lengths`` tokens, and the MTP term they give.

    Args:
        doc_lengths: token counts (a sequence or ``"20, 30, 2"``); 2 … :data:`MAX_TOKENS` tokens in all.
        depths: D, 1 … :data:`MAX_DEPTHS`; lam: λ > 0; ce: the cross-entropy every label is assumed to cost (nats).
    Raises:
        ValueError: bad lengths, D outside 1 … 3, λ ≤ 0 or ce < 0.
    """
    lengths = parse_lengths(doc_lengths)
    if not (isinstance(depths, int) and 1 <= depths <= MAX_DEPTHS):
        raise ValueError(f"depths (D) must be an integer in 1 … {MAX_DEPTHS}, got {depths!r}")
    if not lam > 0:
        raise ValueError(f"lam (λ) must be > 0, got {lam}")
    if not (ce >= 0 and math.isfinite(ce)):
        raise ValueError(f"ce must be a finite cross-entropy >= 0, got {ce}")
    ids, targets, doc_ids = pack_lengths(lengths)       # token j is t_j
    t = ids.shape[1]
    doc_of = torch.cat([torch.full((n,), j) for j, n in enumerate(lengths)])
    rows, row_docs, positions, counts = [], [], [], []
    for k in range(depths + 1):
        lab = mtp_labels(targets, k, doc_ids)[0].tolist() if k < t else []
        lab_doc = [int(doc_of[v]) if v != IGNORE_INDEX else -1 for v in lab]
        rows.append(tuple(lab + [-1] * (t - len(lab))))
        row_docs.append(tuple(lab_doc + [-1] * (t - len(lab))))
        positions.append(len(lab))
        counts.append(sum(v != IGNORE_INDEX for v in lab))
    course = lam / depths * sum(ce for n in counts[1:] if n > 0)
    eq24 = lam / depths * sum(ce * n / t for n in counts[1:])
    return WindowReport(lengths, depths, float(lam), float(ce), t, tuple(rows), tuple(row_docs), tuple(positions),
                        tuple(counts), course, eq24)


def _image(report: WindowReport) -> list[list[tuple[float, float, float]]]:
    img = []
    for lab, docs in zip(report.labels, report.label_doc):
        img.append([to_rgb(_TAIL if v == -1 else _MASKED if v == IGNORE_INDEX else _DOC_COLOURS[d % len(_DOC_COLOURS)])
                    for v, d in zip(lab, docs)])
    return img


class WindowFigure:
    """The explorer's figure, built once with a fixed layout and updated in place by :meth:`show`: one image
    (inputs + one row per depth), the row names, the label counts and, for T ≤ :data:`TEXT_MAX_T`, the token
    names in the cells."""

    def __init__(self):
        fig, ax = subplots(1, 1, height=3.4)
        fig.set_layout_engine(None)                     # the layout is fixed by hand: no solve per update
        ax.set_position([0.15, 0.2, 0.74, 0.68])
        self.fig, self.ax = fig, ax
        self.im = ax.imshow([[to_rgb(_TAIL)]], aspect="auto", interpolation="nearest")
        ax.tick_params(axis="y", length=0)
        ax.set_xlabel("position i; colour = document of the token learnt, grey = masked at a document boundary, "
                      "white = no label (tail)", fontsize=10)
        self._texts: list = []

    def show(self, report: WindowReport):
        t, d, ax = report.T, report.depths, self.ax
        for text in self._texts:
            text.remove()
        self._texts = []
        colours = [to_rgb(_DOC_COLOURS[j % len(_DOC_COLOURS)]) for j, n in enumerate(report.doc_lengths)
                   for _ in range(n)][:t]
        self.im.set_data([colours] + _image(report))
        self.im.set_extent((-0.5, t - 0.5, d + 0.5, -1.5))
        ax.set_xlim(-0.5, t - 0.5)
        ax.set_ylim(d + 0.5, -1.5)
        names = ["input tᵢ", "main: tᵢ₊₁"] + [f"depth {k}: tᵢ₊{_SUB[k + 1]}" for k in range(1, d + 1)]
        ax.set_yticks(range(-1, d + 1), names)   # unicode subscripts: no mathtext layout per update
        for y in [k + 0.5 for k in range(-1, d)]:
            self._texts.append(ax.axhline(y, color="white", lw=2))
        if t <= TEXT_MAX_T:
            for i in range(t):
                self._texts.append(ax.text(i, -1, f"t{i}", ha="center", va="center", fontsize=9))
                for k, lab in enumerate(report.labels):
                    if lab[i] != -1:
                        word, colour = (f"t{lab[i]}", "black") if lab[i] >= 0 else ("−100", "white")
                        self._texts.append(ax.text(i, k, word, ha="center", va="center", fontsize=9, color=colour))
        for k in range(d + 1):
            self._texts.append(ax.text(t - 0.3, k, f" {report.counts[k]} labels", ha="left", va="center",
                                       fontsize=10.5, clip_on=False))
        ax.set_title(f"documents {list(report.doc_lengths)} (T = {t}): the labels each depth trains on", fontsize=12,
                     y=1.02)                      # a fixed title position: no tight-bbox search per update
        return self.fig


#: token names are written in the cells up to this window length
TEXT_MAX_T = 16


def plot_window(report: WindowReport):
    """The label grid of ``report`` (rows: main model, depth 1 … D; the input tokens on top). Returns the Figure."""
    return WindowFigure().show(report)


class WindowExplorer(ReportWidget):
    """See the module docstring."""

    def __init__(self, docs: str = "20, 30, 2, 13", depths: int = 2, lam: float = 0.3):
        style = {"description_width": "initial"}
        self.docs = widgets.Text(value=docs, description="document lengths (tokens, comma-separated)", style=style,
                                 layout=widgets.Layout(width="520px"), continuous_update=False)
        self.depths = widgets.IntSlider(value=depths, min=1, max=MAX_DEPTHS, description="MTP depths D",
                                        style=style, continuous_update=False)
        self.lam = widgets.FloatSlider(value=lam, min=0.05, max=0.5, step=0.05, description="loss weight λ",
                                       style=style, readout_format=".2f", continuous_update=False)
        self._figure: WindowFigure | None = None
        self._drawn = None                    # (documents, D) of the grid on show
        self._build([self.docs, self.depths, self.lam],
                    layout=[self.docs, widgets.HBox([self.depths, self.lam])])

    def compute(self) -> WindowReport:
        return window_report(self.docs.value, self.depths.value, self.lam.value)

    def draw(self, report: WindowReport):
        """The grid of ``report``, or None when the documents and D are those on show (λ changes the readout
        alone)."""
        key = (report.doc_lengths, report.depths)
        if key == self._drawn:
            return None
        if self._figure is None:
            self._figure = WindowFigure()
        fig = self._figure.show(report)
        self._drawn = key
        return fig

    def describe(self, report: WindowReport) -> str:
        lines = [f"T = {report.T} positions; labels that count: main {report.counts[0]}, "
                 + ", ".join(f"depth {k} {report.counts[k]} of {report.positions[k]}" for k in range(1, report.depths + 1))]
        lines.append(f"MTP term with every label at CE = {report.ce:.2f} nats (λ = {report.lam:g}, D = {report.depths}):")
        lines.append(f"  course (mean over each depth's own labels): {report.term_course:.3f}")
        lines.append(f"  eq. 24 as printed (÷ T):                    {report.term_eq24:.3f}")
        return "\n".join(lines)
