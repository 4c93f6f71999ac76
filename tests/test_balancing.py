"""Gate invariants and balancing pitfalls (SPEC §9), the stored runs' integrity, and the regenerating command.

Oracles: closed-form properties of V3 eqs. 13–20 and LF Alg. 1, the library Gate re-derived step by step, and a
fresh re-training of the first steps of every method compared with ``data/moe_runs``.
"""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsv3_lessons.course.ch06_balancing.runs import (METHODS, attach_batch_aux_loss, default_budget, load_runs,
                                                     resimulate_bias, settings_for, train_method)
from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.model.moe import (DeepseekMoE, Gate, batch_balance_loss, max_violation, sequence_balance_loss,
                                    update_bias)
from dsv3_lessons.tools.train import build_optimizer


def _gate(n_r, n_group, topk_group, k, d=16, seed=0, bias_std=0.3):
    cfg = tiny(hidden_size=d, n_routed_experts=n_r, n_group=n_group, topk_group=topk_group, num_experts_per_tok=k)
    g = Gate(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g.weight.copy_(torch.randn(n_r, d, generator=gen) * 0.5)
        g.e_score_correction_bias.copy_(torch.randn(n_r, generator=gen) * bias_std)
    return g, cfg


layouts = st.sampled_from([(8, 4, 2, 2), (8, 2, 1, 3), (16, 4, 2, 4), (16, 8, 3, 5), (12, 3, 2, 4), (8, 1, 1, 2)])


# ----------------------------------------------------------------------------------- gate invariants (property)
@given(layout=layouts, seed=st.integers(0, 10_000), bias_std=st.sampled_from([0.0, 0.1, 1.0, 3.0]))
def test_gate_invariants(layout, seed, bias_std):
    n_r, n_group, topk_group, k = layout
    gate, cfg = _gate(n_r, n_group, topk_group, k, seed=seed, bias_std=bias_std)
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(seed + 1))
    w, idx, s = gate(x)
    per = n_r // n_group
    # K distinct experts, weights positive, summing to the scale exactly once
    assert idx.shape == (20, k) and all(len(set(r)) == k for r in idx.tolist())
    assert torch.all(w > 0)
    assert torch.allclose(w.sum(-1), torch.full((20,), cfg.routed_scaling_factor), atol=1e-5)
    # at most topk_group groups reached
    assert all(len({e // per for e in r}) <= topk_group for r in idx.tolist())
    # weights = unbiased scores of the chosen, normalised, scaled: the bias is not in them
    chosen_s = s.gather(1, idx)
    assert torch.allclose(w, chosen_s / chosen_s.sum(-1, keepdim=True) * cfg.routed_scaling_factor, atol=1e-6)
    # scores are sigmoid(x·e): the bias is added after the sigmoid, not before
    assert torch.allclose(s, torch.sigmoid(x @ gate.weight.T), atol=1e-6)
    # the chosen experts are the top-K of the biased scores among the kept groups (step-by-step oracle)
    biased = s + gate.e_score_correction_bias
    if n_group > 1:
        gs = biased.view(20, n_group, per).topk(2, -1).values.sum(-1)
        keep = torch.zeros(20, n_group, dtype=torch.bool).scatter_(1, gs.topk(topk_group, -1).indices, True)
        biased = biased.masked_fill(~keep.repeat_interleave(per, 1), float("-inf"))
    assert torch.equal(idx, biased.topk(k, -1).indices)


def test_negative_biased_scores_masked_with_minus_inf_not_zero():
    gate, cfg = _gate(8, 4, 1, 2, bias_std=0.0)
    with torch.no_grad():
        gate.e_score_correction_bias.fill_(-5.0)         # every biased score < 0
    x = torch.randn(50, 16)
    _, idx, s = gate(x)
    mask = gate.group_mask(s + gate.e_score_correction_bias)
    assert bool(mask.gather(1, idx).all()), "a masked (dropped) group's expert was chosen"


def test_group_score_is_top2_sum_not_max():
    gate, cfg = _gate(8, 4, 1, 2, bias_std=0.0)
    biased = torch.tensor([[0.95, -0.9, 0.6, 0.6, 0.1, 0.1, 0.2, 0.2]])
    mask = gate.group_mask(biased)
    assert mask[0].tolist() == [False, False, True, True, False, False, False, False]   # group 1: 1.2 > 0.05


def test_routing_in_bf16_model_stays_fp32():
    torch.manual_seed(0)
    layer = DeepseekMoE(tiny()).to(torch.bfloat16)
    assert layer.gate.weight.dtype == torch.float32 and layer.gate.e_score_correction_bias.dtype == torch.float32
    x = torch.randn(1, 12, layer.cfg.hidden_size).to(torch.bfloat16)
    w, idx, s = layer.gate(x[0])
    assert w.dtype == s.dtype == torch.float32
    w32, idx32, _ = layer.gate(x[0].float())
    assert torch.equal(idx, idx32) and torch.allclose(w, w32)


# ----------------------------------------------------------------------------------- balance losses
def test_sequence_loss_is_alpha_at_uniform_routing_without_epsilon():
    n_r, k, t = 8, 2, 8
    even = ((torch.arange(t)[:, None] + torch.arange(k)) % n_r)[None]
    for scale in (1.0, 1e-3, 1e-9):                       # an epsilon in s/Σs would lower the loss for tiny scores
        loss = sequence_balance_loss(torch.full((1, t, n_r), scale), even, 1e-4)
        assert math.isclose(loss.item(), 1e-4, rel_tol=1e-5), scale
    # normalised sigmoid scores, not a softmax: scaling all scores does not change P
    s = torch.rand(2, t, n_r)
    idx = torch.randint(n_r, (2, t, k))
    assert torch.allclose(sequence_balance_loss(s, idx, 1.0), sequence_balance_loss(s * 7, idx, 1.0))
    # a softmax over the scores would give another value
    p = torch.softmax(s, -1)
    f = torch.zeros(2, t, n_r).scatter_(2, idx, 1.0).sum(1) * n_r / (k * t)
    assert not torch.allclose(sequence_balance_loss(s, idx, 1.0), (f * p.mean(1)).sum(-1).mean())


def test_alpha_is_the_value_at_uniform_routing_not_a_floor():
    """Expert review ch05-09, item 1: α is what uniform routing scores; routings below it exist. Oracle: the
    closed form L = α·Σ f_i·P_i evaluated by hand for 3 tokens and 3 experts (K_r = 1)."""
    s = torch.tensor([[[0.50, 0.45, 0.45], [0.50, 0.45, 0.45], [0.05, 0.90, 0.85]]])
    p = (s / s.sum(-1, keepdim=True)).mean(1)[0]                    # P_i by hand
    top1 = s.argmax(-1, keepdim=True)                                 # unbiased top-1: experts 0, 0, 1
    assert top1.flatten().tolist() == [0, 0, 1]
    assert math.isclose(sequence_balance_loss(s, top1, 1.0).item(), float(2 * p[0] + p[1]), rel_tol=1e-6)
    assert sequence_balance_loss(s, top1, 1.0).item() < 0.9            # below α without any bias
    steered = torch.zeros(1, 3, 1, dtype=torch.long)                  # every token on expert 0: maximal imbalance
    assert math.isclose(sequence_balance_loss(s, steered, 1.0).item(), float(3 * p[0]), rel_tol=1e-6)
    assert sequence_balance_loss(s, steered, 1.0).item() < 0.75
    # uniform f: α·Σ P_i = α for ANY normalisation that sums to 1 (a softmax too)
    uniform = torch.arange(3).view(1, 3, 1)
    assert math.isclose(sequence_balance_loss(s, uniform, 1.0).item(), 1.0, rel_tol=1e-6)
    assert math.isclose(float(torch.softmax(torch.logit(s), -1).mean(1).sum()), 1.0, rel_tol=1e-6)


def test_batch_vs_sequence_loss_differ_on_half_and_half_sequences():
    n_r, k, t = 8, 2, 16
    rotate = (torch.arange(t)[:, None] + torch.arange(k)) % 4
    choice = torch.stack([rotate, rotate + 4])
    scores = torch.full((2, t, n_r), 0.1)
    scores[0, :, :4], scores[1, :, 4:] = 0.9, 0.9
    assert math.isclose(batch_balance_loss(scores.reshape(-1, n_r), choice.reshape(-1, k), 1.0).item(), 1.0,
                        rel_tol=1e-5)
    assert math.isclose(sequence_balance_loss(scores, choice, 1.0).item(), 1.8, rel_tol=1e-5)


def test_f_carries_no_gradient_and_loss_reaches_scores():
    s = torch.rand(1, 6, 8, requires_grad=True)
    idx = s.detach().topk(2, -1).indices
    sequence_balance_loss(s, idx, 1.0).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------------- the bias
def test_bias_is_a_buffer_outside_the_optimizer():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny())
    names = [n for n, _ in model.named_parameters()]
    assert not any("e_score_correction_bias" in n for n in names)
    opt = build_optimizer(model, default_budget())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(m.gate.e_score_correction_bias) not in in_opt for m in model.moe_layers())
    x = torch.randint(0, 96, (2, 16))
    model(x, x).loss.backward()
    assert all(m.gate.e_score_correction_bias.grad is None for m in model.moe_layers())


def test_update_bias_sign_in_place_fp32():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny()).to(torch.bfloat16)
    layer = model.moe_layers()[0]
    bias = layer.gate.e_score_correction_bias
    ptr = bias.data_ptr()
    sd = model.state_dict()                                     # references: a checkpoint taken "now"
    key = next(k for k in sd if k.endswith("e_score_correction_bias"))
    with torch.no_grad():
        bias.fill_(1.0)
    counts = torch.zeros(bias.numel())
    counts[0] = 10.0                                            # expert 0 overloaded, all others idle
    layer.counts_since_update.copy_(counts)
    update_bias(model, 0.001)
    assert bias.data_ptr() == ptr and bias.dtype == torch.float32
    assert bias[0].item() == pytest.approx(1.0 - 0.001, abs=1e-7)   # overloaded goes DOWN, visible in fp32
    assert bias[1].item() == pytest.approx(1.0 + 0.001, abs=1e-7)
    assert torch.equal(sd[key], bias)                               # updated in place: the checkpoint sees it
    assert float(layer.counts_since_update.abs().sum()) == 0.0     # reset after the update


