"""A fuzz over model configurations (issue 18, deliverable 3): accepted and runs, or refused by name.

Every example starts from a valid, very small configuration and changes one to four fields to values drawn
from a mix of plausible ones and bad ones: zero, negative and huge sizes, ``topk_group > n_group``, experts
not divisible by the groups, too many experts per token, NaN/inf/subnormal/huge floats, wrong types, and odd
``rope_scaling`` dicts. The property, for every example:

* either :class:`DeepseekV3Config` accepts it, and :class:`DeepSeekV3` builds and one training-mode forward
  with targets gives logits ``[batch, T, vocab_size]`` and a loss that are all finite;
* or it is refused with a ``ValueError`` (``ConfigError`` is one) whose message names a field that was
  changed (``rope_scaling`` for a change inside that dict).

Nothing else may escape: no ``TypeError``, ``ZeroDivisionError``, torch ``RuntimeError`` or NaN.
"""
from __future__ import annotations

import math
import re

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_lessons.model.config import ConfigError, DeepseekV3Config
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

#: A valid configuration small enough that building it and one forward take a few milliseconds.
BASE = dict(
    vocab_size=12, hidden_size=8, intermediate_size=16, moe_intermediate_size=8, num_hidden_layers=2,
    first_k_dense_replace=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=8, kv_lora_rank=8,
    qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=4, n_routed_experts=4, n_shared_experts=1,
    num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=2.5, scoring_func="sigmoid",
    topk_method="noaux_tc", norm_topk_prob=True, moe_layer_freq=1, hidden_act="silu", rms_norm_eps=1e-6,
    rope_theta=10000.0, max_position_embeddings=32, num_nextn_predict_layers=1, tie_word_embeddings=False,
    initializer_range=0.02, attention_bias=False,
    rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32,
                  "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
)

# ---------------------------------------------------------------------------------------- value strategies
# Each field has two strategies: PLAUSIBLE values (each one valid on its own; combinations can still clash:
# topk_group > n_group, experts not divisible by the groups, an odd rope dim ...) and WILD ones (zero,
# negative, huge, NaN/inf/subnormal floats, wrong types). An example draws from one or the other, so about
# half of the examples reach the forward pass.
WRONG_TYPES = st.sampled_from([None, True, False, "4", 2.5, float("nan"), [4], {"a": 1}])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)       # includes subnormals, ±0, huge values


def sizes(hi: int):
    """A size field: 1 … hi, or zero, negative or of a wrong type (never a huge valid size: memory)."""
    return st.integers(1, hi), st.one_of(st.integers(-3, 0), WRONG_TYPES)


def counts(hi: int, huge: bool = False):
    """A count that may be 0; ``huge`` adds values far above anything a tiny model can satisfy."""
    wild = [st.integers(-3, -1), WRONG_TYPES] + ([st.integers(10**3, 10**12)] if huge else [])
    return st.integers(0, hi), st.one_of(*wild)


def floats(lo: float, hi: float, *bad: float):
    return st.floats(lo, hi), st.one_of(st.sampled_from(bad), ANY_FLOAT, WRONG_TYPES)


def choices(good: list, bad: list):
    return st.sampled_from(good), st.sampled_from(bad)


FLAGS = choices([True, False], [0, 1, "yes", "false", None])
YARN = dict(BASE["rope_scaling"])
YARN_VALUES = {                                                  # key: (plausible, wild)
    "type": choices(["yarn"], ["linear", "dynamic", "YaRN", None, 1]),
    "factor": floats(1.0, 64.0, 0.5, 0.0, -4.0),
    "original_max_position_embeddings": (st.integers(1, 2**53),
                                         st.one_of(st.integers(-2, 0), st.integers(2**53 + 1, 10**400), WRONG_TYPES)),
    "beta_fast": floats(2.0, 64.0, 1.0, 0.0, -1.0),
    "beta_slow": floats(1e-300, 1.0, 0.0, -1.0, 64.0),
    "mscale": floats(0.0, 2.0, -1.0, 1e3),
    "mscale_all_dim": floats(0.0, 2.0, -1.0, 1e3),
}


@st.composite
def rope_scalings(draw, wild: bool):
    """None, a YaRN dict with changed, missing or unknown keys, or (wild) not a dict at all."""
    kind = draw(st.sampled_from(["dict", "dict", "dict", "none"] + (["not a dict"] if wild else [])))
    if kind == "none":
        return None
    if kind == "not a dict":
        return draw(st.sampled_from(["yarn", ["yarn", 4.0], 4.0, ("type", "yarn")]))
    rs = dict(YARN)
    if draw(st.booleans()):                                      # transformers' newer spelling of the key
        rs["rope_type"] = rs.pop("type")
    for key in draw(st.sets(st.sampled_from(sorted(YARN_VALUES)), min_size=1, max_size=3)):
        rs[key] = draw(YARN_VALUES[key][wild])
    optional = ["beta_fast", "beta_slow", "mscale", "mscale_all_dim"]
    for key in draw(st.sets(st.sampled_from(optional + (["factor", "original_max_position_embeddings"]
                                                          if wild else [])), max_size=1)):
        rs.pop(key, None)                                        # a missing key
    if draw(st.booleans()):
        rs["unknown_key"] = draw(WRONG_TYPES)                    # keys the model does not read are ignored
    return rs


