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
    # the unfixed converter, as stored in the chapter notebook, is wrong with the concat-order diagnosis
    cell = _cell(ROOT / "notebooks" / "10_capstone.ipynb", "def eh_proj_from_paper")
    assert ex.BUGGY_EH_PROJ in cell
    ns = {"torch": torch}
    exec(ex.BUGGY_EH_PROJ, ns)
    buggy = ex.check_eh_proj_converter(ns["eh_proj_from_paper"])
    assert buggy.status == WRONG and "embedding first" not in buggy.message and "[enorm(emb) ; hnorm(h)]" in buggy.message
    rows = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, w_h], dim=0))
    assert rows.status == WRONG and "dim 0" in rows.message
    transposed = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e.t(), w_h.t()], dim=1))
    assert transposed.status == WRONG and "transposed" in transposed.message
    one_half = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, w_e], dim=1))
    assert one_half.status == WRONG and "side by side" in one_half.message
    not_tensor = ex.check_eh_proj_converter(lambda w_h, w_e: [w_e, w_h])
    assert not_tensor.status == WRONG and "torch.Tensor" in not_tensor.message
    right = ex.check_eh_proj_converter(lambda w_h, w_e: torch.cat([w_e, w_h], dim=1))
    assert right.status == RIGHT and "embedding first" in right.message
    # the solutions notebook's fixed cell is right
    sol = _cell(ROOT / "notebooks" / "solutions" / "10_capstone_solutions.ipynb", "def eh_proj_from_paper")
    ns = {"torch": torch}
    exec(sol.split("check_eh_proj_converter(eh_proj_from_paper)")[0].split("hint)\n", 1)[1], ns)
    assert ex.check_eh_proj_converter(ns["eh_proj_from_paper"]).status == RIGHT
    assert "✓ Exercise 10.1" in capsys.readouterr().out


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
    assert "raised ZeroDivisionError" in ex.check_activated_params(lambda cfg: 1 / 0).message
    assert ex.check_activated_params(lambda cfg: "many").status == WRONG
    assert ex.check_activated_params(_right_activated).status == RIGHT


def test_103_prediction():
    assert ex.check_tpf_prediction(ex.___, 1.4).status == NOT_ATTEMPTED
    assert ex.check_tpf_prediction(1.5, 1.4).status == RIGHT

    class Stats:
        tokens_per_forward = 1.42
    assert ex.check_tpf_prediction(1.3, Stats()).status == RIGHT
    impossible = ex.check_tpf_prediction(5, 1.4)
    assert impossible.status == WRONG and "impossible" in impossible.message
    optimistic = ex.check_tpf_prediction(3.4, 1.4)
    assert optimistic.status == WRONG and "optimistic" in optimistic.message and "draft position" in optimistic.message
    pessimistic = ex.check_tpf_prediction(1.0, 1.6)
    assert pessimistic.status == WRONG and "pessimistic" in pessimistic.message
    assert ex.check_tpf_prediction("2", 1.4).status == WRONG


def test_104_dispatch_bytes():
    assert ex.check_dispatch_bytes(ex.___).status == NOT_ATTEMPTED
    right = ex.check_dispatch_bytes(272)
    assert right.status == RIGHT and "once" in right.message
    assert "once per destination rank" in ex.check_dispatch_bytes(544).message
    assert "weights and the K_r expert ids" in ex.check_dispatch_bytes(256).message
    assert "4 bytes" in ex.check_dispatch_bytes(68).message
    assert "float32" in ex.check_dispatch_bytes(136).message
    assert "other rank" in ex.check_dispatch_bytes(0).message
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
