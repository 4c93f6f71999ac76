"""Exercise checkers of chapter 05 (DeepSeekMoE routing; exercises 5.1–5.5).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a nudge (never the formula),
a ✗ diagnosis that points to ``hint("5.N")``, or ✓. Expected values are computed (from
:class:`~dsv3_lessons.model.moe.Gate`, the stored routing snapshot, closed-form arithmetic), never typed in.

* 5.1 (predict, then run) -- how often the group limit changes the chosen experts in the tiny model under the
  paper's K_r/M rule (always 0 when K_r = M), predicted before the chapter measures it (its printout hidden until
  then, ``revealed``).
* 5.2 (variation, code) -- the paper's group mask when a TABLE places experts on groups (nodes): ids not
  consecutive, groups of different sizes (some smaller than K_r/M). The chapter's ``view(T, G, N_r // G)`` does
  not work as written.
* 5.3 (bug hunt, code) -- a routing function written as a fused MoE kernel would want it, whose group mask
  multiplies by a 0/1 flag: masked experts score 0, which beats negative biased scores (a mistake public
  implementations made: "masked groups filled with 0"). The author's test, a fresh gate (bias 0, every score
  positive), passes; the ✗ on the code as given states only the symptom.
* 5.4 (explain with a number) -- the smallest extra bias (to 3 decimals) that gets a given expert chosen for a
  given token: the group limit and the K_r-th best score both decide.
* 5.5 (explain with a number, two steps) -- for another cluster and K_r, the fewest nodes per token that keep the
  experts at one IB transfer per node, and then the paper's group score for that M.
"""
from __future__ import annotations

import math

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, close, hint, unchanged_source

__all__ = ["check_limit_prediction", "check_group_mask", "check_route", "check_bias_threshold",
           "check_cluster_design", "placed_group_mask", "route_reference", "ROUTE_WITH_BUG", "THRESHOLD_TOKEN",
           "CLUSTER", "cluster_design", "hint"]


def _snapshot():
    from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot

    return load_snapshot()


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
    if abs(x - right) < 0.05:
        return (f"{right:.1f} % in both layers: {why}. The official code's top-2 sum changed "
                f"{code[0]:.1f} % / {code[1]:.1f} %: in the tiny model the limit binds only because of the "
                f"hard-coded 2.")
    if x < 0 or x > 100:
        raise Wrong(f"{x:g} is not a percentage between 0 and 100")
    if 0 < x <= 1 and (any(abs(100 * x - c) < 3 for c in code) or abs(100 * x - sum(code) / len(code)) < 3):
        raise Wrong(f"{x:g} looks like a fraction: the answer is a percentage, and {100 * x:g} % is about what the "
                    f"official code's top-2 sum gives ({code[0]:.1f} % / {code[1]:.1f} %). The question is the "
                    f"paper's rule, K_r/M = 1 best per group here; think again about where the K_r best experts lie")
    if any(abs(x - c) < 3 for c in code) or abs(x - sum(code) / len(code)) < 3:
        raise Wrong(f"you predicted {x:g} %, about what the official code's top-2 sum gives ({code[0]:.1f} % / "
                    f"{code[1]:.1f} %). The question is the paper's rule, K_r/M = 1 best per group here: it is "
                    f"{right:.1f} %, because {why}")
    raise Wrong(f"you predicted {x:g} %; the measurement is {right:.1f} % in both layers, and it could not be "
                f"otherwise: {why}")


