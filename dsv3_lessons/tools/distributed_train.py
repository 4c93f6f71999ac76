"""Training the tiny DeepSeek-V3 past one process: data parallel + expert parallel on ``torch.distributed``.

Run it (each process is one "node"; ``--standalone`` picks a free local rendezvous)::

    torchrun --standalone --nproc-per-node 4 -m dsv3_lessons.tools.distributed_train --steps 200 \\
        --history runs/dist4.json
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m dsv3_lessons.tools.distributed_train ...
    python -m dsv3_lessons.tools.distributed_train ...          # one process, the same code (world = 1)

From Python (a notebook or a test): :func:`run_distributed` starts ``torchrun`` as a subprocess and returns
the :class:`DistributedHistory` rank 0 wrote. A worker defined in a notebook cell cannot be started by
another process, so the worker is this module.

On several machines, start the same command on every machine; one of them (``HOST``) hosts the rendezvous::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m dsv3_lessons.tools.distributed_train --steps 200 --history dist8.json

What is split, and how (W processes, ranks r = 0 … W−1)
--------------------------------------------------------
* **Data parallel: everything except the routed experts.** Embedding, MLA, norms, dense FFN, the gate
  (centroids e_i and bias b_i), the shared expert, the MTP module and the head are *replicated*: every rank
  holds the same copy. Every rank draws the same global batch of B windows (one generator seeded with
  ``--seed``) and trains on its rows ``[r·B/W, (r+1)·B/W)``. The global loss is the mean of the ranks'
  losses, L = (1/W)·Σ_r L_r, so every rank backpropagates L_r/W and a replicated parameter's gradient is
  the sum over ranks of its copies' gradients: one ``all_reduce(SUM)`` per step on one flat buffer.
* **Expert parallel: the routed experts.** Rank r holds experts ``r·N_r/W … (r+1)·N_r/W − 1`` and no
  other. Routing groups are ranks (``n_group = W``) and node-limited routing keeps ``topk_group = M``
  of them per token (V3 §2.1.2, "Node-Limited Routing": a token reaches at most M nodes, M = 4 in V3).
  Each MoE layer sends every token once to each rank hosting one of its K_r experts, the experts there
  compute their weighted partial sum of eq. 12, and the partial sums return the same way
  (:func:`dsv3_lessons.tools.expert_parallel.dispatch` / ``local_experts`` / ``combine``, shared with
  chapter 6's one-layer demo). The two row exchanges are **differentiable** all-to-alls
  (:func:`~dsv3_lessons.tools.expert_parallel.all_to_all_rows`): the backward pass runs the same route
  in reverse, so an expert's gradient arrives complete on its owner, from every rank's tokens, and needs
  no all-reduce. Every rank must meet those backward exchanges in the same order, so the autograd graph
  must have the same shape on every rank whatever the routing: an expert with no token still runs on zero
  rows (when idle experts were skipped, one rank's backward came one exchange short and gloo paired
  messages of two different exchanges: "Received data size doesn't match expected size").

The rest of the recipe is :func:`dsv3_lessons.tools.train.train`'s, made global where it needs to be:

* **loss** terms (CE, MTP, sequence-wise balance loss) are per-rank means over equal shards, so their
  global values are the means over ranks; the sequence-wise loss (V3 eqs. 17–20) is per sequence and a
  sequence never straddles two ranks;
* **aux-loss-free bias** (LF paper Alg. 1): the per-expert counts c_i are all-reduced before
  b_i ← b_i + γ·sign(mean(c) − c_i), so every rank applies the same update the single process would;
* **gradient clipping** uses the global norm: ‖g‖² = ‖g_replicated‖² + Σ_r ‖g_experts of r‖² (the
  replicated part is the same on every rank after the all-reduce; the expert part is summed across ranks);
* **AdamW** (:func:`~dsv3_lessons.tools.train.build_optimizer`) is per parameter, so each rank steps the
  parameters it holds; the replicated copies stay equal because their inputs are equal.

Why explicit collectives and not ``DistributedDataParallel``: DDP all-reduces every parameter it wraps,
while the expert parameters here are *different* tensors on each rank and must not be averaged (DDP can
only skip them through a private helper); DDP also hides the one operation this tool exists to show.
Written out, a step is: forward (with 3 all-to-alls per MoE layer), backward (2 more per layer),
``all_reduce`` of the replicated gradients, ``all_reduce`` of the step statistics (loss terms, the
experts' squared gradient norm, the per-expert counts), clip, AdamW, bias update.

Equal to one process
--------------------
For the same seed and global batch, the per-step losses, counts, biases and weights equal
:func:`~dsv3_lessons.tools.train.train` on one process up to float32 rounding (the gradient sums are
added in another order); ``tests/test_distributed_train.py`` proves it for 2 and 4 gloo processes.
How close depends on the recipe, because AdamW magnifies rounding wherever a gradient nearly cancels:
with the default recipe the losses agree to about 1e-6 over 20 steps and every count and bias is equal;
at lr 1e-2 after 3 warm-up steps even the single process's own two implementations (its fast and its
reference paths, :func:`~dsv3_lessons.model.deepseek_v3.use_reference_paths`) end 0.17 nats apart after
20 steps, and the distributed run drifts by the same kind of amount.
Every rank builds the full model from the seed (fine for the tiny model, not for V3) and keeps only its
experts; rank 0's replicated tensors are broadcast once at start, as DDP does.

Bytes (per rank, per step; :data:`BYTE_KINDS`)
----------------------------------------------
``dispatch``: rows this rank sends to *other* ranks, each ``d + 2·K_r`` elements (x, the K_r weights, the
K_r local ids); ``combine``: partial sums it sends back, ``d`` elements a row; ``dispatch_grad`` and
``combine_grad``: the gradients of those rows in the backward pass (same sizes, reverse direction);
``counts``: the int64 row counts exchanged before each dispatch; ``all_reduce``: the payload this rank
hands to ``all_reduce`` (a ring all-reduce moves about 2·(W−1)/W of it per rank over the wire). Elements
are float32 (4 bytes); V3 dispatches in FP8 and combines in BF16 (§3.3), so its byte counts scale by the
element size. In V3 the all-to-all is overlapped with computation by DualPipe (§3.2.1) and runs on custom
kernels over IB and NVLink (§3.2.2); here it is a plain blocking collective: the point is the data flow.

Processes, failures, timeouts
-----------------------------
gloo on CPU; ``--backend auto`` takes nccl (one GPU per process) when CUDA is there, never required.
Every collective has a timeout: ``--startup-timeout-s`` for the rendezvous and rank 0's corpus preparation
(``init_process_group``), ``--collective-timeout-s`` for each collective of training (a process group made
for it with ``new_group``). A rank that crashes or hangs makes the others fail with a timeout instead of
waiting forever, and each rank re-raises with its rank, step and a hint. ``torchrun`` then stops every
process and reports the first failure (:func:`~torch.distributed.elastic.multiprocessing.errors.record`
writes each rank's traceback); :func:`run_distributed` turns that into a :class:`DistributedTrainError`
naming the rank and its error, and stops every process if the run exceeds its own ``timeout_s``. A
process whose ``torchrun`` agent disappears ends itself (a watchdog thread). ``--inject fail|hang`` makes
one rank fail or hang on purpose (the tests use it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from dsv3_lessons.model.config import DeepseekV3Config, tiny
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3
from dsv3_lessons.model.moe import DeepseekMoE, max_violation, update_bias

from .data import TextData, load_corpus
from .expert_parallel import combine, dispatch, local_experts
from .progress import progress as progress_bar
from .train import TrainConfig, build_optimizer, lr_at

__all__ = ["DistTrainArgs", "DistributedHistory", "DistributedTrainError", "ExpertParallelMoE", "BYTE_KINDS",
           "distributed_config", "build_model", "load_data", "shard_experts", "train_rank", "run_distributed",
           "load_trained", "main"]

#: the kinds of traffic counted per rank and step (see the module docstring)
BYTE_KINDS = ("dispatch", "combine", "dispatch_grad", "combine_grad", "counts", "all_reduce")
_MODULE = "dsv3_lessons.tools.distributed_train"


class DistributedTrainError(RuntimeError):
    """A distributed run failed or timed out.

    Attributes:
        returncode: the launcher's exit code (None when it was killed on timeout);
        rank: the rank of the first failure torchrun reported (None if unknown);
        output: everything the processes printed (stdout and stderr together).
    """

    def __init__(self, message: str, returncode: int | None = None, rank: int | None = None, output: str = ""):
        super().__init__(message)
        self.returncode, self.rank, self.output = returncode, rank, output


# ----------------------------------------------------------------------------------- arguments
@dataclass
class DistTrainArgs:
    """Everything a run needs; the command-line flags are these names with ``-`` for ``_``.

    Recipe fields mirror :class:`~dsv3_lessons.tools.train.TrainConfig` (same defaults, same meaning);
    ``batch_size`` is the **global** batch (windows per step over all ranks).
    Model fields: ``n_routed_experts`` N_r (divisible by the world size W), ``num_experts_per_tok`` K_r,
    ``node_limit`` M (= ``topk_group``; values ≥ W mean no limit), ``mtp_depth`` D, ``aux_loss_alpha`` α,
    ``mtp_loss_weight`` λ. The model is :func:`~dsv3_lessons.model.config.tiny` with these fields and
    ``n_group = W`` (:func:`distributed_config`).
    Process fields: ``corpus`` (a UTF-8 text file; None = the course corpus), ``history`` (JSON path rank 0
    writes), ``save_model`` (rank 0 saves the full trained model there, :func:`load_trained`),
    ``backend`` (``auto``/``gloo``/``nccl``), ``collective_timeout_s`` (seconds any collective of training
    may wait), ``startup_timeout_s`` (seconds for the rendezvous and for rank 0 to prepare and send the
    corpus; a first run downloads it), ``threads`` (torch threads per process), ``quiet`` (no progress bar or summary),
    ``inject`` (``none``/``fail``/``hang``: make rank ``inject_rank`` fail or hang at step ``inject_step``).
    """

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bias_update_speed: float = 0.001
    eval_interval: int = 0
    eval_batches: int = 2
    eval_batch_size: int = 0
    seed: int = 0
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    node_limit: int = 2
    mtp_depth: int = 1
    aux_loss_alpha: float = 1e-4
    mtp_loss_weight: float = 0.3
    corpus: str = ""
    history: str = ""
    save_model: str = ""
    backend: str = "auto"
    collective_timeout_s: float = 120.0
    startup_timeout_s: float = 600.0
    threads: int = 1
    quiet: bool = False
    inject: str = "none"
    inject_rank: int = 0
    inject_step: int = 1

    HELP: ClassVar[dict[str, str]] = {
        "steps": "optimizer steps", "batch_size": "GLOBAL windows per step (divisible by the world size)",
        "seq_len": "tokens per window", "eval_interval": "evaluate every this many steps (0 = start and end)",
        "eval_batch_size": "validation windows per batch (0 = batch_size)",
        "seed": "seeds the model's weights and the batch sampler",
        "n_routed_experts": "N_r, divisible by the world size", "num_experts_per_tok": "K_r",
        "node_limit": "M = topk_group: ranks a token may reach", "mtp_depth": "D MTP modules (0 = none)",
        "corpus": "UTF-8 text file (default: the course corpus)", "history": "JSON path rank 0 writes",
        "save_model": "path for the trained model (rank 0)", "backend": "auto | gloo | nccl",
        "collective_timeout_s": "seconds a collective of training may wait before the run fails",
        "startup_timeout_s": "seconds for the rendezvous and rank 0's corpus preparation",
        "threads": "torch threads per process", "quiet": "no progress bar, no summary",
        "inject": "none | fail | hang (tests the failure path)",
    }

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of this run (validates the recipe fields; errors name the field)."""
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=self.lr,
                           warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio,
                           weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                           bias_update_speed=self.bias_update_speed, eval_interval=self.eval_interval,
                           eval_batches=self.eval_batches, eval_batch_size=self.eval_batch_size or None,
                           seed=self.seed)

    def validate(self, world_size: int, check_files: bool = True) -> "DistTrainArgs":
        """Check the arguments against ``world_size`` processes; return ``self``.

        ``check_files``: also check that ``corpus`` exists (only rank 0 reads it, so other machines need not
        have it).

        Raises:
            ValueError (:class:`~dsv3_lessons.model.config.ConfigError` for model fields): the message names
            the field, its value and what was expected.
        """
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(isinstance(world_size, int) and world_size >= 1,
             f"the world size (nproc) must be a positive integer, got {world_size!r}")
        tc = self.train_config()
        need(tc.batch_size % world_size == 0,
             f"batch_size ({tc.batch_size}) must be divisible by the number of processes ({world_size}): "
             f"each rank trains on batch_size / world rows of the global batch")
        eval_bs = tc.eval_batch_size or tc.batch_size
        need(eval_bs % world_size == 0,
             f"eval_batch_size ({eval_bs}) must be divisible by the number of processes ({world_size})")
        distributed_config(96, world_size, self.n_routed_experts, self.num_experts_per_tok, self.node_limit,
                           self.mtp_depth)
        for name in ("aux_loss_alpha", "mtp_loss_weight"):
            v = getattr(self, name)
            need(math.isfinite(v) and v >= 0, f"{name} must be a finite number >= 0, got {v!r}")
        need(self.backend in ("auto", "gloo", "nccl"),
             f"backend must be 'auto', 'gloo' or 'nccl', got {self.backend!r}")
        need(self.backend != "nccl" or torch.cuda.is_available(),
             "backend 'nccl' needs CUDA, and torch.cuda.is_available() is False here; use 'gloo' or 'auto'")
        for name in ("collective_timeout_s", "startup_timeout_s"):
            need(getattr(self, name) > 0, f"{name} must be > 0 seconds, got {getattr(self, name)}")
        need(isinstance(self.threads, int) and self.threads >= 1,
             f"threads must be a positive integer, got {self.threads!r}")
        need(self.inject in ("none", "fail", "hang"), f"inject must be 'none', 'fail' or 'hang', got {self.inject!r}")
        need(0 <= self.inject_rank < world_size,
             f"inject_rank must be in [0, {world_size}) for {world_size} processes, got {self.inject_rank}")
        need(not check_files or self.corpus == "" or Path(self.corpus).is_file(),
             f"corpus must be a text file, got {self.corpus!r}")
        return self

    # ---- command line
    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The command-line parser: one ``--flag`` per field, typed by its default."""
        p = argparse.ArgumentParser(prog=f"torchrun --nproc-per-node N -m {_MODULE}",
                                    description="Train the tiny DeepSeek-V3 with data + expert parallelism.")
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            help_ = cls.HELP.get(f.name, f"default {f.default!r}")
            if isinstance(f.default, bool):
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
            else:
                p.add_argument(flag, type=type(f.default), default=f.default, help=help_)
        return p

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None = None) -> "DistTrainArgs":
        return cls(**vars(cls.parser().parse_args(argv)))

    def to_argv(self) -> list[str]:
        """The flags that reproduce these arguments (only the non-default ones)."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
        return out


