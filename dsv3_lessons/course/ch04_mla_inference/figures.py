"""Chapter 04's mechanism figure: one absorbed MLA decode step, drawn from a config.

The picture (V2 report §2.1.2-2.1.3; V3 report §2.1.1, eqs. 1-11; the official inference code's
``attn_impl="absorb"``): the new token h_t gives the query parts q^C_{t,i} and the rotated q^R_{t,i} and the
cache entry [c^KV_t | k^R_t]; W^UK_i is folded into the query, so q̃_{t,i} = W^UK_i^T q^C_{t,i} lives in the
d_c-dimensional latent space; every head then scores the SAME cached key [c^KV_j | k^R_j] (width
d_c + d_h^R, 576 for V3) and mixes the SAME value c^KV_j (width d_c, 512 for V3) -- multi-query attention
over the latent cache; W^UV_i and W^O run after attention, once per step.

Every label is computed from the config, so the tiny model and the 671B model both render.
"""
from __future__ import annotations

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["draw_absorbed_decode", "absorbed_decode_labels"]


def absorbed_decode_labels(cfg: DeepseekV3Config) -> dict[str, str]:
    """The size labels of :func:`draw_absorbed_decode` (tensor shapes per new token), computed from ``cfg``.

    Keys: ``h``, ``c_q``, ``q_c``, ``q_r``, ``q_tilde``, ``c_kv``, ``k_r``, ``key``, ``value``, ``o_lat``,
    ``o_heads``, ``out``. Shapes are written ``heads × width`` for per-head tensors.

    Raises:
        ValueError: ``cfg`` is not a :class:`DeepseekV3Config`.
    """
    if not isinstance(cfg, DeepseekV3Config):
        raise ValueError(f"cfg must be a DeepseekV3Config, got {type(cfg).__name__}")
    h, d, dc, r = cfg.num_attention_heads, cfg.hidden_size, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    dh, dv = cfg.qk_nope_head_dim, cfg.v_head_dim
    return {
        "h": f"{d:,}",
        "c_q": f"{cfg.q_lora_rank:,}" if cfg.q_lora_rank is not None else "(no query latent)",
        "q_c": f"{h} × {dh}",
        "q_r": f"{h} × {r}",
        "q_tilde": f"{h} × {dc}",
        "c_kv": f"{dc}",
        "k_r": f"{r}",
        "key": f"{dc + r}",
        "value": f"{dc}",
        "o_lat": f"{h} × {dc}",
        "o_heads": f"{h} × {dv}",
        "out": f"{d:,}",
    }


