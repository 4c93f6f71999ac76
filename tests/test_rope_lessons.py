"""Chapter 3 oracles (dsv3_lessons.course.ch03_rope.experiments) and plots, against independent oracles.

(The exercise checkers are tested in ``test_exercises_ch03.py``, the mechanism figure in ``test_figures_ch03.py``.)

Oracles: explicit float64 rotation matrices and einsum re-computation of the scores from the weights
``fold_check`` used; the closed forms 2Σcos(Δθ_i) (all-ones vectors) and
(q0k0+q1k1)cos a + (q1k0−q0k1)sin a; V3 numbers from the released config and V3 report §2.1.1 / §4.3
(576 cached elements, low/high 10/23, mscale, softmax scale); YaRN's definition of β as a number of full turns
in the original window.
"""
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dsv3_lessons.model.config import deepseek_v3_671b  # noqa: E402
from dsv3_lessons.course.ch03_rope.figures import (plot_fold_by_key_position, plot_rope_explorer,  # noqa: E402
                                                   plot_score_vs_distance, plot_yarn_frequencies)
from dsv3_lessons.model.rope import rope_inv_freq  # noqa: E402
from dsv3_lessons.course.ch03_rope.experiments import (FOLD_CASES, POSITION_ZERO_MISTAKES, V3_ROPE_SCALING,  # noqa: E402
                                                       convention_scores, fold_check, logit_with_mistake, pair_trajectory,
                                                       position_zero_probe, rope_explorer, rope_rotate,
                                                       rope_scores, scores_vs_distance, yarn_table)

SMALL = dict(n_tokens=6, n_heads=2, hidden_size=32, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
             qk_rope_head_dim=4)
EQUAL = dict(q_lora_rank=512)        # "rope_on_latents" rotates both latents with ONE table: equal widths


def small(case):
    return SMALL | ({"q_lora_rank": 16} if case == "rope_on_latents" else {})


def rot64(pos, d, base=10000.0):
    """float64 block-diagonal rotation for interleaved pairs, θ_i = base^(-2i/d) computed here."""
    r = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = pos * base ** (-2 * i / d)
        r[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                                          dtype=torch.float64)
    return r


def closed_score(q, k, a):
    """q · R_a k for interleaved pairs, a = per-pair angles (float64)."""
    q, k = q.double(), k.double()
    return ((q[0::2] * k[0::2] + q[1::2] * k[1::2]) * a.cos() + (q[1::2] * k[0::2] - q[0::2] * k[1::2]) * a.sin()).sum()


# ------------------------------------------------------------------ the fold
@pytest.fixture(scope="module")
def v3_folds():
    return {c: fold_check(c, **(EQUAL if c == "rope_on_latents" else {})) for c in FOLD_CASES}


def test_fold_without_rope_is_exact(v3_folds):
    r = v3_folds["no_rope"]
    assert r.folds(1e-5) and r.fold_error <= 1e-5
    assert r.shift_error == 0.0          # no position information at all
    assert r.cached_per_token == 512


def test_fold_fails_with_rope_on_keys(v3_folds):
    r = v3_folds["rope_on_keys"]
    assert r.fold_error > 0.1 and not r.folds()
    assert r.error_by_key_position[0] <= 1e-5          # R_0 = I: key position 0 cannot see the bug
    assert (r.error_by_key_position[1:] > 1e-2).all()
    assert r.shift_error <= 1e-5                      # it is still a relative-position score


def test_decoupled_rope_key_folds_again(v3_folds):
    r = v3_folds["decoupled"]
    assert r.fold_error <= 1e-5                        # fp32, V3 head geometry
    assert r.shift_error <= 1e-5
    cfg = deepseek_v3_671b()
    assert r.cached_per_token == cfg.kv_lora_rank + cfg.qk_rope_head_dim == 576  # V3 report §2.1.1


def test_rope_on_latents_folds_but_loses_relative_position(v3_folds):
    r = v3_folds["rope_on_latents"]
    assert r.fold_error <= 1e-5
    assert r.shift_error > 0.1


def test_rope_on_latents_needs_one_table():
    """The review's defect (c): two latents of different widths would need two frequency tables, a second
    reason to lose the relative property. The oracle refuses that mix instead of confounding the two."""
    with pytest.raises(ValueError, match="q_lora_rank .* must equal kv_lora_rank"):
        fold_check("rope_on_latents")            # V3's 1536 vs 512


