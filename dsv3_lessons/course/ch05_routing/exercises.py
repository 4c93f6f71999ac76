"""Exercise checkers of chapter 05 (DeepSeekMoE routing; exercises 5.1–5.5).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a nudge (never the formula),
a ✗ diagnosis that points to ``hint("5.N")``, or ✓. Expected values are computed (from
:class:`~dsv3_lessons.model.moe.Gate` / :class:`~dsv3_lessons.model.moe.DeepseekMoE`, the stored routing snapshot,
the V3 config, closed-form arithmetic), never typed in.

* 5.1 (predict, then run) -- how often the group limit changes the chosen experts in the tiny model under the
  paper's K_r/M rule (always 0 when K_r = M), predicted before the chapter measures it.
* 5.2 (variation, code) -- the group mask for general K_r/M (the chapter wrote V3's case, K_r/M = 2).
* 5.3 (bug hunt, code) -- the MoE layer output (eq. 12) with ``routed_scaling_factor`` applied twice (SPEC §9).
* 5.4 (explain with a number) -- the smallest extra bias that gets a given expert chosen for a given token: the
  group limit and the K_r-th best score both decide.
* 5.5 (explain with a number) -- experts per token at the same communication cost for another cluster.
"""
from __future__ import annotations

import inspect

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, close, hint

__all__ = ["check_limit_prediction", "check_group_mask", "check_moe_output", "check_bias_threshold",
           "check_experts_reachable", "MOE_OUTPUT_WITH_BUG", "THRESHOLD_TOKEN", "hint"]


def _snapshot():
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot

    return load_snapshot()


def _unchanged(fn, given: str) -> bool:
    """True when ``fn``'s source is the bug hunt's code as given (trailing spaces aside)."""
    norm = lambda s: "\n".join(line.rstrip() for line in s.strip().splitlines())  # noqa: E731
    try:
        return norm(inspect.getsource(fn)) == norm(given)
    except (OSError, TypeError):
        return False


# ---------------------------------------------------------------------------------------------- 5.1
@checker("5.1", hint="write your guess before the next cell measures it. With one best expert per group and as many "
                     "kept groups as chosen experts, where can the K_r best experts of the whole layer lie?",
         more=["take the K_r experts with the highest biased scores overall; how many groups can they occupy at most?",
               "each of those groups contains one of them, so its best score is at least the K_r-th best score",
               "can a group with none of them have a higher best score than that?"])
def check_limit_prediction(percent):
    """Exercise 5.1 (predict, then run): the share of tokens (in %) whose chosen experts the group limit changes in
    the tiny model when groups are scored by their K_r/M best expert, compared with no limit. Measured on the
    stored snapshot (both MoE layers); it is 0 whenever K_r = M."""
    from dsv3_lessons.course.ch05_routing.routing import limit_changes, snapshot_config

    x = as_number(percent, "your prediction (a percentage, 0 to 100)")
    snap = _snapshot()
    cfg = snapshot_config(snap)
    k_over_m = cfg.num_experts_per_tok // cfg.topk_group
    paper = [100 * limit_changes(snap, layer, k_over_m) for layer in range(len(snap["layer_names"]))]
    code = [100 * limit_changes(snap, layer, 2) for layer in range(len(snap["layer_names"]))]
    right = max(paper)
    why = (f"with K_r = M = {cfg.topk_group}, the K_r best experts lie in at most M groups, and each of those groups "
           f"has a best score at least the K_r-th best overall, above the best of every other group: the M groups "
           f"with the highest maxima always contain the K_r best experts, so the limit never binds")
    if abs(x - right) < 0.5:
        return (f"{right:.1f} % in both layers: {why}. The official code's top-2 sum changed "
                f"{code[0]:.1f} % / {code[1]:.1f} %: in the tiny model the limit binds only because of the "
                f"hard-coded 2.")
    if x < 0 or x > 100:
        raise Wrong(f"{x:g} is not a percentage between 0 and 100")
    if any(abs(x - c) < 3 for c in code) or abs(x - sum(code) / len(code)) < 3:
        raise Wrong(f"you predicted {x:g} %, about what the official code's top-2 sum gives ({code[0]:.1f} % / "
                    f"{code[1]:.1f} %). The question is the paper's rule, K_r/M = 1 best per group here: it is "
                    f"{right:.1f} %, because {why}")
    raise Wrong(f"you predicted {x:g} %; the measurement is {right:.1f} % in both layers, and it could not be "
                f"otherwise: {why}")


