"""Routing explorer (chapter 5): pick a character of real text, see how the trained gate routes it.

The hidden state u_t entering each MoE layer's gate was captured from the trained tiny model on held-out text
(:func:`dsv3_lessons.course.ch06_balancing.runs.routing_snapshot`); the explorer re-routes it with
:func:`dsv3_lessons.course.ch05_routing.routing.route_token` under the settings of the controls and draws it with
:func:`dsv3_lessons.course.ch05_routing.figures.draw_routing`. The notebook calls both once directly.

Controls (attributes): ``passage`` (Dropdown), ``position`` (IntSlider), ``layer`` (Dropdown),
``n_group`` (Dropdown of group counts that split N_r evenly), ``topk_group`` and ``top_k`` (IntSliders whose
maxima follow ``n_group``/``topk_group`` so no setting is impossible; a value clamped by a smaller maximum comes
back when the maximum allows it again, so n_group 1 and back restores the model's routing), ``expert`` (IntSlider:
which expert's bias to change; the figure outlines it in purple dashes at every setting, so the learner sees where Δb will land
before moving it) and ``bias`` (FloatSlider, added to that expert's trained bias). Moving ``bias`` changes which
experts are chosen; the weights of chosen experts stay their unbiased affinities, renormalised.

Speed: one :class:`~dsv3_lessons.course.ch05_routing.figures.RoutingFigure` per ``n_group`` layout is built on
first use and then updated in place (colours and texts only), and the PNG is written with light compression.

Headless use (``tests/test_widget_routing.py``)::

    w = routing_explorer(snapshot)
    w.bias.value = 1.0
    w.last_result.chosen     # the chosen experts now include w.expert.value
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch05_routing.figures import RoutingFigure, routing_canvas
from dsv3_lessons.course.ch05_routing.routing import (RouteReport, route_token, snapshot_config, token_context,
                                                      valid_group_counts)
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["RoutingExplorer", "routing_explorer", "explore_route"]


def explore_route(snap: dict, passage: int = 0, position: int = 0, layer: int = 0, n_group: int | None = None,
                  topk_group: int | None = None, top_k: int | None = None, expert: int = 0,
                  bias: float = 0.0) -> RouteReport:
    """Route one stored token: the pure function behind the explorer.

    Args:
        snap: a routing snapshot (``load_snapshot()``); passage, position: which character; layer: which MoE
            layer (0 = first MoE layer); n_group, topk_group, top_k: routing settings (None = the model's);
        expert, bias: add ``bias`` to that expert's trained bias b_i.
    Raises:
        ValueError: an index out of range or settings that do not fit (names the argument).
    """
    cfg = snapshot_config(snap)
    u_all = snap["gate_inputs"]                       # [layers, passages, T, d]
    for name, value, hi in (("layer", layer, u_all.shape[0]), ("passage", passage, u_all.shape[1]),
                            ("position", position, u_all.shape[2]), ("expert", expert, cfg.n_routed_experts)):
        if not 0 <= value < hi:
            raise ValueError(f"{name} must be in [0, {hi}), got {value}")
    b = snap["gate_bias"][layer].clone()
    b[expert] += bias
    return route_token(u_all[layer, passage, position], snap["gate_weight"][layer], b,
                       cfg.n_group if n_group is None else n_group,
                       cfg.topk_group if topk_group is None else topk_group,
                       cfg.num_experts_per_tok if top_k is None else top_k, cfg.routed_scaling_factor)


class RoutingExplorer(ReportWidget):
    """See the module docstring for the controls; outputs as every :class:`ReportWidget`. The figure is updated in
    place (:class:`RoutingFigure`, one per layout) and its PNG written with light compression (a third of the
    encoding time, a slightly larger file)."""

    png_compress_level = 1

    def __init__(self, snap: dict):
        self.snap = snap
        cfg = snapshot_config(snap)
        n_r = cfg.n_routed_experts
        _, n_pass, t_len, _ = snap["gate_inputs"].shape
        style = {"description_width": "initial"}
        lay = widgets.Layout(width="440px")
        self.passage = widgets.Dropdown(options=[(repr(t[:28]) + "…", i) for i, t in enumerate(snap["passage_text"])],
                                        value=0, description="held-out passage", style=style, layout=lay)
        self.position = widgets.IntSlider(value=min(10, t_len - 1), min=0, max=t_len - 1,
                                          description="character position", style=style, layout=lay,
                                          continuous_update=False)
        self.layer = widgets.Dropdown(options=[(name, i) for i, name in enumerate(snap["layer_names"])], value=0,
                                      description="MoE layer", style=style, layout=lay)
        self.n_group = widgets.Dropdown(options=valid_group_counts(n_r), value=cfg.n_group,
                                        description="n_group (groups = nodes)", style=style, layout=lay)
        self.topk_group = widgets.IntSlider(value=cfg.topk_group, min=1, max=cfg.n_group,
                                            description="topk_group (groups kept, M)", style=style, layout=lay,
                                            continuous_update=False)
        self.top_k = widgets.IntSlider(value=cfg.num_experts_per_tok, min=1,
                                       max=cfg.topk_group * n_r // cfg.n_group,
                                       description="K_r (experts per token)", style=style, layout=lay,
                                       continuous_update=False)
        self.expert = widgets.IntSlider(value=0, min=0, max=n_r - 1, description="expert whose bias moves",
                                        style=style, layout=lay, continuous_update=False)
        self.bias = widgets.FloatSlider(value=0.0, min=-1.0, max=1.0, step=0.01, readout_format="+.2f",
                                        description="extra bias Δb on that expert", style=style, layout=lay,
                                        continuous_update=False)
        self._adjusting = False
        self._wanted = {"topk_group": cfg.topk_group, "top_k": cfg.num_experts_per_tok}
        self._drawings: dict[tuple[int, int], RoutingFigure] = {}   # one persistent figure per layout
        # one figure height for every n_group: the tallest layout's aspect (height / width)
        self._aspect = max(h / w for w, h in (routing_canvas(g, n_r // g) for g in valid_group_counts(n_r)))
        controls = [self.passage, self.position, self.layer, self.n_group, self.topk_group, self.top_k,
                    self.expert, self.bias]
        left = widgets.VBox([self.passage, self.position, self.layer, self.n_group])
        right = widgets.VBox([self.topk_group, self.top_k, self.expert, self.bias])
        self._build(controls, layout=[widgets.HBox([left, right])])

    def _on_change(self, change) -> None:
        if self._adjusting:
            return
        if change.get("owner") is self.topk_group:       # what the learner asked for, kept across clamping
            self._wanted["topk_group"] = self.topk_group.value
        elif change.get("owner") is self.top_k:
            self._wanted["top_k"] = self.top_k.value
        self._adjusting = True
        try:  # keep topk_group ≤ n_group and K_r ≤ topk_group·(experts per group): no impossible setting, and
            # restore the learner's own values when the limits allow them again (n_group 1 and back to 4)
            n_r = self.snap["gate_weight"].shape[1]
            self.topk_group.max = self.n_group.value
            self.topk_group.value = min(self._wanted["topk_group"], self.topk_group.max)
            self.top_k.max = self.topk_group.value * n_r // self.n_group.value
            self.top_k.value = min(self._wanted["top_k"], self.top_k.max)
        finally:
            self._adjusting = False
        self.update()

    def compute(self) -> RouteReport:
        return explore_route(self.snap, self.passage.value, self.position.value, self.layer.value,
                             self.n_group.value, self.topk_group.value, self.top_k.value, self.expert.value,
                             self.bias.value)

    def _label(self) -> str:
        text = self.snap["passage_text"][self.passage.value]
        return token_context(text, self.position.value, width=10)

    def draw(self, report: RouteReport):
        """Update (or build, on first use of a layout) the persistent figure of this ``n_group`` layout."""
        key = (report.n_group, report.per_group)
        if key not in self._drawings:
            self._drawings[key] = RoutingFigure(*key, min_aspect=self._aspect, pyplot=False)
        ch = self.snap["passage_text"][self.passage.value][self.position.value].replace("\n", "⏎")
        return self._drawings[key].update(report, token_label=f"'{ch}'\n$u_t$", title=self._label(),
                                          bias_expert=self.expert.value, bias_delta=self.bias.value)

    def describe(self, report: RouteReport) -> str:
        gs = "  ".join(f"{g}:{float(v):.3f}" for g, v in enumerate(report.group_scores))
        picks = "".join(f"\n  e{e}: g={w:.3f}  (s={float(report.scores[e]):.3f}, s+b={float(report.biased[e]):+.3f})"
                        for e, w in zip(report.chosen, report.weights))
        mark = f"Δb = {self.bias.value:+.2f} on e{self.expert.value} (purple dashes)\n"
        return (f"token {self._label()}\n" + mark +
                f"group scores (sum of 2 best biased): {gs}\n"
                f"kept groups: {list(report.kept_groups)}\n"
                f"chosen experts:{picks}\n"
                f"weights = unbiased s / Σ chosen s × {report.scale:g}: the bias changes who is chosen, "
                f"never the formula of g")


def routing_explorer(snap: dict) -> RoutingExplorer:
    """Build the routing explorer on a routing snapshot (see :class:`RoutingExplorer`)."""
    return RoutingExplorer(snap)

