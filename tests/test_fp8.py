"""FP8 module (dsv3_lessons.model.fp8): one test per pitfall class of SPEC §9 plus the issue's list.

Oracles: torch.finfo and SPEC §7 numbers, element-wise loops over blocks, exact rational arithmetic
(fractions) for the limited-precision accumulator, and the checkpoint dequantizer of hf_compat.
"""
import math
from fractions import Fraction

import pytest
import torch

from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.model import fp8
from dsv3_lessons.model.fp8 import (FP8Linear, block_grid, cast_to_fp8, compute_scale, convert_linears_to_fp8,
                                    dequantize_blocks, dequantize_tiles, fake_quantize, format_info,
                                    limited_precision_sum, quantize_blocks, quantize_per_tensor, quantize_tiles,
                                    requantize_transposed, round_mantissa, simulated_gemm, to_e4m3fnuz,
                                    transpose_blocks)


# ------------------------------------------------------------------------------------ formats (max per dtype)
@pytest.mark.parametrize("fmt, dtype, mx, normal, mant", [
    ("e4m3", torch.float8_e4m3fn, 448.0, 2.0 ** -6, 3),
    ("e5m2", torch.float8_e5m2, 57344.0, 2.0 ** -14, 2),
    ("e4m3fnuz", torch.float8_e4m3fnuz, 240.0, 2.0 ** -7, 3),
    ("bf16", torch.bfloat16, 3.3895313892515355e38, 2.0 ** -126, 7),
])
def test_format_facts_come_from_finfo(fmt, dtype, mx, normal, mant):
    info = format_info(fmt)
    assert info.dtype == dtype and info.max == mx and info.smallest_normal == normal
    assert info.mantissa_bits == mant and info.exponent_bits == info.bits - 1 - mant
    assert info.smallest_subnormal == normal * 2.0 ** -mant
    assert format_info(dtype) == info


def test_representable_values_match_closed_form():
    e4m3 = fp8.representable_values("e4m3")
    # 0, 7 subnormals, 15 binades (2^-6 .. 2^8) of 8 values, minus the NaN pattern at the top: 1 + 7 + 120 - 1
    assert len(e4m3) == 127 and e4m3[0] == 0 and e4m3[-1] == 448 and e4m3[1] == 2.0 ** -9
    e5m2 = fp8.representable_values("e5m2")
    assert len(e5m2) == 1 + 3 + 30 * 4 and e5m2[-1] == 57344      # inf/NaN binade excluded
    assert fp8.representable_values("e4m3fnuz")[-1] == 240
    bf16 = fp8.representable_values("bf16")
    assert len(bf16) == 1 + 127 + 254 * 128 and bf16[-1] == torch.finfo(torch.bfloat16).max
    # every listed value survives a round trip through its format
    assert torch.equal(e4m3.to(torch.float8_e4m3fn).float(), e4m3)
    with pytest.raises(ValueError, match="8- and 16-bit"):
        fp8.representable_values("fp32")


# ------------------------------------------------------------------------------------ clamp before cast
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e4m3fnuz"])
def test_overflow_saturates_never_nan(fmt):
    mx = format_info(fmt).max
    x = torch.tensor([mx * 1.01, -mx * 3, 1e30, -1e30, float("inf")])
    q = cast_to_fp8(x, fmt).float()
    assert torch.isfinite(q).all()
    assert q.tolist() == [mx, -mx, mx, -mx, mx]


def test_unclamped_cast_to_e4m3fnuz_gives_nan():
    """Why the clamp matters: torch's plain cast turns E4M3FNUZ overflow into NaN."""
    assert torch.isnan(torch.tensor([241.0 * 2]).to(torch.float8_e4m3fnuz).float()).all()
    assert not torch.isnan(cast_to_fp8(torch.tensor([482.0]), "e4m3fnuz").float()).any()


def test_quantizers_never_nan_on_outliers():
    x = torch.randn(4, 300)
    x[0, 5] = 1e6
    for g in ("tensor", "tile", "block"):
        assert torch.isfinite(fake_quantize(x, g)).all()