# ---------------------------------------------------------------------------------------------- 5.2
def placed_group_mask(biased: torch.Tensor, group_of: torch.Tensor, topk_group: int, top_k: int,
                      count: int | None = None, reduce: str = "sum", short: str = "all",
                      kept: str = "best") -> torch.Tensor:
    """V3 §2.1.2's node-limited rule for experts placed on groups by a table (exercise 5.2's answer).

    ``biased [n, N_r]``; ``group_of [N_r]`` the group (node) of every expert, 0 … G−1, every group non-empty. A
    group's score is the sum of its K_r/M largest biased scores (K_r = ``top_k``, M = ``topk_group``), or of all
    its scores when it holds fewer. Returns bool ``[n, N_r]``: True for the experts of the ``topk_group`` best
    groups. ``count``, ``reduce`` ("sum"/"mean") and ``short`` ("all"/"drop": a group smaller than the count
    scores −∞) and ``kept`` ("best"/"worst": which groups stay) give the typical mistakes the checker
    diagnoses.

    Raises ValueError if M does not divide K_r or a group is empty.
    """
    if topk_group < 1 or top_k % topk_group:
        raise ValueError(f"topk_group must divide top_k, got K_r={top_k}, M={topk_group}")
    n_groups = int(group_of.max()) + 1
    k = top_k // topk_group if count is None else count
    scores = []
    for g in range(n_groups):
        members = biased[:, group_of == g]
        if members.shape[1] == 0:
            raise ValueError(f"group {g} holds no expert")
        if short == "drop" and members.shape[1] < k:
            scores.append(torch.full((biased.shape[0],), float("-inf")))
            continue
        best = members.topk(min(k, members.shape[1]), dim=-1).values
        scores.append(best.sum(-1) if reduce == "sum" else best.mean(-1))
    scores = torch.stack(scores, dim=-1)
    chosen = scores.topk(topk_group, dim=-1, largest=kept == "best").indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, chosen, True)
    return keep[:, group_of]


#: (N_r, group sizes, M, K_r, consecutive ids?) of exercise 5.2's trials
_PLACEMENTS = ((8, (3, 3, 2), 2, 4, False), (12, (4, 5, 2, 1), 2, 6, False), (12, (2, 4, 3, 3), 3, 3, False),
               (16, (4, 4, 4, 4), 2, 8, False), (10, (3, 2, 4, 1), 4, 4, False), (6, (6,), 1, 2, False),
               (16, (4, 4, 4, 4), 2, 4, True), (9, (1, 3, 5), 1, 3, False))


def _placement_cases() -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    g = torch.Generator().manual_seed(52)
    cases = []
    for n_r, sizes, m, k, consecutive in _PLACEMENTS:
        group_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        if not consecutive:
            group_of = group_of[torch.randperm(n_r, generator=g)]
        biased = torch.sigmoid(torch.randn(24, n_r, generator=g)) + 0.4 * torch.randn(n_r, generator=g) - 0.6
        cases.append((biased, group_of, m, k))
    return cases


def _placement_mistakes(biased, group_of, m, k) -> list[tuple[torch.Tensor, str]]:
    """The typical mistakes, each as the mask it gives on one case, with the diagnosis."""
    sizes = torch.bincount(group_of)
    consecutive = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    # the kept groups right, their flags laid over consecutive ids (repeat_interleave of the sizes), not the table's
    as_blocks = placed_group_mask(biased[:, group_of.argsort(stable=True)], consecutive, m, k)
    per = k // m
    return [
        (as_blocks, "your flags assume each group's experts are consecutive ids (group 0 = the first experts, and "
                    "so on): expert e belongs to group group_of[e], wherever its id is. Index the groups' flags by "
                    "the table"),
        (placed_group_mask(biased, group_of, m, k, count=2), "you kept V3's hard-coded 2 (the official code's "
                                                             "topk(2)); the rule sums the K_r/M best of each group"),
        (placed_group_mask(biased, group_of, m, k, count=1), "you scored each group by its single best expert "
                                                             "(max); the rule sums its K_r/M best"),
        (placed_group_mask(biased, group_of, m, k, count=biased.shape[1]),
         "you summed the whole group; the rule sums only its K_r/M best scores (bigger groups would win just by "
         "holding more experts)"),
        (placed_group_mask(biased, group_of, m, k, count=m), "you summed the topk_group (M) best of each group; the "
                                                             "count per group is K_r/M = top_k // topk_group"),
        (placed_group_mask(biased, group_of, m, k, count=k), "you summed the top_k (K_r) best of each group; the "
                                                             "count per group is K_r/M = top_k // topk_group"),
        (placed_group_mask(biased, group_of, m, k, reduce="mean"), "you averaged each group's K_r/M best scores; the "
                                                                    "rule sums them (a group smaller than K_r/M "
                                                                    "then competes with the sum of what it has)"),
        (placed_group_mask(biased, group_of, m, k, short="drop"),
         f"a group holding fewer than K_r/M experts never wins in your mask (its score is −∞ or missing); the rule "
         f"scores it by the sum of all its experts"),
        (placed_group_mask(biased, group_of, m, k, kept="worst"),
         "your mask keeps the topk_group WORST-scoring groups (topk with largest=False, or an ascending sort): the "
         "rule keeps the groups with the highest scores"),
        (~placed_group_mask(biased, group_of, m, k), "your mask is inverted: True must mark the experts of the "
                                                     "KEPT groups"),
    ] if per >= 1 else []


