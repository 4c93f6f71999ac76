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

Storage dtypes of the released checkpoint (its ``model.safetensors`` headers; ``CrosswalkRow.stored``): the
linear layers of attention and of the FFNs/experts are FP8 E4M3 with a ``weight_scale_inv`` per 128×128 block.
BF16 are the two largest single matrices -- ``embed_tokens`` and ``lm_head`` (129,280 × 7,168 each) -- and their
copies in the MTP module (``embed_tokens``, ``shared_head.head``), MTP's ``eh_proj`` (7,168 × 14,336), every
RMSNorm weight and the MoE gate's ``weight``; the gate's ``e_score_correction_bias`` is FP32, like the block
scales (the official ``inference/model.py`` creates it in float32). V3 report §3.3 names the embedding, the
output head, the gate and the norms as kept in higher precision. :data:`RELEASED_GATE_DTYPES` records the two gate tensors; the crosswalk text says the
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

__all__ = ["CrosswalkRow", "ConfigRow", "RELEASED_GATE_DTYPES", "CROSSWALK", "CONFIG_CROSSWALK", "PAPER_TEX",
           "crosswalk_html", "crosswalk_markdown"]


class CrosswalkRow(NamedTuple):
    """One tensor: component, paper symbol, what it is, our name, checkpoint name, official name, V3 report source,
    and the dtype the released checkpoint stores it in (``FP8`` with block scales, ``BF16`` or ``FP32``)."""

    component: str
    paper: str
    meaning: str
    ours: str
    checkpoint: str
    official: str
    source: str
    stored: str = ""


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