# ------------------------------------------------------------------------------------ scale direction
def test_scale_is_amax_over_max_and_multiplies():
    w = torch.zeros(128, 128)
    w[3, 7] = 896.0                       # amax 896 -> s = 2
    q, s = quantize_blocks(w)
    assert s.item() == 2.0
    assert q.float()[3, 7].item() == 448.0              # q = w / s
    assert dequantize_blocks(q, s)[3, 7].item() == 896.0  # w = q * s (dividing would give 224)
    qp, sp = quantize_per_tensor(torch.tensor([[-896.0, 1.0]]))
    assert sp.item() == 2.0 and qp.float().tolist() == [[-448.0, 0.5]]
    x = torch.full((1, 128), 0.5)
    qt, st = quantize_tiles(x)
    assert math.isclose(st.item(), 0.5 / 448, rel_tol=1e-6) and qt.float().max().item() == 448.0


def test_dequantize_matches_checkpoint_dequantizer():
    from dsv3_lessons.tools.hf_compat import dequantize_block_fp8
    w = torch.randn(200, 300)
    q, s = quantize_blocks(w)
    assert torch.equal(dequantize_blocks(q, s), dequantize_block_fp8(q, s))


# ------------------------------------------------------------------------------------ grids, non-divisible shapes
def test_block_grid_for_non_divisible_shapes():
    assert block_grid((576, 7168)) == (5, 56)      # SPEC §7: kv_a_proj_with_mqa of V3
    assert block_grid((7168, 576)) == (56, 5)
    assert block_grid((1, 1)) == (1, 1) and block_grid((129, 128)) == (2, 1)
    assert block_grid((1000, 3000), 128) == (8, 24) and block_grid((10, 10), (4, 3)) == (3, 4)
    with pytest.raises(ValueError, match="rows, cols"):
        block_grid((0, 5))
    with pytest.raises(ValueError, match="block"):
        block_grid((5, 5), 0)


def test_block_quantization_against_elementwise_loop():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(200, 300, generator=g)
    q, s = quantize_blocks(w)
    assert s.shape == (2, 3) and s.dtype == torch.float32 and q.dtype == torch.float8_e4m3fn
    for i in range(2):
        for j in range(3):
            rs, cs = slice(i * 128, (i + 1) * 128), slice(j * 128, (j + 1) * 128)
            blk = w[rs, cs]
            si = blk.abs().max() / 448
            assert s[i, j] == si                                  # partial blocks use their own amax
            assert torch.equal(q[rs, cs].float(), (blk / si).to(torch.float8_e4m3fn).float())


def test_tile_quantization_against_loop_and_shapes():
    x = torch.randn(3, 5, 300)
    q, s = quantize_tiles(x)
    assert q.shape == x.shape and s.shape == (3, 5, 3)
    for j in range(3):
        seg = x[..., j * 128:(j + 1) * 128]
        assert torch.equal(s[..., j], seg.abs().amax(-1) / 448)
    with pytest.raises(ValueError, match="scale has shape"):
        dequantize_tiles(q, s[..., :2])


def test_zero_blocks_give_no_nan():
    w = torch.zeros(256, 200)
    w[:128, :128] = torch.randn(128, 128)
    q, s = quantize_blocks(w)
    assert (s[1] == fp8.AMAX_FLOOR / 448).all() and (s[1] > 0).all()
    deq = dequantize_blocks(q, s)
    assert torch.isfinite(deq).all() and (deq[128:] == 0).all()
    for g in ("tensor", "tile"):
        assert (fake_quantize(torch.zeros(2, 256), g) == 0).all()


def test_error_bound_of_a_round_trip():
    """|w - deq| <= 2^-4 |w| in the normal range of E4M3, plus half a subnormal step s·2^-10 below it."""
    w = torch.randn(300, 260) * torch.logspace(-3, 1, 260)
    q, s = quantize_blocks(w)
    deq = dequantize_blocks(q, s)
    s_full = s.repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :260]
    assert ((deq - w).abs() <= w.abs() * 2.0 ** -4 + s_full * 2.0 ** -10).all()
    assert ((deq - w).abs() / w.abs()).max() > 2.0 ** -6       # not trivially exact


