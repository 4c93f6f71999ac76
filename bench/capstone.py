"""Chapter 10's numbers in one command: the report card of the tiny DeepSeek-V3 and the MoE-vs-dense crossover table.

Usage::

    python bench/capstone.py                      # report card (300 steps) + crossover table from data/capstone_runs
    python bench/capstone.py --steps 600          # a longer training run for the report card
    python bench/capstone.py --remeasure          # re-run the crossover experiment first (tens of minutes)
    python bench/capstone.py --remeasure --budget-s 60 --seeds 0,1,2 --out /tmp/runs

**Report card.** The model with everything on (MLA, DeepSeekMoE with the bias update γ = 0.01 and the sequence-wise
loss α = 1e-4, MTP D = 1 with λ 0.3 -> 0.1) trained with chapter 7's recipe (batch 16 x 64, one thread) for
``--steps`` steps, then :func:`dsv3_lessons.course.ch10_capstone.report.report_card`: validation loss, training
tokens/s (this machine), parameters, KV-cache bytes per token (measured) vs MHA of the same shape, MaxVio,
MTP-draft acceptance and tokens per main-model forward (greedy; equal to plain greedy), and the FP8 fake-quant loss
change.

**Crossover table.** From ``crossover.json`` (written by ``python -m dsv3_lessons.course.ch10_capstone``, or by
``--remeasure``): per model the step time measured by alternating single steps, the steps that fit the budget and
the final validation loss over the seeds (mean [min, max]); then the MoE's lead over its dense twin at several
fractions of the budget (read from the validation curves, mean over seeds) and where, if anywhere, it turns
positive for good.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.course.ch07_mtp import mtp_train_config_kwargs  # noqa: E402
from dsv3_lessons.course.ch10_capstone.report import report_card  # noqa: E402
from dsv3_lessons.course.ch10_capstone.runs import (LABELS, MODELS, RUNS_DIR, crossover, load_runs,  # noqa: E402
                                                    run_all)
from dsv3_lessons.model import DeepSeekV3, tiny  # noqa: E402
from dsv3_lessons.tools.data import TextData, load_corpus  # noqa: E402
from dsv3_lessons.tools.train import TrainConfig, train  # noqa: E402


def crossover_table(runs: dict) -> list[str]:
    """The crossover table as markdown lines."""
    meta = runs["meta"]
    out = [f"budget {meta['budget_s']:g} s of one CPU thread per model and seed (seeds {meta['seeds']}); step times "
           f"by alternating single steps ({meta['clock']} clock, {meta['timing_rounds']} rounds)", "",
           "| model | ms/step | steps | final val loss (nats/char), mean [min, max] |", "|---|---:|---:|---:|"]
    for m in MODELS:
        finals = [runs["runs"][m][str(s)]["final_val"] for s in meta["seeds"]]
        out.append(f"| {LABELS[m]} | {1e3 * meta['step_time_s'][m]:.1f} | {meta['steps'][m]} | "
                   f"{statistics.fmean(finals):.4f} [{min(finals):.4f}, {max(finals):.4f}] |")
    c = crossover(runs)
    out += ["", "| budget (s) | dense twin − MoE, mean over seeds (nats/char; > 0: MoE ahead) |", "|---:|---:|"]
    n = len(c["times"])
    for frac in (0.125, 0.25, 0.5, 0.75, 1.0):
        i = max(0, round(frac * n) - 1)
        out.append(f"| {c['times'][i]:.0f} | {c['gap_mean'][i]:+.4f} |")
    t = c["t_mean"]
    out += ["", f"MoE below its twin for good (mean curve): {'never within the budget' if t is None else f'from {t:.0f} s'}"
            f"; end of budget, twin − MoE = {c['gap_end_mean']:+.4f} (per seed "
            + ", ".join(f"{g:+.4f}" for g in c["gap_end"]) + f"), largest seed spread {c['seed_spread']:.4f}"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="chapter 10's report card and MoE-vs-dense crossover table")
    p.add_argument("--steps", type=int, default=300, help="training steps for the report card's model")
    p.add_argument("--remeasure", action="store_true", help="re-run the crossover experiment before the table")
    p.add_argument("--budget-s", type=float, default=150.0, help="with --remeasure: CPU seconds per model and seed")
    p.add_argument("--seeds", default="0,1,2", help="with --remeasure: comma-separated seeds (>= 3)")
    p.add_argument("--out", default=str(RUNS_DIR), help="folder of crossover.json (read, or written by --remeasure)")
    p.add_argument("--skip-card", action="store_true", help="only the crossover table")
    args = p.parse_args(argv)
    if args.steps < 10:
        p.error(f"--steps must be >= 10, got {args.steps}")
    if not args.skip_card:
        data = TextData.from_corpus(load_corpus())
        torch.manual_seed(1)
        model = DeepSeekV3(tiny(vocab_size=data.vocab_size), aux_loss_alpha=1e-4, mtp_loss_weight=0.3)
        hist = train(model, data, TrainConfig(**mtp_train_config_kwargs(args.steps), num_threads=1), progress=False)
        card = report_card(model, data, hist)
        print(f"Report card: tiny DeepSeek-V3, everything on, {args.steps} steps of 16 x 64 characters, 1 thread, "
              f"torch {torch.__version__}")
        for line in card.lines():
            print("  " + line)
        print()
    if args.remeasure:
        from dsv3_lessons.course.ch10_capstone.runs import parse_args
        r = parse_args(["--budget-s", str(args.budget_s), "--seeds", args.seeds, "--out", args.out])
        runs = run_all(r.budget_s, r.seeds, r.jobs, r.timing_rounds, r.n_evals, r.out)
    else:
        runs = load_runs(args.out)
    print("MoE vs dense twin vs nanoGPT on one CPU budget")
    for line in crossover_table(runs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
