"""The routing snapshot: what chapter 5 needs from a trained model, small enough to store in data/moe_runs/."""
from __future__ import annotations

from pathlib import Path

import torch

from dsv3_lessons.model import DeepSeekV3

__all__ = ["RUNS_DIR", "SNAPSHOT_FILE", "routing_snapshot", "load_snapshot"]

RUNS_DIR = Path(__file__).resolve().parents[3] / "data" / "moe_runs"
SNAPSHOT_FILE = "routing_snapshot.pt"
COMMAND = "python -m dsv3_lessons.course.ch06_balancing"


# ----------------------------------------------------------------------------------- routing snapshot
@torch.no_grad()
def routing_snapshot(model: DeepSeekV3, data, passages: int = 6, passage_len: int = 64, sample_batches: int = 4,
                     seed: int = 99) -> dict:
    """What chapter 5 needs from a trained model, small enough to store.

    * ``passages``: held-out text windows, their ids ``[P, T]`` and every MoE layer's gate INPUT
      ``u [P, T, d]`` (captured with a forward hook), so the chapter routes real hidden states;
    * ``gates``: each main MoE layer's ``weight [N_r, d]`` and bias ``[N_r]``;
    * ``sample_ids [n]`` / ``sample_experts [n_layers, n, K_r]``: the experts chosen for ``n`` held-out
      tokens (specialisation statistics);
    * ``sample_scores [n_layers, n, N_r]``: their unbiased sigmoid scores (chapter 6 re-simulates the bias on them);
    * ``config`` (dict), ``chars`` (tokenizer), ``layer_names``.
    """
    model.eval()
    moes = model.moe_layers()
    names = [n for n, m in model.named_modules() if any(m is x for x in moes)]
    gen = torch.Generator().manual_seed(seed)
    captured: list[list[torch.Tensor]] = [[] for _ in moes]
    routed: list[list[tuple]] = [[] for _ in moes]
    hooks = []
    for i, m in enumerate(moes):
        def grab(gate, inp, out, i=i) -> None:  # returns None: a hook's return value would replace the output
            captured[i].append(inp[0].detach().clone())
            routed[i].append(out)

        hooks.append(m.gate.register_forward_hook(grab))
    try:
        ids, _ = data.get_batch("val", passages, passage_len, generator=gen)
        model(ids)
        u = torch.stack([torch.cat(c).view(passages, passage_len, -1) for c in captured])
        for c in captured + routed:
            c.clear()
        sample = []
        for _ in range(sample_batches):
            x, _ = data.get_batch("val", 16, passage_len, generator=gen)
            model(x)
            sample.append(x.reshape(-1))
        experts = torch.stack([torch.cat([r[1] for r in rs]) for rs in routed])
        scores = torch.stack([torch.cat([r[2] for r in rs]) for rs in routed])
    finally:
        for h in hooks:
            h.remove()
    tok = data.tokenizer
    return {"config": model.cfg.to_dict(), "chars": tok.chars, "layer_names": names,
            "passage_ids": ids.to(torch.int16), "passage_text": [tok.decode(row) for row in ids], "gate_inputs": u,
            "gate_weight": torch.stack([m.gate.weight.detach().clone() for m in moes]),
            "gate_bias": torch.stack([m.gate.e_score_correction_bias.clone() for m in moes]),
            "sample_ids": torch.cat(sample).to(torch.int16), "sample_experts": experts.to(torch.int16),
            "sample_scores": scores.to(torch.float16)}  # half the bytes; only re-simulated on


def load_snapshot(path: str | Path | None = None, which: str = "trained") -> dict:
    """Read ``routing_snapshot.pt`` (see :func:`routing_snapshot`); ``which`` is ``"trained"`` (the V3-recipe
    run) or ``"unbalanced"`` (the no-balancing run). Raises FileNotFoundError naming the regenerating command."""
    path = Path(path) if path is not None else RUNS_DIR / SNAPSHOT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: regenerate it with `{COMMAND}` (a few minutes on 2 cores)")
    both = torch.load(path, weights_only=True)
    if which not in both:
        raise ValueError(f"which must be one of {sorted(both)}, got {which!r}")
    return both[which]
