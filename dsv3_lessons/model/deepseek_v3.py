"""The assembled DeepSeek-V3: embedding → blocks → norm → head, plus D MTP modules.

Source: V3 report §2 (architecture), §2.2 (MTP), §4.2 (hyper-parameters). Read top to bottom:

    ids ──embed_tokens──► h ──layers[0 … first_k_dense_replace-1] (dense SwiGLU)
                            ──layers[first_k_dense_replace …] (DeepSeekMoE) ──norm──► h^0
    h^0 ──lm_head──► logits                            (next token, t_{i+1})
    h^0 ──mtp[0] (with Emb(t_{i+1}))──► h^1 ──shared_head.norm──lm_head──► t_{i+2}  …

State-dict names follow the released checkpoint with the ``model.`` prefix dropped
(``embed_tokens``, ``layers.{i}.self_attn.kv_a_proj_with_mqa`` …); MTP depth k lives under ``mtp.{k-1}``
and maps to the checkpoint's ``model.layers.{num_hidden_layers + k - 1}`` (see ``hf_compat``).

Losses (all in nats per token):
    loss = CE_main + (λ/D)·Σ_k CE_k + Σ_layers L_bal        (λ = ``mtp_loss_weight``)
The sequence-wise balance loss L_bal (α = ``aux_loss_alpha``, V3: 1e-4) is computed only in training mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .block import DecoderLayer
from .config import DeepseekV3Config
from .layers import RMSNorm
from .mla import LatentCache, MultiHeadLatentAttention
from .moe import DeepseekMoE
from .mtp import IGNORE_INDEX, MTPModule, mtp_cross_entropy, mtp_labels

__all__ = ["DeepSeekV3", "ModelOutput", "IGNORE_INDEX", "use_reference_paths"]


@dataclass
class ModelOutput:
    """What :meth:`DeepSeekV3.forward` returns.

    logits ``[b, T, V]``; mtp_logits: list of D tensors ``[b, T−k, V]`` (empty when not computed);
    losses are scalars (nats/token) or None when no targets were given; hidden = h^0 ``[b, T, d]``
    (after the final norm).
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    main_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    mtp_logits: list[torch.Tensor] = field(default_factory=list)
    hidden: torch.Tensor | None = None


