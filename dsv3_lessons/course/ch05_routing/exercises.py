"""Exercise checkers of chapter 05 (DeepSeekMoE routing; exercises 5.1–5.4).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a hint, a ✗ diagnosis, or ✓.
Expected values are computed (from :class:`~dsv3_lessons.model.moe.Gate`, the V3 config, closed-form
arithmetic), never typed in.
"""
from __future__ import annotations

import torch

from dsv3_lessons.course.common.checking import (Wrong, is_placeholder, as_bool, as_number, checker, close,
                                                 call_learner)

__all__ = ["check_group_mask", "check_activated_params", "check_experts_reachable", "check_weight_unchanged"]




def _gate_mask(biased: torch.Tensor, n_group: int, topk_group: int) -> torch.Tensor:
    """The library's mask for ``biased [n, N_r]`` (the oracle)."""
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.moe import Gate

    n_r = biased.shape[1]
    cfg = tiny(n_routed_experts=n_r, n_group=n_group, topk_group=topk_group, num_experts_per_tok=1)
    return Gate(cfg).group_mask(biased)


def _cases() -> list[tuple[torch.Tensor, int, int]]:
    g = torch.Generator().manual_seed(5)
    cases = []
    for n_r, n_group, topk in ((8, 4, 2), (16, 4, 1), (32, 8, 4)):
        biased = torch.sigmoid(torch.randn(24, n_r, generator=g)) + 0.4 * torch.randn(n_r, generator=g) - 0.5
        cases.append((biased, n_group, topk))
    # a group with one huge score and one tiny one: top-1 (max) and top-2 sum disagree
    b = torch.tensor([[0.95, -0.9, 0.6, 0.6, 0.1, 0.1, 0.2, 0.2]])
    cases.append((b, 4, 1))
    return cases