@checker("5.2", hint="the chapter's view(T, G, N_r // G) put expert e in group e // (N_r/G). Here a table says where "
                     "each expert is: how do you gather a group's scores, and how do you turn the groups' flags back "
                     "into one flag per expert?",
         more=["a group's members are the experts e with group_of[e] == g: a boolean index over the last dimension "
               "of biased picks their scores, however many there are",
               "score each group (loop over the G groups, then stack); topk over the groups and a scatter give a "
               "[n, G] bool of kept groups",
               "an index tensor can repeat and reorder: indexing the [n, G] flags with group_of gives one flag per "
               "expert, in the experts' order; mind groups smaller than K_r/M"])
def check_group_mask(group_mask_fn) -> str:
    """Exercise 5.2 (variation): the learner's ``group_mask(biased [n, N_r], group_of [N_r], topk_group, top_k)
    -> bool [n, N_r]`` against :func:`placed_group_mask` on random tables: experts not consecutive, uneven groups
    (some smaller than K_r/M), K_r/M from 1 to 4, M = G and G = 1, and the chapter's consecutive layout.

    A wrong mask is diagnosed by the typical mistake that reproduces it on EVERY case (several mistakes coincide on
    some cases, never on all)."""
    if not callable(group_mask_fn):
        raise Wrong(f"pass your function itself (group_mask), got {type(group_mask_fn).__name__}")
    cases, answers = _placement_cases(), []
    for biased, group_of, m, k in cases:
        try:
            got = call_learner(group_mask_fn, biased.clone(), group_of.clone(), m, k)
        except RuntimeError as exc:
            text = str(exc)
            if any(w in text for w in ("view", "shape", "invalid for input of size")):
                raise Wrong(f"your function failed on groups of sizes {torch.bincount(group_of).tolist()} "
                            f"({type(exc).__name__}: {text[:100]}): groups here differ in size and their experts "
                            f"are not consecutive, so [n, G, N_r/G] views do not exist. Gather each group's "
                            f"scores through group_of") from None
            if "out of range" in text:
                raise Wrong(f"your function failed on groups of sizes {torch.bincount(group_of).tolist()} with "
                            f"K_r/M = {k // m} ({type(exc).__name__}: {text[:80]}): a group holding fewer "
                            f"experts than K_r/M is scored by all of them") from None
            raise
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"group_mask must return a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(biased.shape):
            raise Wrong(f"the mask must have the scores' shape [n, N_r] = {tuple(biased.shape)}, got "
                        f"{tuple(got.shape)}: one entry per expert")
        if got.dtype != torch.bool:
            raise Wrong(f"return a bool mask (True = expert may be chosen), got dtype {got.dtype}")
        answers.append(got)
    wants = [placed_group_mask(*case) for case in cases]
    if all(torch.equal(a, w) for a, w in zip(answers, wants)):
        return ("your mask equals the paper's rule on every table, uneven and shuffled groups included. Indexing the "
                "groups' flags with group_of is what a deployment does: the routing rule stays the same whatever "
                "the placement, only the bookkeeping from experts to nodes changes.")
    mistakes = [_placement_mistakes(*case) for case in cases]
    for j, (_, message) in enumerate(mistakes[0]):
        if all(torch.equal(a, per_case[j][0]) for a, per_case in zip(answers, mistakes)):
            raise Wrong(message)
    i = next(i for i, (a, w) in enumerate(zip(answers, wants)) if not torch.equal(a, w))
    biased, group_of, m, k = cases[i]
    sizes = torch.bincount(group_of)
    case = f"(group sizes {sizes.tolist()}, topk_group = {m}, top_k = {k}, K_r/M = {k // m})"
    per_token = answers[i].sum(-1)
    kept_sizes = sorted({int(s) for s in wants[i].sum(-1)})
    if all(int(t) not in kept_sizes for t in per_token) and len(set(per_token.tolist())) == 1 and \
            int(per_token[0]) == m * biased.shape[1] // len(sizes):
        raise Wrong(f"every token keeps exactly topk_group·N_r/G experts {case}, as if all groups were equal; "
                    f"here a token keeps the experts of its M groups, whatever their sizes")
    raise Wrong(f"your mask keeps other experts than the rule {case}, for {int((answers[i] != wants[i]).any(-1).sum())} "
                f"of {len(biased)} tokens; check the group scores (which experts, how many of them) and how the "
                f"kept groups' flags reach their experts")