@pytest.mark.parametrize("case", FOLD_CASES)
def test_fold_scores_against_explicit_rotation_matrices(case):
    """Recompute the direct scores from the returned weights with float64 rotation matrices."""
    r = fold_check(case, **small(case))
    t = {k: v.double() if v.is_floating_point() else v for k, v in r.tensors.items()}
    c_q, c_kv = t["h"] @ t["W_DQ"].T, t["h"] @ t["W_DKV"].T
    T, H = SMALL["n_tokens"], SMALL["n_heads"]
    want = torch.zeros(H, T, T, dtype=torch.float64)
    for hd in range(H):
        for s in range(T):
            for u in range(T):
                q = t["W_UQ"][hd] @ c_q[s]
                k = t["W_UK"][hd] @ c_kv[u]
                if case == "rope_on_keys":
                    q, k = rot64(s, 8) @ q, rot64(u, 8) @ k
                if case == "rope_on_latents":
                    q = t["W_UQ"][hd] @ (rot64(s, 16) @ c_q[s])      # the same 16-channel table
                    k = t["W_UK"][hd] @ (rot64(u, 16) @ c_kv[u])
                val = q @ k
                if case == "decoupled":
                    val = val + (rot64(s, 4) @ (t["W_QR"][hd] @ c_q[s])) @ (rot64(u, 4) @ (t["W_KR"] @ t["h"][u]))
                want[hd, s, u] = val
    torch.testing.assert_close(r.scores_unfolded.double(), want, rtol=1e-4, atol=1e-5)
    if case != "rope_on_keys":
        torch.testing.assert_close(r.scores_folded.double(), want, rtol=1e-4, atol=1e-5)
    else:
        assert (r.scores_folded.double() - want).abs().max() > 1e-2


def test_fold_check_rejects_bad_input():
    with pytest.raises(ValueError, match="case"):
        fold_check("rope_on_values")
    with pytest.raises(ValueError, match="qk_rope_head_dim"):
        fold_check("decoupled", qk_rope_head_dim=5)
    with pytest.raises(ValueError, match="n_tokens"):
        fold_check("no_rope", n_tokens=0)


# ------------------------------------------------------------------ relative position helpers
def test_rope_scores_closed_form_and_shift():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    f = rope_inv_freq(16)
    m, n = torch.tensor([0, 3, 10, 50]), torch.tensor([0, 1, 12, 7])
    got = rope_scores(q, k, m, n, f)
    for j in range(4):
        want = closed_score(q, k, (n[j] - m[j]).double() * f.double())
        assert abs(got[j].item() - want.item()) <= 1e-4
    torch.testing.assert_close(rope_scores(q, k, m + 100, n + 100, f), got, rtol=0, atol=1e-3)


def test_scores_vs_distance_ones_closed_form():
    f = rope_inv_freq(64)
    d = torch.arange(0, 3000, 7)
    got = scores_vs_distance(torch.ones(64), torch.ones(64), d, f)
    want = 2 * torch.cos(d.double()[:, None] * f.double()[None]).sum(-1)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-2)
    assert got[0].item() == pytest.approx(64.0)
    torch.testing.assert_close(scores_vs_distance(torch.ones(64), torch.ones(64), d, f, key_pos=17), got,
                               rtol=0, atol=2e-2)
    with pytest.raises(ValueError, match="distances"):
        scores_vs_distance(torch.ones(64), torch.ones(64), [-1], f)


