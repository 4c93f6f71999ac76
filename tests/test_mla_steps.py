"""Chapter 2: the step-by-step MLA (paper matrices) against the library layer and closed-form oracles."""
import dataclasses
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b, tiny
from dsv3_lessons.model.mla import MultiHeadLatentAttention
from dsv3_lessons.course.ch02_mla.steps import (TinyAttentionLM, energy_share, fuse_paper_matrices, mha_cost,
                                                mla_cost, mla_rank_report, mla_step_by_step, paper_matrices,
                                                rank_for_energy, rope_rotate_complex, singular_values,
                                                split_kv_b_keys_first, stack_heads)
from dsv3_lessons.model.rope import apply_rope_interleaved

CONFIGS = {
    "tiny": tiny(),
    "tiny_2heads_no_yarn": tiny(num_attention_heads=2, num_key_value_heads=2, kv_lora_rank=8, q_lora_rank=12,
                                qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=10, rope_scaling=None),
}


def _layer(cfg, std=0.1):
    mla = MultiHeadLatentAttention(cfg)
    with torch.no_grad():
        for p in mla.parameters():
            p.normal_(0.0, std)  # norm gains too, so a forgotten norm weight shows up
    return mla


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("start_pos", [0, 7])
@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_step_by_step_equals_library(name, start_pos, impl):
    cfg = CONFIGS[name]
    mla = _layer(cfg)
    h = torch.randn(2, 9, cfg.hidden_size)
    steps = mla_step_by_step(paper_matrices(mla), h, start_pos=start_pos)
    with torch.no_grad():
        ref = mla(h, start_pos=start_pos, attn_impl=impl)
    assert steps["u"].shape == ref.shape
    assert ref.abs().max() > 1e-2  # a non-trivial output, so the comparison means something
    assert (steps["u"] - ref).abs().max().item() <= 1e-6


def test_intermediates_match_library_pieces():
    cfg = tiny()
    mla = _layer(cfg)
    h = torch.randn(1, 5, cfg.hidden_size)
    pos = torch.arange(3, 8)
    st = mla_step_by_step(paper_matrices(mla), h, start_pos=3)
    with torch.no_grad():
        q_nope, q_pe = mla.query(h, pos)
        c_kv, k_pe = mla.latent(h, pos)
    for mine, lib in ((st["q^C"], q_nope), (st["q^R"], q_pe), (st["c^KV"], c_kv), (st["k^R"], k_pe)):
        assert torch.allclose(mine, lib, atol=1e-6)
    # the concatenations: q = [q^C ; q^R] and k = [k^C ; k^R], with the SAME k^R in every head
    assert torch.equal(st["q"][..., :cfg.qk_nope_head_dim], st["q^C"])
    k_rope = st["k"][..., cfg.qk_nope_head_dim:]
    assert torch.equal(k_rope, st["k^R"][:, :, None].expand_as(k_rope))
    assert st["k"].shape[-1] == cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    # rows of probs sum to one and nothing attends to the future
    assert torch.allclose(st["probs"].sum(-1), torch.ones(1, cfg.num_attention_heads, 5))
    assert (st["probs"].triu(1) == 0).all()


def test_slicing_matches_per_head_row_layout():
    """Fill every fused weight with its own row index; the slices must pick the rows the layout says."""
    cfg = tiny()
    mla = MultiHeadLatentAttention(cfg)
    with torch.no_grad():
        for lin in (mla.q_b_proj, mla.kv_a_proj_with_mqa, mla.kv_b_proj):
            lin.weight.copy_(torch.arange(lin.weight.shape[0], dtype=torch.float32)[:, None].expand_as(lin.weight))
    m = paper_matrices(mla)
    n_h, d_h, d_r, d_v, d_c = 4, 16, 8, 16, 32
    for i in range(n_h):
        assert m.W_UQ[i, :, 0].tolist() == [i * (d_h + d_r) + j for j in range(d_h)]
        assert m.W_QR[i, :, 0].tolist() == [i * (d_h + d_r) + d_h + j for j in range(d_r)]
        assert m.W_UK[i, :, 0].tolist() == [i * (d_h + d_v) + j for j in range(d_h)]
        assert m.W_UV[i, :, 0].tolist() == [i * (d_h + d_v) + d_h + j for j in range(d_v)]
    assert m.W_DKV[:, 0].tolist() == list(range(d_c))
    assert m.W_KR[:, 0].tolist() == list(range(d_c, d_c + d_r))
    # the wrong split takes keys from the first n_h*d_h rows: head 1's "keys" are head 0's values
    wk, wv = split_kv_b_keys_first(mla.kv_b_proj.weight.detach(), n_h, d_h, d_v)
    assert wk[1, :, 0].tolist() == list(range(d_h, 2 * d_h))
    assert wv[0, :, 0].tolist() == list(range(n_h * d_h, n_h * d_h + d_v))


