"""Matplotlib figures as pure functions: data in, ``Figure`` out (testable without widgets).

Each chapter's section is marked by a comment header. Figures are created with
``matplotlib.figure.Figure`` via ``plt.subplots`` and returned; callers decide whether to show them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

__all__: list[str] = []


# ==================================================================================================
# Chapter 01 -- KV cache (why the KV cache is the bottleneck)
# ==================================================================================================
from .kv_cache import GB as _KV_GB, KB as _KV_KB, AttentionSpec as _KVSpec  # noqa: E402
from .kv_cache import bytes_per_token as _kv_bytes_per_token, cache_bytes as _kv_cache_bytes  # noqa: E402
from .style import PALETTE as _KV_PALETTE, subplots as _kv_subplots  # noqa: E402

#: contexts drawn by default: powers of two from 1K to 512K tokens
KV_CONTEXTS = tuple(2**e for e in range(10, 20))

#: two models whose per-token caches differ by less than this fraction draw on top of each other on the
#: log axes of :func:`plot_kv_cache_vs_context`; such lines get distinct dashes/markers and a legend note.
KV_COINCIDE_REL = 0.03

_KV_COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#555555"]
_KV_STYLES = [("-", "o", 5.0, "full"), ("--", "s", 8.0, "none"), (":", "^", 10.0, "none")]


def kv_mathtext(text: str) -> str:
    """``text`` with the plain-text symbols ``d_c`` and ``d_h^R`` written as matplotlib mathtext.

    Model descriptions and what-if names (``AttentionSpec.describe()``, ``mla_what_if``) are plain text so
    they read well when printed; figure labels render them as $d_c$ and $d_h^R$ instead.
    """
    return text.replace("d_h^R", "$d_h^R$").replace("d_c", "$d_c$")


def kv_coinciding_groups(specs, dtype: str = "bf16", rel: float = KV_COINCIDE_REL) -> list[list[str]]:
    """Names of models whose cache per token lies within ``rel`` of each other (groups of ≥ 2, largest first).

    Such lines coincide on a log axis; :func:`plot_kv_cache_vs_context` draws each member with its own
    line style and marker and names its partner in the legend.
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    order = sorted(specs, key=lambda s: -_kv_bytes_per_token(s, dtype))
    groups: list[list] = []
    for spec in order:
        b = _kv_bytes_per_token(spec, dtype)
        if groups and abs(_kv_bytes_per_token(groups[-1][0], dtype) - b) <= rel * b:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return [[s.name for s in g] for g in groups if len(g) > 1]


