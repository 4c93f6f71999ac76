"""KV-cache arithmetic for published models: why the cache, not the weights, limits long contexts.

During decoding every layer keeps, for every past token, what attention needs from it:

* MHA / GQA / MQA (:mod:`dsv3_lessons.course.ch01_kv_cache.attention`): the rotated key and the value of each of the
  n_kv key/value heads -> **2·n_kv·d_h elements per token per layer**.
* MLA (DeepSeek-V2 report §2.1, V3 report §2.1.1): the normalised latent c^KV (d_c =
  ``kv_lora_rank``) and the one shared rotated key k^R (d_h^R = ``qk_rope_head_dim``) ->
  **(d_c + d_h^R) elements per token per layer** (512 + 64 = 576 for V2 and V3).

Everything here multiplies those numbers out: × layers (per token), × element size (bytes:
BF16 2, FP8 1, FP32 4), × context × batch (total). Units: KB = 10³ B and GB = 10⁹ B (decimal, the
units of the published table and of accelerator memory specs). Reproduced exactly ("Insights into
DeepSeek-V3", arXiv 2505.09343):
DeepSeek-V3 70.272 KB, Qwen2.5-72B 327.680 KB, LLaMA-3.1-405B 516.096 KB per token in BF16.

The same paper prints multipliers beside its table (V3 1×, Qwen2.5-72B 4.66×, LLaMA-3.1-405B 7.28×,
:data:`PUBLISHED_KV_TABLE`). 4.66 is 327.680 / 70.272 rounded; 7.28 is not what its own KB column gives:
516.096 / 70.272 = 7.344, so :func:`cache_ratio` prints 7.34. No other DeepSeek-V3 width fixes that (62 layers,
counting the MTP module: 71.424 KB -> 7.23×; a denominator that printed 7.28 would be 70.84–70.94 KB and would
turn Qwen's 4.66 into 4.62–4.63). The one arithmetic that prints both 4.66 and 7.28 is a LLaMA numerator of
512.000 KB (125 layers of 4.096 KB instead of 126) cut, not rounded, to two decimals: 7.2860 -> 7.28. We keep
the KB column, which the configs reproduce, and treat the printed 7.28 as a slip in the paper.

"Equivalent GQA groups" (V2 report §2.1.4, Table 1): MLA's cache per layer divided by the
2·d_h one GQA key/value head costs; for V3 576 / (2·128) = 2.25 -- MLA caches as much as GQA
with 2.25 groups, while the V2 report (Appendix D.2) finds it stronger than MHA.

Published configurations live in ``data/model_configs/*.json`` (one file per model, HF
``config.json`` field names plus ``name``, ``attention`` and ``source``) and load with
:func:`load_model_configs`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "KB",
    "GB",
    "DTYPE_BYTES",
    "PUBLISHED_KV_TABLE",
    "CONFIG_DIR",
    "AttentionSpec",
    "dtype_bytes",
    "load_model_configs",
    "load_model_config",
    "elements_per_token",
    "bytes_per_token",
    "cache_bytes",
    "cache_ratio",
    "equivalent_gqa_groups",
    "max_context",
    "mla_what_if",
    "naive_mla_elements_per_token_per_layer",
    "KVCacheReport",
    "kv_cache_report",
    "format_report",
]

KB = 10**3  #: bytes in a kilobyte, as in the published table (arXiv 2505.09343)
GB = 10**9  #: bytes in a gigabyte (accelerator memory is quoted in these: "80 GB")

#: "Insights into DeepSeek-V3" (arXiv 2505.09343) Table 1 as printed: model -> (KB per token in BF16,
#: multiplier against DeepSeek-V3). The KB values are reproduced exactly; the 7.28 is not (see module docstring).
PUBLISHED_KV_TABLE: dict[str, tuple[float, float]] = {
    "DeepSeek-V3": (70.272, 1.0),
    "Qwen2.5-72B": (327.680, 4.66),
    "LLaMA-3.1-405B": (516.096, 7.28),
}

#: Bytes per cached element. BF16/FP16 are what serving stacks usually store; FP8 (E4M3) caches
#: are common in deployment; FP32 is what a CPU notebook uses.
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
_DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "e4m3": "fp8", "float8": "fp8"}

#: Folder of the published configs shipped with the course.
CONFIG_DIR = Path(__file__).resolve().parents[3] / "data" / "model_configs"

_KINDS = ("MHA", "GQA", "MQA", "MLA")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element for a dtype name (case-insensitive): bf16 2, fp16 2, fp8 1, fp32 4.

    Also accepts ``bfloat16``, ``float16``, ``float32``, ``float8``/``e4m3`` and ``torch.dtype``
    objects of those kinds. Raises ValueError for anything else.
    """
    name = str(dtype).lower().removeprefix("torch.")
    if name.startswith("float8"):
        name = "fp8"
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)} (case-insensitive), got {dtype!r}")
    return DTYPE_BYTES[name]


