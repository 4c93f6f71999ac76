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

__all__ = ["___", "check_eh_proj_converter", "check_activated_params", "check_tpf_prediction", "tokens_per_forward", "conditional_acceptance",
           "check_dispatch_bytes", "BUGGY_EH_PROJ", "VARIATION_CONFIGS", "DISPATCH_CASE"]

#: the converter shown in exercise 10.1, exactly as the notebook prints it (the tests run this text)
BUGGY_EH_PROJ = '''def eh_proj_from_paper(W_h, W_e):
    """M_k of V3 eq. 21 from its two halves: W_h [d, d] acts on hnorm(h^{k-1}),
    W_e [d, d] on enorm(Emb)."""
    return torch.cat([W_h, W_e], dim=1)  # [d, 2d] = [out, in]: eq. 21's two halves side by side

# the author's test: the right shape, and each half lands in a block of its own
M = eh_proj_from_paper(torch.eye(4), 2 * torch.eye(4))
assert M.shape == (4, 8) and set(M.unique().tolist()) == {0.0, 1.0, 2.0}'''


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


@checker("10.1", hint="the author's test checks the shape and that each half lands somewhere; what would tell "
                      "you which input each block of columns multiplies?",
         more=["a Linear's weight is [out, in]: its first d columns multiply the first d numbers of its input",
               "find where the chapter's forward (or MTPModule.forward) builds the input of eh_proj, and read which "
               "normalised vector comes first",
               "make the converter put each half on the columns that multiply the vector that half acts on"])
