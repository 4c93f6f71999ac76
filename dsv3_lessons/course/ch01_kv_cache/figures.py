"""Chapter 1's mechanism figure: which key/value heads the query heads read in MHA, GQA, MQA and MLA.

One panel per design, drawn from a config so every label is computed:

* MHA / GQA / MQA: the n_h query heads as a row of boxes, the n_kv cached key/value heads below, and a line
  from query head i to key/value head i // g (g = n_h / n_kv, the order of the GQA paper, Ainslie et al. 2023,
  arXiv 2305.13245 §2.2, and of transformers' ``repeat_kv``);
* MLA (DeepSeek-V2 report arXiv 2405.04434 §2.1.2, V3 report arXiv 2412.19437 §2.1.1 eqs. 1–5): one cached
  latent c^KV (d_c wide) from which every head's key k^C_i = W^UK_i c^KV and value v^C_i = W^UV_i c^KV are
  up-projected (not cached), plus one cached rotated key k^R shared by all heads.

For real sizes (128 heads) a panel draws a few heads and an ellipsis naming how many were left out, so a
V3-sized panel stays readable at notebook width. Each panel's title states the cached elements per token and
layer: 2·n_kv·d_h, or d_c + d_h^R for MLA.

Use :func:`head_layout` to turn an :class:`~dsv3_lessons.course.ch01_kv_cache.kv_cache.AttentionSpec`, a
:class:`~dsv3_lessons.course.ch01_kv_cache.attention.GroupedQueryAttention` module or a
:class:`~dsv3_lessons.model.config.DeepseekV3Config` into the numbers drawn, and :func:`draw_kv_head_sharing`
to draw a list of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dsv3_lessons.course.common.style import PALETTE
from dsv3_lessons.course.common.draw import Diagram

__all__ = ["HeadLayout", "head_layout", "draw_kv_head_sharing", "visible_slots"]

_PANEL_H = 3.3      # canvas units per panel
_WIDTH = 20.0
_X0, _X1 = 0.6, 19.4
_MAX_SLOTS = 16     # boxes + ellipses in the query row


@dataclass(frozen=True)
class HeadLayout:
    """The head counts one panel draws.

    ``kind`` is "MHA", "GQA", "MQA" or "MLA"; ``n_heads`` = n_h query heads; ``n_kv`` = n_kv key/value heads
    (MLA: None); ``head_dim`` = d_h of a cached key/value head (MLA: the per-head key width d_h + d_h^R is not
    cached, so None); ``kv_lora_rank`` = d_c and ``rope_dim`` = d_h^R (MLA only); ``name`` labels the panel.
    """

    kind: str
    name: str
    n_heads: int
    n_kv: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = None
    rope_dim: int | None = None

    @property
    def group_size(self) -> int:
        """g = n_h / n_kv query heads per key/value head (MLA: n_h, every head reads the one latent)."""
        return self.n_heads if self.kind == "MLA" else self.n_heads // self.n_kv

    @property
    def cached_per_token_per_layer(self) -> int:
        """Cached elements per token and layer: 2·n_kv·d_h, or d_c + d_h^R for MLA."""
        if self.kind == "MLA":
            return self.kv_lora_rank + self.rope_dim
        return 2 * self.n_kv * self.head_dim


def _kind(n_heads: int, n_kv: int) -> str:
    return "MHA" if n_kv == n_heads else ("MQA" if n_kv == 1 else "GQA")


def head_layout(obj: Any, name: str | None = None) -> HeadLayout:
    """The :class:`HeadLayout` of an AttentionSpec, a GroupedQueryAttention module or a DeepseekV3Config.

    Raises:
        TypeError: ``obj`` is none of those (a HeadLayout is validated and returned).
        ValueError: head counts that are not positive, or n_kv that does not divide n_h.
    """
    attention = getattr(obj, "attention", None)
    if isinstance(obj, HeadLayout):
        layout = obj
    elif attention == "MLA" or (attention is None and hasattr(obj, "kv_lora_rank") and hasattr(obj, "qk_rope_head_dim")):
        layout = HeadLayout("MLA", name or getattr(obj, "name", None) or type(obj).__name__, obj.num_attention_heads,
                            kv_lora_rank=obj.kv_lora_rank, rope_dim=obj.qk_rope_head_dim)
    elif hasattr(obj, "num_attention_heads") and hasattr(obj, "num_key_value_heads") and hasattr(obj, "head_dim"):
        n_h, n_kv = obj.num_attention_heads, obj.num_key_value_heads
        layout = HeadLayout(_kind(n_h, n_kv) if attention is None else attention,
                            name or getattr(obj, "name", None) or type(obj).__name__, n_h, n_kv, obj.head_dim)
    else:
        raise TypeError(f"obj must be an AttentionSpec, a GroupedQueryAttention or a DeepseekV3Config, "
                        f"got {type(obj).__name__}")
    for field in ("n_heads", "n_kv", "head_dim", "kv_lora_rank", "rope_dim"):
        value = getattr(layout, field)
        if value is not None and (not isinstance(value, int) or value < (0 if field == "rope_dim" else 1)):
            raise ValueError(f"{layout.name}: {field} must be a positive integer, got {value!r}")
    if layout.kind != "MLA" and layout.n_heads % layout.n_kv:
        raise ValueError(f"{layout.name}: n_kv ({layout.n_kv}) must divide n_heads ({layout.n_heads})")
    return layout


def _pick(n: int, keep: int) -> list[int | str]:
    """Indices 0..n-1 to draw, at most ``keep`` boxes: all, or the first keep-1, an ellipsis, the last."""
    if n <= keep:
        return list(range(n))
    keep = max(keep, 2)
    return [*range(keep - 1), "…", n - 1]


def visible_slots(layout: HeadLayout) -> tuple[list, list]:
    """What a panel draws: ``(query_slots, kv_slots)``.

    ``query_slots``: list of ``(query head index, kv head index)`` or ``("…", hidden count)``;
    ``kv_slots``: list of kv head indices or ``("…", hidden count)`` (MLA: empty). Indices follow
    query head i -> key/value head i // g.
    """
    if layout.n_heads <= _MAX_SLOTS:
        if layout.kind == "MLA":
            return [(h, None) for h in range(layout.n_heads)], []
        g = layout.group_size
        return [(h, h // g) for h in range(layout.n_heads)], list(range(layout.n_kv))
    if layout.kind == "MLA":
        heads = _pick(layout.n_heads, 8)
        hidden = layout.n_heads - len(heads) + 1
        return [(h, None) if h != "…" else ("…", hidden) for h in heads], []
    g, n_kv = layout.group_size, layout.n_kv
    if g == 1:   # MHA: one query head per kv head
        heads = _pick(n_kv, 8)
        hidden = n_kv - len(heads) + 1
        return ([(h, h) if h != "…" else ("…", hidden) for h in heads],
                [h if h != "…" else ("…", hidden) for h in heads])
    kv_shown = _pick(n_kv, 3)
    n_groups = sum(j != "…" for j in kv_shown)
    per_group = max(3, (_MAX_SLOTS - (len(kv_shown) - n_groups)) // n_groups - (1 if g > 3 else 0))
    q: list = []
    kv: list = []
    for j in kv_shown:
        if j == "…":
            hidden_kv = n_kv - n_groups
            q.append(("…", hidden_kv * g))
            kv.append(("…", hidden_kv))
            continue
        kv.append(j)
        members = _pick(g, per_group)
        for m in members:
            q.append(("…", g - len(members) + 1) if m == "…" else (j * g + m, j))
    return q, kv


def _title(layout: HeadLayout) -> str:
    if layout.kind == "MLA":
        return (f"MLA · {layout.name}: {layout.n_heads} query heads, one cached $c^{{KV}}$ + one shared $k^R$ "
                f"→ caches $d_c + d_h^R$ = {layout.kv_lora_rank} + {layout.rope_dim} = "
                f"{layout.cached_per_token_per_layer:,} elements/token/layer")
    kv = "1 KV head" if layout.n_kv == 1 else f"{layout.n_kv} KV heads"
    return (f"{layout.kind} · {layout.name}: {layout.n_heads} query heads, {kv} (g = {layout.group_size}) "
            f"→ caches $2 n_{{kv}} d_h$ = 2·{layout.n_kv}·{layout.head_dim} = "
            f"{layout.cached_per_token_per_layer:,} elements/token/layer")


def _positions(n: int) -> list[float]:
    step = (_X1 - _X0) / n
    return [_X0 + step * (i + 0.5) for i in range(n)]


def _panel(d: Diagram, layout: HeadLayout, top: float) -> None:
    d.text(_X0 - 0.3, top - 0.3, _title(layout), fontsize=10.5, ha="left")
    q_slots, kv_slots = visible_slots(layout)
    xs = _positions(len(q_slots))
    bw = min(1.0, 0.8 * (_X1 - _X0) / len(q_slots))
    y_q, y_mid, y_kv = top - 1.0, top - 1.95, top - 2.75
    q_x: dict[int, float] = {}
    for (head, kv), x in zip(q_slots, xs):
        if head == "…":
            d.text(x, y_q, f"… {kv}\nmore", fontsize=9)
            continue
        d.box(x, y_q, bw, 0.55, f"$q_{{{head}}}$", kind="tensor", name=f"q{head}", fontsize=10)
        q_x[head] = x
    if layout.kind == "MLA":
        y_mid, y_kv, y_bus = top - 1.8, top - 2.95, top - 2.45
        latent = d.box(0.5 * (_X0 + _X1) - 2.0, y_kv, 6.5, 0.5, f"$c^{{KV}}$  ($d_c$ = {layout.kv_lora_rank})",
                       kind="cached", name="c_kv")
        rope = d.box(_X1 - 2.4, y_kv, 3.4, 0.5, f"$k^R$  ($d_h^R$ = {layout.rope_dim})", kind="rope", name="k_r")
        d.ax.patches[-1].set_edgecolor("#a04000")   # k^R is cached too: same thick outline
        d.ax.patches[-1].set_linewidth(2.6)
        xs_drawn = sorted(q_x.values())
        purple = PALETTE["purple"]
        d.ax.plot([min(xs_drawn) + 0.3 * bw, rope.x], [y_bus, y_bus], color=purple, lw=1.4, zorder=1)
        d.ax.plot([rope.x, rope.x], [y_bus, rope.top[1]], color=purple, lw=1.4, zorder=1)
        for head, x in q_x.items():
            mid_w = min(1.4, 0.92 * (_X1 - _X0) / len(q_slots))
            d.box(x, y_mid, mid_w, 0.5, f"$k_{{{head}}},v_{{{head}}}$", kind="weight", name=f"kv{head}", fontsize=9)
            d.arrow((latent.x, latent.top[1]), (x - 0.2 * bw, y_mid - 0.25), color="#a04000", lw=0.9)
            d.arrow((x + 0.3 * bw, y_bus), (x + 0.3 * bw, y_mid - 0.25), color=purple, lw=1.0)
            d.arrow((x, y_mid + 0.25), (x, y_q - 0.28), style="-", lw=1.0, color="#555555")
        return
    kv_x: dict[int, float] = {}
    kv_positions = []
    for slot in kv_slots:   # a kv head sits under the middle of the query heads drawn for it
        if isinstance(slot, tuple):
            kv_positions.append(None)
            continue
        members = [q_x[h] for h, j in q_slots if h != "…" and j == slot and h in q_x]
        kv_positions.append(sum(members) / len(members))
    for slot, x in zip(kv_slots, kv_positions):
        if isinstance(slot, tuple):
            continue
        kv_x[slot] = x
        d.box(x, y_kv, max(bw, 1.1), 0.55, f"$k_{{{slot}}},v_{{{slot}}}$", kind="cached", name=f"kv{slot}",
              fontsize=9.5)
    for slot, x in zip(kv_slots, kv_positions):   # the hidden kv heads: an ellipsis between their neighbours
        if isinstance(slot, tuple):
            i = kv_slots.index(slot)
            left = kv_positions[i - 1] if i > 0 else _X0
            right = next((p for p in kv_positions[i + 1:] if p is not None), _X1)
            d.text((left + right) / 2, y_kv, f"… {slot[1]} more", fontsize=9)
    for head, kv in q_slots:
        if head != "…" and head in q_x:
            d.arrow((kv_x[kv], y_kv + 0.28), (q_x[head], y_q - 0.28), style="-", lw=1.0, color="#555555")


def draw_kv_head_sharing(layouts: Sequence[Any], title: str | None = None):
    """Draw one panel per design (see the module docstring); returns the matplotlib Figure.

    Args:
        layouts: AttentionSpecs, GroupedQueryAttention modules, DeepseekV3Configs or :class:`HeadLayout`s
            (any mix), drawn top to bottom.
        title: optional figure title.
    Raises:
        ValueError: an empty list (and :func:`head_layout`'s errors).
    """
    items = [head_layout(x) for x in layouts]
    if not items:
        raise ValueError("layouts must hold at least one attention design")
    legend_h = 1.3 if any(x.kind == "MLA" for x in items) else 0.7
    d = Diagram(_WIDTH, _PANEL_H * len(items) + legend_h, title=title)
    for k, layout in enumerate(items):
        _panel(d, layout, top=_PANEL_H * (len(items) - k) + legend_h)
    handles = [Patch(facecolor=PALETTE["tensor"], edgecolor="#333333", label="query head (computed per token)"),
               Patch(facecolor=PALETTE["cached"], edgecolor="#a04000", linewidth=2.6, label="kept in the KV cache"),
               Line2D([], [], color="#555555", label="query head i reads KV head i // g")]
    if any(x.kind == "MLA" for x in items):
        handles += [Patch(facecolor=PALETTE["weight"], edgecolor="#333333",
                          label="MLA: $k_i, v_i$ up-projected from $c^{KV}$ by $W^{UK}_i, W^{UV}_i$ (not cached)"),
                    Patch(facecolor=PALETTE["rope"], edgecolor="#a04000", linewidth=2.6,
                          label="MLA: rotated key $k^R$, cached once, joined to every head's key")]
    d.ax.legend(handles=handles, loc="lower center", ncol=2 if len(handles) > 3 else 3, fontsize=9.5, frameon=False,
                bbox_to_anchor=(0.5, 0.0), borderaxespad=0.1)
    d.fig.layouts = items   # what was drawn, for tests and readers
    return d.fig


# ==================================================================================================
# Chapter 01 -- KV cache (why the KV cache is the bottleneck)
# ==================================================================================================
from dsv3_lessons.course.ch01_kv_cache.kv_cache import (GB as _KV_GB, KB as _KV_KB, AttentionSpec as _KVSpec)  # noqa: E402
from dsv3_lessons.course.ch01_kv_cache.kv_cache import dtype_bytes as _kv_dtype_bytes  # noqa: E402
from dsv3_lessons.course.ch01_kv_cache.kv_cache import (bytes_per_token as _kv_bytes_per_token, cache_bytes as
                                                        _kv_cache_bytes)  # noqa: E402
from dsv3_lessons.course.common.style import PALETTE as _KV_PALETTE, subplots as _kv_subplots  # noqa: E402

#: contexts drawn by default: powers of two from 1K to 512K tokens
KV_CONTEXTS = tuple(2**e for e in range(10, 20))

#: two models whose per-token caches differ by less than this fraction draw on top of each other on the
#: log axes of :func:`plot_kv_cache_vs_context`; such lines get distinct dashes/markers and a legend note.
KV_COINCIDE_REL = 0.03

_KV_COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#555555"]
_KV_STYLES = [("-", "o", 5.0, "full"), ("--", "s", 8.0, "none"), (":", "^", 10.0, "none")]


def kv_mathtext(text: str) -> str:
    """``text`` with the plain-text symbols ``d_c`` and ``d_h^R`` written as matplotlib mathtext.

    Model descriptions and what-if names (``AttentionSpec.describe()``, ``mla_what_if``) are plain text so
    they read well when printed; figure labels render them as $d_c$ and $d_h^R$ instead.
    """
    return text.replace("d_h^R", "$d_h^R$").replace("d_c", "$d_c$")


def kv_coinciding_groups(specs, dtype: str = "bf16", rel: float = KV_COINCIDE_REL) -> list[list[str]]:
    """Names of models whose cache per token lies within ``rel`` of each other (groups of ≥ 2, largest first).

    Such lines coincide on a log axis; :func:`plot_kv_cache_vs_context` draws each member with its own
    line style and marker and names its partner in the legend.
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    order = sorted(specs, key=lambda s: -_kv_bytes_per_token(s, dtype))
    groups: list[list] = []
    for spec in order:
        b = _kv_bytes_per_token(spec, dtype)
        if groups and abs(_kv_bytes_per_token(groups[-1][0], dtype) - b) <= rel * b:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return [[s.name for s in g] for g in groups if len(g) > 1]


def _kv_label(spec, groups, dtype: str) -> tuple[str, tuple]:
    """Legend label and (linestyle, marker, markersize, fillstyle) of one model: partners of a coinciding pair get
    distinct styles and name each other."""
    label, style = spec.name, _KV_STYLES[0]
    group = groups.get(spec.name)
    if group:
        rank = group.index(spec.name)
        style = _KV_STYLES[rank % len(_KV_STYLES)]
        other = group[0] if rank else group[1]
        a, b = _kv_bytes_per_token(spec, dtype), _kv_bytes_per_token(other, dtype)
        label += f" (= {other})" if a == b else f" (≈ {other}, {abs(a - b) / max(a, b):.1%})"
    return label, style


def kv_ylim(specs, budget_gb: float = 80.0, max_batch: int = 1024, what_if_rank: tuple[int, int] = (32, 2048),
            what_if_rope: tuple[int, int] = (0, 256), contexts=KV_CONTEXTS) -> tuple[float, float]:
    """A y range (GB per sequence) for :class:`KVCachePlot` that holds every model line in FP8 and BF16, the what-if
    MLA at the extremes of its ranks (with the fewest / most layers of ``specs``) and the budget line for every
    batch up to ``max_batch``, with room below for the corner legend. The widget and the chapter's static plot use
    it, so both show the same axes."""
    from dsv3_lessons.course.ch01_kv_cache.kv_cache import mla_what_if

    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    layers = [s.num_hidden_layers for s in specs]
    small = [_kv_bytes_per_token(s, "fp8") for s in specs]
    small.append(_kv_bytes_per_token(mla_what_if(what_if_rank[0], what_if_rope[0], min(layers)), "fp8"))
    large = [_kv_bytes_per_token(s, "bf16") for s in specs]
    large.append(_kv_bytes_per_token(mla_what_if(what_if_rank[1], what_if_rope[1], max(layers)), "bf16"))
    low = min(min(small) * min(contexts) / _KV_GB, budget_gb / max_batch)
    high = max(max(large) * max(contexts) / _KV_GB, budget_gb)
    return low / 8.0, high * 1.5


class KVCachePlot:
    """The KV cache of ONE sequence against context length, one line per model (log-log), drawn once and then
    updated in place (the widget redraws it on every control change; rebuilding it each time was most of the
    widget's latency).

    The y axis is the cache of one sequence in GB (10⁹ B), so the model lines depend only on the element size;
    the batch moves the accelerator's line instead: ``budget_gb / batch`` is what each of ``batch`` sequences may
    hold (a line lying above it at some context means the batch does not fit there). The models' legend sits below
    the axes (partners of a coinciding pair, :func:`kv_coinciding_groups`, get distinct dashes/markers and name each
    other); what changes with the controls (the dtype, the budget per sequence, the what-if MLA, the context
    marker) is a second legend in the lower right corner, which no line reaches for any setting of the widget. ``ylim`` fixes the y range (the widget passes one that holds
    every value its controls allow).

    ``_dynamic`` lists what :meth:`update` changes (the lines, the corner legend, the dtype text): with a fixed
    ``ylim`` the widget blits them (:class:`~dsv3_lessons.course.common.blit.BlitRenderer`) over a background of
    the parts that never change (axes, ticks, titles, the models' legend), drawn once.

    Artists, for tests and readers: ``lines`` (model name -> Line2D), ``what_if_line``, ``budget_line`` (its
    legend text ``budget_text`` says the GB per sequence), ``marker_line`` (the context marker; hidden when there is
    none), ``legend`` (models), ``legend_now`` (the corner one) and ``dtype_text`` (top left: the element size).
    """

    def __init__(self, specs, contexts=KV_CONTEXTS, dtype: str = "bf16", budget_gb: float = 80.0,
                 ylim: tuple[float, float] | None = None, height: float = 5.2, what_if: bool = True,
                 marker: bool = True):
        self.specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
        self.contexts = [int(c) for c in contexts]
        if not self.contexts:
            raise ValueError("contexts must hold at least one context length")
        if not self.specs:
            raise ValueError("specs must hold at least one model")
        self.budget_gb = float(budget_gb)
        groups = {name: g for g in kv_coinciding_groups(self.specs, dtype) for name in g}
        # a fixed layout (no constrained-layout solve per update): axes on top, the legends in the band below
        fig, ax = _kv_subplots(height=height, layout=None)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.30)
        self.fig, self.ax = fig, ax
        self.lines = {}
        for k, spec in enumerate(self.specs):
            label, (ls, mk, ms, fill) = _kv_label(spec, groups, dtype)
            self.lines[spec.name], = ax.plot(self.contexts, [1.0] * len(self.contexts),
                                             color=_KV_COLORS[k % len(_KV_COLORS)], ls=ls, marker=mk, ms=ms,
                                             fillstyle=fill, mew=1.4, lw=1.6, label=label,
                                             zorder=3 if spec.name in groups else 2)
        self.what_if_line, = ax.plot(self.contexts, [1.0] * len(self.contexts), color="dimgray", lw=2.2,
                                     ls=(0, (6, 3)), label="what-if MLA", zorder=4)
        self.budget_line = ax.axhline(self.budget_gb, color="black", lw=2.0, alpha=0.8, label="budget", zorder=4)
        self.marker_line = ax.axvline(self.contexts[0], color="grey", lw=1.2, ls=":", label="context", zorder=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(self.contexts)
        ax.set_xticklabels([f"{c // 1024}K" if c % 1024 == 0 else str(c) for c in self.contexts])
        ax.minorticks_off()
        self.fixed_ylim = ylim is not None
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlabel("context length (tokens per sequence)")
        ax.set_ylabel("KV cache of one sequence (GB)")
        ax.set_title("KV cache per sequence vs context (cache only, weights not counted)")
        ax.grid(True, which="major", alpha=0.3)
        common = {"fontsize": 9.5, "title_fontsize": 9.5, "handlelength": 2.6, "alignment": "left"}
        # the readings that change with the controls, in the lower right corner: empty for every setting (the
        # smallest cache there, the what-if MLA at d_c = 32 in FP8 from 32K tokens on, lies above it)
        now = [*([self.what_if_line] if what_if else []), self.budget_line, *([self.marker_line] if marker else [])]
        self.legend_now = ax.legend(handles=now, loc="lower right", framealpha=0.9, borderaxespad=0.3, **common)
        ax.add_artist(self.legend_now)
        # the models, below the axes; the axes' own legend, so a tight bounding box (the notebook's) keeps it
        self.legend = ax.legend(handles=list(self.lines.values()), loc="upper center", bbox_to_anchor=(0.47, -0.15),
                                ncol=3, columnspacing=1.2, frameon=False, borderaxespad=0.0,
                                title="hollow markers / dashes: the same cache per token as the model named "
                                      "(or within the % shown)", **common)
        self.dtype_text = ax.text(0.01, 0.975, "", transform=ax.transAxes, va="top", ha="left", fontsize=10.5,
                                  fontweight="bold")
        texts = dict(zip(now, self.legend_now.get_texts()))
        self._what_if_text = texts.get(self.what_if_line)
        self._marker_text = texts.get(self.marker_line)
        self.budget_text = texts[self.budget_line]
        self._dynamic = [*self.lines.values(), self.what_if_line, self.budget_line, self.marker_line,
                         self.legend_now, self.dtype_text]

    def update(self, batch: int = 1, dtype: str = "bf16", highlight: str | None = None,
               what_if: _KVSpec | None = None, context_marker: int | None = None):
        """Set the lines for ``dtype``, the budget line for ``batch``, the highlighted model, the what-if MLA line
        (hidden when None) and the context marker (hidden when None); returns the Figure.

        Raises ValueError (from the arithmetic) for a bad batch or dtype.
        """
        _kv_cache_bytes(self.specs[0], 1, batch, dtype)           # validates batch and dtype
        for spec in self.specs:
            line = self.lines[spec.name]
            line.set_ydata([_kv_cache_bytes(spec, c, 1, dtype) / _KV_GB for c in self.contexts])
            line.set_linewidth(3.2 if spec.name == highlight else 1.6)
        if what_if is not None:
            self.what_if_line.set_ydata([_kv_cache_bytes(what_if, c, 1, dtype) / _KV_GB for c in self.contexts])
            if self._what_if_text is not None:
                self._what_if_text.set_text("what-if " + kv_mathtext(what_if.name))
        self.what_if_line.set_visible(what_if is not None)
        per_sequence = self.budget_gb / batch
        self.budget_line.set_ydata([per_sequence, per_sequence])
        self.budget_text.set_text(f"{self.budget_gb:g} GB accelerator / batch {batch} = {per_sequence:.3g} GB "
                                  f"per sequence")
        self.marker_line.set_visible(context_marker is not None)
        if context_marker is not None:
            self.marker_line.set_xdata([context_marker, context_marker])
            if self._marker_text is not None:
                self._marker_text.set_text(f"context {context_marker:,} tokens")
        self.dtype_text.set_text(f"cache in {str(dtype).upper()} ({_kv_dtype_bytes(dtype)} B per element)")
        if not self.fixed_ylim:
            self.ax.relim()
            self.ax.autoscale_view(scalex=False)
        return self.fig


def plot_kv_cache_vs_context(specs, contexts=KV_CONTEXTS, batch: int = 1, dtype: str = "bf16",
                             budget_gb: float = 80.0, highlight: str | None = None,
                             what_if: _KVSpec | None = None, context_marker: int | None = None,
                             ylim: tuple[float, float] | None = None):
    """KV cache of one sequence (GB = 10⁹ B) against context length, one line per model, log-log axes, with the
    accelerator's ``budget_gb`` shared by ``batch`` sequences drawn as a horizontal line (see :class:`KVCachePlot`).

    Args:
        specs: iterable of :class:`dsv3_lessons.course.ch01_kv_cache.kv_cache.AttentionSpec` (or a dict of them).
        contexts: context lengths (tokens, ascending) for the x axis.
        batch, dtype: as in :func:`dsv3_lessons.course.ch01_kv_cache.kv_cache.cache_bytes`.
        highlight: name of a model drawn thicker; what_if: an extra spec drawn dashed grey (the MLA what-if);
            context_marker: a context drawn as a dotted vertical line; ylim: a fixed y range in GB (default
            :func:`kv_ylim`, the range the widget uses).
    Returns: the ``Figure`` (``fig.kv_plot`` is the :class:`KVCachePlot`). Each model line's label starts with the
    model name; its y data are ``cache_bytes(spec, context, 1, dtype) / 1e9`` at ``contexts``.
    Raises ValueError (from the arithmetic) for bad contexts, batch or dtype.
    """
    if ylim is None:
        ylim = kv_ylim(specs, budget_gb, contexts=contexts)
    plot = KVCachePlot(specs, contexts, dtype, budget_gb, ylim, what_if=what_if is not None,
                       marker=context_marker is not None)
    fig = plot.update(batch, dtype, highlight, what_if, context_marker)
    fig.kv_plot = plot
    return fig


def plot_window_losses(windows, losses, references: dict | None = None, bytes_per_token: int | None = None):
    """Held-out loss (nats per character) against the number of past characters the model may see (a cache that
    keeps only the last W tokens), one marker per W on a log2 axis, with horizontal reference lines
    ``{label: nats}`` (e.g. the unigram entropy) labelled at their right end. With ``bytes_per_token`` the x tick
    labels also give the cache of one sequence at that W (bytes). Returns the Figure (``fig.axes[0].lines[0]`` is
    the loss curve). Raises ValueError for empty or mismatched ``windows``/``losses``."""
    windows, losses = [int(w) for w in windows], [float(x) for x in losses]
    if not windows or len(windows) != len(losses):
        raise ValueError(f"windows and losses must be non-empty and of equal length, got {len(windows)} and "
                         f"{len(losses)}")
    fig, ax = _kv_subplots(height=3.8)
    ax.plot(windows, losses, "o-", color=_KV_PALETTE["blue"], lw=2.0, ms=7, label="tiny DeepSeek-V3, held-out text")
    styles = ["--", ":", "-."]
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="#444444", ls=styles[j % len(styles)], lw=1.4)
        ax.text(windows[-1], value, f"{label} = {value:.2f} ", va="bottom", ha="right", fontsize=10,
                color="#333333", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(windows)
    if bytes_per_token:
        ax.set_xticklabels([f"{w}\n{w * bytes_per_token:,} B" for w in windows])
        ax.set_xlabel("characters kept in the cache (W), and the cache of one sequence at that W")
    else:
        ax.set_xticklabels([str(w) for w in windows])
        ax.set_xlabel("characters kept in the cache (W)")
    ax.minorticks_off()
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title("How much context does the tiny model use? Loss when it sees only the last W characters")
    ax.grid(alpha=0.3)
    return fig


def plot_kv_bytes_per_token(specs, dtype: str = "bf16", highlight: str | None = None):
    """Horizontal bars: KV cache per token over all layers (KB = 1000 B), one bar per model.

    Each bar is labelled with its value and the design (``AttentionSpec.describe()``, symbols as mathtext);
    colours by kind (MHA/GQA/MQA/MLA), keyed in a legend (lower right). Returns the ``Figure``; bar widths
    are ``bytes_per_token(spec, dtype) / 1000`` in the order given (top to bottom).
    """
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    if not specs:
        raise ValueError("specs must hold at least one model")
    colors = {"MHA": _KV_PALETTE["red"], "GQA": _KV_PALETTE["blue"], "MQA": _KV_PALETTE["green"],
              "MLA": _KV_PALETTE["orange"]}
    kb = [_kv_bytes_per_token(s, dtype) / _KV_KB for s in specs]
    fig, ax = _kv_subplots(height=0.45 * len(specs) + 1.2)
    y = list(range(len(specs)))[::-1]
    ax.barh(y, kb, color=[colors[s.attention] for s in specs],
            edgecolor=["black" if s.name == highlight else "none" for s in specs], linewidth=2)
    for yi, v, s in zip(y, kb, specs):
        ax.text(v + max(kb) * 0.01, yi, kv_mathtext(f"{v:.3f} KB · {s.describe()}"), va="center", fontsize=9.5)
    from matplotlib.patches import Patch
    kinds = [k for k in ("MHA", "GQA", "MQA", "MLA") if any(s.attention == k for s in specs)]
    ax.legend(handles=[Patch(facecolor=colors[k], label=k) for k in kinds], loc="lower right",
              title="attention design", fontsize=9.5, title_fontsize=9.5)
    ax.set_yticks(y)
    ax.set_yticklabels([s.name for s in specs])
    ax.set_xlim(0, max(kb) * 1.75)
    ax.set_xlabel(f"KV cache per token, all layers (KB = 1000 B, {str(dtype).upper()})")
    ax.set_title("What one token leaves behind in the cache")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


__all__ += ["KV_CONTEXTS", "KV_COINCIDE_REL", "kv_mathtext", "kv_coinciding_groups", "kv_ylim", "KVCachePlot",
            "plot_kv_cache_vs_context", "plot_window_losses", "plot_kv_bytes_per_token"]