# ---------------------------------------------------------------------------------------------- 5.2
_CASES = ((8, 4, 2, 2), (16, 4, 2, 4), (24, 4, 2, 6), (64, 8, 2, 8), (32, 8, 4, 8), (32, 4, 2, 2),
          (48, 6, 3, 6))                                                        # N_r, G, M, K_r


def _cases() -> list[tuple[torch.Tensor, int, int, int]]:
    g = torch.Generator().manual_seed(5)
    out = []
    for n_r, n_group, m, k in _CASES:
        biased = torch.sigmoid(torch.randn(32, n_r, generator=g)) + 0.4 * torch.randn(n_r, generator=g) - 0.5
        out.append((biased, n_group, m, k))
    return out


def _mask_from_scores(scores: torch.Tensor, n_r: int, topk_group: int, interleave: bool = True) -> torch.Tensor:
    n, n_group = scores.shape
    keep = torch.zeros(n, n_group, dtype=torch.bool).scatter_(1, scores.topk(topk_group, dim=-1).indices, True)
    per = n_r // n_group
    return keep.repeat_interleave(per, dim=1) if interleave else keep.repeat(1, per)


def _wrong_masks(biased, n_group, m, k) -> list[tuple[torch.Tensor, str]]:
    """The typical mistakes, each as the mask it gives, with the diagnosis."""
    n, n_r = biased.shape
    grouped = biased.view(n, n_group, -1)
    per, k_over_m = n_r // n_group, k // m
    best = lambda j: grouped.topk(min(j, per), dim=-1).values.sum(-1)  # noqa: E731
    right_scores = best(k_over_m)
    return [
        (_mask_from_scores(right_scores, n_r, m, interleave=False),
         "your group flags come out tiled [g0, g1, g2, …, g0, g1, g2, …] (`repeat`): expert e belongs to group "
         "e // (N_r / n_group), so each group's flag must be repeated N_r / n_group times in a row "
         "(`repeat_interleave`)"),
        (_mask_from_scores(best(2), n_r, m),
         "you kept V3's hard-coded 2 (the official code's topk(2)); the rule sums the K_r/M best of each group, "
         "and K_r/M is 2 only for V3's 8/4"),
        (_mask_from_scores(best(1), n_r, m),
         "you scored each group by its single best expert (max): that is the K_r/M = 1 case (V2's device-limited "
         "rule, and the tiny config), right only when top_k == topk_group"),
        (_mask_from_scores(grouped.sum(-1), n_r, m),
         "you summed the whole group; the rule sums only its K_r/M best scores (the two coincide only when a group "
         "holds exactly K_r/M experts, as in the tiny config)"),
        (_mask_from_scores(grouped.topk(min(m, per), dim=-1).values.sum(-1), n_r, m),
         "you summed the topk_group (M) best of each group; the count per group is K_r/M = top_k // topk_group"),
        (_mask_from_scores(grouped.topk(min(k, per), dim=-1).values.sum(-1), n_r, m),
         "you summed the top_k (K_r) best of each group; the count per group is K_r/M = top_k // topk_group"),
        (~_mask_from_scores(right_scores, n_r, m),
         "your mask is inverted: True must mark the experts of the KEPT groups"),
    ]


@checker("5.2", hint="the chapter scored a group by its 2 best scores because V3 has K_r = 8 and M = 4. What "
                     "does the paper's rule give for other K_r and M?",
         more=["V3 §2.1.2: a node (group) is scored by the sum of its highest K_r/M affinity scores",
               "view the scores as [n, n_group, N_r/n_group]; take the K_r/M largest of each group and sum them",
               "the kept groups' flags must come back in expert order: group g owns experts g·(N_r/n_group) … "
               "(g+1)·(N_r/n_group) − 1"])
