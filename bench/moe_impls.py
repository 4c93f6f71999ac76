"""Routed-expert implementations at the course sizes: forward + backward time of each, side by side.

Usage::

    python bench/moe_impls.py                      # 2048 tokens, d=64, expert width 64, 8 experts, K_r=2
    python bench/moe_impls.py 2048 64 32 16 4      # tokens d width experts K_r
    python bench/moe_impls.py --threads 1 --clock process

Four ways to compute Σ_i g_{i,t} FFN_i(u_t) over the selected experts (all checked equal to the loop first):

* ``loop``    -- one iteration per expert: gather its tokens, SwiGLU, ``index_add`` (the reference path);
* ``dense``   -- every expert on every token in one concatenated matmul, unselected experts masked by a
  zero combine weight (N_r/K_r times the FLOPs, three big kernels);
* ``padded``  -- assignments sorted by expert, scattered into a zero-padded [N_r, max_load, d] buffer,
  two ``torch.bmm``;
* ``grouped`` -- assignments sorted by expert, two ``F.grouped_mm`` over the jagged slices (what
  :class:`dsv3_lessons.model.moe.DeepseekMoE` uses).

The expert weights are ``torch.stack``-ed at every call, as in the model, so the gradients reach each
expert's own parameter. Prints the median and minimum over repeated, interleaved calls.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sizes", nargs="*", type=int, default=[2048, 64, 64, 8, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "process"), default="wall")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    n, d, width, n_exp, k = args.sizes
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.manual_seed(0)
    x = torch.randn(n, d, requires_grad=True)
    w_gate = [torch.nn.Parameter(torch.randn(width, d) / d ** 0.5) for _ in range(n_exp)]
    w_up = [torch.nn.Parameter(torch.randn(width, d) / d ** 0.5) for _ in range(n_exp)]
    w_down = [torch.nn.Parameter(torch.randn(d, width) / width ** 0.5) for _ in range(n_exp)]
    idx = torch.randn(n, n_exp).topk(k, -1).indices
    g = torch.rand(n, k, requires_grad=True)

    def loop():
        out = torch.zeros_like(x)
        for e in range(n_exp):
            t, s = torch.where(idx == e)
            h = F.silu(F.linear(x[t], w_gate[e])) * F.linear(x[t], w_up[e])
            out = out.index_add(0, t, F.linear(h, w_down[e]) * g[t, s, None])
        return out

    def dense():
        w_gu = torch.cat([torch.stack(w_gate), torch.stack(w_up)], 1).reshape(n_exp * 2 * width, d)
        h = (x @ w_gu.T).view(n, n_exp, 2, width)
        comb = torch.zeros(n, n_exp).scatter(1, idx, g)
        a = F.silu(h[:, :, 0]) * h[:, :, 1] * comb[:, :, None]
        return a.reshape(n, n_exp * width) @ torch.stack(w_down).permute(0, 2, 1).reshape(n_exp * width, d)

    def sort():
        flat = idx.flatten()
        order = flat.argsort(stable=True)
        return flat, order, torch.bincount(flat, minlength=n_exp), order // k

    def padded():
        flat, order, counts, tok = sort()
        cap = int(counts.max())
        pos = torch.arange(n * k) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
        slot = flat[order] * cap + pos
        xs = x.new_zeros(n_exp * cap, d).index_copy(0, slot, x[tok]).view(n_exp, cap, d)
        h = torch.bmm(xs, torch.cat([torch.stack(w_gate), torch.stack(w_up)], 1).transpose(1, 2))
        gg, uu = h.split(width, -1)
        y = torch.bmm(F.silu(gg) * uu, torch.stack(w_down).transpose(1, 2)).reshape(n_exp * cap, d)[slot]
        return torch.zeros_like(x).index_add(0, tok, y * g.flatten()[order, None])

    def grouped():
        flat, order, counts, tok = sort()
        offs = torch.cumsum(counts, 0).to(torch.int32)
        w_gu = torch.cat([torch.stack(w_gate), torch.stack(w_up)], 1)
        gg, uu = F.grouped_mm(x[tok], w_gu.transpose(1, 2), offs=offs).split(width, -1)
        y = F.grouped_mm(F.silu(gg) * uu, torch.stack(w_down).transpose(1, 2), offs=offs)
        return torch.zeros_like(x).index_add(0, tok, y * g.flatten()[order, None])

    fns = {"loop": loop, "dense": dense, "padded": padded, "grouped": grouped}
    ref = loop()
    for name, fn in fns.items():
        err = (fn() - ref).abs().max().item()
        assert err < 1e-4, (name, err)
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn().square().sum().backward()
            times[name].append(clock() - t0)
    base = statistics.median(times["loop"])
    print(f"{n} tokens, d={d}, expert width {width}, {n_exp} experts, K_r={k}; {args.threads} thread(s), "
          f"{args.clock} clock; forward + backward")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:8s} median {med * 1e3:7.2f} ms  min {min(ts) * 1e3:7.2f} ms  loop/this {base / med:5.2f}x")


if __name__ == "__main__":
    main()
