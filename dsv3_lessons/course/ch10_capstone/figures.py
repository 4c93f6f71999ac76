"""Chapter 10's figures: the whole model drawn from a config, the config table, the race, the crossover, the ranks.

* :func:`draw_whole_model` -- embedding → dense blocks → MoE blocks → final norm → head, plus the MTP module, every
  width computed from the config and every part labelled with the chapter that built it.
* :func:`config_table` -- V3's config beside another (the tiny one), field by field, with what each row keeps.
* :func:`plot_race` -- validation loss against time = steps × measured step time, several models, several seeds.
* :func:`plot_crossover` -- the MoE's lead over its dense twin along the budget, per seed and on average.
* :func:`plot_ranks` -- a distributed run's expert load per rank and the bytes each rank sent per step.
Sources: V3 report §2 (architecture), §2.2 (MTP), §4.2 (hyper-parameters).
"""
from __future__ import annotations

import html
from typing import Sequence

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.course.common.draw import Diagram
from dsv3_lessons.course.common.style import PALETTE, subplots

__all__ = ["draw_whole_model", "CONFIG_ROWS", "config_rows", "config_table", "plot_race", "plot_crossover",
           "plot_ranks", "MODEL_COLOURS"]

MODEL_COLOURS = {"moe": PALETTE["blue"], "dense": PALETTE["orange"], "nanogpt": PALETTE["green"]}


def draw_whole_model(cfg: DeepseekV3Config, title: str | None = None) -> Diagram:
    """The assembled DeepSeek-V3 of ``cfg``: one column from the token ids to the logits, the MTP module beside it.

    Each box names its chapter ("ch. 2–4" …). Widths, layer counts and expert counts are read from ``cfg``, so
    the tiny and the 671B configs both render. Raises ValueError for something that is not a DeepseekV3Config.
    """
    if not isinstance(cfg, DeepseekV3Config):
        raise ValueError(f"cfg must be a DeepseekV3Config, got {type(cfg).__name__}")
    d, v, L = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    k = cfg.first_k_dense_replace
    n_moe = L - k
    dg = Diagram(width=20.0, height=12.4, title=title or
                 f"The whole model: d = {d:,}, {L} layers ({k} dense + {n_moe} MoE), V = {v:,}, "
                 f"{cfg.num_nextn_predict_layers} MTP module")
    x = 6.3
    dg.box(x, 0.7, 5.2, 0.8, "token ids $t_i$", "tensor", name="ids")
    dg.box(x, 1.95, 7.4, 0.9, f"embed_tokens [{v:,} × {d:,}]  (ch. 0)", "weight", name="emb")
    dg.box(x, 3.75, 11.0, 1.6, f"{k} × block: RMSNorm → MLA (ch. 1–4: $d_c$ = {cfg.kv_lora_rank}, "
           f"$d_c'$ = {cfg.q_lora_rank}, RoPE ch. 3)\n→ RMSNorm → dense SwiGLU, width {cfg.intermediate_size:,}",
           "weight", name="dense", fontsize=9.5)
    dg.box(x, 6.05, 11.0, 1.9, f"{n_moe} × block: RMSNorm → MLA\n→ RMSNorm → DeepSeekMoE (ch. 5–6): "
           f"{cfg.n_shared_experts} shared + {cfg.n_routed_experts} routed,\ntop-{cfg.num_experts_per_tok} in "
           f"{cfg.topk_group} of {cfg.n_group} groups, bias balancing + sequence loss", "weight", name="moe",
           fontsize=9.5)
    dg.box(x, 8.0, 5.2, 0.8, "final RMSNorm → $h^0_i$", "op", name="norm")
    dg.box(x, 9.3, 7.4, 0.9, f"lm_head [{d:,} → {v:,}]: predicts $t_{{i+1}}$", "weight", name="head")
    dg.box(x, 10.75, 8.6, 0.9, "FP8 option (ch. 9): every *_proj Linear in E4M3,\n1×128 tiles, 128×128 blocks",
           "op", name="fp8", fontsize=9.0)
    for a, b in (("ids", "emb"), ("emb", "dense"), ("dense", "moe"), ("moe", "norm"), ("norm", "head")):
        dg.arrow(dg.boxes[a].top, dg.boxes[b].bottom)
    mx = 16.2
    dg.box(mx, 3.0, 5.8, 0.9, "Emb($t_{i+1}$) → enorm   (shared embedding)", "op", name="e1", fontsize=9.0)
    dg.box(mx, 4.6, 5.8, 1.2, f"[enorm ; hnorm($h^0_i$)] → eh_proj\n{2 * d:,} → {d:,}  (ch. 7)", "weight",
           name="eh", fontsize=9.5)
    dg.box(mx, 6.4, 5.8, 1.0, "own block TRM$_1$ (MLA + " + ("MoE" if cfg.is_moe_layer(L) else "dense") + ")",
           "weight", name="trm", fontsize=9.5)
    dg.box(mx, 8.0, 5.8, 0.8, "shared_head.norm", "op", name="snorm", fontsize=9.5)
    dg.box(mx, 9.3, 5.8, 0.9, "lm_head (shared): $t_{i+2}$\ndraft for ch. 8", "weight", name="mhead", fontsize=9.5)
    for a, b in (("e1", "eh"), ("eh", "trm"), ("trm", "snorm"), ("snorm", "mhead")):
        dg.arrow(dg.boxes[a].top, dg.boxes[b].bottom)
    # h^0 runs right from the final norm, down the gap between the columns, into eh_proj (never across a box)
    gap = 12.2
    nx, ny = dg.boxes["norm"].right
    dg.ax.plot([nx, gap, gap], [ny, ny, 4.6], color=PALETTE["blue"], lw=1.8, zorder=1)
    dg.arrow((gap, 4.6), dg.boxes["eh"].left, color=PALETTE["blue"], lw=1.8)
    dg.text(gap + 0.15, 6.9, "$h^0_i$", ha="left", fontsize=11, color=PALETTE["blue"])
    dg.text(mx, 10.75, f"MTP module (D = {cfg.num_nextn_predict_layers}), ch. 7", fontsize=10.5)
    dg.legend({"weight": "learned layer (chapter that built it)", "op": "norm / option", "tensor": "input"},
              loc="lower right")
    return dg


