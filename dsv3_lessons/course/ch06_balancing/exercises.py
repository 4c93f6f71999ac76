"""Exercise checkers of chapter 06 (load balancing and node-limited dispatch; exercises 6.1–6.5).

Pattern of :mod:`dsv3_lessons.course.common.checking`: never raise; "not attempted yet" + a nudge, a ✗ diagnosis
(with the hint ladder behind ``hint("6.N")``), or ✓.

* 6.1 **bug hunt**: :data:`BUG_6_1` is a bias update with one mistake of the kind public implementations made
  (SPEC §9: the bias moved with the wrong sign). The checker runs the learner's fixed function against the library's
  :func:`~dsv3_lessons.model.moe.update_bias` on routings that include an expert exactly at the mean load and an
  expert with no token, and names what is still wrong -- including a fix that is the right rule but rebinds a local
  name instead of changing the buffer in place (read from the function's locals when it returns).
* 6.2 **explain with a number**: the largest MaxVio a batch can have with N_r = 8, K_r = 2.
* 6.3 **predict, then run**: what the unfixed 6.1 would do to the load, checked against the re-simulation that
  the chapter runs with :data:`BUG_6_1`'s function (:func:`unfixed_update_bias`).
* 6.4 **variation**: the sequence-wise loss (V3 eqs. 17–20) on right-padded sequences, checked against the library's
  :func:`~dsv3_lessons.model.moe.sequence_balance_loss` applied to each sequence's real tokens.
* 6.5 **explain with a number**: rows a token sends across processes under per-node de-duplication.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch

from dsv3_lessons.course.common.checking import Wrong, as_number, call_learner, checker, close

__all__ = ["BUG_6_1", "unfixed_update_bias", "check_update_bias", "check_max_violation_bound",
           "check_wrong_sign_prediction", "check_padded_balance_loss", "check_remote_rows", "PREDICTIONS_6_3"]

#: Exercise 6.1: the code shown in the notebook, with its one mistake (the notebook cell holds this text).
BUG_6_1 = '''def update_bias(bias, routed, gamma):
    """After the optimizer step, for one MoE layer. bias: [N_r] float32 buffer, changed in place;
    routed: [n_tokens, K_r] the experts the tokens of this step were sent to."""
    counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()   # c_i
    load_error = counts - counts.mean()                                          # > 0: overloaded
    bias += gamma * torch.sign(load_error)
'''


def _compile_bug() -> Callable:
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(BUG_6_1, "<exercise 6.1 as shipped>", "exec"), namespace)
    return namespace["update_bias"]


#: :data:`BUG_6_1` as a function (the chapter's 6.3 experiment re-simulates with it).
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


def _routings_6_1() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(bias, routed, gamma) cases: loads with experts exactly at the mean and experts with no token."""
    g = torch.Generator().manual_seed(61)
    out = []
    for counts, k, gamma in (([16, 0, 30, 9, 21, 16, 25, 11], 2, 0.01),
                             ([24, 40, 0, 24, 31, 12, 24, 50, 18, 7, 29, 24, 33, 20, 23, 25], 4, 0.001)):
        c = torch.tensor(counts)
        assert c.sum() % k == 0 and (c == c.float().mean()).any()
        slots = torch.repeat_interleave(torch.arange(len(counts)), c)
        routed = slots[torch.randperm(len(slots), generator=g)].view(-1, k)
        bias = torch.randn(len(counts), generator=g) * 0.05
        out.append((bias, routed, gamma))
    return out


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


def _diagnose_values(got: torch.Tensor, bias: torch.Tensor, want: torch.Tensor, counts: torch.Tensor,
                     gamma: float) -> str | None:
    """A diagnosis of ``got`` (the bias after the learner's update), or None when it is right."""
    if torch.allclose(got, want, atol=1e-7):
        return None
    mean = counts.mean()
    if torch.allclose(got, 2 * bias - want, atol=1e-7):
        return ("still the wrong sign: an expert with more tokens than the mean (overloaded) went UP; overloaded experts "
                "must go DOWN")
    if torch.allclose(got, bias + gamma * (mean - counts), atol=1e-6) or \
            torch.allclose(got, bias - gamma * (mean - counts), atol=1e-6):
        return ("you moved the bias in proportion to the load difference; the rule uses only its SIGN, so every "
                "expert moves by exactly ±γ (or not at all)")
    at_mean = counts == mean
    delta, want_delta = got - bias, want - bias
    if at_mean.any() and torch.allclose(got[~at_mean], want[~at_mean], atol=1e-7) \
            and torch.all((delta[at_mean].abs() - gamma).abs() < 1e-7):
        i = int(at_mean.nonzero()[0])
        return (f"expert {i} received exactly the mean load ({int(counts[i])} tokens) and yours moved it by "
                f"{float(delta[i]):+g}; an expert at the mean must stay where it is (the sign of 0 is 0)")
    if torch.equal(torch.sign(delta.round(decimals=9)), torch.sign(want_delta.round(decimals=9))):
        return "every expert moves in the right direction, but by the wrong amount: the step is exactly γ"
    i = int((got - want).abs().argmax())
    return (f"not the rule: expert {i} received {int(counts[i])} tokens (mean {float(mean):g}) and should move by "
            f"{float(want_delta[i]):+g}; yours moved it by {float(delta[i]):+g}")


