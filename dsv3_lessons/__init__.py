"""dsv3_lessons: the helper package of the course "DeepSeek-V3 from the inside".

Three parts, told apart by folder name; imports run one way, ``course -> tools -> model``:

* ``dsv3_lessons.model``  -- what the real DeepSeek-V3 has, one concept a file: ``config``, ``layers``
  (RMSNorm, SwiGLU), ``rope`` (RoPE + YaRN), ``mla``, ``moe``, ``mtp``, ``block``, ``deepseek_v3`` (the
  assembled model).
* ``dsv3_lessons.tools``  -- what you do with a model: ``data`` (corpus, tokenizer, batches), ``train``,
  ``generate`` (cached decoding), ``hf_compat`` (checkpoint export/import).
* ``dsv3_lessons.course`` -- the apparatus of the chapters, one package per chapter (``ch00_tour`` …) plus
  ``common``: helpers, figures, widgets and exercise checkers.

Every mechanism lives here once, written from the papers (DeepSeek-V2 report arXiv 2405.04434,
DeepSeek-V3 report arXiv 2412.19437, loss-free balancing arXiv 2408.15664).
"""
from .model.config import ConfigError, DeepseekV3Config, count_parameters, deepseek_v3_671b, tiny

__version__ = "0.1.0"
__all__ = ["DeepseekV3Config", "ConfigError", "count_parameters", "deepseek_v3_671b", "tiny"]
