"""Chapter 00: the training-curve figure (plots.plot_training_history) and the stored notebook.

Oracles: moving averages recomputed by hand for the figure's data; the figure's own geometry (the legend's box
must not overlap the axes, so it cannot hide a reference line); the training config written in the notebook for
the progress bar's final state. The exercise checkers are tested in test_exercises_ch00_ch01.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dsv3_lessons.course.common.plots import plot_training_history  # noqa: E402
from dsv3_lessons.tools.train import History  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_tour.ipynb"


def test_training_plot_data():
    h = History(step=[1, 2, 3, 4], main_loss=[4.0, 3.0, 2.0, 1.0], val_step=[0, 4], val_loss=[4.4, 1.5])
    fig = plot_training_history(h, {"unigram entropy": 3.3, "ln V": 4.43}, smooth=2)
    ax = fig.axes[0]
    raw, avg, val = ax.lines[:3]
    assert list(raw.get_ydata()) == [4.0, 3.0, 2.0, 1.0]
    assert list(avg.get_ydata()) == pytest.approx([4.0, 3.5, 2.5, 1.5])   # 2-step moving average
    assert list(val.get_xdata()) == [0, 4] and list(val.get_ydata()) == [4.4, 1.5]
    refs = [ln.get_ydata()[0] for ln in ax.lines[3:]]
    assert refs == [3.3, 4.43]
    assert "nats" in ax.get_ylabel()
    plt.close(fig)


def test_training_plot_errors():
    with pytest.raises(ValueError, match="at least one step"):
        plot_training_history(History())
    with pytest.raises(ValueError, match="smooth"):
        plot_training_history(History(step=[1], main_loss=[1.0]), smooth=0)


def test_legend_never_covers_the_reference_lines():
    h = History(step=list(range(1, 151)), main_loss=[4.4 - 2.0 * i / 150 for i in range(150)],
                val_step=[0, 75, 150], val_loss=[4.46, 3.0, 2.34])
    fig = plot_training_history(h, {"unigram entropy (held-out)": 3.30, "ln V": 4.43})
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0] if fig.legends else ax.get_legend()
    lbox, abox = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not lbox.overlaps(abox)                          # outside the data area
    assert lbox.x1 <= fig.bbox.x1 + 1 and lbox.y1 <= fig.bbox.y1 + 1   # and not cut off
    for t in ax.texts:                                      # reference labels readable and inside the axes
        assert t.get_fontsize() >= 9
        e = t.get_window_extent(renderer)
        assert abox.x0 - 1 <= e.x0 and e.x1 <= abox.x1 + 1
    assert fig.get_figwidth() >= 9.5 and fig.dpi >= 110
    plt.close(fig)


def _code_cells():
    return [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def test_stored_training_cell_shows_the_final_progress_state():
    cells = _code_cells()
    steps = int(re.search(r"TrainConfig\(steps=(\d+)", "".join(next(
        c for c in cells if "TrainConfig(" in "".join(c["source"]))["source"])).group(1))
    train_cell = next(c for c in cells if "hist = train(" in "".join(c["source"]))
    assert "nbval-ignore-output" in train_cell["metadata"].get("tags", [])
    texts = ["".join(o["data"].get("text/plain", "")) for o in train_cell["outputs"] if "data" in o]
    bars = [t for t in texts if "train" in t and "/" in t]
    assert bars and all(f"{steps}/{steps}" in t for t in bars), bars
    assert not any(re.search(rf"\b0/{steps}\b", t) for t in texts)


def test_map_lists_chapters_7_to_9_with_links_and_terms_defined_before_use():
    nb = json.loads(NOTEBOOK.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for target in ("07_multi_token_prediction.ipynb", "08_speculative_decoding.ipynb", "09_fp8_training.ipynb"):
        assert f"]({target})" in md, target
    train_md = next("".join(c["source"]) for c in nb["cells"]
                    if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Training"))
    for term in (r"$\lambda$", r"$\gamma$", r"\mathcal{L}_{bal}", "MaxVio"):
        first = md.index(term)
        assert md.index(train_md) <= first, f"{term} used before the training section defines it"
        assert term in train_md
