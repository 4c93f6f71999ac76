"""Chapter 3 apparatus: test oracles for the RoPE lessons and the RoPE widget's pure function.

Notebook 03 writes the mechanism itself (the pair rotation, the relative-position property, the fold failing
with RoPE on the keys, the decoupled fix, YaRN's ramp, blend and mscale) in short cells checked against
:mod:`dsv3_lessons.model.rope` and :mod:`dsv3_lessons.model.mla`. The functions here run the same arguments
end to end, so the tests and the exercise checkers can measure them independently:

* relative position -- :func:`rope_rotate`, :func:`rope_scores`, :func:`scores_vs_distance`,
  :func:`pair_trajectory`: (R_t q)·(R_j k) = q·R_{j-t} k depends only on j - t (RoFormer, Su et al.
  2021, §3.2.2, eq. (16));
* the absorption argument -- :func:`fold_check` (V2 report §2.1.3, V3 report §2.1.1 eqs. 1–11): folding
  W^UK into the query works without RoPE, fails once RoPE sits on the content keys, works again with the
  decoupled rope key k^R; RoPE on the latents (the source transcript's claim, both latents rotated with ONE
  frequency table) keeps the fold but loses the relative-position property;
* layout conventions -- :func:`convention_scores`: interleaved pairs (official inference code) vs "rotate_half";
* YaRN -- :func:`yarn_table` (V3 report §4.3; YaRN paper, Peng et al. 2023, §3.2–3.4),
  :func:`position_zero_probe` and :func:`logit_with_mistake` (what a check at query position 0 can and
  cannot see);
* the widget's pure function -- :func:`rope_explorer`.

Notation: t is the query position, j the key position (the V3 report's). Everything is computed in float32
on CPU in well under a second. Scores here are raw dot products (no softmax scale) unless a function says
otherwise.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field

import torch

from dsv3_lessons.model.rope import (
    apply_rope_half,
    apply_rope_interleaved,
    interleaved_to_half_permutation,
    rope_inv_freq,
    softmax_scale,
    yarn_correction_range,
    yarn_inv_freq,
    yarn_mscale,
)

__all__ = [
    "V3_ROPE_SCALING",
    "FOLD_CASES",
    "CONVENTIONS",
    "rope_rotate",
    "rope_scores",
    "scores_vs_distance",
    "pair_trajectory",
    "FoldResult",
    "fold_check",
    "convention_scores",
    "YarnTable",
    "yarn_table",
    "ProbeResult",
    "position_zero_probe",
    "POSITION_ZERO_MISTAKES",
    "logit_with_mistake",
    "ExplorerResult",
    "rope_explorer",
]

#: DeepSeek-V3's released ``rope_scaling`` (HF ``config.json`` of deepseek-ai/DeepSeek-V3); rope dim 64,
#: rope_theta 10000.
V3_ROPE_SCALING: dict = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}

#: The four ways of placing RoPE that :func:`fold_check` compares.
FOLD_CASES: tuple[str, ...] = ("no_rope", "rope_on_keys", "decoupled", "rope_on_latents")

#: Layout conventions :func:`convention_scores` knows.
CONVENTIONS: tuple[str, ...] = ("interleaved", "half_permuted", "half_unpermuted")


# --------------------------------------------------------------------------- relative position
def _check_inv_freq(inv_freq: torch.Tensor, d: int, what: str) -> None:
    if inv_freq.dim() != 1 or 2 * inv_freq.shape[0] != d:
        raise ValueError(f"inv_freq must be 1-D with {what}/2 = {d // 2} entries for {d} channels, "
                         f"got shape {tuple(inv_freq.shape)}")


def rope_rotate(x: torch.Tensor, positions: torch.Tensor | int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` at integer ``positions`` with frequencies ``inv_freq`` (interleaved pairs).

    Args:
        x: ``[..., seq, d]`` vectors in the interleaved layout (pairs (x_{2i}, x_{2i+1})).
        positions: ``[seq]`` token positions (or one int used for every row).
        inv_freq: ``[d/2]`` radians per position, e.g. :func:`~dsv3_lessons.model.rope.rope_inv_freq`.
    Returns: ``[..., seq, d]``; pair i turned by the angle position·inv_freq[i].
    Raises: ValueError if ``inv_freq`` does not have d/2 entries or ``positions`` does not match ``seq``.
    """
    _check_inv_freq(inv_freq, x.shape[-1], "x.shape[-1]")
    if isinstance(positions, int):
        positions = torch.full((x.shape[-2],), positions)
    positions = torch.as_tensor(positions)
    if positions.dim() != 1 or positions.shape[0] != x.shape[-2]:
        raise ValueError(f"positions must be 1-D with one entry per row of x ({x.shape[-2]}), "
                         f"got shape {tuple(positions.shape)}")
    angles = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    return apply_rope_interleaved(x, angles.cos(), angles.sin())


