"""Exercise checkers of chapter 10 (the whole tiny DeepSeek-V3).

Pattern: :mod:`dsv3_lessons.course.common.checking` -- never raise; "not attempted yet" + a nudge for the
placeholder ``___``, a ✗ diagnosis for a wrong answer, ✓ for a right one. Right answers are computed here from the
library (a model's own MTP logits, :func:`~dsv3_lessons.model.config.count_parameters`, the expert-parallel row
layout), never typed in.

* 10.1 (bug hunt) ``eh_proj_from_paper(W_h, W_e)``: a converter that builds the released ``eh_proj`` from the
  paper's two halves puts them in the paper's printed order; caught by MTP logit parity;
* 10.2 (variation) ``activated_params(cfg)`` for configurations the chapter did not show;
* 10.3 (prediction) tokens per main-model forward of speculative decoding with k = 3 drafts;
* 10.4 (explain with a number) the bytes one token's dispatch sends in the 2-process run.
"""
from __future__ import annotations

import torch

from dsv3_lessons.model import DeepSeekV3, count_parameters, tiny
from dsv3_lessons.course.common.checking import ___, Wrong, as_number, call_learner, checker  # noqa: F401

__all__ = ["___", "check_eh_proj_converter", "check_activated_params", "check_tpf_prediction",
           "check_dispatch_bytes", "BUGGY_EH_PROJ", "VARIATION_CONFIGS", "DISPATCH_CASE"]

#: the converter shown in exercise 10.1, exactly as the notebook prints it (the tests run this text)
BUGGY_EH_PROJ = '''def eh_proj_from_paper(W_h, W_e):
    """M_k of V3 eq. 21 from its two halves: W_h [d, d] acts on hnorm(h^{k-1}), W_e [d, d] on enorm(Emb)."""
    return torch.cat([W_h, W_e], dim=1)           # [d, 2d]: the paper writes [h ; emb]'''


