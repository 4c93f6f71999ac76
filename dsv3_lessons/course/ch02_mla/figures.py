"""Chapter 02's mechanism figure: the MLA data path of one layer, every shape computed from a config.

What the picture must say at a glance (V3 report §2.1.1, eqs. 1–11):

* **two latent spaces, one hidden input**: the query latent c^Q_t and the key/value latent c^KV_t are both
  down-projections of the same h_t;
* the shared RoPE key k^R_t is a third read of h_t (W^KR), not of the latent;
* what the KV cache keeps (thick orange outline): c^KV_t and the rotated k^R_t, d_c + d_h^R numbers per token
  and layer;
* where RoPE acts (purple): only q^R and k^R; the latents and the content parts are never rotated;
* the two concatenations q = [q^C ; q^R] and k = [k^C ; k^R] (k^R copied to every head), then attention over
  the cached positions j ≤ t and the output projection W^O.

The query side is written with t (the query position), the key/value side after the cache with j (a key
position), as in eq. (10). Labels are computed from the config, so ``tiny()`` and ``deepseek_v3_671b()``
both render (V3's five-digit widths included).
"""
from __future__ import annotations

import matplotlib.patches as mpatches

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.course.common.style import PALETTE, RC
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["mla_shapes", "draw_mla_data_path"]


def mla_shapes(cfg: DeepseekV3Config) -> dict[str, int]:
    """Per-token widths on MLA's data path (numbers of elements), read from ``cfg``.

    Keys: ``h`` (d), ``c^Q`` (d_c'), ``c^KV`` (d_c), ``k^R`` (d_h^R), ``q^C``/``k^C`` (d_h), ``q^R`` (d_h^R),
    ``q``/``k`` (d_h + d_h^R), ``v^C``/``o`` (d_v), ``heads`` (n_h), ``o_all`` (n_h·d_v), ``u`` (d),
    ``cached`` (d_c + d_h^R per token per layer).

    Raises:
        ValueError: ``cfg`` has no query latent (``q_lora_rank=None``): this figure draws V3's layout.
    """
    if not isinstance(cfg, DeepseekV3Config):
        raise ValueError(f"cfg must be a DeepseekV3Config, got {type(cfg).__name__}")
    if cfg.q_lora_rank is None:
        raise ValueError("draw_mla_data_path needs a query latent (q_lora_rank set, as in V3); got q_lora_rank=None")
    d_h, d_r, d_v, n_h = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.num_attention_heads
    return {"h": cfg.hidden_size, "c^Q": cfg.q_lora_rank, "c^KV": cfg.kv_lora_rank, "k^R": d_r,
            "q^C": d_h, "q^R": d_r, "q": d_h + d_r, "k^C": d_h, "k": d_h + d_r, "v^C": d_v, "o": d_v,
            "heads": n_h, "o_all": n_h * d_v, "u": cfg.hidden_size, "cached": cfg.kv_lora_rank + d_r}


def _n(x: int) -> str:
    return f"{x:,}"


#: height (diagram units) of the band below the drawing that holds the legend
_LEGEND_BAND = 1.4


