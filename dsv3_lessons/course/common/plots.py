"""Plots shared by several chapters (training curves)."""
from __future__ import annotations

__all__: list[str] = []


# ==================================================================================================
# Chapter 00 -- Tour (training curves of the tiny model; reused by later chapters)
# ==================================================================================================
def plot_training_history(hist, references: dict | None = None, smooth: int = 10, title: str | None = None):
    """Loss curves of a :class:`dsv3_lessons.tools.train.History`: training main loss (moving average over
    ``smooth`` steps, raw values faint), validation loss (markers), and horizontal reference lines
    ``{label: nats}`` (e.g. the unigram entropy, ln V), each named by a label at its right end. Units: nats
    per token. The legend sits above the axes, outside the data, so it can never hide a reference line.
    Returns the Figure (``fig.axes[0].lines``: raw, average, validation, then one line per reference).

    Raises ValueError when the history holds no step.
    """
    from dsv3_lessons.course.common.style import subplots as _tour_subplots

    if not hist.step:
        raise ValueError("plot_training_history needs a history with at least one step")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    fig, ax = _tour_subplots(height=4.4)
    steps, loss = hist.step, hist.main_loss
    ax.plot(steps, loss, color="#0072B2", alpha=0.25, lw=0.8)
    k = min(smooth, len(loss))
    avg = [sum(loss[max(0, i - k + 1):i + 1]) / (i + 1 - max(0, i - k + 1)) for i in range(len(loss))]
    ax.plot(steps, avg, color="#0072B2", lw=2.0, label=f"train (main loss, {k}-step average)")
    ax.plot(hist.val_step, hist.val_loss, "o-", color="#E69F00", ms=6, label="validation (held-out works)")
    styles = ["--", ":", "-."]
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="#444444", ls=styles[j % len(styles)], lw=1.4)
        ax.text(steps[-1], value, f"{label} = {value:.2f} ", va="bottom", ha="right", fontsize=10, color="#333333",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0})
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(title or "Tiny DeepSeek-V3 on Shakespeare")
    fig.legend(loc="outside upper center", ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    return fig


__all__ += ["plot_training_history"]
