"""Chapter 8 experiments: held-out prompts, pooled acceptance statistics, the widget's report, and the stored
numbers of a longer-trained model.

Nothing here measures time. Tokens per main-model forward and the acceptance rates are counts: they do not move
with the machine's load, so the widget shows them; wall-clock speed is measured side by side in the chapter's
section 6 and by ``bench/speculative.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dsv3_lessons.tools.speculative import SpeculativeStats, speculative_generate

__all__ = ["held_out_prompts", "pooled_stats", "speculative_report", "prompt_limits", "longer_run",
           "LONGER_RUN_FILE"]

#: the record ``bench/speculative.py --record`` wrote for a longer-trained model (see :func:`longer_run`).
LONGER_RUN_FILE = Path(__file__).with_name("longer_run.json")


def held_out_prompts(data, n: int, length: int, seed: int = 5) -> list[torch.Tensor]:
    """``n`` prompts of ``length`` tokens from the validation works (windows chosen with ``seed``)."""
    x, _ = data.get_batch("val", n, length, generator=torch.Generator().manual_seed(seed))
    return [row[None] for row in x]


def pooled_stats(model, prompts, new_tokens: int, k: int, temperature: float = 0.0) -> SpeculativeStats:
    """Speculative decoding of every prompt (``[1, n]`` each) with draft length ``k``; the counts of all runs
    added into one :class:`~dsv3_lessons.tools.speculative.SpeculativeStats` (rates pooled over all verify steps,
    so a prompt with more steps weighs more). Raises ValueError for an empty ``prompts`` list."""
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    total = SpeculativeStats(k=k)
    for seed, p in enumerate(prompts):
        _, st = speculative_generate(model, p, new_tokens, k=k, temperature=temperature, seed=seed)
        total.new_tokens += st.new_tokens
        total.main_forwards += st.main_forwards
        total.draft_steps += st.draft_steps
        total.accepted_per_step += st.accepted_per_step
        total.drafted_per_step += st.drafted_per_step
    return total


def prompt_limits(model, tokenizer, max_new_tokens: int = 48) -> dict:
    """What the widget's prompt box accepts: ``max_chars`` (positions minus new tokens), ``positions``
    (``max_position_embeddings``), ``vocab_size`` and ``vocab`` (the characters, as a string)."""
    positions = model.cfg.max_position_embeddings
    vocab = "".join(tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
    return {"max_chars": positions - max_new_tokens, "positions": positions, "vocab_size": tokenizer.vocab_size,
            "vocab": vocab}


def speculative_report(model, tokenizer, prompt: str, temperature: float, k: int, max_new_tokens: int = 48,
                       seed: int = 0) -> dict:
    """What the chapter-08 widget shows for one setting: decode ``prompt`` speculatively, count what it saves.

    Returns ``prompt``, ``text`` (the continuation), ``k``, ``temperature``, ``acceptance_rates`` (per draft position: the
    fraction of verify steps that accepted d_1 … d_j), ``mean_accepted_length`` (1 + Σ rates, tokens per verify
    step), ``tokens_per_forward`` (new tokens per main-model forward, the prefill included), ``main_forwards``
    and ``plain_forwards`` (what plain decoding needs for the same tokens: one forward per token). All counts:
    nothing depends on the machine's speed or load. Raises ValueError for an empty prompt, characters outside the
    vocabulary, a prompt too long for ``max_position_embeddings``, a negative temperature or ``k < 1`` (the
    last three from :func:`~dsv3_lessons.tools.speculative.speculative_generate`).
    """
    if not prompt:
        raise ValueError("prompt is empty: type at least one character")
    ids = torch.tensor([tokenizer.encode(prompt)])
    out, stats = speculative_generate(model, ids, max_new_tokens, k=k, temperature=temperature, seed=seed)
    return {"prompt": prompt, "text": tokenizer.decode(out[0, ids.shape[1]:]), "k": k, "temperature": temperature,
            "acceptance_rates": stats.acceptance_rates, "mean_accepted_length": stats.mean_accepted_length,
            "tokens_per_forward": stats.tokens_per_forward, "main_forwards": stats.main_forwards,
            "plain_forwards": stats.new_tokens, "new_tokens": stats.new_tokens}


def longer_run(path: Path | str = LONGER_RUN_FILE) -> dict:
    """The stored record of ``bench/speculative.py`` on a longer-trained tiny model (the command that made it is
    in the record's ``command``): ``train_steps``, ``ks`` (per draft length: ``acceptance_rates``,
    ``tokens_per_forward`` …) and ``beyond_window`` (k = 1 past the 64-token training window).
    Raises FileNotFoundError when the record is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: python bench/speculative.py --train-steps 800 --ks 1 2 3 4 "
                                f"--record {path}")
    return json.loads(path.read_text())