def distributed_config(vocab_size: int, world_size: int, n_routed_experts: int = 8, num_experts_per_tok: int = 2,
                       node_limit: int = 2, mtp_depth: int = 1, **overrides: Any) -> DeepseekV3Config:
    """The tiny config for ``world_size`` processes: routing groups = ranks (V3 §2.1.2 node-limited routing).

    ``n_group = world_size``, ``topk_group = min(node_limit, world_size)`` (M ≥ W is no limit), the rest from
    :func:`~dsv3_lessons.model.config.tiny` (with ``overrides``). A single process with this config computes
    the same function as W processes: it is the reference the distributed run must equal.

    Raises:
        ValueError: ``n_routed_experts`` not divisible by ``world_size``, fewer than 2 experts per rank
            (the group score sums a group's top 2), ``node_limit`` < 1, or K_r above the experts M ranks hold;
            :class:`~dsv3_lessons.model.config.ConfigError` for any other invalid field.
    """
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if not (isinstance(n_routed_experts, int) and n_routed_experts >= 1) or n_routed_experts % world_size:
        raise ValueError(f"n_routed_experts ({n_routed_experts}) must be a positive multiple of the number of "
                         f"processes ({world_size}): each rank holds n_routed_experts / world of the experts")
    per_rank = n_routed_experts // world_size
    if world_size > 1 and per_rank < 2:
        raise ValueError(f"n_routed_experts ({n_routed_experts}) over {world_size} processes leaves {per_rank} "
                         f"expert per rank; node-limited routing scores a rank by its two best experts, so each "
                         f"rank needs >= 2: use n_routed_experts >= {2 * world_size} or fewer processes")
    if not (isinstance(node_limit, int) and node_limit >= 1):
        raise ValueError(f"node_limit (M, ranks a token may reach) must be a positive integer, got {node_limit!r}")
    m = min(node_limit, world_size)
    if not (isinstance(num_experts_per_tok, int) and 1 <= num_experts_per_tok <= m * per_rank):
        raise ValueError(f"num_experts_per_tok ({num_experts_per_tok}) must be between 1 and the experts on "
                         f"min(node_limit, world) = {m} ranks, {m}*{per_rank} = {m * per_rank}")
    return tiny(vocab_size, n_routed_experts=n_routed_experts, num_experts_per_tok=num_experts_per_tok,
                n_group=world_size, topk_group=m, num_nextn_predict_layers=mtp_depth, **overrides)


