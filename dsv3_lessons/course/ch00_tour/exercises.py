"""Exercise checkers of chapter 00 (the tour), on the pattern of :mod:`dsv3_lessons.course.common.checking`: they never
raise and print "not attempted yet" + a hint, a ✗ diagnosis, or ✓.

* 0.1: the parameters ONE token uses in ONE MoE layer's FFN of DeepSeek-V3 (shared expert + K_r routed experts
  + the gate), computed from :func:`dsv3_lessons.model.config.deepseek_v3_671b`;
* 0.2 (code): ``unigram_entropy(ids)`` in nats, checked against H = −Σ p ln p on sequences the chapter never
  printed (:func:`dsv3_lessons.tools.data.unigram_entropy` is the oracle).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, checker, is_placeholder)  # noqa: F401  (___ is re-exported for the notebook)

__all__ = ["___", "check_moe_activated_params", "check_unigram_entropy_function", "ENTROPY_CASES"]


def _moe_numbers() -> dict[str, int]:
    from dsv3_lessons.model.config import deepseek_v3_671b

    cfg = deepseek_v3_671b()
    d, m, n_r = cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts
    return {"d": d, "m": m, "n_r": n_r, "k": cfg.num_experts_per_tok, "s": cfg.n_shared_experts,
            "expert": 3 * d * m, "gate": n_r * d + n_r}


@checker("0.1", hint="one expert is a SwiGLU with three d x d_moe matrices (3 * v3.hidden_size * "
                     "v3.moe_intermediate_size); a token runs the shared expert and its K_r routed ones, and the "
                     "gate scores all N_r experts (N_r x d centroids + N_r biases)")
def check_moe_activated_params(answer):
    """Exercise 0.1: parameters ONE token uses in ONE MoE layer's FFN of DeepSeek-V3 (671B config).

    That is the shared expert and the K_r = 8 selected routed experts (each a SwiGLU: 3·d·d_moe), plus the
    gate's centroids and balancing biases (N_r·d + N_r), which score every expert for every token
    (V3 report §2.1.2, eqs. 12–16). The expected value is computed from the config, not typed in.
    """
    x = as_number(answer, "the answer (a number of parameters)")
    n = _moe_numbers()
    expert, gate, k, s = n["expert"], n["gate"], n["k"], n["s"]
    right = (s + k) * expert + gate
    if x == right:
        return (f"{right:,} parameters: {s + k} experts of {expert:,} (together as large as a dense SwiGLU of width "
                f"{(s + k) * n['m']:,}) plus the gate's {gate:,}; the layer holds {s + n['n_r']} experts.")
    wrongs = {
        (s + n["n_r"]) * expert + gate: "that counts all 257 experts: a token runs only the shared one and its 8 selected ones",
        k * expert + gate: "add the shared expert: every token goes through it",
        (s + k) * expert: "add the gate: its centroids e_i (N_r x d) and biases b_i (N_r) score every expert",
        (s + k) * expert + n["n_r"] * n["d"]: "add the gate's N_r balancing biases b_i too",
        (s + k) * 2 * n["d"] * n["m"] + gate: "a SwiGLU expert has THREE matrices (gate_proj, up_proj, down_proj)",
        (s + k) * expert + k * n["d"] + k: "the gate scores ALL N_r = 256 experts to pick 8, not just the 8 chosen",
    }
    if x in wrongs:
        raise Wrong(f"{x:,.0f}: {wrongs[x]}")
    raise Wrong(f"{x:,.0f} is not right. One expert is a SwiGLU with 3 matrices of d x d_moe ({n['d']} x {n['m']}); "
                f"count the shared expert, the {k} routed ones and the gate (N_r·d weights + N_r biases)")


#: Sequences of token ids the checker of exercise 0.2 scores (none of them appears in the chapter).
ENTROPY_CASES: dict[str, list[int]] = {
    "skewed": [0] * 6 + [1] * 3 + [2],
    "one symbol": [7] * 5,
    "uniform over 4": [3, 1, 4, 0] * 3,
    "sparse ids": [2, 40, 40, 83, 83, 83, 83, 2],
}


def _oracle_entropy(ids: list[int]) -> float:
    from dsv3_lessons.tools.data import unigram_entropy

    return unigram_entropy(ids)


@checker("0.2", hint="count each id (torch.unique(ids, return_counts=True) or collections.Counter), turn counts "
                     "into probabilities p = counts / len(ids), and return -(p * p.log()).sum() as a float")
def check_unigram_entropy_function(fn: Callable[[Any], Any]):
    """Exercise 0.2: ``fn(ids)`` (a 1-D ``torch.long`` tensor) must return H = −Σ_c p_c ln p_c in nats.

    Checked on :data:`ENTROPY_CASES` against :func:`dsv3_lessons.tools.data.unigram_entropy`; common slips
    (bits instead of nats, a missing minus sign, ln of the number of distinct ids, counts not normalised)
    are named.
    """
    import torch

    if not callable(fn):
        raise Wrong(f"pass your function itself (unigram_entropy), not {type(fn).__name__}")
    for name, ids in ENTROPY_CASES.items():
        got = fn(torch.tensor(ids, dtype=torch.long))
        if is_placeholder(got):
            raise NotImplementedError   # the stub still returns ___: not attempted yet
        got = as_number(got, f"what your function returns for the '{name}' case")
        right = _oracle_entropy(ids)
        if math.isclose(got, right, rel_tol=1e-5, abs_tol=1e-9):
            continue
        where = f"for the '{name}' ids {ids} you return {got:.4f}, expected {right:.4f} nats"
        distinct = len(set(ids))
        if right and math.isclose(got, right / math.log(2), rel_tol=1e-5):
            raise Wrong(f"{where}: that is in bits (log2); the course measures losses in nats (natural log)")
        if right and math.isclose(got, -right, rel_tol=1e-5):
            raise Wrong(f"{where}: the sign is flipped: H = -Σ p ln p is never negative")
        if math.isclose(got, math.log(distinct), rel_tol=1e-5):
            raise Wrong(f"{where}: that is ln(number of distinct ids), the entropy of a UNIFORM distribution; "
                        f"weight each -ln p_c by its frequency p_c")
        counts = [ids.count(c) for c in set(ids)]
        if math.isclose(got, -sum(c * math.log(c) for c in counts), rel_tol=1e-5):
            raise Wrong(f"{where}: divide the counts by len(ids) to get probabilities before taking logs")
        raise Wrong(f"{where}: H = -Σ_c p_c ln p_c over the distinct ids c, with p_c = count_c / len(ids)")
    return "right on all four sequences (nats, natural log)."
