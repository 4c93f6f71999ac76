"""Training loop for the tiny DeepSeek-V3: AdamW, warmup + cosine, clipping, aux-loss-free balancing.

What one optimizer step does (V3 report §4.2 for the recipe, §2.1.2 and the loss-free balancing paper,
arXiv 2408.15664 Alg. 1, for the bias update):

1. draw a batch of windows (never crossing a work boundary, :meth:`TextData.get_batch`);
2. loss = CE_main + λ·L_MTP + Σ L_bal (the model computes it, :class:`dsv3_lessons.model.deepseek_v3.DeepSeekV3`);
3. backward, clip the global gradient norm (V3: 1.0), AdamW step with the scheduled learning rate;
4. **after** the optimizer step, :func:`dsv3_lessons.model.moe.update_bias` moves every MoE layer's bias
   b_i by γ·sign(mean(c) − c_i), using the token counts c of this step: overloaded experts go down.

Design decisions
----------------
* **Weight decay only on matrices.** Tensors with ≥ 2 dims (linear weights, embedding, gate centroids)
  decay; norms' gains and any bias vectors do not. ``e_score_correction_bias`` is a *buffer*, so it is
  in no optimizer group at all: it changes only through :func:`update_bias` (no gradient, no decay).
* **AdamW β = (0.9, 0.95), weight decay 0.1, clip 1.0** as V3 §4.2, run as torch's fused AdamW kernel and
  foreach gradient clipping (same arithmetic, a handful of kernels instead of hundreds per step). V3's
  schedule is warmup then constant then cosine; we use the simpler linear warmup + cosine to
  ``min_lr_ratio·lr``.
* **γ for tiny runs.** V3 uses γ = 0.001 over 14.3 T tokens. A few hundred steps with γ = 0.001 can
  move a bias by at most 0.2, small next to the spread of sigmoid scores early in training; tiny runs
  may use a larger γ (e.g. 0.01) to see balancing act within a minute. The default stays V3's value.
* **Determinism.** Batches come from a ``torch.Generator`` seeded with ``cfg.seed``; validation uses its
  own fixed generator, so every evaluation scores the same windows. Given the model's initial weights
  (seed them before building the model), the thread count and the machine, a run is reproducible.
  With a time budget the number of steps depends on the machine, so only step-count runs are.
* **Units.** Losses in nats per token (= per character for the course corpus); tokens/s counts input
  tokens (batch_size · seq_len per step) over wall-clock training time.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from .progress import progress as progress_bar

from .data import TextData
from dsv3_lessons.model.moe import DeepseekMoE, max_violation, update_bias

__all__ = ["TrainConfig", "History", "lr_at", "build_optimizer", "clip_gradients", "evaluate", "train"]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    Attributes:
        steps: number of optimizer steps (the cosine runs over them); None = run until ``time_budget_s``.
        time_budget_s: stop after this many seconds of ``clock`` (None = no limit). With both set, training
            stops at whichever comes first and the cosine follows whichever is further along.
        batch_size, seq_len: windows per step and tokens per window.
        lr: peak learning rate; warmup_steps: linear warmup length (steps);
        min_lr_ratio: the cosine ends at ``min_lr_ratio·lr``.
        weight_decay: AdamW decoupled decay on ≥2-D tensors only; betas: AdamW (β1, β2).
        grad_clip: max global gradient L2 norm (None or 0 = no clipping; the norm is still recorded).
        bias_update_speed: γ of the aux-loss-free bias update (V3: 0.001; 0 switches balancing off).
        eval_interval: evaluate every this many steps (0 = only before and after training).
        eval_batches, eval_batch_size: validation batches per evaluation and their size
            (``eval_batch_size`` None = ``batch_size``).
        seed: seeds the batch sampler.
        num_threads: if set, ``torch.set_num_threads(num_threads)`` while training (restored after).
        clock: what ``time_budget_s``, ``step_time_s``, ``train_time_s`` and tokens/s measure: ``"wall"``
            (wall-clock seconds, the default) or ``"process"`` (CPU seconds used by this process; with one
            thread this is robust to other programs sharing the machine: ``bench/sweep_preset.py``).
        fused_optimizer: torch's fused AdamW kernel (default); False = torch's default per-tensor AdamW
            (the same update, many more kernels; kept to measure the difference).
    """

    steps: int | None = 200
    time_budget_s: float | None = None
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    bias_update_speed: float = 0.001
    eval_interval: int = 50
    eval_batches: int = 4
    eval_batch_size: int | None = None
    seed: int = 0
    num_threads: int | None = None
    #: optional MTP weight schedule (λ_start, λ_end, switch_fraction): λ = λ_start until that fraction of
    #: the run, then λ_end (V3 §4.2: 0.3 for the first 10 T of 14.8 T tokens, then 0.1 -> (0.3, 0.1, 0.68)).
    #: Sets ``model.mtp_loss_weight`` before every step; None leaves the model's λ alone.
    mtp_lambda_schedule: tuple[float, float, float] | None = None
    clock: str = "wall"
    fused_optimizer: bool = True

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(self.steps is not None or self.time_budget_s is not None,
             "TrainConfig needs steps or time_budget_s (or both)")
        need(self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
             f"steps must be a positive integer or None, got {self.steps!r}")
        need(self.time_budget_s is None or self.time_budget_s > 0,
             f"time_budget_s must be > 0 or None, got {self.time_budget_s!r}")
        for name in ("batch_size", "seq_len", "eval_batches"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, f"{name} must be a positive integer, got {v!r}")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"eval_batch_size must be a positive integer or None, got {self.eval_batch_size!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.grad_clip is None or self.grad_clip >= 0, f"grad_clip must be >= 0 or None, got {self.grad_clip}")
        need(self.bias_update_speed >= 0, f"bias_update_speed (γ) must be >= 0, got {self.bias_update_speed}")
        need(self.eval_interval >= 0, f"eval_interval must be >= 0, got {self.eval_interval}")
        need(self.mtp_lambda_schedule is None or (len(self.mtp_lambda_schedule) == 3
                                                  and min(self.mtp_lambda_schedule[:2]) >= 0
                                                  and 0 <= self.mtp_lambda_schedule[2] <= 1),
             f"mtp_lambda_schedule must be (λ_start >= 0, λ_end >= 0, switch fraction in [0, 1]) or None, "
             f"got {self.mtp_lambda_schedule!r}")
        need(all(0.0 <= b < 1.0 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}")
        need(self.clock in ("wall", "process"), f"clock must be 'wall' or 'process', got {self.clock!r}")
        need(self.num_threads is None or (isinstance(self.num_threads, int) and self.num_threads >= 1),
             f"num_threads must be a positive integer or None, got {self.num_threads!r}")


def lr_at(step: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    * ``step < warmup_steps``: lr·(step + 1)/warmup_steps (reaches lr on the last warmup step);
    * afterwards, with progress p ∈ [0, 1]: min_lr + ½(lr − min_lr)(1 + cos πp), min_lr = min_lr_ratio·lr.

    p = (step − warmup)/(steps − warmup) for step-count runs; with a time budget, ``time_fraction``
    (elapsed/budget) is used too and the larger of the two wins. p is clamped to [0, 1], so the rate
    stays at min_lr past the end.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    fractions = []
    if cfg.steps is not None:
        fractions.append((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if time_fraction is not None:
        fractions.append(time_fraction)
    p = min(1.0, max(0.0, max(fractions) if fractions else 0.0))
    min_lr = cfg.min_lr_ratio * cfg.lr
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + math.cos(math.pi * p))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: ≥2-D tensors (decay ``cfg.weight_decay``) and the rest (no decay).

    Only trainable parameters enter; buffers such as ``e_score_correction_bias`` never do.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() de-duplicates tied weights
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # Same update rule either way; the fused kernel updates all tensors in one pass instead of ~10 small
    # ops per tensor (measured ~20x faster per step than the default for-loop on 2 CPU threads for the
    # tiny model's ~130 tensors). It supports floating-point tensors on CPU (and CUDA); else: foreach.
    params = decay + no_decay
    if not cfg.fused_optimizer:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8,
                             **({"fused": True} if fused else {"foreach": True}))


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Global L2 norm of all gradients *before* clipping; rescale them to ``max_norm`` if it is exceeded.

    ``max_norm`` None or 0 leaves the gradients untouched. Raises FloatingPointError on a non-finite norm.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    norm = float(norm)
    if not math.isfinite(norm):
        raise FloatingPointError(f"gradient norm is {norm}; lower lr or check the inputs")
    return norm


def _named_moe(model: nn.Module) -> list[tuple[str, DeepseekMoE]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, DeepseekMoE)]


@torch.no_grad()
def evaluate(model: nn.Module, data: TextData, batches: int = 4, batch_size: int = 16, seq_len: int = 64,
             seed: int = 1234, return_counts: bool = False) -> float | tuple[float, torch.Tensor]:
    """Mean validation next-token loss (``main_loss``, nats per token) over ``batches`` fixed batches.

    The windows come from a generator seeded with ``seed``, so repeated calls score the same text.
    The model is put in eval mode (no balance loss, no count accumulation) and restored afterwards.

    Returns:
        the mean loss, or ``(loss, counts)`` with ``counts [n_main_moe_layers, N_r]`` the tokens each
        expert received over these batches (for MaxVio_global, LF paper §4.1) when ``return_counts``.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    moes = [m for name, m in _named_moe(model) if not name.startswith("mtp.")]
    counts = torch.zeros(len(moes), moes[0].gate.n_experts if moes else 0, dtype=torch.long)
    total = 0.0
    try:
        for _ in range(batches):
            x, y = data.get_batch("val", batch_size, seq_len, generator=gen)
            out = model(x, y, compute_mtp=False)
            total += out.main_loss.item()
            for i, m in enumerate(moes):
                counts[i] += m.last_counts
    finally:
        model.train(was_training)
    loss = total / batches
    return (loss, counts) if return_counts else loss


@dataclass
class History:
    """What :func:`train` records, one entry per optimizer step unless noted.

    Attributes:
        step: 1-based step numbers; loss, main_loss, mtp_loss, aux_loss: training losses (nats/token;
            mtp/aux are 0.0 when the model has none); lr; grad_norm (before clipping);
        tokens_per_s: per-step throughput; step_time_s: per-step wall time (s);
        expert_counts: per step a ``[n_moe_layers, N_r]`` int64 tensor of tokens per expert, rows
            named by ``moe_layer_names`` (the main model's layers, then MTP's);
        max_vio: batch MaxVio per step, averaged over the main model's MoE layers (LF paper §4.1);
        val_step, val_loss: evaluations (step 0 = before training);
        tokens_seen, train_time_s: totals; config: the :class:`TrainConfig` as a dict.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    main_loss: list[float] = field(default_factory=list)
    mtp_loss: list[float] = field(default_factory=list)
    aux_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    step_time_s: list[float] = field(default_factory=list)
    expert_counts: list[torch.Tensor] = field(default_factory=list)
    max_vio: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    moe_layer_names: list[str] = field(default_factory=list)
    tokens_seen: int = 0
    train_time_s: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return len(self.step)

    @property
    def tokens_per_second(self) -> float:
        """Overall training throughput: tokens_seen / time spent in training steps (evaluation excluded)."""
        return self.tokens_seen / self.train_time_s if self.train_time_s > 0 else 0.0

    def expert_loads(self) -> torch.Tensor:
        """``[steps, n_moe_layers, N_r]`` int64 token counts (empty tensor when the model has no MoE)."""
        if not self.expert_counts:
            return torch.zeros(0, 0, 0, dtype=torch.long)
        return torch.stack(self.expert_counts)


def train(model: nn.Module, data: TextData, cfg: TrainConfig | None = None, progress: bool = True,
          desc: str = "train") -> History:
    """Train ``model`` on ``data`` with ``cfg``; return the :class:`History`.

    Args:
        model: a :class:`dsv3_lessons.model.deepseek_v3.DeepSeekV3` (anything whose ``forward(x, y)`` returns an
            object with ``loss``/``main_loss``/``mtp_loss``/``aux_loss`` works).
        data: the batches' source; its vocabulary must fit the model's ``vocab_size``.
        cfg: hyper-parameters (default ``TrainConfig()``).
        progress: show a progress bar (:func:`dsv3_lessons.tools.progress.progress`, ``total=cfg.steps``).
        desc: the bar's label, to tell runs apart when a cell trains several ("FP32", "FP8" …).
    Raises:
        ValueError: vocabulary larger than the model's, or ``seq_len`` above ``max_position_embeddings``.
        FloatingPointError: a non-finite loss or gradient norm (names the step).
    """
    cfg = cfg or TrainConfig()
    model_cfg = getattr(model, "cfg", None)
    if model_cfg is not None:
        if data.vocab_size > model_cfg.vocab_size:
            raise ValueError(f"data has {data.vocab_size} token ids but the model's vocab_size is "
                             f"{model_cfg.vocab_size}; build the model with vocab_size >= {data.vocab_size}")
        if cfg.seq_len > model_cfg.max_position_embeddings:
            raise ValueError(f"seq_len {cfg.seq_len} exceeds max_position_embeddings "
                             f"{model_cfg.max_position_embeddings}")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = build_optimizer(model, cfg)
    moes = _named_moe(model)
    main_idx = [i for i, (name, _) in enumerate(moes) if not name.startswith("mtp.")]
    hist = History(moe_layer_names=[name for name, _ in moes], config=asdict(cfg))
    eval_bs = cfg.eval_batch_size or cfg.batch_size

    def run_eval(step: int) -> None:
        hist.val_step.append(step)
        hist.val_loss.append(evaluate(model, data, cfg.eval_batches, eval_bs, cfg.seq_len))

    model.train()
    for _, m in moes:  # counts from earlier forwards must not leak into the first bias update
        m.counts_since_update.zero_()
    previous_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if not isinstance(desc, str) or not desc:
        raise ValueError(f"desc must be a non-empty string (the progress bar's label), got {desc!r}")
    bar = progress_bar(total=cfg.steps, desc=desc, disable=not progress, leave=True)
    clock = time.perf_counter if cfg.clock == "wall" else time.process_time
    step = 0
    try:
        run_eval(0)
        t_start = clock()
        while cfg.steps is None or step < cfg.steps:
            elapsed = clock() - t_start
            if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                break
            t0 = clock()
            lr = lr_at(step, cfg, elapsed / cfg.time_budget_s if cfg.time_budget_s else None)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = data.get_batch("train", cfg.batch_size, cfg.seq_len, generator=gen)
            if cfg.mtp_lambda_schedule is not None:  # λ: λ_start, then λ_end from the switch fraction on
                lam0, lam1, frac = cfg.mtp_lambda_schedule
                done = max(step / cfg.steps if cfg.steps else 0.0,
                           elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0)
                model.mtp_loss_weight = lam0 if done < frac else lam1
            out = model(x, y)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"training loss is {out.loss.item()} at step {step + 1}")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            gnorm = clip_gradients(model, cfg.grad_clip)
            opt.step()
            counts = torch.stack([m.counts_since_update.detach().round().long() for _, m in moes]) \
                if moes else torch.zeros(0, 0, dtype=torch.long)
            update_bias(model, cfg.bias_update_speed)  # after the optimizer step (LF Alg. 1)
            dt = clock() - t0
            step += 1
            hist.step.append(step)
            hist.loss.append(out.loss.item())
            hist.main_loss.append(out.main_loss.item())
            hist.mtp_loss.append(out.mtp_loss.item() if out.mtp_loss is not None else 0.0)
            hist.aux_loss.append(out.aux_loss.item() if out.aux_loss is not None else 0.0)
            hist.lr.append(lr)
            hist.grad_norm.append(gnorm)
            hist.step_time_s.append(dt)
            hist.tokens_per_s.append(x.numel() / dt)
            hist.tokens_seen += x.numel()
            hist.train_time_s += dt
            hist.expert_counts.append(counts)
            if main_idx:
                hist.max_vio.append(sum(max_violation(counts[i]) for i in main_idx) / len(main_idx))
            bar.update(1)
            bar.set_postfix(loss=f"{hist.main_loss[-1]:.3f}", refresh=False)
            if cfg.eval_interval and step % cfg.eval_interval == 0:
                run_eval(step)
        if not hist.val_step or hist.val_step[-1] != step:
            run_eval(step)
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    return hist