@checker("6.1", hint="which experts should become LESS attractive after a step, and does this code make them so? "
                     "Follow one overloaded expert through the last two lines.",
         more=["an expert is overloaded when its count is above the mean; the bias is ADDED to its score at the "
               "next selection",
               "compute load_error for an overloaded expert: is it positive or negative, and which way does "
               "bias += gamma * sign(load_error) then move it?",
               "fix one line; keep the update in place (the layer keeps this very tensor), and let an expert "
               "exactly at the mean stay put"])
def check_update_bias(update_fn) -> str:
    """Exercise 6.1 (bug hunt): the learner's fixed ``update_bias(bias [N_r] float32, routed [n, K_r], gamma)``."""
    if not callable(update_fn):
        raise Wrong(f"pass your function itself (update_bias), got {type(update_fn).__name__}")
    for bias, routed, gamma in _routings_6_1():
        counts = torch.bincount(routed.flatten(), minlength=bias.numel()).float()
        want = _library_update(bias, counts, gamma)
        mine = bias.clone()
        ptr = mine.data_ptr()
        returned, local = _call_keeping_locals(update_fn, mine, routed.clone(), gamma)
        if mine.data_ptr() != ptr:
            raise Wrong("the bias tensor's storage was replaced, not updated in place")
        if torch.equal(mine, bias):                       # the caller's tensor never changed
            names = getattr(getattr(update_fn, "__code__", None), "co_varnames", ("bias",))
            rebound = local.get(names[0]) if names else None
            if isinstance(returned, torch.Tensor) and returned.shape == bias.shape:
                found = _diagnose_values(returned.detach().float(), bias, want, counts, gamma)
                raise Wrong("you return a new tensor and leave `bias` unchanged: the layer keeps the buffer it "
                            "registered, so a returned tensor never reaches the gate. Update it in place "
                            "(bias += ... or bias.add_(...))" + (f"; also, {found}" if found else
                                                                  " -- the values you return are right"))
            if isinstance(rebound, torch.Tensor) and rebound is not mine and rebound.shape == bias.shape:
                found = _diagnose_values(rebound.detach().float(), bias, want, counts, gamma)
                if found is None:
                    raise Wrong("right rule, not updated in place: `bias = bias + ...` makes a new local tensor "
                                "and the layer's buffer never sees it. Change the tensor itself: bias += ... "
                                "or bias.add_(...)")
                raise Wrong(f"the caller's `bias` is unchanged (`bias = ...` only renames a new local tensor: "
                            f"update in place), and the values are wrong too: {found}")
            raise Wrong("`bias` did not change at all: the update must modify the tensor it is given, in place")
        found = _diagnose_values(mine, bias, want, counts, gamma)
        if found:
            raise Wrong(found)
    return ("b_i ← b_i + γ·sign(mean(c) − c_i), in place: equal to dsv3_lessons.model.moe.update_bias, "
            "including the expert at exactly the mean (unmoved) and the expert with no token (up by γ).")


# ----------------------------------------------------------------------------------------- 6.2 (number)
@checker("6.2", hint="picture the most unbalanced batch possible: how many tokens can the busiest expert get at "
                     "most, and what is the mean load it is compared with?",
         more=["each token picks K_r DIFFERENT experts: one expert receives at most one copy of every token",
               "the mean load is all routing slots of the batch shared among the N_r experts",
               "write MaxVio's definition with those two numbers; T cancels"])
def check_max_violation_bound(answer, n_routed: int = 8, top_k: int = 2) -> str:
    """Exercise 6.2: the largest MaxVio possible with ``n_routed`` experts and ``top_k`` per token."""
    right = n_routed / top_k - 1
    x = as_number(answer, "the answer (MaxVio)")
    if close(x, right, rel=1e-6):
        return (f"{right:g}: the busiest expert can take every token (T) while the mean is K_r·T/N_r = T/{n_routed // top_k}"
                f", so MaxVio ≤ N_r/K_r − 1 = {right:g}. A MaxVio near {right:g} means a few experts take everything.")
    if close(x, n_routed / top_k, rel=1e-6):
        raise Wrong("that is max/mean; MaxVio measures how far the maximum is ABOVE the mean, relative to it")
    if close(x, n_routed - 1, rel=1e-6):
        raise Wrong("that would need one expert to take every routing slot, but a token sends at most one copy to "
                    "each expert: K_r slots of a token go to K_r different experts")
    if close(x, 0.0, abs_tol=1e-9):
        raise Wrong("0 is perfect balance, the smallest MaxVio; the question asks for the largest")
    if close(x, (n_routed - top_k) / n_routed, rel=1e-6):
        raise Wrong("that is the share of experts left without a token, not MaxVio")
    raise Wrong(f"{x:g} is not it; with N_r = {n_routed} and K_r = {top_k}, find the busiest expert's largest "
                f"possible load and the mean load, per token")


