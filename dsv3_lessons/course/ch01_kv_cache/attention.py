"""The "before" picture: multi-head attention with a per-head KV cache (MHA, GQA, MQA).

One module covers the three classic designs, which differ only in how many key/value heads
(``num_key_value_heads``, n_kv) the ``num_attention_heads`` (n_h) query heads share:

=====  ===================  =========================================================
kind   n_kv                 source
=====  ===================  =========================================================
MHA    n_kv = n_h           Vaswani et al. 2017, "Attention Is All You Need" §3.2.2
GQA    1 < n_kv < n_h       Ainslie et al. 2023, "GQA" (arXiv 2305.13245) §2.2
MQA    n_kv = 1             Shazeer 2019, "Fast Transformer Decoding" (arXiv 1911.02150)
=====  ===================  =========================================================

Query head i reads key/value head ``i // g`` with g = n_h / n_kv query heads per group (the order
of the GQA paper and of transformers' ``repeat_kv``). The keys and values are *not* copied g
times: the queries are viewed as ``[..., n_kv, g, d_h]`` and each group attends to its one K/V head.

Positions use standard RoPE (Su et al. 2021, RoFormer) on the whole query/key head -- not the
decoupled RoPE of MLA (chapter 3). The default layout rotates adjacent channel pairs, as Meta's
original LLaMA code and DeepSeek's official code do; ``rope_layout="half"`` gives the
"rotate_half" layout that transformers' LLaMA uses (same scores once the q/k weights are permuted
with :func:`dsv3_lessons.model.rope.interleaved_to_half_permutation`; tested against transformers).

What decoding must keep per token and layer: the rotated keys and the values of every KV head,
2·n_kv·d_h elements (:class:`KVCache`). That number, times layers, times context, times batch, is
what chapter 1 shows to be the bottleneck, and what MLA (chapter 2) shrinks to d_c + d_h^R.

Parameter names follow LLaMA-style checkpoints: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_lessons.model.layers import causal_mask
from dsv3_lessons.model.rope import apply_rope_half, apply_rope_interleaved, rope_inv_freq

__all__ = [
    "KVCache",
    "GroupedQueryAttention",
    "attention_kind",
    "causal_mask",
    "as_mha",
    "decode",
]


def attention_kind(num_attention_heads: int, num_key_value_heads: int) -> str:
    """Name the design: ``"MHA"`` (n_kv = n_h), ``"MQA"`` (n_kv = 1) or ``"GQA"`` (in between).

    A model with a single query head is called MHA. Raises ValueError if n_kv does not divide n_h.
    """
    _check_heads(num_attention_heads, num_key_value_heads)
    if num_key_value_heads == num_attention_heads:
        return "MHA"
    if num_key_value_heads == 1:
        return "MQA"
    return "GQA"


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_heads(num_attention_heads: int, num_key_value_heads: int) -> None:
    _check_positive_int("num_attention_heads", num_attention_heads)
    _check_positive_int("num_key_value_heads", num_key_value_heads)
    if num_attention_heads % num_key_value_heads:
        raise ValueError(f"num_key_value_heads ({num_key_value_heads}) must divide num_attention_heads "
                         f"({num_attention_heads}): every key/value head serves the same number of query heads")


class KVCache:
    """Pre-allocated key/value cache for one attention layer.

    Storage: ``k`` and ``v``, each ``[batch, max_len, n_kv_heads, head_dim]``; ``k`` holds keys
    *after* RoPE (a cached key is never rotated again). Only the first ``length`` slots are valid:
    :meth:`append` returns views of that prefix, so unused slots -- zeros, stale values from an
    earlier prompt, even NaN -- can never reach the softmax.

    Sizes (bytes): ``nbytes_used = batch · length · 2 · n_kv_heads · head_dim · element_size``;
    ``nbytes_allocated`` is the same with ``max_len``. Per token and layer that is
    2·n_kv·d_h elements, the quantity :mod:`dsv3_lessons.course.ch01_kv_cache.kv_cache` multiplies out for real models.

    Raises:
        ValueError: non-positive sizes, appending past ``max_len``, or keys/values whose shape does
            not match the cache.
    """

    def __init__(self, batch: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        for name, value in (("batch", batch), ("max_len", max_len), ("n_kv_heads", n_kv_heads),
                            ("head_dim", head_dim)):
            _check_positive_int(name, value)
        self.k = torch.zeros(batch, max_len, n_kv_heads, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[1]

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token occupies in this layer's cache (keys and values, one batch row)."""
        return 2 * self.k.shape[2] * self.k.shape[3] * self.k.element_size()

    @property
    def nbytes_used(self) -> int:
        """Bytes held by the valid slots (all batch rows)."""
        return self.k.shape[0] * self.length * self.bytes_per_token

    @property
    def nbytes_allocated(self) -> int:
        """Bytes reserved for ``max_len`` slots (all batch rows)."""
        return self.k.shape[0] * self.max_len * self.bytes_per_token

    def reset(self) -> None:
        """Forget every token (the storage is kept and will be overwritten)."""
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``[batch, seq, n_kv_heads, head_dim]``; return the valid prefix views.

        Returns ``(k_valid, v_valid)``, each ``[batch, length, n_kv_heads, head_dim]`` after the append.
        """
        want = (self.k.shape[0], self.k.shape[2], self.k.shape[3])
        for name, t in (("k", k), ("v", v)):
            if t.dim() != 4 or (t.shape[0], t.shape[2], t.shape[3]) != want:
                raise ValueError(f"{name} must be [batch={want[0]}, seq, n_kv_heads={want[1]}, head_dim={want[2]}], "
                                 f"got {tuple(t.shape)}")
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"k and v must hold the same number of tokens, got {k.shape[1]} and {v.shape[1]}")
        end = self.length + k.shape[1]
        if end > self.max_len:
            raise ValueError(f"cache full: {self.length} + {k.shape[1]} tokens > max_len {self.max_len}; "
                             f"allocate a larger cache")
        self.k[:, self.length:end] = k.to(self.k.dtype)
        self.v[:, self.length:end] = v.to(self.v.dtype)
        self.length = end
        return self.k[:, :end], self.v[:, :end]


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with n_h query heads sharing n_kv key/value heads (MHA ⊃ GQA ⊃ MQA).

    Args:
        hidden_size: d, width of the residual stream.
        num_attention_heads: n_h query heads.
        num_key_value_heads: n_kv key/value heads; must divide n_h (n_h -> MHA, 1 -> MQA).
        head_dim: d_h per head (default d / n_h); must be even because RoPE rotates pairs.
        rope_theta: RoPE base (10000 in RoFormer and LLaMA-2; 500000 in LLaMA-3).
        rope_layout: ``"interleaved"`` (pairs (x_{2i}, x_{2i+1}), default) or ``"half"``
            (pairs (x_i, x_{i+d_h/2}), transformers' LLaMA).
        bias: add biases to the four projections (Qwen2 uses them on q/k/v; LLaMA does not).

    ``forward(x [batch, seq, d], start_pos=0, cache=None) -> [batch, seq, d]``. Logits are scaled
    by d_h^-1/2. With a :class:`KVCache`, the new rotated keys and values are appended and the
    queries attend to every cached token (``start_pos`` must equal ``cache.length``).

    Raises:
        ValueError: invalid sizes, ``x`` not ``[batch, seq, hidden_size]``, ``start_pos`` that does
            not match the cache, a cache built for another layer shape, or an unknown layout.
    """

    def __init__(self, hidden_size: int, num_attention_heads: int, num_key_value_heads: int | None = None,
                 head_dim: int | None = None, rope_theta: float = 10000.0, rope_layout: str = "interleaved",
                 bias: bool = False):
        super().__init__()
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        _check_positive_int("hidden_size", hidden_size)
        _check_heads(num_attention_heads, num_key_value_heads)
        if head_dim is None:
            if hidden_size % num_attention_heads:
                raise ValueError(f"hidden_size ({hidden_size}) is not divisible by num_attention_heads "
                                 f"({num_attention_heads}); pass head_dim explicitly")
            head_dim = hidden_size // num_attention_heads
        _check_positive_int("head_dim", head_dim)
        if head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs of channels), got {head_dim}")
        if rope_layout not in ("interleaved", "half"):
            raise ValueError(f"rope_layout must be 'interleaved' or 'half', got {rope_layout!r}")
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_theta = rope_theta
        self.rope_layout = rope_layout
        self.q_proj = nn.Linear(hidden_size, num_attention_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_key_value_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_key_value_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_attention_heads * head_dim, hidden_size, bias=bias)
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, rope_theta), persistent=False)
        self.softmax_scale = head_dim ** -0.5

    # ------------------------------------------------------------------ facts
    @property
    def kind(self) -> str:
        """``"MHA"``, ``"GQA"`` or ``"MQA"``."""
        return attention_kind(self.num_attention_heads, self.num_key_value_heads)

    @property
    def num_groups(self) -> int:
        """g = n_h / n_kv: query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def kv_elements_per_token(self) -> int:
        """Cache elements one token adds to this layer: 2·n_kv·d_h (keys and values)."""
        return 2 * self.num_key_value_heads * self.head_dim

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """An empty :class:`KVCache` shaped for this layer (dtype defaults to the weights' dtype)."""
        dtype = dtype or self.k_proj.weight.dtype
        return KVCache(batch, max_len, self.num_key_value_heads, self.head_dim, dtype, self.k_proj.weight.device)

    # ------------------------------------------------------------------ pieces
    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [batch, seq, heads, head_dim]`` at integer ``positions [seq]`` (whole head)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [seq, d_h/2]
        cos, sin = angles.cos(), angles.sin()
        rotate = apply_rope_interleaved if self.rope_layout == "interleaved" else apply_rope_half
        return rotate(x.transpose(1, 2), cos, sin).transpose(1, 2)

    def qkv(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries ``[b, s, n_h, d_h]``, rotated keys and values ``[b, s, n_kv, d_h]``."""
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_attention_heads, self.head_dim)
        k = self.k_proj(x).view(b, s, self.num_key_value_heads, self.head_dim)
        v = self.v_proj(x).view(b, s, self.num_key_value_heads, self.head_dim)
        return self.rope(q, positions), self.rope(k, positions), v

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must be [batch, seq, hidden_size={self.hidden_size}], got {tuple(x.shape)}")
        if not isinstance(start_pos, int) or start_pos < 0:
            raise ValueError(f"start_pos must be a non-negative integer, got {start_pos!r}")
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        q, k, v = self.qkv(x, positions)
        if cache is not None:
            if cache.length != start_pos:
                raise ValueError(f"start_pos={start_pos} but the cache holds {cache.length} tokens; "
                                 f"pass start_pos=cache.length")
            k, v = cache.append(k, v)  # valid prefix only: unused slots never enter the softmax
        g, n_kv = self.num_groups, self.num_key_value_heads
        q = q.view(b, s, n_kv, g, self.head_dim)  # query head i = (i // g, i % g)
        scores = torch.einsum("bskgd,btkd->bskgt", q, k) * self.softmax_scale
        mask = causal_mask(s, k.shape[1], device=x.device)
        scores = scores.masked_fill(~mask[None, :, None, None, :], float("-inf"))
        probs = F.softmax(scores.float(), dim=-1).to(v.dtype)
        out = torch.einsum("bskgt,btkd->bskgd", probs, v)
        return self.o_proj(out.reshape(b, s, self.num_attention_heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, n_heads={self.num_attention_heads}, n_kv_heads={self.num_key_value_heads}, "
                f"head_dim={self.head_dim}, rope_layout={self.rope_layout}")


def as_mha(layer: GroupedQueryAttention) -> GroupedQueryAttention:
    """An MHA layer that computes exactly what ``layer`` computes (GQA/MQA are MHA with tied K/V heads).

    Each key/value head's rows of ``k_proj``/``v_proj`` are copied to the g query heads of its group,
    so the result has n_kv = n_h and g times the KV cache -- the memory GQA/MQA save. ``q_proj``,
    ``o_proj``, RoPE settings and biases are copied unchanged.
    """
    mha = GroupedQueryAttention(layer.hidden_size, layer.num_attention_heads, layer.num_attention_heads,
                                layer.head_dim, layer.rope_theta, layer.rope_layout, bias=layer.q_proj.bias is not None)
    mha = mha.to(device=layer.q_proj.weight.device, dtype=layer.q_proj.weight.dtype)
    g, d_h, n_kv = layer.num_groups, layer.head_dim, layer.num_key_value_heads
    with torch.no_grad():
        mha.q_proj.load_state_dict(layer.q_proj.state_dict())
        mha.o_proj.load_state_dict(layer.o_proj.state_dict())
        for src, dst in ((layer.k_proj, mha.k_proj), (layer.v_proj, mha.v_proj)):
            w = src.weight.view(n_kv, d_h, layer.hidden_size).repeat_interleave(g, dim=0)
            dst.weight.copy_(w.reshape(-1, layer.hidden_size))
            if src.bias is not None:
                dst.bias.copy_(src.bias.view(n_kv, d_h).repeat_interleave(g, dim=0).reshape(-1))
    return mha


def decode(layer: GroupedQueryAttention, x: torch.Tensor, prompt_len: int,
           use_cache: bool = True) -> tuple[torch.Tensor, int]:
    """Run ``layer`` the way generation does: a prompt first, then one new position per step.

    Args:
        x: hidden states ``[batch, T, d]`` for all T positions (fixed in advance, so the two modes
            can be compared; in a real model step t+1's input comes from step t's output).
        prompt_len: P, positions processed at once before the one-at-a-time steps (1 ≤ P ≤ T).
        use_cache: True -> keep keys/values in a :class:`KVCache` and feed only the new position;
            False -> re-run the layer on the whole prefix at every step and keep its last row.

    Returns:
        ``(out, kv_rows)``: outputs ``[batch, T, d]`` (identical in both modes) and how many token
        positions went through ``k_proj`` per batch row. With a cache that is T; without one it is
        P + Σ_{t=P+1..T} t, which grows like T²/2.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be [batch, T, hidden], got {tuple(x.shape)}")
    b, T, _ = x.shape
    if not isinstance(prompt_len, int) or not 1 <= prompt_len <= T:
        raise ValueError(f"prompt_len must be an integer in [1, T={T}], got {prompt_len!r}")
    rows = [0]
    hook = layer.k_proj.register_forward_hook(lambda mod, inp, out: rows.__setitem__(0, rows[0] + inp[0].shape[1]))
    try:
        with torch.no_grad():
            if use_cache:
                cache = layer.new_cache(b, T, dtype=x.dtype)
                outs = [layer(x[:, :prompt_len], 0, cache)]
                outs += [layer(x[:, t:t + 1], t, cache) for t in range(prompt_len, T)]
            else:
                outs = [layer(x[:, :prompt_len])]
                outs += [layer(x[:, :t + 1])[:, -1:] for t in range(prompt_len, T)]
    finally:
        hook.remove()
    return torch.cat(outs, dim=1), rows[0]