def check_eh_proj_converter(fn):
    """Grade ``fn(W_h, W_e) -> eh_proj.weight [d, 2d]`` by MTP logit parity with the model it came from.

    The ✗ for the converter as shown states the symptom only (MTP logits differ though the shape is right);
    named mistakes (transposed halves, a half used twice, halves added, stacked along rows) get their own message.
    """
    if not callable(fn):
        raise Wrong(f"pass your function itself (eh_proj_from_paper), not {type(fn).__name__}")
    ref = _mtp_model()
    d = ref.cfg.hidden_size
    w = ref.mtp[0].eh_proj.weight.detach()
    w_e, w_h = w[:, :d].clone(), w[:, d:].clone()       # released layout: [enorm(emb) ; hnorm(h)]
    got = call_learner(fn, w_h, w_e)
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a torch.Tensor (the eh_proj weight), got {type(got).__name__}")
    if tuple(got.shape) == (d, d):
        if torch.equal(got, w_h + w_e) or torch.equal(got, w_e + w_h):
            raise Wrong(f"you added the two halves ([{d}, {d}]) instead of concatenating them: eh_proj maps the "
                        f"2d numbers of its two normalised inputs to d, so its weight is [d, 2d] = [{d}, {2 * d}], "
                        f"one half per input")
        raise Wrong(f"a [{d}, {d}] matrix: eh_proj reads two normalised vectors of d numbers each, so its weight is "
                    f"[d, 2d] = [{d}, {2 * d}] ([out, in])")
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
    if torch.equal(got, torch.cat([w_e.t(), w_h.t()], dim=1)):
        raise Wrong("MTP logits differ (max |Δ| > 0.01): each half is transposed ([in, out]); a half is already "
                    "[out = d, in = d], use it as it is (the order of the halves is right)")
    if torch.equal(got, torch.cat([w_h.t(), w_e.t()], dim=1)):
        raise Wrong("MTP logits differ (max |Δ| > 0.01): each half is transposed ([in, out]; a half is already "
                    "[out = d, in = d]), and transposing does not touch the order of the halves, which also gives "
                    "different logits as it stands: check both")
    for half, name in ((w_e, "W_e"), (w_h, "W_h")):
        if torch.equal(got, torch.cat([half, half], dim=1)):
            raise Wrong(f"MTP logits differ (max |Δ| > 0.01): both halves of your matrix are {name}, so the other "
                        f"input is multiplied by the wrong weights; each half must appear once")
    if torch.equal(got, torch.cat([w_h, w_e], dim=1)):
        raise Wrong("MTP logits differ from the original model's (max |Δ| > 0.01) although the shape [d, 2d] is "
                    "right and the main model's logits are untouched: the matrix has the right size but does not "
                    "compute what the original eh_proj computed")
    raise Wrong(f"MTP logits differ (max |Δ| = {diff:.1e}) from the model the halves came from: eh_proj must be the "
                f"two halves side by side, each used once and as given")


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
        try:
            got = as_number(call_learner(fn, cfg), f"activated_params(cfg) for '{name}'")
        except TypeError as exc:
            if cfg.q_lora_rank is None:
                raise Wrong(f"for '{name}' (q_lora_rank=None) your function raised TypeError ({exc}): without a "
                            f"query latent there is no q_a_proj, q_a_layernorm or q_b_proj; the query is one "
                            f"matrix straight from d to the heads' query channels") from None
            raise
        if got == c.activated:
            continue
        d, n_moe, n_layers = cfg.hidden_size, cfg.num_moe_layers, cfg.num_hidden_layers
        gate = n_moe * (cfg.n_routed_experts * d + cfg.n_routed_experts)
        shared = n_moe * cfg.n_shared_experts * c.expert
        head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * d
        latent_norms = n_layers * ((cfg.q_lora_rank or 0) + cfg.kv_lora_rank)
        known = [(c.total, "you counted every routed expert: a token runs only its K_r routed experts (plus the "
                           "shared ones); that number is the total"),
                 (c.activated - gate, "the router is missing: its N_r centroids (and biases) score every token, so "
                                      "all N_r·d + N_r gate parameters of each MoE layer are read"),
                 (c.activated - n_moe * cfg.n_routed_experts,
                  "the router's N_r bias entries (e_score_correction_bias) are missing: a buffer the optimizer never "
                  "updates (the balancing rule does), but every token's expert choice reads it, and this course "
                  "counts it, as count_parameters does"),
                 (c.activated - gate + n_moe * cfg.num_experts_per_tok * d,
                  "you counted only the K_r chosen centroids of the router: the token is scored against all N_r"),
                 (c.activated - shared, "the shared expert(s) are missing: every token runs them"),
                 (c.activated + c.mtp, "count_parameters leaves the MTP module out (it is dropped, or used as a "
                                       "draft, at inference)"),
                 (c.activated - c.embedding, "the input embedding is missing (this course counts it, as the V3 "
                                             "report's 37.55 B does)"),
                 (c.activated - n_layers * 2 * d - d - latent_norms,
                  "the RMSNorm weights are missing: every block's two norms, the latents' norms and the final norm "
                  "each hold one weight per channel, and the token passes all of them"),
                 (c.activated - n_layers * 2 * d - d,
                  "the blocks' and the final RMSNorm weights are missing (one weight per channel each)"),
                 (c.activated - latent_norms,
                  "the latent norms are missing: q_a_layernorm (d_c' weights) and kv_a_layernorm (d_c weights) in "
                  "every layer")]
        if cfg.n_shared_experts > 1:
            known.append((c.activated - n_moe * (cfg.n_shared_experts - 1) * c.expert,
                          f"you counted one shared expert per MoE layer; this config has n_shared_experts = "
                          f"{cfg.n_shared_experts}, and every token runs all of them"))
        if cfg.tie_word_embeddings:
            known.append((c.activated + c.embedding, "the tied head IS the embedding matrix: count it once"))
        else:
            known.append((c.activated - head, "the output head is missing"))
        msg = next((m for v, m in known if got == v), "")
        raise Wrong(f"for '{name}' ({', '.join(f'{k}={v}' for k, v in over.items())}) you get {got:,.0f}, expected "
                    f"another count" + (f": {msg}" if msg else "; compare block by block with the terms in "
                                        "count_parameters' docstring"))
    return "matches count_parameters(cfg).activated on four configurations the chapter did not show."


def conditional_acceptance(stats) -> list[float] | None:
    """P(draft j accepted | drafts 1 … j−1 accepted), j = 1 … k, pooled over a list of SpeculativeStats."""
    if not isinstance(stats, (list, tuple)) or not stats or not hasattr(stats[0], "accepted_per_step"):
        return None
    k = stats[0].k
    reached, accepted = [0] * k, [0] * k
    for s in stats:
        for m, offered in zip(s.accepted_per_step, s.drafted_per_step):
            for j in range(offered):
                reached[j] += j <= m
                accepted[j] += j < m
    return [a / r if r else float("nan") for a, r in zip(accepted, reached)]


def tokens_per_forward(stats) -> float:
    """Tokens per main-model forward (prefill included) pooled over a list of SpeculativeStats."""
    return sum(s.new_tokens for s in stats) / sum(s.main_forwards for s in stats)


@checker("10.3", hint="a verify step emits the accepted drafts plus one token of the main model's own; how "
                      "likely is the 2nd draft to be accepted once the 1st was, and the 3rd?",
         more=["section 5 printed how often one draft was accepted; a verify step with k = 3 emits between 1 and "
               "4 tokens, and the prefill forward emits 1",
               "draft j counts only if drafts 1 … j−1 were all accepted: the expected count is a sum of products",
               "whether later drafts are accepted less often is not a rule: it depends on how predictable the text "
               "is; look again at the sample section 5 printed before you assume either way"])