def draw_mla_data_path(cfg: DeepseekV3Config, title: str | None = None) -> Diagram:
    """Draw one MLA layer's data path for one token, with every width from ``cfg``.

    Args:
        cfg: the configuration (e.g. ``tiny()`` or ``deepseek_v3_671b()``); needs ``q_lora_rank``.
        title: figure title (default: "MLA: two latent spaces, one hidden input" with d and n_h).
    Returns: the :class:`~dsv3_lessons.course.common.draw.Diagram` (``.fig`` is the matplotlib Figure;
        ``.boxes`` maps names such as ``"c^KV"``, ``"k^R"``, ``"q^R"`` to their boxes, and ``.kinds`` maps
        the same names to the box kind drawn: ``"cached"``, ``"rope"``, ``"tensor"`` or ``"op"``).
    Raises: ValueError for a config without a query latent (see :func:`mla_shapes`).
    Source: V3 report §2.1.1, eqs. (1)–(11); cached tensors as in the official inference code
    (``kv_cache`` holds the normalised c^KV, ``pe_cache`` the rotated k^R).
    """
    s = mla_shapes(cfg)
    title = title or (f"MLA: two latent spaces ($c^Q$, $c^{{KV}}$) from one hidden input ($h_t$);  "
                      f"d = {_n(s['h'])}, n_h = {s['heads']};  [n] = numbers per token")
    # 1.4 units below the drawing (y < 0) hold the legend in one row, clear of the dashed per-head frame
    dg = Diagram(30.0, 14.2 + _LEGEND_BAND, title=title)
    dg.ax.set_ylim(-_LEGEND_BAND, 14.2)
    dg.kinds = {}

    def box(name, x, y, w, h, text, kind, fs=10.5, color=None):
        b = dg.box(x, y, w, h, text, kind=kind, name=name, fontsize=fs, color=color)
        dg.kinds[name] = kind
        return b

    def label(x, y, text, fs=9.5):
        dg.ax.text(x, y, text, ha="center", va="center", fontsize=fs, color="#333333", zorder=4,
                   bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"})

    # ---- the hidden input and its three reads: c^Q, k^R, c^KV
    h = box("h", 1.2, 7.4, 2.0, 10.0, f"$h_t$\n[{_n(s['h'])}]\n\none\nhidden\ninput", "tensor", 11)
    rows = {"c^Q": 11.2, "k^R": 7.4, "c^KV": 3.6}
    cq = box("c^Q", 8.0, rows["c^Q"], 2.8, 1.5, f"$c^{{Q}}_t$\n[{_n(s['c^Q'])}]", "tensor", 12)
    kr = box("k^R", 8.0, rows["k^R"], 2.8, 1.5, f"$k^{{R}}_t$\n[{_n(s['k^R'])}]", "cached", 12,
             color=PALETTE["rope"])
    dg.kinds_used.add("rope")
    ckv = box("c^KV", 8.0, rows["c^KV"], 2.8, 1.5, f"$c^{{KV}}_t$\n[{_n(s['c^KV'])}]", "cached", 12)
    for target, weight, rows_out in ((cq, "$W^{DQ}$, RMSNorm", s["c^Q"]), (kr, "$W^{KR}$, then RoPE", s["k^R"]),
                                     (ckv, "$W^{DKV}$, RMSNorm", s["c^KV"])):
        dg.arrow((h.right[0], target.y), target.left)
        label(4.4, target.y + 0.45, weight)
        label(4.4, target.y - 0.45, f"[{_n(rows_out)} × {_n(s['h'])}]", 9)

    # ---- per head (dashed frame)
    fx0, fx1, fy0, fy1 = 9.85, 24.2, 0.5, 13.1
    dg.ax.add_patch(mpatches.FancyBboxPatch((fx0, fy0), fx1 - fx0, fy1 - fy0,
                                            boxstyle="round,pad=0.05,rounding_size=0.3", facecolor="none",
                                            edgecolor="#777777", linestyle="--", lw=1.2, zorder=0))
    dg.text((fx0 + fx1) / 2, fy1 + 0.45, f"for each head i = 0 … {s['heads'] - 1}  (counted from 0, as in code)",
            fontsize=10.5, weight="bold")
    qc = box("q^C", 13.2, 12.2, 2.6, 1.2, f"$q^{{C}}_{{t,i}}$ [{_n(s['q^C'])}]", "tensor")
    qr = box("q^R", 13.2, 10.1, 2.6, 1.2, f"$q^{{R}}_{{t,i}}$ [{_n(s['q^R'])}]", "rope")
    kc = box("k^C", 13.2, 4.7, 2.6, 1.2, f"$k^{{C}}_{{j,i}}$ [{_n(s['k^C'])}]", "tensor")
    vc = box("v^C", 13.2, 2.5, 2.6, 1.2, f"$v^{{C}}_{{j,i}}$ [{_n(s['v^C'])}]", "tensor")
    for src, dst, text, dy in ((cq, qc, "$W^{UQ}_i$", 0.42), (cq, qr, "$W^{QR}_i$", -0.45),
                               (ckv, kc, "$W^{UK}_i$", 0.42), (ckv, vc, "$W^{UV}_i$", -0.42)):
        dg.arrow(src.right, dst.left)
        label((src.right[0] + dst.left[0]) / 2 + 0.1, (src.y + dst.y) / 2 + dy, text)

    q = box("q", 17.4, 11.15, 3.95, 1.7, f"$q_{{t,i}} = [q^C ; q^R]$\n[{s['q^C']}+{s['q^R']} = {s['q']}]", "op", 10)
    k = box("k", 17.4, 5.6, 3.95, 1.7, f"$k_{{j,i}} = [k^C ; k^R]$\n[{s['k^C']}+{s['k^R']} = {s['k']}]", "op", 10)
    dg.arrow(qc.right, (q.left[0], q.y + 0.35))
    dg.arrow(qr.right, (q.left[0], q.y - 0.35))
    dg.arrow(kc.right, (k.left[0], k.y - 0.35))
    dg.arrow(kr.right, (k.left[0], k.y + 0.35))
    label(14.0, 7.6, "the same $k^R_j$ for every head")

    att = box("attention", 21.95, 4.0, 4.1, 2.1,
              "softmax over $j \\leq t$\nof $q_{t,i}^{\\top} k_{j,i}$ · scale,\nweights on $v^C_{j,i}$", "op", 9.5)
    dg.arrow(q.right, (att.x + 0.4, att.top[1]), connectionstyle="arc3,rad=-0.2")
    dg.arrow(k.right, (att.left[0], att.y + 0.5))
    dg.arrow(vc.right, (att.left[0], att.y - 0.6))
    o = box("o", 21.95, 1.45, 2.4, 1.1, f"$o_{{t,i}}$ [{_n(s['o'])}]", "tensor")
    dg.arrow(att.bottom, o.top)

    # ---- output projection and notes (right column)
    u = box("u", 27.1, 1.45, 5.6, 1.6, f"$u_t = W^O[o_{{t,0}};\\dots;o_{{t,n_h-1}}]$\n"
                                       f"[{_n(s['o_all'])}] → [{_n(s['u'])}]", "tensor", 9.5)
    dg.arrow(o.right, u.left)
    dg.text(27.25, 7.6, f"KV cache, per token\nand layer: $c^{{KV}}_t$ + $k^R_t$\n= {_n(s['c^KV'])} + {_n(s['k^R'])}"
                        f" = {_n(s['cached'])}", fontsize=10)
    dg.text(27.25, 5.0, "RoPE only on $q^R$, $k^R$;\n$c^Q$, $c^{KV}$, $q^C$, $k^C$\nare never rotated", fontsize=10)
    dg.text(27.25, 3.1, "t: query position\nj: key position, j ≤ t", fontsize=10)
    dg.legend(loc="lower center")
    legend = dg.ax.get_legend()          # Diagram.legend's handles, re-laid out as one row under the diagram
    handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    legend.remove()
    dg.ax.legend(handles=handles, labels=labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                 fontsize=RC["legend.fontsize"], framealpha=0.95, borderaxespad=0.2)
    return dg


# ==================================================================================================
# Chapter 02 -- MLA latent spaces (rank costs widget; singular-value spectra of keys/values)
# ==================================================================================================
def _rank_cost_values(report) -> list[tuple[str, str, list[float], bool]]:
    """(key, title, [this MLA, V3 MLA, MHA] in the panel's unit, log scale?) for each of the three panels."""
    costs = (report.variant, report.v3, report.mha)
    return [("params", "parameters / layer (M)", [c.params_per_layer / 1e6 for c in costs], False),
            ("flops", "FLOPs / token / layer (M)", [c.flops_per_token_per_layer / 1e6 for c in costs], False),
            ("cache", f"KV cache / token, {report.variant.num_layers} layers (KB)",
             [c.cache_bytes_per_token / 1e3 for c in costs], True)]


def _rank_cost_names(report) -> list[str]:
    """Bar labels (the same for every report; the head count is in the title): the MHA bar is an MHA at V3's decompressed head widths (keys 192 = 128 + 64 RoPE, values 128),
    not chapter 1's 2·n_h·d_h MHA with 128-wide keys."""
    return ["this\nMLA", "V3\nMLA", "MHA\n192/128"]


def _rank_cost_title(report) -> str:
    return (f"$d_c'$ = {report.q_lora_rank}, $d_c$ = {report.kv_lora_rank}, $n_h$ = {report.num_attention_heads} "
            f"(other sizes: V3)\nMHA 192/128: an MHA at V3's head widths, keys 192 wide (RoPE part included), "
            f"values 128")


class MLARankCostsFigure:
    """The rank-cost figure of :func:`plot_mla_rank_costs`, kept alive and updated in place.

    The widget draws this figure on every slider release; building three axes, their bars and texts from
    scratch took most of an update. :meth:`update` only moves the nine bars, their nine number labels and the
    title (:attr:`dynamic`): the axes, ticks, tick labels and (fixed) limits are reused, so a
    :class:`~dsv3_lessons.course.common.blit.BlitRenderer` can keep them as a background. ``fig`` is the
    Figure.
    """

    def __init__(self, report, ylims: dict | None = None):
        from dsv3_lessons.course.common.style import PALETTE, subplots

        panels = _rank_cost_values(report)
        ylims = dict(ylims or {})
        unknown = set(ylims) - {p[0] for p in panels}
        if unknown:
            raise ValueError(f"ylims keys must be among 'params', 'flops', 'cache', got {sorted(unknown)}")
        for key, (lo, hi) in ylims.items():
            if not (hi > lo and (key != "cache" or lo > 0)):
                raise ValueError(f"ylims[{key!r}] must be an increasing pair (positive for the log-scale cache), "
                                 f"got {(lo, hi)}")
        self.ylims = ylims
        colors = [PALETTE["blue"], "#888888", PALETTE["red"]]
        # a fixed layout: the constrained-layout solver was a large share of a widget update
        fig, axes = subplots(1, 3, height=3.9, layout=None)
        fig.subplots_adjust(left=0.055, right=0.99, bottom=0.17, top=0.76, wspace=0.32)
        self.fig, self.axes, self.bars, self.labels = fig, list(axes), [], []
        names = _rank_cost_names(report)
        for ax, (key, title, values, log) in zip(axes, panels):
            bars = ax.bar([0, 1, 2], values, color=colors)
            ax.set_xticks([0, 1, 2], names)
            if log:
                ax.set_yscale("log")
            if key in ylims:
                ax.set_ylim(*ylims[key])
            else:
                ax.margins(y=0.25)
            self.bars.append(list(bars))
            self.labels.append([ax.annotate(f"{v:,.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                                            va="bottom", fontsize=10) for bar, v in zip(bars, values)])
            ax.set_title(title)
        self.title = fig.suptitle(_rank_cost_title(report))

    @property
    def dynamic(self) -> list:
        """The artists :meth:`update` changes: 9 bars, 9 number labels, the title."""
        return [*(b for bars in self.bars for b in bars), *(t for labels in self.labels for t in labels), self.title]

    def update(self, report):
        """Show ``report``'s costs (the axes limits stay as they were set). Returns the Figure."""
        for bars, labels, (_, _, values, _) in zip(self.bars, self.labels, _rank_cost_values(report)):
            for bar, label, v in zip(bars, labels, values):
                bar.set_height(v)
                label.xy = label.xyann = (label.xy[0], v)       # xyann is where the text sits
                label.set_text(f"{v:,.1f}")
        self.title.set_text(_rank_cost_title(report))
        return self.fig


def plot_mla_rank_costs(report, ylims: dict | None = None):
    """Three bar panels for a :class:`dsv3_lessons.course.ch02_mla.steps.MLARankReport`: this MLA, V3's MLA, MHA.

    Panels: parameters per layer (millions), FLOPs per token per layer (millions; 2 × multiply-adds
    of the projections), KV cache per token over all layers (KB = 1000 B, log scale because MHA's is
    ~70× larger). Each panel's bar heights are in that unit, bars in the order
    ``["this MLA", "V3 MLA", "MHA 192/128"]``; numbers are written above the bars. The MHA bar is an MHA with V3's
    decompressed head widths (keys 192 wide including the 64 RoPE channels, values 128), as
    :func:`~dsv3_lessons.course.ch02_mla.steps.mha_cost` counts it.

    Args:
        report: the costs to draw.
        ylims: optional fixed y limits ``{"params": (lo, hi), "flops": (lo, hi), "cache": (lo, hi)}`` in the
            panels' units. A widget passes limits that cover its whole slider range, so the axes stay put while
            the sliders move and the fixed V3 bar keeps its height. Without it, each panel fits its bars.
    Returns the ``Figure`` (drawn through :func:`dsv3_lessons.course.common.style.subplots`); the widget keeps a
    :class:`MLARankCostsFigure` instead and updates it in place.
    Raises ValueError for an unknown ``ylims`` key or a limit pair that is not increasing (cache: > 0).
    """
    return MLARankCostsFigure(report, ylims).fig


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
    from dsv3_lessons.course.ch02_mla.steps import rank_for_energy
    from dsv3_lessons.course.common.style import PALETTE, subplots

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
        ax.set_title(f"{title}\n(values below {floor_text} drawn at {floor_text})" if clamped else title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    return fig


__all__ += ["MLARankCostsFigure", "plot_mla_rank_costs", "plot_singular_spectra"]
