"""Multi-head Latent Attention (MLA): DeepSeek-V2/V3 attention with a compressed KV cache.

Source: V3 report §2.1.1, eqs. (1)–(11); V2 report §2.1. Paper symbol ↔ checkpoint name:

=====================  ==============================  =========================================
paper                  this module / checkpoint        shape (V3)
=====================  ==============================  =========================================
W^DQ                   ``q_a_proj.weight``             [d_c' = 1536, d = 7168]
RMSNorm on c^Q         ``q_a_layernorm``               [1536]
W^UQ ; W^QR (fused)    ``q_b_proj.weight``             [n_h·(d_h + d_h^R) = 128·192, 1536];
                                                       each head's rows = [128 content | 64 rope]
W^DKV ; W^KR (fused)   ``kv_a_proj_with_mqa.weight``   [d_c + d_h^R = 512 + 64, 7168]
RMSNorm on c^KV        ``kv_a_layernorm``              [512]
W^UK ; W^UV (fused)    ``kv_b_proj.weight``            [n_h·(d_h + d_v) = 128·256, 512]; per head
                                                       [W^UK_i (128 rows) ; W^UV_i (128 rows)]
W^O                    ``o_proj.weight``               [d = 7168, n_h·d_v = 16384]
=====================  ==============================  =========================================

What is cached per token and layer: the *normalised* latent c^KV (d_c) and the *already rotated*
shared rope key k^R (d_h^R) -- 576 elements for V3 (:class:`LatentCache`). RoPE is never applied to
c^Q or c^KV; only q^R (per head) and the single k^R shared by all heads are rotated.

Two ways to run the same attention (proved equal in tests and notebook 04):

* ``"naive"`` -- re-expand the cached latent into per-head keys k = [k^C ; k^R] and values v^C
  with ``kv_b_proj``, then ordinary attention on 192-wide q/k.
* ``"absorb"`` -- fold W^UK_i into the query (q^C_i W^UK_i lives in the d_c-dim latent space) and
  W^UV_i into the output, then attend over the cached latent directly (official inference code's
  ``attn_impl="absorb"``). RoPE on the keys would sit between W^UK and the query and forbid this
  fold; that is why the rope key is decoupled.

Logits are scaled by (d_h + d_h^R)^-1/2 · mscale² (:func:`dsv3_lessons.model.rope.softmax_scale`).

Speed: a cache-free ``"naive"`` pass (training, scoring a whole sequence) hands the concatenated
q = [q^C ; q^R] and k = [k^C ; k^R] to ``F.scaled_dot_product_attention`` (causal, explicit scale), one
fused kernel instead of the written-out einsum/mask/softmax ops (``MultiHeadLatentAttention.use_sdpa``;
tests prove the two equal in values and gradients). cos/sin are computed once per forward and shared by
q^R and k^R. Cached decoding keeps the written-out ``"naive"``/``"absorb"`` paths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepseekV3Config
from .layers import RMSNorm, causal_mask
from .rope import RotaryEmbedding, apply_rope_interleaved, softmax_scale

__all__ = ["LatentCache", "MultiHeadLatentAttention", "split_kv_b", "causal_mask"]


class LatentCache:
    """Pre-allocated MLA cache for one layer: c^KV ``[batch, max_len, d_c]`` and k^R ``[batch, max_len, d_h^R]``.

    Only the first ``length`` slots are valid; attention never reads the rest. ``nbytes_used`` is
    what the valid slots occupy (bytes), e.g. 576 elements · 2 B = 1152 B per token per layer for V3
    in BF16.

    Raises:
        ValueError: appending past ``max_len`` or with mismatched shapes.
    """

    def __init__(self, batch: int, max_len: int, kv_lora_rank: int, rope_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        self.kv = torch.zeros(batch, max_len, kv_lora_rank, dtype=dtype, device=device)
        self.k_pe = torch.zeros(batch, max_len, rope_dim, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.kv.shape[1]

    @property
    def nbytes_used(self) -> int:
        per_token = (self.kv.shape[-1] + self.k_pe.shape[-1]) * self.kv.element_size()
        return self.kv.shape[0] * self.length * per_token

    def append(self, c_kv: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``c_kv [b, s, d_c]`` and rotated ``k_pe [b, s, d_h^R]``; return the valid prefix views."""
        b, s, _ = c_kv.shape
        if (b != self.kv.shape[0] or c_kv.shape[-1] != self.kv.shape[-1] or k_pe.shape[-1] != self.k_pe.shape[-1]
                or k_pe.shape[:2] != c_kv.shape[:2]):
            raise ValueError(f"cache holds [{self.kv.shape[0]}, *, {self.kv.shape[-1]}]/[*, {self.k_pe.shape[-1]}], "
                             f"got c_kv {tuple(c_kv.shape)} and k_pe {tuple(k_pe.shape)}")
        end = self.length + s
        if end > self.max_len:
            raise ValueError(f"cache full: {self.length} + {s} tokens > max_len {self.max_len}; "
                             f"allocate a larger cache")
        self.kv[:, self.length:end] = c_kv.to(self.kv.dtype)
        self.k_pe[:, self.length:end] = k_pe.to(self.k_pe.dtype)
        self.length = end
        return self.kv[:, :end], self.k_pe[:, :end]

    def truncate(self, length: int) -> None:
        """Roll the cache back to its first ``length`` tokens (speculative decoding's rejection path).

        Slots from ``length`` on become invalid (their stale values stay in memory but attention never
        reads past :attr:`length`, and the next :meth:`append` overwrites them), so the cache is then
        exactly what a fresh prefill of the first ``length`` tokens would hold.

        Raises:
            ValueError: ``length`` not an integer in ``[0, self.length]`` (a cache cannot grow this way).
        """
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= self.length:
            raise ValueError(f"length must be an integer in [0, {self.length}] (the tokens held), got {length!r}")
        self.length = length