def _positive_int(name: str, value: Any, where: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class AttentionSpec:
    """The attention facts of one model that decide its KV cache (HF ``config.json`` field names).

    ``attention`` is ``"MHA"``, ``"GQA"``, ``"MQA"`` (need ``num_key_value_heads`` and ``head_dim``)
    or ``"MLA"`` (needs ``kv_lora_rank`` = d_c and ``qk_rope_head_dim`` = d_h^R). ``source`` names
    the config file / paper the numbers come from. Build with :meth:`from_dict` (validates).
    """

    name: str
    attention: str
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    hidden_size: int | None = None
    max_position_embeddings: int | None = None
    source: str = ""

    def validate(self, where: str = "") -> "AttentionSpec":
        """Check the fields the arithmetic uses; return ``self``.

        Raises:
            ValueError: naming the field (prefixed by ``where``, e.g. the JSON file) and what was
                expected, e.g. an MHA model whose ``num_key_value_heads`` differs from its heads.
        """
        w = where or (f"{self.name}: " if self.name else "")
        if self.attention not in _KINDS:
            raise ValueError(f"{w}attention must be one of {_KINDS}, got {self.attention!r}")
        _positive_int("num_hidden_layers", self.num_hidden_layers, w)
        _positive_int("num_attention_heads", self.num_attention_heads, w)
        if self.attention == "MLA":
            _positive_int("kv_lora_rank", self.kv_lora_rank, w)
            if not isinstance(self.qk_rope_head_dim, int) or isinstance(self.qk_rope_head_dim, bool) \
                    or self.qk_rope_head_dim < 0 or self.qk_rope_head_dim % 2:
                raise ValueError(f"{w}qk_rope_head_dim must be a non-negative even integer (RoPE rotates pairs), "
                                 f"got {self.qk_rope_head_dim!r}")
            return self
        _positive_int("num_key_value_heads", self.num_key_value_heads, w)
        _positive_int("head_dim", self.head_dim, w)
        n_h, n_kv = self.num_attention_heads, self.num_key_value_heads
        if n_h % n_kv:
            raise ValueError(f"{w}num_key_value_heads ({n_kv}) must divide num_attention_heads ({n_h})")
        expected = {"MHA": n_kv == n_h, "MQA": n_kv == 1, "GQA": 1 < n_kv < n_h}[self.attention]
        if not expected:
            rule = {"MHA": f"num_key_value_heads == num_attention_heads ({n_h})",
                    "MQA": "num_key_value_heads == 1",
                    "GQA": f"1 < num_key_value_heads < num_attention_heads ({n_h})"}[self.attention]
            raise ValueError(f"{w}attention {self.attention!r} needs {rule}, got num_key_value_heads={n_kv}")
        return self

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> "AttentionSpec":
        """Build and validate from a JSON dictionary; unknown keys are ignored.

        Raises ValueError when ``name`` or ``attention`` is missing or a value is invalid.
        """
        for key in ("name", "attention", "num_hidden_layers", "num_attention_heads"):
            if key not in d:
                raise ValueError(f"{where}missing field {key!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).validate(where)

    @property
    def elements_per_token_per_layer(self) -> int:
        """Cached elements per token in one layer: 2·n_kv·d_h, or d_c + d_h^R for MLA."""
        if self.attention == "MLA":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_key_value_heads * self.head_dim

    def describe(self) -> str:
        """One line such as ``GQA, 126 layers, 8 KV heads × 128`` or ``MLA, 61 layers, d_c 512 + d_h^R 64``."""
        if self.attention == "MLA":
            return (f"MLA, {self.num_hidden_layers} layers, d_c {self.kv_lora_rank} + "
                    f"d_h^R {self.qk_rope_head_dim}")
        heads = "1 KV head" if self.num_key_value_heads == 1 else f"{self.num_key_value_heads} KV heads"
        return f"{self.attention}, {self.num_hidden_layers} layers, {heads} × {self.head_dim}"


# ---------------------------------------------------------------------------------- loading
def _key(name: str) -> str:
    """Lookup key: lower case, letters and digits only ("Qwen-2.5-72B" == "qwen2.5-72b")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def load_model_configs(folder: str | Path | None = None) -> dict[str, AttentionSpec]:
    """Read every ``*.json`` in ``folder`` (default :data:`CONFIG_DIR`), keyed by ``name``.

    The dictionary is ordered by cache size per token (largest first), then by name.

    Raises:
        FileNotFoundError: the folder does not exist or holds no JSON file.
        ValueError: a file is not valid JSON, lacks a field, has an invalid value (the message
            names the file), or two files share a name.
    """
    folder = Path(folder) if folder is not None else CONFIG_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no model config (*.json) in {folder}")
    specs: dict[str, AttentionSpec] = {}
    for path in files:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name}: not valid JSON ({exc})") from exc
        spec = AttentionSpec.from_dict(d, where=f"{path.name}: ")
        if any(_key(spec.name) == _key(other) for other in specs):
            raise ValueError(f"{path.name}: model name {spec.name!r} appears in two files")
        specs[spec.name] = spec
    order = sorted(specs.values(), key=lambda s: (-elements_per_token(s), s.name))
    return {s.name: s for s in order}


def load_model_config(name: str, configs: Mapping[str, AttentionSpec] | None = None) -> AttentionSpec:
    """The published spec called ``name`` (case, dots and dashes ignored: ``"qwen-2.5-72b"`` works).

    Raises ValueError listing the known names when ``name`` is unknown.
    """
    configs = load_model_configs() if configs is None else configs
    for spec_name, spec in configs.items():
        if _key(spec_name) == _key(name):
            return spec
    raise ValueError(f"unknown model {name!r}; model must be one of {list(configs)}")


def _spec(spec: AttentionSpec | str) -> AttentionSpec:
    if isinstance(spec, str):
        return load_model_config(spec)
    if not isinstance(spec, AttentionSpec):
        raise TypeError(f"spec must be an AttentionSpec or a model name, got {type(spec).__name__}")
    return spec


# ---------------------------------------------------------------------------------- arithmetic
def elements_per_token(spec: AttentionSpec | str, per_layer: bool = False) -> int:
    """Cached elements for one token of one sequence: per layer, or summed over all layers.

    MHA/GQA/MQA: 2·n_kv·d_h·l; MLA: (d_c + d_h^R)·l (V2 report Table 1). V3: 576·61 = 35,136.
    """
    spec = _spec(spec)
    per = spec.elements_per_token_per_layer
    return per if per_layer else per * spec.num_hidden_layers


def bytes_per_token(spec: AttentionSpec | str, dtype: str = "bf16", per_layer: bool = False) -> int:
    """Bytes for one token of one sequence (all layers unless ``per_layer``). V3, BF16: 70,272 B."""
    return elements_per_token(spec, per_layer) * dtype_bytes(dtype)


def cache_bytes(spec: AttentionSpec | str, context: int, batch: int = 1, dtype: str = "bf16") -> int:
    """Total KV cache in bytes for ``batch`` sequences of ``context`` tokens each, all layers.

    Raises ValueError for a non-positive or non-integer ``context``/``batch`` or an unknown dtype.
    """
    _positive_int("context", context)
    _positive_int("batch", batch)
    return bytes_per_token(spec, dtype) * context * batch


def cache_ratio(spec: AttentionSpec | str, reference: AttentionSpec | str = "DeepSeek-V3") -> float:
    """How many times more cache per token ``spec`` needs than ``reference`` (same dtype).

    LLaMA-3.1-405B vs DeepSeek-V3: 516,096 / 70,272 = 7.34 (the paper's table prints 7.28; see the module
    docstring for why 7.34 is the ratio of its own KB values).
    """
    return elements_per_token(spec) / elements_per_token(reference)


def equivalent_gqa_groups(spec: AttentionSpec | str, head_dim: int | None = None) -> float:
    """The number of GQA key/value heads whose cache equals ``spec``'s, per layer.

    = elements per token per layer / (2·d_h). For GQA/MHA/MQA this is n_kv itself; for MLA,
    (d_c + d_h^R) / (2·d_h) with d_h = ``head_dim`` (default: the MLA model's own per-head width
    ``qk_nope_head_dim``, else 128). V2/V3: 576 / 256 = 2.25 (V2 report Table 1).
    """
    spec = _spec(spec)
    if head_dim is None:
        head_dim = spec.head_dim if spec.attention != "MLA" else (spec.qk_nope_head_dim or 128)
    _positive_int("head_dim", head_dim)
    return spec.elements_per_token_per_layer / (2 * head_dim)


def max_context(spec: AttentionSpec | str, budget_bytes: float = 80 * GB, batch: int = 1,
                dtype: str = "bf16") -> int:
    """Longest context (tokens per sequence) whose cache fits in ``budget_bytes``: floor(budget / (batch·B/token)).

    The budget counts the cache only (weights and activations need memory too, so this is an
    upper bound). Raises ValueError for a non-positive budget or batch.
    """
    if not isinstance(budget_bytes, (int, float)) or isinstance(budget_bytes, bool) or not budget_bytes > 0 \
            or math.isinf(budget_bytes):
        raise ValueError(f"budget_bytes must be a positive finite number, got {budget_bytes!r}")
    _positive_int("batch", batch)
    return int(budget_bytes // (batch * bytes_per_token(spec, dtype)))


def mla_what_if(kv_lora_rank: int = 512, qk_rope_head_dim: int = 64, num_hidden_layers: int = 61,
                num_attention_heads: int = 128, name: str | None = None) -> AttentionSpec:
    """A hypothetical MLA model: d_c = ``kv_lora_rank``, d_h^R = ``qk_rope_head_dim``, l layers.

    The defaults are DeepSeek-V3's. Raises ValueError for invalid sizes (odd or negative rope dim).
    """
    name = name or f"MLA d_c={kv_lora_rank}, d_h^R={qk_rope_head_dim}, {num_hidden_layers} layers"
    return AttentionSpec(name=name, attention="MLA", num_hidden_layers=num_hidden_layers,
                         num_attention_heads=num_attention_heads, kv_lora_rank=kv_lora_rank,
                         qk_rope_head_dim=qk_rope_head_dim, source="what-if").validate()


def naive_mla_elements_per_token_per_layer(spec: AttentionSpec | str) -> int:
    """What an MLA layer would cache if it stored the decompressed per-head keys and values.

    n_h·(d_h + d_h^R + d_v): keys [k^C ; k^R] of 192 and values of 128 per head for V3, i.e.
    128·320 = 40,960 elements -- 71× the 576 it actually caches (V3 report §2.1.1).
    Raises ValueError if ``spec`` is not MLA or lacks the per-head dims.
    """
    spec = _spec(spec)
    if spec.attention != "MLA" or spec.qk_nope_head_dim is None or spec.v_head_dim is None:
        raise ValueError(f"{spec.name} is not an MLA spec with qk_nope_head_dim and v_head_dim")
    return spec.num_attention_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim)


# ---------------------------------------------------------------------------------- widget logic
@dataclass(frozen=True)
class KVCacheReport:
    """Every number the KV-cache widget shows (bytes unless named ``_gb``; GB = 10⁹ B).

    ``mla`` is the what-if MLA with the chosen d_c/d_h^R and the *selected model's* layer count,
    so ``ratio_to_mla`` compares the two designs layer for layer; ``ratio_to_deepseek_v3``
    compares with DeepSeek-V3 as released. ``mla_equivalent_gqa_groups`` is the what-if's cache per layer in
    key/value heads of the selected model's own head size ``gqa_head_dim`` (``head_dim``; ``qk_nope_head_dim``
    for an MLA model): 2.25 heads of 128 for V3's sizes, 4.5 heads of 64 against Falcon-7B.
    """

    model: str
    attention: str
    description: str
    context: int
    batch: int
    dtype: str
    elements_per_token: int
    bytes_per_token: int
    total_bytes: int
    total_gb: float
    budget_gb: float
    fits_budget: bool
    max_context_in_budget: int
    mla: AttentionSpec
    mla_bytes_per_token: int
    mla_total_gb: float
    ratio_to_mla: float
    ratio_to_deepseek_v3: float
    mla_equivalent_gqa_groups: float
    gqa_head_dim: int = 128


def kv_cache_report(model: AttentionSpec | str, context: int, batch: int = 1, dtype: str = "bf16",
                    kv_lora_rank: int = 512, rope_dim: int = 64, budget_gb: float = 80.0,
                    configs: Mapping[str, AttentionSpec] | None = None) -> KVCacheReport:
    """Compute the KV-cache numbers for one model and one workload (the widget's pure function).

    Args:
        model: a published model name (see ``data/model_configs``) or an :class:`AttentionSpec`.
        context: tokens per sequence (> 0). batch: sequences (> 0). dtype: ``"bf16"``, ``"fp8"``…
        kv_lora_rank, rope_dim: d_c and d_h^R of the what-if MLA (same layer count as ``model``).
        budget_gb: accelerator memory in GB (10⁹ B) the cache is compared with.
    Raises:
        ValueError: unknown model or dtype, non-positive context/batch/budget, invalid MLA sizes.
    """
    configs = load_model_configs() if configs is None else configs
    spec = load_model_config(model, configs) if isinstance(model, str) else _spec(model)
    if not isinstance(budget_gb, (int, float)) or isinstance(budget_gb, bool) or not budget_gb > 0:
        raise ValueError(f"budget_gb must be a positive number, got {budget_gb!r}")
    total = cache_bytes(spec, context, batch, dtype)
    mla = mla_what_if(kv_lora_rank, rope_dim, spec.num_hidden_layers, spec.num_attention_heads)
    head_dim = (spec.qk_nope_head_dim or 128) if spec.attention == "MLA" else spec.head_dim
    v3 = next((s for s in configs.values() if _key(s.name) == _key("DeepSeek-V3")), None)
    v3 = v3 if v3 is not None else load_model_config("DeepSeek-V3")  # reference even for custom lists
    return KVCacheReport(
        model=spec.name, attention=spec.attention, description=spec.describe(),
        context=context, batch=batch, dtype=str(dtype).upper(),
        elements_per_token=elements_per_token(spec), bytes_per_token=bytes_per_token(spec, dtype),
        total_bytes=total, total_gb=total / GB, budget_gb=float(budget_gb),
        fits_budget=total <= budget_gb * GB,
        max_context_in_budget=max_context(spec, budget_gb * GB, batch, dtype),
        mla=mla, mla_bytes_per_token=bytes_per_token(mla, dtype),
        mla_total_gb=cache_bytes(mla, context, batch, dtype) / GB,
        ratio_to_mla=cache_ratio(spec, mla), ratio_to_deepseek_v3=cache_ratio(spec, v3),
        mla_equivalent_gqa_groups=equivalent_gqa_groups(mla, head_dim),
        gqa_head_dim=head_dim,
    )


def _tokens(n: int) -> str:
    """1024 -> '1K', 131072 -> '128K', 1000 -> '1000'."""
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _short(x: float) -> str:
    """At most three decimals, trailing zeros dropped: 2.25, 1.125, 0.641, 4.5, 8."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def format_report(r: KVCacheReport) -> str:
    """Plain-text readout of a :class:`KVCacheReport` (fixed rounding, so it is stable under nbval; no line longer
    than 100 characters for the models of ``data/model_configs``, so a notebook's output area does not break
    them)."""
    fits = "fits in" if r.fits_budget else "does NOT fit in"
    return "\n".join([
        f"{r.model} ({r.description})",
        f"  per token : {r.elements_per_token:,} elements = {r.bytes_per_token / KB:,.3f} KB in {r.dtype}",
        f"  cache     : {_tokens(r.context)} tokens x batch {r.batch} = {r.total_gb:,.2f} GB ({fits} {r.budget_gb:g} GB)",
        f"              at most {r.max_context_in_budget:,} tokens per sequence fit in {r.budget_gb:g} GB",
        f"  MLA what-if (d_c {r.mla.kv_lora_rank} + d_h^R {r.mla.qk_rope_head_dim}, "
        f"{r.mla.num_hidden_layers} layers): {r.mla_bytes_per_token / KB:,.3f} KB/token, {r.mla_total_gb:,.2f} GB",
        f"              = the cache of {_short(r.mla_equivalent_gqa_groups)} key/value heads of d_h = "
        f"{r.gqa_head_dim} per layer",
        f"  ratio     : {r.ratio_to_mla:,.2f}x the what-if MLA, {r.ratio_to_deepseek_v3:,.2f}x DeepSeek-V3",
    ])