def test_counts_stay_fp32_in_a_bf16_model():
    torch.manual_seed(0)
    layer = DeepseekMoE(tiny()).to(torch.bfloat16)
    n = layer.gate.n_experts
    counts = torch.full((n,), 2048.0)
    counts[0] = 2048.0 + n                # expert 0 a few tokens over the mean (2049)
    layer.counts_since_update.copy_(counts)
    update_bias(layer, 0.001)
    assert layer.gate.e_score_correction_bias[0].item() < 0


def test_evaluation_does_not_feed_the_bias():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny()).eval()
    model(torch.randint(0, 96, (2, 16)))
    assert all(float(m.counts_since_update.sum()) == 0 for m in model.moe_layers())


# ----------------------------------------------------------------------------------- the stored runs
@pytest.fixture(scope="module")
def runs():
    return load_runs()


def test_stored_runs_follow_the_rules(runs):
    budget = runs["meta"]["budget"]
    b, t = budget["batch_size"], budget["seq_len"]
    for m in METHODS:
        r = runs["runs"][m]
        s = settings_for(m)
        assert r["settings"] == {"gamma": s.gamma, "seq_alpha": s.seq_alpha, "batch_alpha": s.batch_alpha}
        assert len(r["step"]) == len(r["counts"]) == len(r["bias"]) == budget["steps"]
        k = runs["meta"]["config"]["num_experts_per_tok"]
        for step_counts in r["counts"]:
            for row, c in enumerate(step_counts):
                mtp = r["layer_names"][row].startswith("mtp.")
                # every real position counted exactly once; MTP depth 1 sees T-1 positions (no padding counted)
                assert sum(c) == b * (t - 1 if mtp else t) * k
        bias = torch.tensor(r["bias"])                          # [steps, layers, N_r]
        counts = torch.tensor(r["counts"], dtype=torch.float32)
        if s.gamma == 0:
            assert float(bias.abs().max()) == 0.0               # no balancing: bias never moves (no gradient, no decay)
            continue
        want = bias[:-1] + s.gamma * torch.sign(counts[:-1].mean(-1, keepdim=True) - counts[:-1])
        # once per optimizer step, from training counts only (evaluations every few steps do not enter), sign rule
        assert torch.allclose(bias[1:], want, atol=2e-5)
        steps = (bias[1:] - bias[:-1]).abs()
        assert torch.all((steps < 1e-5) | ((steps - s.gamma).abs() < 1e-5))