def plot_kv_cache_vs_context(specs, contexts=KV_CONTEXTS, batch: int = 1, dtype: str = "bf16",
                             budget_gb: float = 80.0, highlight: str | None = None,
                             what_if: _KVSpec | None = None, context_marker: int | None = None,
                             ylim: tuple[float, float] | None = None):
    """KV-cache size (GB = 10⁹ B) against context length, one line per model, log-log axes.

    Args:
        specs: iterable of :class:`dsv3_lessons.course.kv_cache.AttentionSpec` (or a dict of them).
        contexts: context lengths (tokens, ascending) for the x axis.
        batch, dtype: as in :func:`dsv3_lessons.course.kv_cache.cache_bytes`.
        budget_gb: accelerator memory, drawn as a horizontal line (label ``"80 GB accelerator"``).
        highlight: name of a model drawn thicker; what_if: an extra spec drawn dashed grey (the MLA
            what-if); context_marker: a context drawn as a dotted vertical line.
        ylim: fixed y range in GB (the widget passes one so its axes do not move with the sliders).
    Returns: the ``Figure``. Each model line's label starts with the model name (models whose caches per
    token coincide within :data:`KV_COINCIDE_REL` get distinct dashes/markers and a note naming the
    partner); its y data are ``cache_bytes(spec, context, batch, dtype) / 1e9`` at ``contexts``.
    Raises ValueError (from the arithmetic) for bad contexts, batch or dtype.
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    contexts = [int(c) for c in contexts]
    if not contexts:
        raise ValueError("contexts must hold at least one context length")
    groups = {name: g for g in kv_coinciding_groups(specs, dtype) for name in g}
    # a fixed layout: the widget redraws this figure on every control change, and the constrained layout
    # solver was most of that time; the margins leave room for the legend outside the axes on the right.
    fig, ax = _kv_subplots(height=4.6, layout=None)
    fig.subplots_adjust(left=0.085, right=0.605, bottom=0.12, top=0.93)
    for k, spec in enumerate(specs):
        gb = [_kv_cache_bytes(spec, c, batch, dtype) / _KV_GB for c in contexts]
        label, (ls, marker, ms, fill) = spec.name, _KV_STYLES[0]
        group = groups.get(spec.name)
        if group:
            rank = group.index(spec.name)
            ls, marker, ms, fill = _KV_STYLES[rank % len(_KV_STYLES)]
            other = group[0] if rank else group[1]
            a, b = _kv_bytes_per_token(spec, dtype), _kv_bytes_per_token(other, dtype)
            label += f" (= {other})" if a == b else f" (≈ {other}, {abs(a - b) / max(a, b):.1%} apart)"
        ax.plot(contexts, gb, color=_KV_COLORS[k % len(_KV_COLORS)], ls=ls, marker=marker, ms=ms, fillstyle=fill,
                mew=1.4, lw=3.2 if spec.name == highlight else 1.6, label=label, zorder=3 if group else 2)
    if what_if is not None:
        gb = [_kv_cache_bytes(what_if, c, batch, dtype) / _KV_GB for c in contexts]
        ax.plot(contexts, gb, color="dimgray", lw=2.2, ls=(0, (6, 3)), label=kv_mathtext(what_if.name))
    ax.axhline(budget_gb, color="black", lw=2.0, alpha=0.8, label=f"{budget_gb:g} GB accelerator")
    if context_marker is not None:
        ax.axvline(context_marker, color="grey", lw=1.2, ls=":", label=f"context {context_marker:,}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(contexts)
    ax.set_xticklabels([f"{c // 1024}K" if c % 1024 == 0 else str(c) for c in contexts])
    ax.minorticks_off()
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("context length (tokens per sequence)")
    ax.set_ylabel(f"KV cache (GB), batch {batch}, {str(dtype).upper()}")
    ax.set_title("KV cache vs context: cache only, weights not counted")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9.5,
              title="hollow markers / dashes: same size as the line named", title_fontsize=8.5)
    return fig


def plot_kv_bytes_per_token(specs, dtype: str = "bf16", highlight: str | None = None):
    """Horizontal bars: KV cache per token over all layers (KB = 1000 B), one bar per model.

    Each bar is labelled with its value and the design (``AttentionSpec.describe()``, symbols as mathtext);
    colours by kind (MHA/GQA/MQA/MLA), keyed in a legend (lower right). Returns the ``Figure``; bar widths
    are ``bytes_per_token(spec, dtype) / 1000`` in the order given (top to bottom).
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    if not specs:
        raise ValueError("specs must hold at least one model")
    colors = {"MHA": _KV_PALETTE["red"], "GQA": _KV_PALETTE["blue"], "MQA": _KV_PALETTE["green"],
              "MLA": _KV_PALETTE["orange"]}
    kb = [_kv_bytes_per_token(s, dtype) / _KV_KB for s in specs]
    fig, ax = _kv_subplots(height=0.45 * len(specs) + 1.2)
    y = list(range(len(specs)))[::-1]
    ax.barh(y, kb, color=[colors[s.attention] for s in specs],
            edgecolor=["black" if s.name == highlight else "none" for s in specs], linewidth=2)
    for yi, v, s in zip(y, kb, specs):
        ax.text(v + max(kb) * 0.01, yi, kv_mathtext(f"{v:.3f} KB · {s.describe()}"), va="center", fontsize=9.5)
    from matplotlib.patches import Patch
    kinds = [k for k in ("MHA", "GQA", "MQA", "MLA") if any(s.attention == k for s in specs)]
    ax.legend(handles=[Patch(facecolor=colors[k], label=k) for k in kinds], loc="lower right",
              title="attention design", fontsize=9.5, title_fontsize=9.5)
    ax.set_yticks(y)
    ax.set_yticklabels([s.name for s in specs])
    ax.set_xlim(0, max(kb) * 1.75)
    ax.set_xlabel(f"KV cache per token, all layers (KB = 1000 B, {str(dtype).upper()})")
    ax.set_title("What one token leaves behind in the cache")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