# ------------------------------------------------------------------------------------ power-of-two order
def test_power_of_two_scale_is_rounded_before_quantizing():
    w = torch.zeros(128, 128)
    w[0, 0], w[1, 1] = 300.0, 0.3
    q, s = quantize_blocks(w, power_of_two=True)
    assert s.item() == 1.0                              # 300/448 -> 2^ceil(log2 0.67) = 1
    deq = dequantize_blocks(q, s)
    assert deq[0, 0].item() == 288.0                     # 300 rounds to E4M3 288, never beyond max
    # rounding the scale AFTER quantizing with the exact scale would rescale every value by 448/300
    s_exact = compute_scale(torch.tensor(300.0))
    wrong = cast_to_fp8(w / s_exact).float() * 1.0
    assert (wrong[0, 0] - 300).abs() > 100 and (deq[0, 0] - 300).abs() < 16
    assert compute_scale(torch.tensor([448.0, 449.0, 0.0]), power_of_two=True).tolist() == [1.0, 2.0, 2.0 ** -22]


def test_power_of_two_scale_makes_dequantization_exact_in_any_precision():
    q, s = quantize_blocks(torch.randn(130, 130), power_of_two=True)
    assert torch.equal(torch.log2(s), torch.log2(s).round())
    assert torch.equal(dequantize_blocks(q, s).to(torch.bfloat16).float(), dequantize_blocks(q, s))


# ------------------------------------------------------------------------------------ layouts
def test_transposed_weight_has_transposed_grid_and_is_exact():
    w = torch.randn(576, 300)
    q, s = quantize_blocks(w)
    qt, st = transpose_blocks(q, s)
    assert st.shape == (3, 5) and qt.shape == (300, 576)
    assert torch.equal(dequantize_blocks(qt, st), dequantize_blocks(q, s).t())
    with pytest.raises(ValueError, match="needs ceil"):
        dequantize_blocks(qt, s)                   # the untransposed grid no longer fits


def test_requantizing_for_backward_costs_more_than_quantizing_directly():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 384, generator=g) * torch.exp(torch.randn(384, generator=g))  # channel-wise spread
    q, s = quantize_tiles(x)                       # forward layout: 1x128 tiles
    qt, st = requantize_transposed(q, s)           # backward layout from the stored FP8 tiles
    twice = dequantize_tiles(qt, st)
    once = fake_quantize(x.t().contiguous(), "tile")   # quantizing x^T directly
    err_twice = (twice - x.t()).norm() / x.norm()
    err_once = (once - x.t()).norm() / x.norm()
    ratio = (err_twice / err_once).item()
    assert st.shape == (384, 2) and qt.shape == (384, 256)
    assert 1.05 < ratio < 2.0, ratio              # measured ~1.2-1.4: double rounding, bounded


def test_e4m3fnuz_conversion_is_exact():
    w = torch.randn(200, 130) * 10
    w[0, 0] = -0.0
    q, s = quantize_blocks(w)
    qn, sn = to_e4m3fnuz(q, s)
    assert qn.dtype == torch.float8_e4m3fnuz and torch.equal(sn, 2 * s)
    assert torch.equal(dequantize_blocks(qn, sn), dequantize_blocks(q, s))
    assert not torch.isnan(qn.float()).any()
    assert qn.float().abs().max() <= 240
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        to_e4m3fnuz(qn, sn)


