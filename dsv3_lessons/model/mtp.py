"""Multi-Token Prediction (MTP) modules (V3 report §2.2, eqs. 21–25).

Depth k (1 ≤ k ≤ D) predicts token t_{i+k+1} from position i. Its input combines the previous depth's
representation h^{k−1}_i with the embedding of t_{i+k}:

    h'^k_i = M_k [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k−1}_i)]        (eq. 21, order pinned below)
    h^k    = TRM_k(h'^k)                                              (eq. 22, own transformer block)
    P^k    = OutHead(h^k)                                             (eq. 23, shared head)

Conventions pinned here:

* **Concat order: embedding first.** The released weights' ``eh_proj`` takes
  [``enorm``(embedding) ; ``hnorm``(hidden)] -- the opposite of the order printed in eq. 21. We follow
  the weights, so a real checkpoint's ``eh_proj`` works unchanged.
* **Shared embedding and head.** Emb and OutHead are the main model's (not copies); the released
  checkpoint stores duplicates under ``model.layers.61.embed_tokens`` / ``shared_head.head``. A
  ``shared_head.norm`` RMSNorm sits before the head.
* **Sequential, not parallel.** Depth k feeds on depth k−1, keeping the causal chain.
* **h^0 is the main model's output after its final norm** (``model.norm``), then ``hnorm`` again --
  what transformers' MTP layer and vLLM's DeepSeek MTP receive; the paper's Figure 3 does not say
  which side of the final norm h^0 is taken from.
* **Labels.** With ``targets[:, i] = t_{i+1}``, depth k's target at position i is ``targets[:, i+k]``;
  positions i ≥ T−k are dropped (never wrapped), and the ignore index (−100) is respected. For *packed*
  windows (several documents in one row) :func:`mtp_labels` takes ``doc_ids`` and masks every label whose
  token lies in another document than position i: no label crosses a document boundary. That masking is this
  course's rule, not the paper's: V3 §4.1 packs documents without cross-sample attention masking and says
  nothing about masking MTP labels at document boundaries.
* **Loss: a convention of this course.** L_MTP = (λ/D)·Σ_k L^k_MTP (eq. 25); λ is the caller's
  ``mtp_loss_weight``. Eq. 24 as printed is L^k_MTP = −(1/T)·Σ_{i=2+k}^{T+1} log P^k_i[t_i]: depth k's T − k
  terms divided by T, the input length. This library divides instead by depth k's *own* count of unmasked
  labels (a mean per label), so that labels lost to the dropped tail and to document masks do not shrink a
  depth's weight; at V3's T = 4096 with D = 1 the two differ by the factor (T − 1)/T. A depth whose labels
  are all masked contributes exactly 0, with finite (zero) gradients.
* **Reuse as a drafter.** At inference the one module can be applied k times in a row to draft k tokens
  (``dsv3_lessons.tools.speculative``); ``start_pos``/``cache`` give it its own :class:`LatentCache`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import DecoderLayer
from .config import DeepseekV3Config
from .layers import RMSNorm
from .mla import LatentCache

__all__ = ["MTPModule", "IGNORE_INDEX", "mtp_inputs_and_targets", "mtp_labels", "mtp_cross_entropy"]

IGNORE_INDEX = -100


class _SharedHead(nn.Module):
    """Holds ``shared_head.norm``; the head weight itself is the main model's ``lm_head``."""

    def __init__(self, cfg: DeepseekV3Config):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPModule(DecoderLayer):
    """One MTP depth: a :class:`DecoderLayer` plus ``enorm``, ``hnorm``, ``eh_proj`` and ``shared_head.norm``.

    ``forward(h_prev [b, T', d], emb_next [b, T', d]) -> h [b, T', d]`` where ``emb_next`` holds
    Emb(t_{i+k}) for the same positions. Logits are ``lm_head(shared_head.norm(h))``.
    """

    def __init__(self, cfg: DeepseekV3Config, layer_idx: int, aux_loss_alpha: float = 0.0):
        super().__init__(cfg, layer_idx, aux_loss_alpha)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.shared_head = _SharedHead(cfg)

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor, start_pos: int = 0,
                cache: LatentCache | None = None) -> torch.Tensor:  # type: ignore[override]
        """h^k ``[b, T', d]`` from h^{k−1} ``[b, T', d]`` and Emb(t_{i+k}) ``[b, T', d]`` (eqs. 21–22).

        ``start_pos``/``cache``: as for :class:`DecoderLayer` -- the module's own attention positions and
        an optional latent cache of its block (used when it drafts token by token). Raises ValueError
        when the two inputs' shapes differ.
        """
        if h_prev.shape != emb_next.shape:
            raise ValueError(f"h_prev {tuple(h_prev.shape)} and emb_next {tuple(emb_next.shape)} must match")
        x = self.eh_proj(torch.cat([self.enorm(emb_next), self.hnorm(h_prev)], dim=-1))
        return super().forward(x, start_pos, cache)

    def new_cache(self, batch: int, max_len: int) -> LatentCache:
        """An empty :class:`LatentCache` for this module's own attention (drafting)."""
        return self.self_attn.new_cache(batch, max_len)


