"""bench/train_cpu.py: its pieces run and mean what they say (no timing is asserted; ratios live in bench/)."""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.tools.data import TextData


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "train_cpu.py"
    spec = importlib.util.spec_from_file_location("bench_train_cpu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def toy_data() -> TextData:
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, 12, (300,), generator=g) for _ in range(4)]
    return TextData(docs, [torch.randint(0, 12, (200,), generator=g) for _ in range(2)])


def test_nanogpt_has_the_published_size(bench):
    """4 layers x (2 LayerNorms + qkv + proj + 4x MLP) + token and position embeddings + final norm, tied head:
    806,528 parameters at the course vocabulary of 84 -- the recipe's 'about 0.80 M'."""
    d, layers, vocab, block = 128, 4, 84, 64
    per_layer = 2 * d + d * 3 * d + d * d + d * 4 * d + 4 * d * d
    expected = layers * per_layer + vocab * d + block * d + d
    assert expected == 806_528
    assert sum(p.numel() for p in bench.NanoGPT(vocab).parameters()) == expected


def test_step_times_and_run_by_steps(bench):
    data = toy_data()
    cfg = tiny(vocab_size=12, num_nextn_predict_layers=0)
    small = dict(batch_size=4, seq_len=16, lr=3e-3, warmup_steps=1, min_lr_ratio=0.1)
    builds = {"nano": lambda: bench.NanoGPT(12, n_layer=1, n_embd=32, block=16), "tiny": lambda: DeepSeekV3(cfg)}
    recipes = {"nano": small, "tiny": dict(small, bias_update_speed=0.01)}
    sec = bench.step_times(builds, recipes, data, rounds=3, threads=1)
    assert set(sec) == {"nano", "tiny"} and all(t > 0 for t in sec.values())
    args = argparse.Namespace(threads=1, clock="wall")
    rows = [bench.run("tiny", builds["tiny"], recipes["tiny"], data, args, steps=3, seed=s) for s in (0, 0, 1)]
    assert all(r["steps"] == 3 and math.isfinite(r["val"]) for r in rows)
    assert rows[0]["val"] == rows[1]["val"] != rows[2]["val"]   # trained by step count: reproducible per seed


def test_bad_arguments_are_refused(bench):
    for argv in (["--seconds", "0"], ["--seeds", "a,b"], ["--timing-rounds", "2"],
                 ["--clock", "process", "--threads", "2"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