def build_model(vocab_size: int, world_size: int, args: DistTrainArgs) -> DeepSeekV3:
    """The full single-process model of a run: seeded with ``args.seed`` and built from :func:`distributed_config`.

    Every rank builds it and then keeps only its experts (:func:`shard_experts`); a test builds it to train
    the single-process reference.
    """
    cfg = distributed_config(vocab_size, world_size, args.n_routed_experts, args.num_experts_per_tok,
                             args.node_limit, args.mtp_depth)
    torch.manual_seed(args.seed)
    return DeepSeekV3(cfg, aux_loss_alpha=args.aux_loss_alpha, mtp_loss_weight=args.mtp_loss_weight)


def load_data(corpus: str = "") -> TextData:
    """The run's :class:`TextData`: ``corpus`` (a UTF-8 file, last 10 % held out) or the course corpus."""
    return TextData.from_corpus(load_corpus(corpus or None))


# ----------------------------------------------------------------------------------- the expert-parallel layer
class ExpertParallelMoE(DeepseekMoE):
    """A :class:`~dsv3_lessons.model.moe.DeepseekMoE` whose routed experts live on their ranks.

    Built from the full layer ``moe``: it keeps the gate and the shared expert (replicated) and only the
    experts ``rank·E … (rank+1)·E − 1`` (E = N_r / world), stored under their global ids so the parameter
    names stay ``experts.{i}.gate_proj.weight`` as in the checkpoint. Everything except
    :meth:`routed` is inherited: gate, counts, the sequence-wise loss, the shared expert.

    ``forward(x [batch, seq, d]) -> [batch, seq, d]`` must be called by every rank of ``group`` together
    (it runs three collectives, two of them differentiable). While training it adds its traffic of the
    forward and of the backward that follows to :attr:`traffic` (bytes per :data:`BYTE_KINDS`, this rank's
    sends only) and to :attr:`assignments_in`, the (token, expert) pairs its experts processed.
    """

    def __init__(self, moe: DeepseekMoE, rank: int, world: int, group: dist.ProcessGroup | None = None):
        nn.Module.__init__(self)
        cfg = moe.cfg
        if cfg.n_routed_experts % world or cfg.n_group != world:
            raise ValueError(f"expert parallelism needs n_group == world ({world}) and n_routed_experts divisible "
                             f"by it, got n_group={cfg.n_group}, n_routed_experts={cfg.n_routed_experts}")
        self.cfg, self.aux_loss_alpha, self.impl = cfg, moe.aux_loss_alpha, "expert_parallel"
        self.rank, self.world, self.group = rank, world, group
        self.experts_per_rank = cfg.n_routed_experts // world
        first = rank * self.experts_per_rank
        self.experts = nn.ModuleDict({str(e): moe.experts[e] for e in range(first, first + self.experts_per_rank)})
        self.gate = moe.gate
        self.shared_experts = moe.shared_experts
        self.register_buffer("counts_since_update", moe.counts_since_update.clone(), persistent=False)
        self.last_counts, self.aux_loss = moe.last_counts, moe.aux_loss
        self.reset_traffic()

    def reset_traffic(self) -> None:
        self.traffic = dict.fromkeys(BYTE_KINDS, 0)
        self.assignments_in = 0

    def routed(self, flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
               counts: torch.Tensor) -> torch.Tensor:
        """Dispatch to the experts' ranks, run this rank's experts, combine: ``flat [n, d] -> [n, d]``."""
        d, k = flat.shape[1], indices.shape[1]
        sent = dispatch(flat, weights, indices, self.experts_per_rank, self.world, self.group)
        partial = local_experts(sent.rows_in, list(self.experts.values()), d, k)
        out = combine(partial, sent, flat.shape[0], self.group)
        if self.training:
            elem = flat.element_size()
            rows_out = int(sent.send_counts.sum() - sent.send_counts[self.rank])   # rows to other ranks
            rows_back = int(sent.recv_counts.sum() - sent.recv_counts[self.rank])  # partial sums to others
            self.traffic["dispatch"] += rows_out * (d + 2 * k) * elem
            self.traffic["combine"] += rows_back * d * elem
            self.traffic["counts"] += (self.world - 1) * sent.send_counts.element_size()
            if torch.is_grad_enabled():  # the backward sends each row's gradient back along its route
                self.traffic["dispatch_grad"] += rows_back * (d + 2 * k) * elem
                self.traffic["combine_grad"] += rows_out * d * elem
            self.assignments_in += sent.assignments_in
        return out


