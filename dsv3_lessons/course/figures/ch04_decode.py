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

from ...model.config import DeepseekV3Config
from .draw import Diagram

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
