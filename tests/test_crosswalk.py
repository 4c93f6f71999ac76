"""The paper ↔ code ↔ checkpoint ↔ official crosswalk (dsv3_lessons.course.ch00_tour.crosswalk) checked against three oracles:

* our model's state dict (every "our attribute" exists);
* transformers' ``DeepseekV3ForCausalLM`` state dict and its checkpoint conversion mapping (every
  checkpoint name of the main model is what transformers loads);
* the official ``inference/convert.py`` renaming rule (strip ``model.``; ``self_attn``→``attn``,
  ``mlp``→``ffn``, ``e_score_correction_bias``→``bias``, ``weight_scale_inv``→``scale``; then the leaf
  module renamed by its table), transcribed below from deepseek-ai/DeepSeek-V3.
"""
from __future__ import annotations

import itertools
import re

import pytest
import torch

from dsv3_lessons import tiny
from dsv3_lessons.model.config import OFFICIAL_NAMES
from dsv3_lessons.course.ch00_tour.crosswalk import CONFIG_CROSSWALK, CROSSWALK, crosswalk_html, crosswalk_markdown
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

# convert.py's leaf table (HF module name -> official module name)
OFFICIAL_LEAF = {"embed_tokens": "embed", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                 "q_proj": "wq", "q_a_proj": "wq_a", "q_a_layernorm": "q_norm", "q_b_proj": "wq_b",
                 "kv_a_proj_with_mqa": "wkv_a", "kv_a_layernorm": "kv_norm", "kv_b_proj": "wkv_b",
                 "o_proj": "wo", "gate": "gate", "gate_proj": "w1", "down_proj": "w2", "up_proj": "w3",
                 "norm": "norm", "lm_head": "head", "scale": "scale"}

CFG = tiny(vocab_size=16)   # 3 layers: 0 dense, 1-2 MoE; MTP depth 1 = checkpoint layer 3
L_DENSE, L_MOE, EXPERT = 0, 1, 5


def official_name(ckpt: str) -> str:
    name = ckpt[len("model."):] if ckpt.startswith("model.") else ckpt
    for a, b in (("self_attn", "attn"), ("mlp", "ffn"), ("weight_scale_inv", "scale"),
                 ("e_score_correction_bias", "bias")):
        name = name.replace(a, b)
    key = name.split(".")[-2]
    return name.replace(key, OFFICIAL_LEAF[key])


def expand(pattern: str, layer: int) -> list[str]:
    """Fill placeholders and expand ``{a,b,c}`` alternatives (kept in order, zipped across the name)."""
    s = (pattern.replace("{l}", str(layer)).replace("{i}", str(EXPERT)).replace("{k-1}", "0")
         .replace("{L+k-1}", str(CFG.num_hidden_layers)))
    groups = re.findall(r"\{([^}]*)\}", s)
    if not groups:
        return [s]
    options = [g.split(",") for g in groups]
    assert len({len(o) for o in options}) == 1, pattern
    out = []
    for choice in zip(*options):
        t = s
        for c in choice:
            t = re.sub(r"\{[^}]*\}", c, t, count=1)
        out.append(t)
    return out


def layer_for(row) -> int:
    return L_DENSE if row.component == "dense FFN" else L_MOE


TENSOR_ROWS = [r for r in CROSSWALK if r.component != "FP8"]


@pytest.fixture(scope="module")
def ours() -> set[str]:
    torch.manual_seed(0)
    return set(DeepSeekV3(CFG).state_dict())


@pytest.fixture(scope="module")
def hf_keys() -> set[str]:
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.DeepseekV3Config(**{k: v for k, v in CFG.to_dict().items()
                                              if k not in ("architectures", "model_type", "rope_scaling")})
    return set(transformers.DeepseekV3ForCausalLM(hf_cfg).state_dict())


@pytest.mark.parametrize("row", TENSOR_ROWS, ids=lambda r: f"{r.component}:{r.paper}")
def test_our_attribute_exists(row, ours):
    for name in expand(row.ours, layer_for(row)):
        if name.endswith(".*"):
            assert any(k.startswith(name[:-1]) for k in ours), name
        else:
            assert name in ours, name


@pytest.mark.parametrize("row", [r for r in TENSOR_ROWS if r.component != "MTP"],
                         ids=lambda r: f"{r.component}:{r.paper}")
def test_checkpoint_name_is_what_transformers_loads(row, hf_keys):
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    sources = [p for conv in get_checkpoint_conversion_mapping("deepseek_v3") for p in conv.source_patterns]
    for ckpt in expand(row.checkpoint, layer_for(row)):
        if ckpt in hf_keys:
            continue
        # routed experts are stored one tensor per expert and fused by transformers on load
        generic = re.sub(r"experts\.\d+\.", "experts.*.", ckpt)
        assert any(generic.endswith(src) for src in sources), ckpt


@pytest.mark.parametrize("row", TENSOR_ROWS, ids=lambda r: f"{r.component}:{r.paper}")
def test_official_name_follows_convert_rule(row):
    ckpts = expand(row.checkpoint, layer_for(row))
    if row.component == "MTP":
        assert row.official == "—"        # convert.py skips model.layers.61
        return
    assert expand(row.official, layer_for(row)) == [official_name(c) for c in ckpts]


def test_main_checkpoint_names_are_ours_with_model_prefix():
    for row in TENSOR_ROWS:
        if row.component in ("MTP",) or row.ours == "lm_head.weight":
            continue
        assert row.checkpoint == "model." + row.ours, row


def test_key_rows_named_in_the_brief():
    by_paper = {r.paper: r for r in CROSSWALK}
    assert by_paper["W^DKV ; W^KR"].ours.endswith("kv_a_proj_with_mqa.weight")
    assert by_paper["b_i"].ours.endswith("e_score_correction_bias")
    assert by_paper["M_k"].ours.endswith("eh_proj.weight")
    assert by_paper["block scale s"].checkpoint.endswith("weight_scale_inv")