def _mtp_model(seed: int = 10) -> DeepSeekV3:
    torch.manual_seed(seed)
    model = DeepSeekV3(tiny(vocab_size=40)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():                              # O(1) activations, so a wrong order shows in the logits
        w = model.mtp[0].eh_proj.weight
        w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
        for norm in (model.mtp[0].enorm, model.mtp[0].hnorm):
            norm.weight.copy_(1.0 + 0.5 * torch.randn(norm.weight.shape, generator=g))
    return model


@torch.no_grad()
def _mtp_logits(model: DeepSeekV3, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, ids, compute_mtp=True).mtp_logits[0]


@checker("10.1", hint="read the order in which MTPModule.forward concatenates its two normalised inputs, and "
                      "compare it with the order this converter writes the halves",
         more=["the paper's eq. 21 prints [h ; emb]; the released weights were trained with the other order",
               "a Linear's weight is [out, in]: the first d columns multiply the first d inputs of the concat",
               "fix the one line so that the columns for enorm(Emb) come first"])
def check_eh_proj_converter(fn):
    """Grade ``fn(W_h, W_e) -> eh_proj.weight [d, 2d]`` by MTP logit parity with the model it came from."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (eh_proj_from_paper), not {type(fn).__name__}")
    ref = _mtp_model()
    d = ref.cfg.hidden_size
    w = ref.mtp[0].eh_proj.weight.detach()
    w_e, w_h = w[:, :d].clone(), w[:, d:].clone()       # released layout: [enorm(emb) ; hnorm(h)]
    got = call_learner(fn, w_h, w_e)
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a torch.Tensor (the eh_proj weight), got {type(got).__name__}")
    if tuple(got.shape) != (d, 2 * d):
        hint = (" -- you concatenated along dim 0 (rows are outputs); the two halves sit side by side along "
                "the input dim" if tuple(got.shape) == (2 * d, d) else "")
        raise Wrong(f"eh_proj.weight must be [d, 2d] = [{d}, {2 * d}] ([out, in]), got {tuple(got.shape)}{hint}")
    ids = torch.randint(0, ref.cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    want = _mtp_logits(ref, ids)
    test = _mtp_model()
    with torch.no_grad():
        test.mtp[0].eh_proj.weight.copy_(got)
    diff = (_mtp_logits(test, ids) - want).abs().max().item()
    if diff <= 1e-5:
        return (f"MTP logits equal to the original model's (max |Δ| < 1e-5): the released eh_proj reads "
                f"[enorm(Emb(t_(i+k))) ; hnorm(h^(k-1)_i)], embedding first.")
    if torch.equal(got, torch.cat([w_h, w_e], dim=1)):
        raise Wrong(f"MTP logits differ (max |Δ| > 0.01): the halves are in the paper's printed order [h ; emb], "
                    f"but the released eh_proj (and MTPModule.forward) reads [enorm(emb) ; hnorm(h)] -- the "
                    f"hidden-state columns now multiply the embedding")
    if torch.equal(got, torch.cat([w_e.t(), w_h.t()], dim=1)) or torch.equal(got, torch.cat([w_h.t(), w_e.t()], 1)):
        raise Wrong(f"MTP logits differ (max |Δ| > 0.01): the halves are transposed ([in, out]); each half is "
                    f"already [out = d, in = d], use it as it is")
    raise Wrong(f"MTP logits differ (max |Δ| = {diff:.1e}) from the model the halves came from: eh_proj must be the "
                f"two halves side by side, one of them first")


#: configurations of exercise 10.2 (none of them is shown in the chapter)
VARIATION_CONFIGS = {
    "finer experts, 2 shared": dict(n_routed_experts=16, n_shared_experts=2, num_experts_per_tok=4, n_group=4,
                                    topk_group=2, moe_intermediate_size=32),
    "no dense layer": dict(first_k_dense_replace=0, num_hidden_layers=4),
    "no query latent": dict(q_lora_rank=None),
    "tied embedding": dict(tie_word_embeddings=True),
}


@checker("10.2", hint="walk through the blocks one token passes: which of each MoE layer's parameters does it "
                      "touch, and which does it never read?",
         more=["the router scores the token against every expert's centroid, even the ones it does not pick",
               "a token runs the shared expert(s) and K_r routed experts, never the other N_r − K_r",
               "the embedding and the head count here (a tied head is one matrix); the MTP module does not"])
def check_activated_params(fn):
    """Grade ``fn(cfg) -> int`` against ``count_parameters(cfg).activated`` on :data:`VARIATION_CONFIGS`."""
    if not callable(fn):
        raise Wrong(f"pass your function itself (activated_params), not {type(fn).__name__}")
    for name, over in VARIATION_CONFIGS.items():
        cfg = tiny(**over)
        c = count_parameters(cfg)
        got = as_number(call_learner(fn, cfg), f"activated_params(cfg) for '{name}'")
        if got == c.activated:
            continue
        n_moe = cfg.num_moe_layers
        gate = n_moe * (cfg.n_routed_experts * cfg.hidden_size + cfg.n_routed_experts)
        shared = n_moe * cfg.n_shared_experts * c.expert
        head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
        known = [(c.total, "you counted every routed expert: a token runs only its K_r routed experts (plus the "
                           "shared ones); that number is the total"),
                 (c.activated - gate, "the router is missing: its N_r centroids (and biases) score every token, so "
                                      "all N_r·d + N_r gate parameters of each MoE layer are read"),
                 (c.activated - gate + n_moe * cfg.num_experts_per_tok * cfg.hidden_size,
                  "you counted only the K_r chosen centroids of the router: the token is scored against all N_r"),
                 (c.activated - shared, "the shared expert(s) are missing: every token runs them"),
                 (c.activated + c.mtp, "count_parameters leaves the MTP module out (it is dropped, or used as a "
                                       "draft, at inference)"),
                 (c.activated - c.embedding, "the input embedding is missing (this course counts it, as the V3 "
                                             "report's 37.55 B does)")]
        if cfg.tie_word_embeddings:
            known.append((c.activated + c.embedding, "the tied head IS the embedding matrix: count it once"))
        else:
            known.append((c.activated - head, "the output head is missing"))
        msg = next((m for v, m in known if got == v), "")
        raise Wrong(f"for '{name}' ({', '.join(f'{k}={v}' for k, v in over.items())}) you get {got:,.0f}, expected "
                    f"another count" + (f": {msg}" if msg else "; compare block by block with the terms in "
                                        "count_parameters' docstring"))
    return "matches count_parameters(cfg).activated on four configurations the chapter did not show."


@checker("10.3", hint="a verify step emits the accepted drafts plus one token of the main model's own; how "
                      "likely is the 2nd draft to be accepted once the 1st was, and the 3rd?",
         more=["write your prediction BEFORE running the experiment cell; any number in [1, 4] is a valid guess",
               "draft j counts only if drafts 1 … j−1 were all accepted",
               "the one MTP module was trained for depth 1; drafts 2 and 3 feed it its own outputs"])
def check_tpf_prediction(prediction, measured):
    """Compare a predicted tokens-per-forward (k = 3) with the measured one (``measured``: a number or stats)."""
    x = as_number(prediction, "your prediction (tokens per main-model forward)")
    m = as_number(getattr(measured, "tokens_per_forward", measured), "the measured tokens per forward")
    if not 1.0 <= x <= 4.0:
        raise Wrong(f"{x:g} is impossible: every verify step emits at least 1 token (the main model's own) and at "
                    f"most k + 1 = 4, and the prefill makes the average a little lower still")
    if abs(x - m) <= 0.25:
        return f"your prediction {x:.2f} is within 0.25 of the measured {m:.2f} tokens per forward."
    if x > m:
        raise Wrong(f"you predicted {x:.2f}, measured {m:.2f}: too optimistic. Acceptance falls with the draft "
                    f"position -- draft 2 counts only after draft 1 was accepted, and the depth-1 module drafts "
                    f"position 2 and 3 from its own outputs, which it never saw in training")
    raise Wrong(f"you predicted {x:.2f}, measured {m:.2f}: too pessimistic. Even a modest first-draft acceptance "
                f"adds more than a rejected later draft costs: rejections never cost a token, only the draft work")


#: exercise 10.4: the 2-process run's sizes
DISPATCH_CASE = dict(hidden_size=64, num_experts_per_tok=2, element_bytes=4)


@checker("10.4", hint="what does the receiving rank need to compute its experts' weighted outputs for this "
                      "token, and how many times must it be sent there?",
         more=["the row carries the hidden state and what the receiving rank needs to pick and weigh its experts",
               "one row per (token, destination rank), not per (token, expert)",
               "the course counts float32 elements"])
def check_dispatch_bytes(answer):
    """One token, both experts on the other rank: bytes its forward dispatch sends (d + 2·K_r float32, once)."""
    d, k, b = DISPATCH_CASE["hidden_size"], DISPATCH_CASE["num_experts_per_tok"], DISPATCH_CASE["element_bytes"]
    x = as_number(answer, "the bytes (a number)")
    right = (d + 2 * k) * b
    if x == right:
        return (f"{right} bytes: one row of d + 2·K_r = {d} + {2 * k} float32 (hidden state, the K_r combine "
                f"weights and the K_r local expert ids), sent once to the rank that holds both experts.")
    wrong = {2 * right: "a token travels once per destination rank, not once per expert: the receiving rank "
                        "runs both of its experts on the same row (node-limited routing counts nodes, not experts)",
             d * b: "the row also carries the token's K_r combine weights and the K_r expert ids",
             d + 2 * k: "that is the number of elements; each float32 element is 4 bytes",
             (d + 2 * k) * 2: "the course counts float32 elements (4 bytes); BF16 is what V3 combines in",
             (d + k) * b: "K_r weights AND K_r expert ids: two numbers per chosen expert",
             0: "the experts sit on the other rank, so the row must cross"}
    if x in wrong:
        raise Wrong(wrong[x])
    raise Wrong(f"{x:g} bytes is not it: count the elements of one dispatched row, then the rows, then the bytes")
