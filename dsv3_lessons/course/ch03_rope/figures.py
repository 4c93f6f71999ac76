"""Chapter 3's mechanism figure: where RoPE sits in MLA, and why RoPE on the keys blocks the fold.

Two panels drawn from a :class:`~dsv3_lessons.model.config.DeepseekV3Config` (every width is read from the
config, so the tiny and the V3 sizes both render). They carry the letters of the chapter's core argument, which
computes four placements -- (a) no RoPE, (b) RoPE on the content keys, (c) decoupled, (d) the latents rotated --
so a letter means the same thing in the picture, the prose and the fold-error plot:

* **(b) RoPE on the expanded key** (what a standard RoPE layer would do): the content key is re-expanded from
  the cached latent, k^C_{j,i} = W^UK_i c^KV_j, and then rotated by R_j. The score of query t and key j is
  q^C_{t,i}ᵀ R_{j−t} W^UK_i c^KV_j: a rotation that changes with j sits *between* W^UK_i and c^KV_j, so no
  fixed matrix can be folded into the query.
* **(c) decoupled RoPE** (DeepSeek-V2/V3): the content path has no rotation, so W^UK_i folds into the query
  (q̃_{t,i} = W^UK_iᵀ q^C_{t,i}, d_c wide) and is dotted with the cached latent directly; position rides on a
  separate rope query q^R_{t,i} = R_t W^QR_i c^Q_t and ONE rotated rope key k^R_j = R_j W^KR h_j shared by all
  heads and cached beside c^KV (d_c + d_h^R elements per token and layer).

Source: DeepSeek-V2 report (arXiv 2405.04434) §2.1.3; DeepSeek-V3 report (arXiv 2412.19437) §2.1.1, eqs. 1–11.
"""
from __future__ import annotations

from dsv3_lessons.course.common.style import PALETTE
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["draw_rope_placement"]

_RED = PALETTE["red"]
_GREEN = PALETTE["green"]


def _dims(cfg) -> dict:
    """The widths the figure prints, read from the config (ValueError when one is missing or not positive)."""
    need = ("hidden_size", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
            "num_attention_heads")
    out = {}
    for name in need:
        v = getattr(cfg, name, None)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"cfg.{name} must be a positive int for the RoPE figure, got {v!r}")
        out[name] = v
    return out