def test_stored_runs_metrics_consistent(runs):
    for m in METHODS:
        r = runs["runs"][m]
        final = torch.tensor(r["final"]["counts"])
        assert abs(max_violation(final) - r["final"]["max_vio_global"]) < 1e-5
        for c, mv in zip(r["val_counts"], r["max_vio_global"]):
            assert abs(max_violation(torch.tensor(c)) - mv) < 1e-5
        main = r["main_layers"]
        for c, mv in zip(r["counts"], r["max_vio_batch"]):
            assert abs(sum(max_violation(torch.tensor(c[i])) for i in main) / len(main) - mv) < 1e-5
    # replicate seeds: every method, every seed, finite final numbers, other seeds than the full run's
    seeds = runs["meta"]["replicate_seeds"]
    assert len(seeds) >= 2 and runs["meta"]["budget"]["seed"] not in seeds
    for m in METHODS:
        reps = runs["replicates"][m]
        assert [r["seed"] for r in reps] == seeds
        assert all(math.isfinite(r["val_loss"]) and r["max_vio_global"] >= 0 for r in reps)
    # balancing works on every seed: each balanced run ends far below the unbalanced runs' MaxVio
    worst_balanced = max(r["max_vio_global"] for m in METHODS[1:] for r in runs["replicates"][m])
    assert worst_balanced < min(r["max_vio_global"] for r in runs["replicates"]["none"])
    # aux-loss runs carry a loss, the others (apart from α = 1e-4) essentially none
    assert min(runs["runs"]["aux_loss"]["aux_loss"]) > 0.5 * runs["meta"]["aux_alpha"]
    assert max(runs["runs"]["none"]["aux_loss"]) == 0.0


