"""Does V3's small sequence-wise loss change the balance *within* a sequence? A measurement, stored.

V3 adds the complementary sequence-wise loss (eqs. 17–20, α = 1e-4, §4.2) "to prevent extreme imbalance within any
single sequence" (§2.1.2). Chapter 6 shows that the loss *detects* such imbalance (a batch can be balanced while each
of its sequences is not). Whether it *prevents* it is a training question, so this module measures it: the tiny model
is trained with the bias rule and a sequence-wise loss of weight α ∈ :data:`SEQUENCE_ALPHAS` (0 = the bias alone,
V3's 1e-4, and a 100× stronger 1e-2 to see the mechanism act at all), for the seeds of the stored runs, and every
trained model routes the same held-out windows. For each window and main MoE layer:

    MaxVio_seq = (max_i c_i − mean c) / mean c,   c_i = tokens of that window routed to expert i

(LF paper §4.1's MaxVio, taken over one sequence instead of a batch), averaged over the main MoE layers. The file
keeps, per (α, seed), the mean and the 90th percentile of MaxVio_seq over the windows, and the run's validation loss
and MaxVio_global on the same windows.

Everything else equals :func:`dsv3_lessons.course.ch06_balancing.runs.run_all`'s recipe (budget, config, γ, seeds,
the held-out windows of ``final_global``), so α = 0 and α = 1e-4 are the "bias" and "bias + sequence loss" methods
trained again. Written by ``python -m dsv3_lessons.course.ch06_balancing --sequence-study`` into
``data/moe_runs/sequence_balance.json`` (9 runs of 200 steps: a few minutes on 2 idle cores); the chapter reads it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dsv3_lessons.model import tiny
from dsv3_lessons.model.moe import DeepseekMoE
from dsv3_lessons.tools.train import TrainConfig
from dsv3_lessons.course.ch06_balancing.runs import COMMAND, RUNS_DIR, SEQ_ALPHA, default_budget, train_method

__all__ = ["SEQUENCE_ALPHAS", "SEQUENCE_FILE", "per_sequence_counts", "sequence_max_vio", "sequence_study",
           "save_sequence_study", "load_sequence_study"]

#: α of the sequence-wise loss compared: none (the bias alone), V3's 1e-4, and 100× that.
SEQUENCE_ALPHAS = (0.0, SEQ_ALPHA, 1e-2)
SEQUENCE_FILE = "sequence_balance.json"


@torch.no_grad()
def per_sequence_counts(model: torch.nn.Module, data, batches: int = 16, batch_size: int = 16, seq_len: int = 64,
                        seed: int = 4321) -> torch.Tensor:
    """Tokens per expert for every held-out window: ``[batches·batch_size, n_main_moe_layers, N_r]`` int64.

    The windows are those of :func:`dsv3_lessons.tools.train.evaluate` with the same ``seed`` (the chapter's
    final held-out set). A forward hook on each main MoE layer's gate reads the experts chosen per token.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, DeepseekMoE) and not n.startswith("mtp.")]
    if not named:
        raise ValueError("the model has no main MoE layer")
    seen: dict[int, torch.Tensor] = {}
    handles = [m.gate.register_forward_hook(lambda g, i, out, j=j: seen.__setitem__(j, out[1]))
               for j, (_, m) in enumerate(named)]
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n_r = named[0][1].gate.n_experts
    rows = []
    try:
        for _ in range(batches):
            x, y = data.get_batch("val", batch_size, seq_len, generator=gen)
            model(x, y, compute_mtp=False)
            per_layer = []
            for j in range(len(named)):
                idx = seen[j].view(batch_size, -1)                              # [b, T·K_r]
                per_layer.append(torch.zeros(batch_size, n_r, dtype=torch.long).scatter_add_(
                    1, idx, torch.ones_like(idx)))
            rows.append(torch.stack(per_layer, dim=1))                          # [b, layers, N_r]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return torch.cat(rows)


def sequence_max_vio(counts: torch.Tensor) -> torch.Tensor:
    """MaxVio of every sequence, averaged over layers: ``counts [n_seq, layers, N_r]`` -> ``[n_seq]``."""
    c = counts.float()
    mean = c.mean(-1)
    return ((c.max(-1).values - mean) / mean).mean(-1)


def sequence_study(data, seeds: tuple[int, ...] = (0, 1, 2), alphas: tuple[float, ...] = SEQUENCE_ALPHAS,
                   steps: int = 200, progress: bool = True) -> dict:
    """Train "bias + sequence loss" with each α in ``alphas`` for each seed; measure MaxVio per held-out sequence.

    Seed 0 uses :func:`~dsv3_lessons.course.ch06_balancing.runs.default_budget`, other seeds re-seed the batches
    and the initial weights with the seed (as ``run_all``'s replicates). Returns a JSON-ready dict: ``meta`` and
    ``results`` = list of ``{"alpha", "seed", "seq_max_vio_mean", "seq_max_vio_p90", "val_loss",
    "max_vio_global", "n_sequences"}``.
    """
    budget = default_budget(steps)
    cfg = tiny(vocab_size=data.vocab_size)
    results = []
    for seed in seeds:
        seeded = budget if seed == budget.seed else TrainConfig(**{**asdict(budget), "seed": seed})
        for alpha in alphas:
            t0 = time.perf_counter()
            model, record = train_method("bias+seq", data, seeded, cfg, model_seed=seed, seq_alpha=alpha)
            mv = sequence_max_vio(per_sequence_counts(model, data, batch_size=seeded.batch_size,
                                                      seq_len=seeded.seq_len))
            row = {"alpha": alpha, "seed": seed, "seq_max_vio_mean": round(float(mv.mean()), 5),
                   "seq_max_vio_p90": round(float(mv.quantile(0.9)), 5), "n_sequences": int(mv.numel()),
                   "val_loss": record["final"]["val_loss"], "max_vio_global": record["final"]["max_vio_global"]}
            results.append(row)
            if progress:
                print(f"α = {alpha:g}, seed {seed}: MaxVio per sequence mean {row['seq_max_vio_mean']:.3f}, "
                      f"p90 {row['seq_max_vio_p90']:.3f}; val loss {row['val_loss']:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    meta = {"command": COMMAND + " --sequence-study" + (f" --steps {steps}" if steps != 200 else ""),
            "budget": asdict(budget), "alphas": list(alphas), "seeds": list(seeds), "config": cfg.to_dict(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    return {"meta": meta, "results": results}


def save_sequence_study(study: dict, out_dir: str | Path = RUNS_DIR) -> Path:
    """Write ``sequence_balance.json`` into ``out_dir``; return its path."""
    path = Path(out_dir) / SEQUENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(study, indent=1))
    return path


def load_sequence_study(path: str | Path | None = None) -> dict:
    """Read ``sequence_balance.json``. Raises FileNotFoundError naming the regenerating command."""
    path = Path(path) if path is not None else RUNS_DIR / SEQUENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: regenerate it with `{COMMAND} --sequence-study`")
    return json.loads(path.read_text())