def shard_experts(model: nn.Module, rank: int, world: int, group: dist.ProcessGroup | None = None) -> nn.Module:
    """Replace every :class:`DeepseekMoE` block FFN of ``model`` (main layers and MTP) by an
    :class:`ExpertParallelMoE` keeping only this rank's experts; returns ``model``."""
    blocks = list(getattr(model, "layers", [])) + list(getattr(model, "mtp", []))
    for block in blocks:
        if isinstance(block.mlp, DeepseekMoE) and not isinstance(block.mlp, ExpertParallelMoE):
            block.mlp = ExpertParallelMoE(block.mlp, rank, world, group)
    return model


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(replicated, sharded): the routed experts' parameters are sharded, every other one is replicated."""
    sharded = [p for m in model.modules() if isinstance(m, ExpertParallelMoE) for p in m.experts.parameters()]
    ids = {id(p) for p in sharded}
    return [p for p in model.parameters() if id(p) not in ids], sharded


# ----------------------------------------------------------------------------------- history
@dataclass
class DistributedHistory:
    """What rank 0 writes (JSON) after a run; lists are per optimizer step unless noted.

    Attributes:
        world_size, backend, device; args: the :class:`DistTrainArgs` as a dict; model_config: the
            ``config.json`` dict; moe_layer_names: rows of the per-layer fields (main layers, then MTP's).
        step (1-based); loss, main_loss, mtp_loss, aux_loss: global-batch losses (nats/token); lr;
            grad_norm: global L2 norm before clipping; max_vio: batch MaxVio over the main MoE layers.
        expert_counts: ``[steps][layers][N_r]`` tokens routed to each expert over the global batch.
        rank_load: ``[steps][world][layers]`` (token, expert) pairs each rank's experts processed, as
            counted on that rank from the rows it received.
        bytes: ``{kind: [steps][world]}`` bytes each rank sent, per kind of :data:`BYTE_KINDS`.
        step_time_s: ``[steps][world]`` wall seconds per step on each rank.
        val_step, val_loss: validation (main next-token loss, global) at these steps (0 = before training).
        final_bias: ``[layers][N_r]`` the balancing biases b after the last step.
        setup_bytes: ``[world]`` bytes of the one-time broadcast of rank 0's replicated tensors.
        train_time_s: rank 0's wall time for all steps; tokens_seen: input tokens over all ranks.
    """

    world_size: int
    backend: str
    device: str
    args: dict
    model_config: dict
    moe_layer_names: list[str]
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    main_loss: list[float] = field(default_factory=list)
    mtp_loss: list[float] = field(default_factory=list)
    aux_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    max_vio: list[float] = field(default_factory=list)
    expert_counts: list = field(default_factory=list)
    rank_load: list = field(default_factory=list)
    bytes: dict = field(default_factory=dict)
    step_time_s: list = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    final_bias: list = field(default_factory=list)
    setup_bytes: list[int] = field(default_factory=list)
    train_time_s: float = 0.0
    tokens_seen: int = 0

    def expert_loads(self) -> torch.Tensor:
        """``[steps, layers, N_r]`` int64 tokens per expert (global batch)."""
        return torch.tensor(self.expert_counts, dtype=torch.long)

    def rank_loads(self) -> torch.Tensor:
        """``[steps, world, layers]`` int64 (token, expert) pairs processed on each rank."""
        return torch.tensor(self.rank_load, dtype=torch.long)

    def bytes_per_step(self, kinds: Sequence[str] = BYTE_KINDS) -> torch.Tensor:
        """``[steps, world]`` int64 bytes each rank sent per step, summed over ``kinds``.

        Raises ValueError for a kind not in :data:`BYTE_KINDS`."""
        bad = [k for k in kinds if k not in BYTE_KINDS]
        if bad:
            raise ValueError(f"kinds must be among {BYTE_KINDS}, got {bad}")
        return sum((torch.tensor(self.bytes[k], dtype=torch.long) for k in kinds),
                   torch.zeros(len(self.step), self.world_size, dtype=torch.long))

    def to_json(self, path: str | Path) -> Path:
        """Write as JSON (atomically: a temporary file renamed into place); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "DistributedHistory":
        return cls(**json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------------- one rank's training
def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s rows ``[r·B/W, (r+1)·B/W)`` of a global batch ``[B, ...]``."""
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def _flat_collective(tensors: list[torch.Tensor], collective, **kwargs) -> int:
    """Run ``collective`` (``dist.all_reduce`` or ``dist.broadcast``) on ``tensors`` in place through one
    flat buffer: one message instead of one per tensor. Returns the buffer's bytes."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    collective(flat, **kwargs)
    with torch.no_grad():
        for t, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(chunk.view_as(t))
    return flat.numel() * flat.element_size()


@torch.no_grad()
def _evaluate(model: nn.Module, data: TextData, batches: int, batch_size: int, seq_len: int, rank: int,
              world: int, device: torch.device, group: dist.ProcessGroup | None, seed: int = 1234) -> float:
    """Global mean validation loss on the windows :func:`~dsv3_lessons.tools.train.evaluate` scores."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for _ in range(batches):
            x, y = data.get_batch("val", batch_size, seq_len, generator=gen)
            out = model(_shard(x, rank, world).to(device), _shard(y, rank, world).to(device), compute_mtp=False)
            total += out.main_loss.double()
        dist.all_reduce(total, group=group)
    finally:
        model.train()
    return float(total) / (batches * world)


