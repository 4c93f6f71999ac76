"""FP8 training as DeepSeek-V3 does it, simulated faithfully on a CPU.

Source: V3 report (arXiv 2412.19437) §3.3 "FP8 training" and §3.5.2; the released checkpoint's
``quantization_config`` and ``weight_scale_inv`` tensors; official ``inference/kernel.py``. torch casts to
``float8_e4m3fn``, ``float8_e5m2`` and ``float8_e4m3fnuz`` on the CPU, so every rounding below is the exact
FP8 rounding; only the matrix multiply and its accumulator are simulated in float32.

The pieces, top to bottom:

* **Formats** (:func:`format_info`, :func:`representable_values`): max, smallest normal, mantissa bits, all
  read from ``torch.finfo`` (E4M3 max 448, E5M2 max 57344, E4M3FNUZ max 240).
* **Casting** (:func:`cast_to_fp8`): clamp to ±max *before* the cast. Overflow is NaN in E4M3FNUZ and has
  been NaN or saturation in E4M3FN depending on library and version; clamping makes it saturate everywhere.
* **Scaling** (:func:`compute_scale`): s = amax / fp8_max, so x ≈ q·s with q = x/s in FP8. All-zero blocks
  have their amax floored (:data:`AMAX_FLOOR` = 1e-4, as the official kernels) so no 0/0 = NaN appears.
  Optional power-of-two scales are rounded **up** to 2^⌈log2 s⌉ *before* quantizing (rounding after would
  quantize with one scale and dequantize with another); V3 §3.3.3 uses them for the activations after attention
  (re-quantized from 1×128 to 128×1 tiles for the backward pass, "to avoid introducing extra quantization
  error") and for the dispatched inputs of the MoE up-projections.
* **Granularity** (V3 §3.3.2, "Fine-Grained Quantization"; E4M3 for every GEMM input, "Mantissa over
  Exponents"; scales computed online from the current values, "Online Quantization"): per tensor; per
  1×128 **tile** for activations (one token, 128 channels: :func:`quantize_tiles`); per 128×128 **block** for
  weights (:func:`quantize_blocks`). The checkpoint stores the block form: FP8 ``weight`` plus float32
  ``weight_scale_inv`` of shape ⌈rows/128⌉×⌈cols/128⌉ -- despite its name, the factor to *multiply* by
  (:func:`dequantize_blocks`). Shapes that do not divide by 128 keep
  block 128 and a partial last block: 576×7168 gives 5×56 scales.
* **Layouts for the backward pass** (V3 §3.5.2): square weight blocks transpose exactly
  (:func:`transpose_blocks`); 1×128 activation tiles do not, so the stored FP8 activations are dequantized,
  transposed and re-quantized into 128×1 tiles (:func:`requantize_transposed`), at a measurable extra error.
* **E4M3FNUZ** (:func:`to_e4m3fnuz`): same bits, exponent bias 8 instead of 7, so the bit pattern is
  reinterpreted and the scale doubled; exact.
* **Limited-precision accumulation** (V3 §3.3.2, "Increasing Accumulation Precision"): Hopper's FP8 tensor
  cores keep about 14 bits of the running sum; V3 §3.5.2 describes the alignment of 32 products and the
  truncation to the highest 14 bits, and the ISCA 2025 paper (arXiv 2505.09343, §3.1.1) 13 fraction bits
  (an FP22 register). :func:`limited_precision_sum` keeps ``mantissa_bits`` after every addition (truncation
  by default); with ``promote_every = N_C`` (V3: 128, "equivalent to 4 WGMMAs") the partial sum is added to an
  FP32 accumulator every N_C products, where the scales are applied. :func:`simulated_gemm` and
  :func:`fp8_matmul_simulated` build GEMMs on it.
* **Fake-quant Linear** (:class:`FP8Linear`, :func:`convert_linears_to_fp8`): forward GEMM on FP8-rounded
  inputs (activations 1×128, weights 128×128), backward GEMMs (dgrad, wgrad) on FP8-rounded inputs too
  (E4M3 everywhere, V3 §3.3.2; the dataflow of Fig. 6, §3.3.1), straight-through gradient for the rounding.
  Embedding, output head, MoE gate, norms and the attention core stay in higher precision, as in V3 §3.3.1.
  The GEMMs themselves accumulate in exact float32 here: the ideal case that promotion approaches.

Nothing here imports ``tools`` or ``course``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FORMATS", "AMAX_FLOOR", "BLOCK", "FP8Format", "format_info", "representable_values", "cast_to_fp8",
    "round_to_fp8", "compute_scale", "block_grid", "quantize_per_tensor", "dequantize_per_tensor",
    "quantize_tiles", "dequantize_tiles", "quantize_blocks", "dequantize_blocks", "fake_quantize",
    "transpose_blocks", "requantize_transposed", "to_e4m3fnuz", "round_mantissa", "limited_precision_sum",
    "simulated_gemm", "fp8_matmul_simulated", "FP8Linear", "convert_linears_to_fp8", "DEFAULT_KEEP",
]

#: format name -> torch dtype (the names used across the course and in ``quantization_config.fmt``).
FORMATS: dict[str, torch.dtype] = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2,
                                   "e4m3fnuz": torch.float8_e4m3fnuz}
_REFERENCE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: amax floor for all-zero blocks (official kernels: 1e-4), so a scale is never 0 and 0/0 never happens.
AMAX_FLOOR = 1e-4
#: the tile/block edge of V3 (``quantization_config.weight_block_size`` = [128, 128]).
BLOCK = 128
_GRANULARITIES = ("tensor", "tile", "block")


# ---------------------------------------------------------------------------------------------- formats
def _dtype(fmt: str | torch.dtype, allow_reference: bool = False) -> torch.dtype:
    names = dict(FORMATS, **(_REFERENCE if allow_reference else {}))
    if isinstance(fmt, torch.dtype) and fmt in names.values():
        return fmt
    if isinstance(fmt, str) and fmt in names:
        return names[fmt]
    raise ValueError(f"fmt must be one of {list(names)} (or their torch dtypes), got {fmt!r}")


def _name(dtype: torch.dtype) -> str:
    return {v: k for k, v in dict(FORMATS, **_REFERENCE).items()}[dtype]


@dataclass(frozen=True)
class FP8Format:
    """Facts about one floating-point format, all from ``torch.finfo``.

    Attributes: ``name`` ("e4m3" …), ``dtype``, ``bits``, ``max`` (largest finite value),
    ``smallest_normal`` (2^(1-bias)), ``smallest_subnormal`` (smallest_normal · 2^-mantissa_bits),
    ``mantissa_bits`` (explicit fraction bits, = -log2 eps), ``exponent_bits``.
    """

    name: str
    dtype: torch.dtype
    bits: int
    max: float
    smallest_normal: float
    smallest_subnormal: float
    mantissa_bits: int
    exponent_bits: int

    @property
    def relative_step(self) -> float:
        """Spacing between neighbouring normal values, relative to the value: 2^-mantissa_bits (= eps)."""
        return 2.0 ** -self.mantissa_bits


def format_info(fmt: str | torch.dtype) -> FP8Format:
    """:class:`FP8Format` of ``fmt`` ("e4m3", "e5m2", "e4m3fnuz", or "bf16"/"fp16"/"fp32" for comparison).

    Raises: ValueError for an unknown format.
    """
    dtype = _dtype(fmt, allow_reference=True)
    fi = torch.finfo(dtype)
    mant = int(round(-math.log2(fi.eps)))
    return FP8Format(name=_name(dtype), dtype=dtype, bits=fi.bits, max=float(fi.max),
                     smallest_normal=float(fi.smallest_normal),
                     smallest_subnormal=float(fi.smallest_normal) * 2.0 ** -mant,
                     mantissa_bits=mant, exponent_bits=fi.bits - 1 - mant)


def representable_values(fmt: str | torch.dtype) -> torch.Tensor:
    """Every finite value ≥ 0 of an 8- or 16-bit format, sorted, as float32 ``[n]`` (0 included once).

    Enumerates the bit patterns (256 for FP8, 32768 non-negative ones for BF16/FP16) and keeps the finite
    ones. Raises ValueError for fp32 (too many) or an unknown format.
    """
    dtype = _dtype(fmt, allow_reference=True)
    if dtype == torch.float32:
        raise ValueError("representable_values enumerates 8- and 16-bit formats only, got fp32")
    if torch.finfo(dtype).bits == 8:
        vals = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    else:
        vals = torch.arange(32768, dtype=torch.int32).to(torch.int16).view(dtype).float()
    vals = vals[torch.isfinite(vals) & (vals >= 0)]
    return torch.unique(vals)  # sorted; +0 and -0 collapse


def cast_to_fp8(x: torch.Tensor, fmt: str | torch.dtype = "e4m3") -> torch.Tensor:
    """``x`` clamped to ±max of ``fmt``, then cast (round to nearest even): an FP8 tensor of ``x``'s shape.

    The clamp comes first so overflow saturates instead of becoming NaN (E4M3FNUZ has no infinity and
    turns overflow into NaN; E4M3FN behaviour on overflow has differed between libraries).
    NaN inputs stay NaN. Raises ValueError for an unknown format.
    """
    dtype = _dtype(fmt)
    m = torch.finfo(dtype).max
    return x.float().clamp(-m, m).to(dtype)


def round_to_fp8(x: torch.Tensor, fmt: str | torch.dtype = "e4m3") -> torch.Tensor:
    """``x`` rounded to the nearest value of ``fmt`` (saturating), returned as float32. BF16/FP16 allowed."""
    dtype = _dtype(fmt, allow_reference=True)
    if dtype in FORMATS.values():
        return cast_to_fp8(x, dtype).float()
    return x.float().to(dtype).float()


# ---------------------------------------------------------------------------------------------- scales
def compute_scale(amax: torch.Tensor, fmt: str | torch.dtype = "e4m3", power_of_two: bool = False,
                  floor: float = AMAX_FLOOR) -> torch.Tensor:
    """Scale s = max(amax, floor) / fp8_max (float32, same shape as ``amax``): x ≈ q·s, q = x/s.

    With ``power_of_two`` the scale is rounded **up** to 2^⌈log2 s⌉, so |x/s| ≤ fp8_max still holds and the
    multiplication by s is exact; this rounding must happen before x/s is computed. V3 §3.3.3 rounds the scales
    of two activations this way: the inputs of the linear after attention (re-quantized from 1×128 to 128×1
    tiles in the backward pass) and the inputs of the MoE up-projections (dispatched in FP8).
    Raises: ValueError for a negative amax or a floor ≤ 0.
    """
    if floor <= 0:
        raise ValueError(f"floor must be > 0 (it keeps all-zero blocks from giving 0/0), got {floor}")
    amax = torch.as_tensor(amax, dtype=torch.float32)
    if bool((amax < 0).any()):
        raise ValueError("amax must be >= 0 (it is a maximum of absolute values)")
    s = amax.clamp(min=floor) / torch.finfo(_dtype(fmt)).max
    if power_of_two:
        s = torch.exp2(torch.ceil(torch.log2(s)))
    return s


def _block(block: int | tuple[int, int], what: str = "block") -> tuple[int, int]:
    br, bc = (block, block) if isinstance(block, int) else tuple(block)
    if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in (br, bc)):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {block!r}")
    return br, bc


def block_grid(shape: Iterable[int], block: int | tuple[int, int] = BLOCK) -> tuple[int, int]:
    """Shape of the scale grid of a ``[rows, cols]`` matrix in ``block`` blocks: (⌈rows/b_r⌉, ⌈cols/b_c⌉).

    576×7168 in 128×128 blocks -> (5, 56): the last block row holds 576 - 4·128 = 64 rows.
    Raises: ValueError for a shape that is not two positive ints or a bad block.
    """
    shape = tuple(shape)
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"shape must be [rows, cols] of positive ints, got {shape}")
    br, bc = _block(block)
    return math.ceil(shape[0] / br), math.ceil(shape[1] / bc)


def _check_float(x: torch.Tensor, name: str, dims: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got "
                         f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if dims is not None and x.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(x.shape)}")
    if dims is None and x.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")


# ---------------------------------------------------------------------------------------------- per tensor
def quantize_per_tensor(x: torch.Tensor, fmt: str | torch.dtype = "e4m3",
                        power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor: ``(q, s)`` with q FP8 of x's shape and s a 0-d float32 tensor."""
    _check_float(x, "x")
    s = compute_scale(x.detach().abs().max().float(), fmt, power_of_two)
    return cast_to_fp8(x.float() / s, fmt), s