def _max_mask(biased, n_group, topk):
    n = biased.shape[0]
    gs = biased.view(n, n_group, -1).max(-1).values
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, gs.topk(topk, dim=-1).indices, True)
    return keep.repeat_interleave(biased.shape[1] // n_group, dim=1)


@checker("5.1", hint="view the scores as [n, n_group, N_r/n_group], sum each group's topk(2) values, keep the "
                     "topk_group best groups (scatter True into a [n, n_group] bool), then repeat_interleave "
                     "back to [n, N_r]")
def check_group_mask(group_mask_fn) -> str:
    """Exercise 5.1: the learner's ``group_mask(biased [n, N_r], n_group, topk_group) -> bool [n, N_r]``.

    Compared with :meth:`Gate.group_mask` on random biased scores (negative values included) and on a case
    where the group's max and its top-2 sum pick different groups.
    """
    if not callable(group_mask_fn):
        raise Wrong(f"pass your function itself (group_mask), got {type(group_mask_fn).__name__}")
    for biased, n_group, topk in _cases():
        got = call_learner(group_mask_fn, biased.clone(), n_group, topk)
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"group_mask must return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(biased.shape):
            raise Wrong(f"the mask must have the scores' shape [n, N_r] = {tuple(biased.shape)}, got "
                        f"{tuple(got.shape)}; one entry per expert (repeat each group's flag N_r/n_group times)")
        if got.dtype != torch.bool:
            raise Wrong(f"return a bool mask (True = expert may be chosen), got dtype {got.dtype}")
        want = _gate_mask(biased, n_group, topk)
        if torch.equal(got, want):
            continue
        if torch.equal(got, ~want):
            raise Wrong("your mask is inverted: True must mark the experts of the KEPT groups")
        if torch.equal(got, _max_mask(biased, n_group, topk)):
            raise Wrong("you scored each group by its single best expert (max); V3 sums the two largest "
                        "biased scores of the group")
        per_token = got.sum(-1)
        if not torch.all(per_token == topk * biased.shape[1] // n_group):
            raise Wrong(f"each token must keep exactly topk_group·N_r/n_group = {topk * biased.shape[1] // n_group} "
                        f"experts; yours keeps {sorted(set(per_token.tolist()))}")
        raise Wrong(f"your mask keeps other groups than Gate.group_mask (n_group={n_group}, "
                    f"topk_group={topk}); check which dimension you take topk over")
    return "your mask equals Gate.group_mask on every test case, negative scores included."


@checker("5.2", hint="one token runs through K_r routed experts and N_s shared experts; each expert is a "
                     "SwiGLU with three d × w matrices (gate_proj, up_proj, down_proj)")
def check_activated_params(answer) -> str:
    """Exercise 5.2: expert parameters ONE token activates in one V3 MoE layer (gate excluded)."""
    from dsv3_lessons.model.config import deepseek_v3_671b

    cfg = deepseek_v3_671b()
    d, w = cfg.hidden_size, cfg.moe_intermediate_size
    expert = 3 * d * w
    right = (cfg.num_experts_per_tok + cfg.n_shared_experts) * expert
    x = as_number(answer, "the answer (parameters)")
    if x == right:
        return (f"{right:,} parameters = 9 experts × {expert:,} -- exactly the dense layers' FFN "
                f"(3 · {d} · {cfg.intermediate_size}): equal activated compute.")
    if x == cfg.num_experts_per_tok * expert:
        raise Wrong("that counts the routed experts only: the shared expert runs for every token too")
    if x == (cfg.num_experts_per_tok + cfg.n_shared_experts) * 2 * d * w:
        raise Wrong("a SwiGLU expert has THREE matrices (gate_proj, up_proj, down_proj), not two")
    if x == (cfg.n_routed_experts + cfg.n_shared_experts) * expert:
        raise Wrong("that is every expert of the layer (what is stored), not what one token activates")
    raise Wrong(f"not right: (K_r + N_s) · 3 · d · moe_intermediate_size with d = {d}, w = {w}")


@checker("5.3", hint="one transfer over InfiniBand per node; while it lasts NVLink moves (NVLink/IB) times as "
                     "much inside the node, i.e. feeds that many experts for free; multiply by the nodes")
def check_experts_reachable(answer, nodes: int = 3, ratio: float = 4.0) -> str:
    """Exercise 5.3: experts per token at the cost of one IB transfer per node, for ``nodes`` nodes and an
    NVLink/IB bandwidth ratio ``ratio`` (the notebook asks M = 3, ratio 4)."""
    right = nodes * ratio
    x = as_number(answer, "the answer (experts per token)")
    if close(x, right, rel=1e-3):
        return f"{nodes} nodes × {ratio:g} experts per node = {right:g} experts per token at the same IB cost."
    if close(x, ratio, rel=1e-3):
        raise Wrong("that is experts per NODE; a token may reach several nodes")
    if close(x, 4 * 3.2, rel=1e-3) or round(x) == 13:
        raise Wrong("that is V3's case (4 nodes, 160/50 = 3.2); use this exercise's numbers")
    if close(x, nodes + ratio, rel=1e-3):
        raise Wrong("the per-node experts add up over nodes: multiply, do not add")
    raise Wrong("not right: nodes × (NVLink bandwidth / IB bandwidth)")


@checker("5.4", hint="which scores make the combine weights: the biased s_i + b_i, or the unbiased s_i?")
def check_weight_unchanged(answer) -> str:
    """Exercise 5.4: raising the bias of an expert that was already chosen (and the other chosen expert
    stays chosen) leaves its combine weight unchanged -> True."""
    x = as_bool(answer, "the answer")
    if x:
        return ("the weights use the unbiased affinities s_i of the chosen experts: the bias only decides WHO "
                "is chosen. (Change the chosen SET and the weights change, because the normaliser does.)")
    raise Wrong("the bias b_i enters only the selection (top-K over s_i + b_i); the combine weight "
                "g_i = s_i / Σ_chosen s_j · scale does not contain b_i")
