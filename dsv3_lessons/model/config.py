"""One configuration for every model in the course, named like the released ``config.json``.

Field names follow the Hugging Face ``config.json`` that ships with DeepSeek-V3 (and that transformers'
``DeepseekV3Config`` reads), so a real config file loads 1:1. The official inference code
(deepseek-ai/DeepSeek-V3, ``inference/model.py``) calls the same numbers by other names; the table
:data:`OFFICIAL_NAMES` maps them (e.g. ``first_k_dense_replace`` is ``n_dense_layers`` there).

Presets
-------
* :func:`deepseek_v3_671b` -- the released 671B configuration (V3 report §4.2; the released ``config.json``).
* :func:`tiny` -- a CPU-sized model with every mechanism switched on (MLA with both latents, decoupled
  RoPE with YaRN, group-limited sigmoid routing with shared experts, one MTP module).

Parameter counting (:func:`count_parameters`) is closed-form arithmetic on the config, checked in the
tests against the published 671,026,419,200 total and against ``sum(p.numel())`` of the built model.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DeepseekV3Config",
    "ConfigError",
    "deepseek_v3_671b",
    "tiny",
    "count_parameters",
    "ParameterCount",
    "OFFICIAL_NAMES",
]


#: float32's smallest normal number: the lower bound of ``rms_norm_eps`` (RMSNorm statistics are float32).
_FLOAT32_TINY = 2.0 ** -126
#: Upper bound of ``routed_scaling_factor`` (published configs: 1.0 to 16); far larger overflows activations.
_MAX_ROUTED_SCALE = 1000.0
#: Upper bound of YaRN's ``mscale``/``mscale_all_dim`` (published: 0.707 and 1.0); far larger overflows logits.
_MAX_MSCALE = 10.0


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what was expected."""


#: HF ``config.json`` name -> official ``inference/model.py`` ``ModelArgs`` name (same number).
OFFICIAL_NAMES: dict[str, str] = {
    "hidden_size": "dim",
    "intermediate_size": "inter_dim",
    "moe_intermediate_size": "moe_inter_dim",
    "num_hidden_layers": "n_layers",
    "first_k_dense_replace": "n_dense_layers",
    "num_attention_heads": "n_heads",
    "n_routed_experts": "n_routed_experts",
    "n_shared_experts": "n_shared_experts",
    "num_experts_per_tok": "n_activated_experts",
    "n_group": "n_expert_groups",
    "topk_group": "n_limited_groups",
    "scoring_func": "score_func",
    "routed_scaling_factor": "route_scale",
    "q_lora_rank": "q_lora_rank",
    "kv_lora_rank": "kv_lora_rank",
    "qk_nope_head_dim": "qk_nope_head_dim",
    "qk_rope_head_dim": "qk_rope_head_dim",
    "v_head_dim": "v_head_dim",
    "vocab_size": "vocab_size",
    "rope_theta": "rope_theta",
    "rope_scaling.factor": "rope_factor",
    "rope_scaling.original_max_position_embeddings": "original_seq_len",
    "rope_scaling.beta_fast": "beta_fast",
    "rope_scaling.beta_slow": "beta_slow",
    "rope_scaling.mscale": "mscale",
}