def test_fuse_is_inverse_of_slicing():
    mla = _layer(tiny())
    fused = fuse_paper_matrices(paper_matrices(mla))
    sd = mla.state_dict()
    assert set(fused) == set(sd)
    for k in fused:
        assert torch.equal(fused[k], sd[k]), k


def test_wrong_split_gives_a_different_output_and_only_with_several_heads():
    cfg = tiny()
    mla = _layer(cfg)
    h = torch.randn(1, 6, cfg.hidden_size)
    m = paper_matrices(mla)
    wk, wv = split_kv_b_keys_first(mla.kv_b_proj.weight.detach(), cfg.num_attention_heads, cfg.qk_nope_head_dim,
                                   cfg.v_head_dim)
    wrong = mla_step_by_step(dataclasses.replace(m, W_UK=wk, W_UV=wv), h)["u"]
    right = mla_step_by_step(m, h)["u"]
    assert (wrong - right).abs().max() > 1e-2
    # with a single head both splits coincide: the bug is invisible in one-head tests
    one = tiny(num_attention_heads=1, num_key_value_heads=1)
    mla1 = _layer(one)
    m1 = paper_matrices(mla1)
    wk1, wv1 = split_kv_b_keys_first(mla1.kv_b_proj.weight.detach(), 1, one.qk_nope_head_dim, one.v_head_dim)
    assert torch.equal(wk1, m1.W_UK) and torch.equal(wv1, m1.W_UV)


def test_complex_rope_equals_cos_sin_rope():
    cfg = tiny()
    mla = MultiHeadLatentAttention(cfg)
    x = torch.randn(2, 11, 3, cfg.qk_rope_head_dim)
    pos = torch.arange(20, 31)
    cos, sin = mla.rotary(pos)
    ref = apply_rope_interleaved(x.transpose(1, 2), cos, sin).transpose(1, 2)
    got = rope_rotate_complex(x, pos, mla.rotary.inv_freq, mla.rotary.cos_sin_factor)
    assert torch.allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError, match="rope channels"):
        rope_rotate_complex(x[..., :-2], pos, mla.rotary.inv_freq)


def test_v3_shapes_on_meta_device():
    with torch.device("meta"):
        mla = MultiHeadLatentAttention(deepseek_v3_671b())
    m = paper_matrices(mla)
    assert m.shapes()["W_UK"] == (128, 128, 512)
    assert m.shapes()["W_QR"] == (128, 64, 1536)
    assert m.shapes()["W_KR"] == (64, 7168)
    st = mla_step_by_step(m, torch.empty(1, 3, 7168, device="meta"))
    assert st["k"].shape == (1, 3, 128, 192) and st["k^R"].shape == (1, 3, 64)
    assert math.isclose(m.softmax_scale, 0.1352338, rel_tol=1e-6)  # 192^-0.5·mscale² (YaRN, V3 report §4.3)


