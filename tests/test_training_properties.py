"""Four properties the rest of the suite did not pin down (issue 15, deliverable 8).

Each test here was checked against a planted bug (the bug named in its docstring): with the bug in the
package the test fails, without it the test passes.

1. :func:`train` clips the gradients *before* ``opt.step()``: the gradients the optimizer reads have a
   global norm ≤ ``grad_clip``. Oracle: the norm recomputed from ``p.grad`` inside an optimizer step
   pre-hook (torch's own hook API), i.e. at the moment AdamW reads them.
2. With D ≥ 2 MTP depths the MTP loss is (1/D)·Σ_k CE_k and the total adds λ times it (V3 eq. 25).
   Oracle: every depth run by hand from the modules (eqs. 21–23) and its CE written as −log softmax.
3. :func:`evaluate` reads only the validation split. Oracles: a spy on ``get_batch`` and two datasets
   that share their validation split but not their train split.
4. :func:`sample_next` with top-k ≥ 2 keeps exactly the k largest logits. Oracles: the k largest found by
   a full sort, softmax over them in closed form (checked against :func:`next_token_probs`), and the
   frequencies of many draws.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dsv3_lessons import tiny
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3
from dsv3_lessons.tools.data import TextData
from dsv3_lessons.tools.generate import next_token_probs, sample_next
from dsv3_lessons.tools.train import TrainConfig, evaluate, train


def small_model(vocab: int = 8, seed: int = 0, **overrides) -> DeepSeekV3:
    """Smaller than the course's tiny preset (every mechanism still on) so each test runs in about a second."""
    torch.manual_seed(seed)
    cfg = tiny(vocab_size=vocab, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
               num_attention_heads=2, num_key_value_heads=2, q_lora_rank=24, kv_lora_rank=16,
               qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, **overrides)
    return DeepSeekV3(cfg)


def random_docs(n_docs: int, length: int, low: int, high: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (length,), generator=g) for _ in range(n_docs)]


# ------------------------------------------------------------------------------------------ 1. clip, then step
def _norms_seen_by_the_optimizer(model: DeepSeekV3, data: TextData, cfg: TrainConfig):
    """Train, recording the global gradient norm at the moment each ``optimizer.step`` begins."""
    seen: list[float] = []

    def before_step(opt, args, kwargs):
        grads = [p.grad.flatten() for group in opt.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.cat(grads)).item())

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        hist = train(model, data, cfg, progress=False)
    finally:
        handle.remove()
    return hist, seen


def test_train_clips_the_gradients_before_the_optimizer_step():
    """Planted bugs caught: clipping moved after ``opt.step()``; clipping removed."""
    data = TextData(random_docs(4, 200, 0, 8, seed=1), random_docs(2, 100, 0, 8, seed=2))
    clip = 0.05                                                   # far below the unclipped norms
    cfg = TrainConfig(steps=5, lr=1e-2, warmup_steps=1, batch_size=8, seq_len=16, eval_batches=1,
                      eval_interval=0, grad_clip=clip)
    hist, seen = _norms_seen_by_the_optimizer(small_model(), data, cfg)
    assert len(seen) == cfg.steps                                 # one optimizer step per training step
    assert min(hist.grad_norm) > 10 * clip                        # clipping had to act at every step
    for before, at_step in zip(hist.grad_norm, seen):
        # clip_grad_norm_ rescales by clip / (norm + 1e-6): the optimizer sees the clip value itself
        assert at_step == pytest.approx(clip, rel=1e-4), (before, at_step)
    # without clipping the optimizer sees exactly the norm History records
    hist, seen = _norms_seen_by_the_optimizer(small_model(), data, TrainConfig(**{**vars(cfg), "grad_clip": None}))
    assert seen == pytest.approx(hist.grad_norm, rel=1e-5)
    assert min(seen) > 10 * clip


# ------------------------------------------------------------------------------------------ 2. MTP loss, D ≥ 2
def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of −log softmax(logits)[label] over every position (no ignored labels here)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -logp.gather(-1, labels[..., None]).mean()


