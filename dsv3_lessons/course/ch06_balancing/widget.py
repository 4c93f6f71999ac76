"""Expert-load widget (chapter 6): per-expert load, MaxVio and the bias, step by step, for each balancing method.

Reads the stored run histories (:func:`dsv3_lessons.course.ch06_balancing.runs.load_runs`) and, for the method
``"re-simulated bias (frozen router)"``, re-runs the bias update with the chosen γ on the frozen router of the
unbalanced run (:func:`~dsv3_lessons.course.ch06_balancing.runs.resimulate_bias`, a fraction of a second). The
pure function :func:`load_view` computes what is shown; the notebook calls it once directly.

Controls (attributes): ``method`` (Dropdown), ``layer`` (Dropdown of the main MoE layers), ``step`` (IntSlider,
linked to ``play``, a Play button), ``gamma`` (FloatLogSlider; used only by the re-simulation, disabled otherwise).
The axes stay fixed while the step moves: loads are shown relative to the mean (1 = perfectly balanced),
y-limits and colour scales are fixed per layer.

Speed (browser review, issue 18): the figure is built once (:class:`LoadFigure`) and updated in place, with the layout
solved once and frozen, and rendered by blitting (:class:`~dsv3_lessons.course.common.blit.BlitRenderer`): every
artist that changes with a control -- bars, heatmap image, bias lines, titles, step lines -- is drawn over a cached
background of axes, ticks, labels, legend and colour bar (one background per y-range of the bias panel, which a
few values cover), so a move of any control draws no tick or label anew. The re-simulation draws its batches once
per layer (:func:`~dsv3_lessons.course.ch06_balancing.runs.sample_batches`; they do not depend on γ) and keeps
every γ it has run; the default γ is run when the widget is built, so the first switch to it does not wait.

At a large γ (0.1 on the slider) the bias panel fills with bands of colour: every step moves every bias by ±γ, and
once a step overshoots, the next one reverses it, so each line zig-zags between two values at every step. The
readout gives the share of the last 50 moves that reversed the one before.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from dsv3_lessons.course.ch06_balancing.figures import EXPERT_COLOURS
from dsv3_lessons.course.ch06_balancing.runs import LABELS, METHODS, resimulate_bias, sample_batches
from dsv3_lessons.course.common.blit import BlitRenderer
from dsv3_lessons.course.common.style import subplots
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["RESIM", "LoadView", "load_view", "LoadFigure", "plot_load_view", "bias_reversals", "ExpertLoadWidget",
           "expert_load_widget"]

RESIM = "resim"
_CAP = 4.0  # relative loads above this are drawn at the top of the axis
_HEAT_CAP = 3.0  # the heatmap's colour scale ends here
_MAX_BACKGROUNDS = 6  # blitting backgrounds kept by the widget's figure (one per bias-panel y-range)
#: y-ranges (±) of the bias panel: a re-simulation's range is the first that holds its biases
_BIAS_LIMITS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass(frozen=True)
class LoadView:
    """What the widget shows for one (method, layer, step, γ).

    Attributes: ``label``; ``rel_load [steps, N_r]`` counts / mean count at every step; ``bias [steps, N_r]``
    (value used at each step); ``step`` (1-based); ``max_vio`` (batch MaxVio at that step, this layer);
    ``counts [N_r]`` the counts at that step; ``gamma`` (γ of the run).
    """

    label: str
    rel_load: torch.Tensor
    bias: torch.Tensor
    step: int
    max_vio: float
    counts: torch.Tensor
    gamma: float


def _relative(counts: torch.Tensor) -> torch.Tensor:
    counts = counts.float()
    return counts / counts.mean(-1, keepdim=True)


def load_view(runs: dict, method: str, layer: int, step: int, gamma: float | None = None,
              unbalanced: dict | None = None, _cache: dict | None = None) -> LoadView:
    """The load picture of ``method`` at ``step`` for main MoE layer ``layer``.

    Args:
        runs: stored histories (``load_runs()``); method: one of :data:`METHODS` or :data:`RESIM`;
        layer: index among the main MoE layers; step: 1 .. number of steps;
        gamma: γ for :data:`RESIM` (ignored otherwise); unbalanced: the ``"unbalanced"`` routing snapshot
            (needed for :data:`RESIM`).
    Raises:
        ValueError: unknown method, layer or step out of range, missing snapshot for the re-simulation.
    """
    if method not in (*METHODS, RESIM):
        raise ValueError(f"method must be one of {(*METHODS, RESIM)}, got {method!r}")
    first = runs["runs"][METHODS[0]]
    n_layers, n_steps = len(first["main_layers"]), len(first["step"])
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers}), got {layer}")
    if not 1 <= step <= n_steps:
        raise ValueError(f"step must be in [1, {n_steps}], got {step}")
    if method == RESIM:
        if unbalanced is None:
            raise ValueError("the re-simulation needs the 'unbalanced' routing snapshot (load_snapshot(which="
                             "'unbalanced'))")
        if gamma is None or gamma < 0:
            raise ValueError(f"gamma must be >= 0 for the re-simulation, got {gamma}")
        cfg = runs["meta"]["config"]
        budget = runs["meta"]["budget"]
        key = (layer, round(float(gamma), 8))
        sim = _cache.get(key) if _cache is not None else None
        if sim is None:
            scores = unbalanced["sample_scores"][layer].float()
            tokens = budget["batch_size"] * budget["seq_len"]
            batches = _cache.get(("batches", layer)) if _cache is not None else None
            if batches is None:
                batches = sample_batches(scores, n_steps, tokens)
                if _cache is not None:
                    _cache[("batches", layer)] = batches
            sim = resimulate_bias(scores, cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"],
                                  float(gamma), steps=n_steps, batch_tokens=tokens, batches=batches)
            if _cache is not None:
                _cache[key] = sim
        counts_all, bias, label, g = sim["counts"], sim["bias"], f"re-simulated bias, frozen router, γ = {gamma:.3g}", gamma
    else:
        run = runs["runs"][method]
        row = run["main_layers"][layer]
        counts_all = torch.tensor([c[row] for c in run["counts"]], dtype=torch.float32)
        bias = torch.tensor([b[row] for b in run["bias"]], dtype=torch.float32)
        label, g = LABELS[method], run["settings"]["gamma"]
    rel = _relative(counts_all)
    c = counts_all[step - 1]
    mv = float((c.max() - c.mean()) / c.mean())
    return LoadView(label, rel, bias, step, mv, c, float(g))


class LoadFigure:
    """The widget's figure, built once and updated in place (fast redraws: no new artists per update).

    Three panels: loads at the step (bars, relative to the mean, one colour per expert as in the bias panel),
    loads over steps (heatmap, a white line at the step), biases over steps (one line per expert, a legend of
    expert ids, a black line at the step). The layout is solved once, then frozen. :meth:`show` puts a
    :class:`LoadView` on it and returns the Figure; :meth:`png` renders it.

    With ``blit=True`` (the widget) :meth:`png` blits (:class:`~dsv3_lessons.course.common.blit.BlitRenderer`):
    everything a control changes -- bars, the heatmap image, the bias lines, the titles and the step lines -- is
    drawn over a background of the rest (axes, ticks, labels, legend, colour bar), one background per y-range of
    the bias panel.
    """

    def __init__(self, n_steps: int, n_routed: int, bias_limit: float = 1.0, blit: bool = False):
        self.n_steps, self.n_routed, self.blit = n_steps, n_routed, blit
        fig, (a1, a2, a3) = subplots(1, 3, height=3.7, gridspec_kw={"width_ratios": [1, 1.35, 1.25]})
        self.fig, self.axes = fig, (a1, a2, a3)
        colours = [EXPERT_COLOURS[i % len(EXPERT_COLOURS)] for i in range(n_routed)]
        self.bars = list(a1.bar(range(n_routed), [1.0] * n_routed, color=colours))
        a1.axhline(1.0, color="#555555", ls="--", lw=1)
        a1.set_ylim(0, _CAP)
        a1.set_xticks(range(n_routed))
        a1.set_xlabel("expert")
        a1.set_ylabel("load / mean load")
        self.step_title = a1.text(0.5, 1.015, " ", transform=a1.transAxes, ha="center", va="bottom", fontsize=12)
        self.im = a2.imshow(torch.zeros(n_routed, n_steps).numpy(), aspect="auto", cmap="viridis", vmin=0,
                            vmax=_HEAT_CAP, extent=(0.5, n_steps + 0.5, n_routed - 0.5, -0.5),
                            interpolation="nearest")
        self.step_line2 = a2.axvline(n_steps, color="w", lw=1.5)
        a2.set_xlabel("training step")
        a2.set_ylabel("expert")
        fig.colorbar(self.im, ax=a2, label=f"load / mean (capped at {_HEAT_CAP:g})")
        steps = list(range(1, n_steps + 1))
        self.lines = [a3.plot(steps, [0.0] * n_steps, lw=1.3, color=c, label=f"e{i}")[0]
                      for i, c in enumerate(colours)]
        self.step_line3 = a3.axvline(n_steps, color="k", lw=1)
        a3.set_ylim(-bias_limit, bias_limit)
        a3.set_xlabel("training step")
        a3.set_ylabel("bias $b_i$")
        a3.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10, handlelength=1.2, frameon=False,
                  title="expert", title_fontsize=10)
        for ax in self.axes:                 # reserve the title row before the layout is frozen; a fixed title
            ax.set_title(" ", fontsize=12, y=1.01)   # position spares a tight-bbox search per full draw
        if blit:                             # pyplot never shows this figure: it lives on its own Agg canvas
            plt.close(fig)
            FigureCanvasAgg(fig)
        fig.canvas.draw()                    # solve the constrained layout once ...
        fig.set_layout_engine(None)         # ... and keep it: updates move no axes, savefig draws once
        self._dynamic = [*self.bars, self.step_title, self.step_line2, self.step_line3, self.im, *self.lines,
                         a2.title, a3.title]
        self._blit = BlitRenderer(fig, self._dynamic, max_backgrounds=_MAX_BACKGROUNDS) if blit else None
        self._series = None
        self._limit = float(bias_limit)

    def show(self, view: LoadView, bias_limit: float | None = None, series_key=None):
        """Draw ``view``; the heatmap and bias lines are replaced only when ``series_key`` changes."""
        a1, a2, a3 = self.axes
        rel = view.rel_load[view.step - 1].clamp(max=_CAP)
        for bar, h in zip(self.bars, rel.tolist()):
            bar.set_height(h)
        self.step_title.set_text(f"step {view.step}: MaxVio = {view.max_vio:.2f}")
        key = (series_key if series_key is not None else id(view.rel_load), bias_limit)
        if key != self._series:
            self.im.set_data(view.rel_load.T.clamp(max=_HEAT_CAP).numpy())
            a2.set_title(view.label if len(view.label) <= 34 else view.label.split(",")[0], fontsize=12, y=1.01)
            for line, ys in zip(self.lines, view.bias.T.tolist()):
                line.set_ydata(ys)
            a3.set_title(f"biases (γ = {view.gamma:g})", fontsize=12, y=1.01)
            if bias_limit is not None:
                a3.set_ylim(-bias_limit, bias_limit)
                self._limit = float(bias_limit)
            self._series = key
        self.step_line2.set_xdata([view.step, view.step])
        self.step_line3.set_xdata([view.step, view.step])
        return self.fig

    def png(self) -> bytes:
        """The figure as PNG bytes at its own dpi (blitting when built with ``blit=True``)."""
        if self._blit is not None:
            return self._blit.png(key=self._limit)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.fig.dpi)
        return buf.getvalue()


def bias_reversals(bias: torch.Tensor, step: int, window: int = 50) -> float | None:
    """Share of the bias moves in the ``window`` steps up to ``step`` that reversed the expert's move before
    (``bias [steps, N_r]``, the value used at each step). None when the bias never moved (no bias method)."""
    moves = torch.sign(bias[1:step] - bias[:step - 1])[-window:]            # [≤ window, N_r]
    pairs = moves[1:] * moves[:-1]
    if moves.numel() == 0 or not bool((moves != 0).any()):
        return None
    counted = pairs != 0
    return float((pairs < 0).sum() / counted.sum()) if bool(counted.any()) else 0.0


def plot_load_view(view: LoadView, bias_limit: float = 1.0):
    """A new :class:`LoadFigure` showing ``view``: returns the Figure (the widget keeps one and updates it)."""
    steps, n_r = view.rel_load.shape
    return LoadFigure(steps, n_r, bias_limit).show(view)


class ExpertLoadWidget(ReportWidget):
    """See the module docstring."""

    def __init__(self, runs: dict, unbalanced: dict | None = None, gamma: float = 0.01):
        self.runs, self.unbalanced, self._cache = runs, unbalanced, {}
        first = runs["runs"][METHODS[0]]
        n_steps = len(first["step"])
        style = {"description_width": "initial"}
        lay = widgets.Layout(width="420px")
        options = [(LABELS[m], m) for m in METHODS]
        if unbalanced is not None:
            options.append(("re-simulated bias on the frozen unbalanced router (uses γ)", RESIM))
        self.method = widgets.Dropdown(options=options, value="bias", description="balancing method", style=style,
                                       layout=widgets.Layout(width="520px"))
        self.layer = widgets.Dropdown(options=[(first["layer_names"][r], i) for i, r in enumerate(first["main_layers"])],
                                      value=0, description="MoE layer", style=style, layout=lay)
        self.step = widgets.IntSlider(value=n_steps, min=1, max=n_steps, description="training step", style=style,
                                      layout=lay, continuous_update=False)
        self.play = widgets.Play(value=n_steps, min=1, max=n_steps, step=5, interval=1000, description="play")
        widgets.jslink((self.play, "value"), (self.step, "value"))
        self.gamma = widgets.FloatLogSlider(value=gamma, base=10, min=-4, max=-1, step=0.25,
                                            description="γ (re-simulation only)", style=style, layout=lay,
                                            readout_format=".4f", continuous_update=False)
        bias_max = max(abs(v) for m in METHODS for b in runs["runs"][m]["bias"] for row in b for v in row)
        self._bias_limit = max(0.05, 1.1 * bias_max)
        if unbalanced is not None:   # the first switch to the re-simulation must not wait for it
            for layer in range(len(first["main_layers"])):
                load_view(runs, RESIM, layer, n_steps, gamma, unbalanced, self._cache)
        self._figure = LoadFigure(n_steps, runs["meta"]["config"]["n_routed_experts"], self._bias_limit, blit=True)
        controls = [self.method, self.layer, self.step, self.gamma]
        self._build(controls, layout=[self.method, widgets.HBox([self.layer, self.gamma]),
                                      widgets.HBox([self.play, self.step])])

    def compute(self) -> LoadView:
        self.gamma.disabled = self.method.value != RESIM
        return load_view(self.runs, self.method.value, self.layer.value, self.step.value, self.gamma.value,
                         self.unbalanced, self._cache)

    def draw(self, view: LoadView):
        resim = self.method.value == RESIM
        limit = self._bias_limit
        if resim:   # the first of a few fixed ranges that holds the biases: few backgrounds to draw
            need = float(view.bias.abs().max()) * 1.1
            limit = max(limit, next((v for v in _BIAS_LIMITS if v >= need), need))
        key = (self.method.value, self.layer.value, round(float(self.gamma.value), 8) if resim else None)
        return self._figure.show(view, limit, series_key=key)

    def render(self, fig) -> bytes:
        """The persistent, blitted :class:`LoadFigure`'s PNG instead of a full ``savefig`` per move."""
        return self._figure.png()

    def describe(self, view: LoadView) -> str:
        c = view.counts
        text = (f"{view.label}\nstep {view.step}: tokens per expert {c.long().tolist()}, mean {c.mean():.0f}\n"
                f"MaxVio_batch = (max − mean)/mean = {view.max_vio:.3f}")
        reversed_share = bias_reversals(view.bias, view.step)
        if reversed_share is not None:
            text += f"\nbias: ±γ per step; {reversed_share:.0%} of the last 50 moves reversed the one before"
        return text


def expert_load_widget(runs: dict, unbalanced: dict | None = None, gamma: float = 0.01) -> ExpertLoadWidget:
    """Build the expert-load widget (see :class:`ExpertLoadWidget`)."""
    return ExpertLoadWidget(runs, unbalanced, gamma)
