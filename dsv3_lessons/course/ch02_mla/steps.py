"""MLA helpers for chapter 02: the paper's matrices, an independent oracle, closed-form costs, SVD tools.

Chapter 02 writes eqs. (1)–(11) of the V3 report itself, in short notebook cells, on the weights of a
:class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`. This module holds what the chapter *imports*:

* :func:`paper_matrices` / :func:`fuse_paper_matrices`: the fused checkpoint weights sliced into the paper's
  matrices and back (tests and later chapters use them);
* :func:`mla_step_by_step`: a second, independent implementation of the whole layer (complex-number RoPE,
  einsums on the paper's matrices). It is a **test oracle**: the tests compare the library layer with it. The
  notebook does not call it, because the learner writes those steps;
* closed-form cost arithmetic (parameters, FLOPs, cache bytes as functions of the two latent ranks) for the
  rank widget;
* small SVD helpers and :class:`TinyAttentionLM`, the model of the chapter's low-rank experiment.

Paper matrix ↔ slice of the checkpoint tensor (n_h heads, d_h content dim, d_h^R rope dim, d_v value
dim, d_c = ``kv_lora_rank``, d_c' = ``q_lora_rank``, d = ``hidden_size``):

=========  ===========================================================  ==================
paper      slice of the fused checkpoint weight                         shape here
=========  ===========================================================  ==================
W^DQ       ``q_a_proj.weight``                                          [d_c', d]
W^UQ       ``q_b_proj.weight`` viewed [n_h, d_h + d_h^R, d_c'], [:, :d_h]  [n_h, d_h, d_c']
W^QR       same view, [:, d_h:]                                         [n_h, d_h^R, d_c']
W^DKV      ``kv_a_proj_with_mqa.weight[:d_c]``                          [d_c, d]
W^KR       ``kv_a_proj_with_mqa.weight[d_c:]``                          [d_h^R, d]
W^UK       ``kv_b_proj.weight`` viewed [n_h, d_h + d_v, d_c], [:, :d_h]    [n_h, d_h, d_c]
W^UV       same view, [:, d_h:]                                         [n_h, d_v, d_c]
W^O        ``o_proj.weight``                                            [d, n_h·d_v]
=========  ===========================================================  ==================

The two RMSNorms of the checkpoint (``q_a_layernorm`` on c^Q, ``kv_a_layernorm`` on c^KV) do not
appear in the paper's equations; they are applied here exactly where the official inference code
applies them (right after the down-projections, before caching / up-projecting).

Cost conventions (:func:`mla_cost`, :func:`mha_cost`):

* parameters: number of scalars in the attention layer (norm weights included), equal to
  :func:`dsv3_lessons.model.config.count_parameters` ``.attention_per_layer`` (187,107,328 for V3);
* FLOPs per token: **2 × multiply-adds** of the weight matmuls (projections) for one token in one
  layer. Norms, RoPE, softmax and the score/value products with the context (which grow with the
  context length and do not depend on the latent ranks in the naive layout) are left out;
* cache: elements per token per layer, and bytes per token over all layers (BF16 = 2 bytes/element
  by default). V3: 61 · (512 + 64) · 2 = 70,272 bytes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dsv3_lessons.model.config import DeepseekV3Config, deepseek_v3_671b
from dsv3_lessons.model.rope import softmax_scale as _softmax_scale

__all__ = [
    "MLAMatrices",
    "paper_matrices",
    "fuse_paper_matrices",
    "split_kv_b_keys_first",
    "rope_rotate_complex",
    "mla_step_by_step",
    "AttentionCost",
    "mla_cost",
    "mha_cost",
    "singular_values",
    "energy_share",
    "rank_for_energy",
    "stack_heads",
]


# ====================================================================== paper matrices
@dataclass(frozen=True)
class MLAMatrices:
    """The matrices of V3 eqs. (1)–(11) for one MLA layer, plus the few scalars the layer needs.

    Shapes (named dims): ``W_DQ [d_c', d]``, ``q_norm [d_c']``, ``W_UQ [n_h, d_h, d_c']``,
    ``W_QR [n_h, d_h^R, d_c']``, ``W_DKV [d_c, d]``, ``kv_norm [d_c]``, ``W_KR [d_h^R, d]``,
    ``W_UK [n_h, d_h, d_c]``, ``W_UV [n_h, d_v, d_c]``, ``W_O [d, n_h·d_v]``;
    ``inv_freq [d_h^R/2]`` are the (YaRN) rotary frequencies in radians per position,
    ``rope_factor`` the cos/sin multiplier (1 for V3), ``softmax_scale`` the logit multiplier
    (d_h + d_h^R)^-1/2 · mscale², ``eps`` the RMSNorm epsilon.
    Tensors are detached views of the module's parameters (no copy) when built by :func:`paper_matrices`.
    """

    W_DQ: torch.Tensor
    q_norm: torch.Tensor
    W_UQ: torch.Tensor
    W_QR: torch.Tensor
    W_DKV: torch.Tensor
    kv_norm: torch.Tensor
    W_KR: torch.Tensor
    W_UK: torch.Tensor
    W_UV: torch.Tensor
    W_O: torch.Tensor
    inv_freq: torch.Tensor
    rope_factor: float
    softmax_scale: float
    eps: float

    @property
    def n_heads(self) -> int:
        return self.W_UK.shape[0]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of the ten weight tensors, in the order of the paper's equations."""
        names = ("W_DKV", "W_UK", "W_KR", "W_UV", "W_DQ", "W_UQ", "W_QR", "W_O", "q_norm", "kv_norm")
        return {n: tuple(getattr(self, n).shape) for n in names}


def paper_matrices(mla) -> MLAMatrices:
    """Slice a :class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`'s fused weights into the paper's.

    Args:
        mla: the layer (any size; V3 or the tiny preset).
    Returns:
        :class:`MLAMatrices` whose tensors are detached views of ``mla``'s parameters.
    Raises:
        ValueError: the layer has no query latent (``q_lora_rank=None``) or uses biases; the paper's
            V3 equations (and the released V3 weights) have neither.
    Source: V3 report §2.1.1 eqs. (1)–(11); checkpoint layout as in the released
    DeepSeek-V3 weights and the official inference code (``inference/model.py`` views ``wkv_b`` per head).
    """
    cfg = mla.cfg
    if cfg.q_lora_rank is None:
        raise ValueError("paper_matrices needs a query latent (q_lora_rank set, as in V3); this layer has "
                         "q_lora_rank=None and a plain q_proj")
    if cfg.attention_bias:
        raise ValueError("paper_matrices expects attention_bias=False (V3 has no projection biases)")
    n_h, d_h, d_r, d_v, d_c = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                               cfg.v_head_dim, cfg.kv_lora_rank)
    q_b = mla.q_b_proj.weight.detach().view(n_h, d_h + d_r, cfg.q_lora_rank)  # per head: [content | rope]
    kv_a = mla.kv_a_proj_with_mqa.weight.detach()                                 # rows: [W^DKV ; W^KR]
    kv_b = mla.kv_b_proj.weight.detach().view(n_h, d_h + d_v, d_c)                # per head: [W^UK_i ; W^UV_i]
    return MLAMatrices(
        W_DQ=mla.q_a_proj.weight.detach(),
        q_norm=mla.q_a_layernorm.weight.detach(),
        W_UQ=q_b[:, :d_h],
        W_QR=q_b[:, d_h:],
        W_DKV=kv_a[:d_c],
        kv_norm=mla.kv_a_layernorm.weight.detach(),
        W_KR=kv_a[d_c:],
        W_UK=kv_b[:, :d_h],
        W_UV=kv_b[:, d_h:],
        W_O=mla.o_proj.weight.detach(),
        inv_freq=mla.rotary.inv_freq.detach(),
        rope_factor=float(mla.rotary.cos_sin_factor),
        softmax_scale=float(_softmax_scale(cfg.qk_head_dim, cfg.rope_scaling)),
        eps=float(cfg.rms_norm_eps),
    )


def fuse_paper_matrices(m: MLAMatrices) -> dict[str, torch.Tensor]:
    """The inverse of :func:`paper_matrices`: the checkpoint's fused weights built from the paper's.

    Returns ``{"q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight",
    "kv_a_layernorm.weight", "kv_b_proj.weight", "o_proj.weight"}`` with shapes
    ``[d_c', d]``, ``[d_c']``, ``[n_h·(d_h+d_h^R), d_c']``, ``[d_c+d_h^R, d]``, ``[d_c]``,
    ``[n_h·(d_h+d_v), d_c]``, ``[d, n_h·d_v]`` (new tensors, suitable for ``load_state_dict``).
    """
    n_h = m.n_heads
    return {
        "q_a_proj.weight": m.W_DQ.clone(),
        "q_a_layernorm.weight": m.q_norm.clone(),
        "q_b_proj.weight": torch.cat([m.W_UQ, m.W_QR], dim=1).reshape(n_h * (m.W_UQ.shape[1] + m.W_QR.shape[1]), -1),
        "kv_a_proj_with_mqa.weight": torch.cat([m.W_DKV, m.W_KR], dim=0),
        "kv_a_layernorm.weight": m.kv_norm.clone(),
        "kv_b_proj.weight": torch.cat([m.W_UK, m.W_UV], dim=1).reshape(n_h * (m.W_UK.shape[1] + m.W_UV.shape[1]), -1),
        "o_proj.weight": m.W_O.clone(),
    }


def split_kv_b_keys_first(kv_b_weight: torch.Tensor, n_heads: int, qk_nope_head_dim: int,
                          v_head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The WRONG split of ``kv_b_proj.weight`` (a mistake seen in public implementations), for contrast.

    Treats the first n_h·d_h rows as all heads' keys and the remaining n_h·d_v rows as values. The
    checkpoint groups rows by head instead ([W^UK_1 ; W^UV_1 ; W^UK_2 ; W^UV_2 ; …]), so this mixes
    value rows into the keys. Returns ``(W_UK [n_h, d_h, d_c], W_UV [n_h, d_v, d_c])``.

    Raises:
        ValueError: the row count is not n_h·(d_h + d_v).
    """
    rows, d_c = kv_b_weight.shape
    if rows != n_heads * (qk_nope_head_dim + v_head_dim):
        raise ValueError(f"kv_b_weight has {rows} rows, expected n_heads*(qk_nope_head_dim+v_head_dim) = "
                         f"{n_heads * (qk_nope_head_dim + v_head_dim)}")
    keys = kv_b_weight[: n_heads * qk_nope_head_dim].reshape(n_heads, qk_nope_head_dim, d_c)
    values = kv_b_weight[n_heads * qk_nope_head_dim:].reshape(n_heads, v_head_dim, d_c)
    return keys, values


# ====================================================================== the step-by-step forward
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = x / sqrt(mean(x²) + ε) · w, statistics in float32 (as the checkpoint's RMSNorm)."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_rotate_complex(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor,
                        factor: float = 1.0) -> torch.Tensor:
    """RoPE written with complex numbers: pair (x_{2i}, x_{2i+1}) is x_{2i} + i·x_{2i+1}, times e^{i·pos·θ_i}.

    An independent formulation of the official interleaved layout (the library uses cos/sin tables).

    Args:
        x: ``[batch, seq, ..., d_h^R]`` (heads, if any, after ``seq``).
        positions: integer positions ``[seq]``.
        inv_freq: θ_i ``[d_h^R/2]`` (radians per position, YaRN already applied).
        factor: multiplier of cos/sin (YaRN's mscale ratio; 1 for V3).
    Returns: the rotated tensor, same shape and dtype as ``x``.
    Raises: ValueError if ``x``'s last dim is not ``2·len(inv_freq)`` or ``positions`` has the wrong length.
    """
    if x.shape[-1] != 2 * inv_freq.shape[0]:
        raise ValueError(f"x has {x.shape[-1]} rope channels, expected 2*len(inv_freq) = {2 * inv_freq.shape[0]}")
    if positions.shape != (x.shape[1],):
        raise ValueError(f"positions must be [seq={x.shape[1]}], got {tuple(positions.shape)}")
    angles = positions.double()[:, None] * inv_freq.double()[None, :]               # [seq, d_h^R/2]
    rot = torch.polar(torch.full_like(angles, float(factor)), angles)               # factor·e^{iθ}
    rot = rot.view(rot.shape[0], *([1] * (x.dim() - 3)), rot.shape[1])              # broadcast over heads
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * rot).flatten(-2).to(x.dtype)


def mla_step_by_step(m: MLAMatrices, h: torch.Tensor, start_pos: int = 0) -> dict[str, torch.Tensor]:
    """Run MLA one paper equation at a time (causal, no cache) and return every intermediate.

    The independent oracle of the tests (and of :meth:`TinyAttentionLM.attention_states`' test): written on the
    paper's matrices with its own complex-number RoPE, it shares no code path with the library layer. Chapter 02
    does not call it; the learner writes these steps in the notebook.

    Args:
        m: the paper's matrices (:func:`paper_matrices`).
        h: hidden states h_t ``[batch, seq, d]`` (the layer's input after the block's input norm).
        start_pos: absolute position of ``h[:, 0]`` (RoPE angles start there).
    Returns:
        An ordered dict (b = batch, s = seq, j = key position; the paper writes t for the query position):

        ``c^Q_raw [b,s,d_c']`` (eq. 6) → ``c^Q [b,s,d_c']`` (after q_a_layernorm) →
        ``q^C [b,s,n_h,d_h]`` (eq. 7) → ``q^R_raw``/``q^R [b,s,n_h,d_h^R]`` (eq. 8) →
        ``q [b,s,n_h,d_h+d_h^R]`` (eq. 9); ``c^KV_raw [b,s,d_c]`` (eq. 1) → ``c^KV [b,s,d_c]`` (after
        kv_a_layernorm; cached) → ``k^C [b,s,n_h,d_h]`` (eq. 2); ``k^R_raw``/``k^R [b,s,d_h^R]`` (eq. 3;
        rotated k^R is cached, shared by all heads) → ``k [b,s,n_h,d_h+d_h^R]`` (eq. 4);
        ``v^C [b,s,n_h,d_v]`` (eq. 5); ``logits``/``probs [b,n_h,s,j]`` and ``o [b,s,n_h,d_v]`` (eq. 10);
        ``u [b,s,d]`` (eq. 11, the layer output).
    Raises:
        ValueError: ``h`` is not ``[batch, seq, d]`` with d = ``W_DQ.shape[1]``, or start_pos < 0.
    Source: V3 report §2.1.1, eqs. (1)–(11).
    """
    d = m.W_DQ.shape[1]
    if h.dim() != 3 or h.shape[-1] != d:
        raise ValueError(f"h must be [batch, seq, {d}], got {tuple(h.shape)}")
    if start_pos < 0:
        raise ValueError(f"start_pos must be >= 0, got {start_pos}")
    s = h.shape[1]
    pos = torch.arange(start_pos, start_pos + s, device=h.device)
    st: dict[str, torch.Tensor] = {"h": h}
    # --- query side: one latent, two reads (eqs. 6-9)
    st["c^Q_raw"] = torch.einsum("cd,bsd->bsc", m.W_DQ, h)                          # eq. 6
    st["c^Q"] = _rms_norm(st["c^Q_raw"], m.q_norm, m.eps)                           # q_a_layernorm
    st["q^C"] = torch.einsum("hkc,bsc->bshk", m.W_UQ, st["c^Q"])                    # eq. 7
    st["q^R_raw"] = torch.einsum("hrc,bsc->bshr", m.W_QR, st["c^Q"])
    st["q^R"] = rope_rotate_complex(st["q^R_raw"], pos, m.inv_freq, m.rope_factor)  # eq. 8
    st["q"] = torch.cat([st["q^C"], st["q^R"]], dim=-1)                             # eq. 9: [q^C ; q^R]
    # --- key/value side: one latent for all heads + one shared rope key (eqs. 1-5)
    st["c^KV_raw"] = torch.einsum("cd,bsd->bsc", m.W_DKV, h)                        # eq. 1
    st["c^KV"] = _rms_norm(st["c^KV_raw"], m.kv_norm, m.eps)                        # kv_a_layernorm (cached)
    st["k^C"] = torch.einsum("hkc,bsc->bshk", m.W_UK, st["c^KV"])                   # eq. 2
    st["k^R_raw"] = torch.einsum("rd,bsd->bsr", m.W_KR, h)                          # from h_t, not c^KV
    st["k^R"] = rope_rotate_complex(st["k^R_raw"], pos, m.inv_freq, m.rope_factor)  # eq. 3 (cached)
    n_h = m.n_heads
    k_r_all = st["k^R"][:, :, None, :].expand(-1, -1, n_h, -1)                      # same k^R for every head
    st["k"] = torch.cat([st["k^C"], k_r_all], dim=-1)                               # eq. 4: [k^C ; k^R]
    st["v^C"] = torch.einsum("hvc,bsc->bshv", m.W_UV, st["c^KV"])                   # eq. 5
    # --- attention (eq. 10) and output projection (eq. 11)
    logits = torch.einsum("bshk,bjhk->bhsj", st["q"], st["k"]) * m.softmax_scale
    causal = torch.ones(s, s, dtype=torch.bool, device=h.device).tril()
    st["logits"] = logits.masked_fill(~causal, float("-inf"))
    st["probs"] = F.softmax(st["logits"].float(), dim=-1).to(h.dtype)
    st["o"] = torch.einsum("bhsj,bjhv->bshv", st["probs"], st["v^C"])
    st["u"] = torch.einsum("dz,bsz->bsd", m.W_O, st["o"].reshape(*st["o"].shape[:2], -1))
    return st


# ====================================================================== closed-form costs
@dataclass(frozen=True)
class AttentionCost:
    """Cost of one attention design (see the module docstring for the conventions).

    params_per_layer: scalars; flops_per_token_per_layer: 2 × multiply-adds of the projections;
    cache_elements_per_token_per_layer: cached scalars; cache_bytes_per_token: over all
    ``num_layers`` at ``bytes_per_element``.
    """

    name: str
    params_per_layer: int
    flops_per_token_per_layer: int
    cache_elements_per_token_per_layer: int
    cache_bytes_per_token: int
    num_layers: int
    bytes_per_element: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_pos_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{extra}, got {value!r}")


def _base(cfg: DeepseekV3Config | None, overrides: dict) -> DeepseekV3Config:
    cfg = deepseek_v3_671b() if cfg is None else cfg
    for name, value in overrides.items():
        _check_pos_int(name, value, allow_none=(name == "q_lora_rank"))
    return dataclasses.replace(cfg, **overrides)


def mla_cost(cfg: DeepseekV3Config | None = None, *, bytes_per_element: int = 2,
             **overrides) -> AttentionCost:
    """Parameters, projection FLOPs per token and cache size of an MLA layer, in closed form.

    Args:
        cfg: base configuration (default: :func:`~dsv3_lessons.model.config.deepseek_v3_671b`).
        bytes_per_element: cache element size in bytes (2 = BF16).
        **overrides: config fields to change, e.g. ``q_lora_rank=768, kv_lora_rank=256,
            num_attention_heads=64`` (positive integers; ``q_lora_rank=None`` = no query latent).
    Returns: :class:`AttentionCost`. V3: 187,107,328 parameters per layer, 576 cached elements per
        token per layer, 70,272 bytes per token over 61 layers.
    Raises: ValueError naming a non-positive / non-integer override or ``bytes_per_element``.
    Source: V3 report §2.1.1 eqs. (1)–(11); parameter terms as in ``count_parameters``.
    """
    _check_pos_int("bytes_per_element", bytes_per_element)
    c = _base(cfg, overrides)
    d, n_h, d_h, d_r, d_v, d_c = (c.hidden_size, c.num_attention_heads, c.qk_nope_head_dim,
                                  c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank)
    if c.q_lora_rank is None:
        q_mats, q_norm = d * n_h * (d_h + d_r), 0                      # plain W^Q
    else:
        q_mats, q_norm = d * c.q_lora_rank + c.q_lora_rank * n_h * (d_h + d_r), c.q_lora_rank  # W^DQ, [W^UQ;W^QR]
    kv_mats = d * (d_c + d_r) + d_c * n_h * (d_h + d_v)                # [W^DKV;W^KR], [W^UK;W^UV]
    out_mat = n_h * d_v * d                                            # W^O
    macs = q_mats + kv_mats + out_mat                                  # one multiply-add per weight per token
    cache = d_c + d_r
    return AttentionCost("MLA", macs + q_norm + d_c, 2 * macs, cache,
                         c.num_hidden_layers * cache * bytes_per_element, c.num_hidden_layers, bytes_per_element)


def mha_cost(cfg: DeepseekV3Config | None = None, *, bytes_per_element: int = 2, **overrides) -> AttentionCost:
    """The same attention without latents: full per-head q, k (d_h + d_h^R wide) and v (d_v), all cached.

    This is an MHA at V3's *decompressed* head widths (keys 192 wide, RoPE part included; values 128), the
    baseline the widget's MHA column shows. Chapter 1 (and the V2 report's Table 1) count MHA with d_h-wide keys
    and no RoPE part, 2·n_h·d_h = 32,768 elements per token and layer for V3's sizes.

    Params per layer d·n_h·(d_h+d_h^R) (W^Q) + d·n_h·(d_h+d_h^R) (W^K) + d·n_h·d_v (W^V) + n_h·d_v·d (W^O);
    cache n_h·(d_h + d_h^R + d_v) elements per token per layer (V3 sizes: 40,960, 71× MLA's 576).
    Arguments and errors as :func:`mla_cost` (latent ranks are ignored).
    """
    _check_pos_int("bytes_per_element", bytes_per_element)
    c = _base(cfg, overrides)
    d, n_h, d_qk, d_v = c.hidden_size, c.num_attention_heads, c.qk_head_dim, c.v_head_dim
    macs = 2 * d * n_h * d_qk + d * n_h * d_v + n_h * d_v * d
    cache = n_h * (d_qk + d_v)
    return AttentionCost("MHA", macs, 2 * macs, cache, c.num_hidden_layers * cache * bytes_per_element,
                         c.num_hidden_layers, bytes_per_element)


# ====================================================================== SVD helpers
def singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of a matrix ``[n, m]``, descending, float64 ``[min(n, m)]``.

    Raises: ValueError if ``x`` is not 2-D, is empty, or holds NaN/inf.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor [n, m], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    x = x.detach().double()
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or inf; singular values would be meaningless")
    return torch.linalg.svdvals(x)


def energy_share(s: torch.Tensor) -> torch.Tensor:
    """Cumulative energy share of singular values: ``out[r-1] = Σ_{i<r} s_i² / Σ_i s_i²`` (float64).

    ``out[r-1]`` is the fraction of ‖X‖_F² kept by the best rank-r approximation (Eckart–Young).
    Raises: ValueError if ``s`` is not 1-D, is negative/non-finite, not descending, or all zero.
    """
    s = torch.as_tensor(s).double()
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(f"s must be a non-empty 1-D tensor of singular values, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError("s must hold finite, non-negative singular values")
    if (s[1:] > s[:-1] * (1 + 1e-12) + 1e-300).any():
        raise ValueError("s must be sorted in descending order (as singular_values returns it)")
    e = s.pow(2)
    total = e.sum()
    if total == 0:
        raise ValueError("all singular values are zero: the matrix has no energy to share")
    return e.cumsum(0) / total


def rank_for_energy(s: torch.Tensor, share: float) -> int:
    """Smallest rank r whose best rank-r approximation keeps at least ``share`` of the energy.

    Args: s: descending singular values ``[k]``; share: a fraction in (0, 1] (0.9 = 90 %).
    Returns: r in [1, k].
    Raises: ValueError for a share outside (0, 1] or invalid ``s`` (see :func:`energy_share`).
    """
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise ValueError(f"share must be a fraction in (0, 1], got {share!r}")
    cum = energy_share(s)
    # tolerate rounding in the last bits so that share=1.0 gives the true rank, not k
    r = int(torch.searchsorted(cum, torch.tensor([share - 1e-12], dtype=cum.dtype)).item()) + 1
    return min(r, cum.numel())


def stack_heads(x: torch.Tensor) -> torch.Tensor:
    """``[batch, seq, n_h, d] -> [batch·seq, n_h·d]``: one row per token, all heads side by side.

    This is the matrix whose rank MLA bounds: every row of stacked k^C is W^UK c^KV_t, so its rank is
    at most d_c. Raises ValueError for a tensor that is not 4-D.
    """
    if x.dim() != 4:
        raise ValueError(f"expected [batch, seq, heads, dim], got {tuple(x.shape)}")
    return x.reshape(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])


# ====================================================================== widget logic (pure)
@dataclass(frozen=True)
class MLARankReport:
    """Costs of an MLA variant next to V3's MLA and to MHA with the same heads (:func:`mla_rank_report`).

    ``variant``/``v3``/``mha``: :class:`AttentionCost`; ``q_break_even``: the largest d_c' for which
    the query latent (W^DQ then [W^UQ;W^QR]) has fewer parameters than a plain W^Q,
    d·n_h·(d_h+d_h^R) / (d + n_h·(d_h+d_h^R)) rounded down.
    """

    q_lora_rank: int
    kv_lora_rank: int
    num_attention_heads: int
    variant: AttentionCost
    v3: AttentionCost
    mha: AttentionCost
    q_break_even: int

    @property
    def cache_ratio_vs_mha(self) -> float:
        """How many times smaller the variant's cache is than MHA's (same heads)."""
        return self.mha.cache_bytes_per_token / self.variant.cache_bytes_per_token


def mla_rank_report(q_lora_rank: int = 1536, kv_lora_rank: int = 512, num_attention_heads: int = 128,
                    cfg: DeepseekV3Config | None = None, bytes_per_element: int = 2) -> MLARankReport:
    """What the two latent ranks (and the head count) cost, next to V3's defaults and to MHA.

    Args:
        q_lora_rank: d_c', width of the query latent c^Q (V3: 1536).
        kv_lora_rank: d_c, width of the KV latent c^KV (V3: 512).
        num_attention_heads: n_h (V3: 128); the MHA column uses the same n_h.
        cfg: base configuration for every other size (default: V3 671B).
        bytes_per_element: cache element size (2 = BF16).
    Returns: :class:`MLARankReport` (the V3 column always uses ``cfg``'s own ranks and heads).
    Raises: ValueError naming an argument that is not a positive integer.
    """
    _check_pos_int("q_lora_rank", q_lora_rank)  # None is allowed by mla_cost, not here
    base = deepseek_v3_671b() if cfg is None else cfg
    variant = mla_cost(base, bytes_per_element=bytes_per_element, q_lora_rank=q_lora_rank,
                       kv_lora_rank=kv_lora_rank, num_attention_heads=num_attention_heads)
    v3 = mla_cost(base, bytes_per_element=bytes_per_element)
    mha = mha_cost(base, bytes_per_element=bytes_per_element, num_attention_heads=num_attention_heads)
    wide = num_attention_heads * base.qk_head_dim
    return MLARankReport(q_lora_rank, kv_lora_rank, num_attention_heads, variant, v3, mha,
                         base.hidden_size * wide // (base.hidden_size + wide))


def format_mla_rank_report(r: MLARankReport) -> str:
    """A fixed-width text table of :class:`MLARankReport` (units: M = 10⁶ parameters or FLOPs, KB = 1000 B).

    The MHA column is an MHA with V3's decompressed head widths (keys d_h + d_h^R = 192 wide, values d_v = 128),
    as :func:`mha_cost` counts it; the last line gives chapter 1's MHA too (keys and values d_h = 128 wide, no
    RoPE part): 2·n_h·d_h cache elements per token and layer. The sizes are named by their config fields, the
    names the widget's slider labels carry beside the paper symbols.
    """
    rows = [("", "this MLA", "V3 MLA", f"MHA, {r.num_attention_heads} heads"),
            ("", "", "", "(q/k 192, v 128)")]
    costs = (r.variant, r.v3, r.mha)
    rows.append(("params / layer (M)", *[f"{c.params_per_layer / 1e6:.2f}" for c in costs]))
    rows.append(("FLOPs / token / layer (M)", *[f"{c.flops_per_token_per_layer / 1e6:.2f}" for c in costs]))
    rows.append(("cache elements / token / layer", *[f"{c.cache_elements_per_token_per_layer:,}" for c in costs]))
    rows.append((f"cache KB / token ({r.variant.num_layers} layers)",
                 *[f"{c.cache_bytes_per_token / 1e3:.3f}" for c in costs]))
    w0 = max(len(x[0]) for x in rows)
    lines = [f"{a:<{w0}}  {b:>10}  {c:>10}  {d:>16}" for a, b, c, d in rows]
    base = deepseek_v3_671b()
    ch1 = 2 * r.num_attention_heads * base.qk_nope_head_dim
    lines.append(f"q_lora_rank = {r.q_lora_rank}, kv_lora_rank = {r.kv_lora_rank}: cache "
                 f"{r.cache_ratio_vs_mha:.1f}x smaller than that MHA's")
    lines.append(f"the query latent saves parameters while q_lora_rank <= {r.q_break_even}")
    lines.append(f"chapter 1's MHA (K and V {base.qk_nope_head_dim} wide, no RoPE part): 2 x {r.num_attention_heads} "
                 f"heads x {base.qk_nope_head_dim} = {ch1:,} elements "
                 f"({ch1 / r.variant.cache_elements_per_token_per_layer:.1f}x this MLA)")
    return "\n".join(lines)


__all__ += ["MLARankReport", "mla_rank_report", "format_mla_rank_report"]


# ====================================================================== a tiny LM for the evidence
class _Block(torch.nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + SwiGLU(norm(x)). Attention is MHA or MLA."""

    def __init__(self, cfg: DeepseekV3Config, attention: str, layer_idx: int):
        super().__init__()
        from dsv3_lessons.course.ch01_kv_cache.attention import GroupedQueryAttention
        from dsv3_lessons.model.layers import RMSNorm, SwiGLU
        from dsv3_lessons.model.mla import MultiHeadLatentAttention

        d = cfg.hidden_size
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        if attention == "mha":
            self.self_attn = GroupedQueryAttention(d, cfg.num_attention_heads, cfg.num_attention_heads,
                                                   cfg.qk_nope_head_dim, cfg.rope_theta)
        else:
            self.self_attn = MultiHeadLatentAttention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp = SwiGLU(d, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyAttentionLM(torch.nn.Module):
    """A small dense language model with either MHA or MLA attention (the evidence model of notebook 02).

    Layout: ``embed_tokens`` → ``num_layers`` pre-norm blocks (attention + dense SwiGLU) → ``norm`` →
    ``lm_head``. Sizes come from :func:`~dsv3_lessons.model.config.tiny` (d = 64, n_h = 4, d_h = 16; MLA adds
    d_h^R = 8, d_c = 32, d_c' = 48) unless ``cfg`` is given. With ``attention="mha"`` each layer is a
    :class:`~dsv3_lessons.course.ch01_kv_cache.attention.GroupedQueryAttention` with n_kv = n_h and head_dim = d_h (standard
    RoPE on the whole head); with ``"mla"`` it is the library's
    :class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`. No MoE, no MTP: the only difference between
    the two models is the attention, so their keys/values and losses can be compared.

    ``forward(input_ids [b, T], targets [b, T] | None, compute_mtp=None)`` returns a
    :class:`dsv3_lessons.model.deepseek_v3.ModelOutput` (``loss == main_loss``), so :func:`dsv3_lessons.tools.train.train`
    and ``evaluate`` drive it unchanged.

    Raises:
        ValueError: ``attention`` not ``"mha"``/``"mla"``, or ids outside ``[0, vocab_size)``.
    """

    def __init__(self, vocab_size: int, attention: str = "mha", num_layers: int = 2,
                 cfg: DeepseekV3Config | None = None):
        super().__init__()
        if attention not in ("mha", "mla"):
            raise ValueError(f"attention must be 'mha' or 'mla', got {attention!r}")
        from dsv3_lessons.model.config import tiny
        from dsv3_lessons.model.layers import RMSNorm

        self.cfg = (cfg or tiny(vocab_size=vocab_size)).replace(vocab_size=vocab_size,
                                                               num_hidden_layers=num_layers,
                                                               first_k_dense_replace=num_layers,
                                                               num_nextn_predict_layers=0)
        self.attention = attention
        c = self.cfg
        self.embed_tokens = torch.nn.Embedding(vocab_size, c.hidden_size)
        self.layers = torch.nn.ModuleList([_Block(c, attention, i) for i in range(num_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = torch.nn.Linear(c.hidden_size, vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(module.weight, std=c.initializer_range)

    def cache_elements_per_token(self) -> int:
        """Cached elements per token over all layers: MHA 2·n_h·d_h per layer, MLA d_c + d_h^R per layer."""
        c = self.cfg
        per_layer = (2 * c.num_attention_heads * c.qk_nope_head_dim if self.attention == "mha"
                     else c.kv_lora_rank + c.qk_rope_head_dim)
        return per_layer * c.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, compute_mtp=None):
        from dsv3_lessons.model.deepseek_v3 import ModelOutput

        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.cfg.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.cfg.vocab_size})")
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.lm_head(self.norm(x))
        out = ModelOutput(logits=logits, hidden=x)
        if targets is not None:
            out.main_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                            ignore_index=-100)
            out.loss = out.main_loss
        return out

    @torch.no_grad()
    def attention_states(self, input_ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per layer, what its attention computes from ``input_ids [b, T]``.

        MHA layers: ``{"h": [b,T,d], "k": [b,T,n_h,d_h] (before RoPE), "v": [b,T,n_h,d_h]}``.
        MLA layers: ``{"h", "c^Q": [b,T,d_c'], "c^KV": [b,T,d_c], "k^R": [b,T,d_h^R] (rotated),
        "k^C": [b,T,n_h,d_h], "v^C": [b,T,n_h,d_v]}``, computed with the layer's own modules.
        """
        states = []
        x = self.embed_tokens(input_ids)
        b, s = input_ids.shape
        for layer in self.layers:
            h = layer.input_layernorm(x)
            attn = layer.self_attn
            if self.attention == "mha":
                n_h, d_h = attn.num_attention_heads, attn.head_dim
                states.append({"h": h, "k": attn.k_proj(h).view(b, s, n_h, d_h),
                               "v": attn.v_proj(h).view(b, s, n_h, d_h)})
            else:  # the library's own pieces: c^KV and k^R (cached), c^Q, per-head k^C and v^C
                c_kv, k_r = attn.latent(h, torch.arange(s, device=h.device))
                c_q = attn.q_a_layernorm(attn.q_a_proj(h))
                kv = attn.kv_b_proj(c_kv).view(b, s, attn.n_heads, attn.qk_nope_head_dim + attn.v_head_dim)
                k_c, v_c = kv.split([attn.qk_nope_head_dim, attn.v_head_dim], dim=-1)
                states.append({"h": h, "c^Q": c_q, "c^KV": c_kv, "k^R": k_r, "k^C": k_c, "v^C": v_c})
            x = layer(x)
        return states


__all__ += ["TinyAttentionLM"]