def test_bad_inputs_raise():
    mla = _layer(tiny())
    m = paper_matrices(mla)
    with pytest.raises(ValueError, match="h must be"):
        mla_step_by_step(m, torch.randn(2, 3, 10))
    with pytest.raises(ValueError, match="start_pos"):
        mla_step_by_step(m, torch.randn(1, 3, 64), start_pos=-1)
    with pytest.raises(ValueError, match="q_lora_rank"):
        paper_matrices(MultiHeadLatentAttention(tiny(q_lora_rank=None)))
    with pytest.raises(ValueError, match="rows"):
        split_kv_b_keys_first(torch.zeros(10, 4), 4, 16, 16)


# ---------------------------------------------------------------------------------- closed forms
def test_params_match_count_parameters_and_published_v3():
    v3 = deepseek_v3_671b()
    assert mla_cost(v3).params_per_layer == count_parameters(v3).attention_per_layer == 187_107_328  # released config
    for cfg in (tiny(), tiny(q_lora_rank=None), CONFIGS["tiny_2heads_no_yarn"]):
        mla = MultiHeadLatentAttention(cfg)
        assert mla_cost(cfg).params_per_layer == sum(p.numel() for p in mla.parameters())
        assert mla_cost(cfg).params_per_layer == count_parameters(cfg).attention_per_layer


def test_cache_bytes_v3_and_mha():
    c = mla_cost()
    assert c.cache_elements_per_token_per_layer == 576
    assert c.cache_bytes_per_token == 70_272  # arXiv 2505.09343: 61 · 576 · 2 B
    assert mha_cost().cache_elements_per_token_per_layer == 40_960  # V3 report §2.1.1: 128 · (192 + 128)
    assert round(mha_cost().cache_bytes_per_token / c.cache_bytes_per_token) == 71
    assert mla_cost(kv_lora_rank=256, bytes_per_element=1).cache_bytes_per_token == 61 * (256 + 64)


