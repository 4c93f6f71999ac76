"""The model: what the real DeepSeek-V3 has, one concept a file (read them in this order).

``config`` (hyper-parameters, HF ``config.json`` names) · ``layers`` (RMSNorm, SwiGLU, causal mask) ·
``rope`` (RoPE, YaRN) · ``mla`` (Multi-head Latent Attention) · ``moe`` (DeepSeekMoE gate, experts,
balancing) · ``block`` (one transformer block) · ``mtp`` (Multi-Token Prediction) · ``deepseek_v3`` (the
assembled model) · ``fp8`` (FP8 formats, fine-grained quantization, fake-quant linears). Nothing here imports ``tools`` or ``course``.
"""
from .config import ConfigError, DeepseekV3Config, count_parameters, deepseek_v3_671b, tiny
from .deepseek_v3 import DeepSeekV3, ModelOutput

__all__ = ["DeepseekV3Config", "ConfigError", "count_parameters", "deepseek_v3_671b", "tiny",
           "DeepSeekV3", "ModelOutput"]
