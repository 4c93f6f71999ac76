"""Chapter 4 (MLA at inference): absorbed decoding on the latent cache, decode variants, FLOPs and bytes.

``decode`` (the four decode variants, their timing, closed-form FLOPs/bytes), ``costs`` (MHA vs a per-head cache vs
absorbed MLA per decoded token: the crossover and the arithmetic intensity), ``figures`` (absorbed-decode diagram,
time/cost plots), ``widget`` (the decode-cost widget) and ``exercises``. Builds on chapter 2.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch04_mla_inference import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch04_mla_inference.costs import (H800_RIDGE, crossover_context, decode_cost_report,
                                                          mha_attention_flops, mha_params)
from dsv3_lessons.course.ch04_mla_inference.decode import (attention_flops, build_mla, context_latents,
                                                           decode_bytes_read, decode_flops, make_variants,
                                                           PerHeadKVCache, time_variants, v3_attention_config)
from dsv3_lessons.course.ch04_mla_inference.exercises import (check_break_even_queries, check_flops_ratio_prediction,
                                                              check_merged_output, check_mqa_decode,
                                                              check_ragged_decode)
from dsv3_lessons.course.ch04_mla_inference.figures import (draw_absorbed_decode, plot_absorb_tradeoff,
                                                            plot_decode_cost_report, plot_decode_costs,
                                                            plot_decode_times)
from dsv3_lessons.course.ch04_mla_inference.widget import decode_cost_widget

__all__ = ["___", "hint", "revealed", "H800_RIDGE", "crossover_context", "decode_cost_report",
           "mha_attention_flops", "mha_params", "attention_flops", "build_mla", "context_latents",
           "decode_bytes_read", "decode_flops", "make_variants", "PerHeadKVCache", "time_variants",
           "v3_attention_config", "check_break_even_queries", "check_flops_ratio_prediction", "check_merged_output",
           "check_mqa_decode", "check_ragged_decode", "draw_absorbed_decode", "plot_absorb_tradeoff",
           "plot_decode_cost_report", "plot_decode_costs", "plot_decode_times", "decode_cost_widget"]
