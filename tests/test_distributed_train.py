"""Data + expert parallel training under torchrun (dsv3_lessons.tools.distributed_train) equals one process.

Oracles: :func:`dsv3_lessons.tools.train.train` on one process with the same seed, global batch and recipe
(losses, gradient norms, per-expert counts, balancing biases, validation loss and the trained weights, step
by step); token arithmetic (every layer routes batch·seq·K_r assignments); and the bytes of step 1
recomputed from the single-process gate's choices on the first batch (one dispatched row per token and
remote rank it visits). Each run starts real processes with ``python -m torch.distributed.run``
(gloo, one thread each), so this file takes about a minute and a half on 2 cores.
"""
from __future__ import annotations

import os
import random

import pytest
import torch

from dsv3_lessons.model.moe import Gate
from dsv3_lessons.tools.distributed_train import (BYTE_KINDS, DistTrainArgs, DistributedHistory,
                                                  DistributedTrainError, build_model, distributed_config,
                                                  load_data, load_trained, main, run_distributed)
from dsv3_lessons.tools.train import train

STEPS, BATCH, SEQ = 20, 8, 32
RECIPE = dict(steps=STEPS, batch_size=BATCH, seq_len=SEQ, warmup_steps=5, bias_update_speed=0.01, eval_batches=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A small English-like text (118 kB): enough windows, quick to tokenise in every process."""
    rng = random.Random(0)
    words = ("the king queen lord lady love death night day sword crown heart fool time blood honour speak "
             "come go see hear my thy thou art is not and to of what why where when").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + rng.choice(".!?,")
             for _ in range(3000)]
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def reference(corpus: str, world: int, **recipe):
    """train() on one process, same seed and global batch; returns (history, trained model, args, data)."""
    args = DistTrainArgs(corpus=corpus, **{**RECIPE, **recipe})
    data = load_data(corpus)
    model = build_model(data.vocab_size, world, args)
    return train(model, data, args.train_config(), progress=False), model, args, data


def step1_rows(args: DistTrainArgs, data, world: int) -> tuple[list[int], list[int]]:
    """Rows each rank must send in step 1, from the single-process gates' choices on the first batch.

    Returns (out, back): per rank, the rows it dispatches to other ranks (one per token it owns and other
    rank that token visits), and the rows it receives from other ranks (whose partial sums it sends back).
    """
    model = build_model(data.vocab_size, world, args).train()
    chosen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: chosen.append(out[1]))
             for m in model.modules() if isinstance(m, Gate)]
    x, y = data.get_batch("train", args.batch_size, args.seq_len,
                          generator=torch.Generator().manual_seed(args.seed))
    model(x, y)
    for h in hooks:
        h.remove()
    per_rank = model.cfg.n_routed_experts // world
    out, back = [0] * world, [0] * world
    rows_per_rank = args.batch_size // world
    for indices in chosen:                                    # one gate call per MoE layer, in order
        seq = indices.shape[0] // args.batch_size             # seq_len (main layers) or seq_len - 1 (MTP)
        owner = torch.arange(indices.shape[0]) // seq // rows_per_rank
        visits = torch.zeros(indices.shape[0], world, dtype=torch.bool).scatter_(1, indices // per_rank, True)
        for q in range(world):
            out[q] += int(visits[owner == q].sum() - visits[owner == q, q].sum())
            back[q] += int(visits[owner != q, q].sum())
    return out, back


@pytest.mark.parametrize("world", [2, 4])
def test_torchrun_training_equals_one_process(corpus, tmp_path, world):
    saved = tmp_path / "model.pt"
    hist = run_distributed(world, corpus=corpus, save_model=str(saved), timeout_s=240, **RECIPE)
    ref, ref_model, args, data = reference(corpus, world)
    assert hist.world_size == world and hist.backend == "gloo" and hist.step == list(range(1, STEPS + 1))

    # losses, step by step, within float32 rounding (gradients are summed in another order)
    for name in ("loss", "main_loss", "mtp_loss", "aux_loss"):
        got, want = torch.tensor(getattr(hist, name)), torch.tensor(getattr(ref, name))
        assert torch.allclose(got, want, rtol=0, atol=1e-5), (name, (got - want).abs().max())
    assert hist.main_loss[-1] < hist.main_loss[0] - 0.5                      # and it learned
    assert torch.allclose(torch.tensor(hist.grad_norm), torch.tensor(ref.grad_norm), rtol=1e-4)
    assert hist.lr == ref.lr
    assert torch.allclose(torch.tensor(hist.val_loss), torch.tensor(ref.val_loss), atol=1e-5)

    # global per-expert counts: identical integers; every layer routes tokens·K_r assignments
    loads = hist.expert_loads()
    assert torch.equal(loads, ref.expert_loads())
    k = ref_model.cfg.num_experts_per_tok
    tokens = [BATCH * (SEQ - 1 if name.startswith("mtp.") else SEQ) for name in hist.moe_layer_names]
    assert hist.moe_layer_names == ["layers.1.mlp", "layers.2.mlp", "mtp.0.mlp"]
    assert torch.equal(loads.sum(-1), torch.tensor(tokens).mul(k).expand(STEPS, -1))
    # each rank's measured load = the global counts of the experts it holds
    per_rank = ref_model.cfg.n_routed_experts // world
    by_rank = loads.view(STEPS, len(tokens), world, per_rank).sum(-1).transpose(1, 2)
    assert torch.equal(hist.rank_loads(), by_rank)

    # balancing biases: the same ±γ steps as the single process (global counts), and they did move
    ref_bias = [m.gate.e_score_correction_bias.tolist() for name, m in ref_model.named_modules()
                if name in hist.moe_layer_names]
    assert hist.final_bias == ref_bias
    assert any(b != 0.0 for row in ref_bias for b in row)

    # the gathered model equals the single-process one, weight by weight
    trained = load_trained(saved).state_dict()
    for name, want in ref_model.state_dict().items():
        assert torch.allclose(trained[name], want, rtol=0, atol=1e-4), (name, (trained[name] - want).abs().max())

    # bytes of step 1 against the single-process gates' choices; the backward mirrors the forward
    out, back = step1_rows(args, data, world)
    d, row = ref_model.cfg.hidden_size, ref_model.cfg.hidden_size + 2 * k     # float32 elements per row
    assert hist.bytes["dispatch"][0] == [4 * row * n for n in out] and min(out) > 0
    assert hist.bytes["combine"][0] == [4 * d * n for n in back]
    assert hist.bytes["dispatch_grad"][0] == [4 * row * n for n in back]      # gradients of received rows
    assert hist.bytes["combine_grad"][0] == [4 * d * n for n in out]          # gradients of returned sums
    n_layers, n_r = len(tokens), ref_model.cfg.n_routed_experts
    n_replicated = sum(p.numel() for name, p in ref_model.named_parameters() if ".experts." not in name)
    assert hist.bytes["counts"] == [[n_layers * (world - 1) * 8] * world] * STEPS
    assert hist.bytes["all_reduce"] == [[(n_replicated + 5 + n_layers * n_r) * 4] * world] * STEPS
    assert hist.setup_bytes == [(n_replicated + n_layers * n_r) * 4] + [0] * (world - 1)
    assert torch.equal(hist.bytes_per_step(), sum(torch.tensor(hist.bytes[kind]) for kind in BYTE_KINDS))
    assert len(hist.step_time_s) == STEPS and len(hist.step_time_s[0]) == world


def test_one_process_run_of_the_same_code_equals_train(corpus, tmp_path, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "h.json"
    argv = DistTrainArgs(corpus=corpus, history=str(path), quiet=True, **{**RECIPE, "steps": 6}).to_argv()
    assert main(argv) == 0
    hist = DistributedHistory.from_json(path)
    ref, ref_model, _, _ = reference(corpus, 1, steps=6)
    assert torch.allclose(torch.tensor(hist.loss), torch.tensor(ref.loss), rtol=0, atol=1e-5)
    assert torch.equal(hist.expert_loads(), ref.expert_loads())
    assert ref_model.cfg.n_group == 1                               # one rank: one routing group
    assert hist.bytes["dispatch"] == [[0]] * 6 and hist.bytes["combine"] == [[0]] * 6   # nothing leaves


def test_arguments_round_trip_and_bad_arguments_name_the_field(monkeypatch):
    args = DistTrainArgs(steps=7, lr=1e-3, quiet=True, corpus="x.txt", aux_loss_alpha=0.0)
    assert DistTrainArgs.from_argv(args.to_argv()) == args
    bad = [(dict(nproc=3, batch_size=12), "n_routed_experts"),     # 8 experts do not split over 3 ranks
           (dict(nproc=4, n_routed_experts=4), "n_routed_experts"),  # 1 expert per rank: no top-2 group score
           (dict(nproc=4, batch_size=6), "batch_size"),
           (dict(nproc=2, eval_batch_size=3), "eval_batch_size"),
           (dict(nproc=2, node_limit=0), "node_limit"),
           (dict(nproc=2, num_experts_per_tok=5, node_limit=1), "num_experts_per_tok"),
           (dict(nproc=2, backend="mpi"), "backend"),
           (dict(nproc=2, inject="crash"), "inject"),
           (dict(nproc=2, inject="fail", inject_rank=2), "inject_rank"),
           (dict(nproc=0), "nproc"),
           (dict(nproc=2, timeout_s=0), "timeout_s"),
           (dict(nproc=2, steps=0), "steps")]
    for kwargs, field in bad:
        with pytest.raises(ValueError, match=field):
            run_distributed(**kwargs)                               # refused before any process starts
    # a worker started by torchrun checks its arguments against WORLD_SIZE before joining the group
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"n_routed_experts \(8\) must be a positive multiple of the number "
                                         r"of processes \(3\)"):
        main(["--steps", "2", "--batch-size", "12"])
    with pytest.raises(ValueError, match="n_group"):
        from dsv3_lessons.tools.distributed_train import ExpertParallelMoE
        from dsv3_lessons.model.moe import DeepseekMoE
        ExpertParallelMoE(DeepseekMoE(distributed_config(96, 2)), rank=0, world=4)


def test_a_failing_rank_ends_the_run_with_its_error(corpus):
    with pytest.raises(DistributedTrainError) as info:
        run_distributed(2, corpus=corpus, steps=4, batch_size=4, seq_len=16, inject="fail", inject_rank=1,
                        inject_step=2, collective_timeout_s=60, timeout_s=120)
    err = info.value
    assert err.rank == 1 and err.returncode not in (None, 0)
    assert "rank 1 raised RuntimeError: rank 1 of 2 failed at step 2" in str(err)
    assert "injected failure (--inject fail) on rank 1 at step 2" in str(err)


def test_a_hanging_rank_makes_the_others_time_out(corpus):
    with pytest.raises(DistributedTrainError) as info:
        run_distributed(2, corpus=corpus, steps=4, batch_size=4, seq_len=16, inject="hang", inject_rank=1,
                        inject_step=2, collective_timeout_s=4, timeout_s=120)
    err = info.value
    assert err.returncode not in (None, 0) and err.rank == 0          # torchrun's exit, not our kill
    assert "rank 0 of 2 failed at step 2" in str(err) and "stopped answering" in str(err)


def test_the_launcher_kills_a_run_past_its_timeout(corpus):
    # collectives would wait 10 minutes; the launcher's own limit ends everything first
    with pytest.raises(DistributedTrainError, match="did not finish within timeout_s=12") as info:
        run_distributed(2, corpus=corpus, steps=4, batch_size=4, seq_len=16, inject="hang", inject_rank=0,
                        inject_step=1, collective_timeout_s=600, timeout_s=12)
    assert info.value.returncode is None


@pytest.mark.skipif(not os.environ.get("DSV3_TEST_NCCL"), reason="nccl check runs only on a CUDA machine on request")
def test_nccl_one_process_equals_gloo(corpus):  # pragma: no cover - needs CUDA
    cuda = run_distributed(1, corpus=corpus, backend="nccl", timeout_s=300, **{**RECIPE, "steps": 5})
    cpu = run_distributed(1, corpus=corpus, backend="gloo", timeout_s=300, **{**RECIPE, "steps": 5})
    assert cuda.backend == "nccl" and cuda.device.startswith("cuda")
    assert torch.allclose(torch.tensor(cuda.loss), torch.tensor(cpu.loss), atol=1e-3)


_TORCHRUN_SUMMARY = """
============================================================
dsv3_lessons.tools.distributed_train FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-07_13:40:01
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 12)
  traceback : Traceback (most recent call last):
    File "distributed_train.py", line 3, in train_rank
  RuntimeError: rank 1 of 2 failed at step 2: injected failure (--inject fail) on rank 1 at step 2
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_13:40:01
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 11)
  traceback : Traceback (most recent call last):
  torch.distributed.DistBackendError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1
============================================================
"""


def test_root_cause_is_the_rank_that_failed_not_its_peer_that_lost_the_connection():
    """torchrun names the failure it saw first; a peer whose collective broke because rank 1 died can come first."""
    from dsv3_lessons.tools.distributed_train import _root_cause

    rank, err = _root_cause(_TORCHRUN_SUMMARY)
    assert rank == 1 and err.startswith("RuntimeError: rank 1 of 2 failed at step 2")
    own = _TORCHRUN_SUMMARY.replace("torch.distributed.DistBackendError: [gloo/transport/tcp/pair.cc:534] Connection "
                                    "closed by peer [127.0.0.1]:1", "ValueError: rank 0 went wrong")
    assert _root_cause(own) == (0, "ValueError: rank 0 went wrong")           # a real error of its own stays the cause
    assert _root_cause("no summary at all") == (None, "")
