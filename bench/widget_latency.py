"""Widget latency in the browser: time from releasing a control to the updated figure, per widget.

The numbers come from the browser suite (``make test-browser`` writes ``build/widget_latency.json``): for every
move of every control, the time from the release event (pointerup / keydown / change / click) to the
widget's ``<img>`` getting its new ``src``, measured in the page (MutationObserver, ``performance.now()``).
Moves that changed nothing are left out; Play frames count from the linked slider's change.

    python bench/widget_latency.py                          # build/widget_latency.json as a table
    python bench/widget_latency.py A.json                   # another run
    python bench/widget_latency.py BEFORE.json AFTER.json   # side by side, with the ratio of medians

The baseline before the widget speed work is ``bench/widget_latency_before.json``. Times depend on the load of
the machine (the JSON's ``meta`` says which cores, load average and browser); compare runs made on the same
machine, one after the other.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def samples(run: dict) -> dict[str, list[tuple[float, str]]]:
    """``{"chapter widget": [(ms, "control action"), ...]}`` for the moves that changed the figure."""
    out: dict[str, list[tuple[float, str]]] = {}
    for m in run["moves"]:
        key = f"{m['widget']} ({m['chapter'][:2]})"
        if m.get("latency_ms") is not None:
            out.setdefault(key, []).append((m["latency_ms"], f"{m['control']} {m['action']}"))
        for ms in m.get("frames", []):
            out.setdefault(key, []).append((ms, f"{m['control']} frame"))
    return out


def summary(values: list[tuple[float, str]]) -> tuple[float, float, int, str]:
    """(median ms, max ms, n, the slowest move)."""
    ms = [v for v, _ in values]
    worst = max(values)
    return statistics.median(ms), worst[0], len(ms), worst[1]


def table(run: dict) -> str:
    rows = ["| widget (chapter) | p50 ms | max ms | n | slowest move |", "|---|---:|---:|---:|---|"]
    for key, values in samples(run).items():
        p50, mx, n, slowest = summary(values)
        rows.append(f"| {key} | {p50:,.0f} | {mx:,.0f} | {n} | {slowest} |")
    return "\n".join(rows)


def side_by_side(before: dict, after: dict) -> str:
    a, b = samples(before), samples(after)
    rows = ["| widget (chapter) | before p50 | after p50 | after / before | before max | after max | n before / after |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for key in list(dict.fromkeys([*a, *b])):
        if key in a and key in b:
            (p0, m0, n0, _), (p1, m1, n1, _) = summary(a[key]), summary(b[key])
            rows.append(f"| {key} | {p0:,.0f} | {p1:,.0f} | {p1 / p0:.2f} | {m0:,.0f} | {m1:,.0f} | {n0} / {n1} |")
        else:
            p, m, n, _ = summary(a.get(key) or b.get(key))
            cells = [f"{p:,.0f}", "–", "–", f"{m:,.0f}", "–", f"{n} / –"] if key in a else \
                ["–", f"{p:,.0f}", "–", "–", f"{m:,.0f}", f"– / {n}"]
            rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def describe(run: dict, name: str) -> str:
    m = run.get("meta", {})
    return (f"{name}: {m.get('measured', '?')}, {m.get('cores', '?')} cores, load {m.get('load_average_1min_at_end', '?')}, "
            f"Chromium {m.get('chromium', '?')}, JupyterLab {m.get('jupyterlab', '?')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the browser suite's widget latencies (ms).")
    parser.add_argument("runs", nargs="*", type=Path, help="one JSON (table) or two (before, after)")
    args = parser.parse_args(argv)
    paths = args.runs or [ROOT / "build" / "widget_latency.json"]
    if len(paths) > 2:
        parser.error("give one JSON, or two (before and after)")
    runs = []
    for p in paths:
        if not p.exists():
            parser.error(f"{p} not found: run `make test-browser` first (it writes build/widget_latency.json)")
        runs.append(json.loads(p.read_text()))
    for p, run in zip(paths, runs):
        print(describe(run, p.name))
    print()
    print(table(runs[0]) if len(runs) == 1 else side_by_side(*runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
