"""Decoding on the latent cache (dsv3_lessons.tools.generate).

Oracles: the no-cache reference decoder (full forward at every step) and a single teacher-forced
forward over the finished sequence, whose logits at positions T−1 … must equal the logits each
cached step picked from. Weights are scaled up so logits are well separated (a wrong cache shows up
as an O(1) difference, not a tie).
"""
from __future__ import annotations

import math

import pytest
import torch

from dsv3_lessons import tiny
from dsv3_lessons.tools.data import CharTokenizer
from dsv3_lessons.tools.generate import generate, generate_no_cache, generate_text, sample_next
from dsv3_lessons.model.deepseek_v3 import DeepSeekV3

V = 20


@pytest.fixture(scope="module")
def model() -> DeepSeekV3:
    torch.manual_seed(0)
    m = DeepSeekV3(tiny(vocab_size=V, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
                        num_attention_heads=2, num_key_value_heads=2, q_lora_rank=24, kv_lora_rank=16,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for name, b in m.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return m.eval()


def test_cached_greedy_equals_uncached_greedy(model):
    prompt = torch.randint(V, (2, 5), generator=torch.Generator().manual_seed(2))
    n = 70  # runs past original_max_position_embeddings = 64 of the tiny YaRN config
    ids_c, logits_c = generate(model, prompt, n, return_logits=True)
    ids_r, logits_r = generate_no_cache(model, prompt, n, return_logits=True)
    assert ids_c.shape == (2, 5 + n) and torch.equal(ids_c[:, :5], prompt)
    assert torch.equal(ids_c, ids_r)
    assert torch.allclose(logits_c, logits_r, atol=1e-4)
    # teacher forcing: one forward over the finished sequence reproduces every step's logits
    with torch.no_grad():
        full = model(ids_c[:, :-1]).logits[:, 4:]
    assert torch.allclose(logits_c, full, atol=1e-4)
    assert torch.equal(logits_c.argmax(-1), ids_c[:, 5:])
    assert logits_c.std() > 0.5                                 # non-trivial logits: the check has teeth


def test_sampling_is_reproducible_with_a_seed(model):
    prompt = [3, 1, 4]
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=7)
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    c = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # top_k = 1 sampling is greedy whatever the temperature
    assert torch.equal(generate(model, prompt, 10, temperature=2.0, top_k=1, seed=0), generate(model, prompt, 10))


def test_sample_next_respects_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0]]).repeat(2000, 1)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {1, 3}
    # frequencies follow softmax over the kept logits: p(1) = e^3 / (e^3 + e^2.5)
    p1 = math.exp(3) / (math.exp(3) + math.exp(2.5))
    assert abs((picks == 1).float().mean().item() - p1) < 0.04
    assert torch.equal(sample_next(logits[:2], 0.0), torch.tensor([1, 1]))


def test_generate_text_and_mode_restored(model):
    tok = CharTokenizer([chr(ord("a") + i) for i in range(V)])
    model.train()
    try:
        out = generate_text(model, tok, "abc", 6)
        assert model.training
    finally:
        model.eval()
    assert out.startswith("abc") and len(out) == 9
    assert torch.equal(generate(model, [1, 2], 0), torch.tensor([[1, 2]]))


def test_errors(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, CharTokenizer("ab"), "", 3)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 256"):
        generate(model, [1] * 200, 57)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        generate_no_cache(model, [1] * 250, 10)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1], 2, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1], 2, temperature=1.0, top_k=V + 1)
    with pytest.raises(ValueError, match="either seed or generator"):
        generate(model, [1], 2, temperature=1.0, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match=r"\[seq\] or \[batch, seq\]"):
        generate(model, torch.zeros(1, 1, 2, dtype=torch.long), 1)


def test_next_token_probs_is_the_distribution_sample_next_draws_from():
    from dsv3_lessons.tools.generate import next_token_probs, sample_next

    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    one_hot = next_token_probs(logits, 0.0)
    assert one_hot.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    p = next_token_probs(logits, 0.5, top_k=2)
    e = torch.exp(torch.tensor([2.0, 1.0]) / 0.5)                   # closed form over the top 2
    torch.testing.assert_close(p[0], torch.cat([e / e.sum(), torch.zeros(2)]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 0.5, 2, g) for _ in range(4000)]).flatten()
    assert abs((draws == 0).float().mean().item() - float(p[0, 0])) < 0.03
    with pytest.raises(ValueError, match="temperature"):
        next_token_probs(logits, -1.0)
