"""Autoregressive decoding on the MLA latent cache: greedy and sampled (temperature, top-k).

How :func:`generate` works (V2 report §2.1 / V3 report §2.1.1 for what is cached):

1. **prefill** -- one forward over the whole prompt with fresh caches (:meth:`DeepSeekV3.new_cache`);
   every layer stores the normalised latent c^KV and the rotated shared key k^R of each prompt token;
2. **decode** -- pick the next token from the last position's logits, feed *only that token* with
   the cache; its position continues from the cache length, and attention reads the cached latents.

:func:`generate_no_cache` is the reference: it recomputes the full forward over the whole sequence at
every step. The tests check that both give the same tokens and the same logits, which is the proof that
the cache holds exactly what attention needs (and that the rope key is rotated once, at its position).

Sampling: logits / temperature, optionally keep the top-k, softmax, draw with a ``torch.Generator`` so a
seed reproduces the text. ``temperature = 0`` means greedy (argmax; ties go to the lowest id).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["generate", "generate_no_cache", "generate_text", "sample_next", "next_token_probs"]


def _as_prompt(prompt: Sequence[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(prompt, (str, bytes)):
        raise ValueError("prompt must be token ids, not text; encode it first (or use generate_text)")
    try:
        ids = torch.as_tensor(prompt)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"prompt must be a sequence or tensor of integer token ids: {exc}") from exc
    if ids.numel() == 0:
        raise ValueError("prompt is empty: give at least one token to condition on")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"prompt must hold integer token ids, got dtype {ids.dtype}")
    ids = ids.long()
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"prompt must be [seq] or [batch, seq] token ids, got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError("prompt is empty: give at least one token to condition on")
    return ids


def _check(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, temperature: float,
           top_k: int | None) -> None:
    if not (hasattr(model, "cfg") and hasattr(model, "new_cache")):
        raise ValueError(f"model must be a dsv3_lessons DeepSeekV3 (with .cfg and .new_cache), got "
                         f"{type(model).__name__}")
    if not (isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool) and max_new_tokens >= 0):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.vocab_size:
        raise ValueError(f"prompt ids must lie in [0, {model.cfg.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    limit = model.cfg.max_position_embeddings
    if ids.shape[1] + max_new_tokens > limit:
        raise ValueError(f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} = "
                         f"{ids.shape[1] + max_new_tokens} exceeds max_position_embeddings {limit}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and not isinstance(top_k, bool)
                                  and 1 <= top_k <= model.cfg.vocab_size):
        raise ValueError(f"top_k must be in [1, vocab_size={model.cfg.vocab_size}] or None, got {top_k}")


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids ``[batch]`` from last-position logits ``[batch, vocab]``.

    ``temperature == 0``: argmax. Otherwise softmax(logits / temperature) restricted to the ``top_k``
    largest logits (all when None), sampled with ``generator``.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_token_probs(logits: torch.Tensor, temperature: float, top_k: int | None = None) -> torch.Tensor:
    """The distribution :func:`sample_next` draws from, ``[..., vocab]`` float32 summing to 1.

    ``temperature > 0``: softmax(logits / temperature) over the ``top_k`` largest logits (all when None),
    zero elsewhere. ``temperature == 0``: one-hot on the argmax (ties to the lowest id), the limit of
    the same rule. Speculative decoding needs these explicit distributions (p of the main model, q of
    the draft) for its acceptance rule. Raises ValueError for a negative or non-finite temperature.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    return generator


@torch.no_grad()
def generate(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
             generator: torch.Generator | None = None, return_logits: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode with the latent cache: prefill the prompt once, then one token per forward.

    Args:
        model: a :class:`dsv3_lessons.model.deepseek_v3.DeepSeekV3` (put in eval mode here, restored after).
        prompt: ``[seq]`` or ``[batch, seq]`` token ids (at least one token).
        max_new_tokens: tokens to append; prompt + new must fit ``max_position_embeddings``.
        temperature: 0 = greedy; > 0 samples from softmax(logits / temperature).
        top_k: sample only among the k most likely tokens (None = all).
        seed / generator: the randomness for sampling (one or the other).
        return_logits: also return the logits each new token was picked from.
    Returns:
        ``ids [batch, seq + max_new_tokens]`` (prompt included), and with ``return_logits`` also
        ``logits [batch, max_new_tokens, vocab]``.
    Raises:
        ValueError: empty prompt, too long a generation, bad temperature/top_k, seed and generator both given.
    """
    return _decode(model, prompt, max_new_tokens, temperature, top_k, seed, generator, return_logits,
                   use_cache=True)


@torch.no_grad()
def generate_no_cache(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, *,
                      temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                      generator: torch.Generator | None = None, return_logits: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference decoder: the full forward over the whole sequence at every step (no cache).

    Same arguments, returns and errors as :func:`generate`; O(T²) work per token, used to prove
    :func:`generate` right.
    """
    return _decode(model, prompt, max_new_tokens, temperature, top_k, seed, generator, return_logits,
                   use_cache=False)


def _decode(model, prompt, max_new_tokens, temperature, top_k, seed, generator, return_logits, use_cache):
    """The decoding loop shared by both paths; they differ only in what each step feeds the model."""
    ids = _as_prompt(prompt)
    _check(model, ids, max_new_tokens, temperature, top_k)
    gen = _generator(seed, generator)
    was_training = model.training
    model.eval()
    steps_logits = []
    out = ids
    try:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + max_new_tokens) if use_cache else None
        logits = model(ids, cache=cache).logits[:, -1]  # prefill (fills the latent cache when used)
        for i in range(max_new_tokens):
            steps_logits.append(logits)
            nxt = sample_next(logits, temperature, top_k, gen)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if i + 1 < max_new_tokens:
                # cached: only the new token goes in; reference: the whole sequence is recomputed
                step = model(nxt[:, None], cache=cache) if use_cache else model(out)
                logits = step.logits[:, -1]
    finally:
        model.train(was_training)
    if return_logits:
        vocab = model.cfg.vocab_size
        stacked = torch.stack(steps_logits, 1) if steps_logits else torch.zeros(ids.shape[0], 0, vocab)
        return out, stacked
    return out


def generate_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, **kwargs) -> str:
    """Encode ``prompt`` with ``tokenizer``, :func:`generate`, decode; returns prompt + continuation."""
    if not prompt:
        raise ValueError("prompt is empty: give at least one character to condition on")
    ids = generate(model, tokenizer.encode(prompt), max_new_tokens, **kwargs)
    return tokenizer.decode(ids[0])
