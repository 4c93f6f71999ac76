"""Expert parallelism on a real ``torch.distributed`` backend: node-limited dispatch and combine over gloo.

What it demonstrates (V3 report §2.1.2 "Node-Limited Routing" and §3.2.2 "cross-node all-to-all"):
``world_size`` CPU processes play ``world_size`` nodes. Node ``r`` hosts the experts of routing group ``r``
(experts ``r·E .. (r+1)·E − 1`` with ``E = N_r / n_nodes``), the gate and the shared expert are replicated,
and each node owns a shard of the tokens. One MoE layer then runs in four steps on every rank:

1. **route** its tokens with the (replicated) :class:`~dsv3_lessons.model.moe.Gate`; with node limiting
   (``topk_group = M``) a token's K_r experts lie on at most M nodes;
2. **dispatch**: a token travels **once per destination node**, whatever the number of experts it uses
   there (the node forwards it internally -- NVLink in V3). The ranks first exchange how many rows each
   sends to each (``all_to_all_single`` on a ``[world]`` count vector), then the rows themselves with a
   second ``all_to_all_single`` with *uneven* ``input_split_sizes``/``output_split_sizes``. A row is
   ``[x_t (d floats) | g for the K_r slots (K_r floats) | local expert id per slot (K_r, −1 = elsewhere)]``;
3. **experts**: each node runs its own experts on what it received and sums, per row, the weighted
   outputs of its experts (a partial sum of eq. 12);
4. **combine**: the partial sums go back along the reverse route (a third ``all_to_all_single`` with the
   split sizes swapped), the owner adds them up and adds the shared expert.

Steps 2–4 are the functions :func:`dispatch`, :func:`local_experts` and :func:`combine`, shared with
:mod:`dsv3_lessons.tools.distributed_train`, which trains the whole model through them: their row exchanges
(:func:`all_to_all_rows`) are differentiable, so the backward pass sends each row's gradient back along
the reverse route. This demo runs them without gradients.

The output equals the single-process :class:`~dsv3_lessons.model.moe.DeepseekMoE` (tests check it for
several seeds and uneven loads). Bytes are counted for rows whose destination is **another** process:
node limiting caps the remote copies of a token at M − (1 if its own node is among them), which is the
traffic it saves. Payloads here are float32; V3 dispatches in FP8 and combines in BF16, so real byte
counts scale by the element size, the ratios do not.

Processes and output
--------------------
The worker :func:`_worker` lives in this module because ``spawn`` (the only start method that works the
same on Linux, macOS and Windows, and inside Jupyter) pickles the function by reference: a function
defined in a notebook cell cannot be spawned. Processes rendezvous through a fresh ``file://`` path (no
TCP port to collide with a parallel test run) and use one thread each. Each child sends its file
descriptors 1 and 2 to a log file of its own at start, so nothing it (or gloo's C++ code) writes reaches
the notebook; rank 0 gathers every rank's numbers with ``gather_object`` and writes them to a temporary
file the parent reads. A child's exception re-raises in the parent, with the tail of every child's log.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as _fc

from dsv3_lessons.model.config import DeepseekV3Config, tiny
from dsv3_lessons.model.layers import SwiGLU
from dsv3_lessons.model.moe import DeepseekMoE, Gate

__all__ = ["EPCase", "EPResult", "ep_config", "build_layer", "route_nodes", "expected_traffic",
           "run_expert_parallel", "node_limit_sweep", "single_process_output", "BYTES_PER_ELEMENT",
           "Dispatch", "dispatch", "local_experts", "combine", "all_to_all_rows"]

#: payload dtype of this demo (float32): 4 bytes per element
BYTES_PER_ELEMENT = 4


def ep_config(n_nodes: int = 4, experts_per_node: int = 8, top_k: int = 8, node_limit: int | None = None,
              **overrides) -> DeepseekV3Config:
    """An MoE config whose routing groups are the nodes: ``n_group = n_nodes``, ``topk_group = M``.

    Widths (hidden size, expert width) come from :func:`~dsv3_lessons.model.config.tiny`; ``node_limit``
    None means no limit (M = n_nodes). Defaults mirror V3's per-token shape: K_r = 8 experts out of
    ``n_nodes·experts_per_node``. Raises :class:`~dsv3_lessons.model.config.ConfigError` for impossible
    combinations (e.g. K_r above M·experts_per_node).
    """
    m = n_nodes if node_limit is None else node_limit
    return tiny(n_routed_experts=n_nodes * experts_per_node, n_group=n_nodes, topk_group=m,
                num_experts_per_tok=top_k, **overrides)


@dataclass(frozen=True)
class EPCase:
    """One distributed run.

    Attributes:
        seed: seeds the layer's weights, the tokens and the bias.
        tokens_per_rank: tokens owned by each node (uneven on purpose); its length is the world size.
        node_limit: M, the most nodes a token may reach (``topk_group``); None = no limit.
        skew: standard deviation of a random selection bias ``e_score_correction_bias`` (makes expert
            loads uneven; 0 = none).
        experts_per_node, top_k: E and K_r (see :func:`ep_config`).
    """

    seed: int = 0
    tokens_per_rank: tuple[int, ...] = (40, 64, 17, 90)
    node_limit: int | None = 2
    skew: float = 0.05
    experts_per_node: int = 8
    top_k: int = 8

    def __post_init__(self) -> None:
        def whole(n) -> bool:  # int or numpy integer, never bool or float
            return isinstance(n, numbers.Integral) and not isinstance(n, bool)

        counts = tuple(self.tokens_per_rank)
        if len(counts) < 2 or not all(whole(n) and n >= 0 for n in counts):
            raise ValueError(f"tokens_per_rank must list >= 2 non-negative whole token counts (one per node), "
                             f"got {self.tokens_per_rank!r}")
        if sum(counts) == 0:
            raise ValueError("tokens_per_rank must hold at least one token in total")
        if self.skew < 0:
            raise ValueError(f"skew must be >= 0 (a standard deviation), got {self.skew}")
        n = len(counts)
        if self.node_limit is not None and not (whole(self.node_limit) and 1 <= self.node_limit <= n):
            raise ValueError(f"node_limit (M) must be a whole number of nodes from 1 to {n} = len(tokens_per_rank), "
                             f"or None for no limit; got {self.node_limit!r}")
        if not (whole(self.experts_per_node) and self.experts_per_node >= 1):
            raise ValueError(f"experts_per_node must be a whole number >= 1, got {self.experts_per_node!r}")
        reach = (self.node_limit or n) * self.experts_per_node
        if not (whole(self.top_k) and 1 <= self.top_k <= reach):
            raise ValueError(f"top_k (K_r) must be a whole number from 1 to {reach}, the experts a token can reach "
                             f"(node_limit {self.node_limit or n} x experts_per_node {self.experts_per_node}); "
                             f"got {self.top_k!r}")
        object.__setattr__(self, "tokens_per_rank", tuple(int(c) for c in counts))

    @property
    def world_size(self) -> int:
        return len(self.tokens_per_rank)

    def config(self) -> DeepseekV3Config:
        """The MoE config of this case (:func:`ep_config` with groups = nodes and ``topk_group`` = M)."""
        return ep_config(self.world_size, self.experts_per_node, self.top_k, self.node_limit)


def build_layer(case: EPCase) -> tuple[DeepseekMoE, torch.Tensor]:
    """The single-process MoE layer of ``case`` (seeded weights and bias) and its tokens ``[n_tokens, d]``."""
    cfg = case.config()
    g = torch.Generator().manual_seed(case.seed)
    layer = DeepseekMoE(cfg).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():  # gate centroids wider than the experts' weights
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name == "gate.weight" else 0.1))
        layer.gate.e_score_correction_bias.copy_(torch.randn(cfg.n_routed_experts, generator=g) * case.skew)
    x = torch.randn(sum(case.tokens_per_rank), cfg.hidden_size, generator=g)
    return layer, x


@torch.no_grad()
def single_process_output(case: EPCase) -> torch.Tensor:
    """``DeepseekMoE`` forward on all tokens in one process: the reference ``[n_tokens, d]``."""
    layer, x = build_layer(case)
    return layer(x[None])[0]


@torch.no_grad()
def route_nodes(gate: Gate, x: torch.Tensor, experts_per_node: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route ``x [n, d]``; return ``(weights [n, K_r], indices [n, K_r], visits [n, n_nodes] bool)``.

    ``visits[t, r]`` is True when token t uses at least one expert hosted on node r (node = group).
    """
    n_nodes = gate.n_experts // experts_per_node
    if x.shape[0] == 0:  # a node may own no token at all (uneven shards)
        k = gate.top_k
        return (torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long),
                torch.zeros(0, n_nodes, dtype=torch.bool))
    weights, indices, _ = gate(x)
    visits = torch.zeros(x.shape[0], n_nodes, dtype=torch.bool)
    visits.scatter_(1, indices // experts_per_node, True)
    return weights, indices, visits


def expected_traffic(case: EPCase) -> dict[str, int]:
    """The bytes that must cross process boundaries for ``case``, computed in ONE process from the gate.

    An independent oracle for the measured counts: every (token, node) pair with the node different from
    the token's owner is one dispatched row of ``d + 2·K_r`` float32 and one combined row of ``d`` float32.
    Returns ``{"remote_rows", "dispatch_bytes", "combine_bytes", "remote_expert_pairs"}``; the last counts
    (token, expert) pairs on other nodes: the rows a dispatch WITHOUT per-node de-duplication would send.
    """
    layer, x = build_layer(case)
    cfg = layer.cfg
    _, indices, visits = route_nodes(layer.gate, x, case.experts_per_node)
    owner = torch.repeat_interleave(torch.arange(case.world_size), torch.tensor(case.tokens_per_rank))
    remote = visits.clone()
    remote[torch.arange(x.shape[0]), owner] = False
    rows = int(remote.sum())
    pairs = int(((indices // case.experts_per_node) != owner[:, None]).sum())
    d, k = cfg.hidden_size, cfg.num_experts_per_tok
    return {"remote_rows": rows, "dispatch_bytes": rows * (d + 2 * k) * BYTES_PER_ELEMENT,
            "combine_bytes": rows * d * BYTES_PER_ELEMENT, "remote_expert_pairs": pairs}


@dataclass
class EPResult:
    """What one distributed run measured (gathered by rank 0).

    Attributes:
        case: the :class:`EPCase`.
        output: ``[n_tokens, d]`` the distributed MoE output, ranks' shards in rank order.
        rows_sent: ``[world, world]`` int64, rows rank i dispatched to rank j (diagonal: stays local).
        nodes_per_token: ``[n_tokens]`` int64, distinct nodes each token reached (its own included).
        dispatch_bytes, combine_bytes: bytes of rows that crossed to another process (float32 payload);
        dispatch_activation_bytes: the hidden-vector part of ``dispatch_bytes`` (the rest is routing
        metadata: K_r weights and K_r local ids per row); count_bytes: the count exchange (int64).
        seconds: rank 0's wall time for route + dispatch + experts + combine (machine-dependent).
        extra: ``remote_expert_pairs`` (token, expert) pairs on another node and ``no_dedup_bytes``, what a
        dispatch sending one row per remote expert (x, its weight and id) plus its combine would move.
    """

    case: EPCase
    output: torch.Tensor
    rows_sent: torch.Tensor
    nodes_per_token: torch.Tensor
    dispatch_bytes: int
    dispatch_activation_bytes: int
    combine_bytes: int
    count_bytes: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def remote_rows(self) -> int:
        """Rows dispatched to another process (each also comes back once in the combine)."""
        return int(self.rows_sent.sum() - self.rows_sent.diagonal().sum())

    @property
    def total_bytes(self) -> int:
        """Dispatch + combine + count exchange bytes that crossed process boundaries."""
        return self.dispatch_bytes + self.combine_bytes + self.count_bytes


# ----------------------------------------------------------------------------------- dispatch and combine
# These pieces are shared with :mod:`dsv3_lessons.tools.distributed_train`, which trains through them: the
# two row exchanges are autograd-aware, so the backward pass runs the same route in reverse.
def all_to_all_rows(rows: torch.Tensor, output_split_sizes: list[int], input_split_sizes: list[int],
                    group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Differentiable ``all_to_all_single`` on dim 0: ``rows [sum(input_split_sizes), ...]`` ->
    ``[sum(output_split_sizes), ...]``; the i-th block of rows goes to rank i.

    Its backward is the same exchange with the split sizes swapped (the gradient of a row travels back
    to the rank the row came from). torch 2.13 deprecates ``torch.distributed.nn.functional``'s version
    and points to this one, the functional collective, whose ``all_to_all_single`` carries autograd.
    """
    out = _fc.all_to_all_single_autograd(rows.contiguous(), list(output_split_sizes), list(input_split_sizes),
                                         group if group is not None else dist.group.WORLD)
    return _fc.wait_tensor(out)


@dataclass
class Dispatch:
    """What one rank's dispatch did: enough to run the combine and to count bytes.

    Attributes:
        token: ``[rows]`` int64, the local token of each dispatched row, rows grouped by destination rank;
        send_counts, recv_counts: ``[world]`` int64, rows this rank sent to / received from each rank
            (its own entry: rows that stay local);
        rows_in: ``[rows_in, d + 2·K_r]`` the received rows ``[x_t | g per slot | local expert id per slot]``;
        assignments_in: (token, expert) pairs among the received rows, i.e. the expert work on this rank.
    """

    token: torch.Tensor
    send_counts: torch.Tensor
    recv_counts: torch.Tensor
    rows_in: torch.Tensor
    assignments_in: int


def dispatch(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, experts_per_rank: int,
             world: int, group: dist.ProcessGroup | None = None) -> Dispatch:
    """Send each token once to every rank hosting one of its experts (V3 §2.1.2 node-limited dispatch).

    Args:
        x: ``[n, d]`` this rank's tokens; weights: ``[n, K_r]`` combine weights g; indices: ``[n, K_r]``
            selected global expert ids (expert e lives on rank ``e // experts_per_rank``).
    One row per (token, destination rank): ``[x_t (d) | g for the K_r slots, 0 where the slot's expert is
    elsewhere (K_r) | local expert id per slot, −1 elsewhere (K_r)]``. Counts go first (plain
    ``all_to_all_single`` on a ``[world]`` int64 vector), then the rows with uneven split sizes through
    :func:`all_to_all_rows`, so gradients reach ``x`` and ``weights`` on the way back.
    """
    n, k = indices.shape
    node = indices // experts_per_rank                                          # [n, K] rank of each slot
    visits = torch.zeros(n, world, dtype=torch.bool, device=x.device)
    visits.scatter_(1, node, True)
    dest, token = visits.T.nonzero(as_tuple=True)                               # sorted by destination
    send_counts = visits.sum(dim=0)                                             # [world] rows to each rank
    on_dest = node[token] == dest[:, None]                                      # [rows, K] slot lives there
    local_ids = torch.where(on_dest, indices[token] - dest[:, None] * experts_per_rank, -1)
    payload = torch.cat([x[token], torch.where(on_dest, weights[token], 0.0).to(x.dtype),
                         local_ids.to(x.dtype)], dim=1)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)               # counts first
    rows_in = all_to_all_rows(payload, recv_counts.tolist(), send_counts.tolist(), group)
    assignments_in = int((rows_in[:, x.shape[1] + k:] >= 0).sum()) if rows_in.numel() else 0
    return Dispatch(token, send_counts, recv_counts, rows_in, assignments_in)


def local_experts(rows_in: torch.Tensor, experts, d: int, k: int) -> torch.Tensor:
    """Each received row's partial sum of V3 eq. 12 over the experts this rank hosts.

    ``rows_in [rows_in, d + 2·K_r]`` as built by :func:`dispatch`; ``experts``: this rank's experts in
    local-id order. Returns ``[rows_in, d]``: Σ over the row's slots on this rank of g·FFN_e(x).

    Every expert runs, even on zero rows: the autograd graph then has the same shape on every rank
    whatever the routing, so every rank reaches the backward exchanges of :func:`dispatch` and
    :func:`combine` in the same order (a rank that skipped one would leave the others waiting, or pair
    their messages with the wrong exchange). An expert without rows gets a zero gradient.
    """
    xr, wr, ids = rows_in[:, :d], rows_in[:, d:d + k], rows_in[:, d + k:].long()
    partial = torch.zeros(rows_in.shape[0], d, dtype=rows_in.dtype, device=rows_in.device)
    for j, ffn in enumerate(experts):
        row, slot = torch.where(ids == j)
        partial = partial.index_add(0, row, ffn(xr[row]) * wr[row, slot, None])
    return partial


def combine(partial: torch.Tensor, sent: Dispatch, n_tokens: int,
            group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Return the partial sums along the reverse route and add them per token: ``[n_tokens, d]``.

    The third exchange swaps :func:`dispatch`'s split sizes; the owner of each token adds what came back
    from every rank it visited (``index_add`` over :attr:`Dispatch.token`).
    """
    back = all_to_all_rows(partial, sent.send_counts.tolist(), sent.recv_counts.tolist(), group)
    out = torch.zeros(n_tokens, partial.shape[1], dtype=partial.dtype, device=partial.device)
    return out.index_add(0, sent.token, back)


# ----------------------------------------------------------------------------------- one rank's MoE layer
def _ep_forward(rank: int, world: int, case: EPCase, state: dict, x_local: torch.Tensor) -> dict:
    """Route, dispatch, run local experts, combine: one rank's part of one MoE layer."""
    cfg = case.config()
    e_per = case.experts_per_node
    gate = Gate(cfg)
    gate.load_state_dict({k[len("gate."):]: v for k, v in state.items() if k.startswith("gate.")})
    local = range(rank * e_per, (rank + 1) * e_per)  # this node hosts only its own experts
    experts = []
    for e in local:
        ffn = SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size)
        ffn.load_state_dict({k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"experts.{e}.")})
        experts.append(ffn)
    shared = SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
    shared.load_state_dict({k[len("shared_experts."):]: v for k, v in state.items()
                            if k.startswith("shared_experts.")})
    d, k = cfg.hidden_size, cfg.num_experts_per_tok
    dist.barrier()
    t0 = time.perf_counter()
    # 1. route
    weights, indices, visits = route_nodes(gate, x_local, e_per)              # [n, K], [n, K], [n, world]
    # 2. one row per (token, destination node), grouped by destination
    sent = dispatch(x_local, weights, indices, e_per, world)
    # 3. local experts: partial sum of eq. 12 over the experts this node hosts
    partial = local_experts(sent.rows_in, experts, d, k)
    # 4. combine: partial sums travel back, the owner adds them and the shared expert
    out = combine(partial, sent, x_local.shape[0]) + shared(x_local)
    seconds = time.perf_counter() - t0
    remote_pairs = int(((indices // e_per) != rank).sum())  # what a per-expert dispatch would send
    return {"output": out, "send_counts": sent.send_counts, "nodes_per_token": visits.sum(dim=1),
            "seconds": seconds, "remote_pairs": remote_pairs}


def _worker(rank: int, world: int, init_file: str, result_file: str, cases: list, states: list,
            inputs: list, timeout_s: float) -> None:
    """Entry point of each spawned process (must live in a module: ``spawn`` pickles it by name)."""
    _write_output_to(_log_path(result_file, rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        gathered = []
        with torch.no_grad():
            for case, state, x in zip(cases, states, inputs):
                offsets = [0]
                for n in case.tokens_per_rank:
                    offsets.append(offsets[-1] + n)
                part = _ep_forward(rank, world, case, state, x[offsets[rank]:offsets[rank + 1]])
                everyone = [None] * world if rank == 0 else None
                dist.gather_object(part, everyone, dst=0)
                gathered.append(everyone)
        if rank == 0:
            torch.save(gathered, result_file)
        dist.barrier()     # every rank done talking before any tears the group down (else gloo may abort a peer)
    finally:
        dist.destroy_process_group()


def _log_path(result_file: str, rank: int) -> str:
    return os.path.join(os.path.dirname(result_file), f"rank{rank}.log")


def _write_output_to(path: str) -> None:
    """Point this process's file descriptors 1 and 2 at ``path`` (Python's prints and C++ messages alike:
    gloo may write to stderr while a group is torn down, and a notebook shows a child's stderr)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def _logs_tail(result_file: str, world: int, chars: int = 1500) -> str:
    parts = []
    for rank in range(world):
        try:
            with open(_log_path(result_file, rank), encoding="utf-8", errors="replace") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text:
            parts.append(f"--- rank {rank} wrote:\n{text[-chars:]}")
    return "\n".join(parts)


class _Collect(logging.Filter):
    """Holds back the records of torch's spawn logger (it warns on stderr when it stops the other children
    after one died); they are shown only if the run fails."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


def _result(case: EPCase, parts: list[dict]) -> EPResult:
    cfg = case.config()
    d, k, world = cfg.hidden_size, cfg.num_experts_per_tok, case.world_size
    rows = torch.stack([p["send_counts"] for p in parts])                      # [world, world]
    remote = int(rows.sum() - rows.diagonal().sum())
    pairs = sum(int(p["remote_pairs"]) for p in parts)
    return EPResult(
        case=case, output=torch.cat([p["output"] for p in parts]), rows_sent=rows,
        nodes_per_token=torch.cat([p["nodes_per_token"] for p in parts]),
        dispatch_bytes=remote * (d + 2 * k) * BYTES_PER_ELEMENT,
        dispatch_activation_bytes=remote * d * BYTES_PER_ELEMENT,
        combine_bytes=remote * d * BYTES_PER_ELEMENT,
        count_bytes=world * (world - 1) * 8,  # each rank sends one int64 count to every other rank
        seconds=float(parts[0]["seconds"]),
        extra={"remote_expert_pairs": pairs,
               # one row per remote (token, expert): x + its weight + its id out, x back
               "no_dedup_bytes": pairs * ((d + 2) + d) * BYTES_PER_ELEMENT})


def run_expert_parallel(cases: Sequence[EPCase], timeout_s: float = 120.0) -> list[EPResult]:
    """Run every case on ``world_size`` spawned gloo processes (one spawn for all cases); return results.

    All cases must share a world size. Costs a few seconds of process start-up (each child imports torch).
    From a plain script, call it under ``if __name__ == "__main__":``: ``spawn`` starts each child by
    importing the script again, and without the guard every child would run the script's top level too.

    Raises:
        ValueError: no case, or cases with different world sizes.
        torch.multiprocessing.ProcessRaisedException: a child failed (its traceback is included).
        torch.multiprocessing.ProcessExitedException: a child was killed by a signal before the results were
            complete (one killed while shutting down, after rank 0 wrote them, does not fail the run).
    """
    import torch.multiprocessing as mp

    if isinstance(cases, EPCase):
        raise TypeError("cases must be a list of EPCase; for one case pass [case]")
    cases = list(cases)
    if not cases:
        raise ValueError("cases must hold at least one EPCase")
    worlds = {c.world_size for c in cases}
    if len(worlds) != 1:
        raise ValueError(f"all cases must have the same number of nodes (len(tokens_per_rank)), got {sorted(worlds)}")
    world = worlds.pop()
    states, inputs = [], []
    for case in cases:
        layer, x = build_layer(case)
        states.append({k: v.clone() for k, v in layer.state_dict().items()})
        inputs.append(x)
    with tempfile.TemporaryDirectory(prefix="dsv3_ep_") as tmp:
        init_file, result_file = os.path.join(tmp, "rendezvous"), os.path.join(tmp, "result.pt")
        spawn_log, held = logging.getLogger("torch.multiprocessing.spawn"), _Collect()
        spawn_log.addFilter(held)
        try:
            mp.start_processes(_worker, args=(world, init_file, result_file, cases, states, inputs, timeout_s),
                               nprocs=world, join=True, start_method="spawn")
        except mp.ProcessExitedException as exited:
            # A worker killed by a signal. Rank 0 writes the results only after every rank's part has arrived, so
            # when they are there the computation is complete and the signal came while a process tore gloo down
            # (seen about once in 25 runs before the barrier in _worker): keep them. Otherwise re-raise.
            try:
                gathered = torch.load(result_file, weights_only=False)
            except Exception:
                raise _with_logs(exited, held.messages, _logs_tail(result_file, world)) from None
        except mp.ProcessRaisedException as raised:
            raise _with_logs(raised, held.messages, _logs_tail(result_file, world)) from None
        else:
            gathered = torch.load(result_file, weights_only=False)
        finally:
            spawn_log.removeFilter(held)
    return [_result(case, parts) for case, parts in zip(cases, gathered)]


def _with_logs(exc: Exception, messages: list[str], logs: str) -> Exception:
    """``exc`` with the spawn logger's held-back messages and the children's logs added to its message."""
    extra = "\n".join(messages + ([logs] if logs else []))
    if extra:
        exc.args = (f"{exc.args[0] if exc.args else ''}\n{extra}",) + tuple(exc.args[1:])
    return exc


def node_limit_sweep(seed: int = 0, tokens_per_rank: tuple[int, ...] = (40, 64, 17, 90),
                     skew: float = 0.05) -> list[EPCase]:
    """Cases M = 1 .. n_nodes (the last one = no limit) on the same layer and tokens."""
    n = len(tokens_per_rank)
    return [EPCase(seed, tuple(tokens_per_rank), m if m < n else None, skew) for m in range(1, n + 1)]