def rope_scores(q: torch.Tensor, k: torch.Tensor, q_pos, k_pos, inv_freq: torch.Tensor) -> torch.Tensor:
    """Dot products RoPE(q, t)·RoPE(k, j) for paired positions (t, j) = (q_pos[p], k_pos[p]).

    Args:
        q, k: ``[d]`` one query and one key (interleaved layout).
        q_pos, k_pos: ``[P]`` integer positions (same length).
        inv_freq: ``[d/2]`` radians per position.
    Returns: ``[P]`` float32 scores (no softmax scale).
    Raises: ValueError for mismatched shapes.
    """
    if q.dim() != 1 or q.shape != k.shape:
        raise ValueError(f"q and k must be 1-D vectors of equal size, got {tuple(q.shape)} and {tuple(k.shape)}")
    q_pos, k_pos = torch.as_tensor(q_pos).reshape(-1), torch.as_tensor(k_pos).reshape(-1)
    if q_pos.shape != k_pos.shape:
        raise ValueError(f"q_pos and k_pos must have the same length, got {q_pos.numel()} and {k_pos.numel()}")
    p = q_pos.numel()
    qr = rope_rotate(q.float().expand(p, -1), q_pos, inv_freq)
    kr = rope_rotate(k.float().expand(p, -1), k_pos, inv_freq)
    return (qr * kr).sum(-1)


def scores_vs_distance(q: torch.Tensor, k: torch.Tensor, distances, inv_freq: torch.Tensor,
                       key_pos: int = 0) -> torch.Tensor:
    """Score of a query ``distance`` tokens after the key: RoPE(q, key_pos + Δ)·RoPE(k, key_pos).

    ``distances`` ``[P]`` non-negative ints; returns ``[P]``. By the relative-position property the
    result does not depend on ``key_pos`` (up to float32 rounding of the angles).
    """
    distances = torch.as_tensor(distances).reshape(-1)
    if (distances < 0).any() or key_pos < 0:
        raise ValueError("distances and key_pos must be >= 0 (a causal query comes after its key)")
    return rope_scores(q, k, key_pos + distances, torch.full_like(distances, key_pos), inv_freq)


def pair_trajectory(pair, positions, theta: float) -> torch.Tensor:
    """Where one 2-D channel pair lands when rotated by position·theta (radians).

    Args:
        pair: two numbers (x_{2i}, x_{2i+1}).
        positions: ``[P]`` positions.
        theta: the pair's frequency θ_i in radians per token.
    Returns: ``[P, 2]`` rotated coordinates, closed form (x cos a − y sin a, x sin a + y cos a).
    """
    x, y = (float(v) for v in pair)
    a = torch.as_tensor(positions, dtype=torch.float64).reshape(-1) * float(theta)
    return torch.stack((x * a.cos() - y * a.sin(), x * a.sin() + y * a.cos()), dim=-1).float()


# --------------------------------------------------------------------------- the absorption argument
@dataclass(frozen=True)
class FoldResult:
    """What :func:`fold_check` measured for one placement of RoPE.

    Attributes:
        case: one of :data:`FOLD_CASES`.
        scores_unfolded: ``[n_heads, seq, seq]`` q·k computed the direct way (keys re-expanded per head).
        scores_folded: ``[n_heads, seq, seq]`` the same scores with W^UK absorbed into the query and the
            dot product taken against what is cached.
        fold_error: max |folded − unfolded| / max |unfolded| (relative, dimensionless).
        error_by_key_position: ``[seq]`` the same relative error, max over heads and queries, per key position.
        shift_error: max |unfolded(positions + shift) − unfolded(positions)| / max |unfolded|: 0 when
            scores depend only on relative position.
        cached_per_token: elements cached per token per layer by the folded path.
        tensors: the inputs and weights used (``h``, ``W_DQ``, ``W_UQ``, ``W_DKV``, ``W_UK``, ``W_QR``,
            ``W_KR``, ``positions``), so a test can recompute the scores independently.
    """

    case: str
    scores_unfolded: torch.Tensor
    scores_folded: torch.Tensor
    fold_error: float
    error_by_key_position: torch.Tensor
    shift_error: float
    cached_per_token: int
    tensors: dict = field(repr=False, default_factory=dict)

    def folds(self, tol: float = 1e-5) -> bool:
        """True when the folded scores match the direct ones within relative ``tol``."""
        return self.fold_error <= tol


