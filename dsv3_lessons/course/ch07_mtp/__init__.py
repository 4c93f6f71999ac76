"""Chapter 7 (Multi-Token Prediction): the MTP module, packed-sequence labels per depth, training with and without MTP.

``experiments`` (document packing, label tables, the chapter's training budget), ``figures`` (MTP chain, label
grid) and ``exercises``.

The notebook imports everything it uses from here: ``from dsv3_lessons.course.ch07_mtp import ...``.
"""
from dsv3_lessons.course.common.checking import ___
from dsv3_lessons.course.common.style import PALETTE, subplots
from dsv3_lessons.course.ch07_mtp.exercises import check_depth_labels, check_label_count, check_mtp_loss
from dsv3_lessons.course.ch07_mtp.experiments import mtp_train_config_kwargs, pack_documents
from dsv3_lessons.course.ch07_mtp.figures import draw_mtp_chain, draw_mtp_labels

__all__ = ["___", "PALETTE", "subplots", "check_depth_labels", "check_label_count", "check_mtp_loss",
           "mtp_train_config_kwargs", "pack_documents", "draw_mtp_chain", "draw_mtp_labels"]
