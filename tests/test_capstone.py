"""Chapter 10: the notebook's assembled model equals the library and every part its chapter's independent version;
exports load in transformers with our logits and greedy tokens; the stored runs are what the code trains; the
crossover reading; the module command's argument errors; the report card's measured pieces.

Oracles: chapter 2's equations on the paper's matrices, chapter 5's one-token router, the closed-form balance loss,
transformers' ``DeepseekV3ForCausalLM``, a fresh re-training of the stored runs' first steps, synthetic curves with a
known crossing, closed-form cache bytes.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsv3_lessons.course.ch10_capstone import runs as R
from dsv3_lessons.course.ch10_capstone import crossover, kv_bytes_per_token, max_vio_ends, mtp_acceptance
from dsv3_lessons.course.ch02_mla.steps import mla_step_by_step, paper_matrices
from dsv3_lessons.course.ch05_routing import route_token
from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.model.moe import sequence_balance_loss

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "10_capstone.ipynb"
V = 40


def _notebook_namespace() -> dict:
    """Execute the notebook's `block`, `assemble` and `forward` cells (the learner-visible code) in a namespace."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict = {"torch": torch, "nn": nn, "F": F}       # what the notebook's first cell imports
    wanted = ("def block(", "def assemble(", "def forward(")
    cells = [c.source for c in nb.cells if c.cell_type == "code" and any(w in c.source for w in wanted)]
    assert len(cells) == 3, "the notebook should define block, assemble and forward in three cells"
    for src in cells:
        exec(compile(src, str(NOTEBOOK), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def nb_ns():
    return _notebook_namespace()


def test_notebook_assembly_equals_library_and_chapters(nb_ns):
    cfg = tiny(vocab_size=V)
    torch.manual_seed(0)
    lib = DeepSeekV3(cfg, aux_loss_alpha=1e-4, mtp_loss_weight=0.3)
    mine = nb_ns["assemble"](cfg)
    mine.load_state_dict(lib.state_dict(), strict=True)          # checkpoint names, nothing missing or extra
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (3, 20), generator=g)
    y = torch.randint(0, V, (3, 20), generator=g)
    logits, mtp_logits, loss = nb_ns["forward"](mine, x, y)
    ref = lib(x, y)
    assert torch.allclose(logits, ref.logits, atol=1e-5) and torch.allclose(mtp_logits, ref.mtp_logits[0], atol=1e-5)
    assert abs(loss.item() - ref.loss.item()) < 1e-5 and ref.aux_loss.item() > 0
    # each part against its chapter's independent version
    b1 = mine.layers[1]
    u = b1.input_layernorm(torch.randn(2, 12, cfg.hidden_size, generator=g))
    assert torch.allclose(b1.self_attn(u), mla_step_by_step(paper_matrices(b1.self_attn), u)["u"], atol=1e-5)
    flat = u.reshape(-1, cfg.hidden_size)
    w, idx, s = b1.mlp.gate(flat)
    for t in range(flat.shape[0]):
        r = route_token(flat[t], b1.mlp.gate.weight, b1.mlp.gate.e_score_correction_bias, cfg.n_group,
                        cfg.topk_group, cfg.num_experts_per_tok, cfg.routed_scaling_factor)
        assert list(r.chosen) == idx[t].tolist()
        assert torch.allclose(torch.tensor(r.weights), w[t], atol=1e-6)
    b1.mlp.train()(u)
    assert torch.allclose(b1.mlp.aux_loss, sequence_balance_loss(s.view(2, 12, -1), idx.view(2, 12, -1), 1e-4))
    # the FP8 flag converts every projection except head, embedding and router, and keeps the same numbers' shapes
    mine8 = nb_ns["assemble"](cfg, fp8=True)
    mine8.load_state_dict(lib.state_dict(), strict=True)
    kinds = {type(m).__name__ for n, m in mine8.named_modules() if n.endswith("_proj")}
    assert kinds == {"FP8Linear"} and type(mine8.lm_head) is nn.Linear
    l8 = nb_ns["forward"](mine8, x, y)[0]
    assert 0 < (l8 - logits).abs().max() < 0.5                 # quantized: close, not equal


def test_notebook_forward_catches_a_swapped_concat(nb_ns):
    """The parity check is tight enough to see the eh_proj order: swap the halves and the MTP logits move."""
    cfg = tiny(vocab_size=V)
    torch.manual_seed(0)
    lib = DeepSeekV3(cfg)
    mine = nb_ns["assemble"](cfg)
    mine.load_state_dict(lib.state_dict())
    with torch.no_grad():
        w = mine.mtp[0].eh_proj.weight
        w.copy_(torch.cat([w[:, cfg.hidden_size:], w[:, :cfg.hidden_size]], 1))
    x = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(2))
    assert (nb_ns["forward"](mine, x, x)[1] - lib(x, x).mtp_logits[0]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ transformers
transformers = pytest.importorskip("transformers")


def _load_hf(folder):
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DeepseekV3ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _perturbed(seed: int = 0) -> DeepSeekV3:
    torch.manual_seed(seed)
    m = DeepSeekV3(tiny(vocab_size=V))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    return m.eval()


def test_exports_load_in_transformers_with_our_logits_and_tokens(tmp_path):
    from dsv3_lessons.tools.generate import generate
    from dsv3_lessons.tools.hf_compat import export_hf, export_hf_fp8, import_hf

    model = _perturbed()
    ids = torch.randint(0, V, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(ids).logits
    hf = _load_hf(export_hf(model, tmp_path / "fp32"))
    with torch.no_grad():
        assert (hf(ids).logits - ours).abs().max() < 1e-4 and ours.abs().max() > 1.0
    assert torch.equal(hf.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0), generate(model, ids, 12))
    for name, folder in (("bf16", export_hf(model, tmp_path / "bf16", dtype=torch.bfloat16)),
                         ("fp8", export_hf_fp8(model, tmp_path / "fp8", block=8))):
        theirs, back = _load_hf(folder), import_hf(folder)
        with torch.no_grad():
            d = (theirs(ids).logits - back(ids).logits).abs().max().item()
            moved = (back(ids).logits - ours).abs().max().item()
        assert d < 1e-4, name
        assert moved > 1e-3, name                  # the rounding is real: the comparison is like with like


# ------------------------------------------------------------------------------------------ stored runs
@pytest.fixture(scope="module")
def runs():
    return R.load_runs()


def test_stored_runs_follow_the_design(runs):
    meta = runs["meta"]
    assert meta["complete"] and len(meta["seeds"]) >= 3 and set(runs["runs"]) == set(R.MODELS)
    for m in R.MODELS:
        assert meta["steps"][m] == max(1, round(meta["budget_s"] / meta["step_time_s"][m]))   # equal budget
        for s in meta["seeds"]:
            r = runs["runs"][m][str(s)]
            assert r["steps"] == meta["steps"][m] and len(r["loss_first"]) == min(R.EXACT_STEPS, r["steps"])
            assert r["val_step"][0] == 0 and r["val_step"][-1] == r["steps"] and math.isfinite(r["final_val"])
            assert len(r["loss_blocks"]) == math.ceil(r["steps"] / R.BLOCK)
        finals = [runs["runs"][m][str(s)]["final_val"] for s in meta["seeds"]]
        assert len(set(finals)) == len(finals)                  # seeds really differ
    assert Path(R.RUNS_DIR / R.CROSSOVER_FILE).stat().st_size < 300_000


def test_stored_runs_match_the_code(runs):
    """Re-train the first steps of every model (seed 0) as the command does; compare with the file."""
    from dsv3_lessons.tools.data import TextData, load_corpus
    from dsv3_lessons.tools.train import train

    data = TextData.from_corpus(load_corpus())
    assert runs["meta"]["config"] == tiny(vocab_size=data.vocab_size, num_nextn_predict_layers=0).to_dict(), \
        "data/capstone_runs was made with another tiny() config: rerun python -m dsv3_lessons.course.ch10_capstone"
    n = 2
    for m in R.MODELS:
        stored = runs["runs"][m]["0"]
        torch.manual_seed(0)
        tc = R.train_config(m, stored["steps"], seed=0)
        assert n < tc.warmup_steps                        # the learning rates equal the full run's
        tc.steps, tc.eval_interval = n, 0
        h = train(R.build_model(m, data.vocab_size), data, tc, progress=False)
        assert h.main_loss == pytest.approx(stored["loss_first"][:n], rel=1e-4), m
        assert h.val_loss[0] == pytest.approx(stored["val_loss"][0], rel=1e-5), m


def _fake_runs(moe, dense, step_time=(1.0, 1.0)):
    steps = list(range(0, 10 * len(moe), 10))
    rec = lambda ys, f: {"val_step": steps, "val_loss": ys, "final_val": f}  # noqa: E731
    return {"meta": {"seeds": [0, 1, 2], "step_time_s": {"moe": step_time[0], "dense": step_time[1]}},
            "runs": {"moe": {str(s): rec([y + 0.01 * s for y in moe], moe[-1] + 0.01 * s) for s in range(3)},
                     "dense": {str(s): rec([y + 0.01 * s for y in dense], dense[-1] + 0.01 * s) for s in range(3)}}}


def test_crossover_reads_a_known_crossing():
    # MoE starts worse and is better from t = 25 on (linear curves cross half way between 20 and 30)
    runs = _fake_runs([3.0, 2.8, 2.6, 2.3, 2.0], [2.9, 2.7, 2.5, 2.4, 2.3])
    c = crossover(runs, grid=400)
    assert c["t_mean"] == pytest.approx(25.0, abs=0.2) and all(t == pytest.approx(25.0, abs=0.2) for t in c["t_seed"])
    assert c["gap_end_mean"] == pytest.approx(0.3) and c["seed_spread"] == pytest.approx(0.02)
    # a slower MoE step stretches its curve: the same losses cross later
    assert crossover(runs, step_times_s={"moe": 1.1}, grid=400)["t_mean"] > 25.5
    # never ahead at the end: no crossover, even if it led in the middle
    assert crossover(_fake_runs([3.0, 2.5, 2.5, 2.5, 2.5], [3.0, 2.6, 2.5, 2.45, 2.4]))["t_mean"] is None


def test_module_command_argument_errors(capsys):
    for argv, flag in ((["--budget-s", "0"], "--budget-s"), (["--budget-s", "nan"], "--budget-s"),
                       (["--seeds", "0,1"], "--seeds"), (["--seeds", "0,0,1"], "--seeds"),
                       (["--seeds", "a,b,c"], "--seeds"), (["--jobs", "0"], "--jobs"),
                       (["--timing-rounds", "2"], "--timing-rounds"), (["--n-evals", "1"], "--n-evals")):
        with pytest.raises(SystemExit) as exc:
            R.parse_args(argv)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err, argv
    ok = R.parse_args(["--budget-s", "30", "--seeds", "3,4,5", "--jobs", "2"])
    assert ok.seeds == [3, 4, 5] and ok.budget_s == 30.0
    with pytest.raises(ValueError, match="model must be one of"):
        R.build_model("switch", V)
    with pytest.raises(FileNotFoundError, match="python -m dsv3_lessons.course.ch10_capstone"):
        R.load_runs(Path("/nonexistent/crossover.json"))


# ------------------------------------------------------------------------------------------ report card pieces
def test_report_card_pieces():
    model = _perturbed(3)
    cfg = model.cfg
    prompt = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(5))
    assert kv_bytes_per_token(model, prompt) == cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4
    acc = mtp_acceptance(model, [prompt], max_new_tokens=8)
    assert acc["equal"] and 1.0 <= acc["tokens_per_forward"] <= 2.0 and 0.0 <= acc["acceptance"] <= 1.0
    assert max_vio_ends([4.0] * 10 + [1.0] * 80 + [0.5] * 10) == (4.0, 0.5)
    assert max_vio_ends([2.0, 1.0]) == (2.0, 1.0)
