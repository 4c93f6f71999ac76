"""Chapter 9 figure: where the FP8 scales live -- 1×128 activation tiles and 128×128 weight blocks.

Drawn from a config (sizes computed, never typed): the activations entering a layer, ``[tokens, d]`` with
d = ``hidden_size``, cut into 1×128 tiles (one scale per token and 128 channels), and the weight of
``kv_a_proj_with_mqa``, ``[d_c + d_h^R, d]``, cut into 128×128 blocks (one ``weight_scale_inv`` entry per
block). For V3 that weight is 576×7168: its scale grid is 5×56 and the last block row holds only 64 rows.
Both rectangles are drawn to scale, one unit per element. Source: V3 report §3.3.2, Fig. 7 (a).

Also here: the plots of the chapter, the FP8 widget's figure (:class:`ErrorReportFigure`, updated in place) and
:func:`draw_promotion`, the promotion of partial sums to FP32 every N_C = 128 products (V3 Fig. 7 (b)).
"""
from __future__ import annotations

import math

import torch
from matplotlib.patches import Rectangle

from dsv3_lessons.model import fp8
from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.course.common.draw import Diagram
from dsv3_lessons.course.common.style import DPI, FIG_WIDTH, PALETTE, subplots
from dsv3_lessons.course.ch09_fp8.experiments import (_FMT_LABEL, GRANULARITIES, AccumulationSweep, ErrorReport,
                                                     outlier_label)

__all__ = ["draw_fp8_grids", "plot_representable_values", "ErrorReportFigure", "plot_error_report", "share_label",
           "plot_accumulation_sweep", "draw_promotion", "draw_mixed_precision", "plot_loss_curves"]

#: box colours by number format in :func:`draw_mixed_precision` (FP8 light orange, BF16 the activation blue,
#: FP32 light green); operations stay white.
PRECISION_COLOURS = {"FP8": "#fde0b0", "BF16": PALETTE["tensor"], "FP32": "#c8ead9"}


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


