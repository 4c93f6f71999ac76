"""Chapter 6 figures: the expert-parallel dispatch/combine path, and the traffic node limiting saves.

:func:`draw_dispatch_combine` draws the path of :mod:`dsv3_lessons.tools.expert_parallel` from the numbers of
a run (nodes, experts per node, K_r, M, hidden size d), so the row widths printed on it are computed.
:func:`plot_traffic` plots measured :class:`~dsv3_lessons.tools.expert_parallel.EPResult` bytes against M.
Sources: V3 report §2.1.2 (node-limited routing), §3.2.2 (all-to-all dispatch and combine).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.common.draw import Diagram
from dsv3_lessons.course.ch06_balancing.runs import LABELS, METHODS

__all__ = ["draw_dispatch_combine", "plot_traffic", "EXPERT_COLOURS", "NODE_LIMIT_COLOURS"]

#: one colour per expert (Okabe-Ito, colour-blind safe), shared by the bias plots and the widget's bars
EXPERT_COLOURS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#8C6D31"]
#: node limits M = 1 … no limit: a light-to-dark blue ramp (orange and green mean dispatch and combine)
NODE_LIMIT_COLOURS = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]


def draw_dispatch_combine(n_nodes: int = 4, experts_per_node: int = 8, top_k: int = 8, node_limit: int = 2,
                          hidden_size: int = 64):
    """Diagram of one MoE layer on ``n_nodes`` processes: route → dispatch → experts → combine.

    Node 0's rows are followed across the process boundary to ``node_limit`` nodes (orange arrows, its own
    node plus ``node_limit − 1`` others), the combine sends partial sums back (green). Row widths are
    computed: a dispatched row holds ``d + 2·K_r`` float32, a combined row ``d``.

    Raises:
        ValueError: fewer than 2 nodes, or ``node_limit`` outside ``[1, n_nodes]``.
    Returns: the matplotlib Figure.
    """
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2, got {n_nodes}")
    if not 1 <= node_limit <= n_nodes:
        raise ValueError(f"node_limit must be in [1, n_nodes={n_nodes}], got {node_limit}")
    d, k, e = hidden_size, top_k, experts_per_node
    width = 4.8 * n_nodes + 3.4
    dg = Diagram(width, 13.2, title=f"One MoE layer on {n_nodes} processes (= nodes), each token limited to "
                                    f"M = {node_limit} nodes")
    xs = [4.1 + 4.8 * r for r in range(n_nodes)]
    rows = {"tok": 11.3, "gate": 9.9, "pack": 8.4, "a2a1": 6.85, "exp": 5.3, "a2a2": 3.75, "out": 2.2, "res": 0.6}
    for label, y in (("1 route", rows["gate"]), ("2 dispatch", rows["a2a1"]), ("3 experts", rows["exp"]),
                     ("4 combine", rows["a2a2"])):
        dg.text(0.15, y, label, fontsize=10, ha="left", color="#444444")
    # the labels sit in the gap between the last two nodes' columns, where no arrow runs
    gap_x = (xs[-2] + xs[-1]) / 2 if n_nodes > 2 else (xs[0] + xs[1]) / 2 + 0.6
    for band, text in (("a2a1", "all_to_all_single:\ncounts [world], then rows\n(uneven splits)"),
                       ("a2a2", "all_to_all_single:\npartial sums back\n(splits swapped)")):
        dg.ax.axhspan(rows[band] - 0.5, rows[band] + 0.5, xmin=1.9 / width, xmax=1.0, color="#eeeeee", zorder=0)
        dg.text(gap_x, rows[band], text, fontsize=9, ha="center", color="#444444")
    for r, x in enumerate(xs):
        dg.box(x, rows["tok"], 4.2, 0.95, f"node {r}: tokens\n$x$ [$n_{r}$, {d}]", "tensor", name=f"tok{r}", fontsize=9.5)
        dg.box(x, rows["gate"], 4.2, 0.85, f"gate: top-{k} in\n≤ {node_limit} nodes", "op", name=f"gate{r}", fontsize=9.5)
        dg.box(x, rows["pack"], 4.2, 0.95, f"1 row per (token, node)\n[{d} + 2·{k}] floats", "tensor",
               name=f"pack{r}", fontsize=9.5)
        dg.box(x, rows["exp"], 4.2, 0.95, f"experts {r * e}–{(r + 1) * e - 1}\nΣ g·FFN on this node",
               "weight", name=f"exp{r}", fontsize=9.5)
        dg.box(x, rows["out"], 4.2, 0.95, f"Σ partials + shared\n→ output [$n_{r}$, {d}]", "op", name=f"out{r}",
               fontsize=9.5)
        dg.arrow(dg.boxes[f"tok{r}"].bottom, dg.boxes[f"gate{r}"].top)
        dg.arrow(dg.boxes[f"gate{r}"].bottom, dg.boxes[f"pack{r}"].top)
    # node 0's rows: to itself and to node_limit - 1 other nodes (orange: crosses a process boundary)
    targets = list(range(node_limit))
    for j in targets:
        color = PALETTE["red"] if j != 0 else "#777777"
        dg.arrow(dg.boxes["pack0"].bottom, dg.boxes[f"exp{j}"].top, color=color, lw=1.8 if j else 1.2)
        dg.arrow((dg.boxes[f"exp{j}"].x + 0.5, dg.boxes[f"exp{j}"].y - 0.45),
                 (dg.boxes["out0"].x + 0.5, dg.boxes["out0"].y + 0.45),
                 color=PALETTE["green"] if j != 0 else "#777777", lw=1.8 if j else 1.2)
    for r in range(1, n_nodes):  # other nodes' own rows (grey, schematic)
        dg.arrow(dg.boxes[f"pack{r}"].bottom, dg.boxes[f"exp{r}"].top, color="#777777")
        dg.arrow(dg.boxes[f"exp{r}"].bottom, dg.boxes[f"out{r}"].top, color="#777777")
    dg.text(width / 2, rows["res"],
            f"orange: node 0's tokens sent to other processes (≤ M − 1 = {node_limit - 1} copies each, "
            f"{4 * (d + 2 * k)} B per row);  green: partial sums back ({4 * d} B per row)", fontsize=9.5)
    dg.legend({"tensor": "activations / rows", "weight": "experts hosted on the node", "op": "computation"},
              loc="upper center")
    leg = dg.ax.get_legend()  # one row above the nodes
    dg.ax.legend(handles=leg.legend_handles, labels=[t.get_text() for t in leg.texts], ncols=3,
                 loc="upper center", bbox_to_anchor=(0.5, 1.02), fontsize=9.5, frameon=False)
    return dg.fig


def plot_traffic(results: Sequence, title: str | None = None):
    """Bytes that crossed process boundaries per node limit M (bars) and nodes reached per token (right).

    ``results``: :class:`~dsv3_lessons.tools.expert_parallel.EPResult` of one layer and one token set at
    several M (e.g. :func:`~dsv3_lessons.tools.expert_parallel.node_limit_sweep`). The dashed line marks what a
    dispatch WITHOUT per-node de-duplication would send (one row per remote (token, expert) pair): the
    ``extra["remote_expert_pairs"]`` of each result, when present.
    Returns the Figure.
    """
    if not results:
        raise ValueError("results must hold at least one EPResult")
    fig, (ax, ax2) = subplots(1, 2, height=4.0, gridspec_kw={"width_ratios": [1.35, 1]})
    n_nodes = results[0].case.world_size
    labels = [f"M={r.case.node_limit}" if r.case.node_limit is not None else f"no limit\n(M={n_nodes})"
              for r in results]
    xs = range(len(results))
    disp = [r.dispatch_bytes / 1e3 for r in results]
    comb = [r.combine_bytes / 1e3 for r in results]
    ax.bar(xs, disp, color=PALETTE["red"], label="dispatch (x + routing metadata)")
    ax.bar(xs, comb, bottom=disp, color=PALETTE["green"], label="combine (partial sums)")
    for x, a, b in zip(xs, disp, comb):
        ax.text(x, a + b, f"{a + b:.0f}", ha="center", va="bottom", fontsize=9.5)
    pairs = [r.extra.get("no_dedup_bytes") for r in results]
    if all(p is not None for p in pairs):
        ax.plot(list(xs), [p / 1e3 for p in pairs], "k--", marker="o", label="one row per remote expert")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("bytes across processes (kB)")
    ax.set_xlabel("node limit")
    top = max(max(a + b for a, b in zip(disp, comb)), max((p or 0) / 1e3 for p in pairs))
    ax.set_ylim(0, top * 1.35)
    ax.legend(loc="center left", fontsize=10)   # between the bars and the dashed line
    width = 0.8 / len(results)
    ramp = NODE_LIMIT_COLOURS[-len(results):] if len(results) <= len(NODE_LIMIT_COLOURS) else None
    for i, r in enumerate(results):
        counts = torch.bincount(r.nodes_per_token, minlength=n_nodes + 1)[1:].float()
        share = counts / counts.sum()
        ax2.bar([j + 1 + (i - (len(results) - 1) / 2) * width for j in range(n_nodes)], share.tolist(),
                width=width, label=labels[i].replace("\n", " "), color=ramp[i] if ramp else None,
                edgecolor="#333333", linewidth=0.5)
    ax2.set_xticks(range(1, n_nodes + 1))
    ax2.set_xlabel("nodes hosting the token's experts")
    ax2.set_ylabel("share of tokens")
    ax2.set_ylim(0, 1.1)
    ax2.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=len(results), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def draw_bias_loop(n_routed: int = 8, top_k: int = 2, gamma: float = 0.001):
    """The auxiliary-loss-free balancing loop (LF paper Alg. 1, V3 §2.1.2) for N_r experts and K_r per token.

    Forward: scores → + bias (selection) → top-K_r → counts; the weights take the unbiased scores. After each
    optimizer step the counts move the bias by ±γ. Returns the Figure.
    """
    dg = Diagram(20.0, 7.4, title=f"Auxiliary-loss-free balancing: $N_r$ = {n_routed} experts, $K_r$ = {top_k}, γ = {gamma:g}")
    y, y2, y3 = 5.6, 3.2, 1.0
    dg.box(1.4, y, 2.2, 1.1, "$u_t$ [d]", "tensor", name="u")
    dg.box(5.0, y, 3.6, 1.1, f"$s = \\sigma(u_t^\\top e_i)$\n[{n_routed}] float32", "op", name="s")
    dg.box(9.4, y, 3.0, 1.1, "$s_i + b_i$\n(selection only)", "op", name="sb")
    dg.box(13.6, y, 3.4, 1.1, f"top-{top_k} within\nkept groups", "op", name="topk")
    dg.box(17.9, y, 3.4, 1.1, "tokens per expert\n$c_i$ over the batch", "tensor", name="c")
    dg.box(9.4, y2, 3.0, 1.1, f"bias $b$ [{n_routed}]\nbuffer, no gradient", "weight", name="b")
    dg.box(17.6, y2, 4.2, 1.3, "after the optimizer step:\n$b_i \\leftarrow b_i + \\gamma\\,"
           "\\mathrm{sign}(\\bar c - c_i)$", "op", name="upd", fontsize=9.5)
    dg.box(9.4, y3, 5.6, 1.1, "weights $g_i = s_i / \\sum_{chosen} s_j \\times$ scale\n(no $b$ in them)", "tensor",
           name="g")
    dg.arrow(dg.boxes["u"].right, dg.boxes["s"].left)
    dg.arrow(dg.boxes["s"].right, dg.boxes["sb"].left)
    dg.arrow(dg.boxes["sb"].right, dg.boxes["topk"].left)
    dg.arrow(dg.boxes["topk"].right, dg.boxes["c"].left)
    dg.arrow(dg.boxes["c"].bottom, dg.boxes["upd"].top, color=PALETTE["red"])
    dg.arrow(dg.boxes["upd"].left, dg.boxes["b"].right, color=PALETTE["red"], text="±γ per step", text_offset=(1.1, 0.4))
    dg.arrow(dg.boxes["b"].top, dg.boxes["sb"].bottom, color=PALETTE["red"])
    dg.arrow(dg.boxes["s"].bottom, dg.boxes["g"].left, text="unbiased $s$", text_offset=(-1.2, -0.3))
    dg.arrow(dg.boxes["topk"].bottom, dg.boxes["g"].right, text="which experts", text_offset=(1.3, -1.0))
    dg.text(17.6, y3, "overloaded experts ($c_i > \\bar c$) go DOWN,\nunder-loaded ones go up", fontsize=9.5,
            color=PALETTE["red"])
    return dg.fig


__all__.append("draw_bias_loop")


# ----------------------------------------------------------------------------------- plots of the stored runs
_STYLES = {"none": ("#000000", "-"), "aux_loss": ("#D55E00", "--"), "bias": ("#0072B2", "-"),
           "bias+seq": ("#009E73", ":")}


def _smooth(xs: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_balance_curves(runs: dict, smooth: int = 10):
    """Three panels over training steps for every method: MaxVio_batch (moving average over ``smooth`` steps),
    MaxVio_global on held-out text, and the validation loss minus the no-balancing run's at the same step
    (nats/character; the curves themselves nearly coincide at this scale). Returns the Figure.

    The lines of the last two panels are the evaluations run during training (``eval_batches`` held-out batches
    every ``eval_interval`` steps, the budget's); the hollow diamonds right of the last step are the final
    evaluation of each run on more batches (``final["batches"]``), the numbers the chapter prints. Close runs can
    swap places between the two: both are estimates from a sample of held-out text."""
    from dsv3_lessons.course.common.style import subplots

    fig, axes = subplots(1, 3, height=3.7)
    budget = runs["meta"]["budget"]
    ref, ref_final = runs["runs"][METHODS[0]]["val_loss"], runs["runs"][METHODS[0]]["final"]["val_loss"]
    last = runs["runs"][METHODS[0]]["val_step"][-1]
    x_final = last + 0.06 * last
    for m in METHODS:
        r = runs["runs"][m]
        color, ls = _STYLES[m]
        axes[0].plot(r["step"], _smooth(r["max_vio_batch"], smooth), color=color, ls=ls, lw=1.6, label=LABELS[m])
        axes[1].plot(r["val_step"], r["max_vio_global"], color=color, ls=ls, marker="o", ms=4, lw=1.6)
        axes[2].plot(r["val_step"][1:], [v - v0 for v, v0 in zip(r["val_loss"][1:], ref[1:])], color=color, ls=ls,
                     marker="o", ms=4, lw=1.6)
        final = r["final"]
        axes[1].plot([x_final], [final["max_vio_global"]], "D", mfc="none", mec=color, ms=6, mew=1.5)
        axes[2].plot([x_final], [final["val_loss"] - ref_final], "D", mfc="none", mec=color, ms=6, mew=1.5)
    n_final = runs["runs"][METHODS[0]]["final"]["batches"]
    axes[0].set_title(f"MaxVio_batch ({smooth}-step mean)", fontsize=11)
    axes[1].set_title("MaxVio_global (held-out text)", fontsize=11)
    axes[2].set_title(f"validation loss − {LABELS[METHODS[0]]}", fontsize=11)
    axes[2].set_ylabel("Δ nats / character")
    axes[2].axhline(0, color="k", lw=0.8)
    for ax in axes:
        ax.set_xlabel("training step")
    axes[0].set_ylabel("(max − mean)/mean")
    axes[1].set_ylim(bottom=0)
    axes[0].set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D
    handles += [Line2D([], [], color="#555555", marker="o", ms=4, lw=1.2),
                Line2D([], [], color="#555555", marker="D", mfc="none", ms=6, lw=0)]
    labels += [f"during training ({budget['eval_batches']} batches)", f"final ({n_final} batches)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=10)
    return fig


def plot_load_heatmaps(runs: dict, layer: int = 0, cap: float = 3.0):
    """Per-expert load over steps (load / mean, capped at ``cap``), one panel per method, main MoE layer ``layer``."""
    from dsv3_lessons.course.common.style import subplots

    fig, axes = subplots(1, len(METHODS), height=3.2, sharey=True)
    for ax, m in zip(axes, METHODS):
        r = runs["runs"][m]
        row = r["main_layers"][layer]
        c = torch.tensor([step[row] for step in r["counts"]], dtype=torch.float32)
        rel = (c / c.mean(-1, keepdim=True)).clamp(max=cap)
        im = ax.imshow(rel.T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=cap, interpolation="nearest",
                       extent=(0.5, c.shape[0] + 0.5, c.shape[1] - 0.5, -0.5))
        ax.set_title(LABELS[m], fontsize=12)
        ax.set_xlabel("training step")
    axes[0].set_ylabel(f"expert ({runs['runs'][METHODS[0]]['layer_names'][runs['runs'][METHODS[0]]['main_layers'][layer]]})")
    fig.colorbar(im, ax=list(axes), label=f"load / mean (capped at {cap:g})")
    return fig


def plot_bias_trajectories(runs: dict, layer: int = 0, methods: tuple[str, ...] = ("bias", "bias+seq")):
    """b_i over training steps for ``methods`` (main MoE layer ``layer``); one line per expert."""
    from dsv3_lessons.course.common.style import subplots

    fig, axes = subplots(1, len(methods), height=3.3, sharey=True)
    axes = list(axes) if len(methods) > 1 else [axes]
    for ax, m in zip(axes, methods):
        r = runs["runs"][m]
        row = r["main_layers"][layer]
        b = torch.tensor([step[row] for step in r["bias"]])
        for i in range(b.shape[1]):
            ax.plot(r["step"], b[:, i].tolist(), lw=1.4, color=EXPERT_COLOURS[i % len(EXPERT_COLOURS)],
                    label=f"expert {i}")
        ax.axhline(0, color="#888888", lw=0.8, ls="--")
        ax.set_title(f"{LABELS[m]} (γ = {r['settings']['gamma']:g})", fontsize=12)
        ax.set_xlabel("training step")
    axes[0].set_ylabel("bias $b_i$")
    axes[-1].legend(fontsize=10, ncols=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


__all__ += ["plot_balance_curves", "plot_load_heatmaps", "plot_bias_trajectories"]


def seed_results(runs: dict, method: str) -> list[dict]:
    """Final held-out numbers of ``method`` for every seed: seed 0 (the full run) then the replicates."""
    first = {"seed": runs["meta"]["budget"]["seed"],
             **{k: runs["runs"][method]["final"][k] for k in ("val_loss", "max_vio_global")}}
    return [first] + list(runs.get("replicates", {}).get(method, []))


def plot_seed_scatter(runs: dict):
    """Final validation loss (x) against MaxVio_global (y, log scale), one hollow marker per method and seed."""
    from dsv3_lessons.course.common.style import subplots

    fig, ax = subplots(1, 1, height=3.8)
    markers = {"none": "o", "aux_loss": "s", "bias": "^", "bias+seq": "D"}
    ys_all = []
    for m in METHODS:
        pts = seed_results(runs, m)
        color, _ = _STYLES[m]
        xs, ys = [p["val_loss"] for p in pts], [p["max_vio_global"] for p in pts]
        ys_all += ys
        ax.scatter(xs, ys, facecolors="none", edgecolors=color, linewidths=1.8, marker=markers[m], s=60,
                   label=f"{LABELS[m]}: {len(pts)} seeds")  # hollow: overlapping seeds stay visible
        groups: list = []  # seeds that land on (nearly) the same spot: say how many
        for x, y in zip(xs, ys):
            g = next((g for g in groups if abs(g[0] - x) < 4e-4 and abs(math.log(g[1] / y)) < 0.05), None)
            if g is None:
                groups.append([x, y, 1])
            else:
                g[2] += 1
        for x, y, n in groups:
            if n > 1:
                ax.annotate(f"×{n} seeds", (x, y), xytext=(7, -3), textcoords="offset points", fontsize=9,
                            color=color)
    ax.set_yscale("log")
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    lo, hi = min(ys_all) / 1.6, max(ys_all) * 1.6   # padding: no marker clipped at the frame
    ax.set_ylim(lo, hi)
    ticks = [t for t in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if lo <= t <= hi]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))   # 0.1, 0.2, 1 instead of 10⁻¹
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("validation loss (nats / character)")
    ax.set_ylabel("MaxVio_global (log scale)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9.5)
    ax.grid(alpha=0.3)
    return fig


__all__ += ["seed_results", "plot_seed_scatter"]


def plot_rule_comparison(runs_by_label: dict, title: str | None = None, tail: int = 20):
    """MaxVio_batch over re-simulated steps for several runs of the bias rule: ``{label: resimulate_bias(...)
    result}`` (chapter 6: three update speeds γ in exercise 6.3, the rule against exercise 6.1's unfixed code in the
    solutions). A short thick segment over the last ``tail`` steps marks each run's mean there, its value written
    beside it (0: no marks). Returns the Figure."""
    from dsv3_lessons.course.common.style import subplots

    fig, ax = subplots(1, 1, height=3.4)
    styles = [("#0072B2", "-"), ("#D55E00", "--"), ("#009E73", ":"), ("#000000", "-.")]
    n = 0
    for (label, sim), (colour, ls) in zip(runs_by_label.items(), styles):
        mv = sim["max_vio"]
        n = len(mv)
        ax.plot(range(1, n + 1), mv.tolist(), color=colour, ls=ls, lw=1.4, label=label, alpha=0.85)
        if tail:
            end = float(mv[-tail:].mean())
            ax.plot([n - tail + 1, n], [end, end], color=colour, lw=4, solid_capstyle="butt")
            ax.annotate(f"{end:.2f}", (n, end), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=10, color=colour)
    ax.set_xlabel("re-simulated step (frozen router)")
    ax.set_ylabel("MaxVio_batch")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, n * 1.08 if n else 1)
    ax.legend(loc="upper right", fontsize=10,
              title=f"thick mark: mean of the last {tail} steps" if tail else None, title_fontsize=9.5)
    if title:
        ax.set_title(title, fontsize=12)
    return fig


__all__.append("plot_rule_comparison")
