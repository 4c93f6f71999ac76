"""Exercise checkers of chapter 08 (speculative decoding with the MTP draft; exercises 8.1–8.3), on the
never-raising pattern of :mod:`dsv3_lessons.course.common.checking`. Oracles: the closed-form rule of Leviathan
et al. 2023 (arXiv 2211.17192) and :mod:`dsv3_lessons.tools.speculative`."""
from __future__ import annotations

import torch

from dsv3_lessons.tools.speculative import residual_distribution
from dsv3_lessons.course.common.checking import (___, Wrong, as_number, checker, close, is_placeholder)  # noqa: F401  (``___``: notebook)

__all__ = ["check_acceptance_rule", "check_acceptance_probability", "check_tokens_per_step", "EX82", "EX83"]

#: Exercise 8.2: the main model's p and the draft's q over three tokens.
EX82 = {"p": [0.5, 0.25, 0.25], "q": [0.25, 0.5, 0.25]}
#: Exercise 8.3: k = 2, P(d_1 accepted) and P(d_2 accepted | d_1 accepted).
EX83 = {"a1": 0.8, "a2_given_1": 0.5}


def _cases():
    g = torch.Generator().manual_seed(0)
    yield torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.3, 0.6, 0.1])
    for _ in range(4):
        p = torch.rand(6, generator=g) ** 2
        q = torch.rand(6, generator=g) ** 2
        yield p / p.sum(), q / q.sum()


@checker("8.1", hint="keep the draft with probability min(1, p[d]/q[d]); the replacement comes from "
                     "max(0, p − q), divided by its sum.")
def check_acceptance_rule(keep_probability, residual):
    """``keep_probability(p, q, d) -> float`` and ``residual(p, q) -> [V]`` must follow the standard rule."""
    for fn, name in ((keep_probability, "keep_probability"), (residual, "residual")):
        if not callable(fn):
            raise Wrong(f"pass your functions themselves; {name} is a {type(fn).__name__}")
    for p, q in _cases():
        for d in range(len(p)):
            want = min(1.0, float(p[d] / q[d]))
            got = keep_probability(p.clone(), q.clone(), d)
            if got is None or is_placeholder(got):
                raise NotImplementedError  # still ___: not attempted
            got = as_number(got, "keep_probability(p, q, d)")
            if close(got, want, rel=1e-5):
                continue
            if close(got, float(p[d] / q[d]), rel=1e-5):
                raise Wrong("p[d]/q[d] can exceed 1: a probability needs min(1, …)")
            if close(got, min(1.0, float(q[d] / p[d])), rel=1e-5):
                raise Wrong("upside down: the draft came from q, so the ratio is p[d]/q[d]")
            raise Wrong(f"keep_probability gives {got:.4f} for p[d]={float(p[d]):.3f}, q[d]={float(q[d]):.3f}; "
                        f"expected {want:.4f}")
        r = residual(p.clone(), q.clone())
        if r is None or is_placeholder(r):
            raise NotImplementedError
        if not isinstance(r, torch.Tensor) or r.shape != p.shape:
            raise Wrong(f"residual must return a tensor shaped like p {tuple(p.shape)}")
        want_r = residual_distribution(p, q)
        if torch.allclose(r.float(), want_r.float(), atol=1e-5):
            continue
        if torch.allclose(r.float(), (p - q).clamp(min=0).float(), atol=1e-5):
            raise Wrong("max(0, p − q) is not a distribution yet: divide it by its sum")
        if torch.allclose(r.float(), residual_distribution(q, p).float(), atol=1e-5):
            raise Wrong("that is max(0, q − p): the replacement must supply what p has and q lacks")
        raise Wrong("residual differs from normalise(max(0, p − q))")
    return "the rule keeps the output distributed exactly as p."


@checker("8.2", hint="a draft drawn from q survives with probability Σ_x q(x)·min(1, p(x)/q(x)).")
def check_acceptance_probability(answer):
    x = as_number(answer, "the acceptance probability")
    p, q = EX82["p"], EX82["q"]
    right = sum(min(a, b) for a, b in zip(p, q))
    if close(x, right, rel=1e-4):
        return f"Σ min(p, q) = {right:.2f} (= 1 − total variation distance)."
    if close(x, sum(a * b for a, b in zip(p, q)), rel=1e-4):
        raise Wrong("Σ p·q is the chance that two independent draws agree; the rule is more generous: "
                    "a draft is kept with probability min(1, p/q)")
    if close(x, sum(b for a, b in zip(p, q) if a >= b), rel=1e-4):   # kept only where p >= q
        raise Wrong("drafts are not all-or-nothing: where q > p a draft is still kept with probability p/q")
    raise Wrong(f"{answer!r} is not it: sum over tokens of min(p, q)")


@checker("8.3", hint="a verify step emits 1 + m tokens; m ≥ j needs d_1 … d_j ALL accepted.")
def check_tokens_per_step(answer):
    x = as_number(answer, "tokens per verify step")
    a1, a2 = EX83["a1"], EX83["a2_given_1"]
    right = 1 + a1 + a1 * a2
    if close(x, right, rel=1e-4):
        return f"1 + {a1} + {a1}·{a2} = {right:.2f}: the per-position rates are {a1} and {a1 * a2:.2f}."
    if close(x, 1 + a1 + a2, rel=1e-4):
        raise Wrong("d_2 only counts when d_1 was accepted too: its unconditional rate is 0.8·0.5")
    if close(x, a1 + a1 * a2, rel=1e-4):
        raise Wrong("every verify step also emits the main model's own token: add 1")
    raise Wrong(f"{answer!r} is not it: 1 + P(m ≥ 1) + P(m ≥ 2)")
