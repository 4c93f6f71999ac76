"""Exercise checkers of chapter 00 (the tour), on the pattern of :mod:`dsv3_lessons.course.common.checking`: they
never raise and print "not attempted yet" + a nudge, a ✗ diagnosis (with a pointer to ``hint("0.N")``), or ✓.

* 0.1 (variation, code): ``moe_layer_params(cfg) -> (total, per_token)`` for ONE MoE layer's FFN, run on three
  configurations the chapter does not show (:data:`MOE_CASES`) and checked against
  :func:`dsv3_lessons.model.config.count_parameters`;
* 0.2 (predict, then run): the validation loss of the untrained model at step 0, written before the training cell
  and compared with the measured one after it;
* 0.3 (bug hunt, code): a greedy decoding loop that re-feeds the whole sequence into the latent cache
  (:data:`BUGGY_GENERATE_SOURCE`); the fixed function is run against :func:`dsv3_lessons.tools.generate.generate`
  on random prompts, and the calls it makes are recorded to name what is still wrong;
* 0.4 (code): ``unigram_entropy(ids)`` in nats, checked against H = −Σ p ln p on sequences the chapter never
  printed (:func:`dsv3_lessons.tools.data.unigram_entropy` is the oracle).

Expected values are computed from configs and libraries, never typed in.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker, hint,  # noqa: F401
                                                 is_placeholder)  # (___ and hint are re-exported for the notebook)

__all__ = ["___", "hint", "MOE_CASES", "moe_cases", "check_moe_layer_params", "check_step0_prediction",
           "BUGGY_GENERATE_SOURCE", "check_greedy_generate", "check_unigram_entropy_function", "ENTROPY_CASES"]


# ---------------------------------------------------------------------------------------------------------- 0.1
#: The configurations exercise 0.1 runs the learner's function on (none of them is counted in the chapter):
#: name -> changes to the released V3 config (:func:`dsv3_lessons.model.config.deepseek_v3_671b`).
MOE_CASES: dict[str, dict[str, int]] = {
    # DeepSeek-V2's MoE sizes (V2 report §3.1.2: 2 shared + 160 routed experts of width 1536, 6 per token,
    # d = 5120) with V3's sigmoid gate and its balancing bias
    "V2-sized MoE layer": {"hidden_size": 5120, "moe_intermediate_size": 1536, "n_routed_experts": 160,
                           "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 8, "topk_group": 3},
    # V3 with experts twice as fine: 512 of half the width, 16 per token (same active expert width)
    "finer V3 experts": {"moe_intermediate_size": 1024, "n_routed_experts": 512, "num_experts_per_tok": 16,
                         "n_group": 8, "topk_group": 4},
    # a MoE layer without a shared expert
    "no shared expert": {"n_shared_experts": 0, "num_experts_per_tok": 9},
}


def moe_cases() -> dict[str, Any]:
    """The :data:`MOE_CASES` as validated :class:`~dsv3_lessons.model.config.DeepseekV3Config` objects."""
    from dsv3_lessons.model.config import deepseek_v3_671b

    v3 = deepseek_v3_671b()
    return {name: v3.replace(**changes) for name, changes in MOE_CASES.items()}


def _moe_reference(cfg) -> tuple[int, int]:
    """(total, per token) of one MoE layer's FFN: the total from ``count_parameters`` (the library), the per-token
    count from it by removing the N_r − K_r routed experts a token skips."""
    from dsv3_lessons.model.config import count_parameters

    pc = count_parameters(cfg)
    return pc.moe_layer, pc.moe_layer - (cfg.n_routed_experts - cfg.num_experts_per_tok) * pc.expert


def _moe_diagnosis(name: str, cfg, got: tuple[float, float], right: tuple[int, int]) -> str:
    d, m, n_r, n_s, k = (cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts, cfg.n_shared_experts,
                         cfg.num_experts_per_tok)
    e, gate = 3 * d * m, n_r * d + n_r
    where = f"for the {name} (d={d}, width {m}, N_s={n_s}, N_r={n_r}, K_r={k})"
    total, per_token = got
    if total != right[0]:
        wrong_total = {
            n_r * e + gate: "the total misses the shared expert(s): count n_shared_experts of them",
            (n_s + n_r) * e: "the total misses the gate: its centroids e_i (one d-vector per routed expert) and "
                             "its balancing biases b_i",
            (n_s + n_r) * e + n_r * d: "the total misses the gate's balancing biases b_i (one per routed expert)",
            (n_s + n_r) * 2 * d * m + gate: "an expert is a SwiGLU with THREE matrices (gate_proj, up_proj, "
                                            "down_proj)",
            (1 + n_r) * e + gate: "the number of shared experts is a field of the config (n_shared_experts), "
                                  "not always 1",
            (n_s + 256) * e + gate: "the number of routed experts is a field of the config (n_routed_experts), "
                                    "not always 256",
        }
        if per_token == right[0] and total == right[1]:
            raise Wrong(f"{where}: the two numbers are swapped: return (total, per_token)")
        raise Wrong(f"{where}: your total {total:,.0f} should be {right[0]:,}: "
                    + wrong_total.get(total, "count every expert the layer holds (shared and routed, each a "
                                             "SwiGLU) and the gate"))
    wrong_tok = {
        (n_s + n_r) * e + gate: "per token you counted every expert; a token runs only its shared expert(s) and "
                                "the K_r routed ones it is sent to",
        k * e + gate: "per token you left out the shared expert(s): every token goes through them",
        (n_s + k) * e: "per token you left out the gate: it scores every routed expert for every token",
        (n_s + k) * e + k * d + k: "the gate scores ALL N_r routed experts to choose K_r, so a token uses all "
                                   "N_r centroids and biases, not K_r of them",
        (n_s + 8) * e + gate: "the number of routed experts per token is a field of the config "
                              "(num_experts_per_tok), not always 8",
        (1 + k) * e + gate: "the number of shared experts is a field of the config (n_shared_experts), not "
                            "always 1",
    }
    return (f"{where}: your per-token count {per_token:,.0f} should be {right[1]:,}: "
            + wrong_tok.get(per_token, "count what one token runs: its shared and selected experts, and the gate"))


@checker("0.1", hint="which experts does the layer hold, and which of them does one token actually run? "
                     "Read every size from cfg's fields.",
         more=["An expert is one SwiGLU: three matrices of hidden_size x moe_intermediate_size (gate_proj, "
               "up_proj, down_proj). The layer holds n_shared_experts + n_routed_experts of them.",
               "The gate holds one centroid e_i (a hidden_size vector) and one balancing bias b_i per routed "
               "expert; it scores every routed expert for every token.",
               "A token runs its n_shared_experts shared experts, the num_experts_per_tok routed experts the gate "
               "picks, and the whole gate."])
def check_moe_layer_params(fn: Callable[[Any], Any]):
    """Exercise 0.1: ``fn(cfg) -> (total, per_token)`` for one MoE layer's FFN (V3 report §2.1.2, eqs. 12–16).

    Run on every config of :data:`MOE_CASES`; the total is compared with ``count_parameters(cfg).moe_layer`` and
    the per-token count with that total minus the N_r − K_r routed experts a token skips. Typical slips are
    named: a missing shared expert, gate or bias, two-matrix experts, the gate counted per selected expert,
    V3's numbers (1 shared, 256 routed, 8 per token) hard-coded, the pair swapped.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (moe_layer_params), not {type(fn).__name__}")
    for name, cfg in moe_cases().items():
        got = call_learner(fn, cfg)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(f"return a pair (total, per_token); for the {name} you returned {got!r}")
        if is_placeholder(got):
            raise NotImplementedError
        pair = (as_number(got[0], f"the total for the {name}"), as_number(got[1], f"the per-token count for the {name}"))
        right = _moe_reference(cfg)
        if pair != right:
            raise Wrong(_moe_diagnosis(name, cfg, pair, right))
    from dsv3_lessons.model.config import deepseek_v3_671b

    total, per_token = _moe_reference(deepseek_v3_671b())
    return (f"right on all {len(MOE_CASES)} configs. For V3 itself one MoE layer holds {total:,} parameters "
            f"and a token uses {per_token:,} of them ({per_token / total:.1%}).")


