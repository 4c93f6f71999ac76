"""Chapter 08 widget: type a prompt, pick the temperature and the draft length k, and see what the MTP draft
buys: per-position acceptance and new tokens per main-model forward.

The numbers come from :func:`dsv3_lessons.course.ch08_speculative.experiments.speculative_report` (notebook 08
calls it directly once); this module wires controls to it through
:class:`~dsv3_lessons.course.common.widget.ReportWidget`. Choices, from the browser review of the first version:

* **Only numbers that do not depend on the machine's load.** The first version showed a wall-clock speed-up
  (median of 3 timed decodes each way); it read 1.48× and then 0.87× for the same setting on a busy machine, and
  each change took 1–2 s. Acceptance and tokens per forward are counts: one speculative decode per setting, and
  the same answer every time. Wall-clock speed is measured side by side in the chapter's section 6.
* **Results cached per setting** (prompt, temperature, k), so going back to a setting is instant.
* **A busy line** ("decoding …") is shown while a setting is computed, and a **rejected prompt greys the figure**
  (the bars are hidden and the figure says why) instead of leaving the previous prompt's bars on screen.
* **The prompt's limits** (positions and vocabulary) are stated next to the box.
* **A persistent figure** updated in place, rendered with :class:`~dsv3_lessons.course.common.blit.BlitRenderer`.
  Axes are fixed (acceptance 0–1.1 for draft positions 1–4; tokens per forward 0–5) so they stay put.
"""
from __future__ import annotations

import ipywidgets as widgets
from matplotlib.figure import Figure

from dsv3_lessons.course.ch08_speculative.experiments import prompt_limits, speculative_report
from dsv3_lessons.course.common.style import DPI, FIG_WIDTH, PALETTE
from dsv3_lessons.course.common.widget import ReportWidget

__all__ = ["SpeculativeWidget", "SpeculativeReportFigure", "draw_speculative_report", "K_MAX"]

K_MAX = 4
_LABEL_WIDTH = "190px"


class SpeculativeReportFigure:
    """Two panels, built once: acceptance per draft position (bars for j = 1 … k, the rest hidden) and new tokens
    per main-model forward, plain decoding (1, by definition) next to speculative decoding. :meth:`update` moves
    the bars and labels; :meth:`show_error` hides them and writes why. ``fig`` is not registered with pyplot."""

    def __init__(self):
        self.fig = Figure(figsize=(FIG_WIDTH, 3.4), dpi=DPI)
        self.ax1, self.ax2 = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
        self.fig.subplots_adjust(left=0.09, right=0.985, bottom=0.2, top=0.9, wspace=0.3)
        ax1, ax2 = self.ax1, self.ax2
        self.acc_bars = ax1.bar(range(1, K_MAX + 1), [0.0] * K_MAX, color=PALETTE["blue"], width=0.6)
        self.acc_text = [ax1.text(j, 0.03, "", ha="center", fontsize=10) for j in range(1, K_MAX + 1)]
        ax1.set_xlim(0.4, K_MAX + 0.6)
        ax1.set_ylim(0, 1.1)
        ax1.set_xticks(range(1, K_MAX + 1))
        ax1.set_xlabel("draft position j", fontsize=11)
        ax1.set_ylabel("fraction of verify steps\naccepting $d_1 … d_j$", fontsize=11)
        self.title1 = ax1.set_title("", fontsize=12)
        bars = ax2.bar([0, 1], [1.0, 1.0], color=["#bbbbbb", PALETTE["green"]], width=0.55)
        self.plain_bar, self.spec_bar = bars
        ax2.text(0, 1.08, "1.00\n(one token\nper forward)", ha="center", va="bottom", fontsize=9.5)
        self.spec_text = ax2.text(1, 1.08, "", ha="center", va="bottom", fontsize=10)
        ax2.set_xticks([0, 1], ["plain decoding", "speculative"], fontsize=10)
        ax2.set_xlim(-0.6, 1.6)
        ax2.set_ylim(0, K_MAX + 1)
        ax2.set_ylabel("new tokens per\nmain-model forward", fontsize=11)
        self.title2 = ax2.set_title("", fontsize=12)
        self.error_text = self.fig.text(0.5, 0.5, "", ha="center", va="center", fontsize=12, color="#b00",
                                        bbox={"facecolor": "white", "edgecolor": "#b00", "boxstyle": "round"})
        self.error_text.set_visible(False)
        #: what changes between updates (the rest is drawn once, see BlitRenderer)
        self.moving = [*self.acc_bars, *self.acc_text, self.title1, self.spec_bar, self.spec_text, self.title2,
                       self.error_text]

    def update(self, report: dict) -> Figure:
        """Show ``report`` (a :func:`speculative_report` dict); returns ``fig``."""
        rates = report["acceptance_rates"]
        for j, (bar, text) in enumerate(zip(self.acc_bars, self.acc_text)):
            shown = j < len(rates)
            bar.set_visible(shown)
            text.set_visible(shown)
            if shown:
                bar.set_height(rates[j])
                text.set_position((j + 1, rates[j] + 0.03))
                text.set_text(f"{rates[j]:.2f}")
        self.title1.set_text(f"acceptance, k = {report['k']}, T = {report['temperature']:g}")
        tpf = report["tokens_per_forward"]
        for artist in (self.spec_bar, self.spec_text):
            artist.set_visible(True)
        self.spec_bar.set_height(tpf)
        self.spec_text.set_position((1, tpf + 0.08))
        self.spec_text.set_text(f"{tpf:.2f}")
        self.title2.set_text(f"{report['new_tokens']} tokens: {report['main_forwards']} main forwards "
                             f"instead of {report['plain_forwards']}")
        self.error_text.set_visible(False)
        return self.fig

    def show_error(self, message: str) -> Figure:
        """Hide every result and say why (a rejected prompt must not leave the previous prompt's bars)."""
        for artist in (*self.acc_bars, *self.acc_text, self.spec_bar, self.spec_text):
            artist.set_visible(False)
        self.title1.set_text("no result")
        self.title2.set_text("")
        self.error_text.set_text(f"no result for this prompt:\n{message}")
        self.error_text.set_visible(True)
        return self.fig


