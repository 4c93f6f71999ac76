"""Training loop (dsv3_lessons.tools.train): learning, schedule, optimizer groups, clipping, balancing, history.

Oracles: closed-form learning rates; the aux-loss-free rule b_i += γ·sign(mean(c) − c_i) applied by hand
to the recorded counts; token-count arithmetic (batch·seq·K_r per layer); norms recomputed from the
gradients. Models are smaller than the course's tiny preset so the whole file runs in seconds.
"""
from __future__ import annotations

import math
import time

import pytest
import torch

from dsv3_lessons import tiny
from dsv3_lessons.tools.data import TextData
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3
from dsv3_lessons.model.moe import max_violation
from dsv3_lessons.tools.train import History, TrainConfig, build_optimizer, clip_gradients, evaluate, lr_at, train


def small_model(vocab: int = 8, seed: int = 0) -> DeepSeekV3:
    torch.manual_seed(seed)
    cfg = tiny(vocab_size=vocab, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
               num_attention_heads=2, num_key_value_heads=2, q_lora_rank=24, kv_lora_rank=16,
               qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)
    return DeepSeekV3(cfg)


def pattern_data() -> TextData:
    """A learnable toy language: documents cycling through short fixed patterns (vocab 8)."""
    g = torch.Generator().manual_seed(0)
    pats = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7, 5]), torch.tensor([2, 6, 1])]

    def doc(n):
        p = pats[int(torch.randint(len(pats), (1,), generator=g))]
        return p.repeat(n // len(p) + 1)[:n]

    return TextData([doc(200) for _ in range(6)], [doc(120) for _ in range(2)])


FAST = dict(batch_size=8, seq_len=16, eval_batches=2, eval_interval=0)


def test_a_few_steps_reduce_the_loss():
    model, data = small_model(), pattern_data()
    hist = train(model, data, TrainConfig(steps=25, lr=1e-2, warmup_steps=3, **FAST), progress=False)
    assert hist.val_loss[0] > math.log(8) - 0.3                 # starts near uniform over 8 tokens
    assert hist.val_loss[-1] < hist.val_loss[0] - 0.5            # and clearly learns
    assert sum(hist.main_loss[-5:]) / 5 < hist.main_loss[0] - 0.5


def test_lr_schedule_closed_form():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)                   # 1/10 of peak on the first step
    assert lr_at(9, cfg) == pytest.approx(1.0)                   # end of warmup reaches the peak
    assert lr_at(10, cfg) == pytest.approx(1.0)                  # cosine starts at the peak
    assert lr_at(55, cfg) == pytest.approx(0.55)                 # p = 1/2: min + (max - min)/2
    assert lr_at(10 + 90 / 3, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 3)))
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    timed = TrainConfig(steps=None, time_budget_s=10.0, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(7, timed, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_at(7, timed, time_fraction=1.0) == pytest.approx(0.0)


def test_history_lr_follows_schedule():
    model, data = small_model(), pattern_data()
    cfg = TrainConfig(steps=6, warmup_steps=2, lr=2e-3, **FAST)
    hist = train(model, data, cfg, progress=False)
    assert hist.lr == pytest.approx([lr_at(s, cfg) for s in range(6)])


def test_optimizer_groups_and_bias_buffer():
    model = small_model()
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_no = {id(p) for p in no_decay["params"]}
    params = dict(model.named_parameters())
    assert ids_decay | ids_no == {id(p) for p in params.values()} and not ids_decay & ids_no
    for name, p in params.items():
        assert (id(p) in ids_decay) == (p.dim() >= 2), name
        if "norm" in name:
            assert id(p) in ids_no, name
    biases = [b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
    assert len(biases) == 3                                      # 2 MoE layers + the MTP block's MoE
    assert not {id(b) for b in biases} & (ids_decay | ids_no)
    assert all(not b.requires_grad for b in biases)


def _biases(model):
    return {n: b.clone() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")}


def test_bias_moves_only_by_the_balancing_rule():
    """Huge lr and weight decay must not touch b; with γ > 0 it moves exactly by γ·sign(mean(c) − c)."""
    model, data = small_model(), pattern_data()
    with torch.no_grad():
        for _, b in model.named_buffers():
            if _.endswith("e_score_correction_bias"):
                b.uniform_(-0.3, 0.3)
    before = _biases(model)
    train(model, data, TrainConfig(steps=2, lr=1.0, weight_decay=10.0, bias_update_speed=0.0, **FAST),
          progress=False)
    after = _biases(model)
    assert all(torch.equal(before[n], after[n]) for n in before)

    gamma = 0.01
    hist = train(model, data, TrainConfig(steps=1, bias_update_speed=gamma, **FAST), progress=False)
    final = _biases(model)
    names = [n.replace(".gate.e_score_correction_bias", "") for n in final]
    assert names == hist.moe_layer_names
    for row, name in enumerate(final):
        c = hist.expert_counts[0][row].float()
        expected = after[name] + gamma * torch.sign(c.mean() - c)
        assert torch.allclose(final[name], expected, atol=1e-7), name


def test_overloaded_expert_bias_goes_down():
    model, data = small_model(), pattern_data()
    hist = train(model, data, TrainConfig(steps=1, bias_update_speed=0.05, **FAST), progress=False)
    for row, (name, b) in enumerate(_biases(model).items()):
        c = hist.expert_counts[0][row]
        assert c.max() > c.float().mean() > c.min()             # unbalanced at init, so the rule acts
        assert b[int(c.argmax())] == pytest.approx(-0.05)       # most loaded: down
        assert b[int(c.argmin())] == pytest.approx(+0.05)       # least loaded: up


def test_grad_clipping_bounds_the_norm():
    model, data = small_model(), pattern_data()
    x, y = data.get_batch("train", 4, 16, generator=torch.Generator().manual_seed(0))
    (model(x, y).loss * 1000).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    manual = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item()
    pre = clip_gradients(model, 0.5)
    assert pre == pytest.approx(manual, rel=1e-5) and pre > 0.5
    post = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()
                                                if p.grad is not None])).item()
    assert post == pytest.approx(0.5, rel=1e-4)
    after = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, g * (post / manual), rtol=1e-4, atol=1e-12) for a, g in zip(after, grads))
    assert clip_gradients(model, None) == pytest.approx(post, rel=1e-5)    # no clipping: norm unchanged