class ErrorReportFigure:
    """The FP8 widget's figure, built once and updated in place (:meth:`update`), so one change of a control
    costs a re-render, not a rebuild: fixed layout (no constrained-layout solve), fixed tick locations on the
    log axes (no minor-tick generation), one scatter per series whose points move.

    Left: per-channel mean relative error of the selected granularity, outlier channels marked, 128-channel
    tile edges in grey; the legend sits in the band above 1, where no channel can be (an error is at most 1,
    a value flushed to zero). Right: every granularity's mean error over the ordinary channels, with the
    fraction flushed to zero under each value. Axes are fixed (errors 1e-3 … 10) so nothing jumps while a
    slider moves. ``fig`` is a plain :class:`matplotlib.figure.Figure` (not registered with pyplot).
    """

    def __init__(self, channels: int = 512, names: tuple[str, ...] = tuple(GRANULARITIES), block: int = fp8.BLOCK):
        from matplotlib.figure import Figure
        from matplotlib.ticker import FixedLocator, NullLocator

        self.names = tuple(names)
        self.fig = Figure(figsize=(FIG_WIDTH, 3.6), dpi=DPI)
        self.ax1, self.ax2 = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
        self.fig.subplots_adjust(left=0.075, right=0.985, bottom=0.17, top=0.91, wspace=0.25)
        ax1, ax2 = self.ax1, self.ax2
        ch = torch.arange(channels).float()
        self._ch = ch
        self.ordinary = ax1.scatter(ch, torch.full_like(ch, 1e-2), s=5, color=PALETTE["blue"],
                                    label="ordinary channels")
        self.outliers = ax1.scatter([0.0], [1e-2], s=40, marker="x", color=PALETTE["red"], label="outlier channels")
        for t in range(0, channels + 1, block):
            ax1.axvline(t - 0.5, color="0.75", lw=0.8, zorder=0)
        ticks = [1e-3, 1e-2, 1e-1, 1, 10]
        labels = ["0.1%", "1%", "10%", "100%", ""]
        for ax in (ax1, ax2):
            ax.set_yscale("log")
            ax.set_ylim(1e-3, 10)
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_yticklabels(labels, fontsize=10)
            ax.axhline(1.0, color="0.85", lw=0.8, zorder=0)
        ax1.set_xlim(-8, channels + 8)
        ax1.xaxis.set_major_locator(FixedLocator(list(range(0, channels + 1, block))))
        ax1.tick_params(labelsize=10)
        ax1.set_xlabel("channel (grey lines: 128-channel tile edges)", fontsize=11)
        ax1.set_ylabel("mean |x̂ − x| / |x| per channel", fontsize=11)
        self.title1 = ax1.set_title("", fontsize=12)
        self.legend = ax1.legend(loc="upper center", ncol=2, fontsize=9, frameon=False, borderaxespad=0.2)
        self.bars = ax2.bar(range(len(self.names)), [1e-3] * len(self.names), color=PALETTE["sky"], width=0.6)
        self.bar_text = [ax2.text(i, 1.3e-3, "", ha="center", va="bottom", fontsize=9) for i in range(len(self.names))]
        ax2.set_xlim(-0.6, len(self.names) - 0.4)
        ax2.set_xticks(range(len(self.names)), [GRANULARITIES[g].replace(" ", "\n", 1) for g in self.names],
                       fontsize=9)
        ax2.set_ylabel("mean relative error,\nordinary channels", fontsize=11)
        ax2.set_title("all granularities (value; share flushed to 0)", fontsize=11)
        #: what :meth:`update` changes (the rest is static: a widget renders it once, see ``BlitRenderer``)
        self.moving = [self.ordinary, self.outliers, self.title1, self.legend, *self.bars, *self.bar_text]

    def update(self, reports: dict[str, ErrorReport], selected: str, outlier: float):
        """Show ``reports`` (``{granularity: ErrorReport}``) with ``selected`` highlighted; returns ``fig``.
        Raises ValueError for a ``selected`` granularity that is not in the figure."""
        if selected not in self.names:
            raise ValueError(f"selected must be one of {list(self.names)}, got {selected!r}")
        rep = reports[selected]
        err = rep.channel_error.clamp(min=1.1e-3)
        self.ordinary.set_offsets(torch.stack([self._ch[: len(err)], err], 1).numpy())
        self.outliers.set_offsets(torch.stack([self._ch[rep.outliers], err[rep.outliers]], 1).numpy())
        self.legend.get_texts()[1].set_text(f"outlier channels (×{outlier_label(outlier)})")
        self.title1.set_text(f"{GRANULARITIES[selected]}, {_FMT_LABEL.get(rep.fmt, rep.fmt)}")
        for i, g in enumerate(self.names):
            v = max(reports[g].rel_error, 1.1e-3)
            self.bars[i].set_height(v)
            self.bars[i].set_color(PALETTE["orange"] if g == selected else PALETTE["sky"])
            self.bar_text[i].set_position((i, v * 1.15))
            self.bar_text[i].set_text(f"{reports[g].rel_error:.1%}\n{share_label(reports[g].underflow)} flushed")
        return self.fig


def share_label(share: float) -> str:
    """A fraction as the bar label shows it: whole percent from 1 % on, one decimal below (0.64 % reads "0.6%",
    not "1%"), "<0.1%" for a share that is not 0 but would print as 0.0 %, "0%" for none."""
    if share <= 0:
        return "0%"
    if share < 0.0005:
        return "<0.1%"
    return f"{share:.1%}" if share < 0.0095 else f"{share:.0%}"


def plot_error_report(reports: dict[str, ErrorReport], selected: str, outlier: float):
    """The widget's figure for one setting (see :class:`ErrorReportFigure`), as a new Figure."""
    channels = len(next(iter(reports.values())).channel_error)
    return ErrorReportFigure(channels, tuple(reports)).update(reports, selected, outlier)


