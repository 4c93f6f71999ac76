"""Chapter 10 (capstone): the whole tiny DeepSeek-V3 assembled, raced against its dense twin and nanoGPT, graded,
served with its MTP draft, proven equal to transformers' code, and trained past one process.

``runs`` (the stored MoE-vs-dense-vs-nanoGPT runs: ``python -m dsv3_lessons.course.ch10_capstone`` writes
``data/capstone_runs/``; the crossover read from their curves), ``report`` (the report card), ``figures`` (the
whole model drawn from a config, the config table, race, crossover and per-rank plots) and ``exercises``. Builds on
every earlier chapter: chapter 2's paper matrices, chapter 5's routing, chapter 8's prompts.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch10_capstone import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint, revealed
from dsv3_lessons.course.ch10_capstone.exercises import (BUGGY_EH_PROJ, check_activated_params,
                                                         check_dispatch_bytes, check_eh_proj_converter,
                                                         check_tpf_prediction, conditional_acceptance,
                                                         tokens_per_forward)
from dsv3_lessons.course.ch10_capstone.figures import (config_rows, config_table, draw_whole_model, plot_crossover,
                                                       plot_race, plot_ranks)
from dsv3_lessons.course.ch10_capstone.report import (ReportCard, fp8_loss_change, kv_bytes_per_token, max_vio_ends,
                                                      mtp_acceptance, report_card)
from dsv3_lessons.course.ch10_capstone.runs import (COMMAND, capstone_dir, FINAL_EVAL, LABELS, MODELS, build_model, crossover,
                                                    curve, load_runs, measure_step_times, train_config, train_run)
from dsv3_lessons.course.ch02_mla import mha_cost, mla_cost
from dsv3_lessons.course.ch02_mla.steps import mla_step_by_step, paper_matrices
from dsv3_lessons.course.ch05_routing import route_token
from dsv3_lessons.course.ch08_speculative import held_out_prompts

__all__ = ["___", "hint", "revealed", "tokens_per_forward", "conditional_acceptance", "capstone_dir", "BUGGY_EH_PROJ", "check_activated_params", "check_dispatch_bytes", "check_eh_proj_converter",
           "check_tpf_prediction", "config_rows", "config_table", "draw_whole_model", "plot_crossover", "plot_race",
           "plot_ranks", "ReportCard", "fp8_loss_change", "kv_bytes_per_token", "max_vio_ends", "mtp_acceptance",
           "report_card", "COMMAND", "FINAL_EVAL", "LABELS", "MODELS", "build_model", "crossover", "curve",
           "load_runs", "measure_step_times", "train_config", "train_run", "mha_cost", "mla_cost",
           "mla_step_by_step", "paper_matrices", "route_token", "held_out_prompts"]
