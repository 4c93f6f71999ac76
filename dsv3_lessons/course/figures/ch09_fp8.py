"""Chapter 9 figure: where the FP8 scales live -- 1×128 activation tiles and 128×128 weight blocks.

Drawn from a config (sizes computed, never typed): the activations entering a layer, ``[tokens, d]`` with
d = ``hidden_size``, cut into 1×128 tiles (one scale per token and 128 channels), and the weight of
``kv_a_proj_with_mqa``, ``[d_c + d_h^R, d]``, cut into 128×128 blocks (one ``weight_scale_inv`` entry per
block). For V3 that weight is 576×7168: its scale grid is 5×56 and the last block row holds only 64 rows.
Both rectangles are drawn to scale, one unit per element. Source: V3 report §3.3.1, Fig. 7 (a).
"""
from __future__ import annotations

import math

from matplotlib.patches import Rectangle

from dsv3_lessons.model.config import DeepseekV3Config
from ..style import PALETTE, subplots

__all__ = ["draw_fp8_grids"]


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