# ----------------------------------------------------------------------------------------- 6.3 (prediction)
#: Exercise 6.3: the choices for MaxVio_batch at the end of the re-simulation with the unfixed 6.1.
PREDICTIONS_6_3 = ("falls", "stays", "rises")


def _outcome(max_vio: torch.Tensor) -> tuple[str, float, float]:
    start, end = float(max_vio[0]), float(max_vio[-20:].mean())
    return ("rises" if end > start + 0.2 else "falls" if end < start - 0.2 else "stays"), start, end


@checker("6.3", hint="write one word before you run the experiment: \"falls\", \"stays\" or \"rises\". Think of an "
                     "expert that got a few tokens too many in step 1: what happens to it in step 2, and step 3?",
         more=["follow the feedback loop: more tokens → the bias moves → the next step's selection",
               "is the loop self-correcting (negative feedback) or self-reinforcing (positive feedback)?"])
def check_wrong_sign_prediction(prediction, sim) -> str:
    """Exercise 6.3: the learner's prediction, compared with ``sim`` = the re-simulation with the unfixed 6.1
    (``resimulate_bias(..., update=unfixed_update_bias)``); its ``max_vio [steps]`` decides."""
    if not isinstance(prediction, str) or prediction.strip().lower() not in PREDICTIONS_6_3:
        raise Wrong(f"write your prediction as one of {', '.join(repr(p) for p in PREDICTIONS_6_3)}, got "
                    f"{prediction!r}")
    if not isinstance(sim, dict) or "max_vio" not in sim:
        raise Wrong("run the experiment cell first and pass its result (the dict resimulate_bias returned)")
    guess = prediction.strip().lower()
    happened, start, end = _outcome(sim["max_vio"])
    n_r = sim["counts"].shape[-1]
    story = (f"MaxVio_batch went from {start:.2f} at step 1 to {end:.2f} (mean of the last 20 steps). With the wrong "
             f"sign an overloaded expert's bias goes UP, it wins more tokens, its bias goes up again: positive "
             f"feedback, until a few experts take every token and the load sits near the largest MaxVio possible "
             f"(exercise 6.2). The {n_r} experts' last loads: {sim['counts'][-1].long().tolist()}.")
    if guess == happened:
        return f"you predicted '{guess}', and it {happened}. {story}"
    if guess == "falls":
        raise Wrong(f"you predicted 'falls'; it {happened}. The update still moves every expert by ±γ, so it "
                    f"looks like balancing, but in the direction that feeds the busiest expert. {story}")
    raise Wrong(f"you predicted '{guess}'; it {happened}. {story}")


# ----------------------------------------------------------------------------------------- 6.4 (variation)
def _padded_cases() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(64)
    cases = []
    for n_r, k, lengths, t in ((8, 2, (12, 7, 3), 12), (6, 3, (5, 9), 10)):
        b = len(lengths)
        scores = torch.sigmoid(torch.randn(b, t, n_r, generator=g) * 1.5)
        indices = torch.stack([torch.stack([torch.randperm(n_r, generator=g)[:k] for _ in range(t)])
                               for _ in range(b)])
        mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]        # [b, T] True = real token
        indices[~mask] = 0                     # padding routed to expert 0, as a padded forward would do
        cases.append((scores, indices, mask, 1e-2))
    return cases


def _per_sequence_oracle(scores, indices, mask, alpha) -> torch.Tensor:
    from dsv3_lessons.model.moe import sequence_balance_loss

    return torch.stack([sequence_balance_loss(scores[b][mask[b]][None], indices[b][mask[b]][None], alpha)
                        for b in range(scores.shape[0])]).mean()


