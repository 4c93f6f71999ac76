"""Chapter 08 widget: type a prompt, pick the temperature and the draft length k, and see what the MTP
draft buys: per-position acceptance, tokens per main-model forward and the wall-clock speed-up.

The numbers come from :func:`dsv3_lessons.course.ch07_mtp.experiments.speculative_report` (pure apart from timing;
notebook 08 calls it directly once); this module wires controls to it through
:class:`~dsv3_lessons.course.common.widget.ReportWidget`. The axes are fixed (acceptance 0–1 for draft
positions 1–4; tokens per forward and speed-up on 0–5) so they stay put while the controls move.
"""
from __future__ import annotations

import ipywidgets as widgets

from dsv3_lessons.course.ch08_speculative.experiments import speculative_report
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["SpeculativeWidget", "draw_speculative_report"]

K_MAX = 4


def draw_speculative_report(report: dict):
    """Two panels: acceptance per draft position; tokens per main forward and wall-clock speed-up."""
    fig, (ax1, ax2) = subplots(1, 2, height=3.4)
    rates = report["acceptance_rates"]
    ax1.bar(range(1, len(rates) + 1), rates, color=PALETTE["blue"], width=0.6)
    for j, r in enumerate(rates, start=1):
        ax1.text(j, r + 0.03, f"{r:.2f}", ha="center", fontsize=10)
    ax1.set_xlim(0.4, K_MAX + 0.6)
    ax1.set_ylim(0, 1.1)
    ax1.set_xticks(range(1, K_MAX + 1))
    ax1.set_xlabel("draft position j")
    ax1.set_ylabel("fraction of verify steps\naccepting $d_1 … d_j$")
    ax1.set_title(f"acceptance, k = {report['k']}, T = {report['temperature']:g}")
    vals = [report["tokens_per_forward"], report["speedup"]]
    ax2.bar([0, 1], vals, color=[PALETTE["green"], PALETTE["orange"]], width=0.55)
    for x, v in enumerate(vals):
        ax2.text(x, v + 0.08, f"{v:.2f}", ha="center", fontsize=10)
    ax2.axhline(1.0, color="#555555", lw=1, ls="--", label="plain decoding = 1")
    ax2.legend(loc="upper right", fontsize=9)                           # off the bars and their values
    ax2.set_xticks([0, 1], ["tokens per\nmain forward", "wall-clock\nspeed-up (×)"])
    ax2.set_xlim(-0.6, 1.6)
    ax2.set_ylim(0, K_MAX + 1)
    ax2.set_title("what the draft buys")
    return fig


class SpeculativeWidget(ReportWidget):
    """Controls: ``prompt`` (Text), ``temperature`` (FloatSlider 0–1.5, 0 = greedy), ``k`` (IntSlider 1–4).

    Args: ``model`` (a trained DeepSeekV3 with an MTP module), ``tokenizer`` (its CharTokenizer),
    ``max_new_tokens`` per decode. ``last_result`` holds the :func:`speculative_report` dict.
    """

    def __init__(self, model, tokenizer, prompt: str = "HAMLET. ", temperature: float = 0.0, k: int = 1,
                 max_new_tokens: int = 48):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        style = {"description_width": "initial"}
        self.prompt = widgets.Text(value=prompt, description="prompt", style=style, continuous_update=False,
                                   layout=widgets.Layout(width="60%"))
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=1.5, step=0.1, style=style,
                                               description="temperature (0 = greedy)", continuous_update=False,
                                               layout=widgets.Layout(width="60%"))
        self.k = widgets.IntSlider(value=k, min=1, max=K_MAX, description="draft length k", style=style,
                                   continuous_update=False)
        self._build([self.prompt, self.temperature, self.k])

    def compute(self) -> dict:
        return speculative_report(self.model, self.tokenizer, self.prompt.value, self.temperature.value,
                                  self.k.value, self.max_new_tokens)

    def draw(self, report: dict):
        return draw_speculative_report(report)

    def describe(self, report: dict) -> str:
        rates = ", ".join(f"{r:.2f}" for r in report["acceptance_rates"])
        return (f"acceptance per draft position: {rates}\n"
                f"mean accepted length 1 + Σ = {report['mean_accepted_length']:.2f} tokens per verify step; "
                f"{report['tokens_per_forward']:.2f} tokens per main forward\n"
                f"plain {report['plain_tps']:.0f} tokens/s, speculative {report['spec_tps']:.0f} tokens/s: "
                f"{report['speedup']:.2f}x (median of {report.get('repeats', 1)} runs each; wall-clock timing "
                f"is noisy on a shared machine, so it moves between settings even when nothing else does)\n"
                f"continuation: {report['text'][:100]!r}")
