"""Rotary position embedding (RoPE) with YaRN frequencies, as DeepSeek-V3 uses it.

Conventions pinned here (V3 report §2.1.1 and §4.3; YaRN paper arXiv 2309.00071):

* **Layout: interleaved pairs.** Channels (x_{2i}, x_{2i+1}) are rotated together by the angle
  pos·θ_i, θ_i = base^(-2i/d) -- the layout of the official inference code and of the released
  weights. transformers' ``rope_interleave=True`` path produces the same attention scores but writes
  its output as [evens | odds]; the "rotate_half" layout pairs (x_i, x_{i+d/2}) instead and needs a
  channel permutation of the weights (:func:`interleaved_to_half_permutation`).
* **YaRN always on when configured.** If ``rope_scaling`` is given, the YaRN frequencies and the
  softmax correction are applied at every sequence length (transformers' behaviour). The official
  ``inference/model.py`` decides per run: it applies YaRN's frequencies (``precompute_freqs_cis``) and
  mscale² (``MLA.__init__``) only when ``ModelArgs.max_seq_len`` exceeds ``original_seq_len`` (4096).
  The two agree for a run with ``max_seq_len`` > 4096 (its default is 16384); with ``max_seq_len`` ≤ 4096
  the official code drops both, so its logits differ from these by mscale² at every position and its
  rotations differ at every position ≥ 1, whatever the model was trained with.
* **mscale² on the logits, not on cos/sin.** The attention logit is multiplied by
  mscale(s, mscale_all_dim)² (for V3, s = 40: 1.3688879² = 1.8738542). cos/sin are multiplied by
  mscale(s, mscale)/mscale(s, mscale_all_dim), which is exactly 1 for V3. A YaRN config without the
  two DeepSeek keys follows the YaRN paper (and transformers): no logit factor, cos/sin × mscale(s).
* YaRN's blend range uses ``original_max_position_embeddings`` (4096 for V3), never the extended
  length: low = 10, high = 23 for V3's 64 rope channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "rope_inv_freq",
    "yarn_correction_range",
    "yarn_mscale",
    "yarn_inv_freq",
    "softmax_scale",
    "apply_rope_interleaved",
    "apply_rope_half",
    "interleaved_to_half_permutation",
    "RotaryEmbedding",
]


def rope_inv_freq(dim: int, base: float = 10000.0) -> torch.Tensor:
    """Plain RoPE inverse frequencies θ_i = base^(-2i/dim), i = 0..dim/2-1 (radians per position).

    Shape: ``[dim/2]`` float32.  Raises ValueError for an odd ``dim``.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"rope dim must be a positive even number, got {dim}")
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)).float()


