"""Chapter 9 (FP8 training): E4M3/E5M2, per-tensor vs 1×128 / 128×128 scaling, limited-precision accumulation.

``experiments`` (outlier activations, error reports, the accumulation sweep), ``figures`` (scaling grids, the
promotion diagram, V3 Fig. 6's dataflow and plots), ``widget`` and ``exercises``. Builds on chapter 4's V3-size attention layer.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch09_fp8 import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, is_placeholder, revealed
from dsv3_lessons.course.ch09_fp8.exercises import (check_block_quantizer, check_dequantize_rows,
                                                    check_outlier_prediction, check_promoted_sum)
from dsv3_lessons.course.ch09_fp8.experiments import (accumulation_sweep, error_report, GRANULARITIES,
                                                      outlier_activations)
from dsv3_lessons.course.ch09_fp8.figures import (draw_fp8_grids, draw_mixed_precision, draw_promotion,
                                                  plot_accumulation_sweep, plot_loss_curves,
                                                  plot_representable_values)
from dsv3_lessons.course.ch09_fp8.widget import fp8_report, fp8_widget
from dsv3_lessons.course.ch04_mla_inference import build_mla, v3_attention_config

__all__ = ["___", "hint", "is_placeholder", "revealed", "check_block_quantizer", "check_dequantize_rows",
           "check_outlier_prediction", "check_promoted_sum",
           "accumulation_sweep", "error_report", "GRANULARITIES", "outlier_activations", "draw_fp8_grids",
           "draw_mixed_precision", "draw_promotion", "plot_accumulation_sweep", "plot_loss_curves", "plot_representable_values",
           "fp8_report", "fp8_widget", "build_mla", "v3_attention_config"]
