"""Chapter 3 (decoupled RoPE and YaRN): pair rotation, relative position, why RoPE on keys blocks the fold, YaRN.

``experiments`` (fold checks, position-0 probes, the YaRN table, the explorer's plain function), ``figures``
(RoPE placement diagram, score/fold/YaRN plots), ``widget`` and ``exercises``.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch03_rope import ...``.
"""
from dsv3_lessons.course.common.checking import ___
from dsv3_lessons.course.ch03_rope.exercises import (check_position_zero, check_rope_placements,
                                                     check_softmax_scale, check_yarn_frequencies,
                                                     SCALE_EXERCISE_CONFIG, YARN_EXERCISE_CONFIGS)
from dsv3_lessons.course.ch03_rope.experiments import rope_explorer
from dsv3_lessons.course.ch03_rope.figures import (draw_rope_placement, plot_fold_by_key_position,
                                                   plot_rope_explorer, plot_score_vs_distance,
                                                   plot_yarn_frequencies)
from dsv3_lessons.course.ch03_rope.widget import rope_widget

__all__ = ["___", "check_position_zero", "check_rope_placements", "check_softmax_scale", "check_yarn_frequencies",
           "SCALE_EXERCISE_CONFIG", "YARN_EXERCISE_CONFIGS", "rope_explorer", "draw_rope_placement",
           "plot_fold_by_key_position", "plot_rope_explorer", "plot_score_vs_distance", "plot_yarn_frequencies",
           "rope_widget"]