def _correction_dim(num_rotations: float, dim: int, base: float, original_len: int) -> float:
    """Channel-pair index whose wavelength fits ``num_rotations`` full turns in ``original_len`` tokens.

    The log of the ratio is taken as a difference of logs, so that a tiny ``num_rotations`` (β_slow) with a
    long ``original_len`` gives a large finite index instead of overflowing the ratio to infinity.
    """
    return dim * (math.log(original_len) - math.log(num_rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_correction_range(dim: int, base: float, original_len: int,
                          beta_fast: float = 32, beta_slow: float = 1) -> tuple[int, int]:
    """YaRN's (low, high) pair indices (YaRN paper §3.2; official ``find_correction_range``).

    Pairs i ≤ low rotate fast enough to be left alone (extrapolation); pairs i ≥ high are
    interpolated (frequency divided by the factor); a linear ramp blends in between.
    ``original_len`` is the *pre-training* window (4096 for V3). V3: ``(10, 23)``.
    """
    low = math.floor(_correction_dim(beta_fast, dim, base, original_len))
    high = math.ceil(_correction_dim(beta_slow, dim, base, original_len))
    return max(low, 0), min(high, dim - 1)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature 0.1·mscale·ln(s) + 1 (1 when s ≤ 1). V3 (s=40): 1.3688879."""
    if factor <= 1:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0


def yarn_inv_freq(dim: int, base: float, rope_scaling: dict | None) -> torch.Tensor:
    """Inverse frequencies after YaRN (V3 report §4.3). Shape ``[dim/2]`` float32, radians/position.

    ``rope_scaling=None`` returns plain RoPE frequencies.
    """
    freqs = rope_inv_freq(dim, base)
    if rope_scaling is None:
        return freqs
    factor = float(rope_scaling["factor"])
    low, high = yarn_correction_range(dim, base, int(rope_scaling["original_max_position_embeddings"]),
                                      rope_scaling.get("beta_fast", 32), rope_scaling.get("beta_slow", 1))
    if high == low:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    # ramp = 0 -> keep the original frequency; ramp = 1 -> divide by the factor
    return freqs / factor * ramp + freqs * (1 - ramp)


def softmax_scale(qk_head_dim: int, rope_scaling: dict | None) -> float:
    """The attention-logit multiplier: (d_h + d_h^R)^-1/2 · mscale(s, mscale_all_dim)².

    Uses the full query/key width (192 for V3) -- not hidden/heads, not the 576-wide latent.
    V3: 192^-0.5 · 1.8738542 = 0.1352338.
    """
    scale = qk_head_dim ** -0.5
    if rope_scaling is not None:
        m = yarn_mscale(float(rope_scaling["factor"]), float(rope_scaling.get("mscale_all_dim", 0) or 0))
        if rope_scaling.get("mscale_all_dim"):
            scale *= m * m
    return scale


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (official DeepSeek layout).

    Args:
        x: ``[..., seq, d_rope]`` (any leading dims; heads may sit before ``seq``).
        cos, sin: ``[seq, d_rope/2]`` for the positions of ``x`` (broadcast over leading dims).
    The rotation is computed in float32 (also for float64 input) and cast back to ``x.dtype``.
    Returns: a tensor shaped like ``x``; pair (x_{2i}, x_{2i+1}) -> (x_{2i}c - x_{2i+1}s, x_{2i}s + x_{2i+1}c).
    """
    if x.shape[-1] != 2 * cos.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} rope channels but cos has {cos.shape[-1]} pairs")
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (x_i, x_{i+d/2}) pairs -- the "rotate_half" layout of GPT-NeoX and of transformers' LLaMA port
    (whose conversion script permutes the q/k weights; Meta's reference LLaMA rotates interleaved pairs, like
    DeepSeek's official code). Same shapes as above."""
    if x.shape[-1] != 2 * cos.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} rope channels but cos has {cos.shape[-1]} pairs")
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


def interleaved_to_half_permutation(dim: int) -> torch.Tensor:
    """Channel order [0, 2, 4, …, 1, 3, 5, …]: ``x[..., perm]`` turns interleaved pairs into halves.

    With weights permuted this way, :func:`apply_rope_half` gives the same scores as
    :func:`apply_rope_interleaved` (and equals transformers' interleave output layout).
    """
    return torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the decoupled RoPE channels (d_h^R of them), YaRN included.

    ``forward(positions)`` takes integer positions ``[seq]`` and returns ``(cos, sin)``, each
    ``[seq, d_h^R/2]`` float32, with YaRN frequencies and the cos/sin factor
    mscale(s, mscale)/mscale(s, mscale_all_dim) (1 for V3). ``inv_freq`` is a non-persistent buffer.
    """

    def __init__(self, dim: int, base: float = 10000.0, rope_scaling: dict | None = None):
        super().__init__()
        self.dim = dim
        self.rope_scaling = rope_scaling
        self.register_buffer("inv_freq", yarn_inv_freq(dim, base, rope_scaling), persistent=False)
        self.cos_sin_factor = 1.0
        if rope_scaling is not None:
            s = float(rope_scaling["factor"])
            m, m_all = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")
            if m and m_all:  # V3: both 1.0 -> factor exactly 1; the temperature goes into the logits
                self.cos_sin_factor = yarn_mscale(s, m) / yarn_mscale(s, m_all)
            else:  # plain YaRN (no DeepSeek keys): the YaRN paper's temperature rides on cos/sin
                self.cos_sin_factor = yarn_mscale(s)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        return angles.cos() * self.cos_sin_factor, angles.sin() * self.cos_sin_factor
