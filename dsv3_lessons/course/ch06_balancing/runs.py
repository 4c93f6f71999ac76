"""Chapter 6 helpers: train the tiny model four ways, record expert loads, store and re-simulate the histories.

The four balancing methods compared (same initial weights, same batches, same budget):

* ``"none"`` -- no balancing at all (γ = 0, no balance loss);
* ``"aux_loss"`` -- a batch-wise auxiliary loss, α·Σ_i f_i·P_i over all tokens of the batch
  (:func:`dsv3_lessons.model.moe.batch_balance_loss`; α = ``AUX_ALPHA``), no bias. This is the baseline of V3
  §4.5.3, which reports that a batch-wise auxiliary loss reaches the same validation loss as the auxiliary-loss-free
  method (1B: 2.253 vs 2.253; 3B: 2.080 vs 2.080). It is *not* the LF paper's baseline, which is sequence-wise
  with α = 0.001 (LF §2.2, §4.1);
* ``"bias"`` -- the auxiliary-loss-free bias: after each optimizer step b_i ← b_i + γ·sign(mean(c) − c_i)
  (LF paper arXiv 2408.15664 Alg. 1, :func:`~dsv3_lessons.model.moe.update_bias`), γ = ``GAMMA``;
* ``"bias+seq"`` -- V3's recipe: the bias plus the complementary sequence-wise loss, α = 1e-4 (V3 eqs. 17–20).

Training is :func:`dsv3_lessons.tools.train.train` itself; what it does not do is added from the outside with
forward hooks (no change to the model or the loop):

* the batch-wise loss: a hook on each gate keeps its ``(weights, indices, scores)``, a hook on the MoE layer
  replaces the layer's ``aux_loss`` (which the model sums into its loss) by ``batch_balance_loss``;
* the bias trajectory: a pre-hook on each gate records b at every training forward (= the value used at
  that step);
* MaxVio_global: a hook on each MoE layer collects ``last_counts`` during the evaluations ``train`` runs on
  held-out text (fixed windows), so every evaluation point gets its global load and MaxVio.

Why stored histories. Four runs take minutes on 2 cores -- over a notebook's 90 s budget -- so the chapter
reads them from ``data/moe_runs/`` written by ``python -m dsv3_lessons.course.ch06_balancing``;
``tests/test_balancing.py`` re-trains the first steps of every method and checks them against the file. The
command also trains every method with two more seeds and keeps their final numbers: one seed cannot tell a
real difference from run-to-run noise (differences in floating-point summation alone move a run's final loss by
a few hundredths of a nat, because routing decisions are discrete and trajectories diverge).

Choices for the tiny scale (written down because they differ from V3): γ = 0.01 instead of 0.001 (a few hundred
steps at 0.001 move a bias by at most a few tenths; V3 used 0.001 for 14.3 T tokens and 0 for the last 500 B, §4.2),
and the batch-wise loss's α = 0.01 (Switch-Transformer's order of magnitude; DeepSeek-V2 used 0.003 for its
expert-level loss).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dsv3_lessons.model import DeepSeekV3, DeepseekV3Config, tiny
from dsv3_lessons.model.moe import DeepseekMoE, batch_balance_loss, max_violation
from dsv3_lessons.tools.train import TrainConfig, evaluate, train
from dsv3_lessons.course.ch05_routing.snapshot import RUNS_DIR, SNAPSHOT_FILE, routing_snapshot

__all__ = ["METHODS", "LABELS", "GAMMA", "AUX_ALPHA", "SEQ_ALPHA", "RUNS_DIR", "HISTORY_FILE", "SNAPSHOT_FILE",
           "MethodSettings", "settings_for", "default_budget", "attach_batch_aux_loss", "LoadRecorder",
           "train_method", "final_global", "run_all", "save_runs", "load_runs", "resimulate_bias", "sample_batches",
           "max_vio_rows"]

METHODS = ("none", "aux_loss", "bias", "bias+seq")
LABELS = {"none": "no balancing", "aux_loss": "batch-wise aux loss", "bias": "aux-loss-free bias",
          "bias+seq": "bias + sequence loss (V3)"}
#: bias update speed γ for the tiny runs (V3 §4.2: 0.001 for the first 14.3 T tokens, then 0 for the last 500 B)
GAMMA = 0.01
#: α of the batch-wise auxiliary loss (the baseline of V3 §4.5.3)
AUX_ALPHA = 0.01
#: α of V3's complementary sequence-wise loss (V3 §4.2)
SEQ_ALPHA = 1e-4
#: where the stored runs live, and the command that writes them
HISTORY_FILE = "balancing_histories.json"
COMMAND = "python -m dsv3_lessons.course.ch06_balancing"


@dataclass(frozen=True)
class MethodSettings:
    """γ of the bias update, α of the sequence-wise loss (inside the model), α of the batch-wise loss (hook)."""

    gamma: float
    seq_alpha: float
    batch_alpha: float


def settings_for(method: str, gamma: float = GAMMA, aux_alpha: float = AUX_ALPHA,
                 seq_alpha: float = SEQ_ALPHA) -> MethodSettings:
    """The knobs of one method (``seq_alpha``: α of ``"bias+seq"``). Raises ValueError for a method not in
    :data:`METHODS`."""
    table = {"none": MethodSettings(0.0, 0.0, 0.0), "aux_loss": MethodSettings(0.0, 0.0, aux_alpha),
             "bias": MethodSettings(gamma, 0.0, 0.0), "bias+seq": MethodSettings(gamma, seq_alpha, 0.0)}
    if method not in table:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return table[method]


def default_budget(steps: int = 200) -> TrainConfig:
    """The shared budget: ``steps`` steps of 16 windows × 64 characters, evaluation every 25 steps, 1 thread."""
    return TrainConfig(steps=steps, batch_size=16, seq_len=64, lr=3e-3, warmup_steps=20, eval_interval=25,
                       eval_batches=4, seed=0, num_threads=1, bias_update_speed=0.0)


def attach_batch_aux_loss(model: torch.nn.Module, alpha: float) -> list:
    """Make every MoE layer's ``aux_loss`` the batch-wise auxiliary loss (training forwards only).

    The model adds each layer's ``aux_loss`` to its loss; this sets it, after the layer's forward, to
    :func:`~dsv3_lessons.model.moe.batch_balance_loss` of the gate's scores and choices (f over all tokens of
    the batch, P from the normalised sigmoid scores, gradient through the scores). Build the model with
    ``aux_loss_alpha=0`` so the sequence-wise loss is not added as well. Returns the hook handles
    (``.remove()`` them to detach). Raises ValueError for ``alpha`` < 0.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    handles = []
    for m in (m for m in model.modules() if isinstance(m, DeepseekMoE)):
        seen: dict[str, Any] = {}

        def keep(gate, inputs, output, seen=seen):
            seen["routing"] = output

        def replace(layer, inputs, output, seen=seen):
            if layer.training:
                _, indices, scores = seen["routing"]
                layer.aux_loss = batch_balance_loss(scores, indices, alpha)

        handles += [m.gate.register_forward_hook(keep), m.register_forward_hook(replace)]
    return handles