def draw_rope_placement(cfg, title: str | None = None):
    """Draw where RoPE sits in MLA (naive vs decoupled) for ``cfg``; return the matplotlib Figure.

    Args:
        cfg: a DeepseekV3Config (needs ``hidden_size``, ``q_lora_rank``, ``kv_lora_rank``,
            ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``num_attention_heads``).
        title: optional title above both panels.
    Returns: the Figure (10 in wide, text ≥ 9 pt). Boxes carry the tensor widths in elements; the cached
        tensors have the thick "cached" outline; rotated tensors are drawn in the "rope" colour.
    Raises: ValueError when a width is missing or not a positive int.
    Source: V2 report §2.1.3; V3 report §2.1.1 eqs. 1–11.
    """
    d = _dims(cfg)
    dc, dcq, dh, dr, nh = (d["kv_lora_rank"], d["q_lora_rank"], d["qk_nope_head_dim"], d["qk_rope_head_dim"],
                           d["num_attention_heads"])
    g = Diagram(width=20.0, height=14.2, title=title)
    bw, bh = 2.3, 1.05          # standard box size (canvas units; 1 unit = 0.5 in)

    # ------------------------------------------------------------------ (b) RoPE on the expanded key
    g.text(0.2, 13.8, "(b) RoPE on the expanded key $k^C$: the fold is blocked", fontsize=11.5, ha="left",
           weight="bold")
    yk, yq = 12.2, 10.0
    cq_a = g.box(1.5, yq, bw, bh, f"$c^Q_t$\n[{dcq}]", "tensor", name="a.cQ")
    wuq_a = g.box(4.4, yq, 1.5, bh, "$W^{UQ}_i$", "weight", name="a.WUQ")
    qc_a = g.box(7.3, yq, bw, bh, f"$q^C_{{t,i}}$\n[{dh}]", "tensor", name="a.qC")
    rq_a = g.box(12.9, yq, 1.9, bh, "RoPE $R_t$", "op", name="a.Rt")
    ckv_a = g.box(1.5, yk, bw, bh, f"$c^{{KV}}_j$\n[{dc}]", "cached", name="a.cKV")
    wuk_a = g.box(4.4, yk, 1.5, bh, "$W^{UK}_i$", "weight", name="a.WUK")
    kc_a = g.box(7.3, yk, bw, bh, f"$k^C_{{j,i}}$\n[{dh}]", "tensor", name="a.kC")
    rk_a = g.box(12.9, yk, 1.9, bh, "RoPE $R_j$", "op", name="a.Rj")
    kr_a = g.box(15.6, yk, bw, bh, f"$R_j k^C_{{j,i}}$\n[{dh}]", "rope", name="a.key")
    qr_a = g.box(15.6, yq, bw, bh, f"$R_t q^C_{{t,i}}$\n[{dh}]", "rope", name="a.query")
    sc_a = g.box(18.6, (yk + yq) / 2, 1.7, 1.0, "score\n$q^\\top k$", "op", name="a.score")
    for a, b in ((cq_a, wuq_a), (wuq_a, qc_a), (ckv_a, wuk_a), (wuk_a, kc_a), (rk_a, kr_a), (rq_a, qr_a)):
        g.arrow(a.right, b.left)
    g.arrow(kc_a.right, rk_a.left, text=f"re-expanded for\nevery key and head", fontsize=9.5,
            text_offset=(0, 0.08))
    g.arrow(qc_a.right, rq_a.left)
    g.arrow(kr_a.right, (sc_a.left[0], sc_a.y + 0.2))
    g.arrow(qr_a.right, (sc_a.left[0], sc_a.y - 0.2))
    # the attempted fold: W^UK would have to move across R_j into the query
    g.arrow((wuk_a.x + 0.2, wuk_a.bottom[1]), (qc_a.x - 0.4, qc_a.top[1]), color=_RED, style="-|>", lw=1.6,
            connectionstyle="arc3,rad=0.0")
    g.text(10.2, 11.1, "fold $W^{UK}_i$ into the query?  ✗  $R_j$ sits between", fontsize=10, color=_RED)
    g.text(10.0, 8.8, "score $=\\,q^{C\\top}_{t,i}\\;R_{j-t}\\;W^{UK}_i\\;c^{KV}_j$ :  the rotation $R_{j-t}$ "
           "changes with the key position $j$,\nso no fixed matrix can be absorbed into the query; every key "
           "must be re-expanded and rotated.", fontsize=10, color="#222222")

    # ------------------------------------------------------------------ (c) decoupled RoPE
    g.text(0.2, 7.55, "(c) Decoupled RoPE (DeepSeek-V2/V3): the content path folds, "
           "a shared rope key $k^R$ carries position", fontsize=11.5, ha="left", weight="bold")
    yc, yqb, yr = 6.1, 4.35, 2.6
    ckv_b = g.box(1.5, yc, bw, bh, f"$c^{{KV}}_j$\n[{dc}]", "cached", name="b.cKV")
    qc_b = g.box(7.3, yqb + 0.55, bw, bh, f"$q^C_{{t,i}}$\n[{dh}]", "tensor", name="b.qC")
    wuk_b = g.box(10.1, yqb + 0.55, 1.7, bh, "$W^{UK\\top}_i$", "weight", name="b.WUK")
    qt_b = g.box(12.9, yqb + 0.55, bw, bh, f"$\\tilde q_{{t,i}}$\n[{dc}]", "tensor", name="b.qtilde")
    sc_b = g.box(18.6, yqb, 1.7, 1.0, "score\n(sum)", "op", name="b.score")
    dot_c = g.box(15.6, yc, 1.7, 0.8, "$\\tilde q^\\top c^{KV}_j$", "op", name="b.dotC")
    h_b = g.box(1.5, yr - 0.75, bw, bh, f"$h_j$\n[{d['hidden_size']}]", "tensor", name="b.h")
    wkr_b = g.box(4.4, yr - 0.75, 1.5, bh, "$W^{KR}$", "weight", name="b.WKR")
    rk_b = g.box(7.3, yr - 0.75, 1.9, bh, "RoPE $R_j$", "op", name="b.Rj")
    # rotated (rope fill) AND cached (thick outline), drawn as chapter 2's data-path figure draws k^R
    kr_b = g.box(10.1, yr - 0.75, bw, bh, f"$k^R_j$ [{dr}]\nrotated, shared", "cached", name="b.kR",
                 color=PALETTE["rope"])
    qr_b = g.box(12.9, yr + 0.45, bw, bh, f"$q^R_{{t,i}}=R_t W^{{QR}}_i c^Q_t$\n[{dr}]", "rope", name="b.qR")
    dot_r = g.box(15.6, yr - 0.15, 1.7, 0.8, "$q^{R\\top} k^R_j$", "op", name="b.dotR")
    g.arrow(qc_b.right, wuk_b.left)
    g.arrow(wuk_b.right, qt_b.left)
    g.arrow(qt_b.right, (dot_c.left[0], dot_c.y - 0.15))
    g.arrow(ckv_b.right, (dot_c.left[0], dot_c.y + 0.15), text="cached latent, used as it is (no rotation)",
            fontsize=9.5, text_offset=(-1.6, 0.02))
    g.arrow(h_b.right, wkr_b.left)
    g.arrow(wkr_b.right, rk_b.left)
    g.arrow(rk_b.right, kr_b.left)
    g.arrow(kr_b.right, (dot_r.left[0], dot_r.y - 0.15))
    g.arrow(qr_b.right, (dot_r.left[0], dot_r.y + 0.15))
    g.arrow(dot_c.right, (sc_b.left[0], sc_b.y + 0.2))
    g.arrow(dot_r.right, (sc_b.left[0], sc_b.y - 0.2))
    g.text(3.3, qc_b.y, f"$W^{{UK}}_i$ folded into the query:\n$\\tilde q_{{t,i}} = W^{{UK\\top}}_i q^C_{{t,i}}$, "
           f"once per query", fontsize=10, color=_GREEN)
    g.text(10.0, 0.75, f"cache per token and layer: $c^{{KV}}$ {dc} + $k^R$ {dr} = {dc + dr} elements "
           f"(all {nh} heads share $k^R$)", fontsize=10, va="bottom")
    g.legend({"op": "operation"})
    old = g.ax.get_legend()               # redrawn as one row under both panels, clear of every box
    handles, labels = old.legend_handles, [t.get_text() for t in old.get_texts()]
    old.remove()
    g.ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, -0.01), ncol=len(labels),
                fontsize=10, framealpha=0.95, handlelength=1.6, columnspacing=1.2)
    return g.fig


