"""Chapter 1 (the KV cache): attention with a cache, MHA/GQA/MQA head sharing, and per-token cache arithmetic.

``attention`` (a GQA layer and its cached decode, the baseline MLA is compared with), ``kv_cache`` (bytes per
token from a config, the published table), ``figures`` (head-sharing diagram, cache-size plots), ``widget`` (the
KV-cache explorer) and ``exercises``.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch01_kv_cache import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch01_kv_cache.attention import as_mha, decode, GroupedQueryAttention
from dsv3_lessons.course.ch01_kv_cache.exercises import (BUGGY_ATTENTION_SOURCE, check_fit_prediction,
                                                         check_kv_cache_bytes_function, check_last_token_attention,
                                                         check_window_crossover, MISTRAL_7B, PREDICTION_SETTING)
from dsv3_lessons.course.ch01_kv_cache.figures import (draw_kv_head_sharing, head_layout, KV_CONTEXTS,
                                                       plot_kv_bytes_per_token, plot_kv_cache_vs_context,
                                                       plot_window_losses)
from dsv3_lessons.course.ch01_kv_cache.kv_cache import (bytes_per_token, cache_bytes, cache_ratio,
                                                        elements_per_token, equivalent_gqa_groups,
                                                        format_report, KB, kv_cache_report,
                                                        load_model_configs,
                                                        naive_mla_elements_per_token_per_layer,
                                                        PUBLISHED_KV_TABLE)
from dsv3_lessons.course.ch01_kv_cache.widget import kv_cache_widget

__all__ = ["___", "hint", "revealed", "as_mha", "decode", "GroupedQueryAttention", "BUGGY_ATTENTION_SOURCE",
           "check_fit_prediction", "check_kv_cache_bytes_function", "check_last_token_attention",
           "check_window_crossover", "MISTRAL_7B", "PREDICTION_SETTING", "draw_kv_head_sharing",
           "head_layout", "KV_CONTEXTS", "plot_kv_bytes_per_token", "plot_kv_cache_vs_context", "plot_window_losses", "bytes_per_token",
           "cache_bytes", "cache_ratio", "elements_per_token", "equivalent_gqa_groups", "format_report", "KB",
           "kv_cache_report", "load_model_configs", "naive_mla_elements_per_token_per_layer", "PUBLISHED_KV_TABLE",
           "kv_cache_widget"]
