"""Chapter 10's stored experiment: the tiny DeepSeek-V3, its dense twin and the nanoGPT recipe on one CPU budget.

The question (left open by chapter 5): **at what budget does the MoE pay for itself against its dense twin on a
CPU, if at all?** Step for step the MoE learns more (it holds N_r experts' worth of parameters while running
only K_r + N_s of them), but each of its steps costs more (the router, the gather and scatter of tokens, one
small matrix multiply per expert). What matters to someone with a CPU and an hour is the loss at equal *time*.

How the command measures it (``python -m dsv3_lessons.course.ch10_capstone``):

1. **Step times, side by side.** Wall clock on a shared machine drifts by tens of percent within minutes, so
   the step time of every model is measured by *alternating single training steps* of all of them
   (:func:`dsv3_lessons.tools.baselines.step_times`), one thread, CPU seconds of the process (``clock="process"``;
   with one thread other programs barely disturb them). Medians of ``timing_rounds`` rounds.
2. **One budget, in seconds.** Every model gets ``budget_s`` seconds *at its measured speed*:
   steps = round(budget_s / step time). Each run trains **by step count** (so its losses are reproducible for a
   seed, whatever the machine does meanwhile) with its own recipe's cosine over its own steps -- so at any
   moment t of the budget every model is at the same fraction t/budget_s of its schedule.
3. **Curves against time.** Validation loss (the same held-out windows for every model) at ``n_evals`` points
   spread evenly over each run; the x-axis of a curve is steps × that model's step time. The crossover is read
   from these curves (:func:`crossover`): the first time from which the MoE's mean curve stays below its twin's.
   A point in the middle of a run is not a finished run of that budget (its learning rate has not decayed
   yet); only the end points are. Both readings are reported.
4. ``seeds`` (≥ 3): each seed changes the initial weights and the batch order; two seeds can differ by more
   than two models do, so a difference counts only when it is larger than the spread between seeds.

The models (:data:`MODELS`): ``moe`` -- :func:`~dsv3_lessons.model.config.tiny` without MTP (chapter 7 measured
that MTP costs next-token loss at this size; the question here is MoE vs dense), aux-loss-free bias (γ = 0.01)
and the sequence-wise loss (α = 1e-4); ``dense`` -- its twin (:func:`~dsv3_lessons.tools.baselines.dense_twin`);
``nanogpt`` -- the nanoGPT CPU recipe (:class:`~dsv3_lessons.tools.baselines.NanoGPT`).

Stored (``data/capstone_runs/crossover.json``, a few tens of kB): ``meta`` (command, budget, seeds, recipes,
step times, config, torch version), ``runs[model][seed]`` with the steps, the first :data:`EXACT_STEPS` training
losses exactly (the notebook and ``tests/test_capstone.py`` re-train them), the training loss averaged over
blocks of :data:`BLOCK` steps, the validation curve and the final loss on :data:`FINAL_EVAL` windows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.tools.baselines import COURSE_RECIPE, NANOGPT_RECIPE, NanoGPT, dense_twin, step_times
from dsv3_lessons.tools.data import TextData, load_corpus
from dsv3_lessons.tools.train import TrainConfig, evaluate, train

__all__ = ["CAPSTONE_DIR", "capstone_dir", "MODELS", "LABELS", "RUNS_DIR", "CROSSOVER_FILE", "COMMAND", "EXACT_STEPS", "BLOCK", "FINAL_EVAL",
           "EVAL_BATCH", "build_model", "recipe", "train_config", "measure_step_times", "train_run", "run_all",
           "load_runs", "crossover", "curve", "parse_args", "main"]

MODELS = ("moe", "dense", "nanogpt")
LABELS = {"moe": "tiny DeepSeek-V3 (MoE)", "dense": "its dense twin", "nanogpt": "nanoGPT CPU recipe"}
RUNS_DIR = Path(__file__).resolve().parents[3] / "data" / "capstone_runs"
CROSSOVER_FILE = "crossover.json"
COMMAND = "python -m dsv3_lessons.course.ch10_capstone"
#: training losses stored exactly for the first steps (replayed by the notebook and the tests)
EXACT_STEPS = 20
#: the training loss curve is stored as means over blocks of this many steps
BLOCK = 10
#: validation windows during training (every model scores the same windows): batches × windows of 64
EVAL_BATCH = dict(eval_batches=4, eval_batch_size=32)
#: the final held-out score of every run (as bench/train_cpu.py): 16 batches of 32 × 64 characters
FINAL_EVAL = dict(batches=16, batch_size=32, seq_len=64, seed=4321)


#: where the notebook keeps the model you train in section 4 and its exports (``runs/`` is gitignored)
CAPSTONE_DIR = Path(__file__).resolve().parents[3] / "runs" / "capstone"


def capstone_dir(*parts: str) -> Path:
    """``runs/capstone/<parts>`` in the repository (created if needed): the trained model's checkpoint and exports
    live here after the chapter runs, so the learner keeps them (unlike a temporary folder)."""
    folder = CAPSTONE_DIR.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_model(name: str, vocab_size: int) -> torch.nn.Module:
    """The model ``name`` (one of :data:`MODELS`) for ``vocab_size`` tokens (seed torch before calling).

    Raises ValueError for an unknown name."""
    cfg = tiny(vocab_size=vocab_size, num_nextn_predict_layers=0)
    if name == "moe":
        return DeepSeekV3(cfg)                 # α = 1e-4 (sequence-wise loss); γ is the recipe's
    if name == "dense":
        return DeepSeekV3(dense_twin(cfg))
    if name == "nanogpt":
        return NanoGPT(vocab_size)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def recipe(name: str) -> dict:
    """TrainConfig fields of the model's recipe (course recipe for the tiny model and its twin)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    return dict(NANOGPT_RECIPE) if name == "nanogpt" else dict(COURSE_RECIPE)