# ------------------------------------------------------------------------------------ accumulation
def _truncate_oracle(v: Fraction, bits: int) -> Fraction:
    """Exact truncation of a rational to `bits` fraction bits after the leading one (toward zero)."""
    if v == 0:
        return v
    sign = -1 if v < 0 else 1
    a = abs(v)
    e = math.floor(math.log2(a))
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    step = Fraction(2) ** (e - bits)
    return sign * (a // step) * step


def test_round_mantissa_small_cases():
    x = torch.tensor([1.0 + 2 ** -5, -(1.0 + 2 ** -5), 1.75, 3.0, 0.0])
    assert round_mantissa(x, 4).tolist() == [1.0, -1.0, 1.75, 3.0, 0.0]
    assert round_mantissa(torch.tensor([1.96875]), 4, "nearest").item() == 2.0   # 1.11111b -> 10.0000b
    assert torch.equal(round_mantissa(x, 23), x)
    with pytest.raises(ValueError, match="0..23"):
        round_mantissa(x, 24)


def test_limited_sum_swamping_against_hand_arithmetic():
    # 1 + 16 x 2^-5 with a 4-bit mantissa: every addend is below half an ulp of 1 (2^-4 / 2) ... truncated away
    terms = torch.tensor([1.0] + [2.0 ** -5] * 16)
    assert limited_precision_sum(terms, 4).item() == 1.0          # exact: 1.5
    assert limited_precision_sum(terms, 23).item() == 1.5
    # promotion every 2 terms: partial sums 1+2^-5 -> 1 (truncated), then pairs 2^-4 exactly
    assert limited_precision_sum(terms, 4, promote_every=2).item() == 1.0 + 8 * 2 ** -4 - 2 ** -4 + 2 ** -5
    scales = torch.full((9,), 2.0)
    assert limited_precision_sum(terms, 4, promote_every=2, chunk_scales=scales).item() == 2 * (1.0 + 7.5 * 2 ** -4)


@pytest.mark.parametrize("bits", [3, 7, 13])
def test_limited_sum_matches_exact_rational_oracle(bits):
    g = torch.Generator().manual_seed(bits)
    terms = (torch.randn(40, 3, generator=g) * 4).to(torch.float8_e4m3fn).float()   # FP8 values: exact in fp32
    got = limited_precision_sum(terms, bits)
    for j in range(3):
        acc = Fraction(0)
        for t in terms[:, j].tolist():
            acc = _truncate_oracle(acc + Fraction(t), bits)
        assert got[j].item() == float(acc)


def test_simulated_gemm_matches_limited_sum_and_exact_product():
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(3, 50, generator=g)).to(torch.float8_e4m3fn).float()
    b = (torch.randn(50, 4, generator=g)).to(torch.float8_e4m3fn).float()
    terms = a.t()[:, :, None] * b[:, None, :]                   # [K, M, N]
    for bits, pe in [(5, None), (9, 16), (13, 128)]:
        assert torch.equal(simulated_gemm(a, b, bits, pe), limited_precision_sum(terms, bits, pe))
    # 23 bits and sequential order: the float32 running sum, exactly
    seq = torch.zeros(3, 4)
    for k in range(50):
        seq = seq + terms[k]
    assert torch.equal(simulated_gemm(a, b, 23), seq)
    assert torch.allclose(simulated_gemm(a, b, 23).double(), a.double() @ b.double(), rtol=1e-5, atol=1e-5)
    many = simulated_gemm(a, b, [5, 9])
    assert many.shape == (2, 3, 4) and torch.equal(many[1], simulated_gemm(a, b, 9))


def test_truncation_is_biased_toward_zero_and_promotion_fixes_it():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 4096, generator=g).to(torch.float8_e4m3fn).float()
    b = torch.rand(4096, 4, generator=g).to(torch.float8_e4m3fn).float()
    exact = a.double() @ b.double()
    lim = simulated_gemm(a, b, 13).double()
    prom = simulated_gemm(a, b, 13, promote_every=128).double()
    assert (lim < exact).all()                               # positive sums, truncation only loses
    e_lim = ((lim - exact).abs() / exact).max().item()
    e_prom = ((prom - exact).abs() / exact).max().item()
    assert e_lim > 0.02 and e_prom < 0.002 and e_lim / e_prom > 30


def test_fine_grained_gemm_applies_scales_at_promotion():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 256, generator=g)
    x[:, 3] *= 500                                           # an outlier channel in the first tile
    w = torch.randn(130, 256, generator=g)
    y = fp8.fp8_matmul_simulated(x, w, 23, 128)
    ref = fake_quantize(x, "tile").double() @ fake_quantize(w, "block").double().t()
    assert y.shape == (5, 130)
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-6
    with pytest.raises(ValueError, match="tile size"):
        fp8.fp8_matmul_simulated(x, w, 13, 64)