def fold_check(case: str, *, n_tokens: int = 16, n_heads: int = 2, hidden_size: int = 256,
               q_lora_rank: int = 1536, kv_lora_rank: int = 512, qk_nope_head_dim: int = 128,
               qk_rope_head_dim: int = 64, base: float = 10000.0, shift: int = 5,
               seed: int = 0) -> FoldResult:
    """Try to absorb W^UK into the query for one placement of RoPE, and measure what happens.

    Per head i (V3 eqs. 1–11, without the RMSNorms, which act per token and do not touch the argument):
    c^Q_t = W^DQ h_t, c^KV_t = W^DKV h_t, q^C = W^UQ_i c^Q, k^C = W^UK_i c^KV. The folded path computes the
    latent-space query q̃ = W^UK_iᵀ q once and dots it with the cached latent -- one matrix product less per
    key, and nothing per head to cache. The cases:

    ``"no_rope"``
        scores q^C_t·W^UK c_j (query t, key j). Fold exact (associativity). Caches d_c.
    ``"rope_on_keys"``
        RoPE on the content query and key: R_t q^C_t · R_j W^UK c_j = q^C_tᵀ R_{j−t} W^UK c_j. The matrix
        that would have to be absorbed, R_{j−t} W^UK, changes with the key position, so the folded path
        (R_t q^C_t)ᵀ W^UK · c_j misses R_j: wrong everywhere except key position 0 (R_0 = I).
    ``"decoupled"``
        V3's design: q = [q^C ; q^R], k = [k^C ; k^R] with q^R = RoPE(W^QR c^Q) per head and ONE rotated
        key k^R = RoPE(W^KR h_t) shared by the heads. The content part folds exactly, the rope part is a
        small extra dot product against the cached k^R. Caches d_c + d_h^R (576 for V3).
    ``"rope_on_latents"``
        The source transcript's claim: rotate c^Q and c^KV themselves, both with ONE frequency table (so
        ``q_lora_rank`` must equal ``kv_lora_rank``; with two different tables the relative property would
        break for a second, unrelated reason). Scores (R_t c^Q_t)ᵀ W^UQᵀ W^UK (R_j c^KV_j); the fold is
        exact (cache the rotated latent), but W^UQᵀ W^UK does not commute with the rotations, so scores no
        longer depend only on j − t (large ``shift_error``).

    Args:
        case: one of :data:`FOLD_CASES`.
        n_tokens: sequence length (positions 0..n_tokens-1); keyword-only sizes default to V3's head
            geometry (d_c' 1536, d_c 512, d_h 128, d_h^R 64) with a small hidden size 256.
        shift: positions are shifted by this many tokens to measure ``shift_error``.
        seed: seeds the random inputs/weights (std 1/sqrt(fan_in)).
    Returns: :class:`FoldResult`. Raises: ValueError for an unknown ``case``, non-positive sizes, or
    ``"rope_on_latents"`` with ``q_lora_rank != kv_lora_rank``.
    Source: V2 report §2.1.3 ("RoPE is incompatible with low-rank KV compression"); V3 report §2.1.1.
    """
    if case not in FOLD_CASES:
        raise ValueError(f"case must be one of {FOLD_CASES}, got {case!r}")
    sizes = dict(n_tokens=n_tokens, n_heads=n_heads, hidden_size=hidden_size, q_lora_rank=q_lora_rank,
                 kv_lora_rank=kv_lora_rank, qk_nope_head_dim=qk_nope_head_dim, qk_rope_head_dim=qk_rope_head_dim)
    for name, v in sizes.items():
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    for name in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim"):
        if sizes[name] % 2:
            raise ValueError(f"{name} must be even (RoPE may rotate it in pairs), got {sizes[name]}")
    if case == "rope_on_latents" and q_lora_rank != kv_lora_rank:
        raise ValueError(f"case 'rope_on_latents' rotates both latents with one frequency table: q_lora_rank "
                         f"({q_lora_rank}) must equal kv_lora_rank ({kv_lora_rank})")
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(*shape, generator=g) / math.sqrt(shape[-1])

    h = torch.randn(n_tokens, hidden_size, generator=g)
    W_DQ, W_DKV = w(q_lora_rank, hidden_size), w(kv_lora_rank, hidden_size)
    W_UQ, W_UK = w(n_heads, qk_nope_head_dim, q_lora_rank), w(n_heads, qk_nope_head_dim, kv_lora_rank)
    W_QR, W_KR = w(n_heads, qk_rope_head_dim, q_lora_rank), w(qk_rope_head_dim, hidden_size)
    pos0 = torch.arange(n_tokens)
    f_head, f_rope = rope_inv_freq(qk_nope_head_dim, base), rope_inv_freq(qk_rope_head_dim, base)
    f_cq = f_ckv = rope_inv_freq(kv_lora_rank, base)          # one table for both latents (equal widths)
    c_q, c_kv = h @ W_DQ.T, h @ W_DKV.T                      # [t, d_c'], [t, d_c]
    q_c = torch.einsum("hnc,tc->htn", W_UQ, c_q)              # [heads, t, d_h]

    def unfolded(pos):
        if case == "rope_on_latents":
            q = torch.einsum("hnc,tc->htn", W_UQ, rope_rotate(c_q, pos, f_cq))
            k = torch.einsum("hnc,tc->htn", W_UK, rope_rotate(c_kv, pos, f_ckv))
            return torch.einsum("hsn,htn->hst", q, k)
        k_c = torch.einsum("hnc,tc->htn", W_UK, c_kv)          # per-head content keys, re-expanded
        if case == "rope_on_keys":
            return torch.einsum("hsn,htn->hst", rope_rotate(q_c, pos, f_head), rope_rotate(k_c, pos, f_head))
        s = torch.einsum("hsn,htn->hst", q_c, k_c)
        if case == "decoupled":
            q_r = rope_rotate(torch.einsum("hrc,tc->htr", W_QR, c_q), pos, f_rope)   # [heads, t, d_h^R]
            k_r = rope_rotate(h @ W_KR.T, pos, f_rope)                              # [t, d_h^R], shared
            s = s + torch.einsum("hsr,tr->hst", q_r, k_r)
        return s

    def folded(pos):
        if case == "rope_on_latents":
            q = torch.einsum("hnc,tc->htn", W_UQ, rope_rotate(c_q, pos, f_cq))
            cache = rope_rotate(c_kv, pos, f_ckv)                # the rotated latent is what gets cached
            return torch.einsum("hsc,tc->hst", torch.einsum("hsn,hnc->hsc", q, W_UK), cache)
        q = rope_rotate(q_c, pos, f_head) if case == "rope_on_keys" else q_c
        q_lat = torch.einsum("hsn,hnc->hsc", q, W_UK)            # W^UK absorbed: [heads, t, d_c]
        s = torch.einsum("hsc,tc->hst", q_lat, c_kv)             # against the cached, un-rotated latent
        if case == "decoupled":
            q_r = rope_rotate(torch.einsum("hrc,tc->htr", W_QR, c_q), pos, f_rope)
            s = s + torch.einsum("hsr,tr->hst", q_r, rope_rotate(h @ W_KR.T, pos, f_rope))
        return s

    su, sf = unfolded(pos0), folded(pos0)
    ref = su.abs().max().item()
    err = (sf - su).abs()
    cached = {"no_rope": kv_lora_rank, "rope_on_keys": kv_lora_rank,
              "decoupled": kv_lora_rank + qk_rope_head_dim, "rope_on_latents": kv_lora_rank}[case]
    return FoldResult(
        case=case, scores_unfolded=su, scores_folded=sf, fold_error=err.max().item() / ref,
        error_by_key_position=err.amax(dim=(0, 1)) / ref,
        shift_error=(unfolded(pos0 + shift) - su).abs().max().item() / ref,
        cached_per_token=cached,
        tensors=dict(h=h, W_DQ=W_DQ, W_UQ=W_UQ, W_DKV=W_DKV, W_UK=W_UK, W_QR=W_QR, W_KR=W_KR, positions=pos0),
    )


