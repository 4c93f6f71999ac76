"""Exercise checkers of chapter 06 (load balancing and node-limited dispatch; exercises 6.1–6.5).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a nudge, a ✗ diagnosis
(with the hint ladder behind ``hint("6.N")``), or ✓.

* 6.1 **bug hunt**: :data:`BUG_6_1`, a balancing step written the way a training loop would (another shape than the
  chapter's one line), that passes its author's test with one expert per token (:data:`AUTHOR_TEST_6_1`) and moves
  some experts with the wrong sign as soon as a token picks K_r > 1 experts (SPEC §9: the bias moved with the wrong
  sign; here only for the experts whose load lies between the author's "fair share" and the true mean). The
  checker runs the learner's fix against the library's :func:`~dsv3_lessons.model.moe.update_bias` on routings
  with K_r = 1 … 4, N_r not a power of two, experts exactly at the mean, and the first and the LAST expert without a
  token; on the unfixed code it states only the symptom (which experts move the other way than the library's).
* 6.2 **explain with a number** (two steps): the largest node-level MaxVio of a batch in V3 (8 nodes, a token
  reaches at most M = 4): the MaxVio bound of the chapter's definition applied to §6's one row per (token, node).
* 6.3 **predict, then run**: which γ of 0.001, 0.01, 0.1 ends the re-simulation of §5 with the lowest and the
  highest MaxVio_batch. The intuitive answers (the largest step balances fastest; the smallest is too slow) are
  both wrong on the first layer: γ sets the jitter around balance as well as the speed.
* 6.4 **variation**: the sequence-wise loss (V3 eqs. 17–20) on right-padded sequences, some rows entirely padding,
  checked against the library's :func:`~dsv3_lessons.model.moe.sequence_balance_loss` applied to each non-empty
  sequence's real tokens; every typical wrong combination (how f_i and P_i treat padding, how the sequences are
  averaged) gets its own diagnosis.
* 6.5 **explain with a number** (two steps): bytes a token sends across nodes, dispatch and combine, in V3's
  formats (per-node de-duplication of §6 + FP8 there, BF16 back).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, close, is_placeholder

__all__ = ["BUG_6_1", "AUTHOR_TEST_6_1", "unfixed_update_bias", "check_update_bias", "check_node_max_violation",
           "GAMMAS_6_3", "check_gamma_prediction", "check_padded_balance_loss", "check_wire_bytes", "V3_WIRE",
           "padded_cases"]

#: Exercise 6.1: the code shown in the notebook, with its one mistake (the notebook cell holds this text).
BUG_6_1 = '''def rebalance_(bias, expert_ids, gamma):
    """Auxiliary-loss-free balancing of one MoE layer, called after optimizer.step().
    bias: [N_r] float32 routing-bias buffer, updated in place;
    expert_ids: [n_tokens, K_r] the experts each token of the step was routed to."""
    n_experts = bias.numel()
    load = torch.zeros(n_experts)
    load.index_add_(0, expert_ids.reshape(-1), torch.ones(expert_ids.numel()))   # tokens per expert
    fair_share = expert_ids.shape[0] / n_experts          # tokens per expert if the load were even
    bias[load > fair_share] -= gamma                       # overloaded: less attractive next step
    bias[load < fair_share] += gamma                       # underloaded: more attractive
'''

#: Exercise 6.1: the author's test, shown under the function in the notebook (it passes).
AUTHOR_TEST_6_1 = '''b = torch.zeros(3)                                          # 6 tokens, one expert each, 3 experts
rebalance_(b, torch.tensor([[0], [0], [0], [1], [1], [2]]), gamma=0.1)
assert torch.allclose(b, torch.tensor([-0.1, 0.0, 0.1]))  # busiest down, at the mean stays, idle up
print("the author's test passes:", [round(v, 2) for v in b.tolist()])
'''


def _compile_bug() -> Callable:
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(BUG_6_1, "<exercise 6.1 as shipped>", "exec"), namespace)
    return namespace["rebalance_"]


#: :data:`BUG_6_1` as a function.
unfixed_update_bias = _compile_bug()


# ----------------------------------------------------------------------------------------- 6.1 (bug hunt)
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


def routing_with_counts(counts: list[int], top_k: int, generator: torch.Generator) -> torch.Tensor:
    """``[n_tokens, top_k]`` expert ids in which expert e appears ``counts[e]`` times and no token names an expert
    twice (as top-K_r routing does). Needs ``sum(counts) = n_tokens·top_k`` and every count ≤ n_tokens.

    Slots sorted by expert are dealt to tokens in turn (slot j to token j mod n), so a run of one expert's slots
    (at most n long) lands on n different tokens; rows and the order within rows are then shuffled."""
    total = sum(counts)
    if total % top_k or max(counts) > total // top_k:
        raise ValueError(f"counts {counts} cannot be routed with K_r = {top_k} distinct experts per token")
    n = total // top_k
    slots = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    routed = slots.view(top_k, n).T.contiguous()                      # slot j -> token j mod n
    routed = routed[torch.randperm(n, generator=generator)]
    order = torch.argsort(torch.rand(n, top_k, generator=generator), dim=1)
    return routed.gather(1, order)


#: 6.1's routings: (counts per expert, K_r, γ). The first has K_r = 1 (the author's setting); experts exactly at the
#: mean, N_r not a power of two, and the first and the LAST expert without a token (a bincount without minlength).
_CASES_6_1 = (
    ([2, 5, 1, 3, 3, 2, 0, 0], 1, 0.01),
    ([6, 11, 3, 9, 4, 8, 7, 0], 2, 0.01),
    ([10, 5, 2, 7, 6, 0], 3, 0.001),
    ([0, 4, 9, 2, 6, 4, 1, 8, 3, 5, 4, 7, 2, 3, 6, 0], 4, 0.001),
    ([14, 1, 0, 9, 3, 2, 2, 2, 1, 4, 0, 2], 2, 0.01),
)


def _cases_6_1():
    """``(what, bias, routed, gamma)``: ``what`` names the routing by its shape only (no load is given away)."""
    g = torch.Generator().manual_seed(61)
    for counts, k, gamma in _CASES_6_1:
        routed = routing_with_counts(counts, k, g)
        bias = torch.randn(len(counts), generator=g) * 0.05
        what = f"K_r = {k}, N_r = {len(counts)}, {routed.shape[0]} tokens" + \
            (", the last expert without a token" if counts[-1] == 0 else "")
        yield what, bias, routed, gamma


def _call_keeping_locals(fn: Callable, *args: Any) -> tuple[Any, dict]:
    """Run the learner's ``fn`` (via :func:`call_learner`) and return ``(result, its locals at return)``.

    The locals tell a fix that computed the right values into a *new* local tensor (``bias = bias + ...``) from
    one that computed something else."""
    code = getattr(fn, "__code__", None)
    seen: dict = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            seen.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile if code is not None else previous)
    try:
        result = call_learner(fn, *args)
    finally:
        sys.setprofile(previous)
    return result, seen


def _moves(delta: torch.Tensor, gamma: float) -> list[str]:
    return ["0" if abs(v) < gamma / 2 else ("+γ" if v > 0 else "−γ") if math.isclose(abs(v), gamma, rel_tol=1e-4)
            else f"{v:+.3g}" for v in delta.tolist()]


def _diagnose_values(got: torch.Tensor, bias: torch.Tensor, want: torch.Tensor, counts: torch.Tensor,
                     gamma: float) -> str | None:
    """A diagnosis of ``got`` (the bias after the learner's update), or None when it is right."""
    if torch.allclose(got, want, atol=1e-7):
        return None
    mean = counts.mean()
    if torch.allclose(got, 2 * bias - want, atol=1e-7):
        return ("every expert moved the wrong way: the busiest experts went UP (more attractive still) and the idle "
                "ones DOWN; the busiest must go down")
    if torch.allclose(got, bias + gamma * (mean - counts), atol=1e-6) or \
            torch.allclose(got, bias - gamma * (mean - counts), atol=1e-6):
        return ("you moved the bias in proportion to the load difference; the rule uses only its SIGN, so every "
                "expert moves by exactly ±γ (or not at all)")
    at_mean = counts == mean
    delta, want_delta = got - bias, want - bias
    if at_mean.any() and torch.allclose(got[~at_mean], want[~at_mean], atol=1e-7) \
            and torch.all((delta[at_mean].abs() - gamma).abs() < 1e-7):
        i = int(at_mean.nonzero()[0])
        return (f"expert {i} received exactly the mean load ({int(counts[i])}) and yours moved it by "
                f"{float(delta[i]):+g}; an expert at the mean must stay where it is (the sign of 0 is 0)")
    if torch.equal(torch.sign(delta.round(decimals=9)), torch.sign(want_delta.round(decimals=9))):
        return "every expert moves in the right direction, but by the wrong amount: the step is exactly γ"
    return None


def _symptom(got: torch.Tensor, bias: torch.Tensor, want: torch.Tensor, gamma: float) -> str:
    """Which experts moved otherwise than the library's, and how (no cause)."""
    bad = ((got - want).abs() > 1e-7).nonzero().flatten().tolist()
    mine, lib = _moves(got - bias, gamma), _moves(want - bias, gamma)
    shown = bad[:6]
    return (f"expert{'s' if len(bad) > 1 else ''} {shown}{' …' if len(bad) > 6 else ''} moved "
            f"[{', '.join(mine[i] for i in shown)}] where update_bias moves them [{', '.join(lib[i] for i in shown)}]")


@checker("6.1", hint="the author's test passes; does it exercise the setting the chapter's model trains in? Find "
                     "a routing on which this function and the rule of §1 disagree.",
         more=["write a routing like the model's (every token sends to K_r = 2 different experts), apply both the "
               "function and §1's line to the same bias, and compare expert by expert",
               "for an expert that moves the wrong way, compare its load with `fair_share`; then work out what "
               "the mean of `load` is when every token has K_r entries in expert_ids",
               "fix one line so that the threshold is the mean load for any K_r; keep the update in place (the "
               "layer keeps this very tensor) and keep an expert exactly at the mean where it is"])
def check_update_bias(update_fn) -> str:
    """Exercise 6.1 (bug hunt): the learner's fixed ``rebalance_(bias [N_r] float32, expert_ids [n, K_r], gamma)``."""
    if not callable(update_fn):
        raise Wrong(f"pass your function itself (rebalance_), got {type(update_fn).__name__}")
    agreed, symptoms = [], []
    for what, bias, routed, gamma in _cases_6_1():
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        want = _library_update(bias, counts, gamma)
        mine = bias.clone()
        ptr = mine.data_ptr()
        try:
            returned, local = _call_keeping_locals(update_fn, mine, routed.clone(), gamma)
        except NotImplementedError:
            raise
        except Exception as exc:
            raise Wrong(f"on a routing with {what}, your function raised {type(exc).__name__}: {exc}") from None
        if mine.data_ptr() != ptr:
            raise Wrong("the bias tensor's storage was replaced, not updated in place")
        if torch.equal(mine, bias) and not torch.equal(want, bias):    # the caller's tensor never changed
            names = getattr(getattr(update_fn, "__code__", None), "co_varnames", ("bias",))
            rebound = local.get(names[0]) if names else None
            if isinstance(returned, torch.Tensor) and returned.shape == bias.shape:
                found = _diagnose_values(returned.detach().float(), bias, want, counts, gamma)
                right = torch.allclose(returned.detach().float(), want, atol=1e-7)
                raise Wrong("you return a new tensor and leave `bias` unchanged: the layer keeps the buffer it "
                            "registered, so a returned tensor never reaches the gate. Update it in place "
                            "(bias += ... or bias.add_(...))" + (" -- the values you return are right" if right
                                                                  else f"; also, {found or 'the values differ'}"))
            if isinstance(rebound, torch.Tensor) and rebound is not mine and rebound.shape == bias.shape:
                if torch.allclose(rebound.detach().float(), want, atol=1e-7):
                    raise Wrong("right values, not updated in place: `bias = bias + ...` makes a new local tensor "
                                "and the layer's buffer never sees it. Change the tensor itself: bias += ... "
                                "or bias.add_(...)")
                raise Wrong("the caller's `bias` is unchanged (`bias = ...` only renames a new local tensor: "
                            "update in place), and the values are wrong too")
            raise Wrong("`bias` did not change at all: the update must modify the tensor it is given, in place")
        if torch.allclose(mine, want, atol=1e-7):
            agreed.append(what)
            continue
        found = _diagnose_values(mine, bias, want, counts, gamma)
        if found:
            raise Wrong(f"on a routing with {what}: {found}")
        symptoms.append((what, _symptom(mine, bias, want, gamma)))
    if symptoms:
        what, detail = symptoms[0]
        ok = f"It agrees with update_bias on {len(agreed)} of {len(_CASES_6_1)} routings" + \
            (f" (among them {'; '.join(agreed[:2])})" if len(agreed) > 2 else
             f" ({'; '.join(agreed)})" if agreed else "")
        raise Wrong(f"{ok}, and differs on {len(symptoms)}. On {what}: {detail}.")
    return ("equal to dsv3_lessons.model.moe.update_bias for K_r = 1 to 4: the threshold is the mean load, "
            "K_r·n_tokens/N_r -- the author's `n_tokens/N_r` is the mean only when each token picks one expert. "
            "Experts between the two thresholds were pushed the wrong way.")


# ----------------------------------------------------------------------------------------- 6.2 (number)
V3_NODES = {"nodes": 8, "experts": 256, "top_k": 8, "node_limit": 4}


@checker("6.2", hint="picture the most unbalanced batch between NODES: how many rows can the busiest node "
                     "receive at most, and what is the least the mean can be?",
         more=["a token sends at most one row to a node, however many of its experts live there",
               "the mean node load is all rows of the batch shared among the 8 nodes; how few rows can a token "
               "send? Is M = 4 the number of nodes a token reaches, or a ceiling?",
               "put the busiest node's largest load and the smallest mean into MaxVio's definition; T cancels"])
def check_node_max_violation(answer) -> str:
    """Exercise 6.2: the largest node-level MaxVio of a batch in V3 (8 nodes, K_r = 8, M = 4; node load = tokens that
    send the node a row, §6's dispatch)."""
    v = V3_NODES
    try:
        x = as_number(answer, "the answer (MaxVio)")
    except Wrong:
        try:
            infinite = math.isinf(float(answer))
        except (TypeError, ValueError):
            infinite = False
        if infinite:
            raise Wrong("MaxVio's definition has no upper end, but a batch's loads do: the busiest node receives "
                        "at most one row per token, and the mean cannot fall below a fixed share of the tokens") \
                from None
        raise
    right = v["nodes"] - 1
    if close(x, right, rel=1e-6):
        return (f"{right}: the busiest node gets at most one row per token (T); a token sends at least one row, so "
                f"the mean is at least T/{v['nodes']}: MaxVio ≤ {v['nodes']} − 1 = {right}, reached when every token "
                f"keeps all {v['top_k']} experts on the same node. M = {v['node_limit']} caps a token's traffic, "
                f"not the balance between nodes: that is the bias's job.")
    if close(x, v["experts"] / v["top_k"] - 1, rel=1e-6):
        raise Wrong("that is the bound for EXPERT loads (N_r/K_r − 1); a node's load counts tokens, one row per "
                    "token however many of its experts the node hosts")
    if close(x, v["nodes"] / v["node_limit"] - 1, rel=1e-6):
        raise Wrong(f"that assumes every token reaches exactly M = {v['node_limit']} nodes; M is a ceiling: a "
                    f"token whose {v['top_k']} experts sit on one node sends one row")
    if close(x, v["nodes"], rel=1e-6) or close(x, v["nodes"] / v["node_limit"], rel=1e-6):
        raise Wrong("that is max/mean; MaxVio measures how far the maximum lies ABOVE the mean, relative to it")
    if close(x, 0.0, abs_tol=1e-9):
        raise Wrong("0 is perfect balance, the smallest MaxVio; the question asks for the largest")
    if close(x, 3.0, rel=1e-6):
        raise Wrong("3 is N_r/K_r − 1 of the tiny model's experts; the question is about V3's 8 nodes")
    raise Wrong(f"{x:g} is not it: find the busiest node's largest possible load and the smallest possible mean "
                f"node load, as multiples of the batch's T tokens")


# ----------------------------------------------------------------------------------------- 6.3 (prediction)
#: Exercise 6.3: the update speeds compared on §5's frozen router.
GAMMAS_6_3 = (0.001, 0.01, 0.1)


def _end(sim: dict) -> float:
    return float(sim["max_vio"][-20:].mean())


@checker("6.3", hint="write a pair of γ values from 0.001, 0.01, 0.1: (the one that ends lowest, the one that "
                     "ends highest). Think of what γ does once the loads are nearly balanced, and of how far a bias "
                     "can move in 200 steps.",
         more=["every step moves every bias by exactly ±γ, balanced or not: what does that do to the loads once "
               "the bias has reached its target?",
               "in 200 steps a bias can move at most 200·γ; how large are the biases the chapter's runs needed "
               "(§4's table)?"])
def check_gamma_prediction(prediction, sims) -> str:
    """Exercise 6.3: ``prediction = (γ that ends lowest, γ that ends highest)``; ``sims = {γ: resimulate_bias(...)}``
    for :data:`GAMMAS_6_3` (the mean MaxVio_batch of the last 20 steps decides)."""
    if not isinstance(prediction, (tuple, list)) or len(prediction) != 2:
        raise Wrong(f"write your prediction as a pair (lowest, highest) of γ values from {GAMMAS_6_3}, got "
                    f"{prediction!r}")
    guess = []
    for p, what in zip(prediction, ("lowest", "highest")):
        x = as_number(p, f"the γ you expect to end {what}")
        match = [g for g in GAMMAS_6_3 if close(x, g, rel=1e-6)]
        if not match:
            raise Wrong(f"the γ you expect to end {what} must be one of {GAMMAS_6_3}, got {p!r}")
        guess.append(match[0])
    if guess[0] == guess[1]:
        raise Wrong("the same γ cannot end both lowest and highest: name two different ones")
    if not isinstance(sims, dict) or is_placeholder(sims) or set(sims) != set(GAMMAS_6_3):
        raise Wrong("run the experiment cell first and pass its result (the dict of the three re-simulations)")
    ends = {g: _end(sims[g]) for g in GAMMAS_6_3}
    lowest, highest = min(ends, key=ends.get), max(ends, key=ends.get)
    table = ", ".join(f"γ = {g:g}: {ends[g]:.2f}" for g in GAMMAS_6_3)
    start = float(sims[GAMMAS_6_3[0]]["max_vio"][0])
    story = (f"MaxVio_batch from {start:.2f} at step 1 to (mean of the last 20 steps) {table}. Every step moves "
             f"every bias by exactly ±γ, balanced or not, so once the biases have reached their targets the loads "
             f"jitter around balance with a size set by γ; γ = 0.1 overshoots every step and the busiest experts "
             f"change places from one step to the next. A small γ is slow, but 200 steps of 0.001 still move a bias "
             f"by up to 0.2, enough for this layer.")
    if guess == [lowest, highest]:
        return f"you predicted lowest {guess[0]:g}, highest {guess[1]:g}, and so it went. {story}"
    parts = []
    if guess[0] != lowest:
        parts.append(f"the lowest is γ = {lowest:g}, not {guess[0]:g}")
    if guess[1] != highest:
        parts.append(f"the highest is γ = {highest:g}, not {guess[1]:g}")
    why = ""
    if guess[0] == max(GAMMAS_6_3):
        why = " A larger step does correct faster at first, but it never stops stepping."
    elif guess[1] == min(GAMMAS_6_3):
        why = " The smallest step is slow, but not too slow for 200 steps here."
    raise Wrong(f"{'; '.join(parts)}.{why} {story}")


# ----------------------------------------------------------------------------------------- 6.4 (variation)
def padded_cases(seed: int = 64, n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """Random right-padded batches for 6.4: ``(scores [B, T, N_r], indices [B, T, K_r], mask [B, T], alpha)``.

    Shapes vary (B 2–5, T 5–16, N_r 6 or 8, K_r 2 or 3); lengths span 1 … T, every other case has a row that is all
    padding, and each sequence leans towards its own experts (so a length-weighted or a pooled average differs
    visibly from the plain one). Padding positions are routed too (to the first K_r experts), as a padded forward
    would."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for c in range(n):
        b = 2 + c % 4
        t = int(torch.randint(5, 17, (1,), generator=g))
        n_r = (6, 8)[c % 2]
        k = (2, 3)[(c // 2) % 2]
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[0] = t                                                    # a full row ...
        lengths[-1] = min(2, t)                                           # ... and a short one
        if c % 2 == 1:
            lengths[1] = 0                                                # a row that is all padding
        lean = torch.randn(b, 1, n_r, generator=g) * 2.0
        scores = torch.sigmoid(torch.randn(b, t, n_r, generator=g) + lean)
        indices = torch.stack([torch.stack([torch.randperm(n_r, generator=g)[:k] for _ in range(t)])
                               for _ in range(b)])
        mask = torch.arange(t)[None, :] < lengths[:, None]                   # [B, T] True = real token
        indices[~mask] = torch.arange(k)                                    # padding routed like any token
        cases.append((scores, indices, mask, 1e-2))
    return cases


def _per_sequence_oracle(scores, indices, mask, alpha) -> torch.Tensor:
    from dsv3_lessons.model.moe import sequence_balance_loss

    rows = [b for b in range(scores.shape[0]) if mask[b].any()]
    return torch.stack([sequence_balance_loss(scores[b][mask[b]][None], indices[b][mask[b]][None], alpha)
                        for b in rows]).mean()


def _variants(scores, indices, mask, alpha) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every combination of how f_i and P_i treat padding and how the sequences are combined, keyed by
    ``(f, P, average)``: f/P in {"real/n", "real/T", "all/T", "all/n"} (sum over the real tokens divided by their
    number n, the same sum divided by the padded T, every position over T, every position over n: the mask applied
    to the count but not to the sum); average in {"mean", "mean of all rows",
    "length-weighted", "sum"}; plus ("pooled", "pooled", "pooled") = the batch-wise loss of the real tokens."""
    from dsv3_lessons.model.moe import batch_balance_loss

    b, t, n_r = scores.shape
    k = indices.shape[-1]
    m = mask.float()
    n = m.sum(1)                                                             # [B]
    hits = torch.zeros(b, t, n_r).scatter_(2, indices, 1.0)
    s_norm = scores / scores.sum(-1, keepdim=True)
    with torch.no_grad():
        f = {"real/n": (hits * m[..., None]).sum(1) * n_r / (k * n[:, None]),
             "real/T": (hits * m[..., None]).sum(1) * n_r / (k * t),
             "all/T": hits.sum(1) * n_r / (k * t),
             "all/n": hits.sum(1) * n_r / (k * n[:, None])}
        p = {"real/n": (s_norm * m[..., None]).sum(1) / n[:, None],
             "real/T": (s_norm * m[..., None]).sum(1) / t,
             "all/T": s_norm.mean(1),
             "all/n": s_norm.sum(1) / n[:, None]}
        nonempty = n > 0
        out = {}
        for fk, fv in f.items():
            for pk, pv in p.items():
                per_seq = alpha * (fv * pv).sum(-1)                          # [B], NaN for an empty row (real/n)
                real = per_seq[nonempty]
                out[(fk, pk, "mean")] = real.mean()
                out[(fk, pk, "mean of all rows")] = torch.where(nonempty, per_seq, 0.0).mean()
                out[(fk, pk, "length-weighted")] = (real * n[nonempty]).sum() / n.sum()
                out[(fk, pk, "sum")] = real.sum()
        out[("pooled", "pooled", "pooled")] = batch_balance_loss(scores[mask], indices[mask], alpha)
    return out


_F_WORDS = {"real/T": "f_i counts the real tokens but divides by the padded length T: each sequence's T is its own "
                      "number of real tokens, so a short sequence's load comes out too small",
            "all/T": "f_i counts the padding positions as load: the forward pass routed them (here to the first "
                     "K_r experts), but they are not tokens of the sequence",
            "all/n": "f_i still counts the masked (padding) positions as load: you divide by the number of real "
                     "tokens, but the count of selections runs over every position, so the experts the padding "
                     "was routed to look busier (a short sequence's f_i no longer sums to N_r)"}
_P_WORDS = {"real/T": "P_i sums the real tokens' normalised scores but divides by the padded length T instead of "
                      "the sequence's own number of real tokens",
            "all/T": "P_i averages the normalised scores over the padding positions too",
            "all/n": "P_i still sums the normalised scores over the masked (padding) positions: you divide by the "
                     "number of real tokens, but the sum runs over every position, so a short sequence's P_i "
                     "no longer sums to 1"}
_AVG_WORDS = {"mean of all rows": "the row that is all padding counts in your average (as 0): it is not a "
                                  "sequence; average over the rows that have real tokens",
              "length-weighted": "you weighted each sequence by its length (a mean over tokens); the loss is a plain "
                                 "average over sequences: each sequence counts once, short or long",
              "sum": "you summed the sequences' losses; average them (the library's convention, so the loss does not "
                     "grow with the batch size)"}


def _diagnose_padded(key: tuple[str, str, str]) -> str:
    if key[0] == "pooled":
        return ("you pooled the real tokens of all sequences: that is the batch-wise loss; the sequence-wise loss "
                "computes f and P per sequence, then averages the sequences' losses")
    if {key[0], key[1]} == {"real/n", "real/T"}:      # f·(n/T)·P = f·P·(n/T): the value cannot tell which one
        parts = ["f_i or P_i (one of the two) divides by the padded length T instead of the sequence's own number "
                 "of real tokens: their product is the same either way, too small for a short sequence"]
        parts += [_AVG_WORDS[key[2]]] if key[2] in _AVG_WORDS else []
        return parts[0] if len(parts) == 1 else f"2 things differ from eqs. 17–20 per sequence: (1) {parts[0]}; " \
                                                f"(2) {parts[1]}"
    parts = [_F_WORDS[key[0]]] if key[0] in _F_WORDS else []
    parts += [_P_WORDS[key[1]]] if key[1] in _P_WORDS else []
    parts += [_AVG_WORDS[key[2]]] if key[2] in _AVG_WORDS else []
    if len(parts) == 1:
        return parts[0]
    return f"{len(parts)} things differ from eqs. 17–20 per sequence: " + "; ".join(
        f"({i}) {p}" for i, p in enumerate(parts, start=1))


@checker("6.4", hint="what should a padding position contribute to f_i and to P_i, what is T for a sequence "
                     "that is half padding, and what is a row with no real token at all?",
         more=["a padding position is not a token of the sequence: it must not count in f_i, nor in P_i",
               "each sequence has its own T: the number of its real tokens (mask.sum over positions)",
               "a row with no real token is not a sequence: it has no loss and does not count in the average "
               "(watch for 0/0)",
               "you may call sequence_balance_loss on each non-empty sequence's real tokens (boolean indexing), or "
               "mask inside the sums; then average over those sequences"])
def check_padded_balance_loss(loss_fn) -> str:
    """Exercise 6.4 (variation): ``loss_fn(scores [B, T, N_r], indices [B, T, K_r], mask [B, T] bool, alpha)``
    -> 0-d tensor, the sequence-wise loss of right-padded sequences (``mask`` True = real token), averaged over the
    rows that hold at least one real token."""
    if not callable(loss_fn):
        raise Wrong(f"pass your function itself (padded_balance_loss), got {type(loss_fn).__name__}")
    for scores, indices, mask, alpha in padded_cases():
        leaf = scores.clone().requires_grad_(True)
        lengths = mask.sum(1).tolist()
        try:
            got = call_learner(loss_fn, leaf, indices.clone(), mask.clone(), alpha)
        except NotImplementedError:
            raise
        except Exception as exc:
            empty = "; a row with no real token" if 0 in lengths else ""
            raise Wrong(f"on a batch with lengths {lengths} (T = {mask.shape[1]}{empty}) your function raised "
                        f"{type(exc).__name__}: {exc}") from None
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return a torch tensor (the loss, 0-d), got {type(got).__name__}")
        if got.numel() != 1:
            raise Wrong(f"return one number (a 0-d tensor): the loss averaged over sequences, got shape "
                        f"{tuple(got.shape)}")
        value = got.detach().reshape(()).float()
        if not torch.isfinite(value):
            empty = 0 in lengths
            raise Wrong(f"your loss is {value.item()} on a batch with lengths {lengths}" +
                        (": the row with no real token divides 0 by 0; leave that row out" if empty else ""))
        want = _per_sequence_oracle(scores, indices, mask, alpha)
        if torch.allclose(value, want, rtol=1e-5, atol=1e-9):
            if not got.requires_grad:
                raise Wrong("the value is right but carries no gradient to the scores: P_i must stay "
                            "differentiable (only f_i is a constant)")
            continue
        for key, v in _variants(scores, indices, mask, alpha).items():
            if key == ("real/n", "real/n", "mean"):
                continue
            if torch.isfinite(v) and torch.allclose(value, v, rtol=1e-5, atol=1e-9):
                raise Wrong(_diagnose_padded(key))
        raise Wrong(f"{value.item():.6g} differs from the per-sequence loss {want.item():.6g} by "
                    f"{abs(value.item() / want.item() - 1):.1%} (lengths {lengths} of T = {mask.shape[1]}); compare "
                    f"your f_i and P_i with sequence_balance_loss on one sequence's real tokens")
    return ("equal to sequence_balance_loss on each sequence's real tokens, averaged over the non-empty rows: padding "
            "neither counts as load (f_i) nor as affinity (P_i), each sequence's T is its own length, and a row of "
            "padding is no sequence.")


# ----------------------------------------------------------------------------------------- 6.5 (number)
#: Exercise 6.5: V3's hidden size, bytes per element of the dispatch (FP8) and of the combine (BF16), the token's
#: own node and the nodes of its K_r = 8 experts.
V3_WIRE = {"d": 7168, "dispatch_bytes": 1, "combine_bytes": 2, "own": 0, "expert_nodes": (0, 0, 1, 1, 1, 3, 3, 3)}


@checker("6.5", hint="two questions: how many rows leave the token's node with §6's dispatch, and how many bytes "
                     "is one row there and back?",
         more=["§6 sends one row per (token, destination node), not per (token, expert); the token's own node needs "
               "no transfer",
               "the combine returns one row per node too (the node's partial sum); a row has d elements, in the "
               "format of its direction"])
def check_wire_bytes(answer) -> str:
    """Exercise 6.5: bytes a token on node ``own`` sends across node boundaries, dispatch + combine, when its experts
    live on ``expert_nodes`` (per-node de-duplication, :mod:`dsv3_lessons.tools.expert_parallel`; V3 §3.2.2:
    FP8 dispatch, BF16 combine; scales and metadata left out)."""
    w = V3_WIRE
    d, own = w["d"], w["own"]
    remote_nodes = len(set(w["expert_nodes"]) - {own})
    remote_experts = sum(n != own for n in w["expert_nodes"])
    per_row = d * (w["dispatch_bytes"] + w["combine_bytes"])
    right = remote_nodes * per_row
    x = as_number(answer, "the answer (bytes)")
    if x == right:
        return (f"{right:,} B: {remote_nodes} remote nodes × {d} elements × (1 B there in FP8 + 2 B back in BF16). "
                f"One row per remote EXPERT would send {remote_experts * per_row:,} B; V3 caps the nodes a token "
                f"reaches (M = 4) because the cost grows with nodes, not with the K_r = 8 experts.")
    if x == remote_nodes:
        raise Wrong(f"{int(x)} is the number of rows each way; the question asks for bytes, there and back")
    if x == remote_experts * per_row:
        raise Wrong("that is one row per remote EXPERT; §6 sends a token once per node, and the node fans it out "
                    "to its experts (and sums their outputs before sending them back)")
    if x == len(set(w["expert_nodes"])) * per_row:
        raise Wrong(f"the token's own node ({own}) needs no transfer: its experts there read it locally")
    if x == len(w["expert_nodes"]) * per_row:
        raise Wrong("count nodes, not experts, and leave out the token's own node")
    if x == remote_nodes * d * w["dispatch_bytes"]:
        raise Wrong("that is the dispatch alone; the combine sends each node's partial sum back, in BF16")
    if x == remote_nodes * d * w["combine_bytes"]:
        raise Wrong("that is 2 bytes per element per node: the combine alone (BF16), or both directions in FP8. "
                    "Both directions cross the boundary, FP8 there and BF16 back")
    if x == remote_nodes * d * 2 * w["combine_bytes"]:
        raise Wrong("that counts both directions in BF16; V3 dispatches in FP8 (1 byte per element)")
    if x == remote_nodes * d * 8:
        raise Wrong("float32 is the chapter's demo format; V3 dispatches FP8 (1 B) and combines BF16 (2 B)")
    if x == right * 8:
        raise Wrong("that is bits; the question asks for bytes")
    if x == right / 1000 or x == right / 1024:
        raise Wrong("give the answer in bytes, not kilobytes")
    raise Wrong(f"{x:g} is not it: (rows that leave the node) × (elements per row) × (bytes per element, there + "
                f"back)")