def test_stored_runs_match_the_command(runs):
    """Re-train the first steps of every method exactly as the command does and compare with the file."""
    from dsv3_lessons.tools.data import TextData, load_corpus

    data = TextData.from_corpus(load_corpus())
    assert runs["meta"]["config"] == tiny(vocab_size=data.vocab_size).to_dict(), \
        "data/moe_runs was made with another tiny() config: rerun python -m dsv3_lessons.course.ch06_balancing"
    n = 2
    budget = default_budget(runs["meta"]["budget"]["steps"])
    budget.steps = n                    # warmup covers these steps: the learning rates equal the full run's
    budget.eval_interval = 0
    assert n < budget.warmup_steps
    for m in METHODS:
        stored = runs["runs"][m]
        _, fresh = train_method(m, data, budget, final_batches=1)
        assert fresh["counts"] == stored["counts"][:n], m
        assert fresh["bias"] == stored["bias"][:n], m
        assert fresh["main_loss"] == pytest.approx(stored["main_loss"][:n], rel=1e-4), m
        assert fresh["val_loss"][0] == pytest.approx(stored["val_loss"][0], rel=1e-5), m


# ----------------------------------------------------------------------------------- helpers
def test_batch_aux_hook_replaces_layer_loss():
    torch.manual_seed(0)
    model = DeepSeekV3(tiny(), aux_loss_alpha=0.0)
    seen = {}
    for i, m in enumerate(model.moe_layers()):   # an independent capture of each gate's output
        m.gate.register_forward_hook(lambda g, inp, out, i=i: seen.__setitem__(i, out) and None)
    handles = attach_batch_aux_loss(model, 0.01)
    x = torch.randint(0, 96, (2, 16))
    out = model(x, x)
    for i, m in enumerate(model.moe_layers()):
        _, idx, s = seen[i]
        assert torch.allclose(m.aux_loss, batch_balance_loss(s, idx, 0.01))
        assert m.aux_loss.requires_grad
    assert out.aux_loss.item() > 0
    for h in handles:
        h.remove()
    out = model(x, x)
    assert out.aux_loss.item() == 0.0
    with pytest.raises(ValueError, match="alpha"):
        attach_batch_aux_loss(model, -1.0)


def test_resimulation_balances_a_skewed_router():
    g = torch.Generator().manual_seed(0)
    scores = torch.sigmoid(torch.randn(2000, 8, generator=g) + torch.tensor([2., 1, 0, 0, 0, 0, -1, -2]))
    none = resimulate_bias(scores, 4, 2, 2, 0.0, steps=60, batch_tokens=512)
    fast = resimulate_bias(scores, 4, 2, 2, 0.05, steps=60, batch_tokens=512)
    assert none["max_vio"][-10:].mean() > 1.0
    assert fast["max_vio"][-10:].mean() < 0.3 * none["max_vio"][-10:].mean()
    assert torch.all(fast["bias"][0] == 0) and fast["bias"][-1, 0] < 0 < fast["bias"][-1, -1]
    with pytest.raises(ValueError, match="gamma"):
        resimulate_bias(scores, 4, 2, 2, -1.0)
    with pytest.raises(ValueError, match="do not fit"):
        resimulate_bias(scores, 3, 2, 2, 0.01)
    with pytest.raises(ValueError, match="method"):
        settings_for("softmax")


