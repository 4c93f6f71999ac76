"""Chapter 8 (speculative decoding): the MTP module as a draft, verified by the main model on the latent cache.

``experiments`` (held-out prompts, the speculative report), ``figures`` (draft/verify step), ``widget`` and
``exercises``. Builds on chapter 7.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch08_speculative import ...``.
"""
from dsv3_lessons.course.common.checking import ___
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.ch08_speculative.exercises import (check_acceptance_probability,
                                                            check_acceptance_rule, check_tokens_per_step)
from dsv3_lessons.course.ch08_speculative.experiments import held_out_prompts, speculative_report
from dsv3_lessons.course.ch08_speculative.figures import draw_speculative_step
from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget
from dsv3_lessons.course.ch07_mtp import mtp_train_config_kwargs

__all__ = ["___", "PALETTE", "subplots", "check_acceptance_probability", "check_acceptance_rule",
           "check_tokens_per_step", "held_out_prompts", "speculative_report", "draw_speculative_step",
           "SpeculativeWidget", "mtp_train_config_kwargs"]
