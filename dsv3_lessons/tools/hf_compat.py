"""Read and write Hugging Face-format DeepSeek-V3 checkpoints (``config.json`` + ``*.safetensors``).

The released checkpoint (``deepseek-ai/DeepSeek-V3`` on the Hub) and transformers' ``DeepseekV3ForCausalLM``
use the names below; :class:`~dsv3_lessons.model.deepseek_v3.DeepSeekV3` uses the same names without the ``model.``
prefix, so the mapping is mostly a prefix -- except for three things this module takes care of:

=====================================================  ==========================================
checkpoint tensor                                      ``DeepSeekV3`` state dict
=====================================================  ==========================================
``model.embed_tokens.weight``                          ``embed_tokens.weight``
``model.layers.{i}.…`` (i < L = num_hidden_layers)     ``layers.{i}.…``
``model.layers.{i}.mlp.experts.{e}.gate_proj.weight``  ``layers.{i}.mlp.experts.{e}.gate_proj.weight``
``model.layers.{i}.mlp.gate.e_score_correction_bias``  same (a buffer: b_i of V3 eq. 16)
``model.norm.weight`` / ``lm_head.weight``             ``norm.weight`` / ``lm_head.weight``
``model.layers.{L+k-1}.{enorm,hnorm,eh_proj}.weight``  ``mtp.{k-1}.{enorm,hnorm,eh_proj}.weight``
``model.layers.{L+k-1}.shared_head.norm.weight``       ``mtp.{k-1}.shared_head.norm.weight``
``model.layers.{L+k-1}.{self_attn,mlp,…}``             ``mtp.{k-1}.{self_attn,mlp,…}``
``model.layers.{L+k-1}.embed_tokens.weight``           (duplicate of the main embedding, see below)
``model.layers.{L+k-1}.shared_head.head.weight``       (duplicate of ``lm_head.weight``)
=====================================================  ==========================================

1. **MTP depth k is stored as an extra layer** ``model.layers.{L+k-1}`` (layer 61 for V3). The released
   file repeats the embedding and the output head inside that layer; our MTP module *shares* them with the
   main model (V3 §2.2: "shared embedding and output head"), so on import the duplicates are compared with
   the main tensors (a warning if they differ, since only the main ones are used) and on export they are
   written again, so the folder looks like the released one.
2. **Experts.** The released file has one tensor per expert (``experts.{e}.gate_proj.weight`` …).
   transformers 5 keeps experts fused in memory (``mlp.experts.gate_up_proj [E, 2I, H]`` = gate rows then up
   rows, ``mlp.experts.down_proj [E, H, I]``) and converts on load/save. :func:`import_hf` accepts both
   layouts; :func:`export_hf` writes the released per-expert layout.
3. **FP8 weights.** The released linear weights are float8_e4m3fn with a ``…weight_scale_inv`` float32
   tensor of one scale per 128×128 block (V3 §3.3.2; ``quantization_config.weight_block_size``).
   :func:`import_hf` dequantizes them with :func:`dequantize_block_fp8`.

``config.json``: written from :meth:`DeepseekV3Config.to_dict` in the released style (``model_type``
``deepseek_v3``, ``architectures``, ``rope_scaling`` with ``"type": "yarn"``, ``num_nextn_predict_layers``,
``rope_theta`` at top level). transformers 5 reads the legacy ``rope_scaling`` key and converts it to its
``rope_parameters`` (checked in ``tests/test_parity_hf.py``), so only the released key is written;
``rope_interleave`` is left to transformers' default (True), which is the layout of the released weights
(V3 report §4.3). ``quantization_config`` is dropped by :func:`export_hf` because its weights are not quantized;
:func:`export_hf_fp8` writes the released FP8 form instead (E4M3 ``*_proj.weight`` + float32
``weight_scale_inv`` per 128×128 block, MTP's ``eh_proj`` and every other tensor in BF16 except the float32
``e_score_correction_bias``, ``quantization_config`` in ``config.json``), which :func:`import_hf` reads back
(dequantizing, so the round trip loses what FP8 rounding loses: ≤ 2^-4 relative per element, and what BF16
rounding loses elsewhere: ≤ 2^-9).
Reading accepts both ``rope_scaling`` and transformers' ``rope_parameters`` (via ``DeepseekV3Config``).

Limits: transformers decides dense vs MoE by ``layer_idx >= first_k_dense_replace`` only, so parity with it
needs ``moe_layer_freq == 1`` (as in V3); :func:`export_hf` warns otherwise.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import torch

from dsv3_lessons.model.config import ConfigError, DeepseekV3Config
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

__all__ = [
    "CheckpointError",
    "dequantize_block_fp8",
    "hf_name",
    "to_hf_state_dict",
    "export_hf",
    "export_hf_fp8",
    "fp8_quantizable",
    "import_hf",
    "load_hf_tensors",
]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_SCALE_SUFFIX = "_scale_inv"          # "<name>.weight" + "_scale_inv" = "<name>.weight_scale_inv"
_SHARED_DUPLICATES = ("embed_tokens.weight", "shared_head.head.weight")
_FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                    if hasattr(torch, n))
#: the one non-quantized tensor the released FP8 checkpoint stores in float32 (everything else there is BF16)
_FP32_IN_RELEASE = ("mlp.gate.e_score_correction_bias",)
_KEEP_FP32 = ("mlp.gate.weight", "mlp.gate.e_score_correction_bias")  # router stays fp32 (V3 report §3.3: gate kept in higher precision)


class CheckpointError(ValueError):
    """A checkpoint folder does not match its ``config.json``; the message names the tensors involved."""


# ---------------------------------------------------------------------------------------------- FP8
def dequantize_block_fp8(weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128),
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo 128×128 block-wise FP8 quantization: ``weight.float() * scale`` with one scale per block.

    DeepSeek-V3 stores its linear weights as FP8 (E4M3) with one float32 scale per 128×128 block
    (V3 report §3.3.2 "Fine-Grained Quantization", App. B; official ``inference/kernel.py``
    ``weight_dequant`` and ``fp8_cast_bf16.py``). Despite its name, the stored ``weight_scale_inv`` is the
    factor to **multiply** by (s = amax/448 at quantization time), never to divide by.

    Args:
        weight: quantized weight ``[rows, cols]`` (usually ``torch.float8_e4m3fn``; any dtype is accepted).
        scale_inv: float32 ``[ceil(rows/block[0]), ceil(cols/block[1])]``. Shapes that are not multiples
            of the block (e.g. 576×7168 ⇒ 5×56 scales) keep the block size; the last block row/column is
            partial and its scale applies to the elements that exist.
        block: ``(block_rows, block_cols)``, the checkpoint's ``quantization_config.weight_block_size``.
        dtype: dtype of the result.
    Returns:
        ``[rows, cols]`` tensor in ``dtype``: ``weight[r, c] · scale_inv[r // block[0], c // block[1]]``.
    Raises:
        ValueError: ``weight`` not 2-D, a non-positive block, or ``scale_inv`` not of the block-grid shape.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [rows, cols], got shape {tuple(weight.shape)}")
    br, bc = (int(b) for b in block)
    if br <= 0 or bc <= 0:
        raise ValueError(f"block must be two positive integers, got {block}")
    rows, cols = weight.shape
    grid = (math.ceil(rows / br), math.ceil(cols / bc))
    if tuple(scale_inv.shape) != grid:
        raise ValueError(f"scale_inv has shape {tuple(scale_inv.shape)} but a [{rows}, {cols}] weight in "
                         f"{br}x{bc} blocks needs ceil({rows}/{br}) x ceil({cols}/{bc}) = {grid}")
    scale = scale_inv.to(torch.float32)
    scale = scale.repeat_interleave(br, dim=0)[:rows].repeat_interleave(bc, dim=1)[:, :cols]
    return (weight.to(torch.float32) * scale).to(dtype)


# ---------------------------------------------------------------------------------------------- names
def hf_name(name: str, num_hidden_layers: int) -> str:
    """Checkpoint name of a :class:`DeepSeekV3` state-dict entry (``mtp.{k-1}.x`` -> ``model.layers.{L+k-1}.x``)."""
    if name == "lm_head.weight":
        return name
    m = re.match(r"mtp\.(\d+)\.(.*)", name)
    if m:
        return f"model.layers.{num_hidden_layers + int(m.group(1))}.{m.group(2)}"
    return "model." + name


def _our_name(name: str, num_hidden_layers: int) -> str | None:
    """Inverse of :func:`hf_name`; None for names outside the ``model.``/``lm_head`` namespace."""
    if name == "lm_head.weight":
        return name
    if not name.startswith("model."):
        return None
    rest = name[len("model."):]
    m = re.match(r"layers\.(\d+)\.(.*)", rest)
    if m and int(m.group(1)) >= num_hidden_layers:
        return f"mtp.{int(m.group(1)) - num_hidden_layers}.{m.group(2)}"
    return rest


def to_hf_state_dict(model: DeepSeekV3, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors under the released checkpoint's names, one tensor per expert.

    MTP depth k goes to ``model.layers.{L+k-1}`` together with copies of the shared embedding and head
    (``embed_tokens.weight``, ``shared_head.head.weight``), as in the released file. With
    ``tie_word_embeddings`` the main ``lm_head.weight`` is omitted (HF convention for tied weights).
    ``dtype`` casts floating tensors except the router's ``gate.weight`` and ``e_score_correction_bias``,
    which stay float32 (V3 report §3.3). All tensors are contiguous copies (safetensors refuses shared storage).
    """
    cfg = model.cfg
    n_layers = cfg.num_hidden_layers
    out: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        t = t.detach()
        if dtype is not None and t.is_floating_point() and not name.endswith(_KEEP_FP32):
            t = t.to(dtype)
        out[name] = t.contiguous().clone()

    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        put(hf_name(name, n_layers), t)
    for k in range(len(model.mtp)):
        prefix = f"model.layers.{n_layers + k}."
        put(prefix + "embed_tokens.weight", model.embed_tokens.weight)
        put(prefix + "shared_head.head.weight", model.lm_head.weight)
    return out