# ---------------------------------------------------------------------------------------------- 5.3
#: the function of exercise 5.3 as the notebook shows it, with its bug (the tests run this very text)
ROUTE_WITH_BUG = '''def route(gate, u):
    """Group-limited routing as a fused MoE kernel takes it:
    (weights [n, K_r], expert ids [n, K_r])."""
    scores = torch.sigmoid(u.float() @ gate.weight.float().T)            # s_{i,t}, float32
    choice = scores + gate.e_score_correction_bias                        # chooses, never weighs
    per_group = choice.unflatten(-1, (gate.n_group, -1))                  # [n, G, N_r / G]
    best = per_group.topk(2, dim=-1).values.sum(-1).topk(gate.topk_group, dim=-1).indices
    keep = torch.zeros_like(per_group[..., 0]).scatter(1, best, 1.0)     # [n, G]: 1.0 = kept group
    ids = (per_group * keep[..., None]).flatten(1).topk(gate.top_k, dim=-1).indices
    w = scores.gather(1, ids)                                             # unbiased affinities
    return w / w.sum(-1, keepdim=True) * gate.routed_scaling_factor, ids
'''


@torch.no_grad()
def route_reference(gate, u: torch.Tensor, fill: float = float("-inf"), weights_from_biased: bool = False,
                    group_k: int = 2, scale_times: int = 1,
                    normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 5.3's function fixed (``fill`` −inf: it equals the library ``Gate``), or with one typical mistake:
    masked groups filled with ``fill`` (0 is the bug), weights from the biased scores, groups scored by their
    ``group_k`` best, the scaling factor applied ``scale_times`` times, the weights not ``normalise``d."""
    scores = torch.sigmoid(u.float() @ gate.weight.float().T)
    choice = scores + gate.e_score_correction_bias
    per_group = choice.unflatten(-1, (gate.n_group, -1))
    best = per_group.topk(group_k, dim=-1).values.sum(-1).topk(gate.topk_group, dim=-1).indices
    keep = torch.zeros_like(per_group[..., 0], dtype=torch.bool).scatter(1, best, True)
    ids = per_group.masked_fill(~keep[..., None], fill).flatten(1).topk(gate.top_k, dim=-1).indices
    w = (choice if weights_from_biased else scores).gather(1, ids)
    w = w / w.sum(-1, keepdim=True) if normalise else w
    return w * gate.routed_scaling_factor ** scale_times, ids


def _trial_gates():
    """Gates of two layouts with random centroids and a balancing bias that has moved (some biased scores below
    0, as an expert that stays overloaded drifts), one fresh gate (bias 0), and one whose bias sits near -1000
    (every biased score far below any small finite fill: -1 or -0.5 would pass on the others)."""
    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.moe import Gate

    out = []
    with torch.random.fork_rng(devices=[]):      # the learner's global random state is left as it was
        for seed, overrides, shift in ((1, {}, -0.8), (2, dict(n_routed_experts=16, n_group=4, topk_group=2,
                                                               num_experts_per_tok=4), -0.7), (3, {}, None),
                                       (4, {}, -1000.0)):   # far drifted: no finite fill of the dropped groups
            # at or above -1000 is beaten by every biased score; the right fill (−inf) still equals the Gate
            torch.manual_seed(seed)
            gate = Gate(tiny(**overrides)).eval()
            with torch.no_grad():
                gate.weight.normal_(0.0, 0.3)
                if shift is not None:
                    gate.e_score_correction_bias.normal_(shift, 0.3)
            out.append(gate)
    return out


@torch.no_grad()
def _lowest_biased(gate, u: torch.Tensor) -> float:
    """The lowest biased score s + b of any token of ``u`` and any expert of ``gate``."""
    return float((torch.sigmoid(u.float() @ gate.weight.float().T) + gate.e_score_correction_bias).min())


@torch.no_grad()
def _dropped_group_picks(gate, u: torch.Tensor, ids: torch.Tensor) -> int:
    """How many tokens of ``u`` have a chosen expert (``ids [n, K_r]``) in a group that V3's group limit drops
    (groups: consecutive blocks of N_r / n_group experts, scored by their 2 best biased scores)."""
    choice = torch.sigmoid(u.float() @ gate.weight.float().T) + gate.e_score_correction_bias
    per_group = choice.unflatten(-1, (gate.n_group, -1))
    best = per_group.topk(2, dim=-1).values.sum(-1).topk(gate.topk_group, dim=-1).indices
    keep = torch.zeros_like(per_group[..., 0], dtype=torch.bool).scatter(1, best, True)
    group = ids.clamp(0, choice.shape[1] - 1) // per_group.shape[-1]
    return int((~keep.gather(1, group)).any(-1).sum())


def _as_sets(w: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, ids) with each token's experts in increasing id order: the same routing in any slot order."""
    order = ids.argsort(dim=-1)
    return w.gather(1, order), ids.gather(1, order)


_HINT_53 = ("it passes its author's test, a fresh gate. What is special about a fresh gate's scores, and what "
            "changes in a gate that has trained for a while?")


@checker("5.3", hint=_HINT_53,
         more=["a fresh gate's balancing bias is 0, so every biased score s + b is a sigmoid: between 0 and 1",
               "after training, chapter 6's bias rule pushes an overloaded expert's b down, and s + b can fall "
               "below 0. Which line treats the experts of the dropped groups, and what value do they get there?",
               "section 3 says what the dropped groups' experts must get, and why"])
def check_route(route_fn) -> str:
    """Exercise 5.3 (bug hunt): the learner's fixed ``route(gate, u [n, d]) -> (weights [n, K_r], ids [n, K_r])``
    against the library ``Gate`` on gates whose bias has moved (and a fresh one). The code as given gets only the
    symptom; a function that routes like the given one gets "the bug is still there"; other edits their diagnosis.
    The experts of a token may come in any slot order, each with its weight."""
    if not callable(route_fn):
        raise Wrong(f"pass your function itself (route), got {type(route_fn).__name__}")
    g = torch.Generator().manual_seed(7)
    given, differs, tokens = unchanged_source(route_fn, ROUTE_WITH_BUG), 0, 0
    bug_like: list[float] = []      # lowest biased score of each gate on which the function routes as given
    for gate in _trial_gates():
        u = torch.randn(64, gate.weight.shape[1], generator=g)
        with torch.no_grad():
            got = call_learner(route_fn, gate, u.clone())
            w_lib, ids_lib, _ = gate(u)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(x, torch.Tensor) for x in got)):
            raise Wrong(f"route must return a pair of tensors (weights, expert ids), got {type(got).__name__}")
        w, ids = got
        if tuple(w.shape) != tuple(w_lib.shape) or tuple(ids.shape) != tuple(ids_lib.shape):
            raise Wrong(f"route must return weights and ids shaped [n, K_r] = {tuple(ids_lib.shape)}, got "
                        f"{tuple(w.shape)} and {tuple(ids.shape)}")
        w, ids = _as_sets(w.detach().float(), ids.long())
        want_w, want_ids = _as_sets(w_lib, ids_lib)
        same_ids = ids.eq(want_ids).all(-1)
        if bool(same_ids.all()) and torch.allclose(w, want_w, atol=1e-6, rtol=1e-5):
            continue
        bug_w, bug_ids = _as_sets(*route_reference(gate, u, fill=0.0))
        if given or (torch.equal(ids, bug_ids) and torch.allclose(w, bug_w, atol=1e-6, rtol=1e-5)):
            differs, tokens = differs + int((~same_ids).sum()), tokens + len(u)
            bug_like.append(_lowest_biased(gate, u))
            continue
        variants = [
            (dict(weights_from_biased=True), "the weights now come from the biased scores s + b: the bias "
                                             "chooses, it never weighs"),
            (dict(scale_times=2), "the weights sum to routed_scaling_factor² per token: the factor is applied twice"),
            (dict(scale_times=0), "the weights sum to 1 per token: routed_scaling_factor is missing"),
            (dict(normalise=False), "the weights are the chosen experts' s times the factor, not normalised: "
                                    "they must sum to routed_scaling_factor per token"),
            (dict(group_k=1), "the groups are now scored by their best expert (max); V3's rule, as the library "
                              "implements it, sums each group's 2 best"),
        ]
        for flags, message in variants:
            v_w, v_ids = _as_sets(*route_reference(gate, u, **flags))
            if torch.equal(ids, v_ids) and torch.allclose(w, v_w, atol=1e-6, rtol=1e-5):
                raise Wrong(message)
        in_dropped = _dropped_group_picks(gate, u, ids)
        if in_dropped:
            raise Wrong(f"your route still picks experts of groups the limit dropped, for {in_dropped} of {len(u)} "
                        f"tokens, on a gate whose biased scores go down to {_lowest_biased(gate, u):.0f}: the value "
                        f"the dropped "
                        f"groups get still beats some scores. Which value can no score beat?")
        if bool(same_ids.all()):
            raise Wrong(f"the right experts, but weights off by up to {float((w - want_w).abs().max()):.2g}: the "
                        f"weights are the chosen experts' unbiased s, normalised to sum to 1, times the factor")
        raise Wrong(f"your route chooses other experts than the library Gate for {int((~same_ids).sum())} of "
                    f"{len(u)} tokens, and not the ones the given function chose: compare your change with the "
                    f"original, one line at a time")
    if given:
        raise Wrong(f"this is the function as given: it passes its author's test (a fresh gate), but on gates that "
                    f"have trained for a while it chooses other experts than the library Gate for {differs} of "
                    f"{tokens} tokens. Find the line and fix it.")
    if differs and max(bug_like) < -100:      # right on the usual gates, wrong only on the far one
        raise Wrong(f"on a gate whose bias has drifted far (biased scores down to {min(bug_like):.0f}) your function "
                    f"still routes like the given one ({differs} of {tokens} tokens differ from the library): the "
                    f"value the dropped groups get is finite, and there every score lies below it. Which value can "
                    f"no score beat?")
    if differs:
        raise Wrong(f"your function still routes like the given one (other experts than the library for "
                    f"{differs} of {tokens} tokens): the bug is still there")
    return ("equal to the library Gate, on gates whose bias has moved (one far) and on a fresh one. Multiplying by "
            "the 0/1 keep flag fills the dropped groups with 0 -- and 0 beats every biased score below 0, so a token "
            "reached a group (a node) the limit had dropped. A fresh gate cannot show it: its bias is 0 and every "
            "sigmoid is positive. Fill with −inf (masked_fill), as section 3 does.")


