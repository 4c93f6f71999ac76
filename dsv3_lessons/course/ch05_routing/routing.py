"""Chapter 5 helpers: DeepSeekMoE sizes, one token's group-limited routing, and what trained experts receive.

* :func:`moe_arithmetic` -- dense FFN vs fine-grained + shared experts, from a config (V3 §2.1.2; the
  DeepSeekMoE paper's "fine-grained expert segmentation" and "shared expert isolation").
* :func:`route_token` -- the gate for ONE token with every intermediate kept (affinities, biased scores,
  group scores, kept groups, chosen experts, weights), for any ``n_group``/``topk_group``/K_r: the routing
  explorer and the routing figure read it. The chapter writes the same steps in torch cells and checks them
  against :class:`dsv3_lessons.model.moe.Gate`.
* :func:`experts_reachable` -- the "up to 13 experts per token" bandwidth arithmetic (V3 §2.1.2 / §3.2.2).
* :func:`specialisation` -- which character classes each expert of a trained model receives.
* :func:`trained_gates` -- the trained model's gates rebuilt from ``data/moe_runs/routing_snapshot.pt``
  (see :mod:`dsv3_lessons.course.ch06_balancing.runs`, which trains and stores it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.model.moe import Gate

__all__ = ["MoEArithmetic", "moe_arithmetic", "RouteReport", "route_token", "valid_group_counts",
           "experts_reachable", "CHAR_CLASSES", "char_class", "specialisation", "top_chars",
           "trained_gates", "snapshot_config", "token_context", "group_scores", "paper_group_mask", "routed_sets",
           "limit_changes", "bias_threshold"]


# ----------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class MoEArithmetic:
    """Sizes of one FFN layer, dense vs DeepSeekMoE (numbers of scalars; widths in channels).

    Attributes:
        dense_width: ``intermediate_size`` of the dense layers; dense_params: 3·d·dense_width.
        expert_width: ``moe_intermediate_size``; expert_params: 3·d·expert_width (SwiGLU: gate, up, down).
        routed, shared, top_k: N_r, N_s, K_r.
        activated_width: (K_r + N_s)·expert_width -- FFN width one token runs through;
        activated_params: (K_r + N_s)·expert_params (+ the gate's N_r·d + N_r);
        total_params: (N_r + N_s)·expert_params + gate;
        combinations: C(N_r, K_r), the expert sets a token can pick (no group limit);
        coarse_combinations: C(N_r/m, K_r/m) for experts m times wider (same total and activated size),
            m = ``coarse_factor``.
    """

    dense_width: int
    dense_params: int
    expert_width: int
    expert_params: int
    routed: int
    shared: int
    top_k: int
    activated_width: int
    activated_params: int
    total_params: int
    combinations: int
    coarse_factor: int
    coarse_combinations: int


def moe_arithmetic(cfg: DeepseekV3Config, coarse_factor: int | None = None) -> MoEArithmetic:
    """Closed-form sizes of ``cfg``'s FFN layers (checked against ``count_parameters`` in the tests).

    ``coarse_factor`` m (default: K_r, i.e. one expert per token) must divide N_r and K_r.
    Raises ValueError otherwise.
    """
    d, w, n_r, n_s, k = (cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts,
                         cfg.n_shared_experts, cfg.num_experts_per_tok)
    m = k if coarse_factor is None else coarse_factor
    if m < 1 or n_r % m or k % m:
        raise ValueError(f"coarse_factor must divide N_r={n_r} and K_r={k}, got {m}")
    expert = 3 * d * w
    gate = n_r * d + n_r
    return MoEArithmetic(
        dense_width=cfg.intermediate_size, dense_params=3 * d * cfg.intermediate_size, expert_width=w,
        expert_params=expert, routed=n_r, shared=n_s, top_k=k, activated_width=(k + n_s) * w,
        activated_params=(k + n_s) * expert + gate, total_params=(n_r + n_s) * expert + gate,
        combinations=math.comb(n_r, k), coarse_factor=m, coarse_combinations=math.comb(n_r // m, k // m))


# ----------------------------------------------------------------------------------- one token's routing
@dataclass(frozen=True)
class RouteReport:
    """Every intermediate of routing one token (V3 eqs. 13–16, group limiting as the official ``Gate``).

    Attributes (N_r experts, G = n_group groups):
        scores ``[N_r]`` s_i = sigmoid(u·e_i); biased ``[N_r]`` s_i + b_i (selection only);
        group_scores ``[G]`` sum of each group's two best biased scores; kept_groups (sorted ids);
        allowed ``[N_r]`` bool (experts in kept groups); chosen: expert ids, best first;
        weights: their combine weights g (unbiased s normalised, times the scale), same order;
        n_group, topk_group, top_k, scale: the settings used.
    """

    scores: torch.Tensor
    biased: torch.Tensor
    group_scores: torch.Tensor
    kept_groups: tuple[int, ...]
    allowed: torch.Tensor
    chosen: tuple[int, ...]
    weights: tuple[float, ...]
    n_group: int
    topk_group: int
    top_k: int
    scale: float

    @property
    def per_group(self) -> int:
        return self.scores.numel() // self.n_group


def valid_group_counts(n_experts: int) -> list[int]:
    """Group counts that split ``n_experts`` evenly with >= 2 experts per group (1 = no grouping)."""
    return [g for g in range(1, n_experts + 1) if n_experts % g == 0 and (g == 1 or n_experts // g >= 2)]


@torch.no_grad()
def route_token(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, n_group: int = 1,
                topk_group: int = 1, top_k: int = 1, scale: float = 1.0) -> RouteReport:
    """Route one token ``u [d]`` with gate centroids ``weight [N_r, d]`` and selection bias ``bias [N_r]``.

    Steps: s = sigmoid(weight·u) in float32; biased = s + b; group score = sum of the two largest biased
    scores of each group; keep the ``topk_group`` best groups; experts elsewhere get −inf; top-K_r of what is
    left; g = s_chosen/Σ s_chosen · ``scale`` (unbiased scores, scaled once).

    Raises:
        ValueError: shapes that do not match, or ``n_group``/``topk_group``/``top_k`` that do not fit N_r
            (names the argument and the allowed range).
    """
    if u.dim() != 1 or weight.dim() != 2 or weight.shape[1] != u.shape[0]:
        raise ValueError(f"u must be [d] and weight [N_r, d]; got u {tuple(u.shape)}, weight {tuple(weight.shape)}")
    n_r = weight.shape[0]
    bias = torch.zeros(n_r) if bias is None else bias
    if bias.shape != (n_r,):
        raise ValueError(f"bias must be [N_r={n_r}], got {tuple(bias.shape)}")
    if n_group not in valid_group_counts(n_r):
        raise ValueError(f"n_group must split {n_r} experts evenly with >= 2 per group: one of "
                         f"{valid_group_counts(n_r)}, got {n_group}")
    if not 1 <= topk_group <= n_group:
        raise ValueError(f"topk_group must be in [1, n_group={n_group}], got {topk_group}")
    per = n_r // n_group
    if not 1 <= top_k <= topk_group * per:
        raise ValueError(f"top_k must be in [1, topk_group·experts per group = {topk_group * per}], got {top_k}")
    s = torch.sigmoid(weight.float() @ u.float())
    biased = s + bias.float()
    gscores = biased.view(n_group, per).topk(min(2, per), dim=-1).values.sum(-1)  # one group too: unused then
    kept = gscores.topk(topk_group).indices if n_group > 1 else torch.tensor([0])
    allowed = torch.zeros(n_group, dtype=torch.bool)
    allowed[kept] = True
    allowed = allowed.repeat_interleave(per)
    chosen = biased.masked_fill(~allowed, float("-inf")).topk(top_k).indices
    g = s[chosen] / s[chosen].sum() * scale
    return RouteReport(s, biased, gscores, tuple(sorted(kept.tolist())), allowed, tuple(chosen.tolist()),
                       tuple(g.tolist()), n_group, topk_group, top_k, scale)


# ----------------------------------------------------------------------------------- 13 experts
def experts_reachable(nodes: int = 4, ib_gb_s: float = 50.0, nvlink_gb_s: float = 160.0) -> tuple[float, float]:
    """``(experts per node, experts per token)`` at the cost of one IB transfer per node (V3 §3.2.2).

    A token crosses InfiniBand once per destination node; inside the node NVLink forwards it to the
    experts there. While one IB transfer lasts, NVLink moves nvlink/ib times as much data, so a node can feed
    nvlink/ib experts "for free": 160/50 = 3.2, and M = 4 nodes × 3.2 ≈ 13 experts per token. V3 uses 8.
    Raises ValueError for non-positive inputs.
    """
    if nodes < 1 or ib_gb_s <= 0 or nvlink_gb_s <= 0:
        raise ValueError(f"nodes >= 1 and bandwidths > 0 expected, got {nodes}, {ib_gb_s}, {nvlink_gb_s}")
    per_node = nvlink_gb_s / ib_gb_s
    return per_node, nodes * per_node


# ----------------------------------------------------------------------------------- specialisation
CHAR_CLASSES = ("vowel", "consonant", "capital", "space", "newline", "punctuation", "other")


def char_class(c: str) -> str:
    """The class of one character (one of :data:`CHAR_CLASSES`)."""
    if c in "aeiou":
        return "vowel"
    if c.isalpha() and c.islower():
        return "consonant"
    if c.isalpha():
        return "capital"
    if c == " ":
        return "space"
    if c == "\n":
        return "newline"
    if c in ".,;:!?'\"-()[]&":
        return "punctuation"
    return "other"


def specialisation(ids: torch.Tensor, experts: torch.Tensor, chars: list[str], n_experts: int) -> torch.Tensor:
    """Counts ``[N_r, len(CHAR_CLASSES)]``: how many tokens of each character class each expert received.

    ``ids [n]`` token ids of the routed tokens (the CURRENT character at each position); ``experts [n, K_r]``
    the experts chosen for them. Each (token, expert) pair counts once.
    """
    cls = torch.tensor([CHAR_CLASSES.index(char_class(chars[int(i)])) for i in ids])
    out = torch.zeros(n_experts, len(CHAR_CLASSES), dtype=torch.long)
    for slot in range(experts.shape[1]):
        out.index_put_((experts[:, slot].long(), cls), torch.ones_like(cls), accumulate=True)
    return out


def top_chars(ids: torch.Tensor, experts: torch.Tensor, chars: list[str], expert: int, n: int = 6) -> list[tuple[str, float]]:
    """The ``n`` characters that make up the largest shares of what ``expert`` receives: ``[(char, share)]``."""
    hit = (experts.long() == expert).any(dim=1)
    if not bool(hit.any()):
        return []
    counts = torch.bincount(ids[hit].long(), minlength=len(chars)).float()
    share = counts / counts.sum()
    top = share.topk(min(n, int((counts > 0).sum())))
    return [(chars[int(i)], float(v)) for v, i in zip(top.values, top.indices)]


# ----------------------------------------------------------------------------------- the trained model's gates
def snapshot_config(snap: dict) -> DeepseekV3Config:
    """The config the snapshot's model was trained with."""
    return DeepseekV3Config.from_dict(snap["config"])


def trained_gates(snap: dict) -> list[Gate]:
    """One :class:`~dsv3_lessons.model.moe.Gate` per main MoE layer, loaded with the trained weight and bias."""
    cfg = snapshot_config(snap)
    gates = []
    for w, b in zip(snap["gate_weight"], snap["gate_bias"]):
        g = Gate(cfg)
        g.load_state_dict({"weight": w, "e_score_correction_bias": b})
        gates.append(g.eval())
    return gates


def token_context(text: str, pos: int, width: int = 12) -> str:
    """``text`` around ``pos`` with the token bracketed, newlines shown as ⏎: ``'…ore th[e] ki…'``."""
    if not 0 <= pos < len(text):
        raise ValueError(f"pos must be in [0, {len(text)}), got {pos}")
    show = lambda s: s.replace("\n", "⏎")  # noqa: E731
    return f"…{show(text[max(0, pos - width):pos])}[{show(text[pos])}]{show(text[pos + 1:pos + 1 + width])}…"



# ----------------------------------------------------------------------------------- where the "2" comes from
def group_scores(biased: torch.Tensor, n_group: int, per_group_k: int) -> torch.Tensor:
    """Each group's score: the sum of its ``per_group_k`` largest biased scores. ``biased [n, N_r]`` -> ``[n, G]``.

    V3 §2.1.2 selects nodes "according to the sum of the highest K_r/M affinity scores of the experts distributed
    on each node": ``per_group_k = K_r / M`` (8 / 4 = 2 for V3). The official ``Gate`` hard-codes 2 (``topk(2)``)
    when a bias is present and takes the max (``per_group_k = 1``) otherwise; V2's device-limited routing
    (V2 report §2.2.2) picks the devices holding the highest-scoring experts, i.e. the max.
    Raises ValueError if ``per_group_k`` is not in [1, N_r / n_group] or n_group does not split N_r.
    """
    n, n_r = biased.shape
    if n_group < 1 or n_r % n_group:
        raise ValueError(f"n_group must split the {n_r} experts evenly, got {n_group}")
    if not 1 <= per_group_k <= n_r // n_group:
        raise ValueError(f"per_group_k must be in [1, {n_r // n_group}] (experts per group), got {per_group_k}")
    return biased.view(n, n_group, -1).topk(per_group_k, dim=-1).values.sum(-1)


def paper_group_mask(biased: torch.Tensor, n_group: int, topk_group: int, top_k: int) -> torch.Tensor:
    """Boolean ``[n, N_r]``: experts of the ``topk_group`` groups with the largest sums of their K_r/M best biased
    scores (K_r = ``top_k``, M = ``topk_group``): V3 §2.1.2's rule for any K_r/M (exercise 5.2's oracle).

    Raises ValueError if M does not divide K_r or the group sizes do not fit.
    """
    if topk_group < 1 or top_k % topk_group:
        raise ValueError(f"topk_group must divide top_k (K_r / M experts per kept group), got K_r={top_k}, "
                         f"M={topk_group}")
    n, n_r = biased.shape
    scores = group_scores(biased, n_group, top_k // topk_group)
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, scores.topk(topk_group, dim=-1).indices, True)
    return keep.repeat_interleave(n_r // n_group, dim=1)


def routed_sets(biased: torch.Tensor, n_group: int, topk_group: int, top_k: int,
                per_group_k: int | None = None) -> torch.Tensor:
    """The chosen experts ``[n, K_r]`` (sorted ids) under group limiting with groups scored by their
    ``per_group_k`` best (``None``: no group limit at all)."""
    n, n_r = biased.shape
    if per_group_k is None:
        allowed = torch.ones_like(biased, dtype=torch.bool)
    else:
        scores = group_scores(biased, n_group, per_group_k)
        keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, scores.topk(topk_group, dim=-1).indices, True)
        allowed = keep.repeat_interleave(n_r // n_group, dim=1)
    return biased.masked_fill(~allowed, float("-inf")).topk(top_k, dim=-1).indices.sort(-1).values


@torch.no_grad()
def limit_changes(snap: dict, layer: int, per_group_k: int) -> float:
    """Fraction of the snapshot's held-out tokens (all passages, one MoE ``layer``) whose chosen experts differ
    between group-limited routing (groups scored by their ``per_group_k`` best biased scores) and no limit."""
    cfg = snapshot_config(snap)
    u = snap["gate_inputs"][layer].reshape(-1, cfg.hidden_size).float()
    biased = torch.sigmoid(u @ snap["gate_weight"][layer].float().T) + snap["gate_bias"][layer].float()
    g, m, k = cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok
    limited = routed_sets(biased, g, m, k, per_group_k)
    free = routed_sets(biased, g, m, k, None)
    return float((limited != free).any(-1).float().mean())


def bias_threshold(snap: dict, passage: int, position: int, layer: int, expert: int, hi: float = 4.0,
                   tol: float = 1e-6) -> float:
    """The smallest extra bias Δb on ``expert`` that gets it chosen for one stored token (bisection over
    :func:`dsv3_lessons.course.ch05_routing.widget.explore_route`, whose choice is monotone in Δb: a larger bias
    only raises the expert's score and its group's). 0.0 if it is chosen already.

    Raises ValueError if even Δb = ``hi`` does not get it chosen.
    """
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    def chosen(delta: float) -> bool:
        return expert in explore_route(snap, passage, position, layer, expert=expert, bias=delta).chosen

    if chosen(0.0):
        return 0.0
    if not chosen(hi):
        raise ValueError(f"expert {expert} is not chosen even with Δb = {hi}")
    lo = 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if chosen(mid) else (mid, hi)
    return hi