def check_group_mask(group_mask_fn) -> str:
    """Exercise 5.2 (variation): the learner's ``group_mask(biased [n, N_r], n_group, topk_group, top_k) -> bool``
    for any K_r/M, against :func:`~dsv3_lessons.course.ch05_routing.routing.paper_group_mask` on random biased
    scores (negative values included) with K_r/M = 1, 2, 3 and 4.

    A wrong mask is diagnosed by the typical mistake that reproduces it on EVERY test case (several mistakes
    coincide on some cases -- with 2 experts per group "top 2" is "the whole group" -- never on all of them)."""
    from dsv3_lessons.course.ch05_routing.routing import paper_group_mask

    if not callable(group_mask_fn):
        raise Wrong(f"pass your function itself (group_mask), got {type(group_mask_fn).__name__}")
    cases, answers = _cases(), []
    for biased, n_group, m, k in cases:
        got = call_learner(group_mask_fn, biased.clone(), n_group, m, k)
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"group_mask must return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(biased.shape):
            raise Wrong(f"the mask must have the scores' shape [n, N_r] = {tuple(biased.shape)}, got "
                        f"{tuple(got.shape)}: one entry per expert")
        if got.dtype != torch.bool:
            raise Wrong(f"return a bool mask (True = expert may be chosen), got dtype {got.dtype}")
        answers.append(got)
    wants = [paper_group_mask(*case) for case in cases]
    if all(torch.equal(a, w) for a, w in zip(answers, wants)):
        return ("your mask equals the paper's rule for K_r/M = 1, 2, 3 and 4. For V3 (8/4) it is the official "
                "code's top-2 sum; for the tiny model (2/2) it is the max, under which the limit never changes "
                "the choice.")
    mistakes = [_wrong_masks(*case) for case in cases]               # per case: [(mask, message), …]
    for j, (_, message) in enumerate(mistakes[0]):
        if all(torch.equal(a, per_case[j][0]) for a, per_case in zip(answers, mistakes)):
            raise Wrong(message)
    i = next(i for i, (a, w) in enumerate(zip(answers, wants)) if not torch.equal(a, w))
    biased, n_group, m, k = cases[i]
    case = f"(N_r = {biased.shape[1]}, n_group = {n_group}, topk_group = {m}, top_k = {k}, K_r/M = {k // m})"
    per_token = answers[i].sum(-1)
    if not torch.all(per_token == m * biased.shape[1] // n_group):
        raise Wrong(f"each token must keep exactly topk_group·N_r/n_group = {m * biased.shape[1] // n_group} "
                    f"experts {case}; yours keeps {sorted(set(per_token.tolist()))}")
    raise Wrong(f"your mask keeps other groups than the rule {case}; check which dimension you take topk over")


# ---------------------------------------------------------------------------------------------- 5.3
#: the function of exercise 5.3 as the notebook shows it, with its bug (the tests run this very text)
MOE_OUTPUT_WITH_BUG = '''def moe_output(moe, u):
    """V3 eq. 12 for tokens u [n, d]: u + the shared expert + the routed experts' weighted sum -> [n, d]."""
    gate, scale = moe.gate, moe.gate.routed_scaling_factor
    s = torch.sigmoid(u @ gate.weight.T)                                   # affinities [n, N_r]
    biased = s + gate.e_score_correction_bias                              # for selection only
    idx = biased.masked_fill(~gate.group_mask(biased), float("-inf")).topk(gate.top_k, dim=-1).indices
    g = s.gather(1, idx)                                                   # unbiased, [n, K_r]
    g = g / g.sum(-1, keepdim=True) * scale                                # normalised, scaled
    out = u + moe.shared_experts(u)
    for k in range(idx.shape[1]):                                          # slot k of every token
        for e in idx[:, k].unique().tolist():
            rows = idx[:, k] == e
            out[rows] += scale * g[rows, k, None] * moe.experts[e](u[rows])
    return out
'''

_HINT_53 = ("it runs and its shapes are right, but its output is not the layer's. Compare what each line does with "
            "eqs. 12–16 and with section 3's five steps, one step at a time.")


def _trial_moes():
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.moe import DeepseekMoE

    out = []
    for seed, overrides in ((1, {}), (2, dict(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4))):
        torch.manual_seed(seed)
        moe = DeepseekMoE(tiny(**overrides), impl="loop").eval()
        with torch.no_grad():
            # a bias that pushes most biased scores below 0 (a bias only shifts them): it must not weigh,
            # and masked groups filled with 0 would then be chosen
            moe.gate.e_score_correction_bias.normal_(-0.9, 0.3)
        out.append(moe)
    return out


@torch.no_grad()
def _eq12_variant(moe, u: torch.Tensor, weights_from_biased: bool = False, fill: float = float("-inf")):
    """u + shared + Σ g·FFN with one typical mistake: weights from the biased scores, or masked groups filled
    with ``fill`` instead of −inf (the diagnoses of 5.3)."""
    gate, scale = moe.gate, moe.gate.routed_scaling_factor
    s = torch.sigmoid(u @ gate.weight.T)
    biased = s + gate.e_score_correction_bias
    idx = biased.masked_fill(~gate.group_mask(biased), fill).topk(gate.top_k, dim=-1).indices
    g = (biased if weights_from_biased else s).gather(1, idx)
    g = g / g.sum(-1, keepdim=True) * scale
    out = u + moe.shared_experts(u)
    for slot in range(idx.shape[1]):
        for e in idx[:, slot].unique().tolist():
            rows = idx[:, slot] == e
            out[rows] = out[rows] + g[rows, slot, None] * moe.experts[e](u[rows])
    return out


@checker("5.3", hint=_HINT_53,
         more=["the library's DeepseekMoE on the same u is the reference: u + moe(u) (the block adds u)",
               "compare the routed part alone: by which factor does it differ from the library's?",
               "count how many times routed_scaling_factor multiplies a routed expert's output"])
def check_moe_output(moe_output_fn) -> str:
    """Exercise 5.3 (bug hunt): the learner's fixed ``moe_output(moe, u [n, d]) -> [n, d]`` against
    ``u + DeepseekMoE(u)`` on two random layers with a non-zero bias; names what is still wrong."""
    if not callable(moe_output_fn):
        raise Wrong(f"pass your function itself (moe_output), got {type(moe_output_fn).__name__}")
    g = torch.Generator().manual_seed(7)
    for moe in _trial_moes():
        u = torch.randn(40, moe.cfg.hidden_size, generator=g)
        with torch.no_grad():
            got = call_learner(moe_output_fn, moe, u.clone())
            ref = u + moe(u[None])[0]
            shared = moe.shared_experts(u)
            routed = ref - u - shared
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(u.shape):
            raise Wrong(f"moe_output must return a tensor shaped like u, {tuple(u.shape)}, got "
                        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        got = got.detach().float()
        tol = dict(atol=1e-5, rtol=1e-4)
        if torch.allclose(got, ref, **tol):
            continue
        scale = moe.gate.routed_scaling_factor
        if _unchanged(moe_output_fn, MOE_OUTPUT_WITH_BUG):
            raise Wrong(f"this is the function as given: its output differs from u + DeepseekMoE(u). Find the "
                        f"line and fix it. Nudge: {_HINT_53}")
        diagnoses = [
            (u + shared + scale * routed, f"the routed experts' sum is {scale:g}× the library's: "
                                          f"routed_scaling_factor is applied twice (once is right)"),
            (u + shared + routed / scale, f"the routed experts' sum is 1/{scale:g} of the library's: "
                                          f"routed_scaling_factor must be applied once"),
            (shared + routed, "the residual u is missing: eq. 12's output is u + Σ shared + Σ g·FFN"),
            (u + routed, "the shared expert is missing: every token runs through it"),
            (u + shared + routed + u, "u is added twice"),
        ]
        for want, message in diagnoses:
            if torch.allclose(got, want, **tol):
                raise Wrong(message)
        if torch.allclose(got, _eq12_variant(moe, u, weights_from_biased=True), **tol):
            raise Wrong("the weights now come from the biased scores s + b: the bias chooses, it never weighs")
        if torch.allclose(got, _eq12_variant(moe, u, fill=0.0), **tol):
            raise Wrong("the masked groups are filled with 0: a biased score below 0 then loses to a masked expert, "
                        "and the token reaches a group (a node) it was not allowed to; fill with −inf")
        raise Wrong(f"the output differs from u + DeepseekMoE(u) by up to {float((got - ref).abs().max()):.3g}; "
                    f"the bug is one line and the rest was right: compare your change with the original")
    return ("equal to u + DeepseekMoE(u) on two layers whose bias pushes the biased scores below 0. The bug (SPEC §9, scaling factor "
            "applied twice) only scales the routed part by 2.5: nothing crashes and the model still trains, which "
            "is why it survives in public code; a test against a reference layer catches it at once.")


# ---------------------------------------------------------------------------------------------- 5.4
#: the token and expert of exercise 5.4: (passage, position, MoE layer, expert) -- section 4's character
THRESHOLD_TOKEN = (0, 10, 0, 3)


@checker("5.4", hint="raising b_3 lifts two things: expert 3's own biased score and its group's score. What must "
                     "each of them overtake?",
         more=["first the group: expert 3's group must become one of the topk_group kept groups",
               "then the expert: among the experts of the kept groups, its biased score must reach the top K_r",
               "once expert 3's group is kept, which group drops out, and which experts are left to beat?"])
def check_bias_threshold(answer) -> str:
    """Exercise 5.4 (explain with a number): the smallest Δb on expert 3 that gets it chosen for section 4's
    character (first MoE layer), to 2 decimals (the explorer's slider step). Computed by bisection on the
    stored snapshot (:func:`~dsv3_lessons.course.ch05_routing.routing.bias_threshold`)."""
    from dsv3_lessons.course.ch05_routing.routing import bias_threshold, snapshot_config
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    x = as_number(answer, "Δb")
    snap = _snapshot()
    passage, position, layer, expert = THRESHOLD_TOKEN
    right = bias_threshold(snap, passage, position, layer, expert)
    cfg = snapshot_config(snap)
    per = cfg.n_routed_experts // cfg.n_group
    r = explore_route(snap, passage, position, layer)
    b = r.biased
    if right - 0.006 <= x <= right + 0.011:
        return (f"Δb ≈ {right:.3f}: first expert {expert}'s group must pass the weakest kept group (from Δb ≈ "
                f"{float(sorted(r.group_scores.tolist())[-cfg.topk_group]) - float(r.group_scores[expert // per]):.3f}); "
                f"it then pushes the group of e{r.chosen[-1]} out, so expert {expert} only has to pass the "
                f"K_r-th best (K_r = {cfg.num_experts_per_tok}) of the experts left in the kept groups. The group limit made "
                f"it EASIER here: without it expert {expert} would have to beat e{r.chosen[-1]}.")
    group_gap = float(sorted(r.group_scores.tolist())[-cfg.topk_group]) - float(r.group_scores[expert // per])
    free = explore_route(snap, passage, position, layer, topk_group=cfg.n_group)
    beat_free = float(b[free.chosen[-1]] - b[expert]) if free.chosen else float("nan")
    beat_best = float(b.max() - b[expert])
    wrong = [
        (group_gap, "that gets expert 3's GROUP kept, but the expert itself must then also reach the top K_r among "
                    "the kept groups' experts"),
        (beat_free, "that is the threshold without a group limit (beating every expert of every group); with the "
                    "limit, expert 3's rising group pushes another group out, so fewer rivals are left"),
        (beat_best, "that beats the best expert; it only has to reach the top K_r = 2 of what is allowed"),
    ]
    for value, message in wrong:
        if abs(x - value) <= 0.011:
            raise Wrong(f"Δb = {x:g}: {message}.")
    if x < right:
        raise Wrong(f"at Δb = {x:g} expert {expert} is still not chosen; move the explorer's Δb on expert {expert} "
                    f"and watch the group scores and the chosen experts")
    raise Wrong(f"expert {expert} is chosen at Δb = {x:g}, but already at a smaller Δb; find the smallest "
                f"(to 2 decimals)")


# ---------------------------------------------------------------------------------------------- 5.5
@checker("5.5", hint="what does one InfiniBand transfer to a node buy, once the data is inside the node?",
         more=["a token's activations cross IB once per destination node",
               "while that transfer lasts, NVLink inside the node can forward the data several times over",
               "section 7 did this for V3's numbers; redo it with this cluster's"])
def check_experts_reachable(answer, nodes: int = 3, ratio: float = 4.0) -> str:
    """Exercise 5.5: experts per token at the cost of one IB transfer per node, for ``nodes`` nodes and an
    NVLink/IB bandwidth ratio ``ratio`` (the notebook asks M = 3, ratio 4)."""
    right = nodes * ratio
    x = as_number(answer, "the answer (experts per token)")
    if close(x, right, rel=1e-3):
        return (f"{nodes} nodes × {ratio:g} experts per node = {right:g} experts per token at the same IB cost. "
                f"The transcript's '3.2' is this per-node number for V3's 160/50, not experts per token.")
    if close(x, ratio, rel=1e-3):
        raise Wrong("that is experts per NODE; a token may reach several nodes")
    if close(x, 4 * 3.2, rel=1e-3) or round(x) == 13:
        raise Wrong("that is V3's case (4 nodes, 160/50 = 3.2); use this exercise's numbers")
    if close(x, nodes + ratio, rel=1e-3):
        raise Wrong("the per-node experts add up over nodes: multiply, do not add")
    if close(x, nodes / ratio, rel=1e-3) or close(x, ratio / nodes, rel=1e-3):
        raise Wrong("one of the two numbers is divided where the per-node counts should add up over the nodes")
    raise Wrong(f"{x:g} is not right: count what one IB transfer to a node buys inside it, then over the nodes")
