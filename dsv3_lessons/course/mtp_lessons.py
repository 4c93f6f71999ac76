"""Helpers of chapters 07 (Multi-Token Prediction) and 08 (speculative decoding with the MTP draft).

The mechanisms live in the package (``model/mtp.py``, ``tools/speculative.py``); this module holds the
apparatus the notebooks need around them: a packed window of documents to look at, the table of which
token each depth predicts, the chapter's training recipe, the held-out prompts, and the report the
chapter-08 widget shows.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch

from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_labels
from dsv3_lessons.tools.generate import generate
from dsv3_lessons.tools.speculative import speculative_generate

__all__ = ["pack_documents", "label_table", "mtp_train_config_kwargs", "held_out_prompts", "speculative_report",
           "V3_LAMBDA_SWITCH"]

#: V3 §4.2: λ = 0.3 for the first 10 T of 14.8 T training tokens, then 0.1 -> the switch at this fraction.
V3_LAMBDA_SWITCH = 10.0 / 14.8


def pack_documents(docs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One packed training window from whole documents: ``(input_ids, targets, doc_ids)``, each ``[1, T]``.

    The documents are concatenated (T + 1 tokens in all); ``targets[:, i] = t_{i+1}``, set to −100 where
    t_{i+1} starts another document (the packer's rule for the main loss); ``doc_ids[:, i]`` is the
    document of input token t_i. Raises ValueError for fewer than 2 tokens in all or an empty document.
    """
    if not docs or any(len(d) == 0 for d in docs):
        raise ValueError("docs must be a non-empty list of non-empty token sequences")
    stream = torch.cat([torch.as_tensor(list(d), dtype=torch.long) for d in docs])
    if stream.numel() < 2:
        raise ValueError("the packed documents need at least 2 tokens (one input and its target)")
    doc = torch.cat([torch.full((len(d),), i, dtype=torch.long) for i, d in enumerate(docs)])
    targets = torch.where(doc[1:] == doc[:-1], stream[1:], torch.tensor(IGNORE_INDEX))
    return stream[:-1][None], targets[None], doc[:-1][None]


def label_table(targets: torch.Tensor, depths: int, doc_ids: torch.Tensor | None = None) -> list[list[int]]:
    """Row k (0 = main model, 1 … ``depths`` = MTP depths) holds, for every position i of a ``[1, T]``
    window, the label id the depth is trained on there, or −100 (masked, or past the end)."""
    t = targets.shape[1]
    rows = []
    for k in range(depths + 1):
        lab = mtp_labels(targets, k, doc_ids)[0].tolist() if k < t else []
        rows.append(lab + [IGNORE_INDEX] * k)
    return rows


def mtp_train_config_kwargs(steps: int, with_mtp: bool = True) -> dict:
    """The chapters' TrainConfig keywords: λ 0.3 -> 0.1 at V3's switch point, scaled to ``steps``."""
    kw = dict(steps=steps, batch_size=16, seq_len=64, lr=3e-3, warmup_steps=20, eval_interval=0,
              eval_batches=4, bias_update_speed=0.01, seed=0)
    if with_mtp:
        kw["mtp_lambda_schedule"] = (0.3, 0.1, V3_LAMBDA_SWITCH)
    return kw


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