#: Tensor crosswalk (V3 report section/equation in ``source``; released storage dtype in ``stored``). ``meaning``
#: writes symbols as TeX between ``$`` signs (JupyterLab renders them in the HTML table).
CROSSWALK: list[CrosswalkRow] = [
    CrosswalkRow("embedding / head", "Emb", "token embedding (shared with MTP)", "embed_tokens.weight",
                 "model.embed_tokens.weight", "embed.weight", "§2, eq. 21", "BF16"),
    CrosswalkRow("embedding / head", "OutHead", "output projection to the vocabulary (shared with MTP)",
                 "lm_head.weight", "lm_head.weight", "head.weight", "§2.2, eq. 23", "BF16"),
    CrosswalkRow("embedding / head", "RMSNorm", "final norm before the head", "norm.weight",
                 "model.norm.weight", "norm.weight", "§2", "BF16"),
    CrosswalkRow("norms", "RMSNorm", "pre-attention norm of block $l$", "layers.{l}.input_layernorm.weight",
                 "model.layers.{l}.input_layernorm.weight", "layers.{l}.attn_norm.weight", "§2", "BF16"),
    CrosswalkRow("norms", "RMSNorm", "pre-FFN norm of block $l$", "layers.{l}.post_attention_layernorm.weight",
                 "model.layers.{l}.post_attention_layernorm.weight", "layers.{l}.ffn_norm.weight", "§2", "BF16"),
    CrosswalkRow("MLA", "W^DQ", "query down-projection $h_t \\to c^Q$", _A + "q_a_proj.weight",
                 "model." + _A + "q_a_proj.weight", "layers.{l}.attn.wq_a.weight", "§2.1.1, eq. 6", "FP8"),
    CrosswalkRow("MLA", "RMSNorm(c^Q)", "norm on the query latent", _A + "q_a_layernorm.weight",
                 "model." + _A + "q_a_layernorm.weight", "layers.{l}.attn.q_norm.weight", "§2.1.1", "BF16"),
    CrosswalkRow("MLA", "W^UQ ; W^QR", "query up-projection; per head rows [content $d_h$ | rope $d_h^R$]",
                 _A + "q_b_proj.weight", "model." + _A + "q_b_proj.weight", "layers.{l}.attn.wq_b.weight",
                 "§2.1.1, eqs. 7–8", "FP8"),
    CrosswalkRow("MLA", "W^DKV ; W^KR", "KV down-projection to $c^{KV}$ and the shared rope key $k^R$, fused rows "
                 "[$d_c$ ; $d_h^R$]", _A + "kv_a_proj_with_mqa.weight", "model." + _A + "kv_a_proj_with_mqa.weight",
                 "layers.{l}.attn.wkv_a.weight", "§2.1.1, eqs. 1, 3", "FP8"),
    CrosswalkRow("MLA", "RMSNorm(c^KV)", "norm on the KV latent (before caching)", _A + "kv_a_layernorm.weight",
                 "model." + _A + "kv_a_layernorm.weight", "layers.{l}.attn.kv_norm.weight", "§2.1.1", "BF16"),
    CrosswalkRow("MLA", "W^UK ; W^UV", "key/value up-projections; per head rows [$W^{UK}_h$ ; $W^{UV}_h$]",
                 _A + "kv_b_proj.weight", "model." + _A + "kv_b_proj.weight", "layers.{l}.attn.wkv_b.weight",
                 "§2.1.1, eqs. 2, 5", "FP8"),
    CrosswalkRow("MLA", "W^O", "output projection", _A + "o_proj.weight", "model." + _A + "o_proj.weight",
                 "layers.{l}.attn.wo.weight", "§2.1.1, eq. 11", "FP8"),
    CrosswalkRow("dense FFN", "FFN (SwiGLU)", "gate / up / down of the dense layers $l < 3$",
                 _F + "{gate,up,down}_proj.weight", "model." + _F + "{gate,up,down}_proj.weight",
                 "layers.{l}.ffn.{w1,w3,w2}.weight", "§4.2", "FP8"),
    CrosswalkRow("DeepSeekMoE", "e_i", "expert centroids of the gate ($s_i = \\sigma(u_t^\\top e_i)$); released in "
                 "BF16, not quantized to FP8 (transformers upcasts it to FP32 to score)",
                 _F + "gate.weight", "model." + _F + "gate.weight", "layers.{l}.ffn.gate.weight",
                 "§2.1.2, eq. 15", "BF16"),
    CrosswalkRow("DeepSeekMoE", "b_i", "balancing bias, used for selection only (a buffer, no gradient); released "
                 "in FP32 (the gate weight is BF16)",
                 _F + "gate.e_score_correction_bias", "model." + _F + "gate.e_score_correction_bias",
                 "layers.{l}.ffn.gate.bias", "§2.1.2, eq. 16", "FP32"),
    CrosswalkRow("DeepSeekMoE", "FFN^(r)_i", "routed expert $i$ (SwiGLU)", _F + "experts.{i}.{gate,up,down}_proj.weight",
                 "model." + _F + "experts.{i}.{gate,up,down}_proj.weight", "layers.{l}.ffn.experts.{i}.{w1,w3,w2}.weight",
                 "§2.1.2, eq. 12", "FP8"),
    CrosswalkRow("DeepSeekMoE", "FFN^(s)", "shared expert (SwiGLU)", _F + "shared_experts.{gate,up,down}_proj.weight",
                 "model." + _F + "shared_experts.{gate,up,down}_proj.weight",
                 "layers.{l}.ffn.shared_experts.{w1,w3,w2}.weight", "§2.1.2, eq. 12", "FP8"),
    CrosswalkRow("MTP", "M_k", "projection of [RMSNorm(Emb($t_{i+k}$)) ; RMSNorm($h^{k-1}_i$)] (embedding first "
                 "in the weights); released in BF16", _M + "eh_proj.weight", _MC + "eh_proj.weight", "—",
                 "§2.2, eq. 21", "BF16"),
    CrosswalkRow("MTP", "RMSNorm(Emb)", "norm of the next token's embedding", _M + "enorm.weight",
                 _MC + "enorm.weight", "—", "§2.2, eq. 21", "BF16"),
    CrosswalkRow("MTP", "RMSNorm(h^{k-1})", "norm of the previous depth's hidden state", _M + "hnorm.weight",
                 _MC + "hnorm.weight", "—", "§2.2, eq. 21", "BF16"),
    CrosswalkRow("MTP", "TRM_k", "the depth's own transformer block (MLA + MoE, same names and dtypes as a layer)",
                 _M + "{self_attn,mlp,input_layernorm,post_attention_layernorm}.*",
                 _MC + "{self_attn,mlp,input_layernorm,post_attention_layernorm}.*", "—", "§2.2, eq. 22",
                 "as a layer"),
    CrosswalkRow("MTP", "OutHead (norm)", "RMSNorm before the shared head", _M + "shared_head.norm.weight",
                 _MC + "shared_head.norm.weight", "—", "§2.2, eq. 23", "BF16"),
    CrosswalkRow("MTP", "OutHead (shared)", "the main head; the checkpoint stores a copy", "lm_head.weight",
                 _MC + "shared_head.head.weight", "—", "§2.2, eq. 23", "BF16"),
    CrosswalkRow("MTP", "Emb (shared)", "the main embedding; the checkpoint stores a copy", "embed_tokens.weight",
                 _MC + "embed_tokens.weight", "—", "§2.2, eq. 21", "BF16"),
    CrosswalkRow("FP8", "block scale s", "per 128×128 block dequantisation scale (multiply)",
                 "(dequantised on load, chapter 09)", "<name>.weight_scale_inv", "<name>.scale", "§3.3", "FP32"),
]