# ==================================================================================================
# Chapter 03 -- RoPE decoupling (score vs distance, fold error per key position, YaRN, the RoPE widget)
# ==================================================================================================
import math as _rope_math  # noqa: E402

from dsv3_lessons.course.common.style import PALETTE as _RP, subplots as _rope_subplots  # noqa: E402

#: fixed axis ranges of the RoPE figures, so a widget's axes stay put while its controls move
_ROPE_SCORE_YLIM = (-0.45, 1.08)
_ROPE_WAVE_YLIM = (2.0, 1e7)


#: the circle view draws each pair scaled so the longer of q, k has length 1: its axes are the same for every pair
_ROPE_PAIR_LIM = 1.3


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
    ax.set_title("all-ones $q = k$: score falls with distance")
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


class RopeExplorerFigure:
    """The RoPE widget's figure (:func:`plot_rope_explorer`), kept alive and updated in place.

    Three panels: the chosen pair of q and k rotated to positions t and j; the normalised score of the all-ones
    vector against the distance t − j (plain RoPE vs YaRN); the wavelength of every pair before and after YaRN.
    Axis ranges are fixed, and everything that does not depend on the controls (axes, ticks, the plain-RoPE
    curves, the ramp band, the window lines) is drawn once; :meth:`update` moves only :attr:`dynamic`: the pair's
    circles, vectors, axis labels and title, the YaRN curves, the distance and pair markers, and the legends'
    texts. The YaRN curves are always drawn (at s = 1 they lie on the RoPE curves, dashed, and the legend says
    "= RoPE"), so every legend keeps its entries while the controls move. ``fig`` is the Figure.
    """

    def __init__(self, res):
        # a fixed layout (not "constrained"): the widget redraws on every change and must stay quick
        fig, axes = _rope_subplots(1, 3, height=5.3, layout=None, gridspec_kw={"width_ratios": [0.8, 1.1, 1.1]})
        fig.subplots_adjust(left=0.085, right=0.985, bottom=0.37, top=0.87, wspace=0.36)
        self.fig, self.axes = fig, list(axes)
        a0, a1, a2 = axes
        # ---- panel 0: one channel pair of q and k
        self.circles, self.unrotated, self.rotated = [], [], []
        for color in (_RP["blue"], _RP["orange"]):
            self.circles.append(a0.plot([], [], color=color, lw=0.8, alpha=0.35, zorder=1)[0])
        for color in (_RP["blue"], _RP["orange"]):
            # the unrotated vector: thick, light and underneath, so it stays visible when the rotation is small
            self.unrotated.append(a0.plot([], [], color=color, lw=4.0, ls=":", alpha=0.55, zorder=2)[0])
            self.rotated.append(a0.plot([], [], color=color, lw=2.0, marker="o", markevery=[1], zorder=3)[0])
        a0.set_xlim(-_ROPE_PAIR_LIM, _ROPE_PAIR_LIM)
        a0.set_ylim(-_ROPE_PAIR_LIM, _ROPE_PAIR_LIM)
        a0.set_xticks([-1, 0, 1])
        a0.set_yticks([-1, 0, 1])
        a0.set_aspect("equal")
        a0.axhline(0, color="0.85", lw=0.6, zorder=0)
        a0.axvline(0, color="0.85", lw=0.6, zorder=0)
        a0.set_xlabel("channel 0 (scaled)")
        a0.set_ylabel("channel 1 (scaled)")
        # the title is a plain text at a fixed place: an Axes title is re-positioned by every full draw
        self.pair_title = a0.text(0.5, 1.04, "pair", transform=a0.transAxes, ha="center", va="bottom", fontsize=10)
        self.pair_legend = a0.legend([self.unrotated[0], self.rotated[0], self.unrotated[1], self.rotated[1]],
                                     ["q, unrotated", "q at $t$", "k, unrotated", "k at $j$"],
                                     loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=9,
                                     handlelength=1.8, columnspacing=0.8)
        # ---- panel 1: score against distance
        d = res.distances[1:].tolist()
        rope_curve = a1.plot(d, res.cos_rope[1:].tolist(), color=_RP["blue"], lw=1.0, label="RoPE")[0]
        self.score_yarn = a1.plot(d, res.cos_yarn[1:].tolist(), color=_RP["red"], lw=1.3, ls="--",
                                  label="YaRN")[0]
        window = a1.axvline(res.original_len, color="0.45", ls=":", lw=1.2,
                            label=f"original window {res.original_len}")
        self.mark = a1.axvline(1, color=_RP["green"], lw=1.5, label="|t-j|")
        self.score_entries = [rope_curve, self.score_yarn, window, self.mark]
        a1.set_xscale("log")
        a1.set_xlim(1, float(res.distances[-1]))
        a1.set_ylim(*_ROPE_SCORE_YLIM)
        a1.set_xlabel("distance $t-j$ (tokens)")
        a1.set_ylabel("score $/\\,|q||k|$ (all-ones $q = k$)")
        a1.set_title("all-ones $q = k$: score falls with distance")
        self.score_legend = a1.legend(self.score_entries, [e.get_label() for e in self.score_entries],
                                      loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9,
                                      handlelength=1.8, columnspacing=0.8)
        # ---- panel 2: wavelengths
        idx = list(range(len(res.inv_freq_rope)))
        band = a2.axvspan(res.low, res.high, color=_RP["green"], alpha=0.12,
                          label=f"ramp: low = {res.low} … high = {res.high}")
        rope_waves = a2.plot(idx, (2 * _rope_math.pi / res.inv_freq_rope).tolist(), marker="o", ms=4, lw=1.2,
                             color=_RP["blue"], label="RoPE $2\\pi/\\theta_i$")[0]
        self.wave_yarn = a2.plot(idx, (2 * _rope_math.pi / res.inv_freq_yarn).tolist(), marker="x", ms=5, lw=1.2,
                                 ls="--", color=_RP["red"], label="YaRN $2\\pi/\\theta'_i$")[0]
        window2 = a2.axhline(res.original_len, color="0.45", ls=":", lw=1.2,
                             label=f"original window {res.original_len}")
        self.highlight = a2.axvline(res.freq_index, color=_RP["black"], lw=1.0, alpha=0.6, label="pair")
        self.wave_entries = [band, rope_waves, self.wave_yarn, window2, self.highlight]
        a2.set_yscale("log")
        a2.set_ylim(*_ROPE_WAVE_YLIM)
        a2.set_xlim(-0.5, len(idx) - 0.5)
        a2.set_xlabel("pair index $i$")
        a2.set_ylabel("wavelength (tokens per turn)")
        a2.set_title("YaRN stretches the slow pairs")
        self.wave_legend = a2.legend(self.wave_entries, [e.get_label() for e in self.wave_entries],
                                     loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, fontsize=9,
                                     handlelength=1.8, columnspacing=0.8)
        self.update(res)

    @property
    def dynamic(self) -> list:
        """The artists :meth:`update` changes, in drawing order."""
        a0 = self.axes[0]
        return [*self.circles, *self.unrotated, *self.rotated, a0.xaxis.label, a0.yaxis.label, self.pair_title,
                self.pair_legend, self.score_yarn, self.mark, self.score_legend, self.wave_yarn, self.highlight,
                self.wave_legend]

    def update(self, res):
        """Show ``res`` (an :class:`~dsv3_lessons.course.ch03_rope.experiments.ExplorerResult` of the same geometry).
        Returns the Figure."""
        a0 = self.axes[0]
        circle = [2 * _rope_math.pi * k / 200 for k in range(201)]
        unit = max(float(res.q_pair.norm()), float(res.k_pair.norm()), 1e-12)
        for n, (vec, rot) in enumerate(((res.q_pair, res.q_pair_rot), (res.k_pair, res.k_pair_rot))):
            r = float(vec.norm()) / unit
            self.circles[n].set_data([r * _rope_math.cos(a) for a in circle], [r * _rope_math.sin(a) for a in circle])
            self.unrotated[n].set_data([0, float(vec[0]) / unit], [0, float(vec[1]) / unit])
            self.rotated[n].set_data([0, float(rot[0]) / unit], [0, float(rot[1]) / unit])
        i = res.freq_index
        a0.xaxis.label.set_text(f"channel {2 * i} (scaled)")
        a0.yaxis.label.set_text(f"channel {2 * i + 1} (scaled)")
        self.pair_title.set_text(f"pair {i}: relative rotation\n$(t-j)\\,\\theta_{{{i}}}$ = {res.angle_between:+.2f} rad;"
                          f"\nq and k start at different angles")
        texts = self.pair_legend.get_texts()
        texts[1].set_text(f"q at $t$ = {res.query_pos}")
        texts[3].set_text(f"k at $j$ = {res.key_pos}")
        plain = res.yarn_factor == 1
        self.score_yarn.set_ydata(res.cos_yarn[1:].tolist())
        self.wave_yarn.set_ydata((2 * _rope_math.pi / res.inv_freq_yarn).tolist())
        yarn_label = "YaRN $s$ = 1 (= RoPE)" if plain else f"YaRN $s$ = {res.yarn_factor:g}"
        self.score_yarn.set_label(yarn_label)
        self.wave_yarn.set_label(f"YaRN $2\\pi/\\theta'_i$, $s$ = 1 (= RoPE)" if plain
                                 else f"YaRN $2\\pi/\\theta'_i$, $s$ = {res.yarn_factor:g}")
        dist = abs(res.query_pos - res.key_pos)
        self.mark.set_xdata([max(dist, 1)] * 2)
        self.mark.set_visible(dist >= 1)
        self.mark.set_label(f"$|t-j|$ = {dist}" if dist >= 1 else "$|t-j|$ = 0 (off the axis)")
        self.highlight.set_xdata([i, i])
        self.highlight.set_label(f"pair {i}")
        for legend, entries in ((self.score_legend, self.score_entries), (self.wave_legend, self.wave_entries)):
            for text, artist in zip(legend.get_texts(), entries):
                text.set_text(artist.get_label())
        return self.fig


