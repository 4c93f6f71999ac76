"""Chapter 2 (MLA's two latent spaces): the paper's matrices taken from a real layer, eqs. (1)–(11) step by step,
the cost arithmetic, singular-value spectra and the MHA twin trained beside MLA.

``steps`` (oracles and cost arithmetic), ``figures`` (MLA data path, rank costs, spectra), ``widget`` (ranks
explorer) and ``exercises``. Builds on chapter 1's attention.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch02_mla import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch02_mla.exercises import (BUGGY_MLA_FORWARD, check_chunk_attention,
                                                    check_key_rank_prediction, check_keys_first_rows,
                                                    check_mla_forward, plain_config_test)
from dsv3_lessons.course.ch02_mla.figures import draw_mla_data_path, plot_mla_rank_costs, plot_singular_spectra
from dsv3_lessons.course.ch02_mla.steps import (format_mla_rank_report, mha_cost, mla_cost, mla_rank_report,
                                                rank_for_energy, singular_values, stack_heads, TinyAttentionLM)
from dsv3_lessons.course.ch02_mla.widget import mla_rank_widget

__all__ = ["___", "hint", "revealed", "BUGGY_MLA_FORWARD", "check_chunk_attention", "check_key_rank_prediction",
           "check_keys_first_rows", "check_mla_forward", "plain_config_test", "draw_mla_data_path",
           "plot_mla_rank_costs", "plot_singular_spectra", "format_mla_rank_report", "mha_cost", "mla_cost",
           "mla_rank_report", "rank_for_energy", "singular_values", "stack_heads", "TinyAttentionLM",
           "mla_rank_widget"]
