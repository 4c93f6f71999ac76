"""Side-by-side CPU training benchmark: the course's tiny DeepSeek-V3 against three baselines, one run.

Usage::

    python bench/train_cpu.py                  # equal wall-clock = nanoGPT recipe's 2000 iterations here
    python bench/train_cpu.py --seconds 20     # quick: every model trains 20 s
    make bench

All models train on the course corpus (train split) with 2 threads for the same wall-clock time, and are
scored on the same held-out windows (16 batches of 32 x 64 characters of the held-out plays, fixed seed):

1. **nanoGPT CPU recipe** -- a dense GPT written here from the hyper-parameters nanoGPT publishes for its
   Shakespeare-character CPU run (4 layers, 4 heads, width 128, block 64, batch 12, no dropout, no biases,
   tied embedding, AdamW lr 1e-3 with 100 warmup iterations and cosine to 1e-4 over 2000 iterations,
   β2 = 0.99, weight decay 0.1, clip 1.0). Its 2000 iterations set the time budget (unless ``--seconds``).
2. **tiny DeepSeek-V3** -- ``tiny()``, trained with the course recipe (batch 32 x 64, lr 3e-3, warmup 15,
   cosine to 0.1x, γ = 0.01, α = 1e-4), MTP off (the preset's sweep, ``bench/sweep_preset.py``, found
   next-token loss lower without it at equal time).
3. **the same with the reference paths** -- per-expert Python loop, einsum attention, op-by-op RMSNorm,
   for-loop AdamW: the implementation before the fast paths, so the speed-up is measured in the same run.
4. **its dense twin** -- the same attention and sizes, every FFN a dense SwiGLU whose width equals the
   MoE's activated width (N_s + K_r experts), so activated FFN parameters match (the router's N_r·d
   weights aside).
5. **transformers' DeepseekV3ForCausalLM** built from the identical config (its default sdpa attention and
   grouped_mm experts; no MTP, as transformers trains none), trained by the same loop and recipe.
6. **tiny DeepSeek-V3 + MTP** (D = 1, λ = 0.3), for the record: the chapters 7-8 recipe.
7. **the dense twin stopped at the tiny model's step count** -- not an equal-time row: it separates what a
   step learns from what a step costs (``--skip equal-steps`` leaves it out).

How "equal wall-clock" is measured. A machine's speed drifts: on the quiet 2-core machine of issue 7 two
runs of the same model minutes apart averaged 70 and 92 ms a step, enough to flip a comparison of
sequential timed runs. So the bench first **times** every model by alternating single training steps of
all of them (``--timing-rounds`` rounds, each model on its own recipe's batch, medians), so every model
is timed under the same conditions, then gives each model the number of steps that fits the budget at
that speed (budget = nanoGPT's 2000 steps at its measured speed) and trains it **by step count**. The
losses are then reproducible for a given seed and step count, and the speed ratios are ratios of medians
taken side by side. ``--seeds 0,1,2`` repeats the training for several seeds (initial weights and batch
order) and reports the mean and range, because at this scale two seeds can differ by more than the gap
between two models.

Printed: parameters (total, activated per token), ms per step and tokens/s from the interleaved timing,
steps, validation loss (nats/char) and the ratios, then the issue's checks as PASS/FAIL lines (on the mean
over seeds): tiny loss <= 0.90x nanoGPT's; tiny loss <= its dense twin's; tiny tokens/s >= 1.5x
transformers'.

On a machine shared with other jobs, 2-thread wall-clock timings can swing by an order of magnitude
from one step to the next; ``--threads 1 --clock process`` then times CPU seconds instead (with one
thread other programs barely disturb them). Compare numbers from the same run only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.model import DeepSeekV3, count_parameters, tiny  # noqa: E402
from dsv3_lessons.model.deepseek_v3 import use_reference_paths  # noqa: E402
from dsv3_lessons.tools.baselines import (COURSE_RECIPE, NANOGPT_RECIPE, NanoGPT, _Out, dense_twin,  # noqa: E402,F401
                                          step_times)
from dsv3_lessons.tools.data import TextData, load_corpus, unigram_entropy  # noqa: E402
from dsv3_lessons.tools.train import TrainConfig, evaluate, train  # noqa: E402

EVAL = dict(batches=16, batch_size=32, seq_len=64)


# nanoGPT, the dense twin, the recipes and the interleaved timing live in dsv3_lessons.tools.baselines (chapter 10
# trains the same baselines).


# ----------------------------------------------------------------------------- transformers, same loop
class HFCausalLM(nn.Module):
    """transformers' ``DeepseekV3ForCausalLM`` behind the interface :func:`train` expects."""

    def __init__(self, cfg):
        super().__init__()
        import transformers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.hf = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**cfg.to_dict()))
        self.cfg = cfg  # identical config: same parameter counts (its balancing biases are buffers too)
        self.impl = (f"attention {self.hf.config._attn_implementation}, "
                     f"experts {getattr(self.hf.config, '_experts_implementation', '?')}")

    def forward(self, idx, targets=None, compute_mtp=None) -> _Out:
        logits = self.hf(idx).logits
        out = _Out(logits)
        if targets is not None:
            out.loss = out.main_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                       targets.reshape(-1))
        return out


