"""One DeepSeek-V3 transformer block (pre-norm): h = x + MLA(norm(x)); out = h + FFN(norm(h)).

The FFN is a dense SwiGLU for the first ``first_k_dense_replace`` layers and DeepSeekMoE after
(V3 report §2.1, §4.2). Names follow the checkpoint: ``input_layernorm``, ``self_attn``,
``post_attention_layernorm``, ``mlp``.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DeepseekV3Config
from .layers import RMSNorm, SwiGLU
from .mla import LatentCache, MultiHeadLatentAttention
from .moe import DeepseekMoE

__all__ = ["DecoderLayer"]


class DecoderLayer(nn.Module):
    """``forward(x [batch, seq, d], start_pos, cache) -> [batch, seq, d]``."""

    def __init__(self, cfg: DeepseekV3Config, layer_idx: int, aux_loss_alpha: float = 0.0):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MultiHeadLatentAttention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.is_moe_layer(layer_idx):
            self.mlp: nn.Module = DeepseekMoE(cfg, aux_loss_alpha)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, DeepseekMoE)

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: LatentCache | None = None) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), start_pos, cache)
        return h + self.mlp(self.post_attention_layernorm(h))