#: (field, why it is there) for the table: the fields that define the architecture, in the order of the model.
CONFIG_ROWS = [
    ("vocab_size", "tokens (bytes-level BPE for V3, characters here)"),
    ("hidden_size", "d, the width of the residual stream"),
    ("num_hidden_layers", "main-model blocks"),
    ("first_k_dense_replace", "leading blocks with a dense FFN"),
    ("intermediate_size", "dense FFN width"),
    ("num_attention_heads", "n_h"),
    ("q_lora_rank", "d_c', query latent (ch. 2)"),
    ("kv_lora_rank", "d_c, the cached KV latent (ch. 1–2)"),
    ("qk_nope_head_dim", "d_h, content part of q/k"),
    ("qk_rope_head_dim", "d_h^R, decoupled RoPE part (ch. 3)"),
    ("v_head_dim", "value width per head"),
    ("n_routed_experts", "N_r (ch. 5)"),
    ("n_shared_experts", "N_s"),
    ("num_experts_per_tok", "K_r"),
    ("moe_intermediate_size", "width of one expert"),
    ("n_group", "routing groups (= nodes)"),
    ("topk_group", "groups a token may reach (M)"),
    ("routed_scaling_factor", "scale on the routed sum"),
    ("scoring_func", "affinity function"),
    ("rope_scaling.factor", "YaRN factor s (ch. 3)"),
    ("rope_scaling.original_max_position_embeddings", "YaRN's original window"),
    ("num_nextn_predict_layers", "D, MTP depths (ch. 7)"),
    ("quantization_config.fmt", "FP8 format of the weights (ch. 9)"),
]