def dequantize_per_tensor(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``q.float() · s`` (float32)."""
    return q.float() * s


# ---------------------------------------------------------------------------------------------- 1×128 tiles
def quantize_tiles(x: torch.Tensor, tile: int = BLOCK, fmt: str | torch.dtype = "e4m3",
                   power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tile quantization along the last dim (activations: one token × ``tile`` channels, V3 §3.3.2).

    Args:
        x: ``[..., K]`` float tensor (K need not divide by ``tile``: the last tile is partial).
        tile: channels per tile (V3: 128).
    Returns:
        ``q [..., K]`` in FP8 and ``scale [..., ⌈K/tile⌉]`` float32, with x[..., k] ≈ q[..., k]·scale[..., k // tile].
    Raises: ValueError for a non-float x or a bad tile.
    """
    _check_float(x, "x")
    tile = _block(tile, "tile")[0]
    k = x.shape[-1]
    n = math.ceil(k / tile)
    xp = F.pad(x.float(), (0, n * tile - k)).reshape(*x.shape[:-1], n, tile)
    s = compute_scale(xp.detach().abs().amax(dim=-1), fmt, power_of_two)
    q = cast_to_fp8(xp / s[..., None], fmt).reshape(*x.shape[:-1], n * tile)[..., :k]
    return q, s


def dequantize_tiles(q: torch.Tensor, scale: torch.Tensor, tile: int = BLOCK) -> torch.Tensor:
    """Inverse of :func:`quantize_tiles`: ``q[..., k] · scale[..., k // tile]`` as float32.

    Raises: ValueError when ``scale`` is not ``[..., ⌈K/tile⌉]`` for ``q [..., K]``.
    """
    tile = _block(tile, "tile")[0]
    k = q.shape[-1]
    n = math.ceil(k / tile)
    if tuple(scale.shape) != (*q.shape[:-1], n):
        raise ValueError(f"scale has shape {tuple(scale.shape)} but q {tuple(q.shape)} in 1x{tile} tiles needs "
                         f"{(*q.shape[:-1], n)}")
    return q.float() * scale.float().repeat_interleave(tile, dim=-1)[..., :k]


# ---------------------------------------------------------------------------------------------- 128×128 blocks
def quantize_blocks(w: torch.Tensor, block: int | tuple[int, int] = BLOCK, fmt: str | torch.dtype = "e4m3",
                    power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block quantization of a weight matrix (V3 §3.3.2; the released checkpoint's form).

    Args:
        w: ``[rows, cols]`` float (``[out_features, in_features]`` for a linear layer).
        block: block edge(s), V3: 128 (``quantization_config.weight_block_size``).
    Returns:
        ``q [rows, cols]`` FP8 and ``weight_scale_inv [⌈rows/b⌉, ⌈cols/b⌉]`` float32 with
        w[r, c] ≈ q[r, c]·weight_scale_inv[r // b, c // b] (multiply: s = amax/fp8_max).
    Raises: ValueError for a non-2-D or non-float w or a bad block.
    """
    _check_float(w, "w", dims=2)
    br, bc = _block(block)
    rows, cols = w.shape
    gr, gc = block_grid(w.shape, (br, bc))
    wp = F.pad(w.float(), (0, gc * bc - cols, 0, gr * br - rows)).reshape(gr, br, gc, bc)
    s = compute_scale(wp.detach().abs().amax(dim=(1, 3)), fmt, power_of_two)      # [gr, gc]
    q = cast_to_fp8(wp / s[:, None, :, None], fmt).reshape(gr * br, gc * bc)[:rows, :cols]
    return q, s


def dequantize_blocks(q: torch.Tensor, scale_inv: torch.Tensor,
                      block: int | tuple[int, int] = BLOCK) -> torch.Tensor:
    """``q[r, c] · scale_inv[r // b_r, c // b_c]`` as float32 (the checkpoint's ``weight_scale_inv``).

    Raises: ValueError for a non-2-D q or a scale grid that is not ``block_grid(q.shape, block)``.
    """
    if q.dim() != 2:
        raise ValueError(f"q must be 2-D [rows, cols], got shape {tuple(q.shape)}")
    br, bc = _block(block)
    rows, cols = q.shape
    grid = block_grid(q.shape, (br, bc))
    if tuple(scale_inv.shape) != grid:
        raise ValueError(f"scale_inv has shape {tuple(scale_inv.shape)} but a [{rows}, {cols}] weight in "
                         f"{br}x{bc} blocks needs ceil({rows}/{br}) x ceil({cols}/{bc}) = {grid}")
    s = scale_inv.float().repeat_interleave(br, dim=0)[:rows].repeat_interleave(bc, dim=1)[:, :cols]
    return q.float() * s


def fake_quantize(x: torch.Tensor, granularity: str = "tile", fmt: str | torch.dtype = "e4m3",
                  block: int = BLOCK, power_of_two: bool = False) -> torch.Tensor:
    """Quantize then dequantize (float32, x's shape): what the GEMM sees after FP8 rounding.

    ``granularity``: "tensor" (one scale), "tile" (1×``block`` along the last dim) or "block"
    (``block``×``block`` over a 2-D x). Raises ValueError for an unknown granularity or a non-2-D x with
    "block".
    """
    if granularity == "tensor":
        return dequantize_per_tensor(*quantize_per_tensor(x, fmt, power_of_two))
    if granularity == "tile":
        return dequantize_tiles(*quantize_tiles(x, block, fmt, power_of_two), tile=block)
    if granularity == "block":
        return dequantize_blocks(*quantize_blocks(x, block, fmt, power_of_two), block=block)
    raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")


# ---------------------------------------------------------------------------------------------- layouts
def transpose_blocks(q: torch.Tensor, scale_inv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transposed weight in block form: ``(qᵀ, scale_invᵀ)``. Exact for square blocks (V3's 128×128):
    ``dequantize_blocks(*transpose_blocks(q, s)) == dequantize_blocks(q, s).T``. The backward pass (dgrad)
    needs Wᵀ; square blocks are why it costs no re-quantization."""
    if q.dim() != 2 or scale_inv.dim() != 2:
        raise ValueError(f"q and scale_inv must be 2-D, got {tuple(q.shape)} and {tuple(scale_inv.shape)}")
    return q.t().contiguous(), scale_inv.t().contiguous()


def requantize_transposed(q: torch.Tensor, scale: torch.Tensor, tile: int = BLOCK,
                          fmt: str | torch.dtype = "e4m3") -> tuple[torch.Tensor, torch.Tensor]:
    """Re-quantize stored 1×``tile`` activation tiles of ``x [T, K]`` into tiles of its transpose.

    V3 §3.5.2: the forward pass stores FP8 activations in 1×128 tiles; wgrad needs xᵀ, i.e. 128×1 tiles
    of x, so the tiles are dequantized, transposed and quantized again. Returns ``(qᵀ [K, T], scale [K, ⌈T/tile⌉])``.
    The value passes through two FP8 roundings; compare with quantizing xᵀ directly.
    """
    if q.dim() != 2:
        raise ValueError(f"q must be 2-D [tokens, channels], got shape {tuple(q.shape)}")
    return quantize_tiles(dequantize_tiles(q, scale, tile).t(), tile, fmt)


def to_e4m3fnuz(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert E4M3FN values + scales to E4M3FNUZ (AMD MI300's variant, max 240) exactly.

    Both formats share the bit layout; FNUZ's exponent bias is 8 instead of 7, so the same bits mean half
    the value. Reinterpret the bits, map negative zero (0x80, NaN in FNUZ) to +0, and double the scale:
    ``q_fnuz.float() · 2s == q.float() · s`` for every element.
    Raises: ValueError if ``q`` is not float8_e4m3fn or holds NaN.
    """
    if q.dtype != torch.float8_e4m3fn:
        raise ValueError(f"q must be torch.float8_e4m3fn, got {q.dtype}")
    if bool(torch.isnan(q.float()).any()):
        raise ValueError("q holds NaN; quantize with cast_to_fp8 (clamped) first")
    bits = q.view(torch.uint8).clone()
    bits[bits == 0x80] = 0
    return bits.view(torch.float8_e4m3fnuz), scale.float() * 2.0


# ---------------------------------------------------------------------------------------------- accumulation
def round_mantissa(x: torch.Tensor, bits: int, mode: str = "truncate") -> torch.Tensor:
    """float32 ``x`` with only ``bits`` explicit mantissa bits kept (0 ≤ bits ≤ 23; 23 = unchanged).

    ``mode="truncate"`` drops the low bits (rounds toward zero, what the Hopper FP8 accumulator was measured
    to do); ``"nearest"`` rounds half away from zero. The exponent range stays float32's.
    Raises: ValueError for bits outside 0..23 or an unknown mode.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= 23:
        raise ValueError(f"bits must be an int in 0..23 (float32 has 23 mantissa bits), got {bits!r}")
    if mode not in ("truncate", "nearest"):
        raise ValueError(f"mode must be 'truncate' or 'nearest', got {mode!r}")
    x = x.float()
    if bits == 23:
        return x
    drop = 23 - bits
    xi = x.contiguous().view(torch.int32)
    if mode == "nearest":
        xi = xi + (1 << (drop - 1))   # on the magnitude bits; a carry into the exponent is correct rounding
    return (xi & ~((1 << drop) - 1)).view(torch.float32)


def limited_precision_sum(terms: torch.Tensor, mantissa_bits: int, promote_every: int | None = None,
                          chunk_scales: torch.Tensor | None = None, mode: str = "truncate") -> torch.Tensor:
    """Sum ``terms [K, *out]`` over K in order, the running sum rounded to ``mantissa_bits`` after each add.

    Without ``promote_every``: acc_k = round(acc_{k-1} + t_k) for k = 1..K, result acc_K.
    With ``promote_every = N_C`` (V3 §3.3.2: 128): the limited accumulator restarts every N_C terms; its value
    times ``chunk_scales[c]`` (``[⌈K/N_C⌉, *out]``, default 1) is added to a float32 total (ordinary float32
    rounding), which is the result. Vectorised over ``*out``; a Python loop over K.
    Raises: ValueError for bad shapes or arguments.
    """
    _check_float(terms, "terms")
    k = terms.shape[0]
    if promote_every is not None and (not isinstance(promote_every, int) or promote_every < 1):
        raise ValueError(f"promote_every must be a positive int or None, got {promote_every!r}")
    if chunk_scales is not None:
        if promote_every is None:
            raise ValueError("chunk_scales need promote_every: scales are applied when the partial sum is promoted")
        n = math.ceil(k / promote_every)
        if tuple(chunk_scales.shape) != (n, *terms.shape[1:]):
            raise ValueError(f"chunk_scales must be [{n}, *out] = {(n, *terms.shape[1:])}, got "
                             f"{tuple(chunk_scales.shape)}")
    terms = terms.float()
    acc = torch.zeros(terms.shape[1:])
    total = torch.zeros(terms.shape[1:])
    for i in range(k):
        acc = round_mantissa(acc + terms[i], mantissa_bits, mode)
        if promote_every is not None and ((i + 1) % promote_every == 0 or i == k - 1):
            c = i // promote_every
            total = total + (acc if chunk_scales is None else acc * chunk_scales[c].float())
            acc = torch.zeros_like(acc)
    return acc if promote_every is None else total


def _bit_masks(bits: int | Iterable[int], mode: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """int32 masks ``[B, 1, 1]`` keeping ``bits`` mantissa bits, the rounding increments, and whether one int was given."""
    single = isinstance(bits, int) and not isinstance(bits, bool)
    bits_list = [bits] if single else list(bits)
    if not bits_list:
        raise ValueError("mantissa_bits must be an int or a non-empty sequence of ints")
    for b in bits_list:
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b <= 23:
            raise ValueError(f"mantissa_bits must be ints in 0..23 (float32 has 23 mantissa bits), got {b!r}")
    if mode not in ("truncate", "nearest"):
        raise ValueError(f"mode must be 'truncate' or 'nearest', got {mode!r}")
    drops = [23 - b for b in bits_list]
    mask = torch.tensor([~((1 << d) - 1) for d in drops], dtype=torch.int32).view(-1, 1, 1)
    half = torch.tensor([(1 << (d - 1)) if (d > 0 and mode == "nearest") else 0 for d in drops],
                        dtype=torch.int32).view(-1, 1, 1)
    return mask, half, single


def simulated_gemm(a: torch.Tensor, b: torch.Tensor, mantissa_bits: int | Iterable[int],
                   promote_every: int | None = None, a_scales: torch.Tensor | None = None,
                   b_scales: torch.Tensor | None = None, mode: str = "truncate") -> torch.Tensor:
    """``a [M, K] @ b [K, N]`` with the limited-precision accumulator of :func:`limited_precision_sum`.

    Products a[m, k]·b[k, n] are formed in float32 (exact for FP8 inputs: 4 × 4 significant bits) and added in
    k order, the running sum truncated (or rounded) to ``mantissa_bits`` after every addition.
    ``a_scales [M, ⌈K/N_C⌉]`` and ``b_scales [⌈K/N_C⌉, N]`` (optional, need ``promote_every = N_C``) are
    multiplied onto each promoted partial sum, as the fine-grained scales are in V3. Memory stays O(M·N):
    the products are formed one k at a time (a Python loop over K, vectorised over the outputs).

    ``mantissa_bits`` may be a sequence of B widths: all are simulated in the same pass and the result is
    ``[B, M, N]`` (``[M, N]`` for a single int).
    Raises: ValueError for mismatched shapes or bad arguments.
    """
    _check_float(a, "a", dims=2)
    _check_float(b, "b", dims=2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dims differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}")
    m, k = a.shape
    n = b.shape[1]
    if (a_scales is not None or b_scales is not None) and promote_every is None:
        raise ValueError("a_scales/b_scales need promote_every: scales are applied at promotion")
    if promote_every is not None and (not isinstance(promote_every, int) or isinstance(promote_every, bool)
                                      or promote_every < 1):
        raise ValueError(f"promote_every must be a positive int or None, got {promote_every!r}")
    nc = math.ceil(k / promote_every) if promote_every else 1
    if a_scales is not None and tuple(a_scales.shape) != (m, nc):
        raise ValueError(f"a_scales must be [M, ceil(K/N_C)] = {(m, nc)}, got {tuple(a_scales.shape)}")
    if b_scales is not None and tuple(b_scales.shape) != (nc, n):
        raise ValueError(f"b_scales must be [ceil(K/N_C), N] = {(nc, n)}, got {tuple(b_scales.shape)}")
    mask, half, single = _bit_masks(mantissa_bits, mode)
    a, b = a.float(), b.float()
    acc = torch.zeros(mask.shape[0], m, n)
    total = torch.zeros_like(acc)
    for i in range(k):
        xi = (acc + a[:, i, None] * b[None, i, :]).view(torch.int32)
        acc = ((xi + half) & mask).view(torch.float32)
        if promote_every is not None and ((i + 1) % promote_every == 0 or i == k - 1):
            c = i // promote_every
            if a_scales is not None:
                acc = acc * a_scales[:, c, None].float()
            if b_scales is not None:
                acc = acc * b_scales[None, c, :].float()
            total = total + acc
            acc = torch.zeros_like(acc)
    out = acc if promote_every is None else total
    return out[0] if single else out


def fp8_matmul_simulated(x: torch.Tensor, w: torch.Tensor, mantissa_bits: int | Iterable[int] = 13,
                         promote_every: int | None = BLOCK, fmt: str | torch.dtype = "e4m3",
                         mode: str = "truncate") -> torch.Tensor:
    """y = x wᵀ the way V3's FP8 GEMM computes it, ``x [M, K]``, ``w [N, K]`` -> ``[M, N]`` float32.

    With ``promote_every = 128`` (V3): x in 1×128 tiles, w in 128×128 blocks; each 128-long partial sum is
    accumulated with ``mantissa_bits`` then promoted to float32 and multiplied by its two scales. With
    ``promote_every=None``: per-tensor scales (a scale that varies along K cannot be applied inside one
    limited accumulator), the whole K summed in the limited accumulator, scales applied at the end.
    A sequence of ``mantissa_bits`` gives ``[B, M, N]`` (see :func:`simulated_gemm`).
    """
    _check_float(x, "x", dims=2)
    _check_float(w, "w", dims=2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x [M, K] and w [N, K] need the same K, got {tuple(x.shape)} and {tuple(w.shape)}")
    if promote_every is None:
        qx, sx = quantize_per_tensor(x, fmt)
        qw, sw = quantize_per_tensor(w, fmt)
        return simulated_gemm(qx.float(), qw.float().t(), mantissa_bits, None, mode=mode) * (sx * sw)
    if promote_every != BLOCK:
        raise ValueError(f"with fine-grained scales promote_every must equal the tile size {BLOCK}, "
                         f"got {promote_every}")
    qx, sx = quantize_tiles(x, BLOCK, fmt)                 # [M, K], [M, K/128]
    qw, sw = quantize_blocks(w, BLOCK, fmt)                # [N, K], [N/128, K/128]
    sw_rows = sw.repeat_interleave(BLOCK, dim=0)[: w.shape[0]]   # [N, K/128]: each output row's block scale
    return simulated_gemm(qx.float(), qw.float().t(), mantissa_bits, BLOCK, sx, sw_rows.t(), mode)


# ---------------------------------------------------------------------------------------------- fake-quant Linear
def _round_fp8_fast(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``cast_to_fp8(y, dtype).float()`` by float32 integer arithmetic (torch's CPU cast is scalar code).

    Clamp to ±max, then round to nearest even: at ``mantissa_bits`` on the float32 bit pattern in the normal
    range, on the fixed subnormal step (smallest_normal·2^-m) below it. Equal to the real cast
    bit for bit (``tests/test_fp8.py``); used by the training path only.
    """
    fi = torch.finfo(dtype)
    m = int(round(-math.log2(fi.eps)))
    drop = 23 - m
    y = y.clamp(-fi.max, fi.max)
    yi = y.view(torch.int32)
    normal = ((yi + ((1 << (drop - 1)) - 1) + ((yi >> drop) & 1)) & ~((1 << drop) - 1)).view(torch.float32)
    step = fi.smallest_normal * 2.0 ** -m
    sub = torch.round(y / step) * step
    return torch.where(y.abs() < fi.smallest_normal, sub, normal)


def _fake_tiles(x: torch.Tensor, tile: int, dtype: torch.dtype) -> torch.Tensor:
    """Fast ``fake_quantize(x [T, K], "tile")`` for the training path (same numbers, fewer ops)."""
    t, k = x.shape
    n = -(-k // tile)
    xp = x if n * tile == k else F.pad(x, (0, n * tile - k))
    xp = xp.reshape(t, n, tile)
    mx = torch.finfo(dtype).max
    s = xp.abs().amax(dim=-1, keepdim=True).clamp(min=AMAX_FLOOR) / mx
    y = (_round_fp8_fast(xp / s, dtype) * s).reshape(t, n * tile)
    return y if n * tile == k else y[:, :k]


def _fake_blocks(w: torch.Tensor, block: int, dtype: torch.dtype) -> torch.Tensor:
    """Fast ``fake_quantize(w [R, C], "block")`` for the training path (same numbers, fewer ops)."""
    r, c = w.shape
    gr, gc = -(-r // block), -(-c // block)
    wp = w if (gr * block, gc * block) == (r, c) else F.pad(w, (0, gc * block - c, 0, gr * block - r))
    wp = wp.reshape(gr, block, gc, block)
    mx = torch.finfo(dtype).max
    s = wp.abs().amax(dim=(1, 3), keepdim=True).clamp(min=AMAX_FLOOR) / mx
    y = (_round_fp8_fast(wp / s, dtype) * s).reshape(gr * block, gc * block)
    return y if (gr * block, gc * block) == (r, c) else y[:r, :c]


class _FP8LinearFunction(torch.autograd.Function):
    """y = Q(x) Q(W)ᵀ; dgrad = Q(g) Q(W); wgrad = Q(gᵀ) Q(xᵀ)ᵀ, with Q = FP8 round trip at V3's granularity."""

    @staticmethod
    def forward(ctx, x2d, weight, fmt, block, quantize_backward):
        dtype = FORMATS[fmt]
        xq = _fake_tiles(x2d.float(), block, dtype)          # 1×128 tiles over in_features
        wq = _fake_blocks(weight.float(), block, dtype)      # 128×128 blocks
        ctx.save_for_backward(xq, wq)                        # V3 caches the FP8 activations for wgrad
        ctx.fmt, ctx.block, ctx.quantize_backward = fmt, block, quantize_backward
        return (xq @ wq.t()).to(x2d.dtype)

    @staticmethod
    def backward(ctx, g):
        xq, wq = ctx.saved_tensors
        g = g.float()
        if ctx.quantize_backward:
            dtype = FORMATS[ctx.fmt]
            g_d = _fake_tiles(g, ctx.block, dtype)                       # 1×128 over out_features
            dx = g_d @ wq                                                 # Wᵀ: square blocks, exact
            g_w = _fake_tiles(g.t().contiguous(), ctx.block, dtype)      # 128 tokens per tile
            x_w = _fake_tiles(xq.t().contiguous(), ctx.block, dtype)     # re-quantized 128×1 tiles
            dw = g_w @ x_w.t()
        else:
            dx, dw = g @ wq, g.t() @ xq
        return dx, dw, None, None, None


class FP8Linear(nn.Linear):
    """An ``nn.Linear`` whose GEMMs see FP8-rounded inputs (fake quantization), master weights unchanged.

    Forward: activations in 1×``block`` tiles, weight in ``block``×``block`` blocks, both rounded to ``fmt``
    (V3: E4M3, 128). Backward (``quantize_backward=True``, V3 Fig. 6): the output gradient and the stored
    activations are FP8-rounded too before dgrad and wgrad; the rounding itself passes the gradient straight
    through. The products are summed in exact float32 (the ideal of V3's promotion every 128 products, not
    the limited accumulator of :func:`simulated_gemm`). The weight Parameter stays float32 (V3 §3.3.3 keeps FP32
    master weights and gradients; its AdamW moments are BF16, which this module leaves to the optimizer).
    Input ``[..., in]`` -> ``[..., out]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fmt: str = "e4m3",
                 block: int = BLOCK, quantize_backward: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {list(FORMATS)}, got {fmt!r}")
        self.fmt, self.block, self.quantize_backward = fmt, _block(block, "block")[0], quantize_backward

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = "e4m3", block: int = BLOCK,
                    quantize_backward: bool = True) -> "FP8Linear":
        """An FP8Linear holding the SAME Parameter objects as ``linear`` (optimizer state stays valid)."""
        new = cls(linear.in_features, linear.out_features, bias=False, fmt=fmt, block=block,
                  quantize_backward=quantize_backward, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"FP8Linear expects [..., {self.in_features}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        y = _FP8LinearFunction.apply(x.reshape(-1, self.in_features), self.weight, self.fmt, self.block,
                                     self.quantize_backward)
        y = y.reshape(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fmt={self.fmt}, block={self.block}"


#: module names (last component) kept in higher precision, as V3 does: output head, embedding, MoE gate.
DEFAULT_KEEP = ("lm_head", "embed_tokens", "gate", "head")


def convert_linears_to_fp8(model: nn.Module, fmt: str = "e4m3", block: int = BLOCK,
                           keep: Iterable[str] = DEFAULT_KEEP, quantize_backward: bool = True) -> list[str]:
    """Replace, in place, every ``nn.Linear`` of ``model`` by an :class:`FP8Linear` with the same Parameters.

    Modules whose last name component is in ``keep`` stay as they are (V3 §3.3.1: embedding, output head,
    MoE gate; norms and the attention core -- scores and softmax -- are not Linear modules and stay in
    float32 anyway). Returns the converted module names, in order. Already converted modules are skipped.
    """
    _dtype(fmt)
    keep = tuple(keep)
    converted = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and child_name not in keep:
                setattr(module, child_name, FP8Linear.from_linear(child, fmt, block, quantize_backward))
                converted.append(full)
    return converted
