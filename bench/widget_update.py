"""In-process latency of one widget update (Python side only: compute, draw, PNG, readout), per course widget.

The browser suite (``bench/widget_latency.py``) measures release-to-figure in a page; this measures what the kernel
spends per control change, with no browser: every widget is built headless, each control in a fixed list of
moves is set (``control.value = v``, which runs the widget's update synchronously), and the median time of a move
is reported. A first pass over the moves is not timed (first layouts, first backgrounds, caches of the report
functions); then ``--repeats`` passes are timed.

    python bench/widget_update.py                         # this tree, a table
    python bench/widget_update.py --json out.json         # also as JSON
    python bench/widget_update.py --compare BEFORE_DIR AFTER_DIR --rounds 3
        # two source trees side by side: each round runs BEFORE then AFTER (one subprocess each, with that
        # tree first on PYTHONPATH), the median over rounds per widget, and the ratio after / before

Times depend on the machine's load; only the ratio of a side-by-side run means anything. Needs the prepared
corpus (``DSV3_CACHE_DIR``) and the stored runs (chapters 5 and 6).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _moves():
    """``{widget name: (builder, [(control name, value), ...])}``; imports happen inside the builders."""
    def ch01():
        from dsv3_lessons.course.ch01_kv_cache import kv_cache_widget
        return kv_cache_widget()

    def ch02():
        from dsv3_lessons.course.ch02_mla import mla_rank_widget
        return mla_rank_widget()

    def ch03():
        from dsv3_lessons.course.ch03_rope import rope_widget
        return rope_widget()

    def ch04():
        from dsv3_lessons.course.ch04_mla_inference import decode_cost_widget
        return decode_cost_widget()

    def ch05():
        from dsv3_lessons.course.ch05_routing import load_snapshot, routing_explorer
        return routing_explorer(load_snapshot())

    def ch06():
        from dsv3_lessons.course.ch06_balancing import expert_load_widget, load_runs, load_snapshot
        return expert_load_widget(load_runs(), load_snapshot(which="unbalanced"))

    def ch07():
        from dsv3_lessons.course.ch07_mtp import WindowExplorer
        return WindowExplorer()

    def ch08():
        import torch

        from dsv3_lessons.course.ch08_speculative import SpeculativeWidget
        from dsv3_lessons.model import DeepSeekV3, tiny
        from dsv3_lessons.tools.data import CharTokenizer

        torch.manual_seed(0)
        model = DeepSeekV3(tiny(vocab_size=5)).eval()
        return SpeculativeWidget(model, CharTokenizer("abcde"), prompt="abcab", max_new_tokens=12)

    def ch09():
        from dsv3_lessons.course.ch09_fp8 import fp8_widget
        return fp8_widget()

    return {
        "KV cache (01)": (ch01, [("context", 4096), ("batch", 16), ("dtype", "fp8"), ("model", "LLaMA-3.1-405B"),
                                 ("kv_lora_rank", 1024), ("context", 131072), ("batch", 1), ("dtype", "bf16"),
                                 ("model", "DeepSeek-V3"), ("kv_lora_rank", 512)]),
        "MLA ranks (02)": (ch02, [("kv_lora_rank", 256), ("q_lora_rank", 768), ("num_attention_heads", 64),
                                  ("kv_lora_rank", 512), ("q_lora_rank", 1536), ("num_attention_heads", 128)]),
        "RoPE (03)": (ch03, [("query_pos", 300), ("freq_index", 20), ("yarn_factor", 8.0), ("key_pos", 100),
                             ("query_pos", 12), ("freq_index", 16), ("yarn_factor", 40.0), ("key_pos", 4)]),
        "decode cost (04)": (ch04, [("context", 1024), ("heads", 16), ("batch", 64), ("queries", 2),
                                    ("context", 4096), ("heads", 128), ("batch", 1), ("queries", 1)]),
        "routing (05)": (ch05, [("position", 20), ("bias", 0.5), ("expert", 3), ("n_group", 2), ("n_group", 4),
                                ("position", 10), ("bias", 0.0), ("expert", 0)]),
        "expert load (06)": (ch06, [("step", 50), ("step", 120), ("layer", 1), ("method", "none"), ("step", 80),
                                    ("method", "bias"), ("layer", 0), ("step", 200)]),
        "MTP window (07)": (ch07, [("lam", 0.1), ("depths", 1), ("docs", "5, 4, 4"), ("depths", 3),
                                   ("docs", "20, 30, 2, 13"), ("lam", 0.3), ("depths", 2)]),
        "speculative (08)": (ch08, [("k", 3), ("temperature", 0.5), ("k", 1), ("temperature", 0.0)]),
        "FP8 (09)": (ch09, [("granularity", "tile"), ("outlier", 316.0), ("fmt", "e5m2"), ("granularity", "block"),
                            ("outlier", 10000.0), ("fmt", "e4m3"), ("granularity", "tensor")]),
    }


def measure(repeats: int) -> dict[str, dict]:
    """``{widget: {"median_ms", "moves"}}`` for this interpreter's ``dsv3_lessons``."""
    import matplotlib
    matplotlib.use("Agg")
    out = {}
    for name, (build, moves) in _moves().items():
        w = build()
        for control, value in moves:                    # warm-up pass, not timed
            setattr(w.controls[control], "value", value)
        times = []
        for _ in range(repeats):
            for control, value in moves:
                t0 = time.perf_counter()
                setattr(w.controls[control], "value", value)
                times.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"median_ms": statistics.median(times), "moves": len(times)}
    return out


def _table(before: dict, after: dict | None = None) -> str:
    if after is None:
        rows = ["| widget (chapter) | one update, median ms |", "|---|---:|"]
        rows += [f"| {k} | {v['median_ms']:.1f} |" for k, v in before.items()]
        return "\n".join(rows)
    rows = ["| widget (chapter) | before ms | after ms | after / before |", "|---|---:|---:|---:|"]
    for k in before:
        b, a = before[k]["median_ms"], after[k]["median_ms"]
        rows.append(f"| {k} | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    return "\n".join(rows)


def _run_tree(tree: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_WAIT_POLICY="PASSIVE")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--repeats", str(repeats), "--emit-json"],
                         env=env, cwd=os.path.abspath(tree), capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the moves (default 3)")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE_DIR", "AFTER_DIR"))
    p.add_argument("--rounds", type=int, default=3, help="with --compare: alternating rounds (default 3)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.emit_json:
        print(json.dumps(measure(a.repeats)))
        return
    if a.compare is None:
        result = measure(a.repeats)
        print(_table(result))
    else:
        runs = {"before": [], "after": []}
        for _ in range(a.rounds):
            runs["before"].append(_run_tree(a.compare[0], a.repeats))
            runs["after"].append(_run_tree(a.compare[1], a.repeats))
        result = {side: {k: {"median_ms": statistics.median(r[k]["median_ms"] for r in rs), "rounds": len(rs)}
                         for k in rs[0]} for side, rs in runs.items()}
        result["meta"] = {"rounds": a.rounds, "repeats": a.repeats, "loadavg": os.getloadavg(),
                          "cpus": os.cpu_count()}
        print(_table(result["before"], result["after"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
