"""Chapter 08's figure: one draft / verify / accept / roll-back step of speculative decoding on the cache.

Drawn from a real step (``SpeculativeDecoder.last_step``): the main model's latent cache holds the context;
x_n is its own latest token (not cached yet); the MTP module, applied k times, drafts d_1 … d_k; ONE
main-model forward over [x_n, d_1, …, d_k] gives the main model's choice at every position; the longest
agreeing prefix d_1 … d_m is kept plus the main model's own token at position m; cache entries of
rejected drafts are rolled back (``LatentCache.truncate``). The main model's choice is drawn under the token it
was computed from, so draft d_j (input column j) is compared with the choice one column to its LEFT (the main
model's prediction for the same position): the comparison is drawn as a diagonal double arrow with ✓ / ✗, and
drafts after the first rejection are never compared. Source: V3 report §2.2 / §5.4.3; Leviathan et
al. 2023 (arXiv 2211.17192).
"""
from __future__ import annotations

from matplotlib.patches import Patch

from dsv3_lessons.course.common.style import PALETTE
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["draw_speculative_step"]


def _show(tok: str) -> str:
    return {" ": "␣", "\n": "⏎", "$": r"\$"}.get(tok, tok)


def draw_speculative_step(context: list[str], last: str, drafts: list[str], main_choice: list[str],
                          title: str | None = None) -> Diagram:
    """Draw one step. ``context``: the last cached tokens (as text, a few suffice); ``last``: x_n;
    ``drafts``: d_1 … d_k; ``main_choice``: the main model's greedy token at each of the k+1 verified
    positions. Raises ValueError when ``main_choice`` is not one longer than ``drafts`` or no draft is given.
    """
    k = len(drafts)
    if k < 1 or len(main_choice) != k + 1:
        raise ValueError(f"need >= 1 draft and len(main_choice) == len(drafts) + 1, got {k} and {len(main_choice)}")
    m = 0
    while m < k and drafts[m] == main_choice[m]:
        m += 1
    c = len(context)
    cw, left = 1.3, 4.6
    width = left + cw * (c + k + 2) + 0.4
    rows = {"cache": 8.9, "draft": 7.2, "verify": 5.5, "main": 3.5, "after": 1.3}
    dg = Diagram(width=width, height=10.7, title=title or
                 f"One speculative step, k = {k}: {m} draft{'s' if m != 1 else ''} accepted + the main model's "
                 f"own token = {m + 1} token{'s' if m else ''} for one main forward")
    labels = {"cache": "main cache before", "draft": f"MTP drafts ({k}×\nthe same module)",
              "verify": "verify: ONE main\nforward over", "main": "main model's choice\n(↗: $d_j$ vs the choice\n"
                                                                    "one column left)", "after": "cache after\n" + ("(rolled back)" if m < k else "(nothing rejected)")}
    for key, y in rows.items():
        dg.text(left - 0.25, y, labels[key], ha="right", fontsize=10)
    x0 = left + cw / 2
    for i, tok in enumerate(context):                                   # cached context
        dg.box(x0 + cw * i, rows["cache"], cw - 0.1, 0.9, _show(tok), "cached", name=f"c{i}")
        dg.box(x0 + cw * i, rows["after"], cw - 0.1, 0.9, _show(tok), "cached", name=f"a{i}")
    xn = x0 + cw * c
    dg.box(xn, rows["cache"], cw - 0.1, 0.9, _show(last), "tensor", name="x_n")
    dg.text(xn, rows["cache"] + 0.75, "$x_n$", fontsize=9.5)
    for j, d in enumerate(drafts):                                      # drafts, chained
        x = xn + cw * (j + 1)
        dg.box(x, rows["draft"], cw - 0.1, 0.9, _show(d), "tensor", name=f"d{j}", color="#fde2b8")
        dg.text(x, rows["draft"] + 0.75, f"$d_{j + 1}$", fontsize=9.5)
        if j:
            dg.arrow((x - cw + 0.5, rows["draft"]), (x - 0.5, rows["draft"]), color=PALETTE["orange"])
    dg.arrow((xn + 0.3, rows["cache"] - 0.45), (xn + cw - 0.3, rows["draft"] + 0.45), color=PALETTE["orange"])
    verify_in = [last] + drafts
    for j, tok in enumerate(verify_in):                                 # verify inputs and main choices
        x = xn + cw * j
        dg.box(x, rows["verify"], cw - 0.1, 0.9, _show(tok), "tensor", name=f"v{j}",
               color="#fde2b8" if j else None)
        ok = j < k and j < m
        decided = j == m
        face = "#d5f0dd" if (ok or decided) else "#eeeeee"
        dg.box(x, rows["main"], cw - 0.1, 0.9, _show(main_choice[j]), "op", name=f"p{j}", color=face)
        dg.arrow((x, rows["verify"] - 0.45), (x, rows["main"] + 0.45))
        if j < k:                                   # choice j (prediction for position j+1) vs draft d_{j+1}
            compared = j <= m
            colour = PALETTE["green"] if j < m else (PALETTE["red"] if j == m else "#bbbbbb")
            start, end = (x + 0.22, rows["main"] + 0.45), (x + cw - 0.22, rows["verify"] - 0.45)
            dg.arrow(start, end, color=colour, style="<->", lw=1.6 if compared else 1.0)
            if compared:
                dg.text(x + cw / 2 - 0.1, (rows["verify"] + rows["main"]) / 2 + 0.15, "✓" if j < m else "✗",
                        fontsize=13, color=colour, ha="right")
    for j in range(m + 1):                                              # what the cache keeps
        dg.box(xn + cw * j, rows["after"], cw - 0.1, 0.9, _show(verify_in[j]), "cached", name=f"keep{j}")
    for j in range(m + 1, k + 1):
        dg.box(xn + cw * j, rows["after"], cw - 0.1, 0.9, "", "op", name=f"drop{j}", color="#eeeeee")
        dg.text(xn + cw * j, rows["after"], "×", fontsize=12, color="#999999")
    dg.text(xn + cw * (k + 1) + 0.1, rows["after"] - 0.85,
            f"emitted: {' '.join(_show(t) for t in drafts[:m] + [main_choice[m]])}   (next $x_n$ = "
            f"{_show(main_choice[m])}, enters the cache with the next verify)", ha="right", fontsize=9.5)
    swatches = [(PALETTE["cached"], "#a04000", 2.6, "in the main model's latent cache"),
                (PALETTE["tensor"], "#333333", 1.0, "$x_n$: the main model's latest token"),
                ("#fde2b8", "#333333", 1.0, "drafted by the MTP module"),
                ("#d5f0dd", "#333333", 1.0, "main model's choice, used")]
    if m < k:
        swatches.append(("#eeeeee", "#333333", 1.0, "discarded (× = rejected draft rolled back)"))
    dg.ax.legend(handles=[Patch(facecolor=f, edgecolor=e, linewidth=w, label=t) for f, e, w, t in swatches],
                 loc="center", bbox_to_anchor=(0.43, 0.5), fontsize=9.5, framealpha=0.95)  # empty middle-left
    return dg