class LoadRecorder:
    """Hooks that record, for every MoE layer: the bias at each training forward, the counts of evaluations.

    Attributes: ``names`` (MoE layer names), ``bias`` (list per training forward of ``[n_layers, N_r]``),
    ``eval_counts`` (list per evaluation forward of ``[n_main_layers, N_r]``). ``close()`` removes the hooks.
    """

    def __init__(self, model: torch.nn.Module):
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, DeepseekMoE)]
        self.names = [n for n, _ in named]
        self.main = [i for i, (n, _) in enumerate(named) if not n.startswith("mtp.")]
        self.bias: list[torch.Tensor] = []
        self.eval_counts: list[torch.Tensor] = []
        self._handles = []
        self._moes = [m for _, m in named]
        self._pending: dict[int, torch.Tensor] = {}
        first, last = self._moes[0], self._moes[self.main[-1]]
        self._handles.append(first.gate.register_forward_pre_hook(self._on_train_forward))
        for i in self.main:
            self._handles.append(self._moes[i].register_forward_hook(
                lambda layer, inp, out, i=i: self._on_eval(layer, i)))
        self._last_main = self.main[-1]

    def _on_train_forward(self, gate, inputs) -> None:
        if gate.training:
            self.bias.append(torch.stack([m.gate.e_score_correction_bias.detach().clone() for m in self._moes]))

    def _on_eval(self, layer, i: int) -> None:
        if layer.training:
            return
        self._pending[i] = layer.last_counts.detach().clone()
        if i == self._last_main:
            self.eval_counts.append(torch.stack([self._pending[j] for j in self.main]))
            self._pending = {}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def max_vio_rows(counts: torch.Tensor) -> float:
    """MaxVio averaged over layers: ``counts [n_layers, N_r]`` (LF paper §4.1)."""
    return max_violation(counts)


