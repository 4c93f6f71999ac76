"""Exercise checkers of chapter 08 (speculative decoding with the MTP draft; exercises 8.1–8.4), on the
never-raising pattern of :mod:`dsv3_lessons.course.common.checking`: "not attempted yet" with a nudge (never the
formula), ✗ with a diagnosis that points to ``hint("8.N")``, ✓. Oracles: the closed-form rule of Leviathan et al.
2023 (arXiv 2211.17192) and :mod:`dsv3_lessons.tools.speculative`; the verify step is checked against a fresh
prefill of the accepted tokens on a small-vocabulary tiny model.

* 8.1 (predict, then run) tokens per main forward at k = 4 on the chapter's held-out prompts;
* 8.2 (variation, code) the draft distribution, acceptance probability and residual of a top-k draft;
* 8.3 (bug hunt, code) a greedy verify step whose cache roll-back is off by one;
* 8.4 (explain with a number) the cost of a verify step implied by V3's 85 % acceptance and 1.8× speed.
"""
from __future__ import annotations

import functools

import torch

from dsv3_lessons.tools.speculative import acceptance_probability, residual_distribution
from dsv3_lessons.course.common.checking import (___, Wrong, as_number, call_learner, checker, close,  # noqa: F401
                                                 hint, is_placeholder, unchanged_source)

__all__ = ["___", "hint", "check_tokens_per_forward_prediction", "check_topk_draft", "check_verify_step",
           "check_verify_cost", "EX84"]

#: Exercise 8.4: V3 §5.4.3 — acceptance of the second token (low end of 85–90 %) and the tokens-per-second ratio.
EX84 = {"acceptance": 0.85, "speedup": 1.8}


# ------------------------------------------------------------------------------------------------ 8.1
@checker("8.1", hint="picture the greedy text of a briefly trained character model, and ask whether the fourth "
                     "draft is much harder to guess than the first",
         more=["each verify step emits 1 + (number of drafts accepted) tokens; the prefill is one forward that "
               "emits one token", "if every draft position were accepted as often as the first, how many tokens "
               "would a step with k = 4 emit?"])
def check_tokens_per_forward_prediction(predicted, measured):
    """``predicted``: tokens per main forward at k = 4, written before the run; ``measured``: the run's pooled
    :class:`~dsv3_lessons.tools.speculative.SpeculativeStats` for k = 4."""
    x = as_number(predicted, "your prediction (tokens per main forward)")
    got, rates = measured.tokens_per_forward, measured.acceptance_rates
    shown = ", ".join(f"{r:.2f}" for r in rates)
    if x < 1:
        raise Wrong(f"at least 1: every verify step emits the main model's own token, whatever the drafts (the run: "
                    f"{got:.2f})")
    if abs(x - (measured.k + 1)) < 1e-9:
        raise Wrong(f"{x:g} is k + 1: every one of the {measured.k} drafts accepted at every step. A later draft "
                    f"position counts only when every earlier one was accepted too, and the module drafts from its own "
                    f"output after the first position (the run: {got:.2f})")
    if x > measured.k + 1:
        raise Wrong(f"at most k + 1 = {measured.k + 1}: one step emits at most the 4 drafts and the main model's own "
                    f"token (the run: {got:.2f})")
    if abs(x - got) <= 0.2 * got:
        return (f"you predicted {x:.2f}, the run gave {got:.2f}: acceptance per position {shown}. The rates hardly "
                f"fall with j: this briefly trained model repeats itself, and repeated text is easy to draft.")
    if x < got:
        return_msg = (f"you predicted {x:.2f}, the run gave {got:.2f}. The acceptance per position was {shown}: it "
                      f"hardly falls with j, because this briefly trained model's greedy text falls into loops that "
                      f"the draft predicts almost perfectly, so each extra draft position adds almost a whole token. "
                      f"On a better-trained model the rates fall with j and the extra positions add less")
        raise Wrong(return_msg)
    raise Wrong(f"you predicted {x:.2f}, the run gave {got:.2f}: acceptance per position {shown}. A later draft "
                f"position counts only when every earlier draft was accepted too, and the module drafts from its "
                f"own output after the first position")


# ------------------------------------------------------------------------------------------------ 8.2
def _topk_cases():
    g = torch.Generator().manual_seed(82)
    for vocab, top_k in ((6, 2), (8, 3), (5, 4), (7, 7)):
        p = torch.rand(vocab, generator=g) ** 2
        q = torch.rand(vocab, generator=g) ** 2
        yield p / p.sum(), q / q.sum(), top_k