# ---------------------------------------------------------------------------------------------- export
def export_hf(model: DeepSeekV3, folder: str | Path, dtype: torch.dtype | None = None,
              max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` as an HF checkpoint folder that transformers' ``DeepseekV3ForCausalLM`` can load.

    Writes ``config.json`` (released style, see module docstring) and ``model.safetensors``; when
    ``max_shard_bytes`` is given and the tensors exceed it, ``model-0000i-of-0000n.safetensors`` shards plus
    ``model.safetensors.index.json`` instead. Tensor names: :func:`to_hf_state_dict`.

    Args:
        model: the model to save.
        folder: output folder (created if needed; existing files with the same names are overwritten).
        dtype: optional dtype for floating tensors (the router stays float32), e.g. ``torch.bfloat16``.
        max_shard_bytes: optional shard size limit in bytes.
    Returns: the folder path.
    Raises:
        TypeError: ``model`` is not a :class:`DeepSeekV3`.
    """
    if not isinstance(model, DeepSeekV3):
        raise TypeError(f"model must be a dsv3_lessons DeepSeekV3, got {type(model).__name__}")
    cfg = model.cfg
    if cfg.moe_layer_freq != 1:
        warnings.warn(f"moe_layer_freq={cfg.moe_layer_freq}: transformers' DeepseekV3 ignores this field, "
                      f"so it will build a different layer layout from this checkpoint", stacklevel=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    config.pop("quantization_config", None)  # the exported weights are not quantized
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    tensors = to_hf_state_dict(model, dtype)
    return _save_tensors(tensors, folder, max_shard_bytes)


def _save_tensors(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int | None) -> Path:
    """Write ``tensors`` as ``model.safetensors`` or as shards + index (see :func:`export_hf`)."""
    from safetensors.torch import save_file

    metadata = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata=metadata)
        return folder
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata=metadata)
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def fp8_quantizable(name: str, t: torch.Tensor) -> bool:
    """Whether the checkpoint tensor ``name`` is stored in FP8 by :func:`export_hf_fp8`.

    The 2-D linear weights of attention, FFN and experts (``*_proj.weight`` and ``kv_a_proj_with_mqa.weight``:
    q_a/q_b, kv_a, kv_b, o, gate/up/down), in the main layers and in the MTP module's block. Not MTP's
    ``eh_proj`` (the released checkpoint stores ``model.layers.61.eh_proj.weight`` in BF16), the embedding, the
    output head, the MoE router (``mlp.gate.weight``), norms or biases: V3 keeps those in higher precision
    (report §3.3.1).
    """
    return (t.dim() == 2 and t.is_floating_point() and not name.endswith("eh_proj.weight")
            and re.search(r"_proj(_with_mqa)?\.weight$", name) is not None)


def export_hf_fp8(model: DeepSeekV3, folder: str | Path, fmt: str = "e4m3", block: int = 128,
                  max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` as a released-style FP8 checkpoint: E4M3 weights + float32 ``weight_scale_inv``.

    Every tensor selected by :func:`fp8_quantizable` is quantized per ``block``×``block`` block
    (:func:`dsv3_lessons.model.fp8.quantize_blocks`: s = amax/448, zero blocks floored, clamp before the cast)
    and stored as ``<name>`` (float8) + ``<name>_scale_inv`` (float32 ``[⌈rows/block⌉, ⌈cols/block⌉]``, the
    factor to multiply by). Other tensors are written as the released checkpoint stores them: BF16 (embedding,
    output head and its MTP copies, norms, the router's ``gate.weight``, MTP's ``eh_proj``), except the
    balancing bias ``e_score_correction_bias``, which stays float32. ``config.json`` gets the released
    ``quantization_config`` (``quant_method`` "fp8", ``fmt``, ``activation_scheme`` "dynamic",
    ``weight_block_size`` [block, block]). Read it back with :func:`import_hf`.

    Args:
        model: the model to save; folder: output folder; fmt: "e4m3" (V3) or "e5m2";
        block: block edge (V3: 128; matrices smaller than a block get a 1×1 grid);
        max_shard_bytes: optional shard size limit, as :func:`export_hf`.
    Raises:
        TypeError: not a DeepSeekV3; ValueError: unknown fmt or a block < 1.
    """
    from dsv3_lessons.model.fp8 import quantize_blocks

    if not isinstance(model, DeepSeekV3):
        raise TypeError(f"model must be a dsv3_lessons DeepSeekV3, got {type(model).__name__}")
    if fmt not in ("e4m3", "e5m2"):
        raise ValueError(f"fmt must be 'e4m3' (V3) or 'e5m2', got {fmt!r}")
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.cfg.to_dict()
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": fmt, "quant_method": "fp8",
                                     "weight_block_size": [block, block]}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in to_hf_state_dict(model).items():
        if fp8_quantizable(name, t):
            q, s = quantize_blocks(t.float(), block, fmt)
            tensors[name], tensors[name + _SCALE_SUFFIX] = q.contiguous(), s.contiguous()
        elif t.is_floating_point() and not name.endswith(_FP32_IN_RELEASE):
            tensors[name] = t.to(torch.bfloat16).contiguous()
        else:
            tensors[name] = t
    return _save_tensors(tensors, folder, max_shard_bytes)


# ---------------------------------------------------------------------------------------------- import
def _few(names, n: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f", … ({len(names) - n} more)" if len(names) > n else "")


def load_hf_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF checkpoint folder, by checkpoint name, exactly as stored (no conversion).

    Reads ``model.safetensors.index.json`` when present (only the files it references), otherwise every
    ``*.safetensors`` file in the folder.

    Raises:
        FileNotFoundError: no such folder, no safetensors file, or a shard named by the index is absent.
        CheckpointError: the index is malformed or a tensor name appears in two files.
    """
    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    index_path = folder / INDEX_NAME
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index_path} is not a valid safetensors index (needs a 'weight_map'): {exc}") \
                from exc
        if not (isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())):
            raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to file names, got "
                                  f"{type(weight_map).__name__}")
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not (folder / f).is_file()]
        if absent:
            raise FileNotFoundError(f"{INDEX_NAME} in {folder} references missing shard file(s): {_few(absent)}")
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors file in {folder}")
    tensors: dict[str, torch.Tensor] = {}
    for fname in files:
        try:
            with safe_open(str(folder / fname), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if key in tensors:
                        raise CheckpointError(f"tensor {key} appears in more than one file of {folder}")
                    tensors[key] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own error type for truncated/corrupt files
            raise CheckpointError(f"{folder / fname} is not a readable safetensors file (truncated or corrupt?): "
                                  f"{exc}") from exc
    return tensors


def _dequantize_all(tensors: dict[str, torch.Tensor], cfg: DeepseekV3Config) -> dict[str, torch.Tensor]:
    """Replace every ``x.weight`` + ``x.weight_scale_inv`` pair by the dequantized float32 weight."""
    block = (128, 128)
    if cfg.quantization_config and cfg.quantization_config.get("weight_block_size"):
        block = tuple(cfg.quantization_config["weight_block_size"])
    out = dict(tensors)
    for name in [n for n in tensors if n.endswith(_SCALE_SUFFIX)]:
        wname = name[: -len(_SCALE_SUFFIX)]
        if wname not in tensors:
            raise CheckpointError(f"{name} has no matching quantized weight {wname}")
        try:
            out[wname] = dequantize_block_fp8(tensors[wname], tensors[name], block)
        except ValueError as exc:
            raise CheckpointError(f"cannot dequantize {wname}: {exc}") from exc
        del out[name]
    raw_fp8 = [n for n, t in out.items() if t.dtype in _FP8_DTYPES]
    if raw_fp8:
        raise CheckpointError(f"FP8 tensor(s) without a '{_SCALE_SUFFIX}' scale, cannot dequantize: {_few(raw_fp8)}")
    return out


def _split_fused_experts(tensors: dict[str, torch.Tensor], moe_intermediate_size: int) -> dict[str, torch.Tensor]:
    """transformers' fused ``experts.gate_up_proj [E, 2I, H]`` / ``experts.down_proj [E, H, I]`` -> per expert."""
    out = {}
    for name, t in tensors.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            if t.dim() != 3 or t.shape[1] != 2 * moe_intermediate_size:
                raise CheckpointError(f"shape mismatch for {name}: expected [E, 2*moe_intermediate_size="
                                      f"{2 * moe_intermediate_size}, hidden], got {tuple(t.shape)}")
            for e in range(t.shape[0]):
                gate, up = t[e].split(moe_intermediate_size, dim=0)  # gate rows first, then up rows
                out[f"{prefix}{e}.gate_proj.weight"] = gate
                out[f"{prefix}{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            if t.dim() != 3:
                raise CheckpointError(f"shape mismatch for {name}: expected [E, hidden, moe_intermediate_size], "
                                      f"got {tuple(t.shape)}")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


#: Sizes a checkpoint's config.json must state (a missing one would silently take the 671B default).
_REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                         "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                         "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "num_experts_per_tok")


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def import_hf(folder: str | Path, load_mtp: bool | None = None, **model_kwargs) -> DeepSeekV3:
    """Build a float32 :class:`DeepSeekV3` from an HF checkpoint folder (ours, transformers' or the released one).

    Accepts one or several safetensors files (with or without ``model.safetensors.index.json``),
    per-expert or fused expert tensors, and FP8 block-quantized weights with ``weight_scale_inv``
    (dequantized with :func:`dequantize_block_fp8`, block size from ``quantization_config``).

    Args:
        folder: the checkpoint folder (``config.json`` + ``*.safetensors``).
        load_mtp: ``None`` (default) loads the MTP modules when the checkpoint holds MTP tensors
            (``model.layers.{L}…``) and otherwise builds the model without MTP, with a warning
            (transformers' ``save_pretrained`` drops them); ``True`` requires them; ``False`` ignores them.
        **model_kwargs: passed to :class:`DeepSeekV3` (``aux_loss_alpha``, ``mtp_loss_weight``).
    Returns: the model in eval mode.
    Raises:
        FileNotFoundError: no folder, no ``config.json`` or no weights.
        ConfigError: invalid ``config.json``.
        CheckpointError: missing tensors, unexpected tensors, shape mismatches (name, expected, got),
            NaN/Inf values, FP8 weights without scales -- each message names the tensors (checkpoint names).
    """
    folder = Path(folder)
    if folder.is_file():
        raise FileNotFoundError(f"{folder} is a file; import_hf needs the checkpoint FOLDER (config.json + "
                                f"*.safetensors)")
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {folder}: an HF checkpoint folder needs config.json next to "
                                f"its *.safetensors files")
    raw = json.loads((folder / "config.json").read_text()) if _is_json(folder / "config.json") else None
    if isinstance(raw, dict):
        absent = [k for k in _REQUIRED_CONFIG_KEYS if k not in raw]
        if absent:  # never fill a checkpoint's sizes with the 671B defaults
            raise ConfigError(f"{folder / 'config.json'} lacks required field(s) {absent}; a DeepSeek-V3 config.json "
                              f"names every size explicitly")
    cfg = DeepseekV3Config.load(folder)
    n_layers = cfg.num_hidden_layers
    tensors = _dequantize_all(load_hf_tensors(folder), cfg)
    tensors = _split_fused_experts(tensors, cfg.moe_intermediate_size)

    # checkpoint name -> our name; the MTP duplicates of embedding/head are set aside
    ours: dict[str, str] = {}
    duplicates: dict[str, tuple[str, torch.Tensor]] = {}
    unexpected = []
    for name in tensors:
        our = _our_name(name, n_layers)
        if our is None:
            unexpected.append(name)
            continue
        m = re.match(r"mtp\.(\d+)\.(.*)", our)
        if m and m.group(2) in _SHARED_DUPLICATES:
            main = "embed_tokens.weight" if m.group(2) == "embed_tokens.weight" else "lm_head.weight"
            duplicates[name] = (main, tensors[name])
            continue
        ours[our] = name
    has_mtp = any(o.startswith("mtp.") for o in ours)
    if load_mtp is None:
        load_mtp = has_mtp
        if not has_mtp and cfg.num_nextn_predict_layers > 0:
            warnings.warn(f"{folder} holds no MTP tensors (model.layers.{n_layers}.*) although config.json has "
                          f"num_nextn_predict_layers={cfg.num_nextn_predict_layers}; building the model without "
                          f"MTP modules (pass load_mtp=True to require them)", stacklevel=2)
    if not load_mtp:
        for our in [o for o in ours if o.startswith("mtp.")]:
            del ours[our]
        duplicates.clear()
        cfg = cfg.replace(num_nextn_predict_layers=0)

    with torch.device("meta"):  # shapes first, without allocating (a wrong config could ask for terabytes)
        expected = DeepSeekV3(cfg, **model_kwargs).state_dict()
    if cfg.tie_word_embeddings and "lm_head.weight" not in ours and "embed_tokens.weight" in ours:
        ours["lm_head.weight"] = ours["embed_tokens.weight"]  # tied: HF files omit the head
    missing = [hf_name(n, n_layers) for n in expected if n not in ours]
    unexpected += [ours[o] for o in ours if o not in expected]
    mismatched = [f"{ours[o]}: expected {tuple(expected[o].shape)}, got {tuple(tensors[ours[o]].shape)}"
                  for o in ours if o in expected and tuple(tensors[ours[o]].shape) != tuple(expected[o].shape)]
    mismatched += [f"{name}: expected {tuple(expected[main].shape)} (same as {hf_name(main, n_layers)}), "
                   f"got {tuple(t.shape)}"
                   for name, (main, t) in duplicates.items() if tuple(t.shape) != tuple(expected[main].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched, 3)}")
    if problems:
        raise CheckpointError(f"checkpoint {folder} does not match its config.json: " + "; ".join(problems))

    state = {o: tensors[ours[o]] for o in expected}
    not_float = [f"{ours[o]} ({t.dtype})" for o, t in state.items() if not t.is_floating_point()]
    if not_float:
        raise CheckpointError(f"integer/bool tensors where weights must be floating point in {folder}: "
                              f"{_few(not_float, 3)}")
    bad = []
    for o, t in state.items():
        if t.is_floating_point():
            n_bad = int((~torch.isfinite(t)).sum())
            if n_bad:
                bad.append(f"{ours[o]} ({n_bad} of {t.numel()} values)")
    if bad:
        raise CheckpointError(f"non-finite values (NaN/Inf) in checkpoint {folder}: {_few(bad, 3)}")
    model = DeepSeekV3(cfg, **model_kwargs)
    state = {o: t.to(expected[o].dtype) for o, t in state.items()}
    model.load_state_dict(state, strict=True)

    for name, (main, t) in duplicates.items():
        ref = state[main]
        if not torch.equal(t.to(ref.dtype), ref):
            diff = (t.float() - ref.float()).abs().max().item()
            warnings.warn(f"{name} differs from {hf_name(main, n_layers)} (max abs diff {diff:.3g}); the MTP "
                          f"module shares the main model's tensor, so the duplicate is ignored", stacklevel=2)
    return model.eval()
