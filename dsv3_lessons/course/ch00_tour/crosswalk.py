"""One crosswalk: paper symbol ↔ our module attribute ↔ released checkpoint tensor ↔ official inference name.

Three vocabularies name the same tensors:

* the **paper** (V3 report arXiv 2412.19437, §2.1.1 eqs. 1–11 for MLA, §2.1.2 eqs. 12–16 for DeepSeekMoE,
  §2.2 eqs. 21–25 for MTP) uses symbols such as W^DKV, b_i, M_k;
* the **released checkpoint** (Hugging Face ``deepseek-ai/DeepSeek-V3``, ``model.safetensors``) and
  transformers' ``DeepseekV3ForCausalLM`` use names such as ``model.layers.3.self_attn.kv_a_proj_with_mqa.weight``;
  our modules use the same names with the ``model.`` prefix dropped, so a state dict maps 1:1;
* the **official inference code** (deepseek-ai/DeepSeek-V3 ``inference/model.py``, names produced by its
  ``convert.py``) renames them: ``self_attn`` → ``attn``, ``mlp`` → ``ffn``, ``kv_a_proj_with_mqa`` → ``wkv_a``,
  ``gate_proj``/``up_proj``/``down_proj`` → ``w1``/``w3``/``w2``, ``e_score_correction_bias`` → ``bias``,
  ``weight_scale_inv`` → ``scale``. Its converter skips ``model.layers.61`` (the MTP module), so MTP
  tensors have no official inference name.

Storage dtypes of the released checkpoint (its ``model.safetensors`` headers): the large matrices are FP8 E4M3
with a ``weight_scale_inv`` per 128×128 block; embedding, head, norms and the MoE gate's ``weight`` are BF16; the
gate's ``e_score_correction_bias`` is FP32, like the block scales (the official ``inference/model.py``
creates it in float32). :data:`RELEASED_GATE_DTYPES` records the two gate tensors; the crosswalk text says the
same, because an earlier version wrongly called the gate weight FP32.

Placeholders: ``{l}`` a layer index, ``{i}`` a routed expert index, ``{k}`` the MTP depth (1-based; our
``mtp.{k-1}`` is the checkpoint's ``model.layers.{L+k-1}`` with L = ``num_hidden_layers`` = 61).

:data:`CROSSWALK` lists tensors, :data:`CONFIG_CROSSWALK` the hyper-parameters (official names taken from
:data:`dsv3_lessons.model.config.OFFICIAL_NAMES`). :func:`crosswalk_html` / :func:`crosswalk_markdown` render
them for notebook 00; the tests check every row against our model's state dict, transformers' model and
the official renaming rule.
"""
from __future__ import annotations

import html
from typing import NamedTuple

from dsv3_lessons.model.config import OFFICIAL_NAMES

__all__ = ["CrosswalkRow", "ConfigRow", "RELEASED_GATE_DTYPES", "CROSSWALK", "CONFIG_CROSSWALK", "crosswalk_html", "crosswalk_markdown"]


class CrosswalkRow(NamedTuple):
    """One tensor: component, paper symbol, what it is, our name, checkpoint name, official name, source."""

    component: str
    paper: str
    meaning: str
    ours: str
    checkpoint: str
    official: str
    source: str


class ConfigRow(NamedTuple):
    """One hyper-parameter: paper symbol, meaning, ``config.json`` field, official ``ModelArgs`` name."""

    paper: str
    meaning: str
    config: str
    official: str


_A = "layers.{l}.self_attn."
_F = "layers.{l}.mlp."
_M = "mtp.{k-1}."
_MC = "model.layers.{L+k-1}."

#: How the released DeepSeek-V3 checkpoint stores the two tensors of a MoE gate (safetensors dtype names).
RELEASED_GATE_DTYPES: dict[str, str] = {
    "model.layers.{l}.mlp.gate.weight": "BF16",
    "model.layers.{l}.mlp.gate.e_score_correction_bias": "F32",
}

