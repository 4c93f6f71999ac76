"""Speculative decoding with the MTP draft vs plain decoding, measured side by side in one run.

Usage::

    python bench/speculative.py                                  # train 300 steps, then measure k = 1, 2, 4
    python bench/speculative.py --train-steps 800 --save  data/cache/mtp_tiny.pt   # train longer, keep it
    python bench/speculative.py --checkpoint data/cache/mtp_tiny.pt               # re-measure a stored model
    python bench/speculative.py --train-steps 800 --ks 1 2 3 4 --record dsv3_lessons/course/ch08_speculative/longer_run.json

The tiny DeepSeek-V3 (one MTP module) is trained with the chapters' recipe (λ 0.3 -> 0.1 at V3's switch
point, scaled to the run) unless a checkpoint is given. Then, on held-out prompts (validation works never
seen in training), greedy decoding runs plainly and speculatively back to back for every prompt, both on
the latent cache, alternating which goes first. It prints, per draft length k: per-position acceptance
rates, mean accepted length (1 + Σ rates), tokens per main-model forward, tokens/s of both decoders and
their ratio, and whether every speculative output equalled the plain one (it must, for greedy decoding).
Prompt + new tokens default to the 64-token training window: beyond it both the main model and the module
run at positions they never saw, and agreement collapses; ``--beyond-new-tokens`` measures k = 1 there too.

``--record FILE`` writes the run as JSON (training, per-k acceptance, tokens per forward, the beyond-window
acceptance, the command and the machine). Chapter 8 prints its "longer-trained model" numbers from the record in
``dsv3_lessons/course/ch08_speculative/longer_run.json`` (made by the last usage line above), so the prose never
types them.

Timings depend on the machine and what else runs on it; only the ratios of one run mean anything.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from dsv3_lessons.course.ch08_speculative.experiments import held_out_prompts  # noqa: E402
from dsv3_lessons.course.ch07_mtp.experiments import mtp_train_config_kwargs
from dsv3_lessons.model import DeepSeekV3, tiny  # noqa: E402
from dsv3_lessons.tools.data import TextData, load_corpus  # noqa: E402
from dsv3_lessons.tools.speculative import compare_speed  # noqa: E402
from dsv3_lessons.tools.train import TrainConfig, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="speculative decoding with the MTP draft vs plain decoding")
    p.add_argument("--train-steps", type=int, default=300, help="training steps when no checkpoint is given")
    p.add_argument("--checkpoint", type=Path, help="load this state dict instead of training")
    p.add_argument("--save", type=Path, help="save the trained state dict here")
    p.add_argument("--prompts", type=int, default=6, help="held-out prompts")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=48,
                   help="prompt + new tokens should stay within the 64-token training window")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beyond-new-tokens", type=int, default=116,
                   help="also measure k = 1 with this many new tokens (past the training window); 0: skip")
    p.add_argument("--record", type=Path, help="write the results as JSON to this file")
    args = p.parse_args(argv)
    record = {"command": "python bench/speculative.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": args.threads,
              "prompts": args.prompts, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "ks": {}}
    torch.set_num_threads(args.threads)
    data = TextData.from_corpus(load_corpus())
    torch.manual_seed(0)
    model = DeepSeekV3(tiny(vocab_size=data.vocab_size))
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint))
        print(f"loaded {args.checkpoint}")
    else:
        t0 = time.perf_counter()
        hist = train(model, data, TrainConfig(**mtp_train_config_kwargs(args.train_steps)), progress=False)
        print(f"trained {hist.steps_done} steps in {time.perf_counter() - t0:.0f} s: validation loss "
              f"{hist.val_loss[-1]:.3f} nats/char, last MTP loss {hist.mtp_loss[-1]:.3f}")
        record.update(train_steps=hist.steps_done, val_loss=hist.val_loss[-1], last_mtp_loss=hist.mtp_loss[-1])
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.save)
            print(f"saved {args.save}")
    model.eval()
    prompts = held_out_prompts(data, args.prompts, args.prompt_len)
    print(f"\n{args.prompts} held-out prompts x {args.repeats} repeats, {args.new_tokens} new tokens each, greedy, "
          f"{args.threads} thread(s), latent cache on both sides\n")
    print(f"{'k':>2} {'acceptance per position':<28} {'mean acc. len':>13} {'tok/forward':>11} "
          f"{'plain tok/s':>11} {'spec tok/s':>10} {'speed-up':>8} {'same text':>9}")
    for k in args.ks:
        r = compare_speed(model, prompts, args.new_tokens, k=k, repeats=args.repeats)
        rates = " ".join(f"{x:.2f}" for x in r["acceptance_rates"])
        print(f"{k:>2} {rates:<28} {r['mean_accepted_length']:>13.2f} {r['tokens_per_forward']:>11.2f} "
              f"{r['plain_tps']:>11.0f} {r['spec_tps']:>10.0f} {r['speedup']:>7.2f}x {str(r['identical']):>9}")
        record["ks"][str(k)] = {key: r[key] for key in ("acceptance_rates", "mean_accepted_length",
                                                        "tokens_per_forward", "speedup", "identical")}
    if args.beyond_new_tokens:
        r = compare_speed(model, prompts, args.beyond_new_tokens, k=1, repeats=1)
        print(f"\nk = 1 over {args.prompt_len + args.beyond_new_tokens} positions (training window 64): acceptance "
              f"{r['acceptance_rates'][0]:.2f}, {r['tokens_per_forward']:.2f} tokens per main forward")
        record["beyond_window"] = {"positions": args.prompt_len + args.beyond_new_tokens,
                                   "acceptance_rates": r["acceptance_rates"],
                                   "tokens_per_forward": r["tokens_per_forward"]}
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"recorded {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