def _explain(exc: BaseException, rank: int, world: int, where: str) -> RuntimeError:
    text = f"{type(exc).__name__}: {exc}"
    hint = ""
    if re.search(r"timed? ?out|timeout", text, re.IGNORECASE):
        hint = (" -- another rank stopped answering for longer than the timeout (--collective-timeout-s in "
                "training, --startup-timeout-s while starting): it crashed, hung or is much slower; look for "
                "that rank's own error")
    elif re.search(r"connection (closed|reset)|broken pipe", text, re.IGNORECASE):
        hint = " -- another rank exited; look for that rank's own error"
    return RuntimeError(f"rank {rank} of {world} failed {where}: {text}{hint}")


def train_rank(args: DistTrainArgs, rank: int, world: int,
               device: torch.device | str = "cpu") -> DistributedHistory | None:
    """One rank's part of a run, inside an initialised default process group; rank 0 returns the history.

    Every rank must call it with the same ``args``. The corpus travels on the default group (whose timeout
    covers start-up); training runs on a new group whose collectives time out after
    ``args.collective_timeout_s``. Rank 0 also writes ``args.history`` and ``args.save_model`` when set.
    Raises RuntimeError naming the rank and step when anything fails.
    """
    device = torch.device(device)
    tc = args.train_config()
    step = 0
    try:
        # data: rank 0 reads and tokenises once (and prepares the corpus if needed), the others receive it
        box = [load_data(args.corpus) if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        data = box[0]
        group = dist.new_group(timeout=timedelta(seconds=args.collective_timeout_s))  # training's collectives
        model = build_model(data.vocab_size, world, args)
        shard_experts(model, rank, world, group).to(device)
        moes = [(name, m) for name, m in model.named_modules() if isinstance(m, DeepseekMoE)]
        main_idx = [i for i, (name, _) in enumerate(moes) if not name.startswith("mtp.")]
        replicated, sharded = _split_parameters(model)
        # rank 0's replicated tensors (and biases) become everyone's, as DDP does
        setup_bytes = _flat_collective([p.data for p in replicated] + [m.gate.e_score_correction_bias for _, m in moes],
                                       dist.broadcast, src=0, group=group)
        setup_bytes = setup_bytes if rank == 0 else 0
        opt = build_optimizer(model, tc)
        gen = torch.Generator().manual_seed(tc.seed)
        eval_bs = tc.eval_batch_size or tc.batch_size
        hist = DistributedHistory(world, dist.get_backend(group), str(device), asdict(args), model.cfg.to_dict(),
                                  [name for name, _ in moes])
        mine = {"bytes": [], "rank_load": [], "step_time_s": []}   # this rank's own numbers, gathered at the end

        def run_eval(at: int) -> None:
            hist.val_step.append(at)
            hist.val_loss.append(_evaluate(model, data, tc.eval_batches, eval_bs, tc.seq_len, rank, world, device,
                                           group))

        model.train()
        for _, m in moes:
            m.counts_since_update.zero_()
        bar = progress_bar(total=tc.steps, desc=f"{world} processes", leave=True,
                           disable=rank != 0 or args.quiet or not sys.stderr.isatty())
        run_eval(0)
        t_start = time.perf_counter()
        for step in range(1, tc.steps + 1):
            if args.inject != "none" and rank == args.inject_rank and step == args.inject_step:
                if args.inject == "fail":
                    raise RuntimeError(f"injected failure (--inject fail) on rank {rank} at step {step}")
                time.sleep(10 ** 6)  # --inject hang: the others must time out, not wait forever
            t0 = time.perf_counter()
            for _, m in moes:
                m.reset_traffic()
            lr = lr_at(step - 1, tc)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = data.get_batch("train", tc.batch_size, tc.seq_len, generator=gen)   # the GLOBAL batch
            x, y = _shard(x, rank, world).to(device), _shard(y, rank, world).to(device)
            out = model(x, y)
            opt.zero_grad(set_to_none=True)
            (out.loss / world).backward()          # L = (1/W) Σ_r L_r
            missing = [name for name, p in model.named_parameters() if p.grad is None]
            if missing:  # every parameter takes part in every step (local_experts runs idle experts too)
                raise RuntimeError(f"no gradient for {missing[:3]}: the autograd graph is not the same on "
                                   f"every rank")
            # (1) replicated gradients: sum over ranks (the experts' gradients are already complete)
            grads = [p.grad for p in replicated]
            reduce_bytes = _flat_collective(grads, dist.all_reduce, group=group)
            # (2) step statistics: loss terms, the experts' squared gradient norm, per-expert counts
            terms = [out.loss, out.main_loss, out.mtp_loss, out.aux_loss]
            terms = torch.stack([t.detach().float() if t is not None else torch.zeros((), device=device)
                                 for t in terms])
            expert_sq = torch.stack([torch.linalg.vector_norm(p.grad) for p in sharded]).pow(2).sum()[None] \
                if sharded else torch.zeros(1, device=device)
            counts = torch.stack([m.counts_since_update for _, m in moes]) if moes else torch.zeros(0, device=device)
            stats = torch.cat([terms, expert_sq, counts.reshape(-1)])
            dist.all_reduce(stats, group=group)
            terms = (stats[:4] / world).tolist()
            counts = stats[5:].view_as(counts)
            # (3) global norm, clip, AdamW, bias update with the global counts (LF paper Alg. 1)
            rep_sq = torch.stack([torch.linalg.vector_norm(g) for g in grads]).pow(2).sum()
            gnorm = float(torch.sqrt(rep_sq + stats[4]))
            if not (math.isfinite(gnorm) and math.isfinite(terms[0])):
                raise FloatingPointError(f"loss {terms[0]} / gradient norm {gnorm} not finite at step {step}")
            if tc.grad_clip:
                coef = min(1.0, tc.grad_clip / (gnorm + 1e-6))   # torch.nn.utils.clip_grad_norm_'s rule
                torch._foreach_mul_([p.grad for p in replicated + sharded], coef)
            opt.step()
            for (_, m), c in zip(moes, counts):
                m.counts_since_update.copy_(c)
            counts_long = counts.round().long().cpu()
            update_bias(model, tc.bias_update_speed)
            dt = time.perf_counter() - t0
            # history
            hist.step.append(step)
            hist.loss.append(terms[0]); hist.main_loss.append(terms[1])
            hist.mtp_loss.append(terms[2]); hist.aux_loss.append(terms[3])
            hist.lr.append(lr); hist.grad_norm.append(gnorm)
            hist.expert_counts.append(counts_long.tolist())
            if main_idx:
                hist.max_vio.append(sum(max_violation(counts_long[i]) for i in main_idx) / len(main_idx))
            hist.tokens_seen += tc.batch_size * tc.seq_len
            traffic = {kind: sum(m.traffic[kind] for _, m in moes) for kind in BYTE_KINDS}
            traffic["all_reduce"] = reduce_bytes + stats.numel() * stats.element_size()
            mine["bytes"].append(traffic)
            mine["rank_load"].append([m.assignments_in for _, m in moes])
            mine["step_time_s"].append(dt)
            bar.update(1)
            bar.set_postfix(loss=f"{terms[1]:.3f}", refresh=False)
            if tc.eval_interval and step % tc.eval_interval == 0:
                run_eval(step)
        hist.train_time_s = time.perf_counter() - t_start
        bar.close()
        step = tc.steps + 1  # past the loop: failures below are "after training"
        if hist.val_step[-1] != tc.steps:
            run_eval(tc.steps)
        everyone = [None] * world if rank == 0 else None
        experts = {k: v.cpu() for k, v in model.state_dict().items() if ".experts." in k and ".mlp." in k}
        dist.gather_object({**mine, "setup_bytes": setup_bytes, "experts": experts if args.save_model else None},
                           everyone, dst=0, group=group)
    except Exception as exc:  # noqa: BLE001 -- re-raised with the rank and the step
        where = f"at step {step}" if 1 <= step <= tc.steps else ("before training" if step == 0 else "after training")
        raise _explain(exc, rank, world, where) from exc
    if rank != 0:
        return None
    hist.rank_load = [[everyone[r]["rank_load"][s] for r in range(world)] for s in range(tc.steps)]
    hist.step_time_s = [[everyone[r]["step_time_s"][s] for r in range(world)] for s in range(tc.steps)]
    hist.bytes = {kind: [[everyone[r]["bytes"][s][kind] for r in range(world)] for s in range(tc.steps)]
                  for kind in BYTE_KINDS}
    hist.setup_bytes = [everyone[r]["setup_bytes"] for r in range(world)]
    hist.final_bias = [m.gate.e_score_correction_bias.cpu().tolist() for _, m in moes]
    if args.history:
        hist.to_json(args.history)
    if args.save_model:
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        for r in range(world):
            state.update(everyone[r]["experts"])
        Path(args.save_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": model.cfg.to_dict(), "aux_loss_alpha": args.aux_loss_alpha,
                    "mtp_loss_weight": args.mtp_loss_weight, "state_dict": state}, args.save_model)
    return hist


