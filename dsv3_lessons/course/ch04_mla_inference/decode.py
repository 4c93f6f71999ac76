"""Decoding one token with MLA, four ways over the same weights -- and what each one costs.

Chapter 04 and ``bench/mla_decode.py`` use this module. Everything here is built on
:class:`dsv3_lessons.model.mla.MultiHeadLatentAttention` (the weights) and compares four *decode steps*
(one new token attending over a context of T cached tokens, batch b):

================  ==================================  =====================================  ===========================
variant           what the cache holds per token      what one decode step does              source
================  ==================================  =====================================  ===========================
``per_head``      per-head keys [k^C_i ; k^R] and     expand only the new token, attend      "MHA-style" cache of MLA
                  values v^C_i: n_h·(d_h+d_h^R+d_v)   over the cached 192-/128-wide heads    (V2 §2.1.1; §2.1.4 Table 1)
                  = 40,960 elements (V3)
``naive``         c^KV and rotated k^R: d_c+d_h^R     re-expand the WHOLE cache with         ``MultiHeadLatentAttention``
                  = 576 elements (V3)                 ``kv_b_proj`` every step               ``attn_impl="naive"``
``transformers``  the same latent, in a               the same as naive, transformers'       ``DeepseekV3Attention``
                  ``DynamicCache``                    code (eager attention)
``absorb``        the same latent                     W^UK folded into the query, W^UV       V2 §2.1.2 / V3 §2.1.1;
                                                      after attention; attend over c^KV      official ``attn_impl="absorb"``
================  ==================================  =====================================  ===========================

Cache contents are equivalent across variants: :func:`context_latents` computes c^KV and the rotated
k^R of a random hidden context with ``kv_a_proj_with_mqa`` only (no attention over the context -- a
"prefill" that skips the part we are not measuring), and :func:`make_variants` stores that same latent
in every variant's cache (expanded with ``kv_b_proj`` for ``per_head``; with transformers' rope channel
order for ``transformers``). A decode step of every variant then computes the same output
(:func:`max_output_difference`), so timing them side by side (:func:`time_decode_step`) compares
only *how* the same function is evaluated.

:func:`attention_flops` counts the floating-point operations of s new tokens over T cached ones in closed
form (a multiply-add = 2 FLOPs; norms, RoPE and softmax ignored): :func:`decode_flops` is its s = 1 case,
a prefill is T = 0. :func:`decode_bytes_read` counts the bytes every decode step must read (weights +
cached context). Together they explain the measured ratios: the re-expanding variants are bound by FLOPs,
the other two by bytes; absorbed MLA does MORE arithmetic per cached token than the per-head cache
(576-wide keys, 512-wide values) and wins on bytes; and absorbing pays only while s is small against T,
which is why serving engines absorb for decode and re-expand for prefill (chapter 04).

Timing on a shared CPU: the latent variants' steps are chains of small, memory-bound operations. With
two threads on a busy two-core machine each operation waits for the second thread to get a core, which
was measured here to inflate those steps 5–10× while barely affecting the large re-expansion GEMMs; one
thread (``threads=1`` in :func:`time_variants`, ``--threads 1`` in the benchmark) measures the work
rather than the scheduler.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from dsv3_lessons.model.config import DeepseekV3Config, deepseek_v3_671b
from dsv3_lessons.model.mla import MultiHeadLatentAttention, causal_mask
from dsv3_lessons.model.rope import interleaved_to_half_permutation

__all__ = [
    "VARIANTS",
    "v3_attention_config",
    "build_mla",
    "PerHeadKVCache",
    "expand_latent",
    "per_head_forward",
    "hf_config",
    "build_hf_attention",
    "hf_position_embeddings",
    "hf_attention_forward",
    "context_latents",
    "DecodeVariant",
    "make_variants",
    "max_output_difference",
    "time_decode_step",
    "time_variants",
    "cache_elements_per_token",
    "attention_flops",
    "decode_flops",
    "decode_weight_bytes",
    "decode_bytes_read",
    "flop_ratio",
]

#: The four decode variants, in the order the chapter and the benchmark print them.
VARIANTS: tuple[str, ...] = ("per_head", "naive", "transformers", "absorb")


# ---------------------------------------------------------------------------------------------- models
def v3_attention_config(num_attention_heads: int = 128, hidden_size: int = 7168) -> DeepseekV3Config:
    """DeepSeek-V3's attention sizes (released HF ``config.json``), optionally with fewer heads / a narrower
    hidden size.

    Per-head and latent widths stay the real ones (d_c' = 1536, d_c = 512, d_h = 128, d_h^R = 64,
    d_v = 128, YaRN s = 40), so per-token cache sizes and per-context-token FLOPs per head are V3's.
    The defaults give the full V3 layer (187,107,328 attention parameters).
    """
    return deepseek_v3_671b().replace(num_attention_heads=num_attention_heads,
                                      num_key_value_heads=num_attention_heads, hidden_size=hidden_size,
                                      quantization_config=None)


def build_mla(cfg: DeepseekV3Config, seed: int = 0, dtype: torch.dtype = torch.float32) -> MultiHeadLatentAttention:
    """One MLA layer with deterministic random weights (``torch.manual_seed(seed)``), in eval mode.

    Linear weights use PyTorch's default ``nn.Linear`` init; RMSNorm weights are 1. At V3 sizes in
    float32 this is 187,107,328 parameters ≈ 748 MB.
    """
    torch.manual_seed(seed)
    mla = MultiHeadLatentAttention(cfg).to(dtype).eval()
    mla.requires_grad_(False)
    return mla


# ---------------------------------------------------------------------------------------------- per-head cache
class PerHeadKVCache:
    """MHA-style cache of MLA: expanded keys ``[b, n_h, max_len, d_h+d_h^R]`` and values ``[b, n_h, max_len, d_v]``.

    This is what a cache would hold if MLA cached per-head keys k_i = [k^C_i ; k^R] and values v^C_i like
    ordinary multi-head attention does: n_h·(d_h + d_h^R + d_v) = 128·(192+128) = 40,960 elements per
    token per layer at V3 sizes, 71.1× the 576 of the latent cache (V2 report §2.1.1; compared in
    §2.1.4, Table 1).
    Heads sit before the sequence so each head's keys are one contiguous-row matrix for ``matmul``.

    Raises:
        ValueError: appending past ``max_len``, or keys/values whose shape does not match the cache.
    """

    def __init__(self, batch: int, max_len: int, n_heads: int, qk_head_dim: int, v_head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        for name, value in (("batch", batch), ("max_len", max_len), ("n_heads", n_heads),
                            ("qk_head_dim", qk_head_dim), ("v_head_dim", v_head_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.k = torch.zeros(batch, n_heads, max_len, qk_head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_heads, max_len, v_head_dim, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes_used(self) -> int:
        """Bytes held by the valid slots (keys + values), all heads, all batch rows."""
        per_token = (self.k.shape[1] * self.k.shape[3] + self.v.shape[1] * self.v.shape[3]) * self.k.element_size()
        return self.k.shape[0] * self.length * per_token

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k [b, n_h, s, d_h+d_h^R]`` and ``v [b, n_h, s, d_v]``; return the valid prefix views."""
        want_k = (self.k.shape[0], self.k.shape[1], k.shape[2] if k.dim() == 4 else -1, self.k.shape[3])
        want_v = (self.v.shape[0], self.v.shape[1], want_k[2], self.v.shape[3])
        if k.dim() != 4 or tuple(k.shape) != want_k or tuple(v.shape) != want_v:
            raise ValueError(f"k must be [{want_k[0]}, {want_k[1]}, s, {want_k[3]}] and v [{want_v[0]}, {want_v[1]}, s, "
                             f"{want_v[3]}] with the same s; got k {tuple(k.shape)} and v {tuple(v.shape)}")
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"cache full: {self.length} + {k.shape[2]} tokens > max_len {self.max_len}")
        self.k[:, :, self.length:end] = k.to(self.k.dtype)
        self.v[:, :, self.length:end] = v.to(self.v.dtype)
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


