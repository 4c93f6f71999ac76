"""Chapter 9 figure: where the FP8 scales live -- 1×128 activation tiles and 128×128 weight blocks.

Drawn from a config (sizes computed, never typed): the activations entering a layer, ``[tokens, d]`` with
d = ``hidden_size``, cut into 1×128 tiles (one scale per token and 128 channels), and the weight of
``kv_a_proj_with_mqa``, ``[d_c + d_h^R, d]``, cut into 128×128 blocks (one ``weight_scale_inv`` entry per
block). For V3 that weight is 576×7168: its scale grid is 5×56 and the last block row holds only 64 rows.
Both rectangles are drawn to scale, one unit per element. Source: V3 report §3.3.1, Fig. 7 (a).
"""
from __future__ import annotations

import math

import torch
from matplotlib.patches import Rectangle

from dsv3_lessons.model import fp8
from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.ch09_fp8.experiments import (_FMT_LABEL, GRANULARITIES, AccumulationSweep, ErrorReport,
                                                     outlier_label)

__all__ = ["draw_fp8_grids", "plot_representable_values", "plot_error_report", "plot_accumulation_sweep",
           "plot_loss_curves"]


def _grid(ax, rows: int, cols: int, br: int, bc: int, face: str, y0: float, partial_face: str) -> None:
    """Cells of ``br``×``bc`` elements over a ``rows``×``cols`` matrix drawn with its top-left at (0, y0)."""
    for i in range(math.ceil(rows / br)):
        h = min(br, rows - i * br)
        for j in range(math.ceil(cols / bc)):
            w = min(bc, cols - j * bc)
            partial = h < br or w < bc
            ax.add_patch(Rectangle((j * bc, y0 - i * br - h), w, h, facecolor=partial_face if partial else face,
                                   edgecolor="0.35", lw=0.4))


def draw_fp8_grids(cfg: DeepseekV3Config, tokens: int = 4, block: int = 128):
    """Two panels drawn to scale: activations ``[tokens, d]`` in 1×``block`` tiles (top) and
    ``kv_a_proj_with_mqa.weight`` ``[d_c + d_h^R, d]`` in ``block``×``block`` blocks (bottom), with the scale
    grids' shapes in the titles. Returns the Figure. Raises ValueError for tokens or block < 1.
    """
    if tokens < 1 or block < 1:
        raise ValueError(f"tokens and block must be >= 1, got {tokens}, {block}")
    d = cfg.hidden_size
    rows = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    n_t = math.ceil(d / block)
    gr, gc = math.ceil(rows / block), math.ceil(d / block)
    tile_rows = max(1, round(block / 16))             # a token row drawn block/16 units high, to stay visible
    fig, (ax1, ax2) = subplots(2, 1, height=4.6, gridspec_kw={"height_ratios": [1, 1.8]})
    for t in range(tokens):
        _grid(ax1, tile_rows, d, tile_rows, block, PALETTE["tensor"], -t * (tile_rows + 2), PALETTE["orange"])
    ax1.add_patch(Rectangle((0, -tile_rows), min(block, d), tile_rows, facecolor=PALETTE["blue"], edgecolor="k",
                            lw=1.0))
    ax1.annotate(f"one tile: 1 token × {min(block, d)} channels → one scale", (min(block, d), -tile_rows / 2),
                 xytext=(min(block, d) + d * 0.04, tile_rows * 2.2) if d > 2 * block else (d * 0.1, tile_rows * 2.2),
                 fontsize=10, arrowprops={"arrowstyle": "->", "lw": 1})
    ax1.set_xlim(-d * 0.01, d * 1.01)
    ax1.set_ylim(-tokens * (tile_rows + 2), tile_rows * 4)
    ax1.set_title(f"activations x: [{tokens} tokens, d = {d}] → scales [{tokens}, ⌈{d}/{block}⌉ = {n_t}]",
                  fontsize=11, loc="left")
    _grid(ax2, rows, d, block, block, PALETTE["weight"], 0, PALETTE["orange"])
    ax2.add_patch(Rectangle((0, -min(block, rows)), min(block, d), min(block, rows), facecolor=PALETTE["blue"],
                            edgecolor="k", lw=1.0, alpha=0.8))
    last = rows - (gr - 1) * block
    ax2.set_xlim(-d * 0.01, d * 1.01)
    ax2.set_ylim(-rows * 1.05, rows * 0.45)
    ax2.set_aspect("equal")
    ax2.set_anchor("W")                              # a narrow matrix sits left, so its title fits
    ax2.set_title(f"kv_a_proj_with_mqa.weight: [{rows}, {d}] → weight_scale_inv [⌈{rows}/{block}⌉, ⌈{d}/{block}⌉]"
                  f" = [{gr}, {gc}]", fontsize=11, loc="left")
    if rows >= block and d >= block:
        note = f"blue: one {block}×{block} block → one scale"
        if last < block:
            note += f";  orange: partial blocks (last block row has {last} of {block} rows)"
    else:
        note = f"smaller than one {block}×{block} block:\n{gr}×{gc} partial block(s), one scale each"
    ax2.text(0, rows * 0.12, note, fontsize=10, va="bottom")
    for ax in (ax1, ax2):
        ax.set_xlabel("input channels (elements, to scale)", loc="left")
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    return fig


