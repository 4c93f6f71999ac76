"""Chapter 10 checkers: placeholder -> not attempted + nudge; typical wrong answers -> their diagnosis; right -> ✓.

The bug hunt's unfixed code is taken from the notebook cell itself (and must equal the text the package exports)."""
from pathlib import Path

import nbformat
import torch

from dsv3_lessons.course.common.checking import NOT_ATTEMPTED, RIGHT, WRONG
from dsv3_lessons.course.ch10_capstone import exercises as ex
from dsv3_lessons.model import count_parameters

ROOT = Path(__file__).resolve().parents[1]


def _cell(nb_path: Path, needle: str) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    found = [c.source for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(found) == 1, f"expected one cell containing {needle!r} in {nb_path.name}"
    return found[0]


def test_101_eh_proj_converter(capsys):
    assert ex.check_eh_proj_converter(ex.___).status == NOT_ATTEMPTED
    assert ex.check_eh_proj_converter(lambda w_h, w_e: ex.___).status == NOT_ATTEMPTED
    # the unfixed converter, as stored in the chapter notebook: its author's test passes, the checker says ✗ with a
    # symptom only (never the cause: no "order", no "emb"), and that ✗ is what the stored notebook shows
    cell = _cell(ROOT / "notebooks" / "10_capstone.ipynb", "def eh_proj_from_paper")
    assert ex.BUGGY_EH_PROJ in cell
    ns = {"torch": torch}
    exec(ex.BUGGY_EH_PROJ, ns)                                  # runs the author's test too
    buggy = ex.check_eh_proj_converter(ns["eh_proj_from_paper"])
    assert buggy.status == WRONG and "MTP logits differ" in buggy.message and "right" in buggy.message
    for giveaway in ("order", "emb", "first", "paper", "[h", "swap"):
        assert giveaway not in buggy.message.lower(), giveaway
    stored = "".join(o.get("text", "") for o in _cell_outputs(ROOT / "notebooks" / "10_capstone.ipynb",
                                                              "def eh_proj_from_paper"))
    assert stored.startswith("✗ Exercise 10.1: MTP logits differ") and "order" not in stored
    rows = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, w_h], dim=0))
    assert rows.status == WRONG and "dim 0" in rows.message
    transposed = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e.t(), w_h.t()], dim=1))
    assert transposed.status == WRONG and "transposed" in transposed.message and "order of the halves is right" \
        in transposed.message
    # transposed AND in the converter's order: both named
    both = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_h.t(), w_e.t()], dim=1))
    assert both.status == WRONG and "transposed" in both.message and "order of the halves" in both.message \
        and "check both" in both.message
    added = ex.check_eh_proj_converter(lambda w_h, w_e: w_e + w_h)
    assert added.status == WRONG and "added the two halves" in added.message and "concatenating" in added.message
    square = ex.check_eh_proj_converter(lambda w_h, w_e: w_e @ w_h)
    assert square.status == WRONG and "[d, 2d]" in square.message and "added" not in square.message
    for same, name in ((lambda w_h, w_e: torch.cat([w_e, w_e], dim=1), "W_e"),
                       (lambda w_h, w_e: torch.cat([w_h, w_h], dim=1), "W_h")):
        r = ex.check_eh_proj_converter(same)
        assert r.status == WRONG and f"both halves of your matrix are {name}" in r.message
    other = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, 2 * w_h], dim=1))
    assert other.status == WRONG and "each used once and as given" in other.message
    not_tensor = ex.check_eh_proj_converter(lambda w_h, w_e: [w_e, w_h])
    assert not_tensor.status == WRONG and "torch.Tensor" in not_tensor.message
    right = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, w_h], dim=1))
    assert right.status == RIGHT and "embedding first" in right.message
    # the solutions notebook's fixed cell is right
    sol = _cell(ROOT / "notebooks" / "solutions" / "10_capstone_solutions.ipynb", "def eh_proj_from_paper")
    ns = {"torch": torch}
    body = sol[sol.index("def eh_proj_from_paper"):sol.index("check_eh_proj_converter(eh_proj_from_paper)")]
    exec(body, ns)
    assert ex.check_eh_proj_converter(ns["eh_proj_from_paper"]).status == RIGHT
    assert "✓ Exercise 10.1" in capsys.readouterr().out