def test_resimulation_with_batches_drawn_once_is_the_same():
    # the widget draws the batches once per layer (they do not depend on γ): the result must not change
    from dsv3_lessons.course.ch06_balancing.runs import sample_batches

    g = torch.Generator().manual_seed(1)
    scores = torch.sigmoid(torch.randn(500, 8, generator=g))
    batches = sample_batches(scores, steps=20, batch_tokens=64, seed=3)
    assert batches.shape == (20, 64, 8)
    assert torch.equal(batches[0], scores[torch.randint(500, (64,), generator=torch.Generator().manual_seed(3))])
    for gamma in (0.0, 0.01, 0.1):
        own = resimulate_bias(scores, 4, 2, 2, gamma, steps=20, batch_tokens=64, seed=3)
        given = resimulate_bias(scores, 4, 2, 2, gamma, steps=20, batch_tokens=64, seed=3, batches=batches)
        assert all(torch.equal(own[k], given[k]) for k in ("counts", "bias", "max_vio"))
    with pytest.raises(ValueError, match="batches must be"):
        resimulate_bias(scores, 4, 2, 2, 0.01, steps=21, batch_tokens=64, batches=batches)


# ----------------------------------------------------------------------------------- the per-sequence study
def test_sequence_study_file_matches_the_stored_runs(runs):
    """data/moe_runs/sequence_balance.json trains "bias" (α = 0) and "bias + sequence loss" (α = 1e-4) again with the
    same recipe and seeds as balancing_histories.json: their final held-out numbers must be the stored runs' (a stale
    or differently made file fails here), and every per-sequence statistic must be a MaxVio of 64-token sequences."""
    from dsv3_lessons.course.ch06_balancing.sequences import SEQUENCE_ALPHAS, load_sequence_study

    study = load_sequence_study()
    assert study["meta"]["config"] == runs["meta"]["config"]
    assert study["meta"]["budget"] == runs["meta"]["budget"]
    assert study["meta"]["alphas"] == list(SEQUENCE_ALPHAS) and study["meta"]["seeds"] == [0, *runs["meta"]["replicate_seeds"]]
    by = {(r["alpha"], r["seed"]): r for r in study["results"]}
    assert len(by) == len(SEQUENCE_ALPHAS) * len(study["meta"]["seeds"])
    for alpha, method in ((0.0, "bias"), (runs["meta"]["seq_alpha"], "bias+seq")):
        stored = {p["seed"]: p for p in [{"seed": 0, **runs["runs"][method]["final"]}, *runs["replicates"][method]]}
        for seed, p in stored.items():
            r = by[(alpha, seed)]
            assert r["val_loss"] == pytest.approx(p["val_loss"], abs=1e-4), (method, seed)
            assert r["max_vio_global"] == pytest.approx(p["max_vio_global"], abs=1e-4), (method, seed)
    k, n_r = runs["meta"]["config"]["num_experts_per_tok"], runs["meta"]["config"]["n_routed_experts"]
    for r in study["results"]:
        assert 0 <= r["seq_max_vio_mean"] <= r["seq_max_vio_p90"] <= n_r / k - 1
        assert r["n_sequences"] == 256


def test_per_sequence_counts_sum_to_the_global_counts():
    """The per-sequence counts of a model add up to the counts evaluate() reports on the same windows."""
    from dsv3_lessons.course.ch06_balancing.sequences import per_sequence_counts, sequence_max_vio
    from dsv3_lessons.tools.data import TextData, load_corpus
    from dsv3_lessons.tools.train import evaluate

    data = TextData.from_corpus(load_corpus())
    torch.manual_seed(0)
    model = DeepSeekV3(tiny(vocab_size=data.vocab_size))
    per_seq = per_sequence_counts(model, data, batches=2, batch_size=4, seq_len=32, seed=11)
    _, total = evaluate(model, data, batches=2, batch_size=4, seq_len=32, seed=11, return_counts=True)
    assert per_seq.shape == (8, total.shape[0], total.shape[1])
    assert torch.equal(per_seq.sum(0), total)
    assert torch.all(per_seq.sum(-1) == 32 * model.cfg.num_experts_per_tok)
    mv = sequence_max_vio(per_seq)
    c = per_seq[3].float()
    assert math.isclose(float(mv[3]), float(((c.max(-1).values - c.mean(-1)) / c.mean(-1)).mean()), rel_tol=1e-6)
