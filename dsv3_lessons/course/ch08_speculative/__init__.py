"""Chapter 8 (speculative decoding): the MTP module as a draft, verified by the main model on the latent cache.

``experiments`` (held-out prompts, pooled acceptance, the widget's report, the stored longer run), ``figures``
(draft/verify step), ``widget`` and ``exercises``.
Builds on chapter 7.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch08_speculative import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.ch08_speculative.exercises import (check_tokens_per_forward_prediction, check_topk_draft,
                                                            check_verify_cost, check_verify_step)
from dsv3_lessons.course.ch08_speculative.experiments import (held_out_prompts, longer_run, pooled_stats,
                                                              prompt_limits, speculative_report)
from dsv3_lessons.course.ch08_speculative.figures import draw_speculative_step
from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget
from dsv3_lessons.course.ch07_mtp import mtp_train_config_kwargs

__all__ = ["___", "hint", "revealed", "PALETTE", "subplots", "check_tokens_per_forward_prediction", "check_topk_draft",
           "check_verify_cost", "check_verify_step", "held_out_prompts", "longer_run", "pooled_stats",
           "prompt_limits", "speculative_report", "draw_speculative_step", "SpeculativeWidget",
           "mtp_train_config_kwargs"]
