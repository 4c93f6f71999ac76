"""Chapter 7 (Multi-Token Prediction): the MTP module, packed-sequence labels per depth, training with and without MTP.

``experiments`` (document packing, label tables, the chapter's training budget and a steps-only progress bar),
``figures`` (MTP chain, label grid), ``widget`` (the packed-window explorer) and ``exercises``.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch07_mtp import ...``.
"""
from dsv3_lessons.course.common.checking import ___, hint
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.ch07_mtp.exercises import (check_depth_loss, check_eos_labels, check_label_count,
                                                    check_mtp_term, eos_window, EX72_DOCS)
from dsv3_lessons.course.ch07_mtp.experiments import mtp_train_config_kwargs, pack_documents, train_with_step_bar
from dsv3_lessons.course.ch07_mtp.figures import draw_mtp_chain, draw_mtp_labels
from dsv3_lessons.course.ch07_mtp.widget import WindowExplorer, plot_window, window_report

__all__ = ["___", "hint", "PALETTE", "subplots", "check_depth_loss", "check_eos_labels", "check_label_count",
           "check_mtp_term", "eos_window", "EX72_DOCS", "mtp_train_config_kwargs", "pack_documents", "train_with_step_bar",
           "draw_mtp_chain", "draw_mtp_labels", "WindowExplorer", "plot_window", "window_report"]