__all__ += ["KV_CONTEXTS", "KV_COINCIDE_REL", "kv_mathtext", "kv_coinciding_groups", "plot_kv_cache_vs_context",
            "plot_kv_bytes_per_token"]


# ==================================================================================================
# Chapter 03 -- RoPE decoupling (score vs distance, fold error per key position, YaRN, the RoPE widget)
# ==================================================================================================
import math as _rope_math  # noqa: E402

from .style import PALETTE as _RP, subplots as _rope_subplots  # noqa: E402

#: fixed axis ranges of the RoPE figures, so a widget's axes stay put while its controls move
_ROPE_SCORE_YLIM = (-0.45, 1.08)
_ROPE_WAVE_YLIM = (2.0, 1e7)


#: the circle view draws each pair scaled so the longer of q, k has length 1: its axes are the same for every pair
_ROPE_PAIR_LIM = 1.3


def _rope_draw_pair(ax, res):
    """Circle view of one channel pair of q and k rotated to their positions (an ExplorerResult).

    Both vectors of the pair are divided by the same number (the longer one's length), so angles and the
    ratio of lengths are kept and the axes are ±1.3 for every pair (they do not rescale with the slider).
    """
    t = [2 * _rope_math.pi * j / 200 for j in range(201)]
    unit = max(float(res.q_pair.norm()), float(res.k_pair.norm()), 1e-12)
    for vec, rot, color, name, sym, pos in ((res.q_pair, res.q_pair_rot, _RP["blue"], "query", "t", res.query_pos),
                                            (res.k_pair, res.k_pair_rot, _RP["orange"], "key", "j", res.key_pos)):
        r = float(vec.norm()) / unit
        ax.plot([r * _rope_math.cos(a) for a in t], [r * _rope_math.sin(a) for a in t], color=color,
                lw=0.8, alpha=0.35, zorder=1)
        # the unrotated vector: thick, light and underneath, so it stays visible when the rotation is small
        ax.plot([0, float(vec[0]) / unit], [0, float(vec[1]) / unit], color=color, lw=4.0, ls=":", alpha=0.55,
                zorder=2, label=f"{name}, unrotated")
        ax.plot([0, float(rot[0]) / unit], [0, float(rot[1]) / unit], color=color, lw=2.0, marker="o",
                markevery=[1], zorder=3, label=f"{name} at ${sym}$ = {pos}")
    ax.set_xlim(-_ROPE_PAIR_LIM, _ROPE_PAIR_LIM)
    ax.set_ylim(-_ROPE_PAIR_LIM, _ROPE_PAIR_LIM)
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel(f"channel {2 * res.freq_index} (scaled)")
    ax.set_ylabel(f"channel {2 * res.freq_index + 1} (scaled)")
    ax.set_title(f"pair {res.freq_index}: relative rotation\n$(t-j)\\,\\theta_{{{res.freq_index}}}$ = "
                 f"{res.angle_between:+.2f} rad;\nq and k start at different angles", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=9, handlelength=1.8,
              columnspacing=0.8)


def _rope_legend(ax, where: str, ncol: int = 2):
    """Legend outside the axes, so it never covers a curve: ``"below"`` (the widget's three panels) or
    ``"right"`` (a single wide panel)."""
    if where == "below":
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=9, handlelength=1.8,
                  columnspacing=0.8)
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)


def _rope_draw_scores(ax, distances, curves: dict, mark: int | None = None, original_len: int | None = None,
                      legend: str = "right"):
    """Normalised score against relative distance (log x axis from distance 1; y range fixed)."""
    d = distances[1:]
    styles = [dict(color=_RP["blue"], lw=1.0, ls="-"), dict(color=_RP["red"], lw=1.3, ls="--")]
    for n, (label, y) in enumerate(curves.items()):
        ax.plot(d.tolist(), y[1:].tolist(), label=label, **styles[n % 2])
    if original_len is not None:
        ax.axvline(original_len, color="0.45", ls=":", lw=1.2, label=f"original window {original_len}")
    if mark is not None and mark >= 1:
        ax.axvline(mark, color=_RP["green"], lw=1.5, label=f"$|t-j|$ = {mark}")
    ax.set_xscale("log")
    ax.set_xlim(1, float(distances[-1]))
    ax.set_ylim(*_ROPE_SCORE_YLIM)
    ax.set_xlabel("distance $t-j$ (tokens)")
    ax.set_ylabel("score $/\\,|q||k|$ (all-ones $q = k$)")
    ax.set_title("score depends only on $t - j$")
    _rope_legend(ax, legend, ncol=2)


