"""What the tiny DeepSeek-V3 is compared with: the nanoGPT CPU recipe, the dense twin, and interleaved step timing.

Used by ``bench/train_cpu.py`` (the side-by-side benchmark) and by chapter 10 (the MoE-vs-dense crossover runs),
so both train the same baselines with the same recipes.

* :class:`NanoGPT` + :data:`NANOGPT_RECIPE` -- a dense GPT written here from the hyper-parameters nanoGPT publishes
  for its Shakespeare-character CPU run (4 layers, 4 heads, width 128, block 64, batch 12, no dropout, no biases,
  tied embedding, AdamW lr 1e-3 with 100 warmup iterations and cosine to 1e-4, β2 = 0.99, weight decay 0.1,
  clip 1.0).
* :func:`dense_twin` -- the tiny model with every FFN a dense SwiGLU whose width equals the MoE's *activated*
  width (N_s + K_r experts of ``moe_intermediate_size``): same attention, same activated FFN parameters (the
  router's N_r·d weights aside), no routing. The question "does the MoE pay?" is asked against this twin.
* :data:`COURSE_RECIPE` -- the course's CPU recipe for the tiny model (batch 32 × 64, lr 3e-3, warmup 15, cosine to
  0.1×, γ = 0.01).
* :func:`step_times` -- seconds per training step of several models, timed by **alternating single steps** of
  all of them, so every model is timed under the same machine conditions (a shared machine's speed drifts by
  tens of percent within minutes, enough to flip a comparison of runs timed one after the other).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_lessons.model.config import DeepseekV3Config
from dsv3_lessons.model.moe import update_bias

from .data import TextData
from .train import TrainConfig, build_optimizer, clip_gradients

__all__ = ["NanoGPT", "NANOGPT_RECIPE", "COURSE_RECIPE", "dense_twin", "step_times"]

#: nanoGPT's published Shakespeare-character CPU settings, as :class:`~dsv3_lessons.tools.train.TrainConfig` fields.
NANOGPT_RECIPE = dict(batch_size=12, seq_len=64, lr=1e-3, warmup_steps=100, min_lr_ratio=0.1, betas=(0.9, 0.99),
                      weight_decay=0.1, grad_clip=1.0)
#: the course's CPU recipe for the tiny DeepSeek-V3 and its dense twin (TrainConfig fields).
COURSE_RECIPE = dict(batch_size=32, seq_len=64, lr=3e-3, warmup_steps=15, min_lr_ratio=0.1, bias_update_speed=0.01)


@dataclass
class _Out:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    main_loss: torch.Tensor | None = None
    mtp_loss: None = None
    aux_loss: None = None


class NanoGPT(nn.Module):
    """A GPT-2-style decoder with nanoGPT's published CPU settings (pre-LayerNorm without biases, learned
    positions, fused qkv, 4x GELU MLP, tied head; init N(0, 0.02), residual projections 0.02/sqrt(2L)).

    ``forward(idx [b, T], targets [b, T] | None)`` returns an object with ``logits [b, T, V]`` and
    ``loss``/``main_loss`` (nats/token) so :func:`~dsv3_lessons.tools.train.train` can train it.
    """

    def __init__(self, vocab: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128, block: int = 64):
        super().__init__()
        self.n_head, self.block = n_head, block
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList()
        for _ in range(n_layer):
            self.h.append(nn.ModuleDict(dict(
                ln_1=nn.LayerNorm(n_embd, bias=False), c_attn=nn.Linear(n_embd, 3 * n_embd, bias=False),
                attn_proj=nn.Linear(n_embd, n_embd, bias=False), ln_2=nn.LayerNorm(n_embd, bias=False),
                c_fc=nn.Linear(n_embd, 4 * n_embd, bias=False), mlp_proj=nn.Linear(4 * n_embd, n_embd, bias=False))))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, compute_mtp=None) -> _Out:
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.h:
            q, k, v = blk["c_attn"](blk["ln_1"](x)).split(x.shape[-1], dim=-1)
            q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            x = x + blk["attn_proj"](y)
            x = x + blk["mlp_proj"](F.gelu(blk["c_fc"](blk["ln_2"](x))))
        logits = self.lm_head(self.ln_f(x))
        out = _Out(logits)
        if targets is not None:
            out.loss = out.main_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return out


def dense_twin(cfg: DeepseekV3Config) -> DeepseekV3Config:
    """``cfg`` with every FFN dense, of width (N_s + K_r)·``moe_intermediate_size``, and no MTP module.

    Same attention and sizes; each token runs through as many FFN channels as in the MoE (activated
    parameters match, the router's N_r·d + N_r aside). Raises ConfigError for an invalid ``cfg``.
    """
    width = (cfg.n_shared_experts + cfg.num_experts_per_tok) * cfg.moe_intermediate_size
    return cfg.replace(first_k_dense_replace=cfg.num_hidden_layers, intermediate_size=width,
                       num_nextn_predict_layers=0)


def step_times(builds: dict[str, Callable[[], nn.Module]], recipes: dict[str, dict], data: TextData,
               rounds: int, threads: int, clock: str = "wall", seed: int = 0) -> dict[str, float]:
    """Median seconds per training step of every model, timed by alternating single steps of all of them.

    Each round draws one batch per model (its recipe's ``batch_size`` × ``seq_len``, a fixed generator) and runs
    one full training step of each model in turn (forward, backward, clipping, AdamW, bias update), so all
    models are timed under the same machine conditions. The first two rounds are warm-up and not counted. The
    models trained here are thrown away.

    Args:
        builds: name -> a function building the model; recipes: name -> TrainConfig fields (batch_size, seq_len,
            optionally bias_update_speed); data: batches; rounds: timed rounds (>= 1); threads: torch threads;
        clock: ``"wall"`` (time.perf_counter) or ``"process"`` (CPU seconds of this process: with one thread,
            robust to other programs on the machine); seed: seeds the models and the batches.
    Returns: name -> median seconds per step.
    Raises: ValueError for ``rounds`` < 1, an unknown clock, or a model without a recipe.
    """
    if not (isinstance(rounds, int) and rounds >= 1):
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if clock not in ("wall", "process"):
        raise ValueError(f"clock must be 'wall' or 'process', got {clock!r}")
    missing = [n for n in builds if n not in recipes]
    if missing:
        raise ValueError(f"no recipe for {missing}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    timer = time.perf_counter if clock == "wall" else time.process_time
    gen = torch.Generator().manual_seed(seed + 99)
    torch.manual_seed(seed)
    models = {name: build() for name, build in builds.items()}
    opts, times = {}, {name: [] for name in models}
    for name, m in models.items():
        opts[name] = build_optimizer(m, TrainConfig(lr=1e-5, fused_optimizer=not getattr(m, "reference_optimizer",
                                                                                          False)))
        m.train()
    try:
        for r in range(rounds + 2):
            for name, m in models.items():
                rec = recipes[name]
                x, y = data.get_batch("train", rec["batch_size"], rec["seq_len"], generator=gen)
                t0 = timer()
                out = m(x, y)
                opts[name].zero_grad(set_to_none=True)
                out.loss.backward()
                clip_gradients(m, 1.0)
                opts[name].step()
                update_bias(m, rec.get("bias_update_speed", 0.0))
                if r >= 2:
                    times[name].append(timer() - t0)
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(t) for name, t in times.items()}
