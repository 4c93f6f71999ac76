"""Chapter 3's mechanism figure: where RoPE sits in MLA, and why RoPE on the keys blocks the fold.

Two panels drawn from a :class:`~dsv3_lessons.model.config.DeepseekV3Config` (every width is read from the
config, so the tiny and the V3 sizes both render):

* **(a) RoPE on the expanded key** (what a standard RoPE layer would do): the content key is re-expanded from
  the cached latent, k^C_{j,i} = W^UK_i c^KV_j, and then rotated by R_j. The score of query t and key j is
  q^C_{t,i}ᵀ R_{j−t} W^UK_i c^KV_j: a rotation that changes with j sits *between* W^UK_i and c^KV_j, so no
  fixed matrix can be folded into the query.
* **(b) decoupled RoPE** (DeepSeek-V2/V3): the content path has no rotation, so W^UK_i folds into the query
  (q̃_{t,i} = W^UK_iᵀ q^C_{t,i}, d_c wide) and is dotted with the cached latent directly; position rides on a
  separate rope query q^R_{t,i} = R_t W^QR_i c^Q_t and ONE rotated rope key k^R_j = R_j W^KR h_j shared by all
  heads and cached beside c^KV (d_c + d_h^R elements per token and layer).

Source: DeepSeek-V2 report (arXiv 2405.04434) §2.1.3; DeepSeek-V3 report (arXiv 2412.19437) §2.1.1, eqs. 1–11.
"""
from __future__ import annotations

from ..style import PALETTE
from .draw import Diagram

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

    # ------------------------------------------------------------------ (a) RoPE on the expanded key
    g.text(0.2, 13.8, "(a) RoPE on the expanded key $k^C$: the fold is blocked", fontsize=11.5, ha="left",
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

    # ------------------------------------------------------------------ (b) decoupled RoPE
    g.text(0.2, 7.55, "(b) Decoupled RoPE (DeepSeek-V2/V3): the content path folds, "
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
    kr_b = g.box(10.1, yr - 0.75, bw, bh, f"$k^R_j$ [{dr}]\nrotated, shared", "cached", name="b.kR")
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