def reference_paths(model: nn.Module) -> nn.Module:
    """The model on its reference code paths (:func:`use_reference_paths`) and the per-tensor AdamW."""
    use_reference_paths(model)
    model.reference_optimizer = True
    return model


# ----------------------------------------------------------------------------- the runs
def course_recipe(args) -> dict:
    return dict(COURSE_RECIPE)


def run(name: str, build: Callable[[], nn.Module], recipe: dict, data: TextData, args, steps: int,
        seed: int) -> dict:
    """Build (seeded), train ``steps`` steps, evaluate on the fixed held-out windows; return the row."""
    torch.manual_seed(seed)
    model = build()
    cfg = TrainConfig(steps=steps, eval_interval=0, eval_batches=1, seed=seed, num_threads=args.threads,
                      clock=args.clock, fused_optimizer=not getattr(model, "reference_optimizer", False), **recipe)
    hist = train(model, data, cfg, progress=False)
    return dict(steps=hist.steps_done, val=evaluate(model, data, **EVAL), run_tokens_per_s=hist.tokens_per_second)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="tiny DeepSeek-V3 vs nanoGPT, dense twin and transformers, 2 CPU threads")
    p.add_argument("--seconds", type=float, default=None,
                   help="wall-clock budget per model (default: the nanoGPT recipe's 2000 iterations at its speed timed here)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="'wall' (default) or 'process': budgets and tokens/s in CPU seconds of this process, "
                        "for a machine shared with other jobs (needs --threads 1)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2 (mean and range)")
    p.add_argument("--timing-rounds", type=int, default=30,
                   help="rounds of alternating single steps used to time every model")
    p.add_argument("--skip", default="", help="comma-separated rows to skip: reference, mtp, equal-steps")
    args = p.parse_args(argv)
    if args.seconds is not None and args.seconds <= 0:
        p.error("--seconds must be > 0")
    if args.clock == "process" and args.threads != 1:
        p.error("--clock process needs --threads 1 (threads waiting on each other would count as work)")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        p.error("--seeds needs at least one seed")
    if args.timing_rounds < 3:
        p.error("--timing-rounds must be >= 3")
    torch.set_num_threads(args.threads)

    corpus = load_corpus()
    data = TextData.from_corpus(corpus)
    vocab = data.vocab_size
    h_val = unigram_entropy(data.tokens("val"))
    cfg = tiny(vocab_size=vocab)
    no_mtp = cfg.replace(num_nextn_predict_layers=0)
    width = (cfg.n_shared_experts + cfg.num_experts_per_tok) * cfg.moe_intermediate_size
    dense = dense_twin(cfg)
    print(f"corpus: {corpus.source}; {corpus.train_chars:,} train / {corpus.val_chars:,} held-out characters, "
          f"vocabulary {vocab}; unigram entropy of the held-out text {h_val:.4f} nats/char")
    print(f"tiny(): d={cfg.hidden_size}, {cfg.num_hidden_layers} layers ({cfg.first_k_dense_replace} dense), "
          f"{cfg.num_attention_heads} heads, N_r={cfg.n_routed_experts} in {cfg.n_group} groups (keep "
          f"{cfg.topk_group}), K_r={cfg.num_experts_per_tok}, N_s={cfg.n_shared_experts}, expert width "
          f"{cfg.moe_intermediate_size}; dense twin FFN width {width}")
    print(f"{args.threads} thread(s), {args.clock} clock, torch {torch.__version__}\n", flush=True)

    recipe = course_recipe(args)
    plan = {"nanoGPT CPU recipe": (lambda: NanoGPT(vocab), NANOGPT_RECIPE),
            "tiny DeepSeek-V3 (MTP off)": (lambda: DeepSeekV3(no_mtp), recipe),
            "same, reference paths": (lambda: reference_paths(DeepSeekV3(no_mtp)), recipe),
            "dense twin (MTP off)": (lambda: DeepSeekV3(dense), recipe),
            "transformers DeepseekV3": (lambda: HFCausalLM(no_mtp), recipe),
            "tiny DeepSeek-V3 + MTP": (lambda: DeepSeekV3(cfg, mtp_loss_weight=0.3), recipe)}
    if "reference" in skip:
        del plan["same, reference paths"]
    if "mtp" in skip:
        del plan["tiny DeepSeek-V3 + MTP"]
    builds = {name: build for name, (build, _) in plan.items()}
    recipes = {name: rec for name, (_, rec) in plan.items()}

    sec = step_times(builds, recipes, data, args.timing_rounds, args.threads, args.clock, seeds[0])
    budget = args.seconds if args.seconds is not None else 2000 * sec["nanoGPT CPU recipe"]
    steps = {name: 2000 if (name == "nanoGPT CPU recipe" and args.seconds is None)
             else max(1, round(budget / sec[name])) for name in plan}
    nano, ours, twin, hf = "nanoGPT CPU recipe", "tiny DeepSeek-V3 (MTP off)", "dense twin (MTP off)", \
        "transformers DeepseekV3"
    equal = "dense twin, tiny's step count"
    if "equal-steps" not in skip:  # step for step: does the MoE learn more per step than its twin?
        plan[equal], recipes[equal], sec[equal], steps[equal] = plan[twin], recipes[twin], sec[twin], steps[ours]
    print(f"interleaved timing ({args.timing_rounds} rounds, {args.clock} clock): "
          + ", ".join(f"{name.strip()} {1000 * t:.1f} ms" for name, t in sec.items()))
    print(f"budget {budget:.1f} s per model ({'nanoGPT recipe: 2000 steps' if args.seconds is None else '--seconds'}"
          f") -> steps: " + ", ".join(f"{name.strip()} {n}" for name, n in steps.items()) + "\n", flush=True)

    vals: dict[str, list[float]] = {name: [] for name in plan}
    run_tps: dict[str, list[float]] = {name: [] for name in plan}
    for seed in seeds:
        for name, (build, rec) in plan.items():
            r = run(name, build, rec, data, args, steps[name], seed)
            vals[name].append(r["val"])
            run_tps[name].append(r["run_tokens_per_s"])
            print(f"  seed {seed}: {name} ({r['steps']} steps) val {r['val']:.4f}", flush=True)

    def mean(name):
        return statistics.fmean(vals[name])

    def spread(name):
        v = vals[name]
        return f"{mean(name):.4f}" + (f" [{min(v):.4f}, {max(v):.4f}]" if len(v) > 1 else "")

    tps = {name: recipes[name]["batch_size"] * recipes[name]["seq_len"] / sec[name] for name in plan}
    print(f"\n| run | params | activated | ms/step | tokens/s | steps | val loss (nats/char) | loss / nanoGPT |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (build, _) in plan.items():
        model = build()
        model_cfg = model.cfg if isinstance(model, DeepSeekV3) else getattr(model, "cfg", None)
        counts = count_parameters(model_cfg) if model_cfg is not None else None
        n_model = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {counts.total if counts else n_model:,} | {counts.activated if counts else n_model:,} | "
              f"{1000 * sec[name]:.1f} | {tps[name]:,.0f} | {steps[name]} | {spread(name)} | "
              f"{mean(name) / mean(nano):.3f} |")
    seeds_txt = f"seeds {', '.join(map(str, seeds))}" + (" (mean [min, max])" if len(seeds) > 1 else "")
    print(f"\n{seeds_txt}; transformers: {HFCausalLM(no_mtp).impl}")
    print("tokens/s during each model's own training run (sequential, drifts with the machine): "
          + ", ".join(f"{name.strip()} {statistics.fmean(run_tps[name]):,.0f}" for name in plan))
    speed = tps[ours] / tps[hf]
    print(f"speed ours / transformers (interleaved timing): {speed:.2f}x")
    if "same, reference paths" in plan:
        print(f"speed fast paths / reference paths: {tps[ours] / tps['same, reference paths']:.2f}x")
    print(f"speed dense twin / tiny DeepSeek-V3: {tps[twin] / tps[ours]:.2f}x")
    if equal in plan:
        print(f"step for step ({steps[ours]} steps each): tiny {mean(ours):.4f} vs dense twin {mean(equal):.4f} "
              f"(per seed, tiny - twin: {', '.join(f'{a - b:+.4f}' for a, b in zip(vals[ours], vals[equal]))})")
    per_seed = [f"{a - b:+.4f}" for a, b in zip(vals[ours], vals[twin])]
    checks = [
        (f"tiny val loss {mean(ours):.4f} <= 0.90 x nanoGPT's {mean(nano):.4f} = {0.9 * mean(nano):.4f}",
         mean(ours) <= 0.9 * mean(nano)),
        (f"tiny val loss {mean(ours):.4f} <= dense twin's {mean(twin):.4f} (per seed, tiny - twin: "
         f"{', '.join(per_seed)})", mean(ours) <= mean(twin)),
        (f"tiny tokens/s {tps[ours]:,.0f} >= 1.5 x transformers' {tps[hf]:,.0f} (ratio {speed:.2f})", speed >= 1.5),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
