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
  positions i ≥ T−k are dropped (never wrapped), and the ignore index (−100) is respected.
* **Loss.** L_MTP = (λ/D)·Σ_k CE_k (eq. 25); λ is the caller's ``mtp_loss_weight``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import DecoderLayer
from .config import DeepseekV3Config
from .layers import RMSNorm

__all__ = ["MTPModule", "IGNORE_INDEX", "mtp_inputs_and_targets"]

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

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if h_prev.shape != emb_next.shape:
            raise ValueError(f"h_prev {tuple(h_prev.shape)} and emb_next {tuple(emb_next.shape)} must match")
        x = self.eh_proj(torch.cat([self.enorm(emb_next), self.hnorm(h_prev)], dim=-1))
        return super().forward(x, 0, None)


def mtp_inputs_and_targets(input_ids: torch.Tensor, targets: torch.Tensor, depth: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """For depth k: the tokens t_{i+k} to embed and the targets t_{i+k+1}, for i = 0 … T−k−1.

    ``input_ids``, ``targets``: ``[b, T]`` with ``targets[:, i] = t_{i+1}``. Returns two ``[b, T−k]``
    tensors. Raises ValueError when T ≤ k (no position has a target at that depth).
    """
    t = input_ids.shape[1]
    if t <= depth:
        raise ValueError(f"sequence length {t} too short for MTP depth {depth}")
    return input_ids[:, depth:], targets[:, depth:]


def mtp_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over non-ignored targets (nats/token). ``logits [b, T', V]``, ``targets [b, T']``.

    A depth whose targets are all ignored contributes 0 (not NaN).
    """
    if not bool((targets != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
