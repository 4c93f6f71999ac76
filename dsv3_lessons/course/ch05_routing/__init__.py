"""Chapter 5 (DeepSeekMoE routing): fine-grained and shared experts, group-limited sigmoid routing on a trained model.

``routing`` (route one token step by step, the group score's K_r/M rule, MoE arithmetic, specialisation), ``snapshot``
(the stored trained router, written by chapter 6's command), ``figures``, ``widget`` (routing explorer) and
``exercises``.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch05_routing import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch05_routing.exercises import (check_bias_threshold, check_cluster_design, check_group_mask,
                                                        check_limit_prediction, check_route)
from dsv3_lessons.course.ch05_routing.figures import draw_routing, plot_specialisation
from dsv3_lessons.course.ch05_routing.routing import (CHAR_CLASSES, experts_reachable, limit_changes, moe_arithmetic,
                                                      route_token, snapshot_config, specialisation, token_context,
                                                      top_chars, trained_gates)
from dsv3_lessons.course.ch05_routing.snapshot import load_snapshot
from dsv3_lessons.course.ch05_routing.widget import explore_route, routing_explorer

__all__ = ["___", "hint", "revealed", "check_bias_threshold", "check_cluster_design", "check_group_mask",
           "check_limit_prediction", "check_route", "draw_routing", "plot_specialisation", "CHAR_CLASSES",
           "experts_reachable", "limit_changes", "moe_arithmetic", "route_token", "snapshot_config", "specialisation",
           "token_context", "top_chars", "trained_gates", "load_snapshot", "explore_route", "routing_explorer"]
