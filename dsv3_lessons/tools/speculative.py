"""Speculative decoding with DeepSeek-V3's own MTP module as the draft model (V3 report §2.2, §5.4.3).

The V3 report keeps its MTP module at inference as a *draft*: it proposes the token after next, the
main model checks it, and an accepted draft saves a main-model step (85–90 % acceptance of the second
token, 1.8× tokens per second, V3 §5.4.3). The general algorithm is speculative decoding (Leviathan et
al. 2023, arXiv 2211.17192; Chen et al. 2023, arXiv 2302.01318). One iteration, with x_0 … x_{n−1} in
the main model's latent cache and the main model's own next token x_n already chosen:

1. **draft** -- the MTP module reads (h^0_{n−1}, Emb(x_n)) and proposes d_1 for x_{n+1}; for k > 1
   the *same* module runs again on its own handed-on state and d_1, proposing d_2, … (k module steps);
2. **verify** -- ONE main-model forward over [x_n, d_1, …, d_k] on the cache: position n+j−1 gives the
   main model's distribution p_j for x_{n+j}, and the last position its distribution after all drafts;
3. **accept** -- the longest prefix d_1 … d_m that passes the check (greedy: equal to the main model's
   argmax; sampling: kept with probability min(1, p_j(d_j)/q_j(d_j))), then ONE token from the main
   model itself: its argmax (greedy), a draw from normalise(max(0, p − q)) after a rejection, or a
   draw from p after all k were accepted. Every iteration therefore emits m + 1 ≥ 1 tokens for one
   main-model forward;
4. **roll back** -- both latent caches are truncated to what a fresh prefill of the accepted sequence
   holds (:meth:`LatentCache.truncate`); the MTP module's entries written from draft states are redone
   with the main model's true hidden states of the accepted tokens (this "catch-up" feed also drafts the
   next d_1).

The draft never "predicts alternatives" or keeps backup plans: it proposes one continuation, the main
model accepts a prefix of it, and the output distribution is the main model's alone -- exactly (greedy:
token for token; sampling: in distribution, :func:`accept_or_resample`).

Design decisions (pinned, and tested in ``tests/test_speculative.py``)
--------------------------------------------------------------------
* **What the module reads.** MTP position p consumes (h_p, x_{p+1}) and predicts x_{p+2}; for accepted
  positions h_p is the main model's h^0_p *after its final norm* -- what the module reads in training
  (``DeepSeekV3.forward``), so the first draft equals the training-time depth-1 prediction.
* **What is handed from one draft step to the next** (k > 1). The module was trained on h^0, the
  normalised state that ``lm_head`` reads. Its own counterpart is ``shared_head.norm(h^1)``: the state
  whose head output the draft was taken from, just as ``lm_head(h^0)`` gives the main model's logits. That
  is what the next draft step receives, at the next position, with Emb(d_j). (The un-normalised block
  output h^1, which a second *trained* depth would read in the training chain, differs from it by the
  gain of ``shared_head.norm``; a D = 1 module has never seen either, which is why acceptance falls
  with the draft position.)
* **Batch 1.** Drafts are accepted per sequence, so rows of a batch would drift apart; the functions
  here decode one sequence (``prompt`` may be ``[seq]`` or ``[1, seq]``).
* **Accounting.** ``tokens_per_forward`` = new tokens / main-model forwards (prefill included, so plain
  decoding scores exactly 1.0); per draft position j, ``acceptance_rates[j]`` = fraction of verify steps
  that accepted at least j+1 drafts; hence ``mean_accepted_length`` = 1 + Σ_j rates = mean tokens emitted
  per verify step. Near ``max_new_tokens`` a step drafts only as many tokens as can still be emitted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from dsv3_lessons.model.mla import LatentCache
from .generate import _as_prompt, _check, _generator, generate, next_token_probs

__all__ = ["MTPDrafter", "SpeculativeStats", "SpeculativeDecoder", "speculative_generate", "accept_or_resample",
           "acceptance_probability", "residual_distribution", "compare_speed"]


# ------------------------------------------------------------------------------------------ the rule
def acceptance_probability(p: torch.Tensor, q: torch.Tensor) -> float:
    """Probability that a draft drawn from q passes the check against p: Σ_x min(p(x), q(x)) = 1 − TV(p, q).

    ``p``, ``q``: ``[vocab]`` probability vectors. Toy case p = [.6, .3, .1], q = [.3, .6, .1] -> 0.70.
    Raises ValueError when the shapes differ.
    """
    p, q = _as_dist(p, "p"), _as_dist(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return float(torch.minimum(p, q).sum())


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """normalise(max(0, p − q)) ``[vocab]``: where a rejected draft's replacement is drawn from.

    When p == q (nothing to correct, a rejection then has probability 0) it returns p.
    """
    p, q = _as_dist(p, "p"), _as_dist(q, "q")
    r = (p - q).clamp(min=0)
    total = r.sum()
    return p.clone() if float(total) <= 0 else r / total


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, draft: int,
                       generator: torch.Generator | None = None) -> tuple[bool, int | None]:
    """One check of a sampled draft (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    Keep ``draft`` (drawn from ``q [vocab]``) with probability min(1, p(draft)/q(draft)); otherwise
    draw the replacement from :func:`residual_distribution`. The token that comes out is distributed
    exactly as ``p`` whatever q is. Returns ``(True, None)`` or ``(False, replacement)``.

    Raises:
        ValueError: ``draft`` outside ``[0, vocab)`` or a draft the proposal could not have drawn (q = 0).
    """
    if not (isinstance(draft, int) and not isinstance(draft, bool) and 0 <= draft < p.shape[-1]):
        raise ValueError(f"draft must be a token id in [0, {p.shape[-1]}), got {draft!r}")
    qd = float(q[draft])
    if qd <= 0:
        raise ValueError(f"draft {draft} has probability 0 under q: it cannot have been drawn from q")
    u = float(torch.rand((), generator=generator))
    if u < min(1.0, float(p[draft]) / qd):
        return True, None
    return False, int(torch.multinomial(residual_distribution(p, q), 1, generator=generator))


def _as_dist(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64 if not isinstance(x, torch.Tensor) else None)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"{name} must be a 1-D probability vector [vocab], got shape {tuple(x.shape)}")
    if bool((x < 0).any()) or abs(float(x.sum()) - 1.0) > 1e-4:
        raise ValueError(f"{name} must be non-negative and sum to 1, got sum {float(x.sum()):.6f}")
    return x


# ------------------------------------------------------------------------------------------ the drafter
class MTPDrafter:
    """The MTP module (``model.mtp[0]``) as a draft model with its own :class:`LatentCache`.

    MTP position p holds the module's attention entry for (h_p, x_{p+1}); ``length`` counts them.
    Args: ``model`` a DeepSeekV3 with at least one MTP module; ``max_len`` the cache size (tokens).
    Raises ValueError when the model has no MTP module.
    """

    def __init__(self, model: nn.Module, max_len: int):
        if not len(getattr(model, "mtp", [])):
            raise ValueError("the model has no MTP module (num_nextn_predict_layers = 0): nothing can draft")
        self.model = model
        self.module = model.mtp[0]
        self.cache: LatentCache = self.module.new_cache(1, max_len)

    @property
    def length(self) -> int:
        return self.cache.length

    def feed(self, hidden: torch.Tensor, next_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append positions ``length … length+s−1``: states ``hidden [1, s, d]``, tokens ``next_ids [1, s]``.

        Returns the draft logits of the last position ``[1, vocab]`` and the state handed to the next draft
        step, ``shared_head.norm(h^1)`` of that position ``[1, 1, d]`` (see the module docstring).
        """
        h1 = self.module(hidden, self.model.embed_tokens(next_ids), self.cache.length, self.cache)
        handed = self.module.shared_head.norm(h1[:, -1:])
        return self.model.lm_head(handed)[:, -1], handed

    def truncate(self, length: int) -> None:
        """Forget positions from ``length`` on (draft-state entries before a catch-up)."""
        self.cache.truncate(length)


# ------------------------------------------------------------------------------------------ accounting
@dataclass
class SpeculativeStats:
    """Counts of one :func:`speculative_generate` run.

    Attributes:
        k: draft length; new_tokens: tokens generated; main_forwards: main-model forwards (prefill
        included); draft_steps: MTP module forwards (catch-up feeds and later draft steps);
        accepted_per_step: drafts accepted in each verify step (m); drafted_per_step: drafts offered.
    """

    k: int
    new_tokens: int = 0
    main_forwards: int = 0
    draft_steps: int = 0
    accepted_per_step: list[int] = field(default_factory=list)
    drafted_per_step: list[int] = field(default_factory=list)

    @property
    def verify_steps(self) -> int:
        return len(self.accepted_per_step)

    @property
    def acceptance_rates(self) -> list[float]:
        """Per draft position j = 1 … k: fraction of verify steps that accepted d_1 … d_j (all of them)."""
        n = self.verify_steps
        return [sum(m >= j for m in self.accepted_per_step) / n if n else 0.0 for j in range(1, self.k + 1)]

    @property
    def conditional_rates(self) -> list[float]:
        """Per position j: P(d_j accepted | d_1 … d_{j−1} accepted and d_j offered) (nan where never reached)."""
        out = []
        for j in range(1, self.k + 1):
            reached = sum(m >= j - 1 and d >= j for m, d in zip(self.accepted_per_step, self.drafted_per_step))
            acc = sum(m >= j for m in self.accepted_per_step)
            out.append(acc / reached if reached else float("nan"))
        return out

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verify step = 1 + Σ_j acceptance_rates[j]."""
        return 1.0 + sum(self.acceptance_rates)

    @property
    def tokens_per_forward(self) -> float:
        """New tokens per main-model forward (plain decoding: exactly 1.0)."""
        return self.new_tokens / self.main_forwards if self.main_forwards else 0.0


# ------------------------------------------------------------------------------------------ decoding
class SpeculativeDecoder:
    """The state of one speculative decoding run, advanced one draft/verify/accept iteration at a time.

    Invariant between iterations (tested against fresh prefills): ``tokens`` holds the prompt and every
    emitted token x_0 … x_n; the main cache holds x_0 … x_{n−1} (x_n, the main model's own latest token,
    goes in with the next verify); the drafter holds MTP positions 0 … n−1 built from the main model's
    true hidden states; ``q_logits``/``handed`` are its draft for x_{n+1}.

    Args: as :func:`speculative_generate` (``max_len`` = the caches' size in tokens).
    """

    def __init__(self, model: nn.Module, prompt: torch.Tensor, max_len: int, k: int = 1,
                 temperature: float = 0.0, top_k: int | None = None, generator: torch.Generator | None = None):
        self.model, self.k, self.temperature, self.top_k, self.gen = model, k, temperature, top_k, generator
        self.drafter = MTPDrafter(model, max_len)                      # checks for an MTP module
        self.cache = model.new_cache(1, max_len)
        self.stats = SpeculativeStats(k=k)
        out = model(prompt, cache=self.cache)                          # prefill: main cache holds 0 … n−1
        self.stats.main_forwards += 1
        self.tokens: list[int] = prompt[0].tolist()
        self.tokens.append(_pick(out.logits[:, -1], temperature, top_k, generator))   # x_n
        self.q_logits, self.handed = self.drafter.feed(out.hidden, torch.tensor([self.tokens[1:]]))
        self.stats.draft_steps += 1
        self.last_step: dict = {}

    def draft(self, ks: int) -> tuple[list[int], list[torch.Tensor | None]]:
        """``ks`` draft tokens from the one MTP module applied ``ks`` times, and their distributions q_j."""
        drafts: list[int] = []
        qs: list[torch.Tensor | None] = []
        q_logits, handed = self.q_logits, self.handed
        for j in range(ks):
            if j:                                                       # the same module again, one position on
                q_logits, handed = self.drafter.feed(handed, _t(drafts[-1]))
                self.stats.draft_steps += 1
            if self.temperature == 0:
                drafts.append(int(q_logits[0].argmax()))
                qs.append(None)
            else:
                q = next_token_probs(q_logits[0], self.temperature, self.top_k)
                drafts.append(int(torch.multinomial(q, 1, generator=self.gen)))
                qs.append(q)
        return drafts, qs

    def step(self, ks: int | None = None) -> list[int]:
        """One iteration: draft ``ks`` (default ``k``) tokens, verify them in one main forward, accept,
        roll back, catch up. Returns the tokens it emitted (m accepted drafts + the main model's own)."""
        ks = self.k if ks is None else ks
        n = len(self.tokens) - 1                                        # main cache length = drafter length
        drafts, qs = self.draft(ks)
        verify = self.model(torch.tensor([[self.tokens[-1], *drafts]]), cache=self.cache)  # checks + next token
        self.stats.main_forwards += 1
        m, nxt = _accept(verify.logits[0], drafts, qs, self.temperature, self.top_k, self.gen)
        self.stats.accepted_per_step.append(m)
        self.stats.drafted_per_step.append(ks)
        for layer_cache in self.cache:
            layer_cache.truncate(n + m + 1)                             # keep x_n, d_1 … d_m; drop rejected drafts
        self.drafter.truncate(n)                                        # drop entries built from draft states
        emitted = drafts[:m] + [nxt]
        self.tokens += emitted
        # catch-up: MTP positions n … n+m from the main model's true states; its last output drafts x_{n+m+2}
        self.q_logits, self.handed = self.drafter.feed(verify.hidden[:, :m + 1], torch.tensor([emitted]))
        self.stats.draft_steps += 1
        self.last_step = {"drafts": drafts, "accepted": m, "next": nxt,
                          "main_choice": verify.logits[0].argmax(-1).tolist()}
        return emitted


@torch.no_grad()
def speculative_generate(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, *,
                         k: int = 1, temperature: float = 0.0, top_k: int | None = None,
                         seed: int | None = None, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, SpeculativeStats]:
    """Decode with the main model verifying drafts of its own MTP module, on the latent caches.

    Args:
        model: a :class:`dsv3_lessons.model.DeepSeekV3` with ``num_nextn_predict_layers >= 1`` (eval mode
            here, restored after).
        prompt: ``[seq]`` or ``[1, seq]`` token ids.
        max_new_tokens: tokens to append (prompt + new ≤ ``max_position_embeddings``).
        k: draft length (≥ 1): the one MTP module runs k times per iteration.
        temperature, top_k, seed, generator: as :func:`dsv3_lessons.tools.generate.generate`; with
            ``temperature == 0`` the output equals greedy :func:`generate` token for token, otherwise it is
            a sample of the same distribution (not the same tokens for the same seed).
    Returns:
        ``ids [1, seq + max_new_tokens]`` and the :class:`SpeculativeStats` of the run.
    Raises:
        ValueError: bad prompt/lengths/temperature/top_k (as ``generate``), ``k`` not a positive integer,
            batch > 1, or a model without an MTP module.
    """
    ids = _as_prompt(prompt)
    _check(model, ids, max_new_tokens, temperature, top_k)
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k (draft length) must be a positive integer, got {k!r}")
    if ids.shape[0] != 1:
        raise ValueError(f"speculative decoding here runs one sequence at a time; got a batch of {ids.shape[0]}")
    if not len(getattr(model, "mtp", [])):
        raise ValueError("the model has no MTP module (num_nextn_predict_layers = 0): nothing can draft")
    gen = _generator(seed, generator)
    if max_new_tokens == 0:
        return ids, SpeculativeStats(k=k)
    was_training = model.training
    model.eval()
    try:
        dec = SpeculativeDecoder(model, ids, ids.shape[1] + max_new_tokens, k, temperature, top_k, gen)
        target = ids.shape[1] + max_new_tokens
        while len(dec.tokens) < target:
            dec.step(min(k, target - len(dec.tokens) - 1))              # never draft what cannot be emitted
    finally:
        model.train(was_training)
    dec.stats.new_tokens = len(dec.tokens) - ids.shape[1]
    return torch.tensor([dec.tokens]), dec.stats


def _t(token: int) -> torch.Tensor:
    return torch.tensor([[token]])


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator | None) -> int:
    """One token from ``logits [1, vocab]`` with the rule of ``sample_next``."""
    if temperature == 0:
        return int(logits[0].argmax())
    return int(torch.multinomial(next_token_probs(logits[0], temperature, top_k), 1, generator=gen))


def _accept(logits: torch.Tensor, drafts: list[int], qs: list, temperature: float, top_k: int | None,
            gen: torch.Generator | None) -> tuple[int, int]:
    """Drafts accepted (m) and the main model's own next token, from verify logits ``[len(drafts)+1, V]``."""
    if temperature == 0:
        main = logits.argmax(dim=-1).tolist()                            # main model's choice at every position
        m = 0
        while m < len(drafts) and drafts[m] == main[m]:
            m += 1
        return m, main[m]
    for j, (d, q) in enumerate(zip(drafts, qs)):
        ok, replacement = accept_or_resample(next_token_probs(logits[j], temperature, top_k), q, d, gen)
        if not ok:
            return j, replacement
    return len(drafts), _pick(logits[-1:], temperature, top_k, gen)


# ------------------------------------------------------------------------------------------ timing
def compare_speed(model: nn.Module, prompts: Sequence[torch.Tensor], max_new_tokens: int, k: int = 1,
                  temperature: float = 0.0, repeats: int = 1, seed: int = 0) -> dict:
    """Wall-clock tokens/s of plain cached decoding vs speculative decoding, measured side by side.

    For every prompt (and repeat) both decoders run back to back, alternating which goes first, so a
    machine that slows down slows both. Both use the latent cache. Returns a dict with ``plain_tps``,
    ``spec_tps`` (new tokens per second of wall time, summed over all runs), ``speedup`` (their ratio),
    ``tokens_per_forward``, ``acceptance_rates``, ``mean_accepted_length`` (over all runs) and
    ``identical`` (greedy only: whether every speculative output equalled the plain one).
    Raises ValueError for an empty ``prompts`` list or ``repeats < 1``.
    """
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    t_plain = t_spec = 0.0
    total = SpeculativeStats(k=k)
    identical = True
    run = 0
    for _ in range(repeats):
        for prompt in prompts:
            order = ("plain", "spec") if run % 2 == 0 else ("spec", "plain")
            for which in order:
                t0 = time.perf_counter()
                if which == "plain":
                    plain = generate(model, prompt, max_new_tokens, temperature=temperature, seed=seed + run)
                    t_plain += time.perf_counter() - t0
                else:
                    spec, st = speculative_generate(model, prompt, max_new_tokens, k=k, temperature=temperature,
                                                    seed=seed + run)
                    t_spec += time.perf_counter() - t0
            identical &= temperature != 0 or torch.equal(plain, spec)
            total.new_tokens += st.new_tokens
            total.main_forwards += st.main_forwards
            total.draft_steps += st.draft_steps
            total.accepted_per_step += st.accepted_per_step
            total.drafted_per_step += st.drafted_per_step
            run += 1
    n_tokens = run * max_new_tokens
    return {"plain_tps": n_tokens / t_plain, "spec_tps": n_tokens / t_spec, "speedup": t_plain / t_spec,
            "tokens_per_forward": total.tokens_per_forward, "acceptance_rates": total.acceptance_rates,
            "mean_accepted_length": total.mean_accepted_length, "identical": bool(identical),
            "stats": total}