def train_config(name: str, steps: int, seed: int, n_evals: int = 16) -> TrainConfig:
    """The run's TrainConfig: its recipe, ``steps`` steps, 1 thread, ``n_evals`` evaluations on shared windows."""
    return TrainConfig(steps=steps, seed=seed, num_threads=1, eval_interval=max(1, steps // n_evals),
                       **EVAL_BATCH, **recipe(name))


def measure_step_times(data: TextData, rounds: int = 20, models: Sequence[str] = MODELS,
                       clock: str = "process", seed: int = 0) -> dict[str, float]:
    """Seconds per training step of each model, by alternating single steps (one thread, ``clock``)."""
    builds = {m: (lambda m=m: build_model(m, data.vocab_size)) for m in models}
    return step_times(builds, {m: recipe(m) for m in models}, data, rounds, threads=1, clock=clock, seed=seed)


def _r(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def train_run(name: str, seed: int, steps: int, data: TextData | None = None, n_evals: int = 16,
              final: bool = True) -> dict:
    """Train one model for ``steps`` steps with seed ``seed`` (weights and batches); return the JSON record.

    Keys: ``model``, ``seed``, ``steps``, ``loss_first`` (the first :data:`EXACT_STEPS` training losses),
    ``loss_blocks`` (means over blocks of :data:`BLOCK` steps), ``val_step``/``val_loss`` (shared windows),
    ``final_val`` (:data:`FINAL_EVAL`; None when ``final`` is False), ``max_vio`` (MoE only: batch MaxVio
    averaged over blocks), ``train_time_s`` (this run's own CPU seconds; not used for the x-axis).
    """
    data = data or TextData.from_corpus(load_corpus())
    torch.manual_seed(seed)
    model = build_model(name, data.vocab_size)
    tc = train_config(name, steps, seed, n_evals)
    tc.clock = "process"
    hist = train(model, data, tc, progress=False)
    loss = hist.main_loss
    blocks = [statistics.fmean(loss[i:i + BLOCK]) for i in range(0, len(loss), BLOCK)]
    rec = {"model": name, "seed": seed, "steps": hist.steps_done,
           "loss_first": [_r(x) for x in loss[:EXACT_STEPS]], "loss_blocks": [_r(x, 5) for x in blocks],
           "val_step": hist.val_step, "val_loss": [_r(x) for x in hist.val_loss],
           "final_val": _r(evaluate(model, data, **FINAL_EVAL)) if final else None,
           "train_time_s": round(hist.train_time_s, 1)}
    if hist.max_vio:
        rec["max_vio"] = [_r(statistics.fmean(hist.max_vio[i:i + BLOCK]), 4) for i in range(0, len(loss), BLOCK)]
    return rec


def _worker(args: tuple) -> dict:
    name, seed, steps, n_evals = args
    torch.set_num_threads(1)
    return train_run(name, seed, steps, None, n_evals)


def run_all(budget_s: float = 150.0, seeds: Sequence[int] = (0, 1, 2), jobs: int = 3, timing_rounds: int = 20,
            n_evals: int = 16, out: str | Path | None = RUNS_DIR, progress: bool = True) -> dict:
    """Measure the step times, train every model and seed on ``budget_s`` seconds each; write and return the JSON.

    ``jobs`` runs train in parallel processes (one thread each; the losses do not depend on it, the step
    times were measured before). The file is rewritten after every finished run (``meta.complete`` False
    until the last one), so a long command can be watched.
    """
    data = TextData.from_corpus(load_corpus())
    t0 = time.perf_counter()
    sec = measure_step_times(data, timing_rounds)
    steps = {m: max(1, round(budget_s / sec[m])) for m in MODELS}
    if progress:
        print("step times (alternating single steps, 1 thread, CPU s): "
              + ", ".join(f"{m} {1e3 * t:.1f} ms" for m, t in sec.items())
              + f" -> steps for {budget_s:g} s: " + ", ".join(f"{m} {n}" for m, n in steps.items()), flush=True)
    meta = {"command": COMMAND + _flags(budget_s, seeds, n_evals), "budget_s": budget_s, "seeds": list(seeds),
            "step_time_s": {m: _r(t) for m, t in sec.items()}, "steps": steps, "timing_rounds": timing_rounds,
            "clock": "process", "threads": 1, "n_evals": n_evals,
            "recipes": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in recipe(m).items()} for m in MODELS},
            "eval": EVAL_BATCH, "final_eval": FINAL_EVAL, "exact_steps": EXACT_STEPS, "block": BLOCK,
            "config": tiny(vocab_size=data.vocab_size, num_nextn_predict_layers=0).to_dict(),
            "torch": torch.__version__, "complete": False}
    result: dict[str, Any] = {"meta": meta, "runs": {m: {} for m in MODELS}}
    tasks = [(m, s, steps[m], n_evals) for s in seeds for m in MODELS]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_worker, t): t for t in tasks}
        for done, fut in enumerate(as_completed(futures), start=1):
            rec = fut.result()
            result["runs"][rec["model"]][str(rec["seed"])] = rec
            meta["complete"] = done == len(tasks)
            meta["wall_s"] = round(time.perf_counter() - t0)
            if out is not None:
                _save(result, out)
            if progress:
                print(f"[{done}/{len(tasks)}] {rec['model']} seed {rec['seed']}: {rec['steps']} steps, final val "
                      f"{rec['final_val']:.4f} ({rec['train_time_s']:.0f} s CPU)", flush=True)
    return result