# ---------------------------------------------------------------------------------------------------------- 0.2
@checker("0.2", hint="before any training the weights are random and small: how much probability does the model "
                     "give each of the V characters, and what is the cross-entropy of that?",
         more=["The untrained model has no reason to prefer any character: its prediction is (close to) uniform.",
               "The cross-entropy of one prediction is -ln(probability given to the right character), in nats."])
def check_step0_prediction(prediction, measured):
    """Exercise 0.2: the learner's prediction (nats per character) of the untrained model's validation loss,
    compared after the run with ``measured`` (``hist.val_loss[0]``). The expected value is ln V (a uniform
    prediction over the V = 84 characters); a prediction within 0.15 nats of the measured loss or of ln V is right.
    """
    x = as_number(prediction, "your prediction (nats per character)")
    seen = as_number(measured, "the measured step-0 loss (hist.val_loss[0])")
    vocab = 84
    ln_v = math.log(vocab)
    if abs(x - ln_v) <= 0.15 or abs(x - seen) <= 0.15:
        return (f"predicted {x:.2f}, measured {seen:.2f} nats/char. An untrained model spreads its probability "
                f"about evenly over the {vocab} characters, so it pays -ln(1/{vocab}) = ln {vocab} = {ln_v:.2f} per "
                f"character; the small gap to the measured loss is the random initial weights, which make the "
                f"first predictions slightly uneven (never better than uniform on average).")
    gap = f"you predicted {x:.2f}, the run measured {seen:.2f} nats/char"
    if math.isclose(x, math.log2(vocab), abs_tol=0.1):
        raise Wrong(f"{gap}: {x:.2f} is log2({vocab}), in bits; the course measures losses in nats (natural log)")
    if 3.0 <= x <= 3.6:
        raise Wrong(f"{gap}: that is about the unigram entropy, the loss of a model that already KNOWS how often "
                    f"each letter occurs; at step 0 the model has seen no text at all")
    if math.isclose(x, math.log(129_280), abs_tol=0.2):
        raise Wrong(f"{gap}: that is ln of DeepSeek-V3's vocabulary (129,280 tokens); this model has {vocab} "
                    f"characters")
    if x <= 0.05:
        raise Wrong(f"{gap}: a loss of 0 means the model is certain and right every time; an untrained model "
                    f"knows nothing")
    if math.isclose(x, vocab, rel_tol=0.05) or math.isclose(x, 1 / vocab, rel_tol=0.05):
        raise Wrong(f"{gap}: the loss is -ln of the probability the model gives the right character, not the "
                    f"number of characters or the probability itself")
    raise Wrong(f"{gap}: your guess is {'too high' if x > seen else 'too low'}; think of the probability an "
                f"untrained model gives each of the {vocab} characters")