def plot_representable_values(fmts: tuple[str, ...] = ("e4m3", "e5m2", "bf16")):
    """Left: every positive value of each format on a log axis (one row per format). Right: the relative gap
    to the next value, which is the rounding precision, against the value. Returns the Figure."""
    fig, (ax1, ax2) = subplots(1, 2, height=3.8)
    colors = [PALETTE["blue"], PALETTE["orange"], PALETTE["green"], PALETTE["purple"]]
    for row, (fmt, c) in enumerate(zip(fmts, colors)):
        v = fp8.representable_values(fmt)
        v = v[v > 0]
        info = fp8.format_info(fmt)
        shown = v if len(v) <= 300 else v[:: max(1, len(v) // 600)]
        ax1.scatter(shown, torch.full_like(shown, row), s=6 if len(v) <= 300 else 1, color=c, marker="|"
                    if len(v) <= 300 else ".")
        off_axis = info.max > 1e8                      # BF16's max is far past the axis: say so, inside the panel
        ax1.annotate(f"max {info.max:.3g}" + (" (off the axis) →" if off_axis else ""), (min(info.max, 1e8), row + 0.25),
                     xytext=(-6, 0), textcoords="offset points", fontsize=9, ha="right", va="center")
        gap = (v[1:] - v[:-1]) / v[:-1]
        ax2.step(v[:-1], gap, where="post", color=c, lw=1.6, ls=["-", "--", ":", "-."][row],
                 label=f"{_FMT_LABEL.get(fmt, fmt)}: {info.mantissa_bits} mantissa bits")
    ax1.set_xscale("log")
    ax1.set_xlim(1e-9, 1e8)
    ax1.set_yticks(range(len(fmts)), [_FMT_LABEL.get(f, f) for f in fmts])
    ax1.set_ylim(-0.6, len(fmts) - 0.3)
    ax1.set_xlabel("representable value (log scale; BF16 continues to 3.4e38)")
    ax1.set_title("where the values are")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlim(1e-9, 1e8)
    ax2.set_ylim(2e-3, 2)
    ax2.set_xlabel("value $x$ (log scale)")
    ax2.set_ylabel("gap to next value / $x$")
    ax2.set_title("relative spacing = rounding precision")
    ax2.legend(loc="upper right", fontsize=9)
    return fig


def plot_error_report(reports: dict[str, ErrorReport], selected: str, outlier: float):
    """Left: per-channel relative error of the ``selected`` granularity (outlier channels marked). Right:
    the ordinary channels' error of every granularity, with the fraction flushed to zero. Axes are fixed
    (errors 1e-3..3) so a widget's figure does not jump. Returns the Figure."""
    rep = reports[selected]
    # a fixed layout (not "constrained"): the widget redraws on every change and must stay quick
    fig, (ax1, ax2) = subplots(1, 2, height=3.6, gridspec_kw={"width_ratios": [1.6, 1]}, layout=None)
    fig.subplots_adjust(left=0.085, right=0.99, bottom=0.2, top=0.92, wspace=0.2)
    ch = torch.arange(len(rep.channel_error))
    err = rep.channel_error.clamp(min=1.1e-3)
    ax1.scatter(ch, err, s=5, color=PALETTE["blue"], label="ordinary channels")
    ax1.scatter(ch[rep.outliers], err[rep.outliers], s=40, marker="x", color=PALETTE["red"],
                label=f"outlier channels (×{outlier_label(outlier)})")
    for t in range(0, len(ch) + 1, fp8.BLOCK):
        ax1.axvline(t - 0.5, color="0.75", lw=0.8, zorder=0)
    ax1.set_yscale("log")
    ax1.set_ylim(1e-3, 3)
    ax1.set_xlabel("channel (grey lines: 128-channel tile edges)")
    ax1.set_ylabel("mean |x̂ − x| / |x| per channel")
    ax1.set_title(f"{GRANULARITIES[selected]}, {_FMT_LABEL.get(rep.fmt, rep.fmt)}")
    ax1.legend(loc="upper right", fontsize=9)
    names = list(reports)
    vals = [max(reports[g].rel_error, 1.1e-3) for g in names]
    colors = [PALETTE["orange"] if g == selected else PALETTE["sky"] for g in names]
    bars = ax2.bar(range(len(names)), vals, color=colors)
    for b, g in zip(bars, names):
        ax2.annotate(f"{reports[g].rel_error:.1%}\n{reports[g].underflow:.0%} flushed to 0", (b.get_x() + b.get_width() / 2,
                     b.get_height()), ha="center", va="bottom", fontsize=9)
    ax2.set_xticks(range(len(names)), [GRANULARITIES[g].replace(" ", "\n", 1) for g in names], fontsize=9)
    ax2.set_yscale("log")
    ax2.set_ylim(1e-3, 3)
    ax2.set_ylabel("mean relative error, ordinary channels")
    ax2.set_title("all granularities")
    return fig


def plot_accumulation_sweep(sweep: AccumulationSweep, report_figure: float = 0.02):
    """Error vs accumulator mantissa bits, with and without promotion every 128; the Hopper band (13–14 bits)
    shaded and the V3 report's figure drawn as a line. Returns the Figure."""
    fig, ax = subplots(height=3.8)
    ax.axvspan(12.5, 14.5, color=PALETTE["yellow"], alpha=0.35, lw=0, label="Hopper: ~13–14 bits kept")
    ax.plot(sweep.bits, sweep.plain, "o-", color=PALETTE["red"], label=f"whole K = {sweep.k} in the limited accumulator")
    ax.plot(sweep.bits, sweep.promoted, "s--", color=PALETTE["blue"],
            label="promoted to FP32 every 128 (scales applied there)")
    ax.axhline(report_figure, color="0.3", ls=":", lw=1.5, label=f"V3 report: 'nearly {report_figure:.0%}'")
    ax.axhline(sweep.quantization[1], color=PALETTE["green"], ls="-.", lw=1.2,
               label="error of the FP8 inputs themselves (for scale)")
    ax.set_yscale("log")
    ax.set_xlabel("mantissa bits kept by the accumulator (truncation)")
    ax.set_ylabel(r"$\|C_{sim} - C\| \,/\, \|C\|$")
    ax.set_xticks(sweep.bits)
    ax.legend(loc="lower left", fontsize=9)
    return fig


def plot_loss_curves(full: list[float], quant: list[float], window: int = 10,
                     reference: list[float] | None = None):
    """Training loss of the full-precision and the FP8 run (moving average over ``window`` steps), and their
    relative gap in %; ``reference`` (optional) is a second full-precision run from another seed, whose gap to
    ``full`` shows the run-to-run noise. Returns the Figure."""
    def smooth(v):
        t = torch.tensor(v, dtype=torch.float32)
        k = min(window, len(t))
        return torch.nn.functional.avg_pool1d(t[None, None], k, 1)[0, 0]

    a, b = smooth(full), smooth(quant)
    steps = torch.arange(len(a)) + min(window, len(full))
    fig, (ax1, ax2) = subplots(1, 2, height=3.4)
    ax1.set_title(f"training loss, moving average over {window} steps")
    ax1.plot(steps, a, color=PALETTE["blue"], lw=2.5, label="FP32")
    ax1.plot(steps, b, color=PALETTE["orange"], lw=1.5, ls="--", label="FP8 fake-quant linears")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (nats/char)")
    ax1.legend(loc="upper right")
    ax2.plot(steps, 100 * (b - a) / a, color=PALETTE["purple"], lw=1.8, label="run = FP8 (same seed)")
    if reference is not None:
        r = smooth(reference)
        ax2.plot(steps, 100 * (r - a) / a, color="0.45", lw=1.2, ls=":", label="run = FP32, other seed (noise)")
    ax2.axhline(0, color="0.5", lw=0.8)
    ax2.set_xlabel("step")
    ax2.set_ylabel("(run − FP32) / FP32 (%)")
    ax2.set_title(f"relative gap; > 0: run's loss above FP32's")
    ax2.legend(loc="best", fontsize=9)
    return fig