def _flags(budget_s: float, seeds: Sequence[int], n_evals: int) -> str:
    out = "" if budget_s == 150.0 else f" --budget-s {budget_s:g}"
    out += "" if list(seeds) == [0, 1, 2] else " --seeds " + ",".join(map(str, seeds))
    return out + ("" if n_evals == 16 else f" --n-evals {n_evals}")


def _save(result: dict, out: str | Path) -> Path:
    path = Path(out) / CROSSOVER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, separators=(",", ":")))
    tmp.replace(path)
    return path


def load_runs(path: str | Path | None = None) -> dict:
    """Read ``crossover.json``. Raises FileNotFoundError naming the command that writes it."""
    path = Path(path) if path is not None else RUNS_DIR / CROSSOVER_FILE
    if Path(path).is_dir():
        path = Path(path) / CROSSOVER_FILE
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: write it with `{COMMAND}` (tens of minutes on 2 cores)")
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------------- reading the curves
def curve(runs: dict, model: str, step_time_s: float | None = None) -> tuple[list[float], list[list[float]]]:
    """``(times, losses per seed)``: the validation curve of ``model`` against time = steps × step time.

    ``step_time_s`` defaults to the stored (measured) one; pass another machine's to redraw the curves at its
    speed (the losses are per step and do not change). Raises KeyError for a model that was not run.
    """
    t = runs["meta"]["step_time_s"][model] if step_time_s is None else step_time_s
    per_seed = [runs["runs"][model][str(s)] for s in runs["meta"]["seeds"]]
    times = [st * t for st in per_seed[0]["val_step"]]
    return times, [r["val_loss"] for r in per_seed]