def mtp_labels(targets: torch.Tensor, depth: int, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Depth k's labels: t_{i+k+1} at position i = 0 … T−k−1, ``IGNORE_INDEX`` where it must not count.

    Args:
        targets: ``[b, T]`` next-token ids, ``targets[:, i] = t_{i+1}`` (−100 = ignore). A packer must
            already put −100 where t_{i+1} lies in another document than t_i (the main model's rule).
        depth: k ≥ 0 (0 returns the main model's labels, a copy of ``targets``).
        doc_ids: optional ``[b, T]`` document id of every *input* token t_i (packed windows). The label of
            position i is masked when t_{i+k} belongs to another document than t_i; together with the
            packer's −100 on t_{i+k+1} this means no label crosses a document boundary.
    Returns:
        ``[b, T−k]`` int64 labels (positions i ≥ T−k have no label at depth k: dropped, never wrapped).
    Raises:
        ValueError: ``depth`` not an integer in ``[0, T)``, or ``doc_ids`` not an integer tensor shaped
            like ``targets``.
    Source: V3 report §2.2 eq. 24 (depth k's target at position i is t_{i+k+1}).
    """
    if not isinstance(targets, torch.Tensor) or targets.dim() != 2:
        raise ValueError(f"targets must be a [batch, seq] tensor, got "
                         f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
    t = targets.shape[1]
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth < t:
        raise ValueError(f"depth must be an integer in [0, {t}) for a sequence of {t} tokens, got {depth!r}")
    labels = targets[:, depth:].clone()
    if doc_ids is not None:
        if not isinstance(doc_ids, torch.Tensor) or doc_ids.shape != targets.shape or doc_ids.is_floating_point():
            raise ValueError(f"doc_ids must be an integer tensor shaped like targets {tuple(targets.shape)} "
                             f"(the document of every input token), got "
                             f"{tuple(doc_ids.shape) if isinstance(doc_ids, torch.Tensor) else type(doc_ids).__name__}")
        crosses = doc_ids[:, depth:] != doc_ids[:, :t - depth]   # t_{i+k} in another document than t_i
        labels[crosses] = IGNORE_INDEX
    return labels


def mtp_inputs_and_targets(input_ids: torch.Tensor, targets: torch.Tensor, depth: int,
                           doc_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For depth k: the tokens t_{i+k} to embed and the labels t_{i+k+1}, for i = 0 … T−k−1.

    ``input_ids``, ``targets``: ``[b, T]`` with ``targets[:, i] = t_{i+1}``; ``doc_ids`` as in
    :func:`mtp_labels`. Returns two ``[b, T−k]`` tensors. Raises ValueError when T ≤ k (no position has
    a target at that depth).
    """
    t = input_ids.shape[1]
    if t <= depth:
        raise ValueError(f"sequence length {t} too short for MTP depth {depth}")
    return input_ids[:, depth:], mtp_labels(targets, depth, doc_ids)


def mtp_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the depth's own non-ignored targets (nats/token).

    ``logits [b, T', V]``, ``targets [b, T']``. The mean divides by this depth's unmasked label count -- the
    course's convention; eq. 24 as printed divides the sum by T, the input length (see the module docstring).
    A depth whose targets are all ignored contributes exactly 0 (not NaN) and its gradient is 0 everywhere
    (finite).
    """
    if not bool((targets != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
