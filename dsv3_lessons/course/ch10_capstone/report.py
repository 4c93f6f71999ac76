"""The report card of a trained tiny DeepSeek-V3: one number per mechanism the course built.

What each line measures (the notebook computes each in its own cell; :func:`report_card` does all of them for
``bench/capstone.py``):

* **validation loss** (nats/char) on :data:`~.runs.FINAL_EVAL` held-out windows;
* **tokens/s** of training (input tokens over training seconds; depends on the machine);
* **parameters**, total and activated per token (:func:`~dsv3_lessons.model.config.count_parameters`, MTP apart);
* **KV-cache bytes per token**, measured on the latent caches after a prefill
  (:attr:`~dsv3_lessons.model.mla.LatentCache.nbytes_used`), against multi-head attention of the same shape
  (n_h heads of d_h + d_h^R keys and d_v values, :func:`dsv3_lessons.course.ch02_mla.mha_cost`);
* **MaxVio** (LF paper §4.1) of the training batches: first and last tenth of training;
* **MTP acceptance**: speculative decoding with the MTP module as a 1-token draft on held-out prompts
  (:func:`~dsv3_lessons.tools.speculative.speculative_generate`): acceptance of the draft, tokens per main-model
  forward, and whether the output equals greedy decoding token for token;
* **FP8**: the validation loss of the same weights run through FP8 fake-quant linears
  (:func:`~dsv3_lessons.model.fp8.convert_linears_to_fp8`, E4M3, 1×128 tiles, 128×128 blocks), minus the FP32 one.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

from dsv3_lessons.model import DeepSeekV3, count_parameters
from dsv3_lessons.model.fp8 import convert_linears_to_fp8
from dsv3_lessons.tools.generate import generate
from dsv3_lessons.tools.speculative import speculative_generate
from dsv3_lessons.tools.train import evaluate
from dsv3_lessons.course.ch02_mla import mha_cost
from dsv3_lessons.course.ch08_speculative import held_out_prompts
from dsv3_lessons.course.ch10_capstone.runs import FINAL_EVAL

__all__ = ["ReportCard", "kv_bytes_per_token", "mtp_acceptance", "fp8_loss_change", "max_vio_ends", "report_card"]


@dataclass(frozen=True)
class ReportCard:
    """The numbers of :func:`report_card` (units in the field names; see the module docstring)."""

    steps: int
    val_loss: float
    tokens_per_s: float
    params_total: int
    params_activated: int
    params_mtp: int
    kv_bytes_per_token: float
    mha_bytes_per_token: int
    max_vio_first: float
    max_vio_last: float
    mtp_acceptance: float
    tokens_per_forward: float
    spec_equals_greedy: bool
    fp8_val_loss: float

    @property
    def fp8_change(self) -> float:
        """(FP8 − FP32) / FP32 validation loss."""
        return (self.fp8_val_loss - self.val_loss) / self.val_loss

    def lines(self) -> list[str]:
        """The card as printable lines (the bench prints these)."""
        return [
            f"validation loss            {self.val_loss:.4f} nats/char after {self.steps} steps",
            f"training speed             {self.tokens_per_s:,.0f} tokens/s (this machine)",
            f"parameters                 {self.params_total:,} total, {self.params_activated:,} activated per token "
            f"(+ {self.params_mtp:,} in the MTP module)",
            f"KV cache per token         {self.kv_bytes_per_token:,.0f} B (latent c^KV + k^R, fp32) vs "
            f"{self.mha_bytes_per_token:,} B for MHA of the same shape ({self.mha_bytes_per_token / self.kv_bytes_per_token:.1f}x)",
            f"MaxVio of training batches {self.max_vio_first:.2f} (first tenth) -> {self.max_vio_last:.2f} (last tenth)",
            f"MTP draft acceptance       {self.mtp_acceptance:.1%}, {self.tokens_per_forward:.2f} tokens per main "
            f"forward; equal to greedy: {self.spec_equals_greedy}",
            f"FP8 fake-quant loss change {self.fp8_change:+.2%} ({self.val_loss:.4f} -> {self.fp8_val_loss:.4f})",
        ]

    def as_dict(self) -> dict:
        return {**asdict(self), "fp8_change": self.fp8_change}


@torch.no_grad()
def kv_bytes_per_token(model, prompt: torch.Tensor) -> float:
    """Bytes the latent caches of all layers hold per token after a prefill of ``prompt [1, T]`` (measured)."""
    cache = model.new_cache(1, prompt.shape[1])
    model.eval()(prompt, cache=cache)
    return sum(c.nbytes_used for c in cache) / prompt.shape[1]


@torch.no_grad()
def mtp_acceptance(model, prompts: list[torch.Tensor], max_new_tokens: int = 48, k: int = 1) -> dict:
    """Greedy speculative decoding with the MTP draft over ``prompts``: acceptance of draft position 1,
    tokens per main-model forward (all prompts together) and whether every output equals plain greedy."""
    accepted = verify = new = forwards = 0
    equal = True
    for p in prompts:
        spec, st = speculative_generate(model, p, max_new_tokens, k=k)
        equal &= torch.equal(spec, generate(model, p, max_new_tokens))
        accepted += sum(m >= 1 for m in st.accepted_per_step)
        verify += st.verify_steps
        new += st.new_tokens
        forwards += st.main_forwards
    return {"acceptance": accepted / verify, "tokens_per_forward": new / forwards, "equal": bool(equal)}


def fp8_loss_change(model, data) -> tuple[float, float]:
    """(FP32 validation loss, the same weights' loss with FP8 fake-quant linears) on :data:`FINAL_EVAL`."""
    q = DeepSeekV3(model.cfg)                      # a fresh copy (deepcopy refuses the last forward's aux_loss)
    q.load_state_dict(model.state_dict())
    convert_linears_to_fp8(q)
    return evaluate(model, data, **FINAL_EVAL), evaluate(q, data, **FINAL_EVAL)


def max_vio_ends(max_vio: list[float]) -> tuple[float, float]:
    """Mean batch MaxVio over the first and the last tenth of training (at least one step each)."""
    n = max(1, len(max_vio) // 10)
    return statistics.fmean(max_vio[:n]), statistics.fmean(max_vio[-n:])


def report_card(model, data, hist, n_prompts: int = 4, max_new_tokens: int = 48) -> ReportCard:
    """All lines of the card for a trained ``model`` and its training :class:`~dsv3_lessons.tools.train.History`."""
    cfg = model.cfg
    counts = count_parameters(cfg)
    prompts = held_out_prompts(data, n_prompts, 32)
    kv = kv_bytes_per_token(model, prompts[0])
    mha = mha_cost(cfg, bytes_per_element=4).cache_bytes_per_token
    first, last = max_vio_ends(hist.max_vio)
    acc = mtp_acceptance(model, prompts, max_new_tokens)
    val, val8 = fp8_loss_change(model, data)
    return ReportCard(hist.steps_done, val, hist.tokens_per_second, counts.total, counts.activated, counts.mtp,
                      kv, mha, first, last, acc["acceptance"], acc["tokens_per_forward"], acc["equal"], val8)