# ---------------------------------------------------------------------------------------------------------- 0.3
#: The buggy decoding loop exercise 0.3 shows (one line is wrong: it re-feeds the whole sequence into the cache).
BUGGY_GENERATE_SOURCE = '''\
def greedy_generate(model, prompt, n_new):
    """Greedy decoding with the latent cache: prompt [T] token ids -> [T + n_new] ids."""
    ids = prompt[None]                                         # [1, T]
    cache = model.new_cache(1, model.cfg.max_position_embeddings)
    logits = model(ids, cache=cache).logits[:, -1]             # prefill: the cache now holds the prompt
    for _ in range(n_new):
        nxt = logits.argmax(dim=-1, keepdim=True)              # [1, 1]: the most likely next token
        ids = torch.cat([ids, nxt], dim=1)
        logits = model(ids, cache=cache).logits[:, -1]         # one decoding step
    return ids[0]
'''


class _Recorder:
    """Wraps a model: forwards everything and records, for each call, the number of tokens fed and how many the
    cache held before (None without a cache)."""

    def __init__(self, model):
        self._model = model
        self.calls: list[tuple[int, int | None]] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, input_ids, *args, cache=None, **kwargs):
        held = cache[0].length if cache is not None else None
        self.calls.append((int(input_ids.shape[-1]), held))
        return self._model(input_ids, *args, cache=cache, **kwargs)


def _bug_hunt_model():
    import torch

    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

    torch.manual_seed(7)
    model = DeepSeekV3(tiny(vocab_size=24)).eval()
    with torch.no_grad():   # larger logits than at initialisation, so greedy picks differ from token to token
        model.lm_head.weight.mul_(40.0)
    return model


@checker("0.3", hint="run it: the checker compares it with the library's generate. Then ask what the cache already "
                     "holds when each step starts, and what the step should feed.",
         more=["After the prefill the cache holds the prompt. What should one decoding step add to it?",
               "Count the tokens in the cache after each step, with the code as given and with a correct loop.",
               "A step with a cache needs only the token it has just chosen; the cache supplies the rest."])