def draw_speculative_report(report: dict) -> Figure:
    """The widget's figure for one report, as a new Figure (see :class:`SpeculativeReportFigure`)."""
    return SpeculativeReportFigure().update(report)


def _wrap(text: str, width: int = 70) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width)) or text


class SpeculativeWidget(ReportWidget):
    """Controls: ``prompt`` (Text), ``temperature`` (FloatSlider 0–1.5, 0 = greedy), ``k`` (IntSlider 1–4), each
    with its label in one column; the prompt's limits are stated beside it.

    Args: ``model`` (a trained DeepSeekV3 with an MTP module), ``tokenizer`` (its CharTokenizer),
    ``max_new_tokens`` per decode. ``last_result`` holds the :func:`speculative_report` dict; ``status`` is the
    busy line; ``cache`` maps (prompt, temperature, k) to reports already computed.
    """

    def __init__(self, model, tokenizer, prompt: str = "HAMLET. ", temperature: float = 0.0, k: int = 1,
                 max_new_tokens: int = 48):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.cache: dict = {}
        limits = prompt_limits(model, tokenizer, max_new_tokens)
        self.prompt = widgets.Text(value=prompt, continuous_update=False, layout=widgets.Layout(width="300px"))
        self.limits = widgets.HTML(
            f"<span style='color:#555'>≤ {limits['max_chars']} characters ({limits['positions']} positions "
            f"− {max_new_tokens} new tokens), from the {limits['vocab_size']}-character vocabulary of the "
            f"corpus (letters, digits, punctuation, space, newline)</span>", layout=widgets.Layout(width="520px"))
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=1.5, step=0.1,
                                               continuous_update=False, layout=widgets.Layout(width="360px"))
        self.k = widgets.IntSlider(value=k, min=1, max=K_MAX, continuous_update=False,
                                   layout=widgets.Layout(width="360px"))
        self.status = widgets.HTML("")
        self._figure = SpeculativeReportFigure()
        self.blit_figure(self._figure.fig, self._figure.moving)

        def row(label, *items):
            return widgets.HBox([widgets.Label(label, layout=widgets.Layout(width=_LABEL_WIDTH)), *items])

        self._build([self.prompt, self.temperature, self.k],
                    layout=[row("prompt", self.prompt, self.limits), row("temperature (0 = greedy)", self.temperature),
                            row("draft length k", self.k), self.status])

    def compute(self) -> dict:
        key = (self.prompt.value, round(self.temperature.value, 6), self.k.value)
        if key not in self.cache:
            self.status.value = (f"<i>decoding {self.max_new_tokens} tokens with k = {self.k.value}, "
                                 f"T = {self.temperature.value:g} …</i>")
            try:
                self.cache[key] = speculative_report(self.model, self.tokenizer, *key, self.max_new_tokens)
            finally:
                self.status.value = ""
        return self.cache[key]

    def draw(self, report: dict) -> Figure:
        return self._figure.update(report)

    def describe(self, report: dict) -> str:
        rates = ", ".join(f"{r:.2f}" for r in report["acceptance_rates"])
        return (f"acceptance per draft position: {rates}\n"
                f"mean accepted length 1 + Σ = {report['mean_accepted_length']:.2f} tokens per verify step; "
                f"{report['tokens_per_forward']:.2f} new tokens per main forward\n"
                f"{report['new_tokens']} new tokens took {report['main_forwards']} main-model forwards "
                f"(plain decoding: {report['plain_forwards']}). These are counts, the same on any machine;\n"
                f"wall-clock speed also pays for the drafts and the longer verify: section 6 measures it.\n"
                f"continuation of {report['prompt']!r}:\n{_wrap(repr(report['text']))}")

    def render_error(self, exc: ValueError) -> bytes:
        """A rejected prompt greys the figure: the bars are hidden and the figure says why."""
        self.figure = self._figure.show_error(_wrap(str(exc), 80))
        return self.render(self.figure)