#: The papers' symbols as TeX (rendered by MathJax in the notebook's HTML table), keyed by ``CrosswalkRow.paper``.
PAPER_TEX: dict[str, str] = {
    "Emb": r"$\mathrm{Emb}$", "OutHead": r"$\mathrm{OutHead}$", "RMSNorm": r"$\mathrm{RMSNorm}$",
    "W^DQ": r"$W^{DQ}$", "RMSNorm(c^Q)": r"$\mathrm{RMSNorm}(c^{Q})$", "W^UQ ; W^QR": r"$W^{UQ};\ W^{QR}$",
    "W^DKV ; W^KR": r"$W^{DKV};\ W^{KR}$", "RMSNorm(c^KV)": r"$\mathrm{RMSNorm}(c^{KV})$",
    "W^UK ; W^UV": r"$W^{UK};\ W^{UV}$", "W^O": r"$W^{O}$", "FFN (SwiGLU)": r"$\mathrm{FFN}$ (SwiGLU)",
    "e_i": r"$e_i$", "b_i": r"$b_i$", "FFN^(r)_i": r"$\mathrm{FFN}^{(r)}_i$", "FFN^(s)": r"$\mathrm{FFN}^{(s)}$",
    "M_k": r"$M_k$", "RMSNorm(Emb)": r"$\mathrm{RMSNorm}(\mathrm{Emb})$",
    "RMSNorm(h^{k-1})": r"$\mathrm{RMSNorm}(h^{k-1})$", "TRM_k": r"$\mathrm{TRM}_k$",
    "OutHead (norm)": r"$\mathrm{OutHead}$ (its norm)", "OutHead (shared)": r"$\mathrm{OutHead}$ (shared)",
    "Emb (shared)": r"$\mathrm{Emb}$ (shared)", "block scale s": r"block scale $s$",
    # hyper-parameters
    "d": r"$d$", "l": r"$l$", "—": "—", "n_h": r"$n_h$", "d_c'": r"$d_c'$", "d_c": r"$d_c$", "d_h": r"$d_h$",
    "d_h^R": r"$d_h^R$", "d_h (values)": r"$d_h$ (values)", "N_r": r"$N_r$", "N_s": r"$N_s$", "K_r": r"$K_r$",
    "M": r"$M$", "s (YaRN)": r"$s$ (YaRN)", "D": r"$D$",
}

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
                   "V3 report", "stored")
_CONFIG_HEADERS = ("paper", "meaning", "config.json", "official ModelArgs")

#: The HTML table's columns (tensors): header and share of the notebook width. The component becomes a heading
#: row and "our attribute" joins the checkpoint column (it is the checkpoint name without ``model.`` except
#: where the cell says otherwise), so the table fits the ~970 px of a JupyterLab output area.
_HTML_COLUMNS = (("paper", 16), ("meaning", 24), ("checkpoint tensor (ours: drop <code>model.</code>)", 30),
                 ("official inference", 17), ("stored", 6), ("V3 report", 7))