#: Tensor crosswalk (V3 report section/equation in ``source``).
CROSSWALK: list[CrosswalkRow] = [
    CrosswalkRow("embedding / head", "Emb", "token embedding (shared with MTP)", "embed_tokens.weight",
                 "model.embed_tokens.weight", "embed.weight", "§2, eq. 21"),
    CrosswalkRow("embedding / head", "OutHead", "output projection to the vocabulary (shared with MTP)",
                 "lm_head.weight", "lm_head.weight", "head.weight", "§2.2, eq. 23"),
    CrosswalkRow("embedding / head", "RMSNorm", "final norm before the head", "norm.weight",
                 "model.norm.weight", "norm.weight", "§2"),
    CrosswalkRow("norms", "RMSNorm", "pre-attention norm of block l", "layers.{l}.input_layernorm.weight",
                 "model.layers.{l}.input_layernorm.weight", "layers.{l}.attn_norm.weight", "§2"),
    CrosswalkRow("norms", "RMSNorm", "pre-FFN norm of block l", "layers.{l}.post_attention_layernorm.weight",
                 "model.layers.{l}.post_attention_layernorm.weight", "layers.{l}.ffn_norm.weight", "§2"),
    CrosswalkRow("MLA", "W^DQ", "query down-projection h_t → c^Q", _A + "q_a_proj.weight",
                 "model." + _A + "q_a_proj.weight", "layers.{l}.attn.wq_a.weight", "§2.1.1, eq. 6"),
    CrosswalkRow("MLA", "RMSNorm(c^Q)", "norm on the query latent", _A + "q_a_layernorm.weight",
                 "model." + _A + "q_a_layernorm.weight", "layers.{l}.attn.q_norm.weight", "§2.1.1"),
    CrosswalkRow("MLA", "W^UQ ; W^QR", "query up-projection; per head rows [content d_h | rope d_h^R]",
                 _A + "q_b_proj.weight", "model." + _A + "q_b_proj.weight", "layers.{l}.attn.wq_b.weight",
                 "§2.1.1, eqs. 7–8"),
    CrosswalkRow("MLA", "W^DKV ; W^KR", "KV down-projection c^KV and the shared rope key k^R, fused rows "
                 "[d_c ; d_h^R]", _A + "kv_a_proj_with_mqa.weight", "model." + _A + "kv_a_proj_with_mqa.weight",
                 "layers.{l}.attn.wkv_a.weight", "§2.1.1, eqs. 1, 3"),
    CrosswalkRow("MLA", "RMSNorm(c^KV)", "norm on the KV latent (before caching)", _A + "kv_a_layernorm.weight",
                 "model." + _A + "kv_a_layernorm.weight", "layers.{l}.attn.kv_norm.weight", "§2.1.1"),
    CrosswalkRow("MLA", "W^UK ; W^UV", "key/value up-projections; per head rows [W^UK_h ; W^UV_h]",
                 _A + "kv_b_proj.weight", "model." + _A + "kv_b_proj.weight", "layers.{l}.attn.wkv_b.weight",
                 "§2.1.1, eqs. 2, 5"),
    CrosswalkRow("MLA", "W^O", "output projection", _A + "o_proj.weight", "model." + _A + "o_proj.weight",
                 "layers.{l}.attn.wo.weight", "§2.1.1, eq. 11"),
    CrosswalkRow("dense FFN", "FFN (SwiGLU)", "gate / up / down of the dense layers l < 3",
                 _F + "{gate,up,down}_proj.weight", "model." + _F + "{gate,up,down}_proj.weight",
                 "layers.{l}.ffn.{w1,w3,w2}.weight", "§4.2"),
    CrosswalkRow("DeepSeekMoE", "e_i", "expert centroids of the gate (s_i = sigmoid(u·e_i)); released in BF16, "
                 "not quantized to FP8 (transformers upcasts it to FP32 to score)",
                 _F + "gate.weight", "model." + _F + "gate.weight", "layers.{l}.ffn.gate.weight",
                 "§2.1.2, eq. 15"),
    CrosswalkRow("DeepSeekMoE", "b_i", "balancing bias, used for selection only (a buffer, no gradient); released "
                 "in FP32 (the gate weight is BF16)",
                 _F + "gate.e_score_correction_bias", "model." + _F + "gate.e_score_correction_bias",
                 "layers.{l}.ffn.gate.bias", "§2.1.2, eq. 16"),
    CrosswalkRow("DeepSeekMoE", "FFN^(r)_i", "routed expert i (SwiGLU)", _F + "experts.{i}.{gate,up,down}_proj.weight",
                 "model." + _F + "experts.{i}.{gate,up,down}_proj.weight", "layers.{l}.ffn.experts.{i}.{w1,w3,w2}.weight",
                 "§2.1.2, eq. 12"),
    CrosswalkRow("DeepSeekMoE", "FFN^(s)", "shared expert (SwiGLU)", _F + "shared_experts.{gate,up,down}_proj.weight",
                 "model." + _F + "shared_experts.{gate,up,down}_proj.weight",
                 "layers.{l}.ffn.shared_experts.{w1,w3,w2}.weight", "§2.1.2, eq. 12"),
    CrosswalkRow("MTP", "M_k", "projection of [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)] (embedding first "
                 "in the weights)", _M + "eh_proj.weight", _MC + "eh_proj.weight", "—", "§2.2, eq. 21"),
    CrosswalkRow("MTP", "RMSNorm(Emb)", "norm of the next token's embedding", _M + "enorm.weight",
                 _MC + "enorm.weight", "—", "§2.2, eq. 21"),
    CrosswalkRow("MTP", "RMSNorm(h^{k-1})", "norm of the previous depth's hidden state", _M + "hnorm.weight",
                 _MC + "hnorm.weight", "—", "§2.2, eq. 21"),
    CrosswalkRow("MTP", "TRM_k", "the depth's own transformer block (MLA + MoE, same names as a layer)",
                 _M + "{self_attn,mlp,input_layernorm,post_attention_layernorm}.*",
                 _MC + "{self_attn,mlp,input_layernorm,post_attention_layernorm}.*", "—", "§2.2, eq. 22"),
    CrosswalkRow("MTP", "OutHead (norm)", "RMSNorm before the shared head", _M + "shared_head.norm.weight",
                 _MC + "shared_head.norm.weight", "—", "§2.2, eq. 23"),
    CrosswalkRow("MTP", "OutHead (shared)", "the main head; the checkpoint stores a copy", "lm_head.weight",
                 _MC + "shared_head.head.weight", "—", "§2.2, eq. 23"),
    CrosswalkRow("MTP", "Emb (shared)", "the main embedding; the checkpoint stores a copy", "embed_tokens.weight",
                 _MC + "embed_tokens.weight", "—", "§2.2, eq. 21"),
    CrosswalkRow("FP8", "block scale s", "per 128×128 block dequantisation scale (multiply)",
                 "(dequantised on load, chapter 09)", "<name>.weight_scale_inv", "<name>.scale", "§3.3"),
]

