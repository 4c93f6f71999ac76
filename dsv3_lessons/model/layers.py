"""Small building blocks shared by every block: RMSNorm, the SwiGLU feed-forward network, the causal mask.

Both match the released checkpoint's names (``weight``; ``gate_proj``/``up_proj``/``down_proj``) so a
state dict maps 1:1, and both are written from the formulas:

* RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + ε) · w, computed in float32, cast back.
* SwiGLU (Shazeer 2020): FFN(x) = W_down (SiLU(W_gate x) ⊙ W_up x). DeepSeek-V3 uses it for the dense
  layers (width ``intermediate_size``), for every routed expert and for the shared expert
  (width ``moe_intermediate_size`` · N_s).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "SwiGLU", "causal_mask"]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm. Input ``[..., dim]`` -> same shape; statistics in float32.

    ``forward`` normalises the float32 copy of ``x`` with torch's ``F.rms_norm``, casts back to ``x.dtype``
    and multiplies by the gain -- the order of operations of :meth:`reference_forward`, the formula written
    out, which tests compare it against. Without autograd (evaluation, generation) torch runs one fused
    kernel; under autograd (torch 2.13, CPU) it decomposes into the same five ops, so training speed is
    unchanged by it.
    """

    #: False (on the class or one norm) runs :meth:`reference_forward` instead of the fused kernel.
    use_fused: bool = True

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"RMSNorm expects last dim {self.weight.shape[0]}, got {tuple(x.shape)}")

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x / sqrt(mean(x²) + ε) · w, statistics in float32, written out op by op."""
        self._check(x)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_fused:
            return self.reference_forward(x)
        self._check(x)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SwiGLU(nn.Module):
    """SwiGLU FFN ``[..., hidden] -> [..., hidden]`` with ``gate_proj``, ``up_proj``, ``down_proj``."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def causal_mask(q_len: int, kv_len: int, device=None) -> torch.Tensor:
    """Boolean ``[q_len, kv_len]``: True where query i may attend to key j.

    The queries are the *last* ``q_len`` of the ``kv_len`` positions (query i sits at absolute
    position ``kv_len - q_len + i``), so a chunk appended to a cache sees every earlier token and
    itself, never a later one. Raises ValueError if ``q_len > kv_len``.
    """
    if q_len > kv_len:
        raise ValueError(f"q_len ({q_len}) cannot exceed kv_len ({kv_len}): queries are the newest positions")
    offset = kv_len - q_len
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    return torch.arange(kv_len, device=device)[None, :] <= q_pos