_CONFIG_COLUMNS = (("paper", 12), ("meaning", 38), ("config.json (ours)", 28), ("official ModelArgs", 22))


def _rows(kind: str) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    if kind == "tensors":
        return _TENSOR_HEADERS, [tuple(r) for r in CROSSWALK]
    if kind == "config":
        return _CONFIG_HEADERS, [tuple(r) for r in CONFIG_CROSSWALK]
    raise ValueError(f"kind must be 'tensors' or 'config', got {kind!r}")


def _name_html(name: str) -> str:
    """A dotted tensor name as ``<code>`` that may wrap after each dot or comma (``<wbr>``), never inside a word."""
    if name in ("—", "") or name.startswith("("):
        return html.escape(name)
    return "<code>" + html.escape(name).replace(".", ".<wbr>").replace(",", ",<wbr>") + "</code>"


def _table(columns, body_rows: list[str]) -> str:
    cols = "".join(f"<col style='width:{w}%'>" for _, w in columns)
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h, _ in columns)
    return (f"<table style='table-layout:fixed;width:100%;font-size:0.95em'>\n<colgroup>{cols}</colgroup>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body_rows) + "\n</tbody>\n</table>")


def _td(body: str) -> str:
    return f"<td style='text-align:left;vertical-align:top;overflow-wrap:anywhere'>{body}</td>"


def crosswalk_html(kind: str = "tensors", component: str | None = None) -> str:
    """The crosswalk as an HTML table that fits a notebook cell (``kind`` 'tensors' or 'config'; optionally one
    ``component``). Paper symbols are TeX (``$W^{DKV}$``), which JupyterLab typesets; tensor names wrap at dots.

    Tensors: one heading row per component, then per tensor the paper symbol, its meaning, the checkpoint name
    (our attribute is the same without ``model.``; where it differs, the cell names it), the official inference
    name, the released storage dtype and the V3 report section. Raises ValueError for an unknown ``kind`` or
    ``component``.
    """
    _rows(kind)   # validates kind
    if kind == "config":
        body = ["<tr>" + _td(PAPER_TEX.get(r.paper, html.escape(r.paper))) + _td(html.escape(r.meaning))
                + _td(_name_html(r.config)) + _td(_name_html(r.official)) + "</tr>" for r in CONFIG_CROSSWALK]
        return _table(_CONFIG_COLUMNS, body)
    rows = CROSSWALK
    if component is not None:
        rows = [r for r in rows if r.component == component]
        if not rows:
            raise ValueError(f"no crosswalk row for component {component!r}; "
                             f"choose from {sorted({r.component for r in CROSSWALK})}")
    body, current = [], None
    for r in rows:
        if r.component != current:
            current = r.component
            body.append(f"<tr><th colspan='{len(_HTML_COLUMNS)}' style='text-align:left'>{html.escape(current)}</th></tr>")
        ckpt = _name_html(r.checkpoint)
        if r.checkpoint not in ("model." + r.ours, r.ours) and not r.ours.startswith("("):
            ckpt += f"<br><small>ours: {_name_html(r.ours)}</small>"
        elif r.ours.startswith("("):
            ckpt += f"<br><small>ours: {html.escape(r.ours)}</small>"
        body.append("<tr>" + _td(PAPER_TEX.get(r.paper, html.escape(r.paper))) + _td(html.escape(r.meaning)) + _td(ckpt)
                    + _td(_name_html(r.official)) + _td(html.escape(r.stored)) + _td(html.escape(r.source)) + "</tr>")
    return _table(_HTML_COLUMNS, body)


def crosswalk_markdown(kind: str = "tensors") -> str:
    """The crosswalk as a Markdown table (names in backticks, every column)."""
    headers, rows = _rows(kind)

    def fmt(text: str) -> str:
        text = text.replace("|", "\\|")
        return f"`{text}`" if ("." in text or "_" in text) and " " not in text else text

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