_CONFIG_SYMBOLS: list[tuple[str, str, str]] = [
    ("d", "hidden size", "hidden_size"),
    ("l", "number of layers", "num_hidden_layers"),
    ("—", "dense (non-MoE) leading layers", "first_k_dense_replace"),
    ("n_h", "attention heads", "num_attention_heads"),
    ("d_c'", "query latent dimension", "q_lora_rank"),
    ("d_c", "KV latent dimension", "kv_lora_rank"),
    ("d_h", "per-head content dimension of q/k", "qk_nope_head_dim"),
    ("d_h^R", "per-head decoupled rope dimension", "qk_rope_head_dim"),
    ("d_h (values)", "per-head value dimension", "v_head_dim"),
    ("N_r", "routed experts per MoE layer", "n_routed_experts"),
    ("N_s", "shared experts per MoE layer", "n_shared_experts"),
    ("K_r", "routed experts per token", "num_experts_per_tok"),
    ("—", "expert groups (nodes)", "n_group"),
    ("M", "groups (nodes) a token may reach", "topk_group"),
    ("—", "scale on the routed combine weights", "routed_scaling_factor"),
    ("—", "intermediate size of each expert", "moe_intermediate_size"),
    ("s (YaRN)", "context extension factor", "rope_scaling.factor"),
    ("D", "MTP depth", "num_nextn_predict_layers"),
]

#: Hyper-parameter crosswalk; official names come from :data:`OFFICIAL_NAMES` ("—" when it has none).
CONFIG_CROSSWALK: list[ConfigRow] = [ConfigRow(sym, meaning, field, OFFICIAL_NAMES.get(field, "—"))
                                     for sym, meaning, field in _CONFIG_SYMBOLS]

_TENSOR_HEADERS = ("component", "paper", "meaning", "our attribute", "checkpoint tensor", "official inference",
                   "V3 report")
_CONFIG_HEADERS = ("paper", "meaning", "config.json", "official ModelArgs")


def _rows(kind: str) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    if kind == "tensors":
        return _TENSOR_HEADERS, [tuple(r) for r in CROSSWALK]
    if kind == "config":
        return _CONFIG_HEADERS, [tuple(r) for r in CONFIG_CROSSWALK]
    raise ValueError(f"kind must be 'tensors' or 'config', got {kind!r}")


def crosswalk_html(kind: str = "tensors", component: str | None = None) -> str:
    """The crosswalk as an HTML table (``kind`` 'tensors' or 'config'; optionally one ``component``)."""
    headers, rows = _rows(kind)
    if component is not None:
        if kind != "tensors":
            raise ValueError("component filtering applies to kind='tensors' only")
        rows = [r for r in rows if r[0] == component]
        if not rows:
            raise ValueError(f"no crosswalk row for component {component!r}; "
                             f"choose from {sorted({r.component for r in CROSSWALK})}")

    def cell(text: str, tag: str) -> str:
        body = html.escape(text)
        if tag == "td" and ("." in text or "_" in text) and " " not in text:
            body = f"<code>{body}</code>"
        return f"<{tag} style='text-align:left'>{body}</{tag}>"

    head = "".join(cell(h, "th") for h in headers)
    body = "\n".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def crosswalk_markdown(kind: str = "tensors") -> str:
    """The crosswalk as a Markdown table (names in backticks)."""
    headers, rows = _rows(kind)

    def fmt(text: str) -> str:
        text = text.replace("|", "\\|")
        return f"`{text}`" if ("." in text or "_" in text) and " " not in text else text

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
