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
from .kv_cache import GB as _KV_GB, AttentionSpec as _KVSpec, cache_bytes as _kv_cache_bytes  # noqa: E402

#: contexts drawn by default: powers of two from 1K to 512K tokens
KV_CONTEXTS = tuple(2**e for e in range(10, 20))


def plot_kv_cache_vs_context(specs, contexts=KV_CONTEXTS, batch: int = 1, dtype: str = "bf16",
                             budget_gb: float = 80.0, highlight: str | None = None,
                             what_if: _KVSpec | None = None, context_marker: int | None = None):
    """KV-cache size (GB = 10⁹ B) against context length, one line per model, log-log axes.

    Args:
        specs: iterable of :class:`dsv3_lessons.course.kv_cache.AttentionSpec` (or a dict of them).
        contexts: context lengths (tokens, ascending) for the x axis.
        batch, dtype: as in :func:`dsv3_lessons.course.kv_cache.cache_bytes`.
        budget_gb: accelerator memory, drawn as a horizontal line (label ``"80 GB accelerator"``).
        highlight: name of a model drawn thicker; what_if: an extra spec drawn dashed (the MLA
            what-if); context_marker: a context drawn as a dotted vertical line.
    Returns: the ``Figure``. Each model line's label is the model name and its y data are
    ``cache_bytes(spec, context, batch, dtype) / 1e9`` at ``contexts``.
    Raises ValueError (from the arithmetic) for bad contexts, batch or dtype.
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    contexts = [int(c) for c in contexts]
    if not contexts:
        raise ValueError("contexts must hold at least one context length")
    fig, ax = plt.subplots(figsize=(9.0, 4.2), dpi=80)
    for spec in specs:
        gb = [_kv_cache_bytes(spec, c, batch, dtype) / _KV_GB for c in contexts]
        ax.plot(contexts, gb, marker="o", ms=3, label=spec.name,
                lw=3.0 if spec.name == highlight else 1.4, ls=":" if spec.attention == "MQA" else "-")
    if what_if is not None:
        gb = [_kv_cache_bytes(what_if, c, batch, dtype) / _KV_GB for c in contexts]
        ax.plot(contexts, gb, color="dimgray", lw=2.0, ls="--", label=what_if.name)
    ax.axhline(budget_gb, color="black", lw=2.0, alpha=0.8, label=f"{budget_gb:g} GB accelerator")
    if context_marker is not None:
        ax.axvline(context_marker, color="grey", lw=1.0, ls=":", label=f"context {context_marker:,}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(contexts)
    ax.set_xticklabels([f"{c // 1024}K" if c % 1024 == 0 else str(c) for c in contexts])
    ax.set_xlabel("context length (tokens per sequence)")
    ax.set_ylabel(f"KV cache (GB), batch {batch}, {str(dtype).upper()}")
    ax.set_title("KV cache vs context: cache only, weights not counted")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


__all__ += ["KV_CONTEXTS", "plot_kv_cache_vs_context"]


# ==================================================================================================
# Chapter 03 -- RoPE decoupling (rope_lessons: rotation, relative position, fold errors, YaRN)
# ==================================================================================================
import math as _rope_math  # noqa: E402


def _rope_draw_pair(ax, res):
    """Unit-circle view of one channel pair of q and k rotated to their positions (ExplorerResult)."""
    t = [2 * _rope_math.pi * j / 200 for j in range(201)]
    for vec, rot, color, name, pos in ((res.q_pair, res.q_pair_rot, "tab:blue", "q", res.query_pos),
                                       (res.k_pair, res.k_pair_rot, "tab:orange", "k", res.key_pos)):
        r = float(vec.norm())
        ax.plot([r * _rope_math.cos(a) for a in t], [r * _rope_math.sin(a) for a in t], color=color,
                lw=0.6, alpha=0.35)
        ax.plot([0, float(vec[0])], [0, float(vec[1])], color=color, lw=1, ls=":", label=f"{name} at position 0")
        ax.plot([0, float(rot[0])], [0, float(rot[1])], color=color, lw=2.2, marker="o", markevery=[1],
                label=f"{name} at position {pos}")
    lim = 1.15 * max(float(res.q_pair.norm()), float(res.k_pair.norm()), 1e-6)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_title(f"pair {res.freq_index}: θ = {res.theta_yarn:.3g} rad/token\n"
                 f"angle between = (m−n)·θ = {res.angle_between:+.2f} rad", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")


def _rope_draw_scores(ax, distances, curves: dict, mark: int | None = None, original_len: int | None = None):
    """Normalised score against relative distance (log x axis from distance 1)."""
    d = distances[1:]
    for label, y in curves.items():
        ax.plot(d.tolist(), y[1:].tolist(), lw=0.8, label=label)
    if original_len is not None:
        ax.axvline(original_len, color="0.5", ls="--", lw=0.8, label=f"original window {original_len}")
    if mark is not None and mark >= 1:
        ax.axvline(mark, color="tab:red", lw=1.2, label=f"|m−n| = {mark}")
    ax.set_xscale("log")
    ax.set_xlabel("relative distance m − n (tokens)")
    ax.set_ylabel("score / |q||k|")
    ax.set_title("score depends only on m − n", fontsize=9)
    ax.legend(fontsize=7)


def _rope_draw_wavelengths(ax, inv_freq_rope, inv_freq_yarn, low: int, high: int, original_len: int,
                           highlight: int | None = None):
    """Wavelength 2π/θ_i (tokens) per pair before/after YaRN, with the blend band [low, high]."""
    idx = list(range(len(inv_freq_rope)))
    ax.plot(idx, (2 * _rope_math.pi / inv_freq_rope).tolist(), marker=".", lw=1, label="RoPE")
    ax.plot(idx, (2 * _rope_math.pi / inv_freq_yarn).tolist(), marker=".", lw=1, label="YaRN")
    ax.axvspan(low, high, color="tab:green", alpha=0.12, label=f"ramp low={low}..high={high}")
    ax.axhline(original_len, color="0.5", ls="--", lw=0.8, label=f"original window {original_len}")
    if highlight is not None:
        ax.axvline(highlight, color="tab:red", lw=1.2, label=f"pair {highlight}")
    ax.set_yscale("log")
    ax.set_xlabel("pair index i")
    ax.set_ylabel("wavelength 2π/θ_i (tokens)")
    ax.set_title("YaRN: slow pairs stretched, fast pairs kept", fontsize=9)
    ax.legend(fontsize=7)


def plot_rope_explorer(res):
    """The RoPE widget's figure from an :class:`dsv3_lessons.course.rope_lessons.ExplorerResult`.

    Three panels: the chosen pair of q and k rotated to positions m and n; normalised score of the
    all-ones vector against relative distance (plain RoPE vs YaRN); wavelength per pair before/after YaRN.
    Returns a ``Figure``.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), dpi=80)
    _rope_draw_pair(axes[0], res)
    curves = {"RoPE": res.cos_rope}
    if res.yarn_factor != 1:
        curves[f"YaRN s={res.yarn_factor:g}"] = res.cos_yarn
    _rope_draw_scores(axes[1], res.distances, curves, mark=abs(res.query_pos - res.key_pos),
                      original_len=res.original_len)
    _rope_draw_wavelengths(axes[2], res.inv_freq_rope, res.inv_freq_yarn, res.low, res.high, res.original_len,
                           highlight=res.freq_index)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.86, wspace=0.28)  # fixed: tight_layout is slow
    return fig