def test_bad_accumulator_arguments_are_named():
    a, b = torch.ones(2, 4), torch.ones(4, 2)
    with pytest.raises(ValueError, match="mantissa_bits"):
        simulated_gemm(a, b, 30)
    with pytest.raises(ValueError, match="promote_every"):
        simulated_gemm(a, b, 10, a_scales=torch.ones(2, 1))
    with pytest.raises(ValueError, match="inner dims"):
        simulated_gemm(a, a, 10)
    with pytest.raises(ValueError, match="chunk_scales"):
        limited_precision_sum(torch.ones(4, 2), 10, chunk_scales=torch.ones(1, 2))
    with pytest.raises(ValueError, match="granularity"):
        fake_quantize(a, "row")
    with pytest.raises(ValueError, match="fmt"):
        cast_to_fp8(a, "e3m4")


# ------------------------------------------------------------------------------------ fake-quant Linear
def test_fp8_linear_forward_and_straight_through_backward():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 130, bias=True)
    f8 = FP8Linear.from_linear(lin)
    assert f8.weight is lin.weight and f8.bias is lin.bias
    x = torch.randn(2, 3, 256, requires_grad=True)
    y = f8(x)
    ref = (fake_quantize(x.detach().reshape(6, 256), "tile") @ fake_quantize(lin.weight.detach(), "block").t()
           + lin.bias.detach()).reshape(2, 3, 130)
    assert torch.allclose(y, ref, atol=1e-5)
    assert (y - lin(x)).abs().max() > 1e-4                     # it really is rounded
    y.square().sum().backward()
    gx, gw = x.grad.clone(), lin.weight.grad.clone()
    x.grad = None
    lin.weight.grad = None
    lin(x).square().sum().backward()                          # the full-precision gradient
    for got, full in ((gx, x.grad), (gw, lin.weight.grad)):
        rel = ((got - full).norm() / full.norm()).item()
        assert 1e-4 < rel < 0.15, rel                         # straight-through: close, not equal


def test_convert_keeps_head_embedding_gate_and_shares_parameters():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny())
    params_before = {n: p for n, p in model.named_parameters()}
    names = convert_linears_to_fp8(model)
    assert names and all(isinstance(model.get_submodule(n), FP8Linear) for n in names)
    assert not any(n.split(".")[-1] in ("lm_head", "embed_tokens", "gate") for n in names)
    assert type(model.lm_head) is torch.nn.Linear
    assert {n: p for n, p in model.named_parameters()} == params_before     # the same Parameter objects
    assert any(n.endswith("kv_b_proj") for n in names) and any(n.endswith("down_proj") for n in names)
    assert convert_linears_to_fp8(model) == []                              # idempotent
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    out = model(ids, ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "kv_b_proj" in n)