# ---------------------------------------------------------------------------------------------- 5.4
#: the token and expert of exercise 5.4: (passage, position, MoE layer, expert) -- section 4's character
THRESHOLD_TOKEN = (0, 10, 0, 3)


@checker("5.4", hint="raising b_3 lifts two things: expert 3's own biased score and its group's score. What must "
                     "each of them overtake?",
         more=["first the group: expert 3's group must become one of the topk_group kept groups",
               "then the expert: among the experts of the kept groups, its biased score must reach the top K_r",
               "once expert 3's group is kept, which group drops out, and which experts are left to beat? "
               "explore_route(snap, 0, 10).biased has every biased score to full precision"])
def check_bias_threshold(answer) -> str:
    """Exercise 5.4 (explain with a number): the smallest Δb on expert 3 that gets it chosen for section 4's
    character (first MoE layer), rounded UP to 3 decimals: the first value of a 0.001 grid at which it is chosen.
    Computed by bisection on the stored snapshot (:func:`~dsv3_lessons.course.ch05_routing.routing.bias_threshold`)
    and confirmed with the explorer's own function."""
    from dsv3_lessons.course.ch05_routing.routing import bias_threshold, snapshot_config
    from dsv3_lessons.course.ch05_routing.widget import explore_route

    x = as_number(answer, "Δb")
    snap = _snapshot()
    passage, position, layer, expert = THRESHOLD_TOKEN
    exact = bias_threshold(snap, passage, position, layer, expert)
    right = math.ceil(exact * 1000 - 1e-9) / 1000
    cfg = snapshot_config(snap)
    per = cfg.n_routed_experts // cfg.n_group
    r = explore_route(snap, passage, position, layer)
    chosen_at = lambda d: expert in explore_route(snap, passage, position, layer, expert=expert, bias=d).chosen  # noqa: E731
    group_gap = float(sorted(r.group_scores.tolist())[-cfg.topk_group]) - float(r.group_scores[expert // per])
    after = explore_route(snap, passage, position, layer, expert=expert, bias=right)
    dropped = sorted(set(r.kept_groups) - set(after.kept_groups))
    rival = max((e for e in range(cfg.n_routed_experts) if after.allowed[e] and e != expert and e not in after.chosen),
                key=lambda e: float(r.biased[e]), default=None)
    if close(x, right, abs_tol=1e-9) or (chosen_at(x) and x < right):
        return (f"Δb = {right:.3f} (the exact threshold is {exact:.4f}). Two steps: from Δb ≈ {group_gap:.3f} expert "
                f"{expert}'s group passes the weakest kept group and pushes group {', '.join(map(str, dropped))} out "
                f"(with it e"
                f"{r.chosen[-1]}); expert {expert} then only has to pass e{rival}, the best expert of the kept groups "
                f"not yet chosen (K_r = {cfg.num_experts_per_tok}). The group limit made it EASIER here: without it "
                f"expert {expert} would have to pass e{r.chosen[-1]}.")
    if x < 0:
        raise Wrong(f"Δb = {x:g} lowers expert {expert}'s score; it must go up")
    free = explore_route(snap, passage, position, layer, topk_group=cfg.n_group)
    b = r.biased
    beat_free = float(b[free.chosen[-1]] - b[expert])
    beat_best = float(b.max() - b[expert])
    wrong = [
        (group_gap, f"from about Δb = {group_gap:.4f} on, expert {expert}'s GROUP is kept, but the expert itself "
                    f"must then also reach the top K_r among the kept groups' experts"),
        (beat_free, f"that passes e{free.chosen[-1]}, the K_r-th best expert of the whole layer: the threshold "
                    f"without a group limit. With the limit, expert {expert}'s rising group pushes e"
                    f"{free.chosen[-1]}'s group out, so a weaker rival is left"),
        (beat_best, f"that passes e{int(b.argmax())}, the best expert; it only has to reach the top "
                    f"K_r = {cfg.num_experts_per_tok} of what the groups allow"),
    ]
    for value, message in wrong:
        if abs(x - value) <= 0.005:
            raise Wrong(f"Δb = {x:g}: {message}.")
    if not chosen_at(x):
        if x > right - 0.0105:
            raise Wrong(f"at Δb = {x:g} expert {expert} is still not chosen, by a hair: give the first value of a "
                        f"0.001 grid at which it is (round the threshold UP)")
        raise Wrong(f"at Δb = {x:g} expert {expert} is still not chosen; watch the group scores and the chosen "
                    f"experts as Δb on expert {expert} grows")
    raise Wrong(f"expert {expert} is chosen at Δb = {x:g}, but already at a smaller Δb; find the smallest "
                f"(to 3 decimals, rounded up)")


# ---------------------------------------------------------------------------------------------- 5.5
#: exercise 5.5's cluster: NVLink / InfiniBand bandwidth ratio, and routed experts per token K_r
CLUSTER = {"nvlink_over_ib": 4.0, "top_k": 12}


def cluster_design(nvlink_over_ib: float = CLUSTER["nvlink_over_ib"], top_k: int = CLUSTER["top_k"]) -> tuple[int, int]:
    """(M, count): the fewest nodes per token M whose IB transfers already pay for feeding ``top_k`` experts
    (a node feeds ``nvlink_over_ib`` experts per IB transfer: M · ratio ≥ K_r), and the number of best scores the
    paper's group score sums then, K_r / M (V3 §2.1.2, §3.2.2). For V3's 3.2 and K_r = 8 this gives M = 3, which
    does not divide 8; V3 uses M = 4 (groups scored by their 2 best) and keeps the headroom, 4 × 3.2 ≈ 13 experts.
    Raises ValueError if M does not divide K_r."""
    m = math.ceil(top_k / nvlink_over_ib - 1e-9)
    if top_k % m:
        raise ValueError(f"M = {m} does not divide K_r = {top_k}")
    return m, top_k // m


def _pair(answer) -> tuple[float, float]:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"answer with a pair (M, experts summed per group), e.g. (2, 6); got {answer!r}")
    return (as_number(answer[0], "M (nodes per token)"), as_number(answer[1], "the number of scores per group"))


@checker("5.5", hint="two steps: how many experts can one node feed for the price of its one IB transfer, so how few "
                     "nodes cover 12 experts; then the paper's group score for that many nodes.",
         more=["a token crosses InfiniBand once per node it reaches; while that transfer lasts, NVLink inside the "
               "node moves ratio times as much, so a node feeds about `ratio` experts at no extra cost",
               "fewer nodes means fewer IB transfers: take the smallest whole M whose nodes can feed all K_r "
               "experts",
               "section 3: the paper scores a node by the sum of its K_r/M best affinities"])
def check_cluster_design(answer) -> str:
    """Exercise 5.5 (two steps): ``(M, count)`` for the cluster of :data:`CLUSTER` (NVLink 4× IB, K_r = 12):
    M = 3 nodes per token, each group scored by the sum of its 4 best."""
    m, count = _pair(answer)
    ratio, k = CLUSTER["nvlink_over_ib"], CLUSTER["top_k"]
    right_m, right_count = cluster_design()
    if (m, count) == (right_m, right_count):
        return (f"M = {right_m}: each node feeds {ratio:g} experts for its one IB transfer, so {right_m} nodes cover "
                f"{k} experts ({right_m} × {ratio:g} = {right_m * ratio:g}) and fewer could not; each node is then "
                f"scored by its {right_count} best (K_r/M). V3 runs the same arithmetic the other way round: M = 4 "
                f"nodes × 3.2 ≈ 13 experts of headroom for its K_r = 8, and groups scored by 8/4 = 2.")
    if m != int(m) or m < 1:
        raise Wrong(f"M = {m:g}: M counts nodes, a whole number ≥ 1 (round up: a fraction of a node cannot feed the "
                    f"rest)")
    v3_m = math.ceil(k / 3.2)
    if m == v3_m and m != right_m:
        raise Wrong(f"M = {m:g} is what V3's 160/50 = 3.2 experts per node would need; this cluster's NVLink is "
                    f"{ratio:g}× its IB")
    if m == k:
        raise Wrong(f"M = {k} gives every expert its own node and IB transfer; a node can feed {ratio:g} experts "
                    f"for the price of one transfer")
    if m == k * ratio or m == ratio:
        raise Wrong(f"M = {m:g}: M is a number of nodes; how many experts can ONE node feed per IB transfer, and "
                    f"how many nodes then cover {k} experts?")
    if m > right_m:
        raise Wrong(f"M = {m:g} nodes can feed the {k} experts, but so can fewer, and every node costs one more IB "
                    f"transfer: take the smallest M")
    if m < right_m:
        raise Wrong(f"M = {m:g} nodes feed only {m * ratio:g} experts at no extra cost, fewer than K_r = {k}")
    if count == 2:
        raise Wrong(f"M = {right_m} is right; {count:g} is V3's hard-coded count (8/4); the paper's rule sums K_r/M "
                    f"of each node's scores")
    if count == 1:
        raise Wrong(f"M = {right_m} is right; scoring a node by its single best expert is V2's device-limited rule; "
                    f"the paper's V3 rule sums K_r/M")
    if count == k:
        raise Wrong(f"M = {right_m} is right; a node holds only its share of the {k} experts: sum K_r/M of its scores")
    if count == m:
        raise Wrong(f"M = {right_m} is right; {count:g} is M itself: the count per node is K_r/M")
    raise Wrong(f"M = {right_m} is right; the count per node is wrong: the paper sums K_r/M of each node's best scores")
