"""Chapter 6 (load balancing): no balancing, batch-wise aux loss, the loss-free bias and bias + sequence loss,
trained side by side; MaxVio; node-limited dispatch.

``runs`` (train the four methods and store their histories: ``python -m dsv3_lessons.course.ch06_balancing``),
``sequences`` (MaxVio per held-out sequence with and without the sequence-wise loss: ``... --sequence-study``),
``figures`` (bias loop and dispatch diagrams, stored-run plots), ``widget`` (expert load) and ``exercises``.
Builds on chapter 5's routing.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch06_balancing import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch06_balancing.exercises import (GAMMAS_6_3, check_gamma_prediction,
                                                          check_node_max_violation, check_padded_balance_loss,
                                                          check_update_bias, check_wire_bytes, unfixed_update_bias)
from dsv3_lessons.course.ch06_balancing.figures import (draw_bias_loop, draw_dispatch_combine,
                                                        plot_balance_curves, plot_bias_trajectories,
                                                        plot_load_heatmaps, plot_rule_comparison, plot_seed_scatter,
                                                        plot_traffic, seed_results)
from dsv3_lessons.course.ch06_balancing.runs import LABELS, load_runs, METHODS, resimulate_bias, sample_batches
from dsv3_lessons.course.ch06_balancing.sequences import load_sequence_study
from dsv3_lessons.course.ch06_balancing.widget import expert_load_widget, load_view, RESIM
from dsv3_lessons.course.ch05_routing import load_snapshot, trained_gates

__all__ = ["___", "hint", "revealed", "GAMMAS_6_3", "check_gamma_prediction", "check_node_max_violation",
           "check_padded_balance_loss", "check_update_bias", "check_wire_bytes", "unfixed_update_bias",
           "resimulate_bias", "sample_batches",
           "load_sequence_study", "draw_bias_loop",
           "draw_dispatch_combine", "plot_balance_curves", "plot_bias_trajectories", "plot_load_heatmaps",
           "plot_rule_comparison",
           "plot_seed_scatter", "plot_traffic", "seed_results", "LABELS", "load_runs", "METHODS",
           "expert_load_widget", "load_view", "RESIM", "load_snapshot", "trained_gates"]