def _rope_draw_wavelengths(ax, inv_freq_rope, inv_freq_yarn, low: int, high: int, original_len: int,
                           highlight: int | None = None, factor: float | None = None, legend: str = "right"):
    """Wavelength 2π/θ_i (tokens) per pair before/after YaRN, with the blend band [low, high]."""
    idx = list(range(len(inv_freq_rope)))
    ax.axvspan(low, high, color=_RP["green"], alpha=0.12, label=f"ramp: low = {low} … high = {high}")
    ax.plot(idx, (2 * _rope_math.pi / inv_freq_rope).tolist(), marker="o", ms=4, lw=1.2, color=_RP["blue"],
            label="RoPE $2\\pi/\\theta_i$")
    ax.plot(idx, (2 * _rope_math.pi / inv_freq_yarn).tolist(), marker="x", ms=5, lw=1.2, ls="--",
            color=_RP["red"], label="YaRN $2\\pi/\\theta'_i$")
    ax.axhline(original_len, color="0.45", ls=":", lw=1.2, label=f"original window {original_len}")
    if factor is not None and factor > 1:
        ax.axhline(original_len * factor, color=_RP["purple"], ls="-.", lw=1.0,
                   label=f"extended window {int(original_len * factor)}")
    if highlight is not None:
        ax.axvline(highlight, color=_RP["black"], lw=1.0, alpha=0.6, label=f"pair {highlight}")
    ax.set_yscale("log")
    ax.set_ylim(*_ROPE_WAVE_YLIM)
    ax.set_xlim(-0.5, len(idx) - 0.5)
    ax.set_xlabel("pair index $i$")
    ax.set_ylabel("wavelength (tokens per turn)")
    ax.set_title("YaRN stretches the slow pairs")
    _rope_legend(ax, legend, ncol=1)


def plot_rope_explorer(res):
    """The RoPE widget's figure from an :class:`dsv3_lessons.course.rope_lessons.ExplorerResult`.

    Three panels: the chosen pair of q and k rotated to positions t and j; the normalised score of the
    all-ones vector against the distance t − j (plain RoPE vs YaRN); the wavelength of every pair before and
    after YaRN. Axis ranges are fixed, so they stay put while the widget's controls move. Returns a Figure.
    """
    # a fixed layout (not "constrained"): the widget redraws on every change and must stay quick
    fig, axes = _rope_subplots(1, 3, height=5.3, layout=None, gridspec_kw={"width_ratios": [0.8, 1.1, 1.1]})
    fig.subplots_adjust(left=0.085, right=0.985, bottom=0.37, top=0.87, wspace=0.36)
    _rope_draw_pair(axes[0], res)
    curves = {"RoPE": res.cos_rope}
    if res.yarn_factor != 1:
        curves[f"YaRN $s$ = {res.yarn_factor:g}"] = res.cos_yarn
    _rope_draw_scores(axes[1], res.distances, curves, mark=abs(res.query_pos - res.key_pos),
                      original_len=res.original_len, legend="below")
    _rope_draw_wavelengths(axes[2], res.inv_freq_rope, res.inv_freq_yarn, res.low, res.high, res.original_len,
                           highlight=res.freq_index, legend="below")
    return fig


def plot_score_vs_distance(distances, curves: dict, mark: int | None = None, original_len: int | None = None):
    """Normalised score against the distance t − j; ``curves`` maps a label to a ``[N]`` tensor
    (entry 0 = distance 0, not drawn on the log axis). Returns a Figure."""
    fig, ax = _rope_subplots(height=3.8)
    _rope_draw_scores(ax, distances, curves, mark=mark, original_len=original_len)
    return fig