def plot_rope_explorer(res):
    """The RoPE widget's figure from an :class:`dsv3_lessons.course.ch03_rope.experiments.ExplorerResult`.

    Three panels: the chosen pair of q and k rotated to positions t and j; the normalised score of the
    all-ones vector against the distance t − j (plain RoPE vs YaRN); the wavelength of every pair before and
    after YaRN. Axis ranges are fixed, so they stay put while the widget's controls move. Returns a Figure
    (the widget keeps a :class:`RopeExplorerFigure` and updates it in place).
    """
    return RopeExplorerFigure(res).fig


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

    ``errors`` maps a label to a ``[T]`` tensor (key positions 0..T−1), in the order they should appear (the
    chapter passes (a), (b), (c)); exact zeros are drawn at ``floor`` on the log axis. The series that sit at
    float32 round-off lie on top of each other, so each series has its own colour, marker, fill and line style:
    the first is drawn with large hollow markers and a dashed line, a later one with small filled markers on top,
    and both stay visible where they coincide. Returns a Figure.
    """
    fig, ax = _rope_subplots(height=3.8)
    styles = [dict(color="0.25", marker="o", ms=11, mfc="none", mew=1.6, ls="--", lw=1.2, zorder=2),
              dict(color=_RP["red"], marker="s", ms=6, ls="-", lw=1.4, zorder=3),
              dict(color=_RP["green"], marker="D", ms=5, ls=":", lw=1.6, zorder=4),
              dict(color=_RP["purple"], marker="^", ms=6, ls="-.", lw=1.2, zorder=5)]
    for n, (label, e) in enumerate(errors.items()):
        vals = e.detach().tolist() if hasattr(e, "detach") else list(e)
        y = [max(float(v), floor) for v in vals]
        ax.plot(range(len(y)), y, label=label, **styles[n % len(styles)])
    ax.axhline(1e-6, color="0.45", ls=":", lw=1.2, label="$10^{-6}$ (float32 agreement)")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 10)
    ax.set_xlabel("key position $j$")
    ax.set_ylabel("max |folded − direct| / max |direct|")
    ax.set_title(f"fold error per key position (exact zeros drawn at {floor:g})")
    ax.legend(loc="center right", fontsize=9)
    return fig


def plot_rope_channels(by_distance: dict, stds: dict | None = None):
    """The rope and content parts of a trained model's attention logits against the distance t − j.

    Args:
        by_distance: ``{panel title: {curve label: [T] mean logit part at distance 0..T−1}}``, one panel per layer.
            A label containing "rope" is drawn solid, "content" dashed; one containing "init" is thin and grey.
        stds: optional ``{panel title: text}`` written in the panel's corner (e.g. the two parts' spreads).
    Returns: the Figure (one panel per layer, shared y axis, a zero line, legends below the panels).
    Raises: ValueError for an empty ``by_distance``.
    """
    if not by_distance:
        raise ValueError("by_distance must hold at least one {panel title: {label: [T] values}} entry")
    fig, axes = _rope_subplots(1, len(by_distance), height=4.4, squeeze=False, sharey=True)
    for ax, (title, curves) in zip(axes[0], by_distance.items()):
        ax.axhline(0, color="0.7", lw=0.8, zorder=0)
        for label, y in curves.items():
            ys = y.detach().tolist() if hasattr(y, "detach") else list(y)
            init = "init" in label
            style = dict(color="0.6" if init else (_RP["purple"] if "rope" in label else _RP["blue"]),
                         lw=1.0 if init else 1.8, ls="-" if "rope" in label else "--",
                         marker=None if init else ("o" if "rope" in label else "s"), ms=3)
            ax.plot(range(len(ys)), ys, label=label, **style)
        ax.set_xlim(-0.5, len(ys) - 0.5)
        ax.set_xlabel("distance $t - j$ (tokens)")
        ax.set_title(title)
        if stds and title in stds:
            ax.text(0.98, 0.96, stds[title], transform=ax.transAxes, ha="right", va="top", fontsize=9,
                    bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9, frameon=False)
    axes[0][0].set_ylabel("mean scaled logit part")
    return fig


__all__ += ["RopeExplorerFigure", "plot_rope_channels", "plot_rope_explorer", "plot_score_vs_distance", "plot_yarn_frequencies", "plot_fold_by_key_position"]