def draw_absorbed_decode(cfg: DeepseekV3Config, title: str | None = None) -> Diagram:
    """Draw one absorbed decode step of an MLA layer with ``cfg``'s sizes; return the :class:`Diagram`.

    Query side (top row): h_t -> c^Q_t -> q^C_{t,i} -> q̃_{t,i} (W^UK_i folded in, d_c wide) and
    q^R_{t,i} (rotated at position t). Cache (bottom): the new entry c^KV_t, k^R_t is appended to the latent
    cache, drawn as one highlighted strip per token, d_c + d_h^R wide, that every head reads as its key
    (c^KV as the value). After attention: o^lat_{t,i} (d_c wide) -> W^UV_i -> W^O -> out.

    Args:
        cfg: the configuration whose sizes label the boxes.
        title: figure title (default names the sizes: "n_h heads, d_c = …").
    Returns: the diagram (``.fig`` is the matplotlib Figure; ``.boxes`` the named boxes).
    Raises:
        ValueError: ``cfg`` is not a :class:`DeepseekV3Config`.
    """
    lab = absorbed_decode_labels(cfg)
    h, dc, r = cfg.num_attention_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    if title is None:
        title = (f"One absorbed decode step: {h} heads, $d_c$ = {dc}, $d_h^R$ = {r}: "
                 f"every head reads one shared {dc + r}-wide key")
    dg = Diagram(width=20.0, height=12.6, title=title)
    bh = 1.25  # box height

    # ---- query side (top rows)
    hb = dg.box(1.3, 7.4, 2.1, bh, f"new token\n$h_t$: {lab['h']}", "tensor", name="h")
    cq = dg.box(4.6, 11.2, 2.3, bh, f"$c^Q_t$: {lab['c_q']}", "tensor", name="c_q")
    qc = dg.box(8.3, 11.2, 2.5, bh, f"$q^C_{{t,i}}$: {lab['q_c']}", "tensor", name="q_c")
    qr = dg.box(8.3, 9.2, 2.5, bh, f"$q^R_{{t,i}}$: {lab['q_r']}\nrotated at $t$", "rope", name="q_r")
    fold = dg.box(11.9, 11.2, 2.3, bh, "fold $W^{UK}_i$ in:\n$W^{UK\\top}_i q^C_{t,i}$", "weight", name="fold")
    qt = dg.box(15.6, 11.2, 2.6, bh, f"$\\tilde q_{{t,i}}$: {lab['q_tilde']}\n(latent space)", "tensor",
                name="q_tilde")
    # labels of curved arrows sit inside the bend, clear of the line
    dg.arrow(hb.top, cq.left, connectionstyle="arc3,rad=-0.25")
    dg.text(2.45, 9.35, "$W^{DQ}$, norm", fontsize=9.5, color="#333333", ha="left")
    dg.arrow(cq.right, qc.left, "$W^{UQ}$", text_offset=(0, 0.05))
    dg.arrow((cq.x + 0.4, cq.y - bh / 2), qr.left, connectionstyle="arc3,rad=0.2")
    dg.text(cq.x + 1.35, 10.15, "$W^{QR}$, RoPE", fontsize=9.5, color="#333333", ha="left")
    dg.arrow(qc.right, fold.left)
    dg.arrow(fold.right, qt.left)

    # ---- cache side (bottom): the new entry, appended as one row of the cache strip
    ckv = dg.box(4.75, 5.7, 2.2, bh, f"$c^{{KV}}_t$: {lab['c_kv']}", "tensor", name="c_kv")
    kr = dg.box(4.75, 3.9, 2.2, bh, f"$k^R_t$: {lab['k_r']}\nrotated at $t$", "rope", name="k_r")
    dg.arrow((hb.x + 0.3, hb.y - bh / 2), ckv.left, connectionstyle="arc3,rad=0.25")
    dg.text(3.75, 6.85, "$W^{DKV}$, norm", fontsize=9.5, color="#333333")
    dg.arrow((hb.x - 0.3, hb.y - bh / 2), kr.left, connectionstyle="arc3,rad=0.35")
    dg.text(3.6, 4.8, "$W^{KR}$, RoPE", fontsize=9.5, color="#333333", ha="right")
    x0, total_w, cy, ch = 7.2, 6.2, 4.6, 2.6   # the strip: c^KV part and k^R part, widths in proportion
    w_r = max(1.5, total_w * r / (dc + r))
    w_c = total_w - w_r
    dg.box(x0 + w_c / 2, cy, w_c, ch, f"$c^{{KV}}_j$: {lab['c_kv']}\n= the shared value", "cached", name="cache_c")
    dg.box(x0 + w_c + w_r / 2, cy, w_r, ch, f"$k^R_j$: {lab['k_r']}", "cached", name="cache_r")
    for k in range(1, 6):  # one row per cached token j
        y = cy - ch / 2 + k * ch / 6
        dg.ax.plot([x0 + 0.05, x0 + total_w - 0.05], [y, y], color="#a04000", lw=0.6, alpha=0.45, zorder=2.5)
    dg.text(x0 + total_w / 2, cy + ch / 2 + 0.75,
            f"latent cache, one row per token $j$ = 0 … $t$; every head\n"
            f"reads the same key [$c^{{KV}}_j$ | $k^R_j$], {lab['key']} wide", fontsize=10)
    dg.text(x0 + total_w / 2, cy - ch / 2 - 0.4, "appended once per token, never expanded per head",
            fontsize=9.5, style="italic")
    dg.arrow(ckv.right, (x0, ckv.y))
    dg.arrow(kr.right, (x0, kr.y))
    dg.text((ckv.right[0] + x0) / 2, (ckv.y + kr.y) / 2, "append", fontsize=9.5, color="#333333")

    # ---- attention and output (right column)
    att = dg.box(17.2, 8.3, 5.1, 1.55, "scores $= (\\tilde q_{t,i}\\cdot c^{KV}_j + q^R_{t,i}\\cdot k^R_j)$ · scale\n"
                 "softmax over $j$ → $p_{t,j,i}$", "op", name="attention", fontsize=9.5)
    dg.arrow(qt.bottom, (qt.x, att.top[1]), f"[$\\tilde q$ ; $q^R$]: {lab['key']} wide", text_offset=(1.5, -0.2))
    dg.arrow(qr.right, (att.left[0], att.y + 0.3), connectionstyle="arc3,rad=-0.08")
    dg.arrow((x0 + total_w, cy + 0.9), (att.x - 1.9, att.bottom[1]), connectionstyle="arc3,rad=-0.15")
    ol = dg.box(17.2, 6.2, 4.5, bh, f"$o^{{lat}}_{{t,i}} = \\sum_j p_{{t,j,i}}\\, c^{{KV}}_j$: {lab['o_lat']}",
                "tensor", name="o_lat", fontsize=9.5)
    uv = dg.box(17.2, 4.2, 4.5, bh, f"$W^{{UV}}_i o^{{lat}}_{{t,i}}$: {lab['o_heads']}", "weight", name="w_uv")
    out = dg.box(17.2, 2.0, 4.5, bh, f"out: {lab['out']}", "tensor", name="out")
    dg.arrow(att.bottom, ol.top)
    dg.arrow(ol.bottom, uv.top)
    dg.arrow(uv.bottom, out.top, "$W^O$ (o_proj)", text_offset=(1.25, -0.2))
    dg.legend(loc="lower left")
    return dg


