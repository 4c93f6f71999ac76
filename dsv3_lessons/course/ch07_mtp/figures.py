"""Chapter 07's figures: the MTP chain drawn from a config, and which token each depth predicts where.

V3 report §2.2, eqs. 21–25 and Figure 3: depth k combines RMSNorm(h^{k−1}_i) with RMSNorm(Emb(t_{i+k})),
projects 2d -> d with M_k (``eh_proj``; the released weights put the embedding first), runs its own
transformer block TRM_k and reads the SHARED output head; depth k+1 reads depth k's output, so the depths
form a sequential chain. At position i, depth k is trained on t_{i+k+1}; positions without such a token
in the window, or whose token lies in another document, carry the ignore index (−100).
"""
from __future__ import annotations

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.model.mtp import IGNORE_INDEX
from dsv3_lessons.course.common.style import PALETTE
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["draw_mtp_chain", "draw_mtp_labels"]

_DOC_COLOURS = ["#cfe3f5", "#fde2b8", "#d5f0dd", "#f3d1e3"]


def draw_mtp_chain(cfg: DeepseekV3Config, depths: int = 2, title: str | None = None) -> Diagram:
    """The main model and ``depths`` MTP modules as a sequential chain, with ``cfg``'s widths.

    Raises ValueError for ``depths`` < 1 or a ``cfg`` that is not a :class:`DeepseekV3Config`.
    """
    if not isinstance(cfg, DeepseekV3Config):
        raise ValueError(f"cfg must be a DeepseekV3Config, got {type(cfg).__name__}")
    if not (isinstance(depths, int) and depths >= 1):
        raise ValueError(f"depths must be a positive integer, got {depths!r}")
    d, v = cfg.hidden_size, cfg.vocab_size
    col = 6.2
    width = 2.0 + col * (depths + 1)
    dg = Diagram(width=width, height=11.0, title=title or
                 f"Main model + {depths} MTP depth{'s' if depths > 1 else ''} (d = {d:,}, V = {v:,}): "
                 "each depth reads the previous one")
    for k in range(depths + 1):
        x = 1.0 + col * k + col / 2
        if k == 0:
            dg.box(x, 1.2, 3.6, 0.9, "$t_i$ (input)", "tensor", name="in0")
            dg.box(x, 3.2, 4.4, 1.2, f"embedding (shared)\n+ {cfg.num_hidden_layers} blocks", "weight", name="main")
            dg.box(x, 5.6, 3.6, 1.0, f"$h^0_i$ after final norm: {d:,}", "tensor", name="h0")
            dg.arrow((x, 1.65), (x, 2.6))
            dg.arrow((x, 3.8), (x, 5.1))
        else:
            dg.box(x - 1.4, 1.2, 2.6, 0.9, f"$t_{{i+{k}}}$", "tensor", name=f"in{k}")
            dg.box(x - 1.4, 2.6, 2.6, 0.9, "Emb (shared)\nthen enorm", "op", name=f"e{k}")
            dg.box(x + 1.4, 2.6, 2.6, 0.9, f"hnorm($h^{{{k - 1}}}_i$)", "op", name=f"hn{k}")
            dg.box(x, 4.2, 5.2, 0.9, f"concat [emb ; hidden]: {2 * d:,}", "tensor", name=f"cat{k}")
            dg.box(x, 5.6, 5.2, 1.0, f"eh_proj $M_{k}$: {2 * d:,} → {d:,}\n+ own block TRM$_{k}$", "weight",
                   name=f"trm{k}")
            dg.arrow((x - 1.4, 1.65), (x - 1.4, 2.15))
            dg.arrow((x - 1.4, 3.05), (x - 0.8, 3.75))
            dg.arrow((x + 1.4, 3.05), (x + 0.8, 3.75))
            dg.arrow((x, 4.65), (x, 5.1))
            prev = 1.0 + col * (k - 1) + col / 2
            # the chain: depth k−1's output runs down the gap between the columns into depth k's hnorm
            y_from = 5.6 if k == 1 else 7.2
            gap = 1.0 + col * k
            dg.ax.plot([prev + (1.8 if k == 1 else 2.6), gap, gap, x + 1.4], [y_from, y_from, 0.3, 0.3],
                       color=PALETTE["blue"], lw=2.0, zorder=1)
            dg.arrow((x + 1.4, 0.3), (x + 1.4, 2.15), color=PALETTE["blue"], lw=2.0)
            dg.text(gap - 0.15, 1.4, f"$h^{{{k - 1}}}_i$", ha="right", fontsize=11,
                    color=PALETTE["blue"])
            dg.box(x, 7.2, 5.2, 0.9, f"$h^{k}_i$ (handed to depth {k + 1})" if k < depths else f"$h^{k}_i$",
                   "tensor", name=f"h{k}")
            dg.arrow((x, 6.1), (x, 6.75))
        y_head = 8.9
        dg.box(1.0 + col * k + col / 2, y_head, 4.6, 1.0,
               "lm_head (shared)" if k == 0 else "shared_head.norm\n+ lm_head (shared)", "weight", name=f"head{k}")
        dg.arrow((1.0 + col * k + col / 2, 6.1 if k == 0 else 7.65), (1.0 + col * k + col / 2, y_head - 0.45))
        dg.text(1.0 + col * k + col / 2, 10.2, f"predicts $t_{{i+{k + 1}}}$", fontsize=11)
    return dg