def test_pair_trajectory_and_rope_rotate_agree():
    th = 0.3
    traj = pair_trajectory((1.0, 2.0), [0, 1, 5], th)
    torch.testing.assert_close(traj[0], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(traj.norm(dim=-1), torch.full((3,), math.sqrt(5.0)))
    x = torch.tensor([[1.0, 2.0]]).expand(3, 2)
    torch.testing.assert_close(rope_rotate(x, torch.tensor([0, 1, 5]), torch.tensor([th])), traj, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="inv_freq"):
        rope_rotate(torch.randn(3, 8), torch.arange(3), torch.ones(3))
    with pytest.raises(ValueError, match="positions"):
        rope_rotate(torch.randn(3, 8), torch.arange(4), torch.ones(4))


def test_conventions_same_scores_with_permutation_pitfall_without():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(5, 64, generator=g), torch.randn(7, 64, generator=g)
    f = rope_inv_freq(64)
    qp, kp = torch.arange(3, 8), torch.arange(7)
    inter = convention_scores(q, k, qp, kp, f, "interleaved")
    torch.testing.assert_close(convention_scores(q, k, qp, kp, f, "half_permuted"), inter, rtol=0, atol=1e-4)
    wrong = convention_scores(q, k, qp, kp, f, "half_unpermuted")
    assert (wrong - inter).abs().max() > 1.0
    # explicit float64 oracle for one entry
    want = (rot64(3, 64) @ q[0].double()) @ (rot64(2, 64) @ k[2].double())
    assert abs(inter[0, 2].item() - want.item()) <= 1e-3
    z = convention_scores(q, k, [0] * 5, [0] * 7, f, "half_unpermuted")
    torch.testing.assert_close(z, q @ k.T)            # position 0: every convention is the identity
    with pytest.raises(ValueError, match="convention"):
        convention_scores(q, k, qp, kp, f, "neox")


# ------------------------------------------------------------------ YaRN table and position-0 probe
def test_yarn_table_v3():
    t = yarn_table()
    assert (t.low, t.high) == (10, 23)                                     # YaRN §3.2 with V3's config
    assert t.mscale == pytest.approx(1.3688879, abs=5e-8)
    assert t.softmax_scale == pytest.approx(0.1352338, abs=5e-8)
    # β counts full turns in the ORIGINAL window: pair `low` still turns > β_fast times, `high` < β_slow
    r = t.rotations_in_original
    assert r[10] > 32 > r[11] and r[22] > 1 > r[23]
    torch.testing.assert_close(r.double(), 4096 * rope_inv_freq(64).double() / (2 * math.pi), rtol=1e-6, atol=0)
    ramp = ((torch.arange(32, dtype=torch.float64) - 10) / 13).clamp(0, 1)
    torch.testing.assert_close(t.interpolated.double(), ramp, rtol=0, atol=1e-5)
    assert t.wavelength_rope[0].item() == pytest.approx(2 * math.pi)
    torch.testing.assert_close(t.wavelength_yarn[23:], 40 * t.wavelength_rope[23:], rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="factor"):
        yarn_table(rope_scaling={"original_max_position_embeddings": 4096})


@pytest.mark.parametrize("wrong", [dict(V3_ROPE_SCALING, factor=20),
                                   dict(V3_ROPE_SCALING, original_max_position_embeddings=4096 * 40)],
                         ids=["factor", "extended-range"])
def test_position_zero_cannot_see_wrong_frequencies(wrong):
    p = position_zero_probe([0, 1, 100, 3000], wrong)
    assert p.rotated_diff[0].item() == 0.0 and p.logit_diff_freq[0].item() == 0.0
    assert (p.rotated_diff[1:] > 0).all()
    assert p.rotated_diff[3] > 1e-2 and p.logit_diff_freq[3] > 1e-3
    # the mscale² factor shows everywhere: |logit|·(1 − 1/mscale²), closed form
    torch.testing.assert_close(p.logit_diff_mscale, p.logit_right.abs() * (1 - 1 / 1.3688879 ** 2),
                               rtol=1e-5, atol=1e-7)
    assert p.logit_diff_mscale[0] > 0.1


# ------------------------------------------------------------------ the widget's pure function
def test_rope_explorer_numbers():
    r = rope_explorer(37, 5, 12, 40.0)
    th = rope_inv_freq(64)[12].item()
    ramp = (12 - 10) / 13
    assert r.theta_rope == pytest.approx(th, rel=1e-6)
    assert r.theta_yarn == pytest.approx(th * (1 - ramp) + th / 40 * ramp, rel=1e-5)
    assert r.angle_between == pytest.approx(math.remainder(32 * r.theta_yarn, 2 * math.pi), abs=1e-5)
    assert r.score == pytest.approx(r.score_shifted, abs=1e-3)
    a = 37 * r.theta_yarn
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float32)
    torch.testing.assert_close(r.q_pair_rot, rot @ r.q_pair, rtol=0, atol=1e-5)
    want = 2 * torch.cos(r.distances.double()[:, None] * r.inv_freq_yarn.double()[None]).sum(-1) / 64
    torch.testing.assert_close(r.cos_yarn.double(), want, rtol=0, atol=1e-3)
    assert (r.low, r.high) == (10, 23) and r.mscale == pytest.approx(1.3688879, abs=5e-8)
    plain = rope_explorer(37, 5, 12, 1.0)
    assert torch.equal(plain.inv_freq_yarn, plain.inv_freq_rope) and plain.mscale == 1.0