def _get(cfg: DeepseekV3Config, field: str):
    obj = cfg
    for part in field.split("."):
        obj = getattr(obj, part) if not isinstance(obj, dict) else obj.get(part)
        if obj is None:
            return None
    return obj


def config_rows(a: DeepseekV3Config, b: DeepseekV3Config) -> list[tuple[str, object, object, str, str]]:
    """``(field, a's value, b's value, verdict, meaning)`` for :data:`CONFIG_ROWS`.

    verdict: "same" when the values are equal, "scaled down" when both are numbers and ``b``'s is smaller,
    "changed" otherwise (a missing value, e.g. no ``quantization_config``, counts as changed)."""
    rows = []
    for field, meaning in CONFIG_ROWS:
        va, vb = _get(a, field), _get(b, field)
        if va == vb:
            verdict = "same"
        elif isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb < va:
            verdict = "scaled down"
        else:
            verdict = "changed"
        rows.append((field, va, vb, verdict, meaning))
    return rows


def config_table(a: DeepseekV3Config, b: DeepseekV3Config, names: tuple[str, str] = ("DeepSeek-V3", "tiny")):
    """An HTML table (an ``IPython.display.HTML``) of :func:`config_rows`; "same" rows are shaded green."""
    from IPython.display import HTML

    def fmt(v):
        if v is None:
            return "—"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    head = (f"<tr><th>field</th><th>{html.escape(names[0])}</th><th>{html.escape(names[1])}</th>"
            f"<th>verdict</th><th>meaning</th></tr>")
    body = []
    for field, va, vb, verdict, meaning in config_rows(a, b):
        colour = {"same": "#d5f0dd", "scaled down": "#fde2b8"}.get(verdict, "#f3d1e3")
        body.append(f"<tr><td><code>{html.escape(field)}</code></td><td>{fmt(va)}</td><td>{fmt(vb)}</td>"
                    f"<td style='background:{colour}'>{verdict}</td><td>{html.escape(meaning)}</td></tr>")
    return HTML("<table>" + head + "".join(body) + "</table>")


def plot_race(curves: dict[str, tuple[Sequence[float], Sequence[Sequence[float]]]], labels: dict[str, str],
              title: str, xlabel: str = "budget: steps × measured step time (s)"):
    """Validation loss against time for several models: one thin line per seed, the seed mean thick.

    ``curves``: model -> ``(times, [losses of seed 0, seed 1, …])`` (:func:`~.runs.curve`). Returns the Figure.
    Raises ValueError for an empty ``curves``.
    """
    if not curves:
        raise ValueError("plot_race needs at least one model's curve")
    fig, (ax, zoom) = subplots(1, 2, height=4.6, gridspec_kw={"width_ratios": [1.3, 1]})
    lows, highs = [], []
    for name, (times, seeds) in curves.items():
        c = MODEL_COLOURS.get(name, PALETTE["black"])
        mean = [sum(v) / len(v) for v in zip(*seeds)]
        for a in (ax, zoom):
            for ys in seeds:
                a.plot(times, ys, color=c, lw=0.8, alpha=0.35)
            a.plot(times, mean, color=c, lw=2.2, marker="o", ms=3.5,
                   label=f"{labels.get(name, name)} (mean of {len(seeds)} seeds; thin: each seed)" if a is ax else None)
        half = [y for t, ys in zip(times, zip(*seeds)) if t >= times[-1] / 2 for y in ys]
        if name != "nanogpt":
            lows.append(min(half)), highs.append(max(half))
    t_end = max(t[-1] for t, _ in curves.values())
    if lows:
        pad = 0.1 * (max(highs) - min(lows))
        zoom.set_ylim(min(lows) - pad, max(highs) + pad)
    zoom.set_xlim(t_end / 2, t_end * 1.02)
    zoom.set_title("second half of the budget, zoomed")
    for a in (ax, zoom):
        a.set_xlabel(xlabel)
        a.grid(alpha=0.3)
    ax.set_ylabel("validation loss (nats / character)")
    ax.set_title(title)
    fig.legend(loc="outside upper center", ncol=1, frameon=False)
    return fig