def load_trained(path: str | Path) -> DeepSeekV3:
    """The single-process :class:`~dsv3_lessons.model.deepseek_v3.DeepSeekV3` saved by ``--save-model``
    (all experts gathered; the names are the model's own, so ``load_state_dict`` is strict)."""
    blob = torch.load(path, weights_only=False)
    cfg = DeepseekV3Config.from_dict(blob["config"])
    model = DeepSeekV3(cfg, aux_loss_alpha=blob["aux_loss_alpha"], mtp_loss_weight=blob["mtp_loss_weight"])
    model.load_state_dict(blob["state_dict"], strict=True)
    return model


# ----------------------------------------------------------------------------------- entry point
def _pick_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _exit_if_orphaned(parent: int, every_s: float = 1.0) -> None:
    """Watchdog thread: end this process when its parent (torchrun's agent) is gone."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(70)


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of every process (``torchrun … -m dsv3_lessons.tools.distributed_train``).

    Reads the rank and world size from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    without them it runs as one process. Validates the arguments before joining the group (a bad argument
    fails at once on every rank, naming the field). Returns 0.
    """
    args = DistTrainArgs.from_argv(argv)
    if "LOCAL_RANK" in os.environ:  # started by torchrun's agent: never outlive it
        threading.Thread(target=_exit_if_orphaned, args=(os.getppid(),), daemon=True).start()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    args.validate(world, check_files=rank == 0)
    backend = _pick_backend(args.backend)
    torch.set_num_threads(args.threads)
    timeout = timedelta(seconds=args.startup_timeout_s)  # training makes its own group with the shorter one
    device = torch.device("cpu")
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"backend 'nccl' needs one GPU per process: LOCAL_RANK is {local_rank} but this "
                             f"machine has {torch.cuda.device_count()} GPU(s); use fewer processes or --backend gloo")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    with tempfile.TemporaryDirectory(prefix="dsv3_dist_") as tmp:
        if "MASTER_ADDR" not in os.environ:  # plain `python -m`: a one-process group on a private file
            if world != 1:
                raise ValueError(f"WORLD_SIZE is {world} but no MASTER_ADDR is set: start the processes with torchrun")
            kwargs.update(init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1)
        dist.init_process_group(backend, timeout=timeout, **kwargs)
        try:
            hist = train_rank(args, rank, world, device)
            dist.barrier()  # every rank done (rank 0 has written its files) before any tears the group down
        finally:
            dist.destroy_process_group()
    if hist is not None and not args.quiet:
        per_step = hist.bytes_per_step()
        print(f"{world} process(es), {backend}: {len(hist.step)} steps in {hist.train_time_s:.1f} s, "
              f"loss {hist.loss[0]:.4f} -> {hist.loss[-1]:.4f}, val {hist.val_loss[-1]:.4f}, "
              f"bytes sent per step per rank (mean) {per_step.float().mean():.0f}"
              + (f"; history in {args.history}" if args.history else ""))
    return 0


