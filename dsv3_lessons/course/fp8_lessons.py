"""Chapter 9 helpers: outlier activations, error reports, the accumulation sweep and the chapter's plots.

The mechanism itself (formats, scales, tiles, blocks, the limited accumulator, the fake-quant Linear) lives in
:mod:`dsv3_lessons.model.fp8`; this module only sets up experiments on it and draws them
(through :func:`dsv3_lessons.course.style.subplots`). Sources: V3 report (arXiv 2412.19437) §3.3, Fig. 7.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv3_lessons.model import fp8
from .style import PALETTE, subplots

__all__ = ["outlier_activations", "ErrorReport", "error_report", "GRANULARITIES", "AccumulationSweep",
           "accumulation_sweep", "plot_representable_values", "plot_accumulation_sweep", "plot_loss_curves",
           "plot_error_report", "outlier_label"]

#: granularity key -> label shown to the learner.
GRANULARITIES = {"tensor": "per tensor", "tile": "1×128 tiles", "block": "128×128 blocks"}
_FMT_LABEL = {"e4m3": "E4M3", "e5m2": "E5M2", "e4m3fnuz": "E4M3FNUZ", "bf16": "BF16"}


def outlier_activations(tokens: int = 256, channels: int = 512, outlier: float = 100.0, n_outliers: int = 4,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[tokens, channels]`` ~ N(0, 1) with ``n_outliers`` channels scaled by ``outlier``.

    LLM activations carry a few channels with huge magnitudes (the reason V3 scales per 1×128 tile). The
    outlier channels sit in the first 128-channel tile, so the other tiles are clean. Returns ``(x,
    outlier_channel_indices)``. Raises ValueError for non-positive sizes or ``outlier`` < 1.
    """
    if min(tokens, channels) < 1 or not 0 <= n_outliers <= min(channels, 128):
        raise ValueError(f"tokens, channels must be >= 1 and 0 <= n_outliers <= min(channels, 128), got "
                         f"{tokens}, {channels}, {n_outliers}")
    if not outlier >= 1:
        raise ValueError(f"outlier (a magnitude factor) must be >= 1, got {outlier!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=g)
    idx = torch.randperm(min(channels, 128), generator=g)[:n_outliers].sort().values
    x[:, idx] *= outlier
    return x, idx


@dataclass(frozen=True)
class ErrorReport:
    """Quantization error of ``x`` at one granularity and format.

    Attributes: ``granularity``, ``fmt``; ``rel_error`` the mean of |x̂ − x|/|x| over the ordinary channels'
    values (outliers excluded; 1.0 for a value flushed to zero; a norm would hide the small values, which are
    the ones that suffer); ``underflow`` fraction of non-zero ordinary values that became 0;
    ``channel_error [C]`` the same mean per channel; ``outliers`` their indices.
    """

    granularity: str
    fmt: str
    rel_error: float
    underflow: float
    channel_error: torch.Tensor
    outliers: torch.Tensor


def error_report(x: torch.Tensor, outliers: torch.Tensor, granularity: str = "tile",
                 fmt: str = "e4m3") -> ErrorReport:
    """Fake-quantize ``x [T, C]`` (:func:`dsv3_lessons.model.fp8.fake_quantize`) and measure the damage.

    Raises ValueError for an unknown granularity or format (from the fp8 module).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [tokens, channels], got shape {tuple(x.shape)}")
    xq = fp8.fake_quantize(x, granularity, fmt)
    normal = torch.ones(x.shape[-1], dtype=torch.bool)
    normal[outliers] = False
    nonzero = x != 0
    rel = torch.where(nonzero, (xq - x).abs() / x.abs().clamp(min=1e-30), torch.zeros_like(x))
    chan = rel.sum(0) / nonzero.sum(0).clamp(min=1)
    nz = nonzero[:, normal]
    under = ((xq[:, normal] == 0) & nz).sum().item() / max(1, nz.sum().item())
    return ErrorReport(granularity, fmt, (rel[:, normal].sum() / nz.sum().clamp(min=1)).item(), under, chan,
                       outliers)


@dataclass(frozen=True)
class AccumulationSweep:
    """Relative errors ‖C_sim − C‖/‖C‖ of FP8 GEMMs for accumulator widths ``bits``.

    ``plain[i]``: per-tensor scales, the whole K in the limited accumulator; ``promoted[i]``: 1×128 / 128×128
    scales, promotion to FP32 every 128 products. Both are measured against the exact (float64) product of
    the same FP8 inputs, so they show accumulation error only. ``quantization`` is the error the FP8 rounding
    of the inputs alone causes (per tensor, fine-grained), for scale. ``k``, ``m``, ``n``: GEMM sizes.
    """

    bits: list[int]
    plain: list[float]
    promoted: list[float]
    quantization: tuple[float, float]
    k: int
    m: int
    n: int


def accumulation_sweep(bits: list[int], k: int = 4096, m: int = 32, n: int = 32, seed: int = 0,
                       mode: str = "truncate") -> AccumulationSweep:
    """Random ``[m, k] @ [k, n]`` GEMMs (N(0, 1) entries) through :func:`dsv3_lessons.model.fp8.fp8_matmul_simulated`.

    All widths are simulated in one pass over K. Raises ValueError for bad sizes or widths.
    """
    if k < 1 or m < 1 or n < 1:
        raise ValueError(f"k, m, n must be >= 1, got {k}, {m}, {n}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)
    exact = x.double() @ w.double().t()

    def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
        return ((a.double() - ref).norm() / ref.norm()).item()

    qx, sx = fp8.quantize_per_tensor(x)
    qw, sw = fp8.quantize_per_tensor(w)
    ref_plain = (qx.double() @ qw.double().t()) * float(sx * sw)
    ref_fine = fp8.fake_quantize(x, "tile").double() @ fp8.fake_quantize(w, "block").double().t()
    plain = fp8.fp8_matmul_simulated(x, w, bits, None, mode=mode)
    promoted = fp8.fp8_matmul_simulated(x, w, bits, fp8.BLOCK, mode=mode)
    return AccumulationSweep(list(bits), [rel(p, ref_plain) for p in plain], [rel(p, ref_fine) for p in promoted],
                             (rel(ref_plain, exact), rel(ref_fine, exact)), k, m, n)


# ---------------------------------------------------------------------------------------------- plots
def outlier_label(outlier: float) -> str:
    """A short label for an outlier factor: up to 3 significant digits below 1000 (``"1.78"``, ``"316"``),
    otherwise mantissa and exponent (``56234.1`` → ``"5.6e4"``)."""
    if outlier < 1000:
        return f"{outlier:.3g}"
    mant, exp = f"{outlier:.1e}".split("e")
    return f"{mant}e{int(exp)}"


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