def test_history_records_everything():
    model, data = small_model(), pattern_data()
    cfg = TrainConfig(steps=4, batch_size=8, seq_len=16, eval_batches=2, eval_interval=2)
    hist = train(model, data, cfg, progress=False)
    assert isinstance(hist, History) and hist.step == [1, 2, 3, 4]
    for series in (hist.loss, hist.main_loss, hist.mtp_loss, hist.aux_loss, hist.lr, hist.grad_norm,
                   hist.tokens_per_s, hist.step_time_s, hist.max_vio):
        assert len(series) == 4 and all(math.isfinite(v) for v in series)
    assert hist.val_step == [0, 2, 4] and len(hist.val_loss) == 3
    assert all(l > 0 and a > 0 for l, a in zip(hist.mtp_loss, hist.aux_loss))
    # loss = main + λ·mtp + aux (λ = 0.3)
    for t, m, k, a in zip(hist.loss, hist.main_loss, hist.mtp_loss, hist.aux_loss):
        assert t == pytest.approx(m + 0.3 * k + a, rel=1e-5)
    loads = hist.expert_loads()
    k_r = model.cfg.num_experts_per_tok
    assert loads.shape == (4, 3, model.cfg.n_routed_experts)
    assert hist.moe_layer_names == ["layers.1.mlp", "layers.2.mlp", "mtp.0.mlp"]
    assert torch.all(loads[:, :2].sum(-1) == 8 * 16 * k_r)     # every token picks K_r experts
    assert torch.all(loads[:, 2].sum(-1) == 8 * 15 * k_r)      # MTP depth 1 sees T − 1 positions
    assert hist.max_vio == pytest.approx([(max_violation(c[0]) + max_violation(c[1])) / 2 for c in loads])
    assert hist.tokens_seen == 4 * 8 * 16
    assert hist.tokens_per_second == pytest.approx(hist.tokens_seen / hist.train_time_s)


def test_training_is_deterministic_given_seed():
    runs = []
    for _ in range(2):
        model = small_model(seed=1)
        runs.append(train(model, pattern_data(), TrainConfig(steps=3, seed=5, **FAST), progress=False))
    assert runs[0].loss == runs[1].loss and runs[0].val_loss == runs[1].val_loss