# ----------------------------------------------------------------------------------- launcher
#: words of an error that a rank raises only because another rank died (its peer's socket closed, a collective
#: timed out); such a rank is not the cause of the failure even when torchrun observed it first
_KNOCK_ON = ("connection closed by peer", "connection reset", "broken pipe", "distbackenderror", "gloo",
             "timed out", "timeout", "socket", "sigterm", "signal")


def _failure_blocks(text: str) -> list[tuple[int | None, str, bool]]:
    """(rank, last error line, whether that line is an exception) of each ``[i]:`` entry of one of torchrun's
    failure sections (a rank killed by a signal has no traceback: its last line is then some other field)."""
    found = []
    for entry in re.split(r"^\s*\[\d+\]:\s*$", text, flags=re.M)[1:]:
        entry = entry.split("=" * 20, 1)[0].split("-" * 20, 1)[0]
        m = re.search(r"rank\s*:\s*(\d+)", entry)
        lines = [ln.strip() for ln in entry.splitlines() if ln.strip()]
        fields = ("time", "host", "rank", "exitcode", "error_file", "traceback")          # torchrun's own fields
        tb = [ln for ln in lines if re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b|^[A-Za-z_.]+: ", ln)
              and not ln.startswith(fields)]
        found.append((int(m.group(1)) if m else None, tb[-1] if tb else (lines[-1] if lines else ""), bool(tb)))
    return found


