"""Exercise checkers of chapter 00 (the tour), on the pattern of :mod:`dsv3_lessons.course.common.checking`: they
never raise and print "not attempted yet" + a nudge, a ✗ diagnosis (with a pointer to ``hint("0.N")``), or ✓.

* 0.1 (variation, code): ``moe_layer_params(cfg) -> (total, per_token)`` for ONE MoE layer's FFN, run on three
  configurations the chapter does not show (:data:`MOE_CASES`) and checked against
  :func:`dsv3_lessons.model.config.count_parameters`; the chapter's breakdown does not spell out the gate, so its
  size (a centroid and a bias per routed expert) and which part of it a token uses are the learner's to find;
* 0.2 (predict, then run): the TOTAL loss the optimizer sees at its first step (main loss + λ·MTP loss + the balance
  losses), written before the training cell; the intuitive answer, ln V, is only the first of the three terms;
* 0.3 (bug hunt, code): a greedy decoding loop that counts the cached tokens one per call
  (:data:`BUGGY_GENERATE_SOURCE`): right for a one-token prompt (the author's test, shown), wrong from the second
  new token on for longer prompts. The ✗ on it names only the symptom; the fixed function is run against
  :func:`dsv3_lessons.tools.generate.generate` on random prompts and the calls it makes are recorded, so a loop
  that gets the tokens right without using the cache (recomputing, or a fresh cache per step) is named too;
* 0.4 (variation, code): ``conditional_entropy(ids)``, the loss of the best model that sees exactly ONE previous id
  (H(next | previous) from the sequence's own adjacent pairs): the unigram entropy of the chapter, one step of
  context further. Checked on short sequences where the usual slips differ (:data:`ENTROPY_CASES`) against a
  counting oracle (:func:`conditional_entropy_reference`).

Expected values are computed from configs, counts and libraries, never typed in.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker, hint,  # noqa: F401
                                                 is_placeholder)  # (___ and hint are re-exported for the notebook)

__all__ = ["___", "hint", "MOE_CASES", "moe_cases", "check_moe_layer_params", "check_first_step_loss",
           "BUGGY_GENERATE_SOURCE", "check_greedy_generate", "ENTROPY_CASES", "conditional_entropy_reference",
           "check_conditional_entropy_function"]


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
    e_dense = 3 * d * cfg.intermediate_size
    if total != right[0] and total in ((n_s + n_r) * e_dense + gate, (n_s + n_r) * e_dense):
        raise Wrong(f"{where}: your total {total:,.0f} should be {right[0]:,}: an expert's width is "
                    f"moe_intermediate_size ({m}); intermediate_size ({cfg.intermediate_size:,}) is the width of the "
                    f"dense FFN of the first layers")
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
    wrong_tok = {   # (first, so that a later entry with the same value wins: V2's n_group is 8, like V3's K_r)
        (n_s + cfg.n_group) * e + gate: f"n_group ({cfg.n_group}) is the number of expert groups; the routed "
                                        f"experts a token runs are num_experts_per_tok ({k})",
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
        (n_s + cfg.topk_group) * e + gate: f"topk_group ({cfg.topk_group}) is how many expert GROUPS a token may "
                                           f"reach; the routed experts it runs are num_experts_per_tok ({k})",
        (n_s + k) * e_dense + gate: f"an expert's width is moe_intermediate_size ({m}), not intermediate_size",
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
    V3's numbers (1 shared, 256 routed, 8 per token) hard-coded, the dense FFN's width (``intermediate_size``)
    or the group counts (``topk_group``, ``n_group``) read in place of the expert fields, the pair swapped.
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
def _first_step_terms(hist) -> tuple[float, float, float, float]:
    """(total, main, MTP, balance) losses of the first optimizer step of a History (nats per token)."""
    try:
        return tuple(float(getattr(hist, name)[0]) for name in ("loss", "main_loss", "mtp_loss", "aux_loss"))
    except (AttributeError, IndexError, TypeError):
        raise Wrong(f"pass the training History (hist) as the second argument, got {type(hist).__name__}") from None


@checker("0.2", hint="which number does the optimizer minimise (read the list of terms above the training cell), "
                     "and what does an untrained model pay for each term?",
         more=["The number train() minimises is not the cross-entropy of the main model alone: it is the weighted "
               "sum of the three terms listed in the Training section.",
               "The MTP module is as untrained as the main model. What does a model that knows nothing pay per "
               "character, whichever character it is asked to predict?",
               "The balance loss of a layer is about its weight alpha when the routing is even; compare that with "
               "the other two terms before you count it."])
def check_first_step_loss(prediction, hist, vocab_size: int = 84):
    """Exercise 0.2 (predict, then run): the learner's prediction of the TOTAL training loss of the first optimizer
    step (``hist.loss[0]``, nats per token): L_main + λ·L_MTP + Σ L_bal of the untrained model on the first batch.

    An untrained model predicts about uniformly over the V characters, and so does its untrained MTP module, so the
    expected value is (1 + λ)·ln V (λ = 0.3 in the chapter's run; the balance losses add about α = 10⁻⁴ per MoE
    layer). A prediction within 0.2 nats of the measured total, or of (1 + λ)·ln V, is right. Named slips: ln V
    (the main loss alone), 2 ln V (λ taken as 1), (1 + 0.1)·ln V (V3's later λ), ln V + λ (λ added, not a weight),
    the unigram entropy instead of ln V, bits, a probability, a negative loss.
    """
    x = as_number(prediction, "your prediction (nats per character)")
    total, main, mtp, bal = _first_step_terms(hist)
    v = int(as_number(vocab_size, "vocab_size"))
    ln_v = math.log(v)
    lam = (total - main - bal) / mtp if mtp else 0.0
    expected = (1 + lam) * ln_v
    measured = (f"the first step measured {total:.2f} = {main:.2f} (main) + {lam:.1f} x {mtp:.2f} (MTP) + "
                f"{bal:.4f} (balance)")
    if abs(x - total) <= 0.2 or abs(x - expected) <= 0.2:
        return (f"predicted {x:.2f}; {measured} nats/char. Both the main model and the MTP module start out knowing "
                f"nothing, so each pays about ln {v} = {ln_v:.2f} per character; the optimizer minimises the main "
                f"loss plus {lam:.1f} times the MTP loss, so about {1 + lam:.1f} x {ln_v:.2f} = {expected:.2f}. The "
                f"balance losses are about alpha per MoE layer, too small to see at this precision.")
    gap = f"you predicted {x:.2f}; {measured}"
    if x < 0:
        raise Wrong(f"{gap}: a cross-entropy is -ln of a probability, never negative")
    if abs(x - ln_v) <= 0.1 or abs(x - main) <= 0.1:
        raise Wrong(f"{gap}: {x:.2f} is what the main model alone pays at step 0; the number the optimizer "
                    f"minimises has more than one term")
    if abs(x - 2 * ln_v) <= 0.2:
        raise Wrong(f"{gap}: you counted the MTP loss with weight 1; read its weight in this run's loss")
    if abs(x - 1.1 * ln_v) <= 0.1:
        raise Wrong(f"{gap}: a weight of 0.1 on the MTP loss is what V3 switches to late in training; this run "
                    f"uses the weight given in the Training section")
    if abs(x - (ln_v + lam)) <= 0.05:
        raise Wrong(f"{gap}: the weight multiplies the MTP loss; it is not a loss of its own")
    if any(abs(x - k * math.log2(v)) <= 0.2 for k in (1, 1 + lam, 2)):
        raise Wrong(f"{gap}: that is in bits (log2); the course measures losses in nats (natural log)")
    if 3.0 <= x <= 3.6 or abs(x - (1 + lam) * 3.3) <= 0.15:
        raise Wrong(f"{gap}: that is built on the unigram entropy, the loss of a model that already KNOWS how "
                    f"often each letter occurs; at step 0 neither the model nor its MTP module has seen any text")
    if x == 0:
        raise Wrong(f"{gap}: a loss of 0 means the model is certain and right every time; an untrained model knows "
                    f"nothing")
    if x <= 0.05 or math.isclose(x, (1 + lam) / v, rel_tol=0.1):
        raise Wrong(f"{gap}: {x:g} looks like a probability; the loss is -ln of the probability given to the right "
                    f"character")
    if math.isclose(x, v, rel_tol=0.05):
        raise Wrong(f"{gap}: {x:g} is the number of characters; the loss is -ln of the probability the model "
                    f"gives the right one")
    raise Wrong(f"{gap}: your guess is {'too high' if x > total else 'too low'}; think of what an untrained "
                f"model pays per character, and of every term the optimizer adds up")


# ---------------------------------------------------------------------------------------------------------- 0.3
#: The decoding loop exercise 0.3 shows (one line is wrong: after the prefill it counts one cached token, not T).
BUGGY_GENERATE_SOURCE = '''\
def greedy_generate(model, prompt, n_new):
    """Greedy decoding on the latent cache: prompt [T] token ids -> [T + n_new] ids."""
    ids = prompt[None]                                      # [1, T]
    cache = model.new_cache(1, model.cfg.max_position_embeddings)
    seen = 0                                                # tokens the cache holds
    for _ in range(n_new):
        logits = model(ids[:, seen:], cache=cache).logits   # feed what the cache has not seen
        seen += 1
        ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids[0]
'''


class _Recorder:
    """Wraps a model: forwards everything and records, for each call, the number of tokens fed, how many the
    cache held before (None without a cache) and which cache object it was."""

    def __init__(self, model):
        self._model = model
        self.calls: list[tuple[int, int | None]] = []
        self.caches: list[int] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, input_ids, *args, cache=None, **kwargs):
        held = cache[0].length if cache is not None else None
        self.calls.append((int(input_ids.shape[-1]), held))
        if cache is not None and id(cache) not in self.caches:
            self.caches.append(id(cache))
        return self._model(input_ids, *args, cache=cache, **kwargs)


def _bug_hunt_model():
    import torch

    from dsv3_lessons.model.config import tiny
    from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

    # weights 20x larger than the usual initialisation make the output depend strongly on the whole context (so
    # a corrupted cache changes the tokens), and a larger head makes every greedy pick win by a wide margin (at
    # least 0.5 in the logits on these trials), so the picks do not depend on the CPU's rounding
    torch.manual_seed(7)
    model = DeepSeekV3(tiny(vocab_size=24, initializer_range=0.4)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return model


#: (prompt length, new tokens) of the checker's trials: a one-token prompt first (the author's test), then longer
GENERATE_TRIALS = ((1, 8), (6, 5), (3, 8), (9, 4))


@checker("0.3", hint="run it: the checker compares it with the library's generate on prompts of several lengths. "
                     "Then follow `seen` and the cache through the first two calls for a prompt of 3 tokens.",
         more=["Write down, for a 3-token prompt, how many tokens each call feeds and how many the cache holds "
               "before and after it.",
               "After the first call, how many tokens does the cache hold, and what does `seen` say?",
               "`seen` must always equal the number of tokens the cache holds; each call adds as many as it fed."])
def check_greedy_generate(fn: Callable[..., Any]):
    """Exercise 0.3 (bug hunt): ``fn(model, prompt [T], n_new) -> ids [T + n_new]`` must decode greedily with
    the latent cache: one prefill of the prompt, then one token per call, all into the same cache.

    Oracle: :func:`dsv3_lessons.tools.generate.generate` (greedy) on a seeded tiny model, on the prompts of
    :data:`GENERATE_TRIALS` (a one-token prompt first: the bug as shown passes it). Wrong tokens get a symptom
    (which prompts, from which new token on), never the cause; right tokens from a loop that does not use the cache
    as a cache -- the whole sequence recomputed without it, a fresh cache per step, one token fed without a cache,
    tokens re-fed into a cache that holds them -- get named, as does a wrong number of ids.
    """
    import torch

    from dsv3_lessons.tools.generate import generate

    if not callable(fn):
        raise Wrong(f"pass your function itself (greedy_generate), not {type(fn).__name__}")
    model = _bug_hunt_model()
    gen = torch.Generator().manual_seed(3)
    passed: list[int] = []
    for t, n_new in GENERATE_TRIALS:
        prompt = torch.randint(0, model.cfg.vocab_size, (t,), generator=gen)
        rec = _Recorder(model)
        with torch.no_grad():
            got = call_learner(fn, rec, prompt.clone(), n_new)
        right = generate(model, prompt, n_new)[0]
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"return the token ids as a tensor [T + n_new], got {type(got).__name__}")
        got = got.reshape(-1)
        if got.numel() != t + n_new:
            raise Wrong(f"for a {t}-token prompt and {n_new} new tokens return {t + n_new} ids (prompt included), "
                        f"got {got.numel()}")
        if not torch.equal(got, right):
            blind = [fed for fed, held in rec.calls[1:] if held is None]
            if blind and max(blind) == 1:
                raise Wrong(f"{len(blind)} decoding steps fed one token but no cache (cache=...), so they saw none "
                            f"of the earlier tokens; your ids differ from the library's")
            i = int((got != right).nonzero()[0])
            earlier = (f"right for a {passed[0]}-token prompt, but " if passed else "")
            where = (f"from new token {i - t + 1} on (position {i})" if i >= t else
                     f"already inside the prompt (position {i}): return the prompt unchanged before the new ids")
            raise Wrong(f"{earlier}for a {t}-token prompt and {n_new} new tokens your ids differ from the "
                        f"library's {where}: yours {got[t:].tolist()}, library {right[t:].tolist()}")
        passed.append(t)
        cached = [(fed, held) for fed, held in rec.calls if held is not None]
        uncached = [fed for fed, held in rec.calls[1:] if held is None]
        if len(rec.caches) > 1:
            raise Wrong(f"right tokens, but your loop made {len(rec.caches)} caches for one {t}-token prompt: each "
                        f"step fills a new cache from scratch, so the work per step grows with the sequence; keep "
                        f"one cache and add one token per step")
        if uncached and max(uncached) > 1:
            raise Wrong(f"right tokens, but {len(uncached)} steps re-ran the whole sequence without the cache (up to "
                        f"{max(uncached)} tokens per step: the work grows with the sequence); the exercise is to "
                        f"decode with the cache")
        refed = [(fed, held) for fed, held in cached if held > 0 and fed > 1]
        if refed:
            fed, held = refed[0]
            raise Wrong(f"right tokens this time, but a step fed {fed} tokens to a cache that already held {held}: "
                        f"only the token just chosen is new")
    return ("right for prompts of 1 to 9 tokens: one prefill, then one token per step into the same cache, so a "
            "step's work no longer grows with the sequence.")


# ---------------------------------------------------------------------------------------------------------- 0.4
#: Sequences of token ids the checker of exercise 0.4 scores (none of them appears in the chapter). Short on
#: purpose: there the last id (which starts no pair) changes the counts, and the usual slips give distinct numbers.
ENTROPY_CASES: dict[str, list[int]] = {
    "a cycle": [0, 1, 2] * 4,
    "one repeated id": [5] * 6,
    "skewed": [0, 0, 1, 0, 2, 0, 0, 1, 1, 0, 2, 2],
    "sparse ids": [2, 40, 40, 83, 2, 83, 83, 2, 40],
    "one pair": [3, 7],
}


def conditional_entropy_reference(ids) -> float:
    """H(next | previous) in nats of a 1-D id sequence, from its N − 1 adjacent pairs (a, b):
    −Σ_{a,b} p(a, b) ln p(b | a), with p(a, b) = count(a, b) / (N − 1) and p(b | a) = count(a, b) / count(a as the
    FIRST id of a pair). Counted with :class:`collections.Counter` over Python ints (an oracle independent of any
    tensor code). Raises ValueError for fewer than two ids."""
    import collections

    seq = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    if len(seq) < 2:
        raise ValueError(f"need at least two ids (one pair), got {len(seq)}")
    pairs = collections.Counter(zip(seq[:-1], seq[1:]))
    first = collections.Counter(seq[:-1])
    n = len(seq) - 1
    return -sum(c / n * math.log(c / first[a]) for (a, _), c in pairs.items())


def _entropy_slips(seq: list[int]) -> dict[str, float]:
    """What the usual slips return for ``seq`` (name -> value)."""
    import collections

    n_pairs = len(seq) - 1
    pairs = collections.Counter(zip(seq[:-1], seq[1:]))
    first, second, every = (collections.Counter(seq[:-1]), collections.Counter(seq[1:]),
                            collections.Counter(seq))

    def h(counter, n):
        return -sum(c / n * math.log(c / n) for c in counter.values())

    right = conditional_entropy_reference(seq)
    per_context = {a: -sum(c / first[a] * math.log(c / first[a]) for (x, _), c in pairs.items() if x == a)
                   for a in first}
    return {
        "joint": h(pairs, n_pairs),
        "unigram": h(every, len(seq)),
        "all-N marginal": h(pairs, n_pairs) - h(every, len(seq)),
        "all-N denominator": -sum(c / n_pairs * math.log(c / every[a]) for (a, _), c in pairs.items()),
        "second marginal": h(pairs, n_pairs) - h(second, n_pairs),
        "unweighted": sum(per_context.values()) / len(per_context),
        "summed": sum(per_context.values()),
        "bits": right / math.log(2),
        "sign": -right,
    }


_SLIP_MESSAGES = {
    "joint": "that is the entropy of the PAIRS (how surprising a pair is), not of the next id once the previous one "
             "is known; a pair's surprise includes the surprise of its first id, which the model is given",
    "unigram": "that is the unigram entropy: it ignores the previous id",
    "all-N marginal": "the entropy of the first ids must be counted over the same N − 1 pairs: the last id of the "
                      "sequence starts no pair",
    "all-N denominator": "p(b | a) divides by how often a STARTS a pair; counting a over all N positions includes "
                         "the last id, which starts none, so the shares of a context no longer sum to 1",
    "second marginal": "you subtracted the entropy of the SECOND ids of the pairs; the model is given the first id, "
                       "so that is the one to condition on",
    "unweighted": "you averaged the contexts' entropies with equal weights; a context that occurs more often "
                  "counts more (weigh it by its share of the pairs)",
    "summed": "you summed the contexts' entropies; weigh each by its share of the pairs, so they average",
    "bits": "that is in bits (log2); the course measures losses in nats (natural log)",
    "sign": "the sign is flipped: an entropy is never negative",
}


@checker("0.4", hint="the model is told the previous id: what is the surprise of the next one then, and how often "
                     "does each (previous, next) pair occur?",
         more=["Count the adjacent pairs (previous, next). There are N − 1 of them.",
               "For a given previous id a, the next id's shares are the counts of the pairs that start with a, "
               "divided by how many pairs start with a.",
               "Average the surprise -ln of those shares over all N − 1 pairs (a frequent pair counts often). "
               "Only pairs that occur belong in the sum."])
def check_conditional_entropy_function(fn: Callable[[Any], Any], held_out=None):
    """Exercise 0.4: ``fn(ids)`` (a 1-D ``torch.long`` tensor of N ≥ 2 ids) must return H(next | previous) in nats,
    from the sequence's own N − 1 adjacent pairs (:func:`conditional_entropy_reference`).

    Checked on :data:`ENTROPY_CASES`; the slips of :data:`_SLIP_MESSAGES` (the joint entropy, the unigram entropy,
    the marginal or the denominator counted over all N ids, conditioning on the second id, an unweighted or summed
    average over contexts, bits, the sign) and 0·ln 0 = NaN are named. With ``held_out`` (ids) the ✓ line also gives
    the reference value there next to its unigram entropy.
    """
    import torch

    if not callable(fn):
        raise Wrong(f"pass your function itself (conditional_entropy), not {type(fn).__name__}")
    for name, ids in ENTROPY_CASES.items():
        got = call_learner(fn, torch.tensor(ids, dtype=torch.long))
        raw = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
        if isinstance(raw, float) and math.isnan(raw):
            raise Wrong(f"for the '{name}' ids {ids} you return NaN: a count of 0 gives 0·ln 0 = 0·(-inf) = NaN in "
                        f"floating point (a table over every possible pair holds many zeros); sum only over the "
                        f"pairs that occur")
        got = as_number(got, f"what your function returns for the '{name}' case")
        right = conditional_entropy_reference(ids)
        if math.isclose(got, right, rel_tol=1e-5, abs_tol=1e-7):
            continue
        where = f"for the '{name}' ids {ids} you return {got:.4f}, expected {max(right, 0.0):.4f} nats"
        for slip, value in _entropy_slips(ids).items():
            if not math.isclose(value, right, rel_tol=1e-5, abs_tol=1e-7) and \
                    math.isclose(got, value, rel_tol=1e-5, abs_tol=1e-7):
                raise Wrong(f"{where}: {_SLIP_MESSAGES[slip]}")
        raise Wrong(f"{where}: average, over the N − 1 adjacent pairs, the surprise of the next id given the "
                    f"previous one")
    done = f"right on all {len(ENTROPY_CASES)} sequences (nats)."
    if held_out is None:
        return done
    from dsv3_lessons.tools.data import unigram_entropy

    h1 = unigram_entropy(held_out)
    h2 = conditional_entropy_reference(held_out)
    return (f"{done} On the held-out plays, knowing the previous character lowers the best possible loss from "
            f"{h1:.2f} (unigram) to {h2:.2f} nats/char. Compare the trained model's held-out loss printed in "
            f"the Training section: below {h2:.2f} means it uses more than one character of context.")
