"""Helpers of chapters 07 (Multi-Token Prediction) and 08 (speculative decoding with the MTP draft).

The mechanisms live in the package (``model/mtp.py``, ``tools/speculative.py``); this module holds the
apparatus the notebooks need around them: a packed window of documents to look at, the table of which
token each depth predicts, the chapter's training recipe, the held-out prompts, and the report the
chapter-08 widget shows.
"""
from __future__ import annotations

from typing import Sequence

import torch

from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_labels

__all__ = ["pack_documents", "pack_lengths", "label_table", "mtp_train_config_kwargs", "V3_LAMBDA_SWITCH",
           "train_with_step_bar"]

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


def pack_lengths(doc_lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`pack_documents` of documents ``doc_lengths`` tokens long whose tokens are numbered in order (token j
    is t_j: the first document holds t_0 … t_{n_0 − 1}, the next one continues), so a label reads as the index of
    the token it names. Raises ValueError as :func:`pack_documents` does."""
    docs, start = [], 0
    for n in doc_lengths:
        docs.append(list(range(start, start + n)))
        start += n
    return pack_documents(docs)


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


def train_with_step_bar(model, data, cfg, desc: str):
    """:func:`dsv3_lessons.tools.train.train` with a progress bar that shows steps only (no rate, no time).

    A notebook stores a bar's final text; with rates and elapsed times in it, a stored ``[03:18, 6.01 s/it]`` next
    to ``[00:59]`` reads as "this model trains 3× slower", when it was only a busy machine. This bar counts the
    model's training forwards (one per optimizer step; evaluations run in eval mode and are not counted) and its
    text is ``desc: |####| n/total steps``. Returns the :class:`~dsv3_lessons.tools.train.History`.
    """
    from dsv3_lessons.tools.progress import progress
    from dsv3_lessons.tools.train import train

    bar = progress(total=cfg.steps, desc=desc, bar_format="{desc}: |{bar}| {n_fmt}/{total_fmt} steps", leave=True)

    def count(module, args):
        if module.training:
            bar.update(1)

    handle = model.register_forward_pre_hook(count)
    try:
        return train(model, data, cfg, progress=False)
    finally:
        handle.remove()
        bar.close()