def expand_latent(mla: MultiHeadLatentAttention, c_kv: torch.Tensor,
                  k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head keys and values from the latent: ``k [b, n_h, T, d_h+d_h^R]``, ``v [b, n_h, T, d_v]``.

    k_i = [W^UK_i c^KV ; k^R] (the one rotated rope key copied to every head), v_i = W^UV_i c^KV
    (V3 eqs. 2–5). Input ``c_kv [b, T, d_c]`` (normalised), ``k_pe [b, T, d_h^R]`` (rotated).
    """
    b, t, _ = c_kv.shape
    kv = mla.kv_b_proj(c_kv).view(b, t, mla.n_heads, mla.qk_nope_head_dim + mla.v_head_dim).transpose(1, 2)
    k_nope, v = kv.split([mla.qk_nope_head_dim, mla.v_head_dim], dim=-1)
    k_rope = k_pe[:, None].expand(b, mla.n_heads, t, mla.qk_rope_head_dim)
    return torch.cat([k_nope, k_rope], dim=-1), v.contiguous()


def per_head_forward(mla: MultiHeadLatentAttention, x: torch.Tensor, start_pos: int,
                     cache: PerHeadKVCache) -> torch.Tensor:
    """MLA's attention with an MHA-style per-head cache: ``x [b, s, d] -> [b, s, d]``.

    Only the new tokens are expanded with ``kv_b_proj``; the cached heads are reused. Same output as
    ``mla(x, start_pos, latent_cache)`` for equivalent cache contents.

    Raises:
        ValueError: ``start_pos`` differs from the number of cached tokens.
    """
    if cache.length != start_pos:
        raise ValueError(f"start_pos={start_pos} but the per-head cache holds {cache.length} tokens")
    b, s, _ = x.shape
    positions = torch.arange(start_pos, start_pos + s, device=x.device)
    q_nope, q_pe = mla.query(x, positions)                      # [b, s, h, d_h], [b, s, h, d_h^R]
    k_new, v_new = expand_latent(mla, *mla.latent(x, positions))
    k, v = cache.append(k_new, v_new)                           # [b, h, T, 192], [b, h, T, 128]
    q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)       # [b, h, s, 192]
    scores = torch.matmul(q, k.transpose(-1, -2)) * mla.softmax_scale
    scores = scores.masked_fill(~causal_mask(s, k.shape[2], device=x.device), float("-inf"))
    probs = F.softmax(scores.float(), dim=-1).to(x.dtype)
    out = torch.matmul(probs, v).transpose(1, 2)                # [b, s, h, d_v]
    return mla.o_proj(out.reshape(b, s, mla.n_heads * mla.v_head_dim))


# ---------------------------------------------------------------------------------------------- transformers
def hf_config(cfg: DeepseekV3Config, attn_implementation: str = "eager"):
    """transformers' ``DeepseekV3Config`` for the same model (``rope_interleave=True``, the released layout)."""
    from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config as HFConfig

    d = cfg.to_dict()
    d.pop("quantization_config", None)
    return HFConfig(**d, rope_interleave=True, attn_implementation=attn_implementation)


def build_hf_attention(mla: MultiHeadLatentAttention, share_weights: bool = False,
                       attn_implementation: str = "eager"):
    """transformers' ``DeepseekV3Attention`` holding our layer's weights (same state-dict names).

    ``share_weights=True`` makes it use the very same tensors (no second copy: 748 MB saved at V3
    size); otherwise the weights are cloned. The module is built on the meta device, so transformers'
    own initialisation costs nothing.
    """
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    with torch.device("meta"):
        hf = DeepseekV3Attention(hf_config(mla.cfg, attn_implementation), layer_idx=0)
    state = mla.state_dict()
    if not share_weights:
        state = {k: v.clone() for k, v in state.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"state dicts differ: missing {missing}, unexpected {unexpected}")
    hf.requires_grad_(False)
    return hf.eval()


def hf_position_embeddings(hf_attention, positions: torch.Tensor, dtype: torch.dtype = torch.float32):
    """``(cos, sin)`` from transformers' ``DeepseekV3RotaryEmbedding`` for integer ``positions [s]``."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    rope = hf_attention.__dict__.get("_lessons_rope")
    if rope is None:  # built once per module; kept outside the module tree (not a submodule, no state)
        rope = DeepseekV3RotaryEmbedding(hf_attention.config)
        object.__setattr__(hf_attention, "_lessons_rope", rope)
    dummy = torch.empty(0, dtype=dtype)
    return rope(dummy, positions[None, :])


def hf_attention_forward(hf_attention, x: torch.Tensor, start_pos: int = 0, cache=None) -> torch.Tensor:
    """Run transformers' ``DeepseekV3Attention`` on ``x [b, s, d]`` at absolute positions ``start_pos…``.

    Builds the additive causal mask ``[b, 1, s, T]`` itself (``None`` for a single query, which may see
    every cached token). ``cache`` is a transformers ``DynamicCache`` or ``None`` (then attention is
    causal over ``x`` alone, like ``MultiHeadLatentAttention`` without a cache).

    Raises:
        ValueError: a cache whose length differs from ``start_pos``.
    """
    b, s, _ = x.shape
    past = 0 if cache is None else cache.get_seq_length()
    if cache is not None and past != start_pos:
        raise ValueError(f"start_pos={start_pos} but the transformers cache holds {past} tokens")
    positions = torch.arange(start_pos, start_pos + s)
    cos_sin = hf_position_embeddings(hf_attention, positions, x.dtype)
    mask = None
    if s > 1:
        allowed = causal_mask(s, past + s, device=x.device)
        mask = torch.zeros(b, 1, s, past + s, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~allowed, torch.finfo(x.dtype).min)
    out, _ = hf_attention(x, position_embeddings=cos_sin, attention_mask=mask, cache=cache)
    return out


# ---------------------------------------------------------------------------------------------- context + variants
@torch.inference_mode()
def context_latents(mla: MultiHeadLatentAttention, length: int, batch: int = 1, seed: int = 0,
                    chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """c^KV ``[b, T, d_c]`` and rotated k^R ``[b, T, d_h^R]`` of a random hidden context of ``length`` tokens.

    Hidden states h_t ~ N(0, 1) go through ``kv_a_proj_with_mqa``, ``kv_a_layernorm`` and RoPE at their
    true positions 0…T-1 (``mla.latent``) -- exactly what a prefill would cache, without computing the
    prefill's attention (which no decode step depends on). Cost: 2·d·(d_c+d_h^R) FLOPs per token.

    Raises:
        ValueError: ``length`` or ``batch`` not a positive integer.
    """
    for name, value in (("length", length), ("batch", batch), ("chunk", chunk)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    dtype = mla.kv_b_proj.weight.dtype
    gen = torch.Generator().manual_seed(seed)
    c_parts, k_parts = [], []
    for start in range(0, length, chunk):
        n = min(chunk, length - start)
        h = torch.randn(batch, n, mla.cfg.hidden_size, generator=gen, dtype=dtype)
        c_kv, k_pe = mla.latent(h, torch.arange(start, start + n))
        c_parts.append(c_kv)
        k_parts.append(k_pe)
    return torch.cat(c_parts, dim=1), torch.cat(k_parts, dim=1)


@dataclass
class DecodeVariant:
    """One way to run a decode step at a fixed context length T.

    ``step(x [b, 1, d]) -> [b, 1, d]`` appends the new token at position T and attends over T+1 tokens;
    ``reset()`` drops that token again so the next ``step`` sees the same T-token context;
    ``cache_tensors()`` returns the tensors that hold the T cached tokens (for byte counts).
    """

    name: str
    context: int
    step: Callable[[torch.Tensor], torch.Tensor]
    reset: Callable[[], None]
    cache_tensors: Callable[[], list[torch.Tensor]]
    notes: dict = field(default_factory=dict)

    @property
    def cache_bytes(self) -> int:
        """Bytes of the cached context, read from the actual tensors (``numel·element_size``)."""
        return sum(t.numel() * t.element_size() for t in self.cache_tensors())

    def cache_elements_per_token(self) -> int:
        """Cached elements per token per layer, from the actual tensors (batch rows divided out)."""
        tensors = self.cache_tensors()
        elements = sum(t.numel() for t in tensors)
        batch = tensors[0].shape[0]
        return elements // (batch * self.context)


def make_variants(mla: MultiHeadLatentAttention, c_kv: torch.Tensor, k_pe: torch.Tensor,
                  names: tuple[str, ...] | list[str] = VARIANTS, hf_attention=None,
                  per_head_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, DecodeVariant]:
    """Build the decode variants over ``mla``'s weights, every cache holding the same T-token context.

    Args:
        mla: the layer (its weights are used by every variant).
        c_kv, k_pe: ``[b, T, d_c]`` normalised latent and ``[b, T, d_h^R]`` rotated rope key, e.g. from
            :func:`context_latents`.
        names: any subset of :data:`VARIANTS`.
        hf_attention: an existing transformers module (else one sharing ``mla``'s weights is built).
        per_head_kv: optional ``expand_latent(mla, c_kv, k_pe)`` computed beforehand (only its first T
            tokens are used), to avoid re-expanding a long context for every T in a sweep.
    Returns: ``{name: DecodeVariant}`` in the order of ``names``.
    Raises:
        ValueError: unknown variant name, or ``c_kv``/``k_pe`` shapes that do not fit the layer.
    """
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {VARIANTS}")
    if (c_kv.dim() != 3 or k_pe.dim() != 3 or c_kv.shape[:2] != k_pe.shape[:2]
            or c_kv.shape[-1] != mla.kv_lora_rank or k_pe.shape[-1] != mla.qk_rope_head_dim):
        raise ValueError(f"c_kv must be [b, T, {mla.kv_lora_rank}] and k_pe [b, T, {mla.qk_rope_head_dim}] with the "
                         f"same b, T; got {tuple(c_kv.shape)} and {tuple(k_pe.shape)}")
    b, t, _ = c_kv.shape
    variants: dict[str, DecodeVariant] = {}
    with torch.inference_mode():
        for name in names:
            if name in ("naive", "absorb"):
                cache = mla.new_cache(b, t + 1)
                cache.append(c_kv, k_pe)

                def step(x, cache=cache, impl=name):
                    return mla(x, start_pos=t, cache=cache, attn_impl=impl)

                def reset(cache=cache):
                    cache.length = t

                def tensors(cache=cache):
                    return [cache.kv[:, :t], cache.k_pe[:, :t]]

            elif name == "per_head":
                cache = PerHeadKVCache(b, t + 1, mla.n_heads, mla.qk_head_dim, mla.v_head_dim,
                                       dtype=c_kv.dtype)
                if per_head_kv is not None:
                    k_all, v_all = per_head_kv
                    cache.append(k_all[:, :, :t], v_all[:, :, :t])
                else:
                    for start in range(0, t, 1024):  # expand in chunks: bounded temporary memory
                        cache.append(*expand_latent(mla, c_kv[:, start:start + 1024], k_pe[:, start:start + 1024]))

                def step(x, cache=cache):
                    return per_head_forward(mla, x, t, cache)

                def reset(cache=cache):
                    cache.length = t

                def tensors(cache=cache):
                    return [cache.k[:, :, :t], cache.v[:, :, :t]]

            else:  # transformers
                from transformers.cache_utils import DynamicCache

                hf = hf_attention if hf_attention is not None else build_hf_attention(mla, share_weights=True)
                cache = DynamicCache()
                # transformers' interleaved RoPE writes rotated channels as [evens | odds]
                perm = interleaved_to_half_permutation(mla.qk_rope_head_dim)
                cache.update(c_kv[:, None].clone(), k_pe[:, None, :, perm].contiguous(), 0)

                def step(x, cache=cache, hf=hf):
                    return hf_attention_forward(hf, x, start_pos=t, cache=cache)

                def reset(cache=cache):
                    extra = cache.get_seq_length() - t
                    if extra:
                        cache.crop(-extra)

                def tensors(cache=cache):
                    layer = cache.layers[0]
                    return [layer.keys[..., :t, :], layer.values[..., :t, :]]

            variants[name] = DecodeVariant(name, t, step, reset, tensors)
    return variants


@torch.inference_mode()
def max_output_difference(variants: dict[str, DecodeVariant], x: torch.Tensor,
                          reference: str = "absorb") -> dict[str, float]:
    """Max |out_variant - out_reference| of one decode step on the same token ``x [b, 1, d]``."""
    if reference not in variants:
        raise ValueError(f"reference {reference!r} is not among the variants {list(variants)}")
    outs = {}
    for name, var in variants.items():
        var.reset()
        outs[name] = var.step(x)
        var.reset()
    ref = outs[reference]
    return {name: (out - ref).abs().max().item() for name, out in outs.items()}


def time_decode_step(variant: DecodeVariant, x: torch.Tensor, repeats: int = 3, warmup: int = 1,
                     threads: int | None = None, estimator: str = "median") -> float:
    """Median (or, with ``estimator="min"``, fastest) wall time (seconds) of one decode step, under
    ``torch.inference_mode``.

    The cache is reset to its T-token context before every call (outside the timed region).
    ``threads`` fixes ``torch.set_num_threads`` for the measurement (restored afterwards); ``None``
    keeps the current setting.

    Raises:
        ValueError: ``repeats`` < 1, ``warmup`` < 0, ``threads`` < 1 or an unknown ``estimator``.
    """
    return time_variants({variant.name: variant}, x, repeats, warmup, threads=threads,
                         estimator=estimator)[variant.name]


def time_variants(variants: dict[str, DecodeVariant], x: torch.Tensor, repeats: int = 3,
                  warmup: int = 1, on_step: Callable[[str], None] | None = None,
                  outputs: dict[str, torch.Tensor] | None = None, threads: int | None = None,
                  estimator: str = "median") -> dict[str, float]:
    """Decode-step time (seconds) of every variant, measured round-robin in one run.

    ``estimator`` reduces the ``repeats`` timed steps: ``"median"`` (default) or ``"min"``. On a shared
    machine other work only ever *adds* time to a step, so the fastest of several steps is the usual
    estimate of the step's own work; the median includes some of the interference.

    Each round times one step of every variant in turn, so a slowdown of a shared machine hits all
    variants alike and the *ratios* stay meaningful. Same rules as :func:`time_decode_step`;
    ``on_step(name)`` is called after every step (e.g. to advance a progress bar). If ``outputs`` is a
    dict, it receives each variant's output of the first (warm-up) round, so the caller can check the
    variants agree without paying for extra steps.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {tuple(_ESTIMATORS)}, got {estimator!r}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        times = _time_round_robin(variants, x, repeats, warmup, on_step, outputs)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: _ESTIMATORS[estimator](ts) for name, ts in times.items()}


#: how :func:`time_variants` reduces the timed steps of one variant
_ESTIMATORS = {"median": statistics.median, "min": min}


def _time_round_robin(variants, x, repeats, warmup, on_step, outputs) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for name, variant in variants.items():
                variant.reset()
                t0 = time.perf_counter()
                out = variant.step(x)
                elapsed = time.perf_counter() - t0
                if i >= warmup:
                    times[name].append(elapsed)
                if i == 0 and outputs is not None:
                    outputs[name] = out
                if on_step is not None:
                    on_step(name)
        for variant in variants.values():
            variant.reset()
    return times


# ---------------------------------------------------------------------------------------------- closed forms
def cache_elements_per_token(cfg: DeepseekV3Config, variant: str) -> int:
    """Cached elements per token per layer (closed form): d_c + d_h^R for the latent variants,
    n_h·(d_h + d_h^R + d_v) for ``per_head``. V3: 576 and 40,960 (V3 report §2.1.1
    eqs. 1–5 with the released config's widths)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "per_head":
        return cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    return cfg.kv_lora_rank + cfg.qk_rope_head_dim


def attention_flops(cfg: DeepseekV3Config, queries: int, context: int, variant: str) -> dict[str, int]:
    """FLOPs of one attention forward: ``queries`` new tokens over ``context`` cached tokens (batch 1).

    ``queries=1`` is a decode step (:func:`decode_flops`); ``context=0, queries=T`` is the prefill of a
    T-token prompt; anything between is a chunk (chunked prefill, a speculative-decoding verify step).
    A multiply-add counts 2; norms, RoPE and softmax are left out. Every new token's scores are counted
    against all K = context + queries keys, as :class:`~dsv3_lessons.model.mla.MultiHeadLatentAttention`
    computes them (dense scores, then the causal mask); a causal kernel would skip the masked half of the
    square, scaling the attention term of every variant alike. Terms (n_h heads, d, d_c', d_c, d_h, d_h^R,
    d_v; s = ``queries``):

    * ``projections`` (all variants), per new token: W^DQ 2·d·d_c', W^UQ;W^QR 2·d_c'·n_h·(d_h+d_h^R),
      W^DKV;W^KR 2·d·(d_c+d_h^R), W^O 2·n_h·d_v·d.
    * ``expand`` = ``kv_b_proj`` (2·d_c·n_h·(d_h+d_v) per token) on all K tokens for ``naive``/``transformers``
      (the cache is re-expanded), on the s new tokens for ``per_head``, 0 for ``absorb``.
    * ``absorb_folds`` (``absorb`` only), per new token: q^C_i W^UK_i, 2·n_h·d_h·d_c, and W^UV_i after
      attention, 2·n_h·d_c·d_v -- the same 2·d_c·n_h·(d_h+d_v) as expanding one token.
    * ``attention`` = s·K query-key pairs × per-pair cost: 2·n_h·(d_h+d_h^R+d_v) on expanded heads
      (192-wide keys, 128-wide values at V3 sizes); 2·n_h·(d_c+d_h^R+d_c) in the latent space for
      ``absorb`` (576-wide keys, 512-wide values).

    So absorption trades the expansion of the K cached tokens for a 3.4× (V3) dearer query-key pair: it
    pays when s is small (decode), not when s is comparable to K (prefill). Source: V2 report §2.1.2-2.1.3
    (absorption), V3 report §2.1.1 eqs. 1-11 (the projections).

    Returns: the terms and their ``total``.
    Raises:
        ValueError: unknown ``variant``, ``queries`` < 1 or ``context`` < 0 (or not integers).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise ValueError(f"queries must be a positive integer, got {queries!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    h, d, dc, r = cfg.num_attention_heads, cfg.hidden_size, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    dh, dv = cfg.qk_nope_head_dim, cfg.v_head_dim
    s, keys = queries, context + queries
    q_in = d if cfg.q_lora_rank is None else cfg.q_lora_rank
    proj = 2 * h * cfg.qk_head_dim * q_in + 2 * d * (dc + r) + 2 * h * dv * d
    if cfg.q_lora_rank is not None:
        proj += 2 * d * cfg.q_lora_rank
    expand_per_token = 2 * dc * h * (dh + dv)
    terms = {"projections": s * proj}
    if variant == "absorb":
        terms["expand"] = 0
        terms["absorb_folds"] = s * (2 * h * dh * dc + 2 * h * dc * dv)
        terms["attention"] = 2 * h * s * keys * (dc + r + dc)
    else:
        terms["expand"] = expand_per_token * (s if variant == "per_head" else keys)
        terms["absorb_folds"] = 0
        terms["attention"] = 2 * h * s * keys * (dh + r + dv)
    terms["total"] = sum(terms.values())
    return terms


def decode_flops(cfg: DeepseekV3Config, context: int, variant: str) -> dict[str, int]:
    """FLOPs of one decode step (batch 1, one new token attending over ``context`` cached tokens + itself).

    :func:`attention_flops` with ``queries=1``: with T' = context + 1 keys, ``expand`` is
    2·d_c·n_h·(d_h+d_v)·T' for ``naive``/``transformers`` (one token for ``per_head``, 0 for ``absorb``),
    ``attention`` is 2·n_h·T'·(d_h+d_h^R+d_v) on expanded heads and 2·n_h·T'·(d_c+d_h^R+d_c) for
    ``absorb``. Returns the terms and their ``total``.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    return attention_flops(cfg, 1, context, variant)


def decode_weight_bytes(cfg: DeepseekV3Config, bytes_per_element: int = 4) -> int:
    """Bytes of attention weights every decode step reads once (all variants): the full layer.

    At batch 1 this floor does not shrink with the context, so the *time* ratio between variants stays
    below their FLOP ratio until the context-dependent work dominates.
    """
    from dsv3_lessons.model.config import count_parameters

    return count_parameters(cfg).attention_per_layer * bytes_per_element


def decode_bytes_read(cfg: DeepseekV3Config, context: int, variant: str, bytes_per_element: int = 4) -> dict[str, int]:
    """Bytes one decode step must read from memory at least (batch 1): the weights and the cached context.

    ``weights`` = the whole attention layer (:func:`decode_weight_bytes`); ``cache`` = ``context`` tokens ×
    :func:`cache_elements_per_token` × ``bytes_per_element``. At batch 1 a decode step on a CPU is bound by
    these bytes rather than by FLOPs unless it re-expands the cache: the per-head variant needs fewer FLOPs
    than the absorbed one but reads 71× more cache bytes (at V3 sizes and T = 4096: 671 MB vs 9.4 MB, next
    to 748 MB of float32 weights). The re-expanding variants also write and re-read the expanded keys and
    values, which is not counted here.

    Returns: ``{"weights", "cache", "total"}`` in bytes.
    """
    if not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    weights = decode_weight_bytes(cfg, bytes_per_element)
    cache = context * cache_elements_per_token(cfg, variant) * bytes_per_element
    return {"weights": weights, "cache": cache, "total": weights + cache}


def flop_ratio(cfg: DeepseekV3Config, context: int, variant: str, reference: str = "absorb") -> float:
    """``decode_flops(variant).total / decode_flops(reference).total`` at ``context`` tokens."""
    return decode_flops(cfg, context, variant)["total"] / decode_flops(cfg, context, reference)["total"]