# ------------------------------------------------------------------------------------ HF FP8 checkpoint round trip
@pytest.mark.parametrize("block", [128, 32])
def test_hf_fp8_export_import_round_trip(tmp_path, block):
    import json

    from safetensors import safe_open

    from dsv3_lessons.tools.hf_compat import export_hf_fp8, fp8_quantizable, import_hf, to_hf_state_dict

    torch.manual_seed(0)
    model = DeepSeekV3(tiny())
    folder = export_hf_fp8(model, tmp_path, block=block)
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc == {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                  "weight_block_size": [block, block]}
    orig = to_hf_state_dict(model)
    kv = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        stored = {n: f.get_tensor(n) for n in names}
    w8, s8 = stored[kv], stored[kv + "_scale_inv"]
    assert w8.dtype == torch.float8_e4m3fn and s8.dtype == torch.float32
    rows, cols = orig[kv].shape
    assert tuple(s8.shape) == (math.ceil(rows / block), math.ceil(cols / block))
    # the released checkpoint's dtypes: BF16 for every tensor that is not quantized (embedding, head, router
    # weight, norms, MTP's eh_proj: model.layers.61.eh_proj.weight is BF16 there), float32 only for the
    # balancing bias and the scales
    L = tiny().num_hidden_layers
    for n in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight", "model.norm.weight",
              f"model.layers.{L}.eh_proj.weight", f"model.layers.{L}.shared_head.head.weight"):
        assert stored[n].dtype == torch.bfloat16 and n + "_scale_inv" not in names, n
    assert stored["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert {t.dtype for n, t in stored.items() if not fp8_quantizable(n, orig.get(n, t)) and not n.endswith(
        ("_scale_inv", "e_score_correction_bias"))} == {torch.bfloat16}
    n_quantized = sum(n.endswith("_scale_inv") for n in names)
    assert n_quantized == sum(fp8_quantizable(n, t) for n, t in orig.items())
    c = tiny()
    layers = c.num_hidden_layers + c.num_nextn_predict_layers
    ffn_per_moe = 3 * (c.n_routed_experts + (1 if c.n_shared_experts else 0))
    expected = (5 * layers + 3 * c.first_k_dense_replace
                + ffn_per_moe * (layers - c.first_k_dense_replace))  # attention, dense FFN, experts (not eh_proj)
    assert n_quantized == expected
    back = to_hf_state_dict(import_hf(folder))
    for n, w in orig.items():
        if fp8_quantizable(n, w):
            s = quantize_blocks(w, block)[1]
            s_full = s.repeat_interleave(block, 0)[: w.shape[0]].repeat_interleave(block, 1)[:, : w.shape[1]]
            assert ((back[n] - w).abs() <= w.abs() * 2.0 ** -4 + s_full * 2.0 ** -10).all(), n
            assert not torch.equal(back[n], w)
        elif n.endswith("e_score_correction_bias"):
            assert torch.equal(back[n], w), n
        else:                                                       # BF16 round to nearest: exact as bf16
            assert torch.equal(back[n], w.to(torch.bfloat16).float()), n


def test_hf_fp8_export_rejects_bad_arguments(tmp_path):
    from dsv3_lessons.tools.hf_compat import export_hf_fp8

    with pytest.raises(TypeError, match="DeepSeekV3"):
        export_hf_fp8(torch.nn.Linear(2, 2), tmp_path)
    model = DeepSeekV3(tiny())
    with pytest.raises(ValueError, match="fmt"):
        export_hf_fp8(model, tmp_path, fmt="e4m3fnuz")
    with pytest.raises(ValueError, match="block"):
        export_hf_fp8(model, tmp_path, block=0)


# ------------------------------------------------------------------------------------ chapter helpers and figure
def test_grid_figure_titles_are_computed_from_the_config():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsv3_lessons.course.ch09_fp8.figures import draw_fp8_grids
    from dsv3_lessons.model.config import deepseek_v3_671b

    fig = draw_fp8_grids(deepseek_v3_671b(), tokens=3)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert "[3, ⌈7168/128⌉ = 56]" in titles[0] and titles[1].endswith("= [5, 56]")
    c = tiny()
    small = draw_fp8_grids(c)
    rows = c.kv_lora_rank + c.qk_rope_head_dim
    gr, gc = block_grid((rows, c.hidden_size))
    assert small.axes[1].get_title(loc="left").endswith(f"= [{gr}, {gc}]")
    plt.close("all")


def test_accumulation_sweep_small_case():
    from dsv3_lessons.course.ch09_fp8.experiments import accumulation_sweep

    s = accumulation_sweep([8, 12, 23], k=256, m=4, n=4)
    assert s.bits == [8, 12, 23] and len(s.plain) == len(s.promoted) == 3
    assert s.plain[0] > s.plain[1] > s.plain[2] and s.plain[2] < 1e-6      # 23 bits: float32 rounding only
    assert all(p < q for p, q in zip(s.promoted[:2], s.plain[:2]))         # promotion helps at every width
    assert 0.01 < s.quantization[0] < 0.1 and 0.01 < s.quantization[1] < 0.1