@pytest.mark.parametrize("depths", [2, 3])
def test_mtp_loss_is_lambda_times_the_mean_of_the_depths(depths):
    """V3 eq. 25: L_MTP = (λ/D)·Σ_k CE_k. Planted bug caught: the depths' CEs summed instead of averaged."""
    lam, V = 0.3, 11
    torch.manual_seed(0)
    model = DeepSeekV3(tiny(vocab_size=V, num_nextn_predict_layers=depths), aux_loss_alpha=0.0,
                       mtp_loss_weight=lam).eval()
    with torch.no_grad():                                         # make the depths' losses clearly different
        for k, module in enumerate(model.mtp):
            module.shared_head.norm.weight.mul_(1.0 + 3.0 * k)
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, V, (2, 17), generator=g)
    ids, targets = stream[:, :-1], stream[:, 1:]
    T = ids.shape[1]
    with torch.no_grad():
        out = model(ids, targets)
        # by hand: h^k = TRM_k(M_k[enorm(Emb(t_{i+k})); hnorm(h^{k-1})]) on positions i < T-k; label t_{i+k+1}
        h, ces = out.hidden, []
        for k, module in enumerate(model.mtp, start=1):
            h = module(h[:, :T - k], model.embed_tokens(ids[:, k:]))
            logits_k = model.lm_head(module.shared_head.norm(h))
            ces.append(_ce(logits_k, stream[:, k + 1:]))
        main = _ce(out.logits, targets)
    assert len(out.mtp_logits) == depths
    assert min(abs(a - b) for i, a in enumerate(ces) for b in ces[i + 1:]) > 0.05   # a sum ≠ a mean here
    mean_ce = sum(ces) / depths
    assert out.main_loss.double().item() == pytest.approx(main.item(), rel=1e-5)
    assert out.mtp_loss.double().item() == pytest.approx(mean_ce.item(), rel=1e-5)
    aux = out.aux_loss.item() if out.aux_loss is not None else 0.0
    assert aux == 0.0                                             # α = 0 and eval mode: nothing else in the total
    assert out.loss.double().item() == pytest.approx((main + lam * mean_ce).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ 3. evaluate: val only
class SpyData(TextData):
    """A TextData that records which split every batch was drawn from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.splits: list[str] = []

    def get_batch(self, split, *args, **kwargs):
        self.splits.append(split)
        return super().get_batch(split, *args, **kwargs)


def test_evaluate_reads_only_the_validation_split():
    """Planted bug caught: ``evaluate`` drawing its batches from ``"train"``."""
    model = small_model()
    val = random_docs(2, 100, 0, 8, seed=3)                      # every token id, at random
    constant = [torch.zeros(300, dtype=torch.long)] * 3          # one token repeated: a very different text
    other = random_docs(3, 300, 4, 8, seed=4)                    # only the upper half of the vocabulary
    kw = dict(batches=3, batch_size=4, seq_len=16)
    spy = SpyData(constant, val)
    before = evaluate(model, spy, **kw)
    assert spy.splits == ["val"] * 3
    # train on the constant text: it then scores far better than the random validation text
    hist = train(model, spy, TrainConfig(steps=8, lr=3e-2, warmup_steps=1, batch_size=4, seq_len=16,
                                         eval_batches=3, eval_interval=0), progress=False)
    assert hist.val_loss[0] == before                            # train() evaluates the same val windows
    assert spy.splits.count("train") == 8 and spy.splits.count("val") == 3 + 2 * 3
    on_val = evaluate(model, TextData(constant, val), **kw)
    assert evaluate(model, TextData(other, val), **kw) == on_val  # another train split: the same score
    on_constant = evaluate(model, TextData(val, constant), **kw)  # the training text as validation
    assert on_constant < on_val - 1.0                            # a switch to "train" could not hide
    assert hist.val_loss[-1] == on_val


# ------------------------------------------------------------------------------------------ 4. sampling top-k
@pytest.mark.parametrize("top_k", [2, 3, 5])
def test_sample_next_keeps_exactly_the_k_largest_logits(top_k):
    """Planted bugs caught: the k-th value taken from the first row for every row; ``<=`` (keeps k − 1)."""
    V, rows, draws, temperature = 10, 4, 3000, 0.7
    g = torch.Generator().manual_seed(top_k)
    # distinct logits, in a different order, spacing and offset in every row (so every row has its own k-th value)
    logits = torch.stack([torch.randperm(V, generator=g).float() * step + offset
                          for step, offset in zip((0.3, 0.5, 0.2, 0.4), (0.0, -1.0, 2.0, 0.5))])
    p = next_token_probs(logits, temperature, top_k)
    picks = sample_next(logits.repeat_interleave(draws, 0), temperature, top_k,
                        generator=torch.Generator().manual_seed(0)).view(rows, draws)
    for r in range(rows):
        kept = sorted(logits[r].tolist(), reverse=True)[:top_k]          # the k largest, by a full sort
        support = {i for i in range(V) if logits[r, i].item() in kept}
        assert len(support) == top_k
        e = {i: math.exp(logits[r, i].item() / temperature) for i in support}
        want = [e[i] / sum(e.values()) if i in support else 0.0 for i in range(V)]
        assert p[r].tolist() == pytest.approx(want, abs=1e-6)         # next_token_probs: closed form
        assert set(picks[r].tolist()) == support                      # sample_next: exactly that support
        freq = torch.bincount(picks[r], minlength=V).double() / draws
        assert (freq - p[r].double()).abs().max().item() < 0.04       # ≈ 4.4σ for 3000 draws
