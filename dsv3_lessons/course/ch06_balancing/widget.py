"""Expert-load widget (chapter 6): per-expert load, MaxVio and the bias, step by step, for each balancing method.

Reads the stored run histories (:func:`dsv3_lessons.course.ch06_balancing.runs.load_runs`) and, for the method
``"re-simulated bias (frozen router)"``, re-runs the bias update with the chosen γ on the frozen router of the
unbalanced run (:func:`~dsv3_lessons.course.ch06_balancing.runs.resimulate_bias`, a fraction of a second). The
pure function :func:`load_view` computes what is shown; the notebook calls it once directly.

Controls (attributes): ``method`` (Dropdown), ``layer`` (Dropdown of the main MoE layers), ``step`` (IntSlider,
linked to ``play``, a Play button), ``gamma`` (FloatLogSlider; used only by the re-simulation, disabled otherwise).
The axes stay fixed while the step moves: loads are shown relative to the mean (1 = perfectly balanced),
y-limits and colour scales are fixed per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import torch

from dsv3_lessons.course.ch06_balancing.runs import LABELS, METHODS, resimulate_bias
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["RESIM", "LoadView", "load_view", "plot_load_view", "ExpertLoadWidget", "expert_load_widget"]

RESIM = "resim"
_CAP = 4.0  # relative loads above this are drawn at the top of the axis


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
            sim = resimulate_bias(unbalanced["sample_scores"][layer].float(), cfg["n_group"], cfg["topk_group"],
                                  cfg["num_experts_per_tok"], float(gamma), steps=n_steps,
                                  batch_tokens=budget["batch_size"] * budget["seq_len"])
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


def plot_load_view(view: LoadView, bias_limit: float = 1.0):
    """Three panels: loads at the step (bars, relative to the mean), loads over steps (heatmap), bias over steps."""
    steps, n_r = view.rel_load.shape
    fig, (a1, a2, a3) = subplots(1, 3, height=3.6, gridspec_kw={"width_ratios": [1, 1.5, 1.1]})
    rel = view.rel_load[view.step - 1]
    a1.bar(range(n_r), rel.clamp(max=_CAP).tolist(), color=PALETTE["blue"])
    a1.axhline(1.0, color="k", ls="--", lw=1)
    a1.set_ylim(0, _CAP)
    a1.set_xticks(range(n_r))
    a1.set_xlabel("expert")
    a1.set_ylabel("load / mean load")
    a1.set_title(f"step {view.step}: MaxVio = {view.max_vio:.2f}", fontsize=11)
    im = a2.imshow(view.rel_load.T.clamp(max=3).numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=3,
                   extent=(0.5, steps + 0.5, n_r - 0.5, -0.5), interpolation="nearest")
    a2.axvline(view.step, color="w", lw=1.5)
    a2.set_xlabel("training step")
    a2.set_ylabel("expert")
    a2.set_title(view.label, fontsize=10)
    fig.colorbar(im, ax=a2, label="load / mean (capped at 3)")
    for i in range(n_r):
        a3.plot(range(1, steps + 1), view.bias[:, i].tolist(), lw=1)
    a3.axvline(view.step, color="k", lw=1)
    a3.set_ylim(-bias_limit, bias_limit)
    a3.set_xlabel("training step")
    a3.set_ylabel("bias $b_i$")
    a3.set_title(f"biases (γ = {view.gamma:g})", fontsize=11)
    return fig


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
        controls = [self.method, self.layer, self.step, self.gamma]
        self._build(controls, layout=[self.method, widgets.HBox([self.layer, self.gamma]),
                                      widgets.HBox([self.play, self.step])])

    def compute(self) -> LoadView:
        self.gamma.disabled = self.method.value != RESIM
        return load_view(self.runs, self.method.value, self.layer.value, self.step.value, self.gamma.value,
                         self.unbalanced, self._cache)

    def draw(self, view: LoadView):
        limit = self._bias_limit if self.method.value != RESIM else max(self._bias_limit, float(view.bias.abs().max()) * 1.1)
        return plot_load_view(view, limit)

    def describe(self, view: LoadView) -> str:
        c = view.counts
        return (f"{view.label} · step {view.step}: tokens per expert {c.long().tolist()} "
                f"(mean {c.mean():.0f})\nMaxVio_batch = (max − mean)/mean = {view.max_vio:.3f}")


def expert_load_widget(runs: dict, unbalanced: dict | None = None, gamma: float = 0.01) -> ExpertLoadWidget:
    """Build the expert-load widget (see :class:`ExpertLoadWidget`)."""
    return ExpertLoadWidget(runs, unbalanced, gamma)