# ==================================================================================================
# Chapter 04 -- MLA inference (decode-step time and cache size of the four decode variants)
# ==================================================================================================
#: line style per decode variant: series that coincide (naive / transformers; the latent caches) stay visible.
_CH04_STYLE = {
    "per_head": dict(color="#0072B2", marker="s", linestyle="-"),
    "naive": dict(color="#D55E00", marker="o", linestyle="-"),
    "transformers": dict(color="#CC79A7", marker="x", linestyle="--", markersize=9),
    "absorb": dict(color="#009E73", marker="^", linestyle="-"),
}


def _ch04_context_axis(axis, contexts, label="context length T (tokens)"):
    from matplotlib.ticker import NullFormatter

    axis.set_xscale("log")
    axis.set_xticks(contexts)
    axis.set_xticklabels([f"{c:,}" for c in contexts])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel(label)
    axis.grid(True, which="both", alpha=0.3)


def _ch04_series(ax, xs, series: dict, scale: float = 1.0):
    """Log-log lines, one per series; a series equal to an earlier one is drawn dashed with hollow markers
    and labelled "(= earlier)", so coinciding lines both stay visible."""
    drawn: list[tuple[str, list[float]]] = []
    for name, ys in series.items():
        ys = [y / scale for y in ys]
        style = dict(_CH04_STYLE.get(name.split()[0], {"marker": "o"}))
        same = next((other for other, prev in drawn
                     if all(abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300) for a, b in zip(ys, prev))), None)
        label = name
        if same is not None:
            style.update(linestyle=(0, (4, 3)), markerfacecolor="none", markersize=10, linewidth=1.6)
            label = f"{name} (= {same})"
        ax.loglog(xs, ys, label=label, **style)
        drawn.append((name, ys))


