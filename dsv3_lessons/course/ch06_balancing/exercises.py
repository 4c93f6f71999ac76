"""Exercise checkers of chapter 06 (load balancing and node-limited dispatch; exercises 6.1–6.4).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a hint, a ✗ diagnosis, or ✓.
The oracle for 6.1 is the sign rule of LF paper Alg. 1 (arXiv 2408.15664) as implemented by
:func:`dsv3_lessons.model.moe.update_bias`; 6.2–6.4 are closed-form arithmetic.
"""
from __future__ import annotations

import torch

from dsv3_lessons.course.common.checking import Wrong, is_placeholder, as_number, checker, close, call_learner

__all__ = ["check_update_bias", "check_max_violation", "check_f_i", "check_remote_rows"]




def _library_update(bias: torch.Tensor, counts: torch.Tensor, gamma: float) -> torch.Tensor:
    """The library's update on a one-layer model (the oracle for 6.1)."""
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.moe import DeepseekMoE, update_bias

    cfg = tiny(n_routed_experts=bias.numel(), n_group=1, topk_group=1, num_experts_per_tok=1)
    layer = DeepseekMoE(cfg)
    layer.gate.e_score_correction_bias.copy_(bias)
    layer.counts_since_update.copy_(counts.float())
    update_bias(layer, gamma)
    return layer.gate.e_score_correction_bias.clone()


@checker("6.1", hint="mean(counts) − counts is positive for under-loaded experts; take its sign, multiply by "
                     "gamma and ADD it to bias in place (bias += ... or bias.add_(...)), no return value needed")
def check_update_bias(update_fn) -> str:
    """Exercise 6.1: the learner's ``update_bias(bias [N_r] float32, counts [N_r], gamma)``, in place."""
    if not callable(update_fn):
        raise Wrong(f"pass your function itself (update_bias), got {type(update_fn).__name__}")
    g = torch.Generator().manual_seed(6)
    for n_r, gamma in ((8, 0.01), (16, 0.001)):
        bias = (torch.randn(n_r, generator=g) * 0.05).float()
        counts = torch.randint(0, 200, (n_r,), generator=g).float()
        counts[0] = counts.mean().round()  # an expert at (nearly) the mean
        want = _library_update(bias, counts, gamma)
        mine = bias.clone()
        ptr = mine.data_ptr()
        returned = call_learner(update_fn, mine, counts.clone(), gamma)
        if returned is not None and isinstance(returned, torch.Tensor) and torch.allclose(mine, bias) \
                and not torch.allclose(returned, bias):
            raise Wrong("you returned a new tensor and left `bias` unchanged: the model keeps the buffer it "
                        "registered, so a replaced tensor never reaches the gate (and a checkpoint would keep the "
                        "old values). Update it in place: bias += ...")
        if mine.data_ptr() != ptr:
            raise Wrong("the bias buffer was replaced, not updated in place")
        if mine.dtype != torch.float32:
            raise Wrong(f"the bias must stay float32 (got {mine.dtype}): in bf16 a step of γ = 0.001 on a bias "
                        f"near 1 rounds away")
        if torch.allclose(mine, want, atol=1e-7):
            continue
        if torch.allclose(mine, 2 * bias - want, atol=1e-7):
            raise Wrong("wrong sign: over-loaded experts (counts above the mean) must go DOWN")
        if torch.allclose(mine, bias + gamma * (counts.mean() - counts), atol=1e-6):
            raise Wrong("you moved the bias in proportion to mean − counts; the rule uses only the SIGN of it, "
                        "so every expert moves by exactly ±γ (or 0)")
        if torch.allclose(mine, bias - gamma * (counts - counts.mean()) / counts.mean(), atol=1e-7):
            raise Wrong("use the sign of (mean − counts), not a normalised difference")
        raise Wrong("not the rule b_i ← b_i + γ·sign(mean(c) − c_i)")
    return "b_i ← b_i + γ·sign(mean(c) − c_i), in place, float32: the same as dsv3_lessons.model.moe.update_bias."


@checker("6.2", hint="MaxVio = (max_i load_i − mean load) / mean load")
def check_max_violation(answer, counts=(30, 10, 20, 20)) -> str:
    """Exercise 6.2: MaxVio of ``counts`` (the notebook's [30, 10, 20, 20])."""
    c = torch.tensor(counts, dtype=torch.float64)
    mean, hi, lo = float(c.mean()), float(c.max()), float(c.min())
    right = (hi - mean) / mean
    x = as_number(answer, "the answer")
    if close(x, right, rel=1e-3):
        return f"({hi:g} − {mean:g}) / {mean:g} = {right:g}: the busiest expert gets {100 * right:.0f} % more than its share."
    if close(x, hi / mean, rel=1e-3):
        raise Wrong("that is max/mean; MaxVio subtracts the mean first: (max − mean)/mean")
    if close(x, (hi - lo) / mean, rel=1e-3):
        raise Wrong("that uses the spread max − min; MaxVio compares the maximum with the MEAN")
    if close(x, hi - mean, rel=1e-3):
        raise Wrong("divide by the mean load: MaxVio is relative")
    raise Wrong("not right: (max − mean) / mean")


@checker("6.3", hint="f_i = N_r / (K_r · T) × (tokens of the sequence routed to expert i)")
def check_f_i(answer, n_routed: int = 8, top_k: int = 2, seq_len: int = 64, tokens: int = 12) -> str:
    """Exercise 6.3: f_i of V3 eq. 18 for ``tokens`` of a ``seq_len`` sequence routed to expert i."""
    right = n_routed / (top_k * seq_len) * tokens
    x = as_number(answer, "f_i")
    if close(x, right, rel=1e-4):
        return (f"f_i = {n_routed}/({top_k}·{seq_len})·{tokens} = {right:g}; uniform routing would give 1 for every "
                f"expert, so this expert is under-loaded.")
    if close(x, tokens / seq_len, rel=1e-4):
        raise Wrong("that is the fraction of tokens; f_i is scaled by N_r/K_r so that uniform routing gives 1")
    if close(x, n_routed * tokens / seq_len, rel=1e-4):
        raise Wrong("divide by K_r too: each token picks K_r experts")
    if close(x, tokens / (top_k * seq_len), rel=1e-4):
        raise Wrong("multiply by N_r: f_i = N_r/(K_r·T) × count")
    raise Wrong(f"not right: N_r/(K_r·T) × count with N_r={n_routed}, K_r={top_k}, T={seq_len}")


@checker("6.4", hint="a token travels once to each OTHER node that hosts at least one of its experts; the node "
                     "forwards it to its experts internally")
def check_remote_rows(answer, own: int = 0, expert_nodes=(0, 0, 1, 1, 1, 3, 3, 3)) -> str:
    """Exercise 6.4: rows a token on node ``own`` sends across process boundaries when its K_r experts live on
    ``expert_nodes`` (per-node de-duplication, as in :mod:`dsv3_lessons.tools.expert_parallel`)."""
    nodes = set(expert_nodes)
    right = len(nodes - {own})
    x = as_number(answer, "the answer (rows)")
    if x == right:
        return f"{right} rows: one to each other node among {sorted(nodes)}; the experts on node {own} need no transfer."
    if x == sum(n != own for n in expert_nodes):
        raise Wrong("that is one row per remote EXPERT; the dispatch sends a token once per node and the node "
                    "fans it out to its experts")
    if x == len(nodes):
        raise Wrong(f"the token's own node ({own}) needs no transfer: it is already there")
    if x == len(expert_nodes):
        raise Wrong("count nodes, not experts, and leave out the token's own node")
    raise Wrong("not right: count the distinct nodes other than the token's own")