# --------------------------------------------------------------------------- layout conventions
def convention_scores(q: torch.Tensor, k: torch.Tensor, q_pos, k_pos, inv_freq: torch.Tensor,
                      convention: str) -> torch.Tensor:
    """Attention scores ``[Tq, Tk]`` of rope vectors produced by interleaved-layout weights.

    ``q [Tq, d]`` and ``k [Tk, d]`` come out of projections whose rows are in the released (interleaved)
    order. ``convention``:

    * ``"interleaved"`` -- rotate pairs (x_{2i}, x_{2i+1}) (official code);
    * ``"half_permuted"`` -- permute channels to [evens | odds] first, then rotate (x_i, x_{i+d/2})
      (what transformers' interleave path amounts to; the same scores);
    * ``"half_unpermuted"`` -- a mistake seen in public implementations: rotate_half applied to
      interleaved weights. Pairs the
      wrong channels, so scores differ at every position except 0.

    Raises: ValueError for an unknown convention or mismatched shapes.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if q.dim() != 2 or k.dim() != 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be [T, d] with the same d, got {tuple(q.shape)} and {tuple(k.shape)}")
    d = q.shape[-1]
    _check_inv_freq(inv_freq, d, "d")

    def table(pos):
        a = torch.as_tensor(pos).reshape(-1).float()[:, None] * inv_freq.float()[None, :]
        return a.cos(), a.sin()

    (cq, sq), (ck, sk) = table(q_pos), table(k_pos)
    if convention == "interleaved":
        qr, kr = apply_rope_interleaved(q, cq, sq), apply_rope_interleaved(k, ck, sk)
    else:
        perm = interleaved_to_half_permutation(d) if convention == "half_permuted" else torch.arange(d)
        qr, kr = apply_rope_half(q[..., perm], cq, sq), apply_rope_half(k[..., perm], ck, sk)
    return qr @ kr.T


# --------------------------------------------------------------------------- YaRN
@dataclass(frozen=True)
class YarnTable:
    """Per-pair view of YaRN for one config (V3 report §4.3; YaRN paper §3.2 "NTK-by-parts").

    Attributes (each ``[d/2]`` tensor indexed by pair i unless noted):
        index: 0..d/2-1.
        inv_freq_rope / inv_freq_yarn: θ_i before and after YaRN (radians per token).
        wavelength_rope / wavelength_yarn: 2π/θ_i in tokens.
        rotations_in_original: original_len/wavelength_rope, full turns a pair makes in the pre-training window.
        interpolated: fraction of the way from θ_i (0) to θ_i/s (1), read back from the frequencies.
        low, high: ints, :func:`~dsv3_lessons.model.rope.yarn_correction_range`.
        factor, original_len: the config's s and pre-training window (tokens).
        mscale: 0.1·mscale_all_dim·ln s + 1 (mscale_all_dim read as 1 when absent);
        softmax_scale: the V3 logit multiplier for ``qk_head_dim``.
    """

    index: torch.Tensor
    inv_freq_rope: torch.Tensor
    inv_freq_yarn: torch.Tensor
    wavelength_rope: torch.Tensor
    wavelength_yarn: torch.Tensor
    rotations_in_original: torch.Tensor
    interpolated: torch.Tensor
    low: int
    high: int
    factor: float
    original_len: int
    mscale: float
    softmax_scale: float


def yarn_table(dim: int = 64, base: float = 10000.0, rope_scaling: dict | None = None,
               qk_head_dim: int = 192) -> YarnTable:
    """Tabulate plain vs YaRN frequencies for ``dim`` rope channels (defaults: V3, :data:`V3_ROPE_SCALING`).

    Raises: ValueError for an odd ``dim`` (from :func:`~dsv3_lessons.model.rope.rope_inv_freq`) or a
    ``rope_scaling`` without ``factor``/``original_max_position_embeddings``.
    """
    rs = dict(V3_ROPE_SCALING if rope_scaling is None else rope_scaling)
    for key in ("factor", "original_max_position_embeddings"):
        if key not in rs:
            raise ValueError(f"rope_scaling needs {key!r}, got keys {sorted(rs)}")
    s, orig = float(rs["factor"]), int(rs["original_max_position_embeddings"])
    plain, yarn = rope_inv_freq(dim, base), yarn_inv_freq(dim, base, rs)
    low, high = yarn_correction_range(dim, base, orig, rs.get("beta_fast", 32), rs.get("beta_slow", 1))
    # θ_yarn = θ(1 − r) + (θ/s) r  =>  r = (θ − θ_yarn) / (θ − θ/s)
    interp = (plain - yarn) / (plain - plain / s) if s > 1 else torch.zeros_like(plain)
    wl = 2 * math.pi / plain
    return YarnTable(
        index=torch.arange(dim // 2), inv_freq_rope=plain, inv_freq_yarn=yarn, wavelength_rope=wl,
        wavelength_yarn=2 * math.pi / yarn, rotations_in_original=orig / wl, interpolated=interp,
        low=low, high=high, factor=s, original_len=orig,
        mscale=yarn_mscale(s, float(rs.get("mscale_all_dim", 1.0) or 1.0)),
        softmax_scale=softmax_scale(qk_head_dim, rs),
    )


@dataclass(frozen=True)
class ProbeResult:
    """Differences between a right and a wrong rope configuration, per query position.

    Attributes (``[P]`` tensors over ``positions``):
        positions: the query positions probed (the key sits at position 0).
        rotated_diff: max |RoPE_right(x, p) − RoPE_wrong(x, p)| over channels: what a layer emits for q^R/k^R.
        logit_diff_freq: |logit_right − logit_wrong| for query p attending to key 0, wrong frequencies.
        logit_diff_mscale: the same with right frequencies but the mscale² factor left out of the scale.
        logit_right: the right logit (scale · q^R·k^R).
    """

    positions: torch.Tensor
    rotated_diff: torch.Tensor
    logit_diff_freq: torch.Tensor
    logit_diff_mscale: torch.Tensor
    logit_right: torch.Tensor


def position_zero_probe(positions, wrong_scaling: dict, dim: int = 64, base: float = 10000.0,
                        right_scaling: dict | None = None, qk_head_dim: int = 192, seed: int = 0) -> ProbeResult:
    """Why a check at position 0 cannot catch a wrong YaRN frequency (YaRN paper §3.2; V3 report §4.3).

    At position 0 every rotation is the identity, so any frequency table -- right or wrong -- returns its
    input unchanged; a parity test that only feeds one token (or compares the first position) passes.
    From position 1 on the wrong table rotates by the wrong angle. The mscale² logit factor, by contrast,
    multiplies every logit and shows at position 0 too.

    Args:
        positions: ``[P]`` query positions to probe (include 0).
        wrong_scaling: the mistaken ``rope_scaling`` dict (e.g. another factor, or the range computed from
            the extended length); ``right_scaling`` defaults to :data:`V3_ROPE_SCALING`.
        dim, base: rope channels and θ base. qk_head_dim: width used for the softmax scale (192 for V3).
    Returns: :class:`ProbeResult`.
    """
    right = dict(V3_ROPE_SCALING if right_scaling is None else right_scaling)
    positions = torch.as_tensor(positions).reshape(-1)
    if (positions < 0).any():
        raise ValueError("positions must be >= 0")
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    f_right, f_wrong = yarn_inv_freq(dim, base, right), yarn_inv_freq(dim, base, wrong_scaling)
    p = positions.numel()
    q_right = rope_rotate(q.expand(p, -1), positions, f_right)
    q_wrong = rope_rotate(q.expand(p, -1), positions, f_wrong)
    k0 = rope_rotate(k[None], 0, f_right)[0]          # identity: position 0
    scale = softmax_scale(qk_head_dim, right)
    logit_right = scale * (q_right @ k0)
    logit_wrong_freq = scale * (q_wrong @ k0)
    logit_no_mscale = qk_head_dim ** -0.5 * (q_right @ k0)
    return ProbeResult(positions=positions, rotated_diff=(q_right - q_wrong).abs().amax(-1),
                       logit_diff_freq=(logit_right - logit_wrong_freq).abs(),
                       logit_diff_mscale=(logit_right - logit_no_mscale).abs(), logit_right=logit_right)


#: The implementation mistakes :func:`logit_with_mistake` knows (exercise 3.3 asks which of them a test that
#: compares only the logit at query position 0 would catch).
POSITION_ZERO_MISTAKES: tuple[str, ...] = ("wrong_yarn_factor", "yarn_range_from_extended_length",
                                           "missing_mscale_squared", "rotate_half_without_permutation")


def logit_with_mistake(mistake: str | None, q_pos: int, k_pos: int, *, rope_scaling: dict | None = None,
                       dim: int = 64, base: float = 10000.0, qk_head_dim: int = 192, seed: int = 0) -> float:
    """The attention logit softmax_scale · RoPE(q, t)·RoPE(k, j) of an implementation with one ``mistake``.

    Everything that follows from the mistaken setting changes together, as it would in real code:

    * ``"wrong_yarn_factor"`` -- YaRN factor s/2 instead of s (V3: 20 instead of 40): the frequencies AND the
      softmax scale change, because mscale = 0.1·mscale_all_dim·ln s + 1 depends on s (mscale² is 1.6889 for
      s = 20, 1.8739 for s = 40);
    * ``"yarn_range_from_extended_length"`` -- the ramp computed from original·s tokens: frequencies only;
    * ``"missing_mscale_squared"`` -- right frequencies, softmax scale qk_head_dim^-1/2 without mscale²;
    * ``"rotate_half_without_permutation"`` -- pairs (x_i, x_{i+d/2}) rotated on interleaved-order vectors;
    * ``None`` -- the right implementation.

    Args:
        mistake: one of :data:`POSITION_ZERO_MISTAKES` or None.
        q_pos, k_pos: query position t and key position j (ints ≥ 0).
        rope_scaling: the right YaRN settings (default :data:`V3_ROPE_SCALING`); dim, base: rope channels, θ base;
        qk_head_dim: the width behind the softmax scale (192 for V3); seed: the random q^R, k^R.
    Returns: the logit (float).
    Raises: ValueError for an unknown mistake or a negative position.
    Source: V3 report §4.3; YaRN paper §3.2–3.4; the official ``inference/model.py`` (mscale² in softmax_scale).
    """
    if mistake is not None and mistake not in POSITION_ZERO_MISTAKES:
        raise ValueError(f"mistake must be None or one of {POSITION_ZERO_MISTAKES}, got {mistake!r}")
    q_pos, k_pos = _int_arg("q_pos", q_pos, 0), _int_arg("k_pos", k_pos, 0)
    right = dict(V3_ROPE_SCALING if rope_scaling is None else rope_scaling)
    rs = dict(right)
    if mistake == "wrong_yarn_factor":
        rs["factor"] = float(right["factor"]) / 2
    elif mistake == "yarn_range_from_extended_length":
        rs["original_max_position_embeddings"] = int(right["original_max_position_embeddings"] * right["factor"])
    freqs = yarn_inv_freq(dim, base, rs)
    scale = qk_head_dim ** -0.5 if mistake == "missing_mscale_squared" else softmax_scale(qk_head_dim, rs)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, dim, generator=g), torch.randn(1, dim, generator=g)
    conv = "half_unpermuted" if mistake == "rotate_half_without_permutation" else "interleaved"
    return scale * convention_scores(q, k, [q_pos], [k_pos], freqs, conv).item()


# --------------------------------------------------------------------------- the widget's pure function
def _int_arg(name: str, v, lo: int, hi: int | None = None) -> int:
    """``v`` as an int in [lo, hi], or a ValueError naming ``name``."""
    try:
        iv = operator.index(v)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {v!r}") from None
    if iv < lo or (hi is not None and iv > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {iv}")
    return iv


@dataclass(frozen=True)
class ExplorerResult:
    """Everything the RoPE widget draws (see :func:`rope_explorer`). Angles in radians, distances in tokens.

    Attributes:
        query_pos, key_pos, freq_index, yarn_factor: the inputs.
        theta_rope, theta_yarn: θ_i of the chosen pair before/after YaRN.
        q_pair, k_pair: ``[2]`` the chosen pair of the (unrotated) query and key.
        q_pair_rot, k_pair_rot: ``[2]`` the same pairs rotated to their positions (YaRN frequencies).
        angle_between: (query_pos − key_pos)·θ_yarn wrapped to (−π, π].
        score: full d-channel RoPE(q, t)·RoPE(k, j) with the YaRN frequencies.
        score_shifted: the same pair moved to (t − j, 0) when t ≥ j, else (0, j − t): equal to ``score``.
        distances: ``[N]`` 0, then integers log-spaced from 1 to max_distance.
        cos_rope, cos_yarn: ``[N]`` normalised score (cosine) of
            RoPE(u, Δ)·RoPE(u, 0)/|u|² for the all-ones vector u, plain vs YaRN (closed form 2Σcos(Δθ_i)/d).
        inv_freq_rope, inv_freq_yarn: ``[d/2]``. low, high: YaRN pair indices. mscale: 0.1 ln s + 1.
        original_len: the pre-training window (tokens) the YaRN range is computed from.
    """

    query_pos: int
    key_pos: int
    freq_index: int
    yarn_factor: float
    theta_rope: float
    theta_yarn: float
    q_pair: torch.Tensor
    k_pair: torch.Tensor
    q_pair_rot: torch.Tensor
    k_pair_rot: torch.Tensor
    angle_between: float
    score: float
    score_shifted: float
    distances: torch.Tensor
    cos_rope: torch.Tensor
    cos_yarn: torch.Tensor
    inv_freq_rope: torch.Tensor
    inv_freq_yarn: torch.Tensor
    low: int
    high: int
    mscale: float
    original_len: int


@functools.lru_cache(maxsize=64)
def _explorer_curves(yarn_factor: float, dim: int, base: float, original_len: int, beta_fast: float,
                     beta_slow: float, max_distance: int):
    """What :func:`rope_explorer` computes from the geometry and the YaRN factor alone (cached: a widget moving a
    position or the pair reuses it). Returns (θ ``[d/2]``, θ' ``[d/2]``, low, high, distances ``[N]``, normalised
    all-ones score ``[N]`` for plain RoPE and for YaRN); callers clone the tensors before handing them out."""
    rs = None if yarn_factor == 1 else {"factor": yarn_factor, "original_max_position_embeddings": original_len,
                                        "beta_fast": beta_fast, "beta_slow": beta_slow}
    f_rope, f_yarn = rope_inv_freq(dim, base), yarn_inv_freq(dim, base, rs)
    low, high = yarn_correction_range(dim, base, original_len, beta_fast, beta_slow)
    # 0 plus ~600 log-spaced integer distances up to max_distance (the plot's x axis is logarithmic)
    grid = torch.logspace(0, math.log10(max_distance), 600, dtype=torch.float64).round().long()
    distances = torch.unique(torch.cat((torch.tensor([0]), grid)))
    ones = torch.ones(dim)
    return (f_rope, f_yarn, low, high, distances, scores_vs_distance(ones, ones, distances, f_rope) / dim,
            scores_vs_distance(ones, ones, distances, f_yarn) / dim)


def rope_explorer(query_pos: int, key_pos: int, freq_index: int, yarn_factor: float, *, dim: int = 64,
                  base: float = 10000.0, original_len: int = 4096, beta_fast: float = 32, beta_slow: float = 1,
                  max_distance: int = 8192, seed: int = 0) -> ExplorerResult:
    """The RoPE widget's computation (pure): one pair's rotation, score vs distance, YaRN frequencies.

    Args:
        query_pos, key_pos: the query position t and the key position j (ints ≥ 0).
        freq_index: which channel pair i (0 ≤ i < dim/2) to show rotating.
        yarn_factor: YaRN's s (≥ 1; 1 means plain RoPE). V3 uses 40 over an original window of 4096.
        dim, base, original_len, beta_fast, beta_slow: rope geometry (V3 defaults).
        max_distance: the score curve covers relative distances 0..max_distance tokens (log-spaced samples).
        seed: seeds the random query/key.
    Returns: :class:`ExplorerResult`.
    Raises: ValueError naming the argument when an input is out of range.
    """
    query_pos, key_pos = _int_arg("query_pos", query_pos, 0), _int_arg("key_pos", key_pos, 0)
    max_distance = _int_arg("max_distance", max_distance, 1)
    dim = _int_arg("dim", dim, 2)
    if dim % 2:
        raise ValueError(f"dim must be a positive even number, got {dim}")
    freq_index = _int_arg("freq_index", freq_index, 0, dim // 2 - 1)
    if not yarn_factor >= 1:
        raise ValueError(f"yarn_factor must be >= 1 (1 = plain RoPE), got {yarn_factor!r}")
    f_rope, f_yarn, low, high, distances, cos_rope, cos_yarn = (
        t.clone() if isinstance(t, torch.Tensor) else t
        for t in _explorer_curves(float(yarn_factor), dim, float(base), original_len, beta_fast, beta_slow,
                                  max_distance))
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    i = freq_index
    qr = rope_rotate(q[None], query_pos, f_yarn)[0]
    kr = rope_rotate(k[None], key_pos, f_yarn)[0]
    rel = query_pos - key_pos
    shifted = rope_scores(q, k, [max(rel, 0)], [max(-rel, 0)], f_yarn).item()
    ang = math.remainder(rel * f_yarn[i].item(), 2 * math.pi)
    return ExplorerResult(
        query_pos=query_pos, key_pos=key_pos, freq_index=i, yarn_factor=float(yarn_factor),
        theta_rope=f_rope[i].item(), theta_yarn=f_yarn[i].item(),
        q_pair=q[2 * i:2 * i + 2].clone(), k_pair=k[2 * i:2 * i + 2].clone(),
        q_pair_rot=qr[2 * i:2 * i + 2], k_pair_rot=kr[2 * i:2 * i + 2], angle_between=ang,
        score=float((qr * kr).sum()), score_shifted=shifted, distances=distances,
        cos_rope=cos_rope, cos_yarn=cos_yarn,
        inv_freq_rope=f_rope, inv_freq_yarn=f_yarn, low=low, high=high, mscale=yarn_mscale(float(yarn_factor)),
        original_len=original_len,
    )