def _ch04_plain_log_ticks(ax):
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _ch04_check(contexts, series: dict):
    for name, ys in series.items():
        if len(ys) != len(contexts):
            raise ValueError(f"{name!r} has {len(ys)} values for {len(contexts)} contexts")


def plot_decode_times(contexts, times: dict, cache_bytes: dict | None = None, title: str | None = None):
    """Log-log decode-step time vs context length, one line per variant; optional cache-size panel.

    Args:
        contexts: context lengths T (tokens).
        times: ``{variant: [seconds per decode step, one per context]}``.
        cache_bytes: optional ``{variant: [bytes of the cached context, one per context]}``.
    Returns: the ``matplotlib`` Figure (1 or 2 axes), drawn with :func:`dsv3_lessons.course.common.style.subplots`.
    Raises:
        ValueError: a series whose length differs from ``contexts``.
    """
    from dsv3_lessons.course.common.style import subplots

    contexts = list(contexts)
    _ch04_check(contexts, {**times, **(cache_bytes or {})})
    n = 2 if cache_bytes else 1
    fig, axes = subplots(1, n, height=4.2, squeeze=False)
    ax = axes[0, 0]
    _ch04_series(ax, contexts, times, scale=1e-3)
    _ch04_context_axis(ax, contexts)
    _ch04_plain_log_ticks(ax)
    ax.set_ylabel("one decode step (ms)")
    ax.set_title(title or "decode-step time")
    ax.legend(loc="upper left")
    if cache_bytes:
        ax2 = axes[0, 1]
        _ch04_series(ax2, contexts, cache_bytes, scale=2**20)
        _ch04_context_axis(ax2, contexts)
        _ch04_plain_log_ticks(ax2)
        ax2.set_ylabel("cache of one layer (MiB)")
        ax2.set_title("KV cache held")
        ax2.legend(loc="upper left", fontsize=9)
    return fig