def check_tpf_prediction(prediction, measured):
    """Compare a predicted tokens-per-forward (k = 3) with the measured one.

    ``measured``: a number, an object with ``tokens_per_forward``, or the list of
    :class:`~dsv3_lessons.tools.speculative.SpeculativeStats` of the experiment (then the diagnosis quotes the
    measured acceptance of each draft position given the earlier ones).
    """
    x = as_number(prediction, "your prediction (tokens per main-model forward)")
    cond = conditional_acceptance(measured)
    if cond is not None:
        m = tokens_per_forward(measured)
    else:
        m = as_number(getattr(measured, "tokens_per_forward", measured), "the measured tokens per forward")
    if not 1.0 <= x <= 4.0:
        raise Wrong(f"{x:g} is impossible: every verify step emits at least 1 token (the main model's own) and at "
                    f"most k + 1 = 4, and the prefill makes the average a little lower still")
    if abs(x - m) <= 0.25:
        return f"your prediction {x:.2f} is within 0.25 of the measured {m:.2f} tokens per forward."
    rates = ("" if cond is None else " Measured here: draft 1 accepted " + ", ".join(
        f"{'draft ' + str(j + 1) + ' given the earlier ones ' if j else ''}{a:.0%}" for j, a in enumerate(cond))
        + ".")
    if x > m:
        if x >= 3.9:
            why = ("that is every draft accepted at every step (k + 1 per forward), which needs an acceptance of "
                   "100 %; even a high acceptance compounds: draft 3 counts only when drafts 1 and 2 both were")
        else:
            why = ("draft j counts only when drafts 1 … j−1 were all accepted, so the rates multiply along the "
                   "drafts: draft 3 needs drafts 1, 2 and 3 all accepted, and a verify step's extra tokens stay under "
                   "3 × the per-draft acceptance; the prefill forward emits just one token")
        raise Wrong(f"you predicted {x:.2f}, measured {m:.2f}: too optimistic. {why[0].upper() + why[1:]}.{rates}")
    if cond is None:
        why = ("a rejected draft never costs a token (the main model's own token is emitted anyway), so every "
               "accepted draft is a token gained; count how many drafts a verify step gets through on average")
    elif min(cond[1:]) < cond[0] - 0.1:
        why = ("the later drafts are accepted less often than the first here, but less so than you assumed; count "
               "the tokens a verify step emits: the main model's own plus each draft whose predecessors were all "
               "accepted")
    else:
        why = ("if you assumed the later drafts are accepted much less often than the first (the module reads its "
               "own drafts), the measurement says otherwise for this model: once the earlier drafts were right, the "
               "later ones are accepted as often as the first or more, so the tokens a verify step emits compound")
    raise Wrong(f"you predicted {x:.2f}, measured {m:.2f}: too pessimistic. {why[0].upper() + why[1:]}.{rates}")


#: exercise 10.4: the 2-process run's sizes
DISPATCH_CASE = dict(hidden_size=64, num_experts_per_tok=2, element_bytes=4)


@checker("10.4", hint="what does the receiving rank need to compute its experts' weighted outputs for this "
                      "token, and how many times must it be sent there?",
         more=["section 7 gives the layout of one dispatched row: count its elements for d = 64 and K_r = 2",
               "how many rows does this token need, when the one rank that holds its experts runs both of them?",
               "every element of the row is float32"])
def check_dispatch_bytes(answer):
    """One token, both experts on the other rank: bytes its forward dispatch sends (d + 2·K_r float32, once)."""
    d, k, b = DISPATCH_CASE["hidden_size"], DISPATCH_CASE["num_experts_per_tok"], DISPATCH_CASE["element_bytes"]
    x = as_number(answer, "your answer (bytes)")
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
             0: "the experts sit on the other rank, so the row must cross",
             2 * d * b: "that sends the hidden state once per chosen expert, and nothing else: a token's row goes "
                        "once to each rank that holds any of its experts (both experts there read the same row), "
                        "and the row also carries what that rank needs to pick and weigh its experts",
             (d + k) * b + k * 8: "the expert ids travel in the same float32 row as the hidden state and the "
                                  "weights (one tensor, one exchange), not as separate int64 numbers"}
    if x in wrong:
        raise Wrong(wrong[x])
    raise Wrong(f"{x:g} bytes is not it: count the elements of one dispatched row, then the rows, then the bytes")