def _cell_outputs(nb_path: Path, needle: str) -> list:
    nb = nbformat.read(nb_path, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    return cell.outputs


def _right_activated(cfg):
    return count_parameters(cfg).activated


def test_102_activated_params():
    assert ex.check_activated_params(ex.___).status == NOT_ATTEMPTED
    assert ex.check_activated_params(lambda cfg: ex.___).status == NOT_ATTEMPTED
    total = ex.check_activated_params(lambda cfg: count_parameters(cfg).total)
    assert total.status == WRONG and "every routed expert" in total.message

    def no_gate(cfg):
        return count_parameters(cfg).activated - cfg.num_moe_layers * (cfg.n_routed_experts * cfg.hidden_size
                                                                         + cfg.n_routed_experts)
    assert "router is missing" in ex.check_activated_params(no_gate).message
    with_mtp = ex.check_activated_params(lambda cfg: count_parameters(cfg).activated + count_parameters(cfg).mtp)
    assert with_mtp.status == WRONG and "MTP" in with_mtp.message

    def no_shared(cfg):
        c = count_parameters(cfg)
        return c.activated - cfg.num_moe_layers * cfg.n_shared_experts * c.expert
    assert "shared expert" in ex.check_activated_params(no_shared).message

    def no_embedding(cfg):
        return count_parameters(cfg).activated - count_parameters(cfg).embedding
    assert "input embedding" in ex.check_activated_params(no_embedding).message

    def tied_twice(cfg):  # right everywhere except the tied config, where the matrix is counted twice
        c = count_parameters(cfg)
        return c.activated + (c.embedding if cfg.tie_word_embeddings else 0)
    r = ex.check_activated_params(tied_twice)
    assert r.status == WRONG and "tied" in r.message and "count it once" in r.message
    def no_bias(cfg):  # the router's bias buffer left out
        return count_parameters(cfg).activated - cfg.num_moe_layers * cfg.n_routed_experts
    r = ex.check_activated_params(no_bias)
    assert r.status == WRONG and "e_score_correction_bias" in r.message and "buffer" in r.message

    def one_shared(cfg):  # one shared expert assumed: wrong on the config with two
        c = count_parameters(cfg)
        return c.activated - cfg.num_moe_layers * (cfg.n_shared_experts - 1) * c.expert
    r = ex.check_activated_params(one_shared)
    assert r.status == WRONG and "one shared expert" in r.message and "n_shared_experts = 2" in r.message

    def no_norms(cfg):
        d, n = cfg.hidden_size, cfg.num_hidden_layers
        return count_parameters(cfg).activated - n * (2 * d + (cfg.q_lora_rank or 0) + cfg.kv_lora_rank) - d
    r = ex.check_activated_params(no_norms)
    assert r.status == WRONG and "RMSNorm weights are missing" in r.message

    def no_block_norms(cfg):
        return count_parameters(cfg).activated - cfg.num_hidden_layers * 2 * cfg.hidden_size - cfg.hidden_size
    assert "final RMSNorm" in ex.check_activated_params(no_block_norms).message

    def no_latent_norms(cfg):
        return count_parameters(cfg).activated - cfg.num_hidden_layers * ((cfg.q_lora_rank or 0) + cfg.kv_lora_rank)
    assert "latent norms" in ex.check_activated_params(no_latent_norms).message

    def assumes_q_latent(cfg):  # right everywhere except q_lora_rank=None, where d * None raises TypeError
        return count_parameters(cfg).activated + 0 * cfg.hidden_size * cfg.q_lora_rank
    r = ex.check_activated_params(assumes_q_latent)
    assert r.status == WRONG and "q_lora_rank=None" in r.message and "raised TypeError" in r.message \
        and "without a query latent" in r.message
    assert "raised ZeroDivisionError" in ex.check_activated_params(lambda cfg: 1 / 0).message
    assert ex.check_activated_params(lambda cfg: "many").status == WRONG
    assert ex.check_activated_params(_right_activated).status == RIGHT


def _stats(k, accepted, drafted, forwards, new_tokens):
    from dsv3_lessons.tools.speculative import SpeculativeStats
    return SpeculativeStats(k=k, new_tokens=new_tokens, main_forwards=forwards, accepted_per_step=accepted,
                            drafted_per_step=drafted)


def test_103_prediction():
    assert ex.check_tpf_prediction(ex.___, 1.4).status == NOT_ATTEMPTED
    assert ex.check_tpf_prediction(1.5, 1.4).status == RIGHT

    class Stats:
        tokens_per_forward = 1.42
    assert ex.check_tpf_prediction(1.3, Stats()).status == RIGHT
    impossible = ex.check_tpf_prediction(5, 1.4)
    assert impossible.status == WRONG and "impossible" in impossible.message
    assert ex.check_tpf_prediction("2", 1.4).status == WRONG
    # a run like the chapter's: acceptance does not fall with the draft position (a repeating text)
    flat = [_stats(3, [3, 3, 3, 3, 0, 3, 3, 1, 3, 3, 2, 3], [3] * 12, 13, 1 + 12 + 30)]
    cond = ex.conditional_acceptance(flat)
    assert min(cond[1:]) >= cond[0] - 0.1
    m = ex.tokens_per_forward(flat)
    assert m == 43 / 13
    every = ex.check_tpf_prediction(4.0, flat)
    assert every.status == WRONG and "every draft accepted" in every.message
    high = ex.check_tpf_prediction(m + 0.4, flat)
    assert high.status == WRONG and "optimistic" in high.message and "multiply" in high.message
    assert "falls with the draft position" not in high.message and "given the earlier ones" in high.message
    low = ex.check_tpf_prediction(m - 1.0, flat)
    assert low.status == WRONG and "pessimistic" in low.message and "as often as the first or more" in low.message
    # a run where the later drafts ARE accepted less often: the diagnosis follows the measurement
    falling = [_stats(3, [1, 0, 2, 1, 1, 0, 1, 3, 1, 1], [3] * 10, 11, 10 + 11)]
    cond = ex.conditional_acceptance(falling)
    assert min(cond[1:]) < cond[0] - 0.1
    low = ex.check_tpf_prediction(1.0, falling)
    assert low.status == WRONG and "less often than the first here" in low.message
    # a bare number: no claim about the per-position rates
    bare = ex.check_tpf_prediction(1.0, 1.6)
    assert bare.status == WRONG and "pessimistic" in bare.message and "never costs a token" in bare.message
    # the hint ladder no longer pushes toward falling acceptance
    assert not any("trained for depth 1" in h for h in ex.check_tpf_prediction.more)
    # the chapter notebook hides the measurement until the prediction is written
    out = "".join(o.get("text", "") for o in _cell_outputs(ROOT / "notebooks" / "10_capstone.ipynb",
                                                           "stats3 = [speculative_generate"))
    assert "Hidden until you predict" in out and "measured" not in out


def test_104_dispatch_bytes():
    assert ex.check_dispatch_bytes(ex.___).status == NOT_ATTEMPTED
    right = ex.check_dispatch_bytes(272)
    assert right.status == RIGHT and "once" in right.message
    assert "once per destination rank" in ex.check_dispatch_bytes(544).message
    assert "weights and the K_r expert ids" in ex.check_dispatch_bytes(256).message
    assert "4 bytes" in ex.check_dispatch_bytes(68).message
    assert "float32" in ex.check_dispatch_bytes(136).message
    assert "other rank" in ex.check_dispatch_bytes(0).message
    per_expert = ex.check_dispatch_bytes(512)
    assert per_expert.status == WRONG and "once per chosen expert" in per_expert.message
    int64 = ex.check_dispatch_bytes(280)
    assert int64.status == WRONG and "int64" in int64.message
    # the chapter states the row format (so 10.4 is solvable from the chapter)
    nb = nbformat.read(ROOT / "notebooks" / "10_capstone.ipynb", as_version=4)
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "dispatch row" in text and "$d + 2K_r$" in text
    assert ex.check_dispatch_bytes(1000).status == WRONG
    assert ex.check_dispatch_bytes(torch.tensor(272)).status == RIGHT


def test_hints_are_nudges_with_ladders(capsys):
    from dsv3_lessons.course.ch10_capstone import hint

    for check in (ex.check_eh_proj_converter, ex.check_activated_params, ex.check_tpf_prediction,
                  ex.check_dispatch_bytes):
        assert len(check.more) >= 3 and check.hint
    assert "272" not in ex.check_dispatch_bytes.hint and "W_e, W_h" not in ex.check_eh_proj_converter.hint
    text = hint("10.4")
    assert text.startswith("Hint 1/3 for exercise 10.4")