@pytest.mark.parametrize("q_lora_rank", [48, None])
def test_flops_match_torch_flop_counter(q_lora_rank):
    """Independent oracle: torch's FlopCounterMode (2 FLOPs per multiply-add) on the projections of one token."""
    cfg = tiny(q_lora_rank=q_lora_rank)
    mla = MultiHeadLatentAttention(cfg)
    names = ["q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
    with FlopCounterMode(display=False) as counter:
        mla(torch.randn(1, 1, cfg.hidden_size), attn_impl="naive")
    per_module = counter.get_flop_counts()
    counted = sum(sum(per_module[k].values()) for k in per_module if k.split(".")[-1] in names)
    assert counted > 0
    assert mla_cost(cfg).flops_per_token_per_layer == counted


def test_cost_errors_name_the_argument():
    with pytest.raises(ValueError, match="kv_lora_rank"):
        mla_cost(kv_lora_rank=0)
    with pytest.raises(ValueError, match="num_attention_heads"):
        mha_cost(num_attention_heads=2.5)
    with pytest.raises(ValueError, match="bytes_per_element"):
        mla_cost(bytes_per_element=0)
    with pytest.raises(ValueError, match="q_lora_rank"):
        mla_rank_report(q_lora_rank=None)


def test_rank_report_break_even():
    r = mla_rank_report()
    v3 = deepseek_v3_671b()
    wide = v3.num_attention_heads * v3.qk_head_dim
    # at the break-even rank the latent path (without its norm) costs no more than a plain W^Q; one more costs more
    for q, cheaper in ((r.q_break_even, True), (r.q_break_even + 1, False)):
        assert (v3.hidden_size * q + q * wide <= v3.hidden_size * wide) is cheaper


# ---------------------------------------------------------------------------------- SVD helpers
def test_svd_helpers_on_known_rank_and_known_spectrum():
    g = torch.Generator().manual_seed(0)
    f64 = {"generator": g, "dtype": torch.float64}
    x = torch.randn(60, 7, **f64) @ torch.randn(7, 40, **f64)  # rank 7
    s = singular_values(x)
    assert s.shape == (40,)
    assert s[6] > 1e-3 * s[0] and s[7] < 1e-10 * s[0]
    assert rank_for_energy(s, 1.0) == 7
    d = singular_values(torch.diag(torch.tensor([1.0, 3.0, 2.0])))
    assert d.tolist() == pytest.approx([3.0, 2.0, 1.0])
    assert energy_share(d).tolist() == pytest.approx([9 / 14, 13 / 14, 1.0])
    assert rank_for_energy(d, 0.9) == 2 and rank_for_energy(d, 0.6) == 1 and rank_for_energy(d, 0.95) == 3


def test_svd_helper_errors():
    with pytest.raises(ValueError, match="2-D"):
        singular_values(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        singular_values(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="share"):
        rank_for_energy(torch.tensor([2.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="descending"):
        energy_share(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="zero"):
        energy_share(torch.zeros(3))
    with pytest.raises(ValueError, match="heads"):
        stack_heads(torch.zeros(2, 3, 4))


def test_mla_stacked_keys_have_rank_at_most_d_c():
    """The structural fact of MLA: every head's k^C and v^C are read from the same d_c numbers."""
    cfg = tiny()
    mla = _layer(cfg)
    st = mla_step_by_step(paper_matrices(mla), torch.randn(4, 32, cfg.hidden_size))
    kv = torch.cat([stack_heads(st["k^C"]), stack_heads(st["v^C"])], dim=1)  # [128 tokens, 128]
    assert kv.shape == (128, 128)
    assert rank_for_energy(singular_values(kv), 1.0) <= cfg.kv_lora_rank


# ---------------------------------------------------------------------------------- the evidence model
@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_tiny_attention_lm(attention):
    torch.manual_seed(0)
    lm = TinyAttentionLM(30, attention)
    ids = torch.randint(30, (2, 12))
    out = lm(ids, ids)
    assert out.logits.shape == (2, 12, 30)
    assert abs(out.loss.item() - math.log(30)) < 0.05  # small init: near-uniform predictions
    states = lm.attention_states(ids)
    assert len(states) == 2
    if attention == "mla":
        h = states[0]["h"]
        c_kv, _ = lm.layers[0].self_attn.latent(h, torch.arange(12))
        assert torch.allclose(states[0]["c^KV"], c_kv, atol=1e-6)
        oracle = mla_step_by_step(paper_matrices(lm.layers[1].self_attn), states[1]["h"])  # independent oracle
        for key in ("c^Q", "c^KV", "k^R", "k^C", "v^C"):
            assert torch.allclose(states[1][key], oracle[key], atol=1e-6), key
        assert lm.cache_elements_per_token() == 2 * (32 + 8)
    else:
        assert states[0]["k"].shape == (2, 12, 4, 16)
        assert lm.cache_elements_per_token() == 2 * 2 * 4 * 16
    with pytest.raises(ValueError, match="attention"):
        TinyAttentionLM(30, "gqa")


def test_plot_singular_spectra_data():
    from dsv3_lessons.course.ch02_mla.figures import plot_singular_spectra

    s = torch.tensor([4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    fig = plot_singular_spectra({"p": {"curve": s}}, mark_rank={"p": 2}, floor=1e-3)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert list(line.get_ydata()) == pytest.approx([1.0, 0.5, 0.25, 1e-3])
    assert "r90=2" in line.get_label()  # energies 16, 4, 1 of 21: 20/21 >= 0.9 at rank 2
    # the exact zero is drawn at the floor, and the panel's title says so; a panel without one does not
    assert fig.axes[0].get_title() == "p\n(values below 1e-3 drawn at 1e-3)"   # exact zeros included
    fig = plot_singular_spectra({"q": {"curve": s[:3]}}, floor=1e-3)
    assert fig.axes[0].get_title() == "q"
    # an initial and a trained spectrum that coincide stay distinguishable: same colour, dashed vs solid
    fig = plot_singular_spectra({"p": {"layer 0 init": s, "layer 0 trained": s}})
    init, trained = fig.axes[0].lines
    assert init.get_linestyle() == "--" and trained.get_linestyle() == "-"
    assert init.get_color() == trained.get_color()
    assert fig.get_size_inches()[0] == pytest.approx(10.0) and fig.dpi >= 110
    with pytest.raises(ValueError, match="panels"):
        plot_singular_spectra({})