def plot_accumulation_sweep(sweep: AccumulationSweep, report_figure: float = 0.02):
    """Error vs accumulator mantissa bits, with and without promotion every 128; the Hopper band (13–14 bits)
    shaded and the V3 report's figure drawn as a line; the legend sits below the axes. Returns the Figure."""
    fig, ax = subplots(height=4.4)
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)   # below: off the Hopper band
    return fig


def draw_promotion(k: int = 7168, n_c: int = fp8.BLOCK, bits: int = 14):
    """V3 Fig. 7 (b) as a diagram: one output element of an FP8 GEMM over ``k`` products, cut into chunks of
    ``n_c`` (V3: N_C = 128, "equivalent to 4 WGMMAs"). The tensor core sums each chunk in its limited
    accumulator (about ``bits`` bits); the partial sum is then copied to a CUDA core's FP32 register, multiplied
    by the activation tile's scale s_x and the weight block's scale s_w, and added to the FP32 result. Chunk
    count and index ranges are computed from ``k`` and ``n_c``. Returns the :class:`Diagram`.
    Raises ValueError for k or n_c < 1.
    """
    if k < 1 or n_c < 1:
        raise ValueError(f"k and n_c must be >= 1, got {k}, {n_c}")
    chunks = math.ceil(k / n_c)
    shown = list(range(min(chunks, 3)))
    cols = [6.3, 10.3, 14.3][: len(shown)]
    if chunks > 3:
        shown.append(chunks - 1)
        cols.append(19.9)
    dg = Diagram(width=23.0, height=7.6,
                 title=f"Promotion every $N_C$ = {n_c} products: K = {k} → {chunks} partial sums, each leaves the "
                       f"~{bits}-bit accumulator")
    y_tc, y_sc, y_acc = 6.3, 3.9, 1.6
    for y, text in ((y_tc, f"tensor core\n(limited accumulator,\n~{bits} bits)"),
                    (y_sc, "copy to a CUDA core:\nFP32 register,\nscales applied"), (y_acc, "FP32 result")):
        dg.text(2.0, y, text, fontsize=10)
    prev = None
    for c, x in zip(shown, cols):
        lo, hi = c * n_c, min(k, (c + 1) * n_c) - 1
        dg.box(x, y_tc, 3.6, 1.6, f"chunk {c}\nk = {lo}…{hi}\n$\\Sigma$ of {hi - lo + 1} FP8 products", "tensor",
               name=f"tc{c}", fontsize=9)
        dg.box(x, y_sc, 3.6, 1.1, f"$\\times\\ s_x[m, {c}]\\cdot s_w[n, {c}]$", "op", name=f"sc{c}", fontsize=10)
        dg.box(x, y_acc, 1.0, 0.9, "+", "op", name=f"acc{c}", fontsize=13)
        dg.arrow((x, y_tc - 0.8), (x, y_sc + 0.55), color=PALETTE["orange"])
        dg.arrow((x, y_sc - 0.55), (x, y_acc + 0.45))
        if prev is None:
            dg.text(x - 2.3, y_acc, "0", fontsize=11)
            dg.arrow((x - 2.0, y_acc), (x - 0.5, y_acc))
        else:
            dg.arrow((prev + 0.5, y_acc), (x - 0.5, y_acc))
        prev = x
    if chunks > 3:
        dg.text(17.1, y_tc, "…", fontsize=16)
        dg.text(17.1, y_sc, "…", fontsize=16)
    dg.arrow((prev + 0.5, y_acc), (prev + 1.7, y_acc))
    dg.text(prev + 1.8, y_acc, "C[m, n]", fontsize=10.5, ha="left")
    dg.text(11.5, 0.45, "s_x: scale of token m's 1×128 activation tile c;  s_w: scale of the 128×128 weight block "
                        "(row block of n, column block c)", fontsize=9.5)
    return dg