def plot_crossover(c: dict, label_a: str = "MoE", label_b: str = "dense twin"):
    """``label_b − label_a`` validation loss along the budget (:func:`~.runs.crossover`): above 0 the MoE leads.

    Thin lines: each seed (interpolated validation curves), thick: the mean, diamonds: the finished runs' gap at the
    end of the budget (the more precise 16-batch score); the dashed line marks where the mean turns positive for
    good, if it does. Returns the Figure."""
    fig, ax = subplots(height=4.0)
    ax.axhline(0.0, color="#444444", lw=1.0)
    for j, g in enumerate(c.get("gap_seed", [])):
        ax.plot(c["times"], g, color=PALETTE["sky"], lw=0.8, alpha=0.6, label="each seed (validation curves)" if j == 0 else None)
    ax.plot(c["times"], c["gap_mean"], color=PALETTE["blue"], lw=2.2, label=f"mean over seeds: {label_b} − {label_a}")
    end = c["times"][-1]
    ax.plot([end] * len(c["gap_end"]), c["gap_end"], "D", color=PALETTE["red"], ms=6,
            label="finished runs, end of budget (16-batch score), one per seed")
    if c["t_mean"] is not None:
        ax.axvline(c["t_mean"], color=PALETTE["red"], ls="--", lw=1.4,
                   label=f"the {label_a} leads for good from here")
    ax.set_xlabel("budget: steps × measured step time (s)")
    ax.set_ylabel(f"loss({label_b}) − loss({label_a})\n(nats / char; > 0: {label_a} ahead)")
    ax.set_title(f"Is the {label_a} ahead of its {label_b} at equal time?")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", frameon=True, fontsize=9)
    return fig


def plot_ranks(hist, kinds: Sequence[str] = ("dispatch", "combine", "dispatch_grad", "combine_grad", "all_reduce")):
    """A distributed run (:class:`~dsv3_lessons.tools.distributed_train.DistributedHistory`): left, the (token,
    expert) pairs each rank's experts processed per step (all MoE layers); right, the bytes each rank sent per
    step, stacked by kind. Returns the Figure."""
    import torch

    load = hist.rank_loads().sum(-1)                      # [steps, world]
    steps = hist.step
    fig, (a, b) = subplots(1, 2, height=3.9)
    colours = [PALETTE["blue"], PALETTE["orange"], PALETTE["green"], PALETTE["purple"]]
    for r in range(hist.world_size):
        a.plot(steps, load[:, r].tolist(), color=colours[r % 4], lw=1.8, marker="o", ms=3,
               ls="-" if r == 0 else "--", label=f"rank {r}")
    a.set_xlabel("optimizer step")
    a.set_ylabel("(token, expert) pairs\nprocessed on the rank")
    a.set_title("Expert load per rank")
    a.legend(loc="best")
    a.grid(alpha=0.3)
    world = hist.world_size
    x = torch.arange(world).float()
    bottom = torch.zeros(world)
    kind_colours = [PALETTE["blue"], PALETTE["sky"], PALETTE["orange"], PALETTE["yellow"], PALETTE["green"],
                    PALETTE["purple"]]
    for j, kind in enumerate(kinds):
        per_rank = torch.tensor(hist.bytes[kind], dtype=torch.float64).mean(0) / 1e3   # kB per step
        b.bar(x.tolist(), per_rank.tolist(), bottom=bottom.tolist(), color=kind_colours[j % 6], label=kind, width=0.6)
        bottom += per_rank.float()
    b.set_xticks(x.tolist(), [f"rank {r}" for r in range(world)])
    b.set_ylabel("kB sent per step (mean)")
    b.set_title("Bytes each rank sent, by kind")
    b.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    return fig