def plot_yarn_frequencies(inv_freq_rope, inv_freq_yarn, low: int, high: int, original_len: int,
                          factor: float | None = None, highlight: int | None = None):
    """Wavelength per pair before/after YaRN (``[d/2]`` frequencies in rad/token; ``low``/``high`` the ramp;
    ``original_len`` and ``factor`` draw the original and extended windows). Returns a Figure."""
    fig, ax = _rope_subplots(height=4.2)
    _rope_draw_wavelengths(ax, inv_freq_rope, inv_freq_yarn, low, high, original_len, highlight, factor)
    return fig


def plot_fold_by_key_position(errors: dict, floor: float = 1e-9):
    """Relative fold error (folded vs direct scores) per key position, one series per RoPE placement.

    ``errors`` maps a label to a ``[T]`` tensor (key positions 0..T−1); exact zeros are drawn at ``floor``
    on the log axis (and said so in the legend). Returns a Figure.
    """
    fig, ax = _rope_subplots(height=3.8)
    marks = ["o", "s", "^", "D"]
    colors = [_RP["red"], _RP["green"], _RP["blue"], _RP["purple"]]
    for n, (label, e) in enumerate(errors.items()):
        vals = e.detach().tolist() if hasattr(e, "detach") else list(e)
        y = [max(float(v), floor) for v in vals]
        ax.plot(range(len(y)), y, marker=marks[n % 4], color=colors[n % 4], lw=1.2, ms=6, label=label)
    ax.axhline(1e-6, color="0.45", ls=":", lw=1.2, label="$10^{-6}$ (float32 agreement)")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 10)
    ax.set_xlabel("key position $j$")
    ax.set_ylabel("max |folded − direct| / max |direct|")
    ax.set_title(f"fold error per key position (exact zeros drawn at {floor:g})")
    ax.legend(loc="center right", fontsize=9)
    return fig