def plot_decode_costs(contexts, flops: dict, bytes_read: dict, title: str | None = None):
    """Two log-log panels over the context length T: FLOPs of one decode step, and bytes it must read.

    Args:
        contexts: context lengths T (tokens).
        flops: ``{label: [FLOPs of one decode step, one per context]}``.
        bytes_read: ``{label: [bytes read by one decode step (weights + cache), one per context]}``.
        title: optional figure title.
    Returns: the Figure (2 axes: GFLOP per step; MB read per step).
    Raises:
        ValueError: a series whose length differs from ``contexts``.
    """
    from dsv3_lessons.course.common.style import subplots

    contexts = list(contexts)
    _ch04_check(contexts, {**flops, **bytes_read})
    fig, (ax1, ax2) = subplots(1, 2, height=4.2)
    for ax, series, scale, ylabel, panel in ((ax1, flops, 1e9, "GFLOP per decode step", "arithmetic"),
                                              (ax2, bytes_read, 1e6, "MB read per decode step", "memory traffic")):
        _ch04_series(ax, contexts, series, scale=scale)
        _ch04_context_axis(ax, contexts)
        _ch04_plain_log_ticks(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(panel)
        ax.legend(loc="upper left", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_absorb_tradeoff(lengths, ratios: dict, title: str | None = None):
    """Absorbed / re-expanded FLOPs against a length, one line per situation (decode, prefill …).

    Below 1 absorption saves arithmetic; above 1 re-expanding is cheaper.

    Args:
        lengths: the x values (tokens), e.g. context length for decode, prompt length for prefill.
        ratios: ``{label: [absorbed FLOPs / naive FLOPs, one per length]}``.
    Returns: the Figure (1 axis, log-log, with the break-even line at 1).
    Raises:
        ValueError: a series whose length differs from ``lengths``.
    """
    from dsv3_lessons.course.common.style import PALETTE, subplots

    lengths = list(lengths)
    _ch04_check(lengths, ratios)
    fig, ax = subplots(1, 1, height=4.0)
    colours = [PALETTE["green"], PALETTE["red"], PALETTE["blue"], PALETTE["purple"]]
    markers = ["^", "o", "s", "D"]
    for k, (name, ys) in enumerate(ratios.items()):
        ax.loglog(lengths, ys, marker=markers[k % 4], color=colours[k % 4], label=name)
    ax.axhline(1.0, color="#555555", lw=1.2, linestyle=":")
    ax.text(lengths[-1], 0.9, "break-even; above it re-expanding is cheaper, below it absorbing", fontsize=9.5,
            va="top", ha="right", color="#555555")
    _ch04_context_axis(ax, lengths, "tokens: context T (decode) or prompt length T (prefill)")
    ax.set_ylabel("absorbed FLOPs / re-expanded FLOPs")
    ax.set_title(title or "when does absorption save arithmetic?")
    ax.legend(loc="center right")
    return fig


__all__ += ["plot_decode_times", "plot_decode_costs", "plot_absorb_tradeoff"]


# ---------------------------------------------------------------------------------------------- decode costs
_COST_STYLE = {
    "mha": dict(color="#E69F00", marker="D", linestyle="-", markersize=5),
    "per_head": dict(color="#0072B2", marker="s", linestyle="--", markersize=5),
    "absorb": dict(color="#009E73", marker="^", linestyle="-", markersize=6),
}


class DecodeCostFigure:
    """The decode-cost figure of chapter 4, built once and updated in place (the widget redraws only data).

    Two log-log panels over the context length: FLOPs per decoded token (left) and bytes read per decoded token
    (right), one line per layer of :data:`~dsv3_lessons.course.ch04_mla_inference.costs.COST_VARIANTS`; a dotted
    line at the chosen context with its three values marked; a dashed line at the context where absorbed MLA
    starts to need more FLOPs than MHA. ``ylims`` (``{"flops": (lo, hi), "bytes": (lo, hi)}`` in MFLOP and MB)
    fixes the axes, so they do not move while a widget's controls move (default: the widget's
    :func:`~dsv3_lessons.course.ch04_mla_inference.costs.fixed_cost_limits`, so the notebook's figure and the
    widget's look alike).
    Attributes: ``fig`` (a matplotlib Figure; managed by pyplot only with ``pyplot=True``), ``update(report)``
    redraws the data; :meth:`dynamic` lists the artists it changes (what the widget re-renders by blitting over a
    cached background, :class:`~dsv3_lessons.course.common.blit.BlitRenderer`).
    """

    def __init__(self, report, ylims: dict | None = None, title: str | None = None, pyplot: bool = False):
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter

        from dsv3_lessons.course.common.style import DPI, FIG_WIDTH, RC
        from dsv3_lessons.course.ch04_mla_inference.costs import COST_LABELS, COST_VARIANTS

        self.variants = COST_VARIANTS
        size = dict(figsize=(FIG_WIDTH, 4.4), dpi=DPI, layout="constrained")
        # pyplot=True: a pyplot figure that plt.show() displays (the notebook's direct call); False: a bare Figure
        # that a widget keeps and re-renders (pyplot never shows it a second time)
        self.fig = plt.figure(**size) if pyplot else Figure(**size)
        if not pyplot:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.fig)  # a real canvas, so draw() below solves the layout
        axes = self.fig.subplots(1, 2)
        self.ax_f, self.ax_b = axes
        grid = list(report.grid)
        if ylims is None:
            from dsv3_lessons.course.ch04_mla_inference.costs import fixed_cost_limits

            ylims = fixed_cost_limits()
        self.lines, self.dots = {}, {}
        fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
        for ax, key, ylabel, panel in ((self.ax_f, "flops", "MFLOP per decoded token", "arithmetic"),
                                       (self.ax_b, "bytes", "MB read per decoded token", "memory traffic")):
            for v in COST_VARIANTS:
                style = _COST_STYLE[v]
                (line,) = ax.plot(grid, [1.0] * len(grid), label=COST_LABELS[v], linewidth=1.8, **style)
                (dot,) = ax.plot([grid[0]], [1.0], linestyle="none", marker="o", markersize=9,
                                 markerfacecolor="none", markeredgecolor=style["color"], markeredgewidth=2)
                self.lines[key, v], self.dots[key, v] = line, dot
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlim(grid[0] / 1.3, grid[-1] * 1.3)
            ax.set_ylim(*ylims[key])
            ax.set_xticks(grid[::2], [f"{t // 1024}K" if t >= 1024 else str(t) for t in grid[::2]])
            ax.minorticks_off()    # fewer artists: each update re-renders only what it must
            ax.yaxis.set_major_formatter(fmt)
            ax.set_xlabel("context T (cached tokens)")
            ax.set_ylabel(ylabel)
            ax.set_title(panel, fontsize=RC["axes.titlesize"])
            ax.grid(True, which="major", alpha=0.3)
        self.now = [ax.axvline(grid[0], color="#555555", linestyle=":", linewidth=1.4) for ax in axes]
        self.cross = self.ax_f.axvline(grid[0], color="#CC79A7", linestyle="--", linewidth=1.4)
        self.cross_text = self.ax_f.text(0.02, 0.97, "", transform=self.ax_f.transAxes, fontsize=9.5, va="top",
                                         ha="left", color="#8a3b6b",
                                         bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.5))
        self.ax_b.legend(loc="lower right", fontsize=9)
        self.title = self.fig.suptitle(title or " ", fontsize=RC["axes.titlesize"])
        self.fixed_title = title
        self.update(report)
        self.fig.canvas.draw()                  # solve the constrained layout once ...
        self.fig.set_layout_engine("none")     # ... then keep it: updates move only data

    def dynamic(self) -> list:
        """The artists :meth:`update` changes: curves, markers, the context and crossover lines, texts, title."""
        return [*self.lines.values(), *self.dots.values(), *self.now, self.cross, self.cross_text, self.title]

    def update(self, report) -> None:
        """Redraw the data of ``report`` (a :class:`~dsv3_lessons.course.ch04_mla_inference.costs.DecodeCostReport`)."""
        for key, curves, now in (("flops", report.curve_flops, report.flops),
                                 ("bytes", report.curve_bytes, report.bytes)):
            for v in self.variants:
                self.lines[key, v].set_ydata([y / 1e6 for y in curves[v]])
                self.dots[key, v].set_data([report.context], [now[v] / 1e6])
        for line in self.now:
            line.set_xdata([report.context, report.context])
        if report.crossover is None:
            self.cross.set_visible(False)
            self.cross_text.set_text("absorbed MLA needs fewer FLOPs than MHA at every context")
        else:
            self.cross.set_visible(True)
            self.cross.set_xdata([report.crossover, report.crossover])
            self.cross_text.set_text(f"dashed: absorbed MLA = MHA at T = {report.crossover:,}\n"
                                     f"(fewer FLOPs left of it, more right of it)")
        if not self.fixed_title:
            self.title.set_text(f"one V3-width attention layer, {report.heads} heads, batch {report.batch}, "
                                f"{report.queries} new token{'s' if report.queries > 1 else ''} per step, BF16; "
                                f"dotted: T = {report.context:,}")


def plot_decode_cost_report(report, ylims: dict | None = None, title: str | None = None):
    """Draw a :class:`~dsv3_lessons.course.ch04_mla_inference.costs.DecodeCostReport`; return the Figure
    (the same drawing the decode-cost widget updates in place)."""
    return DecodeCostFigure(report, ylims=ylims, title=title, pyplot=True).fig


__all__ += ["DecodeCostFigure", "plot_decode_cost_report"]