def split_kv_b(kv_b_weight: torch.Tensor, n_heads: int, qk_nope_head_dim: int,
               v_head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the fused ``kv_b_proj.weight`` ``[n_h·(d_h+d_v), d_c]`` per head.

    Returns ``W_UK [n_h, d_h, d_c]`` and ``W_UV [n_h, d_v, d_c]``. The rows are grouped by head
    first -- head i owns rows ``i·(d_h+d_v) … (i+1)·(d_h+d_v)-1``, keys then values -- never
    "the first n_h·d_h rows are all keys" (a mistake seen in public implementations).
    """
    d_c = kv_b_weight.shape[-1]
    if kv_b_weight.shape[0] != n_heads * (qk_nope_head_dim + v_head_dim):
        raise ValueError(f"kv_b_proj.weight has {kv_b_weight.shape[0]} rows, expected "
                         f"n_heads*(qk_nope_head_dim+v_head_dim) = {n_heads * (qk_nope_head_dim + v_head_dim)}")
    w = kv_b_weight.view(n_heads, qk_nope_head_dim + v_head_dim, d_c)
    return w[:, :qk_nope_head_dim], w[:, qk_nope_head_dim:]


class MultiHeadLatentAttention(nn.Module):
    """MLA layer (V3 eqs. 1–11). ``forward(x [b, s, d], start_pos, cache) -> [b, s, d]``.

    Args of ``forward``:
        x: hidden states h_t, ``[batch, seq, hidden]``.
        start_pos: absolute position of ``x[:, 0]`` (= tokens already in ``cache``).
        cache: optional :class:`LatentCache`; new c^KV/k^R are appended and attention runs over all
            cached tokens. Without a cache, attention is causal over ``x`` alone.
        attn_impl: ``"naive"`` or ``"absorb"`` (defaults to ``self.attn_impl``), see module docstring.
    """

    def __init__(self, cfg: DeepseekV3Config, layer_idx: int = 0, attn_impl: str = "naive"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layer_idx = layer_idx
        self.attn_impl = attn_impl
        self.n_heads = cfg.num_attention_heads
        self.q_lora_rank = cfg.q_lora_rank
        self.kv_lora_rank = cfg.kv_lora_rank
        self.qk_nope_head_dim = cfg.qk_nope_head_dim
        self.qk_rope_head_dim = cfg.qk_rope_head_dim
        self.qk_head_dim = cfg.qk_head_dim
        self.v_head_dim = cfg.v_head_dim
        d = cfg.hidden_size
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(d, self.n_heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, cfg.q_lora_rank, bias=cfg.attention_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, self.n_heads * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=cfg.attention_bias)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, self.n_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(self.n_heads * cfg.v_head_dim, d, bias=cfg.attention_bias)
        self.rotary = RotaryEmbedding(cfg.qk_rope_head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.softmax_scale = softmax_scale(cfg.qk_head_dim, cfg.rope_scaling)

    #: Cache-free ``"naive"`` passes (training, a full-sequence forward) run through
    #: ``F.scaled_dot_product_attention`` (:meth:`_fused_attention`); set False (on the class or one layer)
    #: to run the einsum/softmax path written out in :meth:`forward` instead. Cached decoding and
    #: ``"absorb"`` always use the written-out path.
    use_sdpa: bool = True

    # -------------------------------------------------------------- pieces (used by the notebooks)
    def query(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q^C ``[b, s, n_h, d_h]`` and rotated q^R ``[b, s, n_h, d_h^R]`` (eqs. 6–9)."""
        return self._query(x, *self.rotary(positions))

    def latent(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised c^KV ``[b, s, d_c]`` and rotated shared k^R ``[b, s, d_h^R]`` -- what gets cached."""
        return self._latent(x, *self.rotary(positions))

    def _query(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, _ = x.shape
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))  # c^Q = W^DQ h, then W^UQ/W^QR
        q = q.view(b, s, self.n_heads, self.qk_head_dim)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        q_pe = apply_rope_interleaved(q_pe.transpose(1, 2), cos, sin).transpose(1, 2)
        return q_nope, q_pe

    def _latent(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), apply_rope_interleaved(k_pe, cos, sin)

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: LatentCache | None = None,
                attn_impl: str | None = None) -> torch.Tensor:
        impl = attn_impl or self.attn_impl
        if impl not in ("naive", "absorb"):
            raise ValueError(f"attn_impl must be 'naive' or 'absorb', got {impl!r}")
        if x.dim() != 3 or x.shape[-1] != self.cfg.hidden_size:
            raise ValueError(f"x must be [batch, seq, {self.cfg.hidden_size}], got {tuple(x.shape)}")
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        cos, sin = self.rotary(positions)  # computed once, used by q^R and k^R
        q_nope, q_pe = self._query(x, cos, sin)
        c_kv, k_pe = self._latent(x, cos, sin)
        if cache is None and impl == "naive" and self.use_sdpa:
            return self._fused_attention(q_nope, q_pe, c_kv, k_pe)
        if cache is not None:
            if cache.length != start_pos:
                raise ValueError(f"start_pos={start_pos} but the cache holds {cache.length} tokens")
            c_kv, k_pe = cache.append(c_kv, k_pe)
        mask = causal_mask(s, c_kv.shape[1], device=x.device)
        w_uk, w_uv = split_kv_b(self.kv_b_proj.weight, self.n_heads, self.qk_nope_head_dim, self.v_head_dim)
        if impl == "naive":
            kv = self.kv_b_proj(c_kv).view(b, -1, self.n_heads, self.qk_nope_head_dim + self.v_head_dim)
            k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
            scores = (torch.einsum("bshd,bthd->bsht", q_nope, k_nope)
                      + torch.einsum("bshr,btr->bsht", q_pe, k_pe)) * self.softmax_scale
            scores = scores.masked_fill(~mask[None, :, None, :], float("-inf"))
            probs = F.softmax(scores.float(), dim=-1).to(x.dtype)
            out = torch.einsum("bsht,bthd->bshd", probs, v)
        else:
            q_lat = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)  # W^UK absorbed into the query
            scores = (torch.einsum("bshc,btc->bsht", q_lat, c_kv)
                      + torch.einsum("bshr,btr->bsht", q_pe, k_pe)) * self.softmax_scale
            scores = scores.masked_fill(~mask[None, :, None, :], float("-inf"))
            probs = F.softmax(scores.float(), dim=-1).to(x.dtype)
            o_lat = torch.einsum("bsht,btc->bshc", probs, c_kv)  # attention over the latent itself
            out = torch.einsum("bshc,hdc->bshd", o_lat, w_uv)   # W^UV applied after attention
        return self.o_proj(out.reshape(b, s, self.n_heads * self.v_head_dim))

    def _fused_attention(self, q_nope: torch.Tensor, q_pe: torch.Tensor, c_kv: torch.Tensor,
                         k_pe: torch.Tensor) -> torch.Tensor:
        """The "naive" computation for a cache-free causal pass, in one fused attention kernel.

        Builds the two concatenations q = [q^C ; q^R] and k = [k^C ; k^R] (k^R broadcast to every head)
        and hands them to ``F.scaled_dot_product_attention`` with ``is_causal=True`` and the explicit
        ``scale = softmax_scale`` (mscale² included), so the scores, mask and softmax are those of the
        einsum path written out in :meth:`forward` -- tests check the two agree in values and gradients.
        """
        b, s, h, _ = q_nope.shape
        kv = self.kv_b_proj(c_kv).view(b, s, h, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)                         # [b, h, s, d_h + d_h^R]
        k = torch.cat([k_nope, k_pe[:, :, None, :].expand(b, s, h, self.qk_rope_head_dim)],
                      dim=-1).transpose(1, 2)                                          # [b, h, s, d_h + d_h^R]
        v = v.transpose(1, 2)
        # torch's CPU flash kernel wants one head width for q, k and v (else it falls back to a slower
        # unfused path): zero-pad the narrower side. Zero channels add 0 to every score / output channel.
        width = max(self.qk_head_dim, self.v_head_dim)
        if self.v_head_dim < width:
            v = F.pad(v, (0, width - self.v_head_dim))
        elif self.qk_head_dim < width:
            q, k = F.pad(q, (0, width - self.qk_head_dim)), F.pad(k, (0, width - self.qk_head_dim))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
        out = out[..., :self.v_head_dim].transpose(1, 2)                                # [b, s, h, d_v]
        return self.o_proj(out.reshape(b, s, h * self.v_head_dim))

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> LatentCache:
        """An empty :class:`LatentCache` sized for this layer."""
        dtype = dtype or self.kv_b_proj.weight.dtype
        return LatentCache(batch, max_len, self.kv_lora_rank, self.qk_rope_head_dim, dtype,
                           self.kv_b_proj.weight.device)