def _variants(scores, indices, mask, alpha) -> dict[str, torch.Tensor]:
    """Typical wrong versions of the padded loss, for the diagnosis."""
    from dsv3_lessons.model.moe import batch_balance_loss, sequence_balance_loss

    b, t, n_r = scores.shape
    k = indices.shape[-1]
    m = mask.float()
    n_real = m.sum(1)                                                        # [b]
    hits = torch.zeros(b, t, n_r).scatter_(2, indices, 1.0) * m[..., None]
    s_norm = scores / scores.sum(-1, keepdim=True)
    f_real = hits.sum(1) * n_r / (k * n_real[:, None])
    p_real = (s_norm * m[..., None]).sum(1) / n_real[:, None]
    return {
        "padding counted": sequence_balance_loss(scores, indices, alpha),
        "f over padded T": alpha * (hits.sum(1) * n_r / (k * t) * p_real).sum(-1).mean(),
        "P over padded T": alpha * (f_real * s_norm.mean(1)).sum(-1).mean(),
        "P summed over real, divided by T": alpha * (f_real * (s_norm * m[..., None]).sum(1) / t).sum(-1).mean(),
        "batch-wise": batch_balance_loss(scores[mask], indices[mask], alpha),
        "sum over sequences": alpha * (f_real * p_real).sum(-1).sum(),
    }


_VARIANT_WORDS = {
    "padding counted": "your loss counts the padding positions as tokens (in f_i and in P_i): padding is routed "
                       "somewhere by the forward pass, but it is not part of the sequence",
    "f over padded T": "P_i is right, but f_i divides by the padded length T: each sequence's T is its own number "
                       "of real tokens, so a short sequence's f_i comes out too small",
    "P over padded T": "f_i is right, but P_i averages the normalised scores over the padding positions too",
    "P summed over real, divided by T": "P_i sums over the real tokens but divides by the padded length: use each "
                                        "sequence's own number of real tokens",
    "batch-wise": "you pooled the real tokens of all sequences: that is the batch-wise loss; the sequence-wise "
                  "loss computes f and P per sequence, then averages the sequences' losses",
    "sum over sequences": "you summed the sequences' losses; average them (the library's convention, so the "
                          "loss does not grow with the batch size)",
}


@checker("6.4", hint="what should a padding position contribute to f_i and to P_i, and what is T for a sequence "
                     "that is half padding?",
         more=["a padding position is not a token of the sequence: it must not count in f_i, nor in P_i",
               "each sequence has its own T: the number of its real tokens (mask.sum over positions)",
               "you may call sequence_balance_loss on each sequence's real tokens (boolean indexing), or mask "
               "inside the sums; then average over the sequences"])
def check_padded_balance_loss(loss_fn) -> str:
    """Exercise 6.4 (variation): ``loss_fn(scores [B, T, N_r], indices [B, T, K_r], mask [B, T] bool, alpha)``
    -> 0-d tensor, the sequence-wise loss of right-padded sequences (``mask`` True = real token)."""
    if not callable(loss_fn):
        raise Wrong(f"pass your function itself (padded_balance_loss), got {type(loss_fn).__name__}")
    for scores, indices, mask, alpha in _padded_cases():
        leaf = scores.clone().requires_grad_(True)
        got = call_learner(loss_fn, leaf, indices.clone(), mask.clone(), alpha)
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return a torch tensor (the loss, 0-d), got {type(got).__name__}")
        if got.numel() != 1:
            raise Wrong(f"return one number (a 0-d tensor): the loss averaged over sequences, got shape "
                        f"{tuple(got.shape)}")
        if not torch.isfinite(got).all():
            raise Wrong(f"your loss is {got.item()}: a division by zero? Every sequence has at least one real token")
        want = _per_sequence_oracle(scores, indices, mask, alpha)
        if torch.allclose(got.detach().reshape(()).float(), want, rtol=1e-5, atol=1e-9):
            if not got.requires_grad:
                raise Wrong("the value is right but carries no gradient to the scores: P_i must stay "
                            "differentiable (only f_i is a constant)")
            continue
        for name, value in _variants(scores, indices, mask, alpha).items():
            if torch.allclose(got.detach().reshape(()).float(), value, rtol=1e-5, atol=1e-9):
                raise Wrong(_VARIANT_WORDS[name])
        raise Wrong(f"{got.item():.6g} differs from the per-sequence loss {want.item():.6g} (lengths "
                    f"{mask.sum(1).tolist()} of T = {mask.shape[1]}); compare your f_i and P_i with "
                    f"sequence_balance_loss on one sequence's real tokens")
    return ("equal to sequence_balance_loss on each sequence's real tokens, averaged: padding neither counts as "
            "load (f_i) nor as affinity (P_i), and each sequence's T is its own length.")


# ----------------------------------------------------------------------------------------- 6.5 (number)
@checker("6.5", hint="how many times must the token's activation cross a process boundary, given how §6's dispatch "
                     "packs rows?",
         more=["§6 sends one row per (token, destination node), not per (token, expert)",
               "the token's own node needs no transfer"])
def check_remote_rows(answer, own: int = 0, expert_nodes=(0, 0, 1, 1, 1, 3, 3, 3)) -> str:
    """Exercise 6.5: rows a token on node ``own`` sends across process boundaries when its K_r experts live on
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