def test_time_budget_stops_training():
    """With steps=None the loop runs until the budget is spent, checked before each step.

    Both bounds below follow from that rule alone, with no timing slack, so a loaded machine cannot break
    them: a step only starts while the wall time since the start is under the budget (so every step but the
    last ran inside it), and the loop only ends once the budget is spent (so the call lasted at least that).
    """
    budget = 0.3
    model, data = small_model(), pattern_data()
    t0 = time.perf_counter()
    hist = train(model, data, TrainConfig(steps=None, time_budget_s=budget, **FAST), progress=False)
    wall = time.perf_counter() - t0
    assert hist.steps_done >= 1 and len(hist.step_time_s) == hist.steps_done == hist.step[-1]
    assert wall >= budget                                   # did not stop before the budget was spent
    assert sum(hist.step_time_s[:-1]) < budget              # no step started after it
    # and it stopped soon after: at most the step in flight, plus generous room for the two evaluations
    # and the per-step bookkeeping on a busy machine (a loop that ignored the budget would run for minutes)
    assert wall < budget + hist.step_time_s[-1] + 10.0
    assert hist.train_time_s == pytest.approx(sum(hist.step_time_s))
    assert hist.val_step[-1] == hist.steps_done             # and it still evaluated at the end


def test_evaluate_is_repeatable_and_counts_tokens():
    model, data = small_model(), pattern_data()
    model.train()
    a = evaluate(model, data, batches=2, batch_size=4, seq_len=16)
    loss, counts = evaluate(model, data, batches=2, batch_size=4, seq_len=16, return_counts=True)
    assert a == loss and model.training                          # same windows; mode restored
    assert counts.shape == (2, model.cfg.n_routed_experts)
    assert torch.all(counts.sum(-1) == 2 * 4 * 16 * model.cfg.num_experts_per_tok)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="steps or time_budget_s"):
        TrainConfig(steps=None)
    with pytest.raises(ValueError, match="bias_update_speed"):
        TrainConfig(bias_update_speed=-1e-3)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=2.0)
    model = small_model(vocab=4)
    with pytest.raises(ValueError, match="vocab_size"):
        train(model, pattern_data(), TrainConfig(steps=1, **FAST), progress=False)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        train(small_model(), pattern_data(), TrainConfig(steps=1, seq_len=1000), progress=False)


# ------------------------------------------------------------------------------------------ speed paths
def test_fused_optimizer_is_used_and_equals_the_per_tensor_adamw():
    data = pattern_data()
    cfg = TrainConfig(steps=4, lr=5e-3, warmup_steps=1, **FAST)
    opt = build_optimizer(small_model(), cfg)
    assert opt.defaults.get("fused") is True
    slow_opt = build_optimizer(small_model(), TrainConfig(fused_optimizer=False))
    assert not slow_opt.defaults.get("fused") and not slow_opt.defaults.get("foreach")
    a, b = small_model(seed=3), small_model(seed=3)
    train(a, data, cfg, progress=False)
    train(b, data, TrainConfig(steps=4, lr=5e-3, warmup_steps=1, fused_optimizer=False, **FAST), progress=False)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    moved = sum((p - q).abs().sum() for p, q in zip(a.parameters(), small_model(seed=3).parameters()))
    assert moved > 0                                           # the comparison is not between untrained models


def test_num_threads_applies_during_training_and_is_restored():
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = small_model()

        def forward(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return self.inner(*args, **kwargs)

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    train(Probe(), pattern_data(), TrainConfig(steps=2, num_threads=target, **FAST), progress=False)
    assert seen and set(seen) == {target}                      # every forward (train and eval) ran with it
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        TrainConfig(num_threads=0)


def test_process_clock_budget():
    """clock="process" counts this process's CPU seconds: the budget is spent in CPU time, so the loop
    stops once the summed per-step CPU times reach it (and no step starts after)."""
    budget = 0.3
    hist = train(small_model(), pattern_data(), TrainConfig(steps=None, time_budget_s=budget, clock="process",
                                                             **FAST), progress=False)
    assert hist.steps_done >= 1 and sum(hist.step_time_s[:-1]) < budget
    assert hist.train_time_s == pytest.approx(sum(hist.step_time_s))
    with pytest.raises(ValueError, match="clock"):
        TrainConfig(clock="gpu")


def test_progress_bar_label(capsys):
    """The bar carries the caller's label (cells that train several runs tell them apart); a bad label is refused."""
    data = pattern_data()
    train(small_model(), data, TrainConfig(steps=2, batch_size=2, seq_len=8, eval_interval=0, eval_batches=1),
          progress=True, desc="FP8 run")
    assert "FP8 run: 100%" in capsys.readouterr().err.replace("\r", "\n")
    with pytest.raises(ValueError, match="desc"):
        train(small_model(), data, TrainConfig(steps=1, batch_size=2, seq_len=8), desc="")