def draw_mtp_labels(doc_lengths: list[int], depths: int = 2, title: str | None = None) -> Diagram:
    """A packed window of documents and, per position i, the label of the main model and of each depth.

    ``doc_lengths``: the token counts of the packed documents (T + 1 tokens in all). Cell text t_j is the
    label the row is trained on at that position; grey "−100" cells are ignored (past the window's end,
    or the label lies in another document). Raises ValueError for an empty list or a window under 2 tokens.
    """
    from dsv3_lessons.course.ch07_mtp.experiments import label_table, pack_lengths

    if not doc_lengths or any(n < 1 for n in doc_lengths) or sum(doc_lengths) < 2:
        raise ValueError(f"doc_lengths must list positive document lengths (>= 2 tokens in all), got {doc_lengths}")
    ids, targets, doc_ids = pack_lengths(doc_lengths)                     # token j is t_j
    doc_of = [j for j, n in enumerate(doc_lengths) for _ in range(n)]      # the document of token t_j
    rows = label_table(targets, depths, doc_ids)
    t = ids.shape[1]
    cw, left = 1.35, 3.4
    dg = Diagram(width=left + cw * t + 0.3, height=1.25 * (depths + 3) + 0.4, title=title or
                 f"Labels of a packed window (T = {t}, {len(doc_lengths)} documents): depth k at position i "
                 "learns $t_{i+k+1}$")
    ytop = 1.25 * (depths + 2) + 0.1
    dg.text(left - 0.2, ytop, "input $t_i$", ha="right", fontsize=10.5)
    for i in range(t):
        x = left + cw * i + cw / 2
        dg.text(x, ytop + 0.85, f"i={i}", fontsize=9)
        dg.box(x, ytop, cw - 0.12, 0.95, f"$t_{{{i}}}$", "tensor", name=f"t{i}",
               color=_DOC_COLOURS[int(doc_ids[0, i]) % len(_DOC_COLOURS)])
    names = ["main: $t_{i+1}$"] + [f"depth {k}: $t_{{i+{k + 1}}}$" for k in range(1, depths + 1)]
    for k, row in enumerate(rows):
        y = ytop - 1.25 * (k + 1)
        dg.text(left - 0.2, y, names[k], ha="right", fontsize=10.5)
        for i, lab in enumerate(row):
            x = left + cw * i + cw / 2
            if lab == IGNORE_INDEX:
                dg.box(x, y, cw - 0.12, 0.95, "−100", "op", name=f"r{k}_{i}", color="#d9d9d9", fontsize=9)
            else:
                dg.box(x, y, cw - 0.12, 0.95, f"$t_{{{lab}}}$", "tensor", name=f"r{k}_{i}",
                       color=_DOC_COLOURS[doc_of[lab] % len(_DOC_COLOURS)])
    dg.text(left, 0.25, "colour = document;  grey −100 = ignored (no token inside the window, or it lies in "
            "another document)", ha="left", fontsize=9.5)
    return dg
