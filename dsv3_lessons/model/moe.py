"""DeepSeekMoE: shared + fine-grained routed experts, a sigmoid group-limited gate, and balancing.

Sources: V3 report §2.1.2 eqs. (12)–(20); "Auxiliary-Loss-Free Load Balancing" (Wang et al. 2024,
arXiv 2408.15664) Alg. 1 and §4.1 (MaxVio); official ``inference/model.py`` ``Gate``/``MoE``.

Output of an MoE layer for token t (eq. 12; the residual is added by the block):

    FFN(u_t) = Σ_{i ≤ N_s} FFN^(s)_i(u_t) + Σ_{i ≤ N_r} g_{i,t} FFN^(r)_i(u_t)

Gate (eqs. 13–16) with the conventions pinned here:

1. affinity s_{i,t} = sigmoid(u_t · e_i), in **float32** (the gate weight is kept fp32);
2. selection uses the *biased* score s_{i,t} + b_i, where b = ``e_score_correction_bias`` is a
   buffer (no gradient, no weight decay, no optimizer);
3. group-limited ("node-limited") routing: experts split into ``n_group`` groups; a group's score is
   the **sum of its two largest** biased scores; keep the best ``topk_group`` groups and mask the
   others with **−inf** (biased scores can be negative, so 0 would not exclude them);
4. top-K_r over what is left;
5. combine weights use the **unbiased** s_{i,t} of the selected experts, normalised to sum to 1,
   then multiplied by ``routed_scaling_factor`` exactly once.

No capacity limit, no token dropping (V3 §2.1.2 / §3.4 "No Token-Dropping").

Balancing (:func:`update_bias`): after each optimizer step, for every MoE layer,
b_i ← b_i + γ·sign(mean(c) − c_i), with c_i the number of tokens routed to expert i since the last
update: overloaded experts go **down**. V3 uses γ = 0.001.
The complementary sequence-wise loss (eqs. 17–20) is :func:`sequence_balance_loss`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepseekV3Config
from .layers import SwiGLU

__all__ = [
    "Gate",
    "DeepseekMoE",
    "sequence_balance_loss",
    "batch_balance_loss",
    "update_bias",
    "max_violation",
    "moe_layers",
]


class Gate(nn.Module):
    """Sigmoid top-K_r router with group limiting (V3 eqs. 13–16; official ``Gate``).

    ``forward(x [n_tokens, d])`` returns ``(weights [n_tokens, K_r], indices [n_tokens, K_r],
    scores [n_tokens, N_r])``: combine weights g (float32, they sum to ``routed_scaling_factor``
    when ``norm_topk_prob``), the selected expert ids, and the unbiased affinities s (float32).
    """

    def __init__(self, cfg: DeepseekV3Config):
        super().__init__()
        self.n_experts = cfg.n_routed_experts
        self.top_k = cfg.num_experts_per_tok
        self.n_group = cfg.n_group
        self.topk_group = cfg.topk_group
        self.norm_topk_prob = cfg.norm_topk_prob
        self.routed_scaling_factor = cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.float32))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))
        nn.init.normal_(self.weight, std=cfg.initializer_range)

    def _apply(self, fn, recurse=True):
        """Keep the router in float32 whatever ``model.to(dtype)`` asks; device moves still apply.

        V3 report §3.3 keeps the MoE gate in higher precision: weight and bias stay fp32 in a bf16 model.
        """
        super()._apply(fn, recurse)
        self.weight.data = self.weight.data.float()
        self.e_score_correction_bias = self.e_score_correction_bias.float()
        return self

    def group_mask(self, biased: torch.Tensor) -> torch.Tensor:
        """Boolean ``[n_tokens, N_r]``: True for experts in the ``topk_group`` best groups (top-2-sum score)."""
        n = biased.shape[0]
        if self.n_group == 1:
            return torch.ones_like(biased, dtype=torch.bool)
        grouped = biased.view(n, self.n_group, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [n, n_group]
        keep = group_scores.topk(self.topk_group, dim=-1).indices
        gmask = torch.zeros(n, self.n_group, dtype=torch.bool, device=biased.device)
        gmask.scatter_(1, keep, True)
        return gmask[:, :, None].expand_as(grouped).reshape(n, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"Gate expects [n_tokens, {self.weight.shape[1]}], got {tuple(x.shape)}")
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))  # s_{i,t}, fp32
        biased = scores + self.e_score_correction_bias.float()            # used for selection only
        biased = biased.masked_fill(~self.group_mask(biased), float("-inf"))
        indices = biased.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, indices)                                # unbiased affinities
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.routed_scaling_factor, indices, scores


class DeepseekMoE(nn.Module):
    """DeepSeekMoE FFN ``[batch, seq, d] -> [batch, seq, d]`` (residual added outside).

    Two implementations of the routed experts compute the same function (tests prove forward outputs and
    the gradients of every parameter, gate included, equal to float rounding):

    * ``impl="loop"`` -- the readable reference: one Python iteration per expert that received tokens,
      ``y = expert_e(x[tokens of e]) · g``, added back with ``index_add_``. This is V3 eq. 12 as written.
    * ``impl="fast"`` (default) -- no Python loop over experts. The N·K_r (token, expert) assignments are
      sorted by expert id, the tokens gathered once in that order, and all experts run as **two grouped
      matmuls** (``torch.nn.functional.grouped_mm``: one over the stacked [W_gate; W_up] of every expert,
      one over the stacked W_down), each expert's rows being a contiguous slice of the sorted tokens; one
      ``index_add_`` scatters the weighted outputs back. The expert weights are stacked with ``torch.stack``
      at every forward, so the parameters (and the checkpoint names ``experts.{i}.gate_proj.weight`` …)
      stay one tensor per expert and each expert's gradient flows back to its own parameter. Measured on
      2 CPU threads at the course sizes (``bench/RESULTS.md``) this beat the loop, a zero-padded
      ``torch.bmm`` and a dense "every expert for every token" matmul with masked combine weights.
      ``grouped_mm`` needs float32/bfloat16/float16 and rows aligned to 16 bytes; other dtypes or sizes
      (e.g. float64, or widths not a multiple of 4) fall back to the loop.

    One difference is not numerical: in the fast path an expert that received no token in a batch still
    gets a gradient tensor (of zeros) from ``torch.stack``'s backward, where the loop leaves ``.grad`` at
    None. AdamW then still decays that expert's moments and weight for the step. With every expert
    routed tokens (the usual case for a batch of a few thousand tokens) the two are identical.

    Attributes set by each forward (for balancing and plots; all detached):
        ``last_counts`` ``[N_r]`` int64 -- tokens routed to each expert in this forward;
        ``counts_since_update`` ``[N_r]`` -- summed over training forwards since :func:`update_bias`;
        ``aux_loss`` -- the sequence-wise balance loss of this forward (0 when ``aux_loss_alpha`` is 0),
        with gradient through the affinities.

    Raises:
        ValueError: ``impl`` not ``"fast"`` or ``"loop"``.
    """

    IMPLS = ("fast", "loop")

    def __init__(self, cfg: DeepseekV3Config, aux_loss_alpha: float = 0.0, impl: str = "fast"):
        super().__init__()
        if impl not in self.IMPLS:
            raise ValueError(f"impl must be 'fast' or 'loop', got {impl!r}")
        self.cfg = cfg
        self.aux_loss_alpha = aux_loss_alpha
        self.impl = impl
        self.experts = nn.ModuleList(
            [SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.n_routed_experts)])
        self.gate = Gate(cfg)
        self.shared_experts = (SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
                               if cfg.n_shared_experts > 0 else None)
        self.register_buffer("counts_since_update", torch.zeros(cfg.n_routed_experts), persistent=False)
        self.last_counts = torch.zeros(cfg.n_routed_experts, dtype=torch.long)
        self.aux_loss = torch.zeros(())

    def _apply(self, fn, recurse=True):
        """Keep ``counts_since_update`` in float32 whatever ``model.to(dtype)`` asks; device moves still apply.

        In bf16 a count above 256 rounds (8 mantissa bits), so an expert a few tokens over the mean would look
        balanced and its bias would not move (SPEC §9, "counted in bf16"). float32 counts exactly up to 2^24.
        """
        super()._apply(fn, recurse)
        self.counts_since_update = self.counts_since_update.float()
        return self

    # -------------------------------------------------------------- routed experts, two ways
    def routed_loop(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                    counts: torch.Tensor) -> torch.Tensor:
        """Reference path: Σ_i g_{i,t} FFN_i(u_t) one expert at a time. ``flat [n, d]`` -> ``[n, d]``."""
        out = torch.zeros_like(flat)
        for e in torch.nonzero(counts).flatten().tolist():
            token_idx, slot = torch.where(indices == e)
            y = self.experts[e](flat[token_idx]) * weights[token_idx, slot, None].to(flat.dtype)
            out.index_add_(0, token_idx, y)
        return out

    def _grouped_mm_ok(self, flat: torch.Tensor) -> bool:
        align = {torch.float32: 4, torch.bfloat16: 8, torch.float16: 8}.get(flat.dtype)
        w = self.experts[0].gate_proj.weight
        return (align is not None and flat.device.type == "cpu" and w.dtype == flat.dtype
                and flat.shape[-1] % align == 0 and w.shape[0] % align == 0)

    def routed_fast(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                    counts: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`routed_loop` with sorted assignments and two grouped matmuls (see class docstring)."""
        if not self._grouped_mm_ok(flat):
            return self.routed_loop(flat, weights, indices, counts)
        k = indices.shape[1]
        order = indices.flatten().argsort(stable=True)      # assignments grouped by expert id
        token = order // k                                   # the token of each sorted assignment
        offs = torch.cumsum(counts, 0).to(torch.int32)       # end row of each expert's slice
        x = flat.index_select(0, token)                      # [n·K_r, d]
        # [W_gate,0; W_up,0; W_gate,1; ...] -> [N_r, 2·d_moe, d]; one stack, gradients back to each expert
        w_gu = torch.stack([w for e in self.experts for w in (e.gate_proj.weight, e.up_proj.weight)])
        w_gu = w_gu.view(len(self.experts), -1, flat.shape[-1])
        g, u = F.grouped_mm(x, w_gu.transpose(1, 2), offs=offs).chunk(2, dim=-1)
        w_down = torch.stack([e.down_proj.weight for e in self.experts])      # [N_r, d, d_moe]
        y = F.grouped_mm(F.silu(g) * u, w_down.transpose(1, 2), offs=offs)    # [n·K_r, d]
        y = y * weights.flatten()[order, None].to(y.dtype)
        return torch.zeros_like(flat).index_add_(0, token, y)

    def routed(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
               counts: torch.Tensor) -> torch.Tensor:
        """Σ_i g_{i,t} FFN^(r)_i(u_t) for every token: ``flat [n, d]`` -> ``[n, d]``, by ``impl``.

        ``weights``/``indices`` ``[n, K_r]`` come from the gate, ``counts [N_r]`` is their bincount. The one
        place where the routed experts run: expert parallelism (``tools.distributed_train``) overrides it
        to send the tokens to experts held by other processes, and inherits everything else.
        """
        if self.impl == "loop":
            return self.routed_loop(flat, weights, indices, counts)
        return self.routed_fast(flat, weights, indices, counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        flat = x.reshape(-1, d)
        weights, indices, scores = self.gate(flat)
        counts = torch.bincount(indices.flatten(), minlength=self.gate.n_experts)
        out = self.routed(flat, weights, indices, counts)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        self.last_counts = counts.detach()
        if self.training:
            self.counts_since_update += counts.to(self.counts_since_update.dtype)
        if self.aux_loss_alpha > 0 and self.training:
            self.aux_loss = sequence_balance_loss(scores.view(b, s, -1), indices.view(b, s, -1),
                                                  self.aux_loss_alpha)
        else:
            self.aux_loss = torch.zeros((), device=x.device)
        return out.view(b, s, d)


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """Complementary sequence-wise balance loss (V3 eqs. 17–20), averaged over sequences.

    Args:
        scores: sigmoid affinities s_{i,t}, ``[batch, seq, N_r]`` (unbiased, fp32).
        indices: selected experts, ``[batch, seq, K_r]``.
        alpha: α (V3: 1e-4).
    f_i = N_r/(K_r·T)·#{t : i selected}; s' = s/Σ_j s_j (no epsilon); P_i = mean_t s'_{i,t};
    L = α·Σ_i f_i·P_i. f carries no gradient. Perfectly uniform routing gives exactly α.
    """
    b, t, n_r = scores.shape
    k = indices.shape[-1]
    one_hot = torch.zeros(b, t, n_r, device=scores.device).scatter_(2, indices, 1.0)
    f = one_hot.sum(dim=1) * (n_r / (k * t))                      # [b, N_r], no grad
    p = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=1)   # [b, N_r]
    return alpha * (f * p).sum(dim=-1).mean()