FIELDS = {                                                       # name: (plausible, wild)
    "vocab_size": sizes(20),
    "hidden_size": sizes(12),
    "intermediate_size": sizes(12),
    "moe_intermediate_size": sizes(12),
    "num_hidden_layers": sizes(3),
    "first_k_dense_replace": counts(3, huge=True),
    "num_attention_heads": sizes(3),
    "num_key_value_heads": (st.integers(1, 3), st.one_of(st.integers(-3, 0), WRONG_TYPES)),
    "q_lora_rank": (st.one_of(st.integers(1, 8), st.none()), st.one_of(st.integers(-3, 0), WRONG_TYPES)),
    "kv_lora_rank": sizes(8),
    "qk_nope_head_dim": sizes(6),
    "qk_rope_head_dim": sizes(6),
    "v_head_dim": sizes(6),
    "n_routed_experts": counts(8),
    "n_shared_experts": counts(2),
    "num_experts_per_tok": counts(8, huge=True),
    "n_group": counts(8, huge=True),
    "topk_group": counts(8, huge=True),
    "routed_scaling_factor": floats(0.1, 16.0, 0.0, -2.5, 1e30),
    "scoring_func": choices(["sigmoid"], ["softmax", "Sigmoid", None, 1]),
    "topk_method": choices(["noaux_tc"], ["greedy", "group_limited_greedy", None, 1]),
    "norm_topk_prob": FLAGS,
    "moe_layer_freq": (st.integers(1, 3), st.one_of(st.integers(-2, 0), WRONG_TYPES)),
    "hidden_act": choices(["silu"], ["gelu", "swiglu", None]),
    "rms_norm_eps": floats(1e-12, 0.1, 0.0, -1e-6, 1e-45),
    "rope_theta": floats(1.5, 1e6, 1.0, 0.5, -1e4),
    "max_position_embeddings": (st.one_of(st.integers(1, 64), st.integers(10**6, 10**12)),
                                st.one_of(st.integers(-3, 0), WRONG_TYPES)),
    "num_nextn_predict_layers": counts(3),
    "tie_word_embeddings": FLAGS,
    "initializer_range": floats(0.0, 1.0, -0.02, 1e10),
    "attention_bias": FLAGS,
}


@st.composite
def configs(draw):
    """(kwargs, changed field names): the base with one to four fields redrawn.

    One example in three changes ``rope_scaling`` (the dict with the most corners) and at most one other
    field, drawn plausible so that the dict's own checks are reached (``rope_scaling`` is checked last).
    """
    wild = draw(st.booleans())
    changed = draw(st.sets(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4))
    kwargs = {**BASE, "rope_scaling": dict(YARN)}
    if draw(st.integers(0, 2)) == 0:
        changed = set(list(changed)[:draw(st.integers(0, 1))])
        kwargs["rope_scaling"] = draw(rope_scalings(wild))
        kwargs.update({name: draw(FIELDS[name][False]) for name in changed})
        return kwargs, changed | {"rope_scaling"}
    kwargs.update({name: draw(FIELDS[name][wild]) for name in changed})
    return kwargs, changed


def names_a_field(message: str, fields) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(f)}(?![A-Za-z0-9_])", message) for f in fields)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@settings(max_examples=500, deadline=None)
@given(configs())
def test_every_configuration_runs_or_is_refused_by_name(example):
    kwargs, changed = example
    try:
        cfg = DeepseekV3Config(**kwargs).validate()
    except ValueError as exc:
        assert names_a_field(str(exc), changed), f"message names none of {sorted(changed)}: {exc}"
        return
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).train()                               # training mode: balance loss and MTP run
    T = min(5, cfg.max_position_embeddings)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (2, T), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (2, T), generator=g)
    with torch.no_grad():
        out = model(ids, targets)
    assert out.logits.shape == (2, T, cfg.vocab_size)
    assert torch.isfinite(out.logits).all(), f"non-finite logits for {sorted(changed)}"
    assert math.isfinite(out.loss.item()), f"non-finite loss for {sorted(changed)}"
    assert len(out.mtp_logits) == min(cfg.num_nextn_predict_layers, T - 1)


def test_the_bounds_of_the_accepted_ranges_still_run_finite():
    """The extreme values validation still accepts (each bound chosen where the fuzz found NaN beyond it)."""
    extremes = [
        {"initializer_range": 1.0}, {"initializer_range": 0.0, "rms_norm_eps": 2.0 ** -126},
        {"routed_scaling_factor": 1000.0}, {"rope_theta": 1e300}, {"max_position_embeddings": 10**12},
        {"rope_scaling": {**YARN, "factor": 1e300, "mscale": 10.0, "mscale_all_dim": 10.0}},
        {"rope_scaling": {**YARN, "beta_slow": 1e-300, "original_max_position_embeddings": 2**53}},
    ]
    for changes in extremes:
        torch.manual_seed(0)
        model = DeepSeekV3(DeepseekV3Config(**{**BASE, **changes})).train()
        ids = torch.randint(0, BASE["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(ids, ids)
        assert torch.isfinite(out.logits).all() and math.isfinite(out.loss.item()), changes
