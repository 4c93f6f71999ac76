"""Chapter 3 (decoupled RoPE and YaRN): pair rotation, relative position, why RoPE on keys blocks the fold, YaRN.

``experiments`` (fold checks, position-0 probes, the YaRN table, the rope channels of a trained model, the
explorer's plain function), ``figures`` (RoPE placement diagram, score/fold/YaRN plots), ``widget`` and
``exercises``. Builds on chapter 2 (its trained-model class).

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch03_rope import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch03_rope.exercises import (BUGGY_ROPE_SCORES_STEP, SCALE_EXERCISE_CONFIG,
                                                     YARN_EXERCISE_CONFIGS, check_rope_placements,
                                                     check_rope_scores_step, check_rope_spread_prediction,
                                                     check_softmax_scale, check_yarn_paper_ramp, prompt_test)
from dsv3_lessons.course.ch03_rope.experiments import POSITION_ZERO_MISTAKES, logit_with_mistake, rope_explorer
from dsv3_lessons.course.ch03_rope.figures import (draw_rope_placement, plot_fold_by_key_position, plot_rope_channels,
                                                   plot_rope_explorer, plot_score_vs_distance,
                                                   plot_yarn_frequencies)
from dsv3_lessons.course.ch03_rope.widget import rope_widget

__all__ = ["___", "hint", "revealed", "BUGGY_ROPE_SCORES_STEP", "POSITION_ZERO_MISTAKES", "SCALE_EXERCISE_CONFIG",
           "YARN_EXERCISE_CONFIGS", "check_rope_placements", "check_rope_scores_step", "check_rope_spread_prediction",
           "check_softmax_scale", "check_yarn_paper_ramp", "prompt_test", "logit_with_mistake", "rope_explorer",
           "draw_rope_placement", "plot_fold_by_key_position", "plot_rope_channels", "plot_rope_explorer",
           "plot_score_vs_distance", "plot_yarn_frequencies", "rope_widget"]