def final_global(model: torch.nn.Module, data, batches: int = 16, batch_size: int = 16, seq_len: int = 64,
                 seed: int = 4321) -> tuple[float, float, torch.Tensor]:
    """Validation loss, MaxVio_global and counts ``[n_main_layers, N_r]`` on ``batches`` held-out batches."""
    loss, counts = evaluate(model, data, batches, batch_size, seq_len, seed=seed, return_counts=True)
    return loss, max_vio_rows(counts), counts


def _r(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def train_method(method: str, data, budget: TrainConfig | None = None, cfg: DeepseekV3Config | None = None,
                 model_seed: int = 0, gamma: float = GAMMA, aux_alpha: float = AUX_ALPHA,
                 final_batches: int = 16, seq_alpha: float = SEQ_ALPHA) -> tuple[DeepSeekV3, dict]:
    """Train one method; return the model and a JSON-ready history.

    History keys: ``method``, ``label``, ``settings``; per step ``step``, ``main_loss``, ``aux_loss``,
    ``max_vio_batch`` (main MoE layers), ``counts`` ``[steps][n_layers][N_r]``, ``bias`` (value used at the
    step, same shape); per evaluation ``val_step``, ``val_loss``, ``max_vio_global``, ``val_counts``;
    ``final`` (``val_loss``, ``max_vio_global``, ``counts`` on ``final_batches`` held-out batches);
    ``layer_names``, ``main_layers``, ``train_time_s``.
    """
    s = settings_for(method, gamma, aux_alpha, seq_alpha)
    budget = budget or default_budget()
    budget = TrainConfig(**{**asdict(budget), "bias_update_speed": s.gamma})
    cfg = cfg or tiny(vocab_size=data.vocab_size)
    torch.manual_seed(model_seed)
    model = DeepSeekV3(cfg, aux_loss_alpha=s.seq_alpha)
    handles = attach_batch_aux_loss(model, s.batch_alpha) if s.batch_alpha > 0 else []
    rec = LoadRecorder(model)
    try:
        hist = train(model, data, budget, progress=False)
    finally:
        rec.close()
        for h in handles:
            h.remove()
    per_eval = budget.eval_batches
    evals = [torch.stack(rec.eval_counts[i * per_eval:(i + 1) * per_eval]).sum(0)
             for i in range(len(hist.val_step))]
    val_loss, mv_global, counts = final_global(model, data, final_batches, budget.eval_batch_size or budget.batch_size,
                                               budget.seq_len)
    record = {
        "method": method, "label": LABELS[method], "settings": asdict(s),
        "layer_names": rec.names, "main_layers": rec.main,
        "step": hist.step, "main_loss": [_r(x) for x in hist.main_loss], "aux_loss": [_r(x) for x in hist.aux_loss],
        "max_vio_batch": [_r(x) for x in hist.max_vio],
        "counts": [c.tolist() for c in hist.expert_counts],
        "bias": [[[_r(v) for v in row] for row in b.tolist()] for b in rec.bias],
        "val_step": hist.val_step, "val_loss": [_r(x) for x in hist.val_loss],
        "max_vio_global": [_r(max_vio_rows(c)) for c in evals], "val_counts": [c.tolist() for c in evals],
        "final": {"val_loss": _r(val_loss), "max_vio_global": _r(mv_global), "counts": counts.tolist(),
                  "batches": final_batches},
        "train_time_s": round(hist.train_time_s, 1),
    }
    return model, record


# ----------------------------------------------------------------------------------- all runs, stored
def run_all(data, steps: int = 200, methods: tuple[str, ...] = METHODS, progress: bool = True,
            replicate_seeds: tuple[int, ...] = (1, 2)) -> tuple[dict, dict]:
    """Train every method with :func:`default_budget` ``(steps)``; return ``(histories, snapshots)``.

    Seed 0 gives the full histories. Each seed in ``replicate_seeds`` trains every method again with other
    initial weights and batches (model seed = batch seed = that seed) and keeps only the final held-out numbers,
    in ``histories["replicates"][method]`` as ``[{"seed", "val_loss", "max_vio_global"}]``: the spread between
    seeds is the yardstick for calling a difference between methods real.
    """
    budget = default_budget(steps)
    cfg = tiny(vocab_size=data.vocab_size)
    runs, snaps = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        model, record = train_method(method, data, budget, cfg)
        runs[method] = record
        if method == "bias+seq":  # chapter 5's trained model: everything but the scores
            snaps["trained"] = {k: v for k, v in routing_snapshot(model, data).items() if k != "sample_scores"}
        if method == "none":      # chapter 6 re-simulates the bias on this router's scores
            snaps["unbalanced"] = {k: v for k, v in routing_snapshot(model, data).items()
                                   if k in ("config", "layer_names", "gate_weight", "gate_bias", "sample_scores")}
        if progress:
            print(f"{method:>9}: val loss {record['final']['val_loss']:.4f}  MaxVio_global "
                  f"{record['final']['max_vio_global']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    replicates: dict[str, list] = {m: [] for m in methods}
    for seed in replicate_seeds:
        seeded = TrainConfig(**{**asdict(budget), "seed": seed})
        for method in methods:
            _, record = train_method(method, data, seeded, cfg, model_seed=seed)
            replicates[method].append({"seed": seed, **{k: record["final"][k] for k in ("val_loss", "max_vio_global")}})
            if progress:
                print(f"{method:>9} seed {seed}: val loss {record['final']['val_loss']:.4f}  MaxVio_global "
                      f"{record['final']['max_vio_global']:.3f}", flush=True)
    meta = {"command": COMMAND + (f" --steps {steps}" if steps != 200 else ""), "budget": asdict(budget),
            "config": cfg.to_dict(), "gamma": GAMMA, "aux_alpha": AUX_ALPHA, "seq_alpha": SEQ_ALPHA,
            "replicate_seeds": list(replicate_seeds), "torch": torch.__version__}
    return {"meta": meta, "runs": runs, "replicates": replicates}, snaps


def save_runs(histories: dict, snapshots: dict, out_dir: str | Path = RUNS_DIR) -> tuple[Path, Path]:
    """Write ``balancing_histories.json`` and ``routing_snapshot.pt`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist_path, snap_path = out / HISTORY_FILE, out / SNAPSHOT_FILE
    hist_path.write_text(json.dumps(histories, separators=(",", ":")))
    torch.save(snapshots, snap_path)
    return hist_path, snap_path


def load_runs(path: str | Path | None = None) -> dict:
    """Read ``balancing_histories.json``. Raises FileNotFoundError naming the regenerating command."""
    path = Path(path) if path is not None else RUNS_DIR / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: regenerate it with `{COMMAND}` (a few minutes on 2 cores)")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------- fast re-simulation
@torch.no_grad()
def sample_batches(scores: torch.Tensor, steps: int = 200, batch_tokens: int = 1024, seed: int = 0) -> torch.Tensor:
    """The batches :func:`resimulate_bias` routes: ``[steps, batch_tokens, N_r]`` rows of ``scores [n, N_r]`` drawn
    with replacement (generator seeded with ``seed``). They do not depend on γ, so a caller that re-simulates several
    γ on the same router (the chapter-6 widget) draws them once and passes them as ``batches``."""
    gen = torch.Generator().manual_seed(seed)
    n = scores.shape[0]
    return torch.stack([scores[torch.randint(n, (batch_tokens,), generator=gen)] for _ in range(steps)])


@torch.no_grad()
def resimulate_bias(scores: torch.Tensor, n_group: int, topk_group: int, top_k: int, gamma: float,
                    steps: int = 200, batch_tokens: int = 1024, seed: int = 0,
                    update: Callable[[torch.Tensor, torch.Tensor, float], Any] | None = None,
                    batches: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The bias update on a FROZEN router: how fast γ balances loads when the scores do not move.

    Each step draws ``batch_tokens`` rows of ``scores [n, N_r]`` (unbiased sigmoid affinities of real
    tokens), routes them with the group-limited rule on s + b, counts tokens per expert and applies
    b ← b + γ·sign(mean(c) − c) (LF Alg. 1). Training would move the scores too; this isolates γ.

    ``update``: another bias rule to simulate instead, called after each step as
    ``update(bias [N_r] float32, routed [batch_tokens, K_r] expert ids, gamma)``; it must change ``bias`` in
    place (chapter 6 runs exercise 6.1's unfixed function through it).

    ``batches``: the draws of :func:`sample_batches` for these ``scores``, ``steps``, ``batch_tokens`` and ``seed``
    (drawn here when None); the result is the same either way.

    Returns ``{"counts": [steps, N_r], "bias": [steps, N_r] (value used at the step), "max_vio": [steps]}``.
    Raises ValueError for a negative γ or a group layout that does not fit ``N_r``.
    """
    n, n_r = scores.shape
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if n_r % n_group or not 1 <= topk_group <= n_group or not 1 <= top_k <= topk_group * (n_r // n_group):
        raise ValueError(f"n_group={n_group}, topk_group={topk_group}, top_k={top_k} do not fit {n_r} experts")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)   # [1024, 8] tensors: one thread is faster, and ~10x faster on a busy 2-core machine
    try:
        if batches is None:
            batches = sample_batches(scores, steps, batch_tokens, seed)
        elif tuple(batches.shape) != (steps, batch_tokens, n_r):
            raise ValueError(f"batches must be [steps={steps}, batch_tokens={batch_tokens}, N_r={n_r}], got "
                             f"{tuple(batches.shape)}")
        return _resimulate(batches, n_group, topk_group, top_k, gamma, update)
    finally:
        torch.set_num_threads(previous_threads)


def _resimulate(batches, n_group, topk_group, top_k, gamma, update):
    steps, batch_tokens, n_r = batches.shape
    bias = torch.zeros(n_r)
    counts, biases = [], []
    size = n_r // n_group
    for rows in batches:
        biased = rows + bias
        if n_group > 1:   # group score: sum of the group's two largest biased scores (= the sum for 2 experts)
            grouped = biased.view(batch_tokens, n_group, size)
            group_score = grouped.sum(-1) if size <= 2 else grouped.topk(2, dim=-1).values.sum(-1)
            keep = group_score.topk(topk_group, dim=-1).indices
            mask = torch.zeros(batch_tokens, n_group, dtype=torch.bool).scatter_(1, keep, True)
            biased = grouped.masked_fill(~mask[..., None], float("-inf")).view(batch_tokens, n_r)
        routed = biased.topk(top_k, dim=-1).indices
        c = torch.bincount(routed.flatten(), minlength=n_r).float()
        biases.append(bias.clone())
        counts.append(c)
        if update is None:
            bias += gamma * torch.sign(c.mean() - c)
        else:
            update(bias, routed, gamma)
    counts_t = torch.stack(counts)
    mean = counts_t.mean(-1, keepdim=True)
    return {"counts": counts_t, "bias": torch.stack(biases),
            "max_vio": ((counts_t.max(-1, keepdim=True).values - mean) / mean).squeeze(-1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the four balancing methods and store their histories "
                                            f"in {RUNS_DIR}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=str(RUNS_DIR))
    p.add_argument("--sequence-study", action="store_true",
                   help="only measure MaxVio per held-out sequence with and without the sequence-wise loss "
                        "(writes sequence_balance.json; see ch06_balancing.sequences)")
    args = p.parse_args(argv)
    from dsv3_lessons.tools.data import TextData, load_corpus

    torch.set_num_threads(1)
    data = TextData.from_corpus(load_corpus())
    if args.sequence_study:
        from dsv3_lessons.course.ch06_balancing.sequences import save_sequence_study, sequence_study

        path = save_sequence_study(sequence_study(data, steps=args.steps), args.out)
        print(f"wrote {path}")
        return 0
    histories, snaps = run_all(data, args.steps)
    for path in save_runs(histories, snaps, args.out):
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0