def check_greedy_generate(fn: Callable[..., Any]):
    """Exercise 0.3 (bug hunt): ``fn(model, prompt [T], n_new) -> ids [T + n_new]`` must decode greedily with
    the latent cache, feeding each step only the newest token.

    Oracle: :func:`dsv3_lessons.tools.generate.generate` (greedy) on a seeded tiny model, four random prompts.
    The model is wrapped to record what each call fed, so the message names the fault: the whole sequence
    re-fed into the cache (the bug as shown), one token fed without the cache, a correct result computed
    without the cache at all, a wrong number of tokens returned.
    """
    import torch

    from dsv3_lessons.tools.generate import generate

    if not callable(fn):
        raise Wrong(f"pass your function itself (greedy_generate), not {type(fn).__name__}")
    model = _bug_hunt_model()
    gen = torch.Generator().manual_seed(3)
    for trial, (t, n_new) in enumerate([(6, 5), (3, 8), (9, 4), (5, 7)]):
        prompt = torch.randint(0, model.cfg.vocab_size, (t,), generator=gen)
        rec = _Recorder(model)
        with torch.no_grad():
            got = call_learner(fn, rec, prompt.clone(), n_new)
        right = generate(model, prompt, n_new)[0]
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return the token ids as a tensor [T + n_new], got {type(got).__name__}")
        got = got.reshape(-1)
        cached = [(fed, held) for fed, held in rec.calls if held is not None]
        refed = [(fed, held) for fed, held in cached if held > 0 and fed > 1]
        if refed:
            fed, held = refed[0]
            total = sum(f for f, _ in cached)
            raise Wrong(f"for a {t}-token prompt and {n_new} new tokens your outputs "
                        f"{'differ from' if not torch.equal(got, right) else 'happen to match'} the library's; "
                        f"a decoding step fed {fed} tokens to a cache that already held {held}, and the cache "
                        f"ends up holding {total} tokens for a sequence of {t + n_new}")
        if got.numel() != t + n_new:
            raise Wrong(f"for a {t}-token prompt and {n_new} new tokens return {t + n_new} ids (prompt included), "
                        f"got {got.numel()}")
        uncached_steps = [fed for fed, held in rec.calls[1:] if held is None]
        if uncached_steps and max(uncached_steps) > 1:
            raise Wrong(("right tokens, but" if torch.equal(got, right) else "your tokens differ from the library's, and")
                        + f" {len(uncached_steps)} steps re-ran the whole sequence without the cache (up to "
                        f"{max(uncached_steps)} tokens per step: the work grows with the sequence); the exercise is to "
                        f"decode with the cache")
        if uncached_steps:
            raise Wrong(f"{len(uncached_steps)} decoding steps fed one token but no cache (cache=...), so they saw "
                        f"none of the earlier tokens" + ("" if torch.equal(got, right) else
                                                           "; your ids differ from the library's"))
        if not torch.equal(got, right):
            i = int((got != right).nonzero()[0]) if got.shape == right.shape else 0
            raise Wrong(f"for a {t}-token prompt your ids first differ from the library's at position {i} "
                        f"(yours {int(got[i])}, library {int(right[i])}); calls made (tokens fed, tokens already "
                        f"cached): {rec.calls}")
    return ("right on four prompts: prefill once, then one token per step; the cache grows by exactly one "
            "token per step, so the work per step no longer grows with the sequence.")


# ---------------------------------------------------------------------------------------------------------- 0.4
#: Sequences of token ids the checker of exercise 0.4 scores (none of them appears in the chapter).
ENTROPY_CASES: dict[str, list[int]] = {
    "skewed": [0] * 6 + [1] * 3 + [2],
    "one symbol": [7] * 5,
    "uniform over 4": [3, 1, 4, 0] * 3,
    "sparse ids": [2, 40, 40, 83, 83, 83, 83, 2],
}


def _oracle_entropy(ids: list[int]) -> float:
    from dsv3_lessons.tools.data import unigram_entropy

    return unigram_entropy(ids)


@checker("0.4", hint="the entropy weighs the surprise -ln p_c of each distinct id c by how often c occurs",
         more=["Count how often each distinct id occurs, and turn the counts into shares p_c that sum to 1.",
               "Only ids that occur belong in the sum: an id that never occurs contributes nothing "
               "(and 0·ln 0 would be NaN in floating point).",
               "Use the natural log (nats), and mind the minus sign: H is never negative."])
def check_unigram_entropy_function(fn: Callable[[Any], Any]):
    """Exercise 0.4: ``fn(ids)`` (a 1-D ``torch.long`` tensor) must return H = −Σ_c p_c ln p_c in nats.

    Checked on :data:`ENTROPY_CASES` against :func:`dsv3_lessons.tools.data.unigram_entropy`; common slips
    (bits instead of nats, a missing minus sign, ln of the number of distinct ids, counts not normalised,
    0·ln 0 = NaN from ids that never occur) are named.
    """
    import torch

    if not callable(fn):
        raise Wrong(f"pass your function itself (unigram_entropy), not {type(fn).__name__}")
    for name, ids in ENTROPY_CASES.items():
        got = call_learner(fn, torch.tensor(ids, dtype=torch.long))
        raw = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
        if isinstance(raw, float) and math.isnan(raw):
            raise Wrong(f"for the '{name}' ids {ids} you return NaN: an id with count 0 gives 0·ln 0 = 0·(-inf) = "
                        f"NaN in floating point (bincount counts every id up to the largest); sum only over the "
                        f"ids that occur")
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
        raise Wrong(f"{where}: weigh each distinct id's -ln p_c by its share p_c of the sequence")
    return "right on all four sequences (nats, natural log)."
