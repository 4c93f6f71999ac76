"""Chapter 8 experiments: held-out prompts and the speculative-decoding report the widget draws."""
from __future__ import annotations

import statistics
import time

import torch

from dsv3_lessons.tools.generate import generate
from dsv3_lessons.tools.speculative import speculative_generate

__all__ = ["held_out_prompts", "speculative_report"]


def held_out_prompts(data, n: int, length: int, seed: int = 5) -> list[torch.Tensor]:
    """``n`` prompts of ``length`` tokens from the validation works (windows chosen with ``seed``)."""
    x, _ = data.get_batch("val", n, length, generator=torch.Generator().manual_seed(seed))
    return [row[None] for row in x]


def speculative_report(model, tokenizer, prompt: str, temperature: float, k: int, max_new_tokens: int = 48,
                       seed: int = 0, repeats: int = 3) -> dict:
    """What the chapter-08 widget shows for one setting: decode ``prompt`` plainly and speculatively.

    Returns ``text`` (the speculative continuation), ``acceptance_rates`` (per draft position),
    ``mean_accepted_length``, ``tokens_per_forward``, ``plain_tps``/``spec_tps`` (new tokens per second of
    wall time: the median of ``repeats`` back-to-back runs, alternating which goes first, since one
    wall-clock timing on a shared machine is noisy), ``speedup`` and ``repeats``. Raises ValueError for an
    empty prompt, characters outside the vocabulary, a negative temperature, ``k < 1`` or ``repeats < 1``.
    """
    if not prompt:
        raise ValueError("prompt is empty: type at least one character")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    ids = torch.tensor([tokenizer.encode(prompt)])
    spec_out, stats = speculative_generate(model, ids, max_new_tokens, k=k, temperature=temperature, seed=seed)
    times = {"spec": [], "plain": []}
    runs = {"spec": lambda: speculative_generate(model, ids, max_new_tokens, k=k, temperature=temperature, seed=seed),
            "plain": lambda: generate(model, ids, max_new_tokens, temperature=temperature, seed=seed)}
    for r in range(repeats):
        for name in (("spec", "plain") if r % 2 == 0 else ("plain", "spec")):
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    t_spec, t_plain = statistics.median(times["spec"]), statistics.median(times["plain"])
    return {"text": tokenizer.decode(spec_out[0, ids.shape[1]:]), "k": k, "temperature": temperature,
            "acceptance_rates": stats.acceptance_rates, "mean_accepted_length": stats.mean_accepted_length,
            "tokens_per_forward": stats.tokens_per_forward, "plain_tps": max_new_tokens / t_plain, "repeats": repeats,
            "spec_tps": max_new_tokens / t_spec, "speedup": t_plain / t_spec}