def batch_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """Classic batch-wise auxiliary loss (same shape as eq. 17–20, statistics over all tokens).

    ``scores [n_tokens, N_r]``, ``indices [n_tokens, K_r]``. Used only for the comparison lesson.
    """
    return sequence_balance_loss(scores.reshape(1, -1, scores.shape[-1]),
                                 indices.reshape(1, -1, indices.shape[-1]), alpha)


def moe_layers(model: nn.Module) -> list[DeepseekMoE]:
    """All :class:`DeepseekMoE` modules of ``model`` in definition order."""
    return [m for m in model.modules() if isinstance(m, DeepseekMoE)]


@torch.no_grad()
def update_bias(model: nn.Module, gamma: float) -> list[torch.Tensor]:
    """Auxiliary-loss-free bias update (LF paper Alg. 1; V3 §2.1.2), one call per optimizer step.

    For each MoE layer: b_i ← b_i + γ·sign(mean(c) − c_i) with c the token counts gathered since
    the previous call, then the counts are reset. Returns the per-layer count vectors used.

    Raises:
        ValueError: ``gamma`` negative.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (the update speed γ), got {gamma}")
    used = []
    for layer in moe_layers(model):
        c = layer.counts_since_update.clone()
        bias = layer.gate.e_score_correction_bias
        bias += gamma * torch.sign(c.mean() - c).to(bias.dtype)
        layer.counts_since_update.zero_()
        used.append(c)
    return used


def max_violation(counts: torch.Tensor) -> float:
    """MaxVio = (max_i load_i − mean load) / mean load (LF paper §4.1). 0 means perfectly balanced.

    ``counts``: ``[N_r]`` token counts (or ``[..., N_r]``: then averaged over leading dims).
    Raises ValueError when no token was routed.
    """
    counts = counts.float()
    mean = counts.mean(dim=-1)
    if torch.any(mean <= 0):
        raise ValueError("max_violation needs at least one routed token per row of counts")
    return ((counts.max(dim=-1).values - mean) / mean).mean().item()