class DeepSeekV3(nn.Module):
    """A DeepSeek-V3 language model of any size (the tiny preset trains on a CPU).

    Args:
        cfg: the configuration (validated here).
        aux_loss_alpha: α of the sequence-wise balance loss (V3 §4.2: 1e-4; 0 switches it off).
        mtp_loss_weight: λ of the MTP loss (V3 §4.2: 0.3 for the first 10T tokens, then 0.1).
    """

    def __init__(self, cfg: DeepseekV3Config, aux_loss_alpha: float = 1e-4, mtp_loss_weight: float = 0.3):
        super().__init__()
        cfg.validate()
        for name, value in (("aux_loss_alpha", aux_loss_alpha), ("mtp_loss_weight", mtp_loss_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.cfg = cfg
        self.mtp_loss_weight = mtp_loss_weight
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, i, aux_loss_alpha) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.mtp = nn.ModuleList([MTPModule(cfg, cfg.num_hidden_layers + k, aux_loss_alpha)
                                  for k in range(cfg.num_nextn_predict_layers)])
        self.apply(self._init_weights)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)

    # ------------------------------------------------------------------ caches
    def new_cache(self, batch: int, max_len: int) -> list[LatentCache]:
        """One empty :class:`LatentCache` per main-model layer (MTP modules are not cached)."""
        for name, value in (("batch", batch), ("max_len", max_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_len > self.cfg.max_position_embeddings:
            raise ValueError(f"max_len {max_len} exceeds max_position_embeddings "
                             f"{self.cfg.max_position_embeddings}")
        return [layer.self_attn.new_cache(batch, max_len) for layer in self.layers]

    def moe_layers(self) -> list[DeepseekMoE]:
        """The main model's MoE layers (MTP's block excluded), in order."""
        return [layer.mlp for layer in self.layers if layer.is_moe]

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[LatentCache] | None = None, compute_mtp: bool | None = None,
                doc_ids: torch.Tensor | None = None) -> ModelOutput:
        """Run the model.

        Args:
            input_ids: ``[batch, T]`` token ids in ``[0, vocab_size)``.
            targets: optional ``[batch, T]`` next-token ids (``targets[:, i] = t_{i+1}``; −100 = ignore).
            cache: optional per-layer latent caches; positions continue from ``cache[0].length``.
            compute_mtp: run the MTP modules (default: when targets are given and D > 0).
            doc_ids: optional ``[batch, T]`` document id of each input token (packed windows): MTP labels
                never cross a document boundary (:func:`dsv3_lessons.model.mtp.mtp_labels`).
        Raises:
            ValueError: ids out of range, wrong shapes, or a sequence longer than the model allows.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point() or input_ids.is_complex() \
                or input_ids.dtype == torch.bool:
            raise ValueError("input_ids must be an integer torch.Tensor of token ids [batch, seq], got "
                             f"{type(input_ids).__name__}{'' if not isinstance(input_ids, torch.Tensor) else ' of ' + str(input_ids.dtype)}")
        if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [batch, seq] with batch, seq >= 1, got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.cfg.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.cfg.vocab_size}), got "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != input_ids.shape:
                raise ValueError(f"targets must be a tensor shaped like input_ids {tuple(input_ids.shape)}, got "
                                 f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
            if not bool((targets != IGNORE_INDEX).any()):
                raise ValueError(f"every target is the ignore index ({IGNORE_INDEX}): there is nothing to score")
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache must hold one LatentCache per layer ({len(self.layers)}), got {len(cache)}; "
                             f"make one with model.new_cache(batch, max_len)")
        start = cache[0].length if cache is not None else 0
        if start + input_ids.shape[1] > self.cfg.max_position_embeddings:
            raise ValueError(f"positions up to {start + input_ids.shape[1]} exceed max_position_embeddings "
                             f"{self.cfg.max_position_embeddings}")
        h = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, start, cache[i] if cache is not None else None)
        h = self.norm(h)  # h^0: also what the MTP modules receive (see mtp.py)
        logits = self.lm_head(h)
        out = ModelOutput(logits=logits, hidden=h)
        if compute_mtp is None:
            compute_mtp = targets is not None and len(self.mtp) > 0
        if compute_mtp:
            if cache is not None:
                raise ValueError("compute_mtp with a cache is not supported; run MTP on a full sequence")
            h_prev = h
            for k, module in enumerate(self.mtp, start=1):
                t_len = input_ids.shape[1] - k
                if t_len <= 0:
                    break
                ids_k = input_ids[:, k:]
                h_prev = module(h_prev[:, :t_len], self.embed_tokens(ids_k))
                out.mtp_logits.append(self.lm_head(module.shared_head.norm(h_prev)))
        if targets is not None:
            out.main_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                            ignore_index=IGNORE_INDEX)
            loss = out.main_loss
            if out.mtp_logits:
                # depth k: labels t_{i+k+1}, masked at document boundaries; mean over its own labels
                ces = [mtp_cross_entropy(lg, mtp_labels(targets, k, doc_ids))
                       for k, lg in enumerate(out.mtp_logits, start=1)]
                out.mtp_loss = torch.stack(ces).mean()
                loss = loss + self.mtp_loss_weight * out.mtp_loss
            ran = list(self.layers) + (list(self.mtp)[:len(out.mtp_logits)])
            moes = [layer.mlp for layer in ran if layer.is_moe]  # only MoE layers that ran in this forward
            if moes:
                out.aux_loss = torch.stack([m.aux_loss.to(loss.device) for m in moes]).sum()
                loss = loss + out.aux_loss
            out.loss = loss
        return out

    def num_parameters(self, include_mtp: bool = False) -> int:
        """Number of scalars in parameters and the balancing biases (the convention of ``count_parameters``)."""
        n = sum(p.numel() for name, p in self.named_parameters() if include_mtp or not name.startswith("mtp."))
        n += sum(b.numel() for name, b in self.named_buffers()
                 if name.endswith("e_score_correction_bias") and (include_mtp or not name.startswith("mtp.")))
        return n


def use_reference_paths(model: nn.Module) -> nn.Module:
    """Switch every module of ``model`` to the readable reference code the fast paths were checked against.

    Routed experts run one at a time (``DeepseekMoE.impl = "loop"``), cache-free attention runs the written-out
    einsum/softmax (``use_sdpa = False``) and RMSNorm computes its formula op by op (``use_fused = False``).
    Same numbers up to float rounding (tests/test_model.py); slower. Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, DeepseekMoE):
            m.impl = "loop"
        elif isinstance(m, MultiHeadLatentAttention):
            m.use_sdpa = False
        elif isinstance(m, RMSNorm):
            m.use_fused = False
    return model
