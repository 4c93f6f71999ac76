"""Chapter 00 helpers: the training-curve figure (plots.plot_training_history) and exercise 0.1's checker.

Oracles: the per-expert size that follows from the released config (44,040,192) for the exercise; moving averages
recomputed by hand for the figure's data.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dsv3_lessons.course.exercises.ch00_tour import ExerciseError, check_moe_activated_params  # noqa: E402
from dsv3_lessons.course.plots import plot_training_history  # noqa: E402
from dsv3_lessons.tools.train import History  # noqa: E402

EXPERT = 44_040_192                 # one V3 expert from the released config.json: 3·7168·2048
GATE = 256 * 7168 + 256             # centroids + biases


def test_exercise_accepts_the_right_count():
    assert check_moe_activated_params((1 + 8) * EXPERT + GATE) is True


@pytest.mark.parametrize("wrong, hint", [
    ((1 + 256) * EXPERT + GATE, "all 257 experts"),
    (8 * EXPERT + GATE, "shared expert"),
    (9 * EXPERT, "add the gate"),
    (9 * 2 * 7168 * 2048 + GATE, "THREE matrices"),
    (12345, "SwiGLU with 3 matrices"),
])
def test_exercise_explains_common_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_moe_activated_params(wrong)


def test_exercise_rejects_non_numbers():
    with pytest.raises(ExerciseError, match="must be a number"):
        check_moe_activated_params("398M")
    with pytest.raises(ExerciseError, match="must be a number"):
        check_moe_activated_params(True)


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