@pytest.mark.parametrize("kw,name", [(dict(query_pos=-1), "query_pos"), (dict(key_pos=2.5), "key_pos"),
                                     (dict(freq_index=32), "freq_index"), (dict(yarn_factor=0.5), "yarn_factor")])
def test_rope_explorer_rejects_bad_input(kw, name):
    args = dict(query_pos=3, key_pos=1, freq_index=0, yarn_factor=40.0) | kw
    with pytest.raises(ValueError, match=name):
        rope_explorer(**args)


# ------------------------------------------------------------------ the logit oracle of exercise 3.3
def test_logit_with_mistake_closed_form():
    m2 = lambda f: (0.1 * math.log(f) + 1) ** 2  # noqa: E731
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, generator=g), torch.randn(64, generator=g)
    want0 = 192 ** -0.5 * m2(40) * (q.double() @ k.double()).item()       # position 0: no rotation at all
    assert logit_with_mistake(None, 0, 0) == pytest.approx(want0, rel=1e-5)
    assert logit_with_mistake("wrong_yarn_factor", 0, 0) == pytest.approx(want0 * m2(20) / m2(40), rel=1e-5)
    # at (t, j) = (7, 2) the right logit is q·R_{j−t} k with V3's YaRN angles
    from dsv3_lessons.model.rope import yarn_inv_freq
    a = (2 - 7) * yarn_inv_freq(64, 10000.0, V3_ROPE_SCALING).double()
    assert logit_with_mistake(None, 7, 2) == pytest.approx(192 ** -0.5 * m2(40) * closed_score(q, k, a).item(),
                                                           rel=1e-4)
    with pytest.raises(ValueError, match="mistake"):
        logit_with_mistake("no_rope", 0, 0)
    with pytest.raises(ValueError, match="q_pos"):
        logit_with_mistake(None, -1, 0)
    assert len(POSITION_ZERO_MISTAKES) == 4


# ------------------------------------------------------------------ plots
def test_plots_carry_the_data():
    t = yarn_table()
    fig = plot_yarn_frequencies(t.inv_freq_rope, t.inv_freq_yarn, t.low, t.high, t.original_len, factor=t.factor,
                                highlight=16)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    torch.testing.assert_close(torch.tensor(lines["YaRN $2\\pi/\\theta'_i$"].get_ydata(), dtype=torch.float32),
                               2 * math.pi / t.inv_freq_yarn, rtol=1e-6, atol=0)
    assert "extended window 163840" in lines and fig.dpi == 110 and fig.get_figwidth() == 10
    plt.close(fig)
    res = rope_explorer(12, 4, 16, 40.0)
    fig = plot_rope_explorer(res)
    assert len(fig.axes) == 3 and fig.dpi == 110
    labels = [ln.get_label() for ln in fig.axes[1].get_lines()]
    assert "RoPE" in labels and "YaRN $s$ = 40" in labels and "$|t-j|$ = 8" in labels
    plt.close(fig)
    errors = {"a": torch.tensor([0.0, 0.2, 0.5]), "b": torch.zeros(3, requires_grad=True)}
    fig = plot_fold_by_key_position(errors)
    ys = [list(ln.get_ydata()) for ln in fig.axes[0].get_lines()]
    assert ys[0] == pytest.approx([1e-9, 0.2, 0.5]) and ys[1] == pytest.approx([1e-9] * 3)
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    fig = plot_score_vs_distance(res.distances, {"a": res.cos_rope}, mark=8, original_len=4096)
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_figures_use_readable_fonts():
    fig = plot_rope_explorer(rope_explorer(40, 4, 16, 40.0))
    fig.canvas.draw()
    sizes = [t.get_fontsize() for ax in fig.axes for t in
             [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_legend().get_texts()]]
    assert min(sizes) >= 9
    plt.close(fig)


def test_explorer_axes_stay_fixed():
    lims = []
    for args in ((12, 4, 16, 40.0), (8000, 3, 0, 1.0), (0, 8000, 31, 64.0)):
        fig = plot_rope_explorer(rope_explorer(*args))
        lims.append([(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes[1:]])
        plt.close(fig)
    assert lims[0] == lims[1] == lims[2]