@dataclass
class DeepseekV3Config:
    """Hyper-parameters of a DeepSeek-V3-style model (HF ``config.json`` field names).

    Notation used in docstrings across the package (V3 report §2): d = ``hidden_size``,
    n_h = ``num_attention_heads``, d_h = ``qk_nope_head_dim`` (content part of q/k),
    d_h^R = ``qk_rope_head_dim`` (decoupled RoPE part), d_c = ``kv_lora_rank``,
    d_c' = ``q_lora_rank``, N_r = ``n_routed_experts``, N_s = ``n_shared_experts``,
    K_r = ``num_experts_per_tok``, D = ``num_nextn_predict_layers``.

    ``q_lora_rank=None`` means no query latent (a plain ``q_proj``, as in DeepSeek-V2-Lite).
    ``rope_scaling=None`` means plain RoPE; otherwise a YaRN dict as in the released config.

    Call :meth:`validate` (done by every model constructor) to get a :class:`ConfigError` that names
    the offending field instead of a shape error deep inside a forward pass.
    """

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    first_k_dense_replace: int = 3
    num_attention_heads: int = 128
    num_key_value_heads: int = 128
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    norm_topk_prob: bool = True
    moe_layer_freq: int = 1
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = field(
        default_factory=lambda: {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        }
    )
    max_position_embeddings: int = 163840
    num_nextn_predict_layers: int = 1
    tie_word_embeddings: bool = False
    initializer_range: float = 0.006
    attention_bias: bool = False
    bos_token_id: int = 0
    eos_token_id: int = 1
    quantization_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ derived sizes
    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key width d_h + d_h^R (192 for V3): the softmax scale uses this."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_moe_layers(self) -> int:
        """Main-model layers that use DeepSeekMoE (MTP modules not included)."""
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    def is_moe_layer(self, layer_idx: int) -> bool:
        """True for layers that use DeepSeekMoE (all layers from ``first_k_dense_replace`` on)."""
        return layer_idx >= self.first_k_dense_replace and layer_idx % self.moe_layer_freq == 0

    # ------------------------------------------------------------------ validation
    def validate(self) -> "DeepseekV3Config":
        """Check every constraint the model relies on; return ``self`` so calls can chain.

        Raises:
            ConfigError: naming the field, its value and what was expected.
        """
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_num(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim", "v_head_dim", "max_position_embeddings", "moe_layer_freq"):
            value = getattr(self, name)
            need(is_int(value) and value > 0, f"{name} must be a positive integer, got {value!r}")
        for name in ("first_k_dense_replace", "num_nextn_predict_layers", "n_routed_experts", "n_shared_experts",
                     "num_experts_per_tok", "n_group", "topk_group"):
            value = getattr(self, name)
            need(is_int(value) and value >= 0, f"{name} must be a non-negative integer, got {value!r}")
        need(self.q_lora_rank is None or (is_int(self.q_lora_rank) and self.q_lora_rank > 0),
             f"q_lora_rank must be a positive integer or None (no query latent), got {self.q_lora_rank!r}")
        need(self.qk_rope_head_dim % 2 == 0,
             f"qk_rope_head_dim must be even (RoPE rotates pairs of channels), got {self.qk_rope_head_dim}")
        need(self.num_key_value_heads == self.num_attention_heads,
             f"num_key_value_heads must equal num_attention_heads for MLA (every head has its own k^C/v^C "
             f"from the shared latent), got {self.num_key_value_heads} vs {self.num_attention_heads}")
        need(self.first_k_dense_replace <= self.num_hidden_layers,
             f"first_k_dense_replace must be in [0, num_hidden_layers={self.num_hidden_layers}], "
             f"got {self.first_k_dense_replace}")
        need(is_num(self.rms_norm_eps) and self.rms_norm_eps >= _FLOAT32_TINY,
             f"rms_norm_eps must be a finite number >= {_FLOAT32_TINY:.3g} (float32's smallest normal number: "
             f"the norm's statistics are float32, where a smaller ε rounds to 0 and an all-zero input "
             f"gives 0/0; V3 uses 1e-6), got {self.rms_norm_eps!r}")
        need(is_num(self.rope_theta) and self.rope_theta > 1,
             f"rope_theta must be a finite number > 1, got {self.rope_theta!r}")
        need(is_num(self.initializer_range) and 0 <= self.initializer_range <= 1,
             f"initializer_range must be a number in [0, 1] (the weights' initial standard deviation; V3 uses "
             f"0.006, transformers' default is 0.02), got {self.initializer_range!r}")
        for name in ("attention_bias", "norm_topk_prob", "tie_word_embeddings"):
            value = getattr(self, name)
            need(isinstance(value, bool), f"{name} must be True or False, got {value!r}")
        need(self.hidden_act == "silu", f"hidden_act must be 'silu' (SwiGLU experts), got {self.hidden_act!r}")
        need(self.scoring_func == "sigmoid",
             f"scoring_func must be 'sigmoid' (DeepSeek-V3 gate, V3 eq. 15), got {self.scoring_func!r}")
        need(self.topk_method == "noaux_tc",
             f"topk_method must be 'noaux_tc' (V3's selection by biased scores, group-limited; the only one "
             f"this model implements -- V2's 'greedy'/'group_limited_greedy' are not), got {self.topk_method!r}")
        # the MoE fields matter as soon as any block -- main model or MTP module -- is an MoE block
        if any(self.is_moe_layer(i) for i in range(self.num_hidden_layers + self.num_nextn_predict_layers)):
            need(self.n_routed_experts >= 1, f"n_routed_experts must be >= 1, got {self.n_routed_experts}")
            need(self.n_group >= 1, f"n_group must be >= 1, got {self.n_group}")
            need(self.n_routed_experts % self.n_group == 0,
                 f"n_routed_experts ({self.n_routed_experts}) must be divisible by n_group ({self.n_group}) "
                 f"so every group holds the same number of experts")
            per_group = self.n_routed_experts // self.n_group
            need(per_group >= 2 or self.n_group == 1,
                 f"each group needs >= 2 experts (the group score sums its top-2 scores), but n_routed_experts / "
                 f"n_group = {self.n_routed_experts} / {self.n_group} = {per_group}; raise n_routed_experts or "
                 f"lower n_group (n_group = 1 switches group limiting off)")
            need(1 <= self.topk_group <= self.n_group,
                 f"topk_group must be in [1, n_group={self.n_group}], got {self.topk_group}")
            reachable = self.topk_group * per_group
            need(1 <= self.num_experts_per_tok <= reachable,
                 f"num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and the experts left after "
                 f"group limiting, topk_group·(n_routed_experts/n_group) = {self.topk_group}·({self.n_routed_experts}"
                 f"/{self.n_group}) = {reachable}; "
                 + ("raise num_experts_per_tok to at least 1" if self.num_experts_per_tok < 1 else
                    "lower num_experts_per_tok or raise topk_group or n_routed_experts"))
            need(is_num(self.routed_scaling_factor) and 0 < self.routed_scaling_factor <= _MAX_ROUTED_SCALE,
                 f"routed_scaling_factor must be a number in (0, {_MAX_ROUTED_SCALE:g}] (it multiplies the routed "
                 f"experts' output; published configs use 1.0 to 16, V3 2.5), got {self.routed_scaling_factor!r}")
        if self.rope_scaling is not None:
            rs = self.rope_scaling
            need(isinstance(rs, dict), f"rope_scaling must be a dict or None, got {type(rs).__name__}")
            kind = rs.get("type", rs.get("rope_type"))
            need(kind == "yarn", f"rope_scaling.type must be 'yarn' (or rope_scaling None), got {kind!r}")
            for key in ("factor", "original_max_position_embeddings"):
                need(key in rs, f"rope_scaling needs '{key}' for YaRN")
            need(is_num(rs["factor"]) and rs["factor"] >= 1,
                 f"rope_scaling.factor must be a finite number >= 1, got {rs['factor']!r}")
            need(is_int(rs["original_max_position_embeddings"]) and 0 < rs["original_max_position_embeddings"] <= 2**53,
                 f"rope_scaling.original_max_position_embeddings must be a positive integer (the pre-training "
                 f"context length, V3: 4096; at most 2**53), got {rs['original_max_position_embeddings']!r}")
            for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
                need(key not in rs or is_num(rs[key]),
                     f"rope_scaling.{key} must be a finite number, got {rs.get(key)!r}")
            need(rs.get("beta_slow", 1) > 0,
                 f"rope_scaling.beta_slow must be > 0 (a number of rotations; YaRN and V3 use 1), "
                 f"got {rs.get('beta_slow')!r}")
            need(rs.get("beta_fast", 32) > rs.get("beta_slow", 1),
                 f"rope_scaling.beta_fast must exceed beta_slow, got {rs.get('beta_fast')} <= {rs.get('beta_slow')}")
            for key in ("mscale", "mscale_all_dim"):
                need(0 <= rs.get(key, 0) <= _MAX_MSCALE,
                     f"rope_scaling.{key} must be in [0, {_MAX_MSCALE:g}] (YaRN's attention temperature "
                     f"0.1·{key}·ln(factor) + 1 must stay >= 1; DeepSeek-V2 uses 0.707, V3 1.0), got {rs.get(key)!r}")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` dictionary, with the HF ``model_type``/``architectures`` keys added."""
        d = dataclasses.asdict(self)
        if d["quantization_config"] is None:
            d.pop("quantization_config")
        d["model_type"] = "deepseek_v3"
        d["architectures"] = ["DeepseekV3ForCausalLM"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeepseekV3Config":
        """Build from a ``config.json`` dictionary; unknown keys are ignored, then :meth:`validate` runs.

        Accepts transformers-5 style ``rope_parameters`` as well as the released ``rope_scaling``.
        """
        d = dict(d)
        if "rope_parameters" in d and "rope_scaling" not in d:
            rp = dict(d.pop("rope_parameters") or {})
            d.setdefault("rope_theta", rp.pop("rope_theta", 10000.0))
            kind = rp.pop("rope_type", rp.pop("type", "default"))
            d["rope_scaling"] = None if kind == "default" else {"type": kind, **rp}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("num_key_value_heads") is None:
            kwargs["num_key_value_heads"] = kwargs.get("num_attention_heads", cls.num_attention_heads)
        return cls(**kwargs).validate()

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (``path`` may be a folder or a file name). Returns the file path."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DeepseekV3Config":
        """Read a ``config.json`` (``path`` may be its folder).

        Raises:
            FileNotFoundError: no such file; ConfigError: invalid JSON or invalid values.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "DeepseekV3Config":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes).validate()


def deepseek_v3_671b() -> DeepseekV3Config:
    """The released DeepSeek-V3 configuration (V3 report §4.2; HF ``deepseek-ai/DeepSeek-V3/config.json``)."""
    return DeepseekV3Config(
        quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                             "weight_block_size": [128, 128]},
    ).validate()


def tiny(vocab_size: int = 96, **overrides: Any) -> DeepseekV3Config:
    """A CPU-sized DeepSeek-V3 with every mechanism on, chosen by measurement (``bench/sweep_preset.py``).

    3 layers (1 dense + 2 MoE), d = 64, 4 heads, d_c' = 48, d_c = 32, d_h = 16, d_h^R = 8,
    8 routed experts in 4 groups (2 groups kept), 2 per token + 1 shared, one MTP module, and YaRN
    configured (factor 4 over an original window of 64) so the mscale² path is always exercised.

    Why these sizes. The chapters train this model inside a notebook for tens of seconds on 2 CPU threads,
    so the preset is the configuration with the lowest held-out loss *at a fixed training budget*, not at
    a fixed number of steps. ``bench/sweep_preset.py`` trained candidates that keep every mechanism on and
    change one knob at a time -- width (d = 48 / 64 / 96), depth (3 / 4 layers), routed experts (8 / 16),
    granularity (16 experts of width d/2 with K_r = 4 vs 8 of width d with K_r = 2), K_r (1 / 2) and MTP
    on / off -- for the same budget with the same recipe (table in ``bench/RESULTS.md``). At this budget
    (a few hundred steps of 32 x 64 characters) a wider or deeper model sees too few tokens to catch up:
    d = 96 and 4 layers ended clearly worse (+0.17 and +0.07 nats/char), d = 48 slightly worse (+0.04).
    16 experts, finer experts and K_r = 1 landed within the run-to-run noise (about ±0.03) of this
    preset; K_r = 2 is kept because with K_r = 1 the normalised combine weight is always exactly
    ``routed_scaling_factor``, so the gate would learn only through the balance loss.
    **MTP**: training with the MTP module (λ = 0.3) costs about a third more time per step and gave a
    clearly higher next-token loss at equal time (+0.17 to +0.22), so recipes that only want next-token
    loss train with ``num_nextn_predict_layers=0`` (or ``compute_mtp=False``); the preset keeps D = 1 so
    chapters 7–8 (MTP and speculative decoding) train it with λ as V3 does.
    **MoE vs dense at this size.** An MoE step costs ~1.2x a step of the *dense twin* (same attention, dense
    SwiGLU of width (N_s + K_r)·64 = 192) on 2 CPU threads; at equal wall-clock (~98 s) the twin ended
    0.016 nats/char ahead on the mean of three seeds, while at equal *steps* the MoE was 0.014 ahead
    (``bench/train_cpu.py --skip mtp,reference --seeds 0,1,2``, ``bench/RESULTS.md``). The preset keeps the
    MoE because it is what the course studies.
    """
    cfg = DeepseekV3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        moe_intermediate_size=64,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=48,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        rope_theta=10000.0,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        max_position_embeddings=256,
        num_nextn_predict_layers=1,
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=1,
    )
    return dataclasses.replace(cfg, **overrides).validate()


@dataclass(frozen=True)
class ParameterCount:
    """Closed-form parameter counts (numbers of scalars, not bytes).

    ``total`` is the main model (embedding and output head included, MTP excluded, as in the V3
    report's 671B); ``activated`` counts what one token touches (shared + K_r routed experts, gate and
    bias included) with embedding and head; ``activated_no_embedding`` drops the input embedding (a lookup that
    reads one row per token): for V3 36.63 B, the count that rounds to the report's "37B activated" (§4.2);
    ``mtp`` is the D MTP modules without the shared embedding/head.
    """

    total: int
    activated: int
    activated_no_embedding: int
    attention_per_layer: int
    expert: int
    dense_mlp: int
    moe_layer: int
    embedding: int
    mtp: int
    mtp_block: int


def count_parameters(cfg: DeepseekV3Config) -> ParameterCount:
    """Count parameters from the config alone; checked against the V3 report's 671B / 37B (§4.2; terms from §2.1).

    Attention per layer: q path (``q_a_proj`` d·d_c' + norm d_c' + ``q_b_proj`` d_c'·n_h·(d_h+d_h^R)),
    ``kv_a_proj_with_mqa`` d·(d_c+d_h^R) + norm d_c, ``kv_b_proj`` d_c·n_h·(d_h+d_v), ``o_proj`` n_h·d_v·d.
    MoE layer: (N_s + N_r) experts of 3·d·d_moe, gate N_r·d, bias N_r.
    """
    cfg.validate()
    d, h = cfg.hidden_size, cfg.num_attention_heads
    if cfg.q_lora_rank is None:
        q = d * h * cfg.qk_head_dim
    else:
        q = d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * h * cfg.qk_head_dim
    kv = d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank
    kv += cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    attn = q + kv + h * cfg.v_head_dim * d
    if cfg.attention_bias:  # biases of q_a_proj, kv_a_proj_with_mqa and o_proj (as in transformers)
        attn += (cfg.q_lora_rank or 0) + cfg.kv_lora_rank + cfg.qk_rope_head_dim + d
    norms = 2 * d
    expert = 3 * d * cfg.moe_intermediate_size
    dense_mlp = 3 * d * cfg.intermediate_size
    gate = cfg.n_routed_experts * d + cfg.n_routed_experts
    moe = (cfg.n_shared_experts + cfg.n_routed_experts) * expert + gate
    moe_active = (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert + gate
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    n_dense = cfg.num_hidden_layers - n_moe
    emb = cfg.vocab_size * d
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * d
    layers_total = n_dense * (attn + dense_mlp + norms) + n_moe * (attn + moe + norms)
    layers_active = n_dense * (attn + dense_mlp + norms) + n_moe * (attn + moe_active + norms)
    total = layers_total + emb + head + d
    activated = layers_active + emb + head + d
    # MTP depth k is block number num_hidden_layers + k - 1: MoE or dense by the same rule as the main layers
    mtp_blocks = [attn + norms + (moe if cfg.is_moe_layer(cfg.num_hidden_layers + k) else dense_mlp)
                  for k in range(cfg.num_nextn_predict_layers)]
    mtp_block = mtp_blocks[0] if mtp_blocks else 0
    # enorm, hnorm, shared_head.norm (3·d) + eh_proj (2d -> d)
    mtp = sum(block + 3 * d + 2 * d * d for block in mtp_blocks)
    return ParameterCount(
        total=total,
        activated=activated,
        activated_no_embedding=activated - emb,
        attention_per_layer=attn,
        expert=expert,
        dense_mlp=dense_mlp,
        moe_layer=moe,
        embedding=emb,
        mtp=mtp,
        mtp_block=mtp_block,
    )

