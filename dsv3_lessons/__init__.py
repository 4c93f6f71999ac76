"""dsv3_lessons: the helper package of the course "DeepSeek-V3 from the inside".

Every mechanism the notebooks teach lives here once, written from the papers (DeepSeek-V2 report
arXiv 2405.04434, DeepSeek-V3 report arXiv 2412.19437, loss-free balancing arXiv 2408.15664).
"""
from .config import DeepseekV3Config, ConfigError, count_parameters, deepseek_v3_671b, tiny

__version__ = "0.1.0"
__all__ = ["DeepseekV3Config", "ConfigError", "count_parameters", "deepseek_v3_671b", "tiny"]