def _truncate(q_full, top_k):
    q = torch.zeros_like(q_full)
    idx = q_full.topk(top_k).indices
    q[idx] = q_full[idx]
    return q / q.sum()


@checker("8.2", hint="a top-k draft only ever proposes its k most likely tokens: which distribution is the draft "
                     "really sampling from?",
         more=["write that distribution first: zero outside the draft's top k, and still a probability distribution",
               "the acceptance probability and the residual are computed with the distribution the draft samples "
               "from, not with the full one",
               "a token outside the draft's top k can only come out of the residual: check that it can"])
def check_topk_draft(fn):
    """``fn(p, q_full, top_k) -> (q, acceptance, residual)``: the draft's sampling distribution ``[V]``, the
    probability that a draft survives (a number) and the replacement distribution ``[V]``."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (topk_draft), not a {type(fn).__name__}")
    for p, q_full, top_k in _topk_cases():
        out = call_learner(fn, p.clone(), q_full.clone(), top_k)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise Wrong("return the triple (q, acceptance, residual)")
        q, alpha, resid = out
        if any(is_placeholder(v) for v in out):
            raise NotImplementedError
        if not isinstance(q, torch.Tensor) or q.shape != p.shape or not isinstance(resid, torch.Tensor) \
                or resid.shape != p.shape:
            raise Wrong(f"q and residual must be tensors shaped like p {tuple(p.shape)}")
        q, resid = q.float(), resid.float()
        want_q = _truncate(q_full, top_k)
        if not torch.allclose(q, want_q, atol=1e-6):
            if torch.allclose(q, q_full, atol=1e-6) and top_k < len(p):
                raise Wrong(f"your q is the draft's full distribution, but a top-{top_k} draft never proposes the "
                            f"other {len(p) - top_k} tokens: they must get probability 0")
            if torch.allclose(q / q.sum(), want_q, atol=1e-6):
                raise Wrong(f"your q keeps the right {top_k} tokens but sums to {q.sum().item():.3f}: the draft "
                            f"samples from a probability distribution")
            raise Wrong(f"q differs from the draft's top-{top_k} distribution (for vocab {len(p)}): keep the {top_k} "
                        f"largest entries of q_full and make them a distribution")
        a = as_number(alpha, "acceptance")
        want_a = acceptance_probability(p, want_q)
        if not close(a, want_a, rel=1e-4):
            if close(a, acceptance_probability(p, q_full), rel=1e-4):
                raise Wrong("your acceptance uses the full q: the drafts come from the top-k distribution")
            if close(a, float((p * want_q).sum()), rel=1e-4):
                raise Wrong("Σ p·q is the chance that two independent draws agree; a draft is kept with "
                            "probability min(1, p/q), which is more generous")
            raise Wrong(f"acceptance {a:.4f} differs from the probability that a top-{top_k} draft survives "
                        f"({want_a:.4f} here)")
        want_r = residual_distribution(p, want_q)
        if not torch.allclose(resid, want_r, atol=1e-5):
            if torch.allclose(resid, residual_distribution(p, q_full), atol=1e-5):
                raise Wrong("your residual uses the full q: with the top-k q, tokens outside the top k have p − q = p "
                            "and must be able to come out of the residual")
            if torch.allclose(resid, (p - want_q).clamp(min=0), atol=1e-5):
                raise Wrong("the residual is not a distribution yet: it must sum to 1")
            if (resid < -1e-6).any():
                neg = int((resid < -1e-6).sum())
                raise Wrong(f"your residual has {neg} negative entr{'y' if neg == 1 else 'ies'} (smallest "
                            f"{resid.min().item():.3f}): a probability cannot be negative. Where the draft proposes a "
                            f"token more often than the main model would, p − q < 0: what should the replacement "
                            f"distribution give such a token?")
            raise Wrong("residual differs from the distribution a rejected top-k draft is replaced from")
    return ("the top-k draft's q, acceptance and residual match the rule: the output is still distributed as p, "
            "because the residual supplies everything the truncated draft cannot propose.")


# ------------------------------------------------------------------------------------------------ 8.3
#: Exercise 8.3's function as the notebook gives it (the checker answers it with the symptom only).
VERIFY_GREEDY_WITH_BUG = '''def verify_greedy(model, cache, x_n, drafts):
    """One greedy verify step; cache holds the n tokens before x_n. Returns the emitted tokens."""
    n = cache[0].length
    with torch.no_grad():
        choice = model(torch.tensor([[x_n, *drafts]]), cache=cache).logits[0].argmax(-1).tolist()
    m = 0
    while m < len(drafts) and drafts[m] == choice[m]:
        m += 1
    for layer_cache in cache:
        layer_cache.truncate(n + m + 2)          # roll back the rejected drafts
    return drafts[:m] + [choice[m]]
'''


@functools.lru_cache(maxsize=1)
def _small_model():
    from dsv3_lessons.model import DeepSeekV3, tiny

    g = torch.random.get_rng_state()
    torch.manual_seed(83)
    # a small vocabulary makes partial accepts easy to build; weights at std 0.5 (not 0.02) make the greedy
    # continuation change token at every step, so comparing a draft with the wrong column of choices is caught
    model = DeepSeekV3(tiny(vocab_size=5, initializer_range=0.5)).eval()
    torch.random.set_rng_state(g)
    return model


def _prefilled(model, ids: torch.Tensor, room: int):
    with torch.no_grad():
        cache = model.new_cache(1, ids.shape[1] + room)
        logits = model(ids, cache=cache).logits
    return cache, logits


def _verify_cases(k: int = 3):
    """(prompt, x_n, drafts, m, choice): the drafts are the main model's own greedy choices with the one at index m
    changed (m = k: none changed), ``choice`` the main model's token after x_n, d_1 … d_k (the reference verify).
    Prompts are drawn until the greedy chain x_n, g_1 … g_{k+1} never repeats a token twice in a row, so a verify
    that compares d_j with the wrong position's choice emits different tokens."""
    model = _small_model()
    g = torch.Generator().manual_seed(830)
    for m in (1, 0, 2, k):
        for _ in range(500):
            prompt = torch.randint(0, 5, (1, 6), generator=g)
            cache, logits = _prefilled(model, prompt, k + 3)
            chain = [int(logits[0, -1].argmax())]                    # x_n, then the greedy continuation after it
            with torch.no_grad():
                for _ in range(k + 1):
                    chain.append(int(model(torch.tensor([chain[-1:]]), cache=cache).logits[0, -1].argmax()))
            if all(a != b for a, b in zip(chain, chain[1:])):
                break
        else:                                                       # pragma: no cover - the seeds above find one
            raise RuntimeError("no prompt with a non-repeating greedy chain; change the seed")
        x_n, drafts = chain[0], chain[1:k + 1]
        if m < k:
            drafts[m] = (drafts[m] + 1) % 5
        ref, _ = _prefilled(model, prompt, k + 2)
        with torch.no_grad():
            choice = model(torch.tensor([[x_n, *drafts]]), cache=ref).logits[0].argmax(-1).tolist()
        accepted = 0
        while accepted < k and drafts[accepted] == choice[accepted]:
            accepted += 1
        yield prompt, x_n, drafts, accepted, choice


