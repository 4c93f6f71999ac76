"""Chapter 4 (MLA at inference): absorbed decoding on the latent cache, decode variants, FLOPs and bytes.

``decode`` (the four decode variants, their timing, closed-form FLOPs/bytes), ``figures`` (absorbed-decode diagram,
time/cost plots) and ``exercises``. Builds on chapter 2.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch04_mla_inference import ...``.
"""
from dsv3_lessons.course.common.checking import ___
from dsv3_lessons.course.ch04_mla_inference.decode import (attention_flops, build_mla, context_latents,
                                                           decode_bytes_read, decode_flops, make_variants,
                                                           PerHeadKVCache, time_variants, v3_attention_config)
from dsv3_lessons.course.ch04_mla_inference.exercises import (check_arithmetic_intensity,
                                                              check_break_even_queries, check_merged_output)
from dsv3_lessons.course.ch04_mla_inference.figures import (draw_absorbed_decode, plot_absorb_tradeoff,
                                                            plot_decode_costs, plot_decode_times)

__all__ = ["___", "attention_flops", "build_mla", "context_latents", "decode_bytes_read", "decode_flops",
           "make_variants", "PerHeadKVCache", "time_variants", "v3_attention_config", "check_arithmetic_intensity",
           "check_break_even_queries", "check_merged_output", "draw_absorbed_decode", "plot_absorb_tradeoff",
           "plot_decode_costs", "plot_decode_times"]