def draw_mixed_precision(block: int = fp8.BLOCK):
    """V3 Fig. 6 as a diagram: the number formats around one linear layer in training.

    Three lanes, one per GEMM, each with its two inputs on the left, the FP8 GEMM (products of FP8 inputs, sums
    kept in FP32, §3.3.2) in the middle and its output on the right:

    - Fprop: the BF16 input x, quantized in 1×``block`` tiles, times the FP32 master weight W, quantized in
      ``block``×``block`` blocks; the output y leaves in BF16. The FP8 x is cached for Wgrad (§3.3.3).
    - Dgrad: the output gradient ∂y (BF16, quantized in 1×``block`` tiles) times the same FP8 W gives ∂x (BF16)
      for the layer below.
    - Wgrad: ∂y and the cached FP8 x, both re-tiled ``block``×1 (along the tokens, the dimension this GEMM sums
      over), give ∂W in FP32; AdamW, with its moments in BF16, updates the FP32 master weight.

    Box colours give the format (:data:`PRECISION_COLOURS`), rounded white boxes are operations. The course's
    :class:`dsv3_lessons.model.fp8.FP8Linear` follows this dataflow with fake quantization and exact FP32 sums.
    Returns the :class:`Diagram`. Raises ValueError for ``block`` < 1.
    Source: V3 report §3.3, Fig. 6; §3.3.3 (BF16 optimizer moments, FP32 master weights and gradients).
    """
    from matplotlib.patches import Patch

    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    c = PRECISION_COLOURS
    dg = Diagram(width=21.0, height=11.0, title="FP8 around one linear layer in training (V3 Fig. 6)")
    tile, blk, col = f"1×{block} tiles", f"{block}×{block} blocks", f"{block}×1 tiles"
    lanes = (
        ("Fprop", 9.0, ("input x", "BF16", tile), ("master W", "FP32", blk), ("output y", "BF16"),
         "to the layer above;\nx kept in FP8\nfor Wgrad"),
        ("Dgrad", 5.6, ("gradient ∂y", "BF16", tile), ("W (from Fprop)", "FP8", "transposed:\nthe same blocks"),
         ("gradient ∂x", "BF16"),
         "to the layer below"),
        ("Wgrad", 2.2, ("gradient ∂y", "BF16", col), ("cached x", "FP8", f"re-tiled\n{col}"),
         ("gradient ∂W", "FP32"), "AdamW (moments\nBF16) updates the\nFP32 master W"),
    )
    for name, y, in_a, in_b, out, after in lanes:
        gemm = dg.box(10.0, y, 3.4, 1.9, f"{name}\nFP8 × FP8 GEMM\nsums in FP32", "op", name=name, fontsize=10)
        for (label, fmt, how), dy in zip((in_a, in_b), (0.75, -0.75)):
            src = dg.box(1.9, y + dy, 3.2, 1.1, f"{label}\n{fmt}", "tensor", name=f"{name}:{label}", color=c[fmt],
                         fontsize=10)
            text = how if fmt == "FP8" else f"→ FP8 E4M3\n{how}"    # an FP8 input is only reused or re-laid out
            q = dg.box(5.7, y + dy, 3.0, 1.1, text, "op", name=f"{name}:{label}:q", fontsize=9.5)
            dg.arrow(src.right, q.left)
            dg.arrow(q.right, (gemm.left[0], y + dy * 0.6), color=PALETTE["orange"])
        label, fmt = out
        o = dg.box(14.2, y, 2.8, 1.1, f"{label}\n{fmt}", "tensor", name=f"{name}:out", color=c[fmt], fontsize=10)
        dg.arrow(gemm.right, o.left)
        dg.arrow(o.right, (16.1, y))
        dg.text(16.2, y, after, fontsize=9.5, ha="left")
    dg.text(10.5, 0.35, f"orange arrows carry FP8 (E4M3) operands; every 1×{block} tile and {block}×{block} block "
                        "has its own FP32 scale", fontsize=9.5)
    handles = [Patch(facecolor=c[f], edgecolor="#333333", label=f) for f in ("FP32", "BF16", "FP8")]
    dg.ax.legend(handles=handles, loc="upper right", fontsize=9.5, framealpha=0.95, ncols=3)
    return dg


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