def _root_cause(output: str) -> tuple[int | None, str]:
    """The failing rank and its last traceback line, from torchrun's summary (None, '' if absent).

    torchrun names as root cause the failure it observed first; when that rank only failed because another one
    died (a collective whose peer vanished), the other rank's own error is the cause and is returned instead."""
    parts = output.split("Root Cause (first observed failure):", 1)
    if len(parts) < 2:
        return None, ""
    root = _failure_blocks(parts[1])
    others = _failure_blocks(parts[0].rsplit("Failures:", 1)[1]) if "Failures:" in parts[0] else []
    if not root:
        return None, ""
    rank, err, _ = root[0]
    if any(word in err.lower() for word in _KNOCK_ON):
        for other_rank, other_err, raised in others:
            if raised and not any(word in other_err.lower() for word in _KNOCK_ON):
                return other_rank, other_err
    return rank, err


def run_distributed(nproc: int = 2, *, timeout_s: float = 600.0, history_path: str | Path | None = None,
                    **kwargs: Any) -> DistributedHistory:
    """Train with ``nproc`` processes started by ``torchrun`` (``python -m torch.distributed.run``); return
    the history rank 0 wrote.

    Args:
        nproc: processes on this machine (world size).
        timeout_s: wall-clock limit for the whole run; past it every process is killed.
        history_path: where the JSON history goes (default: a temporary file, removed after reading).
        **kwargs: fields of :class:`DistTrainArgs` (``steps=20``, ``batch_size=8``, ``n_routed_experts=8`` …).
    The rendezvous is ``--standalone`` (a free local port, so parallel runs cannot collide). Each process
    gets ``OMP_NUM_THREADS=1`` and this package on ``PYTHONPATH``; the run is quiet (no progress bar).
    Raises:
        ValueError: a bad argument (checked here, before any process starts; names the field).
        DistributedTrainError: a process failed (the message names the first failing rank and its error)
            or the run exceeded ``timeout_s``.
    """
    if not (isinstance(nproc, int) and not isinstance(nproc, bool) and nproc >= 1):
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    kwargs.setdefault("quiet", True)
    with tempfile.TemporaryDirectory(prefix="dsv3_dist_") as tmp:
        path = Path(history_path) if history_path is not None else Path(tmp) / "history.json"
        args = DistTrainArgs(**{**kwargs, "history": str(path)}).validate(nproc)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", _MODULE, *args.to_argv()]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # own process group: a timeout kills every rank
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # torchrun starts each worker in its own session; on SIGTERM its agent stops them all. If it does
            # not within 30 s, kill its process group (workers orphaned that way exit by their own watchdog).
            proc.send_signal(signal.SIGTERM)
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL) if hasattr(os, "killpg") else proc.kill()
                output, _ = proc.communicate()
            raise DistributedTrainError(
                f"distributed training with {nproc} processes did not finish within timeout_s={timeout_s} s; "
                f"all processes were stopped. Last output:\n{output[-2000:]}", None, None, output) from None
        if proc.returncode != 0:
            rank, err = _root_cause(output)
            who = f"rank {rank}" if rank is not None else "a process"
            raise DistributedTrainError(
                f"distributed training with {nproc} processes failed (exit code {proc.returncode}): {who} "
                f"raised {err or 'an error'}. Last output:\n{output[-3000:]}", proc.returncode, rank, output)
        return DistributedHistory.from_json(path)


if __name__ == "__main__":
    sys.exit(main())