__all__ += ["plot_rope_explorer", "plot_score_vs_distance", "plot_yarn_frequencies", "plot_fold_by_key_position"]


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
    Returns: the ``matplotlib`` Figure (1 or 2 axes), drawn with :func:`dsv3_lessons.course.style.subplots`.
    Raises:
        ValueError: a series whose length differs from ``contexts``.
    """
    from .style import subplots

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
    from .style import subplots

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
    from .style import PALETTE, subplots

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
    from .style import subplots as _tour_subplots

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


# ==================================================================================================
# Chapter 02 -- MLA latent spaces (rank costs widget; singular-value spectra of keys/values)
# ==================================================================================================
def plot_mla_rank_costs(report, ylims: dict | None = None):
    """Three bar panels for a :class:`dsv3_lessons.course.mla_steps.MLARankReport`: this MLA, V3's MLA, MHA.

    Panels: parameters per layer (millions), FLOPs per token per layer (millions; 2 × multiply-adds
    of the projections), KV cache per token over all layers (KB = 1000 B, log scale because MHA's is
    ~70× larger). Each panel's bar heights are in that unit, bars in the order
    ``["this MLA", "V3 MLA", "MHA"]``; numbers are written above the bars.

    Args:
        report: the costs to draw.
        ylims: optional fixed y limits ``{"params": (lo, hi), "flops": (lo, hi), "cache": (lo, hi)}`` in the
            panels' units. A widget passes limits that cover its whole slider range, so the axes stay put while
            the sliders move and the fixed V3 bar keeps its height. Without it, each panel fits its bars.
    Returns the ``Figure`` (drawn through :func:`dsv3_lessons.course.style.subplots`).
    Raises ValueError for an unknown ``ylims`` key or a limit pair that is not increasing (cache: > 0).
    """
    from .style import PALETTE, subplots

    panels = [("params", "parameters / layer (M)", [c.params_per_layer / 1e6 for c in
                                                      (report.variant, report.v3, report.mha)], False),
              ("flops", "FLOPs / token / layer (M)", [c.flops_per_token_per_layer / 1e6 for c in
                                                       (report.variant, report.v3, report.mha)], False),
              ("cache", f"KV cache / token, {report.variant.num_layers} layers (KB)",
               [c.cache_bytes_per_token / 1e3 for c in (report.variant, report.v3, report.mha)], True)]
    ylims = dict(ylims or {})
    unknown = set(ylims) - {p[0] for p in panels}
    if unknown:
        raise ValueError(f"ylims keys must be among 'params', 'flops', 'cache', got {sorted(unknown)}")
    for key, (lo, hi) in ylims.items():
        if not (hi > lo and (key != "cache" or lo > 0)):
            raise ValueError(f"ylims[{key!r}] must be an increasing pair (positive for the log-scale cache), "
                             f"got {(lo, hi)}")
    names = ["this MLA", "V3 MLA", f"MHA\n({report.num_attention_heads} heads)"]
    colors = [PALETTE["blue"], "#888888", PALETTE["red"]]
    # a fixed layout: the widget redraws this figure on every slider release, and the constrained layout
    # solver was a large share of that time
    fig, axes = subplots(1, 3, height=3.6, layout=None)
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.16, top=0.80, wspace=0.32)
    for ax, (key, title, values, log) in zip(axes, panels):
        bars = ax.bar(names, values, color=colors)
        if log:
            ax.set_yscale("log")
        if key in ylims:
            ax.set_ylim(*ylims[key])
        else:
            ax.margins(y=0.25)
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:,.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=10)
        ax.set_title(title)
    fig.suptitle(f"$d_c'$ = {report.q_lora_rank}, $d_c$ = {report.kv_lora_rank}, $n_h$ = "
                 f"{report.num_attention_heads} (other sizes: V3)")
    return fig


def plot_singular_spectra(panels, shares=(0.9, 0.99), mark_rank: dict | None = None, floor: float = 1e-6):
    """Normalised singular-value spectra, one panel per matrix family (log y axis).

    Args:
        panels: ``{panel title: {curve label: singular values [k] (descending)}}``. A label that contains
            ``"init"`` is drawn dashed, others solid, and curves with the same text before "init"/"trained"
            share a colour, so an initial and a trained spectrum that coincide both stay visible.
        shares: energy shares whose rank is appended to each curve's label (e.g. ``"r90=4"``).
        mark_rank: optional ``{panel title: rank}`` drawn as a dotted vertical line (e.g. d_c).
        floor: lower end of the y axis; ratios below it (numerically zero directions) are drawn at it.
    Returns: the ``Figure``; each curve's x data are 1..k and y data max(s_i / s_1, floor). A panel with a
        ratio below ``floor`` says so in a second title line. Legends sit below the panels, outside the data.
    Raises ValueError for an empty ``panels`` (and the SVD helpers' errors for bad spectra).
    """
    from .mla_steps import rank_for_energy
    from .style import PALETTE, subplots

    if not panels:
        raise ValueError("panels must hold at least one {title: {label: singular values}} entry")
    cycle = [PALETTE[c] for c in ("blue", "orange", "green", "purple", "red", "sky")]
    fig, axes = subplots(1, len(panels), height=4.6, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        groups: list[str] = []
        clamped = False
        for label, s in curves.items():
            s = s.double()
            group = label.replace("init", "").replace("trained", "").strip()
            if group not in groups:
                groups.append(group)
            ranks = ", ".join(f"r{round(100 * x)}={rank_for_energy(s, x)}" for x in shares)
            y = (s / s[0]).clamp_min(floor)
            clamped = clamped or bool((s / s[0] < floor).any())
            ax.plot(range(1, len(s) + 1), y.tolist(), marker="o", ms=2.5, lw=1.5,
                    ls="--" if "init" in label else "-", color=cycle[groups.index(group) % len(cycle)],
                    label=f"{label} ({ranks})")
        if mark_rank and title in mark_rank:
            ax.axvline(mark_rank[title], color="black", ls=":", lw=1.2, label=f"rank {mark_rank[title]}")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, 2.0)
        ax.set_xlabel("index $i$ of the singular value")
        ax.set_ylabel("$s_i / s_1$ (log scale)")
        # values below the floor (exact zeros included) cannot sit on a log axis: say where they are drawn
        floor_text = f"{floor:.0e}".replace("e-0", "e-").replace("e+0", "e")
        ax.set_title(f"{title}\n(below {floor_text}, exact zeros included: drawn at {floor_text})" if clamped
                     else title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    return fig


__all__ += ["plot_mla_rank_costs", "plot_singular_spectra"]