def _interp(x: Sequence[float], y: Sequence[float], at: float) -> float:
    if at <= x[0]:
        return y[0]
    for (x0, y0), (x1, y1) in zip(zip(x, y), zip(x[1:], y[1:])):
        if at <= x1:
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return y[-1]


def crossover(runs: dict, a: str = "moe", b: str = "dense", step_times_s: dict | None = None,
              grid: int = 200) -> dict:
    """Where ``a``'s validation curve drops below ``b``'s for good, read from the stored curves.

    Curves are the per-seed validation losses against steps × step time (``step_times_s`` overrides the stored
    step times, e.g. with this machine's), interpolated linearly on ``grid`` times up to the shorter of the two
    runs. Returns ``{"t_mean": first time from which the seed-mean of a stays below that of b (None: never),
    "t_seed": that time per seed, "gap_end": per seed b − a at the budget's end (final_val; positive = a ahead),
    "gap_end_mean", "seed_spread": the largest spread of final_val between seeds of one model,
    "times", "gap_mean": the curve of mean(b) − mean(a) on the grid, "gap_seed": that curve per seed}``.
    """
    st = dict(runs["meta"]["step_time_s"], **(step_times_s or {}))
    ta, la = curve(runs, a, st[a])
    tb, lb = curve(runs, b, st[b])
    end = min(ta[-1], tb[-1])
    times = [end * (i + 1) / grid for i in range(grid)]
    seeds = runs["meta"]["seeds"]

    def first_for_good(gaps: list[float]) -> float | None:
        if gaps[-1] <= 0:
            return None
        i = len(gaps) - 1
        while i > 0 and gaps[i - 1] > 0:
            i -= 1
        return times[i]

    per_seed, gaps_all = [], []
    for ya, yb in zip(la, lb):
        gaps = [_interp(tb, yb, t) - _interp(ta, ya, t) for t in times]
        gaps_all.append(gaps)
        per_seed.append(first_for_good(gaps))
    gap_mean = [statistics.fmean(g[i] for g in gaps_all) for i in range(grid)]
    fa = [runs["runs"][a][str(s)]["final_val"] for s in seeds]
    fb = [runs["runs"][b][str(s)]["final_val"] for s in seeds]
    spread = max(max(v) - min(v) for v in (fa, fb))
    return {"t_mean": first_for_good(gap_mean), "t_seed": per_seed, "gap_end": [y - x for x, y in zip(fa, fb)],
            "gap_seed": gaps_all,
            "gap_end_mean": statistics.fmean(fb) - statistics.fmean(fa), "seed_spread": spread,
            "times": times, "gap_mean": gap_mean, "final": {a: fa, b: fb}}


# ----------------------------------------------------------------------------------- the command
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command's arguments; bad values exit with a message naming the flag (SystemExit 2)."""
    p = argparse.ArgumentParser(prog=COMMAND, description="train the tiny DeepSeek-V3, its dense twin and the "
                                "nanoGPT recipe on one CPU budget and store the curves in data/capstone_runs/")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="CPU seconds per model and seed, at the measured step time (default 150)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, at least 3 (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=3, help="runs trained in parallel processes, 1 thread each")
    p.add_argument("--timing-rounds", type=int, default=20, help="rounds of alternating single steps (>= 3)")
    p.add_argument("--n-evals", type=int, default=16, help="validation points per run (>= 2)")
    p.add_argument("--out", default=str(RUNS_DIR), help="folder for crossover.json")
    args = p.parse_args(argv)
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        p.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if len(seeds) < 3 or len(set(seeds)) != len(seeds):
        p.error(f"--seeds needs at least 3 different seeds (one seed cannot tell a difference from noise), "
                f"got {args.seeds!r}")
    args.seeds = seeds
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.timing_rounds < 3:
        p.error(f"--timing-rounds must be >= 3, got {args.timing_rounds}")
    if args.n_evals < 2:
        p.error(f"--n-evals must be >= 2, got {args.n_evals}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = run_all(args.budget_s, args.seeds, args.jobs, args.timing_rounds, args.n_evals, args.out)
    c = crossover(result)
    t = c["t_mean"]
    print(f"MoE vs dense twin: mean curve below for good from {'never' if t is None else f'{t:.0f} s'}; "
          f"at the end ({args.budget_s:g} s) twin - MoE = {c['gap_end_mean']:+.4f} nats/char "
          f"(seed spread {c['seed_spread']:.4f})")
    print(f"wrote {Path(args.out) / CROSSOVER_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