def plot_score_vs_distance(distances, curves: dict, mark: int | None = None, original_len: int | None = None):
    """Score (normalised) against relative distance; ``curves`` maps a label to a ``[N]`` tensor. Returns a Figure."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=80)
    _rope_draw_scores(ax, distances, curves, mark=mark, original_len=original_len)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.15, top=0.9)
    return fig


def plot_yarn_frequencies(table, highlight: int | None = None):
    """Wavelengths per pair before/after YaRN from a :class:`dsv3_lessons.course.rope_lessons.YarnTable`. Returns a Figure."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=80)
    _rope_draw_wavelengths(ax, table.inv_freq_rope, table.inv_freq_yarn, table.low, table.high,
                           table.original_len, highlight)
    ax.axhline(table.original_len * table.factor, color="tab:purple", ls=":", lw=0.8,
               label=f"extended window {int(table.original_len * table.factor)}")
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.15, top=0.9)
    return fig


def plot_fold_errors(results):
    """Fold error and shift error per RoPE placement (bars, log scale), and fold error per key position.

    ``results``: list of :class:`dsv3_lessons.course.rope_lessons.FoldResult`. Returns a Figure.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), dpi=80)
    names = [r.case for r in results]
    x = list(range(len(results)))
    floor = 1e-9  # exact zeros drawn at the floor of the log axis
    axes[0].bar([i - 0.2 for i in x], [max(r.fold_error, floor) for r in results], width=0.4,
                label="fold error (folded vs direct)")
    axes[0].bar([i + 0.2 for i in x], [max(r.shift_error, floor) for r in results], width=0.4,
                label="shift error (positions + Δ)")
    axes[0].axhline(1e-5, color="0.4", ls="--", lw=0.8, label="1e-5 (fp32 agreement)")
    axes[0].set_yscale("log")
    axes[0].set_xticks(x)
    axes[0].set_xticklabels(names, fontsize=8)
    axes[0].set_ylabel("relative error")
    axes[0].set_ylim(floor / 2, 1e4)
    axes[0].legend(fontsize=7, loc="upper center", ncol=2)
    for r in results:
        axes[1].plot(r.error_by_key_position.clamp_min(floor).tolist(), marker=".", label=r.case)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("key position t")
    axes[1].set_ylabel("relative fold error")
    axes[1].set_title("RoPE on keys: exact only at key position 0", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.13, top=0.9, wspace=0.22)
    return fig


__all__ += ["plot_rope_explorer", "plot_score_vs_distance", "plot_yarn_frequencies", "plot_fold_errors"]


# ==================================================================================================
# Chapter 04 -- MLA inference (decode-step time and cache size of the four decode variants)
# ==================================================================================================
def plot_decode_times(contexts, times: dict, cache_bytes: dict | None = None, title: str | None = None):
    """Log-log decode-step time vs context length, one line per variant; optional cache-size panel.

    Args:
        contexts: context lengths T (tokens).
        times: ``{variant: [seconds per decode step, one per context]}``.
        cache_bytes: optional ``{variant: [bytes of the cached context, one per context]}``.
    Returns: the ``matplotlib`` Figure (1 or 2 axes).
    """
    contexts = list(contexts)
    for name, ys in {**times, **(cache_bytes or {})}.items():
        if len(ys) != len(contexts):
            raise ValueError(f"{name!r} has {len(ys)} values for {len(contexts)} contexts")
    from matplotlib.ticker import NullFormatter

    def context_axis(axis):
        axis.set_xscale("log")
        axis.set_xticks(contexts)
        axis.set_xticklabels([f"{c:,}" for c in contexts])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("context length T (tokens)")

    n = 2 if cache_bytes else 1
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.8), dpi=80, squeeze=False)
    ax = axes[0, 0]
    for name, ys in times.items():
        ax.loglog(contexts, [1e3 * y for y in ys], marker="o", label=name)
    context_axis(ax)
    ax.set_ylabel("one decode step (ms)")
    ax.set_title(title or "decode-step time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if cache_bytes:
        ax2 = axes[0, 1]
        for name, ys in cache_bytes.items():
            ax2.loglog(contexts, [y / 2**20 for y in ys], marker="s", label=name)
        context_axis(ax2)
        ax2.set_ylabel("cache of one layer (MiB)")
        ax2.set_title("KV cache held")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ += ["plot_decode_times"]


# ==================================================================================================
# Chapter 00 -- Tour (training curves of the tiny model; reused by later chapters)
# ==================================================================================================
def plot_training_history(hist, references: dict | None = None, smooth: int = 10, title: str | None = None):
    """Loss curves of a :class:`dsv3_lessons.tools.train.History`: training main loss (moving average over
    ``smooth`` steps, raw values faint), validation loss (markers), and horizontal reference lines
    ``{label: nats}`` (e.g. the unigram entropy, ln V). Units: nats per token. Returns the Figure.

    Raises ValueError when the history holds no step.
    """
    if not hist.step:
        raise ValueError("plot_training_history needs a history with at least one step")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=80)
    steps, loss = hist.step, hist.main_loss
    ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8)
    k = min(smooth, len(loss))
    avg = [sum(loss[max(0, i - k + 1):i + 1]) / (i + 1 - max(0, i - k + 1)) for i in range(len(loss))]
    ax.plot(steps, avg, color="tab:blue", lw=1.8, label=f"train (main loss, {k}-step average)")
    ax.plot(hist.val_step, hist.val_loss, "o-", color="tab:orange", ms=5, label="validation (held-out works)")
    styles = ["--", ":", "-."]
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="gray", ls=styles[j % len(styles)], lw=1.2)
        ax.text(steps[-1], value, f" {label} = {value:.2f}", va="bottom", ha="right", fontsize=8, color="dimgray")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(title or "Tiny DeepSeek-V3 on Shakespeare")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ += ["plot_training_history"]


# ==================================================================================================
# Chapter 02 -- MLA latent spaces (rank costs widget; singular-value spectra of keys/values)
# ==================================================================================================
def plot_mla_rank_costs(report):
    """Three bar panels for a :class:`dsv3_lessons.course.mla_steps.MLARankReport`: this MLA, V3's MLA, MHA.

    Panels: parameters per layer (millions), FLOPs per token per layer (millions; 2 × multiply-adds
    of the projections), KV cache per token over all layers (KB = 1000 B, log scale because MHA's is
    ~70× larger). Each panel's bar heights are in that unit, bars in the order
    ``["this MLA", "V3 MLA", "MHA"]``; numbers are written above the bars.
    Returns the ``Figure``.
    """
    costs = (report.variant, report.v3, report.mha)
    names = ["this MLA", "V3 MLA", "MHA"]
    colors = ["tab:blue", "tab:gray", "tab:red"]
    panels = [("parameters / layer (M)", [c.params_per_layer / 1e6 for c in costs], False),
              ("FLOPs / token / layer (M)", [c.flops_per_token_per_layer / 1e6 for c in costs], False),
              (f"cache / token, {report.variant.num_layers} layers (KB)",
               [c.cache_bytes_per_token / 1e3 for c in costs], True)]
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.2), dpi=80)
    for ax, (title, values, log) in zip(axes, panels):
        bars = ax.bar(names, values, color=colors)
        if log:
            ax.set_yscale("log")
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:,.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.25)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"d_c' = {report.q_lora_rank}, d_c = {report.kv_lora_rank}, n_h = {report.num_attention_heads} "
                 f"(other sizes: V3)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_singular_spectra(panels, shares=(0.9, 0.99), mark_rank: dict | None = None, floor: float = 1e-6):
    """Normalised singular-value spectra, one panel per matrix family (log y axis).

    Args:
        panels: ``{panel title: {curve label: singular values [k] (descending)}}``.
        shares: energy shares whose rank is appended to each curve's label (e.g. ``"r90=4"``).
        mark_rank: optional ``{panel title: rank}`` drawn as a dotted vertical line (e.g. d_c).
        floor: lower end of the y axis; ratios below it (numerically zero directions) are drawn at it.
    Returns: the ``Figure``; each curve's x data are 1..k and y data max(s_i / s_1, floor).
    Raises ValueError for an empty ``panels`` (and the SVD helpers' errors for bad spectra).
    """
    from .mla_steps import rank_for_energy

    if not panels:
        raise ValueError("panels must hold at least one {title: {label: singular values}} entry")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), dpi=80, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for label, s in curves.items():
            s = s.double()
            ranks = ", ".join(f"r{round(100 * x)}={rank_for_energy(s, x)}" for x in shares)
            y = (s / s[0]).clamp_min(floor)
            ax.plot(range(1, len(s) + 1), y.tolist(), marker="o", ms=2.5, lw=1.3, label=f"{label} ({ranks})")
        if mark_rank and title in mark_rank:
            ax.axvline(mark_rank[title], color="black", ls=":", lw=1.0, label=f"rank {mark_rank[title]}")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, 2.0)
        ax.set_xlabel("index i of singular value")
        ax.set_ylabel("s_i / s_1")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ += ["plot_mla_rank_costs", "plot_singular_spectra"]
