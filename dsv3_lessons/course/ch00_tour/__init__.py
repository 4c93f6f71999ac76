"""Chapter 0 (tour): the paper ↔ code ↔ checkpoint crosswalk and the exercise checkers.

``crosswalk`` holds the one table that connects the papers' symbols, our parameter names, the released checkpoint's
names and the official inference code's names; ``exercises`` the chapter's checkers (and ``hint``, the next step
of an exercise's hint ladder).

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch00_tour import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.common.plots import plot_training_history
from dsv3_lessons.course.ch00_tour.crosswalk import crosswalk_html
from dsv3_lessons.course.ch00_tour.exercises import (BUGGY_GENERATE_SOURCE, check_conditional_entropy_function,
                                                     check_first_step_loss, check_greedy_generate,
                                                     check_moe_layer_params)

__all__ = ["___", "hint", "revealed", "plot_training_history", "crosswalk_html", "BUGGY_GENERATE_SOURCE",
           "check_conditional_entropy_function", "check_first_step_loss", "check_greedy_generate",
           "check_moe_layer_params"]