def test_config_rows_match_config_and_official_names():
    fields = set(CFG.to_dict())
    for row in CONFIG_CROSSWALK:
        assert row.config.split(".")[0] in fields, row
        assert row.official == OFFICIAL_NAMES.get(row.config, "—")
    assert {r.config: r.official for r in CONFIG_CROSSWALK}["num_experts_per_tok"] == "n_activated_experts"


def test_renderers():
    html = crosswalk_html()
    components = list(dict.fromkeys(r.component for r in CROSSWALK))
    # one heading row per component + one row per tensor + the header row
    assert html.count("<tr>") == len(CROSSWALK) + len(components) + 1
    assert "layers.{l}.self_attn.kv_a_proj_with_mqa.weight" in html.replace("<wbr>", "")
    assert crosswalk_html("config").count("<tr>") == len(CONFIG_CROSSWALK) + 1
    assert crosswalk_html(component="MTP").count("<tr>") == sum(r.component == "MTP" for r in CROSSWALK) + 2
    md = crosswalk_markdown()
    assert len(md.splitlines()) == len(CROSSWALK) + 2
    with pytest.raises(ValueError, match="kind"):
        crosswalk_html("weights")
    with pytest.raises(ValueError, match="component"):
        crosswalk_html(component="nothing")
    assert list(itertools.chain(expand("a.{gate,up}_proj", 0))) == ["a.gate_proj", "a.up_proj"]


def test_html_table_fits_a_notebook_cell_and_writes_math():
    """The browser review measured the old 7-column table 674 px wider than JupyterLab's output area: the table now
    has a fixed layout at 100 % of the cell, columns that add up to 100 %, tensor names that may wrap after every
    dot (never inside a word), and paper symbols as TeX that JupyterLab's MathJax typesets."""
    from dsv3_lessons.course.ch00_tour.crosswalk import PAPER_TEX

    for kind in ("tensors", "config"):
        html = crosswalk_html(kind)
        assert "table-layout:fixed;width:100%" in html
        widths = [int(w) for w in re.findall(r"<col style='width:(\d+)%'>", html)]
        assert sum(widths) == 100 and len(widths) == len(re.findall(r"<th style", html.split("<tbody>")[0]))
        longest = max(len(part) for part in re.findall(r"<code>(.*?)</code>", html)
                      for part in part.split("<wbr>"))
        assert longest <= 40, longest            # no unbreakable name wider than its column
    rows = CROSSWALK + CONFIG_CROSSWALK
    assert all(r.paper in PAPER_TEX for r in rows)                 # every symbol has a TeX form
    for r in CROSSWALK:
        if "^" in r.paper or "_" in r.paper:
            assert PAPER_TEX[r.paper].count("$") >= 2 and PAPER_TEX[r.paper] in crosswalk_html()
    assert "$W^{DKV};\\ W^{KR}$" in crosswalk_html()
    assert "W^DKV" not in crosswalk_html()                          # no ASCII maths left in the table


def test_stored_dtypes_follow_the_release():
    """Released storage (model.safetensors headers; V3 report §3.3 keeps embedding, head, gate and norms in higher
    precision): the linear layers of attention and FFNs/experts in FP8, embedding/head and their MTP copies, MTP's
    eh_proj, norms and the gate weight in BF16, the gate bias and the block scales in FP32."""
    stored = {r.checkpoint: r.stored for r in CROSSWALK}
    fp8 = [n for n in stored if re.search(r"(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj|_proj\.weight)$", n)
           and "eh_proj" not in n]
    assert fp8 and all(stored[n] == "FP8" for n in fp8), {n: stored[n] for n in fp8}
    by_paper = {r.paper: r for r in CROSSWALK}
    for paper in ("Emb", "OutHead", "M_k", "OutHead (shared)", "Emb (shared)", "e_i", "RMSNorm(c^Q)", "RMSNorm(c^KV)"):
        assert by_paper[paper].stored == "BF16", paper
    assert "BF16" in by_paper["M_k"].meaning                       # eh_proj says it in its row too
    assert by_paper["b_i"].stored == "FP32" and by_paper["block scale s"].stored == "FP32"
    assert all(r.stored for r in CROSSWALK)


def test_gate_dtypes_match_the_release():
    """The released checkpoint stores the gate weight e_i in BF16 and only e_score_correction_bias in FP32.

    Oracles: the official inference code builds the bias in float32 and the weight in the model dtype;
    transformers keeps both in FP32 on load (``_keep_in_fp32_modules_strict``) because it scores in FP32, which
    is a choice at load time, not the stored dtype. An earlier crosswalk called the weight fp32.
    """
    from dsv3_lessons.course.ch00_tour.crosswalk import RELEASED_GATE_DTYPES

    by_paper = {r.paper: r for r in CROSSWALK}
    gate, bias = by_paper["e_i"], by_paper["b_i"]
    assert RELEASED_GATE_DTYPES == {gate.checkpoint: "BF16", bias.checkpoint: "F32"}
    assert "BF16" in gate.meaning and not re.search(r"\bfp32\b", gate.meaning.split("(")[1] if "(" in gate.meaning else "")
    assert "released in BF16" in gate.meaning and "FP32" in bias.meaning
    assert not re.search(r"(?i)centroids[^;]*fp32", gate.meaning)
    transformers = pytest.importorskip("transformers")
    keep = transformers.DeepseekV3PreTrainedModel._keep_in_fp32_modules_strict
    assert "e_score_correction_bias" in keep     # transformers upcasts, as the row says