@checker("8.3", hint="after a verify step, what exactly must the cache hold? Count the positions: the n tokens "
                     "before x_n, x_n itself, and the drafts that were accepted",
         more=["run it on a step that rejects a draft and compare cache[0].length with the number of tokens that "
               "were accepted", "then try a step in which every draft is accepted",
               "the chapter's section 3 checks the state after a step against a fresh prefill: do the same"])
def check_verify_step(fn):
    """The learner's fixed ``verify_greedy(model, cache, x_n, drafts) -> emitted tokens``: emitted tokens and the
    cache after the step are compared with the rule and with a fresh prefill of the accepted tokens."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (verify_greedy), not a {type(fn).__name__}")
    model, given = _small_model(), unchanged_source(fn, VERIFY_GREEDY_WITH_BUG)
    for prompt, x_n, drafts, m, choice in _verify_cases():
        n = prompt.shape[1]
        cache, _ = _prefilled(model, prompt, len(drafts) + 2)
        case = (f"x_n = {x_n}, drafts {drafts}" + (f" (d_{m + 1} is rejected)" if m < len(drafts)
                                                   else " (all accepted)"))
        try:
            emitted = call_learner(fn, model, cache, x_n, list(drafts))
        except ValueError as exc:
            raise Wrong(f"on a step with {case} your function raised ValueError: {exc}") from None
        emitted = [int(t) for t in emitted] if isinstance(emitted, (list, tuple, torch.Tensor)) else emitted
        want = drafts[:m] + [choice[m]]
        if emitted != want:
            raise Wrong(f"on a step with {case}: emitted {emitted}, expected {want} (the accepted drafts, then the "
                        f"main model's own choice)")
        length, accepted = cache[0].length, n + m + 1
        kept = "the prompt and x_n" if m == 0 else "the prompt, x_n and " + ("d_1" if m == 1 else f"d_1 … d_{m}")
        if given and length != accepted:
            raise Wrong(f"this is the function as given: it emits the right tokens, but after a step with {case} the "
                        f"next step's output differs from a decoder that re-reads the accepted text from scratch. "
                        f"Compare the cache with the accepted tokens")
        lengths = [layer.length for layer in cache]
        if length == accepted and any(other != accepted for other in lengths):
            wrong_layers = [i for i, other in enumerate(lengths) if other != accepted]
            raise Wrong(f"on a step with {case}: layer 0's cache holds the {accepted} accepted tokens, but layer(s) "
                        f"{wrong_layers} hold {sorted({lengths[i] for i in wrong_layers})}: every layer keeps its own "
                        f"cache, and each must be rolled back")
        if length == accepted + 1:
            raise Wrong(f"on a step with {case}: the cache holds {length} positions, one more than the {accepted} "
                        f"accepted tokens ({kept}): the rejected draft's keys and values stay in "
                        f"the cache, and the next step would attend to them")
        if length != accepted:
            raise Wrong(f"on a step with {case}: the cache holds {length} positions, but {accepted} tokens were "
                        f"accepted ({kept})")
        fresh, _ = _prefilled(model, torch.cat([prompt, torch.tensor([[x_n, *drafts[:m]]])], dim=1), 2)
        if not all(torch.allclose(a.kv[:, :length], b.kv[:, :length], atol=1e-5)
                   and torch.allclose(a.k_pe[:, :length], b.k_pe[:, :length], atol=1e-5) for a, b in zip(cache, fresh)):
            raise Wrong(f"on a step with {case}: the cache has the right length but not the keys and values of the "
                        f"accepted tokens (compare with a fresh prefill)")
    return ("emitted tokens and the rolled-back cache equal a fresh prefill of the accepted tokens, after a "
            "rejection at every position and when everything is accepted.")


# ------------------------------------------------------------------------------------------------ 8.4
@checker("8.4", hint="compare what one verify step yields on average with what one plain step yields; then ask how "
                     "much longer than a plain step the verify step may take for the ratio of speeds to be 1.8",
         more=["with k = 1, a verify step emits the main model's own token, plus the draft when it is accepted",
               "speed is tokens per unit of time: tokens per step divided by the time per step",
               "give c as a fraction (0.1 means the verify step takes 10 % longer than a plain step)"])
def check_verify_cost(answer):
    c = as_number(answer, "c (the extra cost of a verify step, as a fraction)")
    a, speed = EX84["acceptance"], EX84["speedup"]
    right = (1 + a) / speed - 1
    if close(c, right, rel=0.02) or abs(c - right) <= 0.0025:   # 0.03 ("about 3 %") too
        return (f"c = (1 + {a})/{speed} − 1 ≈ {right:.3f}: a verify step with its draft costs only about "
                f"{100 * right:.0f} % more than a plain step. On a GPU, decoding is mostly limited by reading weights "
                f"and cache from memory, so verifying 2 positions instead of 1 and running the one-block MTP module "
                f"add little; on our CPU the tiny model is compute-bound and the overhead is far larger (section 6).")
    if close(c, 100 * right, rel=0.02):
        raise Wrong(f"{c:g} looks like a percentage; give c as a fraction ({c / 100:.4f}?)")
    if close(c, 1 + right, rel=0.02):
        raise Wrong(f"{c:g} is 1 + c, the whole cost of a verify step relative to a plain step; the exercise asks for "
                    f"c, the extra part only")
    if close(c, speed / (1 + a) - 1, rel=0.02):
        raise Wrong("that is negative: a verify step cannot be cheaper than a plain step. The ratio is upside down")
    if close(c, 1 + a - speed, rel=0.02):
        raise Wrong(f"{c:g} is a difference of token counts (1.85 − 1.8); the speed-up is a ratio of rates")
    if close(c, (1 + 0.9) / speed - 1, rel=0.02):
        raise Wrong(f"that uses 90 % acceptance; the exercise takes the low end, {a}")
    if close(c, a / speed, rel=0.02) or close(c, 1 / speed, rel=0.02):
        raise Wrong("a verify step yields 1 + (acceptance) tokens on average, not the acceptance alone")
    raise Wrong(f"{c:g} is not it: the ratio of the two speeds must come out at {speed}; check what one verify step "
                f"emits on average and how long it takes, both relative to a plain step")
