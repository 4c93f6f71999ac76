"""What one decoded token costs in one attention layer: MHA, MLA with a per-head cache, absorbed MLA.

The numbers behind chapter 4's verdict on "MLA cuts the compute of attention" and behind its decode-cost widget
(:mod:`dsv3_lessons.course.ch04_mla_inference.widget`). All closed form, a multiply-add = 2 FLOPs, norms, RoPE
and softmax left out (the conventions of :func:`~dsv3_lessons.course.ch04_mla_inference.decode.attention_flops`
and of chapter 2's :func:`~dsv3_lessons.course.ch02_mla.steps.mha_cost`).

Three layers with V3's widths (hidden size 7168, ``heads`` heads; V3 report §2.1.1 and the released config):

* ``"mha"`` -- attention **without** latents: per-head W^Q, W^K, W^V (keys ``mha_qk_width`` wide: 192 = V3's
  [q^C; q^R] width, or 128 = a plain 128-wide head), W^O; every head's key and value cached.
* ``"per_head"`` -- MLA's projections, but every head's expanded key (192) and value (128) cached
  (the MHA-style cache of V2 §2.1.1): the new token is expanded once, the cache is not.
* ``"absorb"`` -- MLA decoding absorbed: W^UK folded into the query, W^UV after attention, attention over the
  576-wide latent row (V2 §2.1.2, the official ``attn_impl="absorb"``).

A decode step of ``batch`` sequences with ``queries`` new tokens each (2 = an MTP draft verified with the next
token, V3 §2.2) over ``context`` cached tokens reads the layer's weights once and each sequence's cache once;
its FLOPs grow with every query. Per decoded token means divided by ``batch · queries``.

Arithmetic intensity (FLOPs per byte read) of the attention core: per cached token, absorbed MLA does
2·n_h·(d_c + d_h^R + d_c) FLOPs per query on one (d_c + d_h^R)-element row: 278,528 / 1,152 ≈ 242 FLOP/B for V3
in BF16 with one query. An H800's ridge, from FlashMLA's published kernel results (3000 GB/s memory-bound,
660 TFLOPS compute-bound on H800 SXM5, ``deepseek-ai/FlashMLA`` README), is 660e12 / 3000e9 = 220 FLOP/B
(:data:`H800_RIDGE`): V3's absorbed decode attention sits at or past it, MHA's at 1.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from dsv3_lessons.model.config import DeepseekV3Config, count_parameters

from dsv3_lessons.course.ch04_mla_inference.decode import attention_flops, v3_attention_config

__all__ = ["H800_RIDGE", "COST_VARIANTS", "COST_LABELS", "mha_attention_flops", "mha_params",
           "step_flops", "step_bytes", "cached_row_elements", "crossover_context", "DecodeCostReport",
           "decode_cost_report", "CONTEXT_GRID", "CONTROL_OPTIONS", "fixed_cost_limits"]

#: FLOPs per byte at which an H800 turns from memory-bound to compute-bound for FlashMLA's dense decode kernel:
#: 660 TFLOPS (compute-bound) / 3000 GB/s (memory-bound), FlashMLA README (H800 SXM5, CUDA 12.8).
H800_RIDGE = 660e12 / 3000e9

#: the three layers the widget compares, in drawing order, and their labels
COST_VARIANTS: tuple[str, ...] = ("mha", "per_head", "absorb")
COST_LABELS = {"mha": "MHA (no latents)", "per_head": "MLA, per-head cache", "absorb": "MLA, absorbed"}


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _check_width(mha_qk_width) -> None:
    if mha_qk_width not in (128, 192):
        raise ValueError(f"mha_qk_width must be 192 (V3's [q^C; q^R] head width) or 128, got {mha_qk_width!r}")


def mha_attention_flops(cfg: DeepseekV3Config, queries: int, context: int, qk_width: int | None = None) -> dict:
    """FLOPs of one MHA forward (no latents) with ``cfg``'s heads and widths: ``queries`` new tokens over
    ``context`` cached ones, every query scored against all ``context + queries`` keys (batch 1).

    ``projections`` per new token: W^Q and W^K 2·d·n_h·w each, W^V 2·d·n_h·d_v, W^O 2·n_h·d_v·d, with
    ``w = qk_width`` (default d_h + d_h^R = 192 for V3); ``attention`` = 2·n_h·(w + d_v) per query-key pair.
    Chapter 2's ``mha_cost(...).flops_per_token_per_layer`` is the projection term for w = 192.
    Returns ``{"projections", "attention", "total"}``. Raises ValueError for ``queries`` < 1 or ``context`` < 0.
    """
    _check_int("queries", queries, 1)
    _check_int("context", context, 0)
    h, d, dv = cfg.num_attention_heads, cfg.hidden_size, cfg.v_head_dim
    w = cfg.qk_head_dim if qk_width is None else qk_width
    proj = queries * (2 * d * h * (2 * w + dv) + 2 * h * dv * d)
    attn = 2 * h * queries * (context + queries) * (w + dv)
    return {"projections": proj, "attention": attn, "total": proj + attn}


def mha_params(cfg: DeepseekV3Config, qk_width: int | None = None) -> int:
    """Parameters of that MHA layer: d·n_h·(2w + d_v) + n_h·d_v·d (w = ``qk_width``, default d_h + d_h^R)."""
    h, d, dv = cfg.num_attention_heads, cfg.hidden_size, cfg.v_head_dim
    w = cfg.qk_head_dim if qk_width is None else qk_width
    return d * h * (2 * w + dv) + h * dv * d


def cached_row_elements(cfg: DeepseekV3Config, variant: str, mha_qk_width: int = 192) -> int:
    """Cached elements per token and layer: n_h·(w + d_v) for ``mha``, n_h·(d_h + d_h^R + d_v) for ``per_head``,
    d_c + d_h^R for ``absorb`` (V3: 40,960 / 40,960 / 576)."""
    if variant == "mha":
        return cfg.num_attention_heads * (mha_qk_width + cfg.v_head_dim)
    if variant == "per_head":
        return cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    if variant == "absorb":
        return cfg.kv_lora_rank + cfg.qk_rope_head_dim
    raise ValueError(f"variant must be one of {COST_VARIANTS}, got {variant!r}")


def step_flops(cfg: DeepseekV3Config, variant: str, context: int, queries: int = 1, mha_qk_width: int = 192) -> int:
    """FLOPs of one decode step of ONE sequence (``queries`` new tokens over ``context`` cached ones)."""
    if variant == "mha":
        return mha_attention_flops(cfg, queries, context, mha_qk_width)["total"]
    if variant not in COST_VARIANTS:
        raise ValueError(f"variant must be one of {COST_VARIANTS}, got {variant!r}")
    return attention_flops(cfg, queries, context, variant)["total"]


def step_bytes(cfg: DeepseekV3Config, variant: str, context: int, batch: int = 1, mha_qk_width: int = 192,
               bytes_per_element: int = 2) -> int:
    """Bytes one decode step must read at least: the layer's weights once, plus ``batch`` caches of ``context``
    tokens (each sequence has its own cache; all its queries and heads share one read)."""
    weights = mha_params(cfg, mha_qk_width) if variant == "mha" else count_parameters(cfg).attention_per_layer
    cache = batch * context * cached_row_elements(cfg, variant, mha_qk_width)
    return (weights + cache) * bytes_per_element


def crossover_context(cfg: DeepseekV3Config, queries: int = 1, mha_qk_width: int = 192) -> int | None:
    """The smallest context T at which absorbed MLA needs MORE FLOPs per step than MHA, or None if never.

    Both costs are linear in T: absorbed MLA has cheaper projections (and pays the two folds), MHA cheaper
    query-key pairs (w + d_v against 2·d_c + d_h^R per head). Solved in closed form, then confirmed at T and
    T − 1 with :func:`step_flops`. V3 (128 heads, one query): 4,070 against 192-wide MHA heads, 2,654 against
    128-wide ones.
    """
    _check_int("queries", queries, 1)
    _check_width(mha_qk_width)
    h = cfg.num_attention_heads
    pair_mla = 2 * h * (2 * cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    pair_mha = 2 * h * (mha_qk_width + cfg.v_head_dim)
    if pair_mla <= pair_mha:
        return None
    fixed_gap = step_flops(cfg, "mha", 0, queries, mha_qk_width) - step_flops(cfg, "absorb", 0, queries)
    # absorb(T) - mha(T) = (pair_mla - pair_mha)·q·T - fixed_gap > 0
    t = max(0, math.floor(fixed_gap / ((pair_mla - pair_mha) * queries)) + 1)
    while t > 0 and step_flops(cfg, "absorb", t - 1, queries) > step_flops(cfg, "mha", t - 1, queries, mha_qk_width):
        t -= 1
    while step_flops(cfg, "absorb", t, queries) <= step_flops(cfg, "mha", t, queries, mha_qk_width):
        t += 1
    return t


@dataclass(frozen=True)
class DecodeCostReport:
    """Per decoded token, one layer, BF16, for each of :data:`COST_VARIANTS` (dicts keyed by variant).

    Attributes:
        context, heads, batch, queries, mha_qk_width: the settings.
        flops: FLOPs per decoded token (one step's FLOPs / queries; the same for every batch size).
        bytes: bytes read per decoded token (one step's bytes / (batch · queries)).
        cache_row_bytes: cached bytes per token and layer.
        core_intensity: attention FLOPs per cached byte (per cached token: queries · 2·n_h·(key + value width)
            / row bytes) -- what decides memory- vs compute-bound for the attention core.
        step_intensity: all FLOPs of the step / all bytes it reads (weights included).
        crossover: smallest context where absorbed MLA needs more FLOPs than MHA (None: never).
        grid: the contexts of the curves; curve_flops / curve_bytes: ``{variant: [per decoded token]}`` on it.
    """

    context: int
    heads: int
    batch: int
    queries: int
    mha_qk_width: int
    flops: dict
    bytes: dict
    cache_row_bytes: dict
    core_intensity: dict
    step_intensity: dict
    crossover: int | None
    grid: tuple[int, ...]
    curve_flops: dict
    curve_bytes: dict


#: the contexts the widget's curves are drawn on (powers of two, 64 … 128K tokens)
CONTEXT_GRID: tuple[int, ...] = tuple(2 ** k for k in range(6, 18))


def decode_cost_report(context: int = 4096, heads: int = 128, batch: int = 1, queries: int = 1,
                       mha_qk_width: int = 192, bytes_per_element: int = 2) -> DecodeCostReport:
    """FLOPs and bytes per decoded token of MHA, a per-head MLA cache and absorbed MLA: the widget's logic.

    Args:
        context: cached tokens per sequence (>= 1); heads: n_h (>= 1, widths stay V3's);
        batch: sequences decoded together (>= 1); queries: new tokens per sequence and step (>= 1);
        mha_qk_width: 192 or 128 (the MHA baseline's key width); bytes_per_element: 2 = BF16.
    Raises: ValueError naming the argument.
    """
    for name, value, lo in (("context", context, 1), ("heads", heads, 1), ("batch", batch, 1),
                            ("queries", queries, 1), ("bytes_per_element", bytes_per_element, 1)):
        _check_int(name, value, lo)
    _check_width(mha_qk_width)
    cfg = v3_attention_config(num_attention_heads=heads)
    tokens = batch * queries

    def per_token(variant, t):
        f = step_flops(cfg, variant, t, queries, mha_qk_width) * batch / tokens
        b = step_bytes(cfg, variant, t, batch, mha_qk_width, bytes_per_element) / tokens
        return f, b

    flops, nbytes, row, core, step = {}, {}, {}, {}, {}
    for v in COST_VARIANTS:
        flops[v], nbytes[v] = per_token(v, context)
        row[v] = cached_row_elements(cfg, v, mha_qk_width) * bytes_per_element
        width = {"mha": mha_qk_width + cfg.v_head_dim, "per_head": cfg.qk_head_dim + cfg.v_head_dim,
                 "absorb": 2 * cfg.kv_lora_rank + cfg.qk_rope_head_dim}[v]
        core[v] = queries * 2 * heads * width / row[v]
        step[v] = flops[v] / nbytes[v]
    curves = {v: [per_token(v, t) for t in CONTEXT_GRID] for v in COST_VARIANTS}
    return DecodeCostReport(context, heads, batch, queries, mha_qk_width, flops, nbytes, row, core, step,
                            crossover_context(cfg, queries, mha_qk_width), CONTEXT_GRID,
                            {v: [c[0] for c in curves[v]] for v in COST_VARIANTS},
                            {v: [c[1] for c in curves[v]] for v in COST_VARIANTS})


#: the values each control of the decode-cost widget offers (context and batch on a log scale)
CONTROL_OPTIONS = {
    "context": list(CONTEXT_GRID),                      # 64 … 131,072 cached tokens
    "heads": [8, 16, 32, 64, 128],
    "batch": [2 ** k for k in range(0, 9)],             # 1 … 256 sequences
    "queries": [1, 2],                                  # 2 = an MTP draft verified with the next token
    "mha_qk_width": [192, 128],
}


def fixed_cost_limits(options: dict | None = None, margin: float = 1.6) -> dict[str, tuple[float, float]]:
    """Y limits (MFLOP, MB per decoded token) that hold every curve any setting of the controls draws."""
    options = options or CONTROL_OPTIONS
    lo = {"flops": float("inf"), "bytes": float("inf")}
    hi = {"flops": 0.0, "bytes": 0.0}
    for heads, batch, queries, width in itertools.product(
            [min(options["heads"]), max(options["heads"])], [min(options["batch"]), max(options["batch"])],
            options["queries"], options["mha_qk_width"]):
        r = decode_cost_report(options["context"][0], heads, batch, queries, width)
        for key, curves in (("flops", r.curve_flops), ("bytes", r.curve_bytes)):
            vals = [v / 1e6 for c in curves.values() for v in c]
            lo[key], hi[key] = min(lo[key], min(vals)), max(hi[key], max(vals))
    return {k: (lo[k] / margin, hi[k] * margin) for k in lo}


