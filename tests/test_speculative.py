"""Speculative decoding with the MTP draft: exactness (greedy == plain greedy), cache rollback == fresh
prefill, the hidden state handed between draft steps, acceptance accounting, and the sampling rule's
output distribution. Oracles: plain greedy decoding, fresh prefills, closed-form Σ min(p, q), exact
marginals computed from full forwards, chi-square bounds."""
import math

import pytest
import torch

from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.model.mla import LatentCache
from dsv3_lessons.tools.generate import generate, next_token_probs
from dsv3_lessons.tools.speculative import (MTPDrafter, SpeculativeDecoder, SpeculativeStats, accept_or_resample,
                                            acceptance_probability, residual_distribution, speculative_generate)

V = 5   # a small vocabulary: even an untrained draft agrees often, so partial accepts happen


def build(seed=0, vocab=V, **cfg):
    torch.manual_seed(seed)
    return DeepSeekV3(tiny(vocab_size=vocab, **cfg)).eval()


@pytest.fixture(scope="module")
def model():
    return build()


# ------------------------------------------------------------------------------------------ greedy exactness
@pytest.mark.parametrize("k", [1, 2, 4])
def test_greedy_speculative_equals_plain_greedy(model, k):
    accepted_some = False
    for seed in range(3):
        prompt = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(seed))
        ref = generate(model, prompt, 30)
        out, stats = speculative_generate(model, prompt, 30, k=k)
        assert torch.equal(out, ref)
        assert stats.new_tokens == 30
        accepted_some |= any(m > 0 for m in stats.accepted_per_step)
        assert any(m < d for m, d in zip(stats.accepted_per_step, stats.drafted_per_step))   # rejections too
    assert accepted_some


def test_state_after_every_step_equals_a_fresh_prefill(model):
    """Force every accept length m = 0 … k (drafts copied from plain greedy up to a planted error) and
    compare both caches and the next draft with a fresh prefill of the accepted sequence."""
    k = 3
    prompt = torch.randint(0, V, (1, 5), generator=torch.Generator().manual_seed(11))
    ref = generate(model, prompt, 40)[0].tolist()
    with torch.no_grad():
        dec = SpeculativeDecoder(model, prompt, 64, k=k)
        real_draft = dec.draft

        def planted(ks, m):                                             # the module drafts (and fills its cache),
            real_draft(ks)                                              # then the first m drafts are made right
            pos = len(dec.tokens)
            drafts = ref[pos:pos + ks]
            if m < ks:
                drafts[m] = (drafts[m] + 1) % V                         # and draft m+1 wrong
            return drafts, [None] * ks

        for m in [0, 1, 2, 3, 1, 0, 2]:
            dec.draft = lambda ks, m=m: planted(ks, m)
            dec.step()
            assert dec.last_step["accepted"] == m
            assert dec.tokens == ref[:len(dec.tokens)]
            toks = torch.tensor([dec.tokens])
            n = toks.shape[1] - 1                                       # x_n is not in the main cache yet
            fresh = model.new_cache(1, 64)
            out = model(toks[:, :n], cache=fresh)
            for got, want in zip(dec.cache, fresh):
                assert got.length == want.length == n
                torch.testing.assert_close(got.kv[:, :n], want.kv[:, :n], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(got.k_pe[:, :n], want.k_pe[:, :n], rtol=1e-5, atol=1e-5)
            drafter = MTPDrafter(model, 64)                             # a fresh MTP prefill of the same text
            q_ref, handed_ref = drafter.feed(out.hidden, toks[:, 1:])
            assert dec.drafter.length == drafter.length == n
            torch.testing.assert_close(dec.drafter.cache.kv[:, :n], drafter.cache.kv[:, :n], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(dec.q_logits, q_ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(dec.handed, handed_ref, rtol=1e-4, atol=1e-5)


def test_truncate_rolls_back_and_rejects_bad_lengths():
    cache = LatentCache(1, 8, 4, 2)
    cache.append(torch.ones(1, 5, 4), torch.ones(1, 5, 2))
    cache.truncate(3)
    kv, _ = cache.append(torch.full((1, 2, 4), 7.0), torch.zeros(1, 2, 2))
    assert cache.length == 5 and kv[0, 3:, 0].tolist() == [7.0, 7.0] and kv[0, :3, 0].tolist() == [1.0] * 3
    for bad in (6, -1, 2.0, True):
        with pytest.raises(ValueError, match="length"):
            cache.truncate(bad)


# ------------------------------------------------------------------------------------------ the draft chain
def test_first_draft_is_the_training_time_mtp_prediction(model):
    ids = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        train_view = model(ids, compute_mtp=True).mtp_logits[0]        # depth 1 as trained, [1, 8, V]
        out = model(ids[:, :8])
        drafter = MTPDrafter(model, 16)
        q, _ = drafter.feed(out.hidden, ids[:, 1:])                   # h^0 after the final norm + Emb(t_{i+1})
    torch.testing.assert_close(q, train_view[:, -1], rtol=1e-5, atol=1e-5)


def test_hidden_handed_to_the_next_draft_step_is_the_normalised_head_input(model):
    """Step j+1 reads shared_head.norm(h^1) of step j: the state lm_head read for draft j, the same role
    h^0 (after model.norm) plays for the main model -- what the module was trained on."""
    ids = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(4))
    module = model.mtp[0]
    seen = []
    handle = module.hnorm.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].clone()))
    try:
        with torch.no_grad():
            dec = SpeculativeDecoder(model, ids, 32, k=3)
            h1_outputs = []
            out_hook = module.register_forward_hook(lambda mod, inp, out: h1_outputs.append(out.clone()))
            seen.clear()
            drafts, _ = dec.draft(3)
            out_hook.remove()
    finally:
        handle.remove()
    assert len(seen) == 2 and len(h1_outputs) == 2                      # steps 2 and 3 ran the module
    with torch.no_grad():
        assert torch.equal(seen[0], dec.handed)                         # step 2 read step 1's handed state ...
        torch.testing.assert_close(model.lm_head(seen[0])[:, -1], dec.q_logits)   # ... the one draft 1 came from
        torch.testing.assert_close(seen[1], module.shared_head.norm(h1_outputs[0]))  # step 3 read step 2's
        assert not torch.allclose(seen[1], h1_outputs[0])              # not the un-normalised block output
        assert int(model.lm_head(seen[1])[0, -1].argmax()) == drafts[1]


# ------------------------------------------------------------------------------------------ accounting
def test_acceptance_accounting_identities():
    st = SpeculativeStats(k=2, new_tokens=10, main_forwards=5, accepted_per_step=[0, 1, 2, 2],
                          drafted_per_step=[2, 2, 2, 2])
    assert st.acceptance_rates == [0.75, 0.5]
    assert st.mean_accepted_length == 2.25 == sum(m + 1 for m in st.accepted_per_step) / 4
    assert st.tokens_per_forward == 2.0
    assert st.conditional_rates == [0.75, 2 / 3]


@pytest.mark.parametrize("k", [1, 3])
def test_run_statistics_add_up(model, k):
    prompt = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(5))
    out, st = speculative_generate(model, prompt, 25, k=k)
    assert st.new_tokens == 25 == 1 + sum(m + 1 for m in st.accepted_per_step)   # prefill emits one
    assert st.main_forwards == 1 + st.verify_steps
    assert math.isclose(st.mean_accepted_length, 1 + sum(st.acceptance_rates))
    assert math.isclose(st.tokens_per_forward, 25 / st.main_forwards)
    assert all(d <= k for d in st.drafted_per_step)


# ------------------------------------------------------------------------------------------ the sampling rule
def test_toy_acceptance_rate_is_070_and_the_output_follows_p():
    p, q = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.3, 0.6, 0.1])
    assert math.isclose(acceptance_probability(p, q), 0.70, abs_tol=1e-6)
    torch.testing.assert_close(residual_distribution(p, q), torch.tensor([1.0, 0.0, 0.0]))
    g = torch.Generator().manual_seed(0)
    n, accepted = 20000, 0
    counts = torch.zeros(3)
    for _ in range(n):
        d = int(torch.multinomial(q, 1, generator=g))
        ok, repl = accept_or_resample(p, q, d, g)
        accepted += ok
        counts[d if ok else repl] += 1
    assert abs(accepted / n - 0.70) < 4 * math.sqrt(0.21 / n)           # 4 standard errors
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 13.8                                                  # χ²(2 dof) 99.9 % quantile
    assert float(((n * q - n * p) ** 2 / (n * p)).sum()) > 1000          # keeping every draft would fail


def test_sampled_speculative_decoding_keeps_the_models_distribution():
    """Marginal of the 2nd new token (the first one a draft can supply) vs its exact value from the model."""
    model = build(7, vocab=4)
    prompt = torch.tensor([[1, 2, 0]])
    temp = 1.0
    with torch.no_grad():
        p1 = next_token_probs(model(prompt).logits[0, -1], temp)
        exact = sum(p1[a] * next_token_probs(model(torch.cat([prompt, torch.tensor([[a]])], 1)).logits[0, -1], temp)
                    for a in range(4))
    g = torch.Generator().manual_seed(1)
    n = 400
    counts = torch.zeros(4)
    accepted = 0
    for _ in range(n):
        out, st = speculative_generate(model, prompt, 3, k=1, temperature=temp, generator=g)
        counts[out[0, 4]] += 1                                          # verified: a kept draft or its correction
        accepted += st.accepted_per_step[0]
    chi2 = float(((counts - n * exact) ** 2 / (n * exact)).sum())
    assert chi2 < 16.3                                                  # χ²(3 dof) 99.9 % quantile
    assert 0 < accepted < n                                             # both branches of the rule ran


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="k"):
        speculative_generate(model, [1, 2], 5, k=0)
    with pytest.raises(ValueError, match="one sequence"):
        speculative_generate(model, torch.zeros(2, 3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="MTP"):
        speculative_generate(build(num_nextn_predict_layers=0), [1, 2], 5)
    with pytest.raises(ValueError, match="draft"):
        accept_or_resample(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="sum to 1"):
        acceptance_probability(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5]))


# chapter 8's exercise checkers: tests/test_exercises_ch08.py


# ------------------------------------------------------------------------------------------ widget
def _Tok():                                                           # the 5-letter vocabulary of the tiny model
    from dsv3_lessons.tools.data import CharTokenizer
    return CharTokenizer("abcde")


def test_widget_reports_and_reacts(model):
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    w = SpeculativeWidget(model, _Tok(), prompt="abcab", max_new_tokens=12)
    r = w.last_result
    assert len(r["acceptance_rates"]) == 1 and r["tokens_per_forward"] >= 1.0 and len(r["text"]) == 12
    assert r["tokens_per_forward"] == r["new_tokens"] / r["main_forwards"] and r["plain_forwards"] == 12
    w.k.value = 3
    assert len(w.last_result["acceptance_rates"]) == 3
    assert abs(w.last_result["mean_accepted_length"] - 1 - sum(w.last_result["acceptance_rates"])) < 1e-9
    assert w.image.value[:4] == b"\x89PNG" and "new tokens per main forward" in w.readout.value
    assert "speed-up" not in w.readout.value and "tokens/s" not in w.readout.value   # no load-dependent number
    assert w.status.value == ""                                      # the busy line is cleared after a decode
    assert ("abcab", 0.0, 3) in w.cache and len(w.cache) == 2


def test_widget_tags_only_its_inputs_for_the_page(model):
    """The prompt limits and the busy line are HTML a learner reads: the browser suite drives every element tagged
    dsv3-control-*, and it failed on 'limits' ("no way to drive a HTML") before display-only text was left out."""
    import ipywidgets
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    w = SpeculativeWidget(model, _Tok(), prompt="abcab", max_new_tokens=12)
    tagged = {c for part in vars(w).values() if isinstance(part, ipywidgets.Widget)
              for c in part._dom_classes if c.startswith("dsv3-control-")}
    assert tagged == {"dsv3-control-prompt", "dsv3-control-temperature", "dsv3-control-k"}
    assert list(w.controls) == ["prompt", "temperature", "k"]
    before = w.readout.value
    w.prompt.value = "bcab"              # the readout names the prompt, so a new prompt always shows, even when
    assert "continuation of &#x27;bcab&#x27;" in w.readout.value or "continuation of 'bcab'" in w.readout.value
    assert w.readout.value != before     # a briefly trained model continues two prompts with the same text


def test_widget_caches_settings_and_gives_the_same_numbers_again(model):
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    w = SpeculativeWidget(model, _Tok(), prompt="abcab", max_new_tokens=12)
    first = w.last_result
    w.k.value = 2
    w.k.value = 1
    assert w.last_result is first                                     # cached, not decoded again
    calls = []
    w.cache.clear()
    import dsv3_lessons.course.ch08_speculative.widget as wmod
    original = wmod.speculative_report
    wmod.speculative_report = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        w.temperature.value = 0.5
        w.temperature.value = 0.0
        w.temperature.value = 0.5
    finally:
        wmod.speculative_report = original
    assert len(calls) == 2 and w.last_result == w.cache[("abcab", 0.5, 1)]


def test_rejected_prompt_greys_the_figure_and_states_the_limits(model):
    """Browser review item 6: a rejected prompt left the previous prompt's bars on screen, and the limits were not
    stated next to the box."""
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    w = SpeculativeWidget(model, _Tok(), prompt="abcab", max_new_tokens=12)
    good_png = w.image.value
    with pytest.raises(ValueError, match="prompt is empty"):
        w.prompt.value = ""
    assert "error" in w.readout.value and w.image.value != good_png
    fig = w.figure
    assert not any(b.get_visible() for b in fig.axes[0].patches)      # no stale acceptance bars
    assert any(t.get_visible() and "no result" in t.get_text() for t in fig.texts)
    positions = model.cfg.max_position_embeddings
    with pytest.raises(ValueError, match="exceeds|max_position"):
        w.prompt.value = "a" * (positions - 12 + 1)
    assert f"≤ {positions - 12} characters" in w.limits.value and "5-character vocabulary" in w.limits.value
    w.prompt.value = "abcab"
    assert w.last_error is None and all(t.get_visible() is False for t in fig.texts if "no result" in t.get_text())
    assert w.image.value == good_png                                 # same setting: same counts, same figure


@pytest.mark.parametrize("prompt", ["a", "abcab" * 3])
@pytest.mark.parametrize("temperature", [0.0, 1.5])
@pytest.mark.parametrize("k", [1, 4])
def test_corners_give_finite_numbers(model, prompt, temperature, k):
    """Robustness sweep (issue 18): every min/max corner of the controls, plain function and widget."""
    import math

    from dsv3_lessons.course.ch08_speculative.experiments import speculative_report
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    r = speculative_report(model, _Tok(), prompt, temperature, k, 12)
    assert all(math.isfinite(x) and 0 <= x <= 1 for x in r["acceptance_rates"]) and len(r["acceptance_rates"]) == k
    assert 1.0 <= r["tokens_per_forward"] <= k + 1 and len(r["text"]) == 12
    w = SpeculativeWidget(model, _Tok(), prompt=prompt, temperature=temperature, k=k, max_new_tokens=12)
    assert w.last_error is None and w.last_result == r


# ------------------------------------------------------------------------------------------ figure
def test_step_figure_legend_matches_boxes_and_shows_rollback():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dsv3_lessons.course.ch08_speculative.figures import draw_speculative_step

    dg = draw_speculative_step(list("the "), "c", ["a", "x", "y"], ["a", "t", "u", "v"])   # d_2 rejected
    handles = dg.ax.get_legend().legend_handles
    faces = [tuple(h.get_facecolor()) for h in handles]
    assert len(faces) == len(set(faces)) == 5                        # one entry per colour, incl. discarded
    assert any("rolled back" in t.get_text() for t in dg.ax.texts)
    all_ok = draw_speculative_step(list("the "), "c", ["a", "t"], ["a", "t", "u"])
    assert len(all_ok.ax.get_legend().legend_handles) == 4            # nothing discarded, no grey entry
    assert not any("rolled back" in t.get_text() for t in all_ok.ax.texts)
    plt.close("all")


def test_step_figure_draws_the_verify_comparison_as_diagonals():
    """Learner review item 7: each draft d_j is compared with the main model's choice one column to its LEFT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    from dsv3_lessons.course.ch08_speculative.figures import draw_speculative_step

    dg = draw_speculative_step(list("the "), "c", ["a", "x", "y"], ["a", "t", "u", "v"])   # d_2 rejected
    v = {j: dg.boxes[f"v{j}"] for j in range(4)}                     # verify inputs x_n, d_1, d_2, d_3
    p = {j: dg.boxes[f"p{j}"] for j in range(4)}                     # main choices under them
    diagonals = []
    for a in dg.ax.patches:
        if isinstance(a, FancyArrowPatch):
            (x0, y0), (x1, y1) = a._posA_posB
            if abs(x1 - x0) > 0.3 and abs(y1 - y0) > 0.3 and y0 < y1:
                diagonals.append((x0, x1))
    # one diagonal per draft: from choice j-1 (left column) up to draft d_j (right column)
    assert len(diagonals) == 3
    for j, (x0, x1) in zip((1, 2, 3), sorted(diagonals)):
        assert p[j - 1].x < x0 < x1 < v[j].x + 0.01
    marks = [t.get_text() for t in dg.ax.texts if t.get_text() in ("✓", "✗")]
    assert marks == ["✓", "✗"]                                      # d_1 agrees, d_2 rejected, d_3 never compared
    plt.close("all")


def test_blitted_png_equals_a_full_render(model):
    import io

    import numpy as np
    from PIL import Image
    from dsv3_lessons.course.ch08_speculative.widget import SpeculativeWidget

    w = SpeculativeWidget(model, _Tok(), prompt="abcab", max_new_tokens=12)
    w.k.value = 4
    fast = np.asarray(Image.open(io.BytesIO(w.image.value)).convert("RGB")).astype(int)
    buf = io.BytesIO()
    w.figure.savefig(buf, format="png", dpi=w.figure.dpi)
    full = np.asarray(Image.open(buf).convert("RGB")).astype(int)
    assert fast.shape == full.shape
    assert (np.abs(fast - full).max(axis=2) > 40).mean() < 0.003


def test_speculative_report_counts_and_errors(model):
    from dsv3_lessons.course.ch08_speculative.experiments import pooled_stats, speculative_report

    with pytest.raises(ValueError, match="prompt is empty"):
        speculative_report(model, _Tok(), "", 0.0, 1, 4)
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_report(model, _Tok(), "xyz", 0.0, 1, 4)
    r = speculative_report(model, _Tok(), "ab", 0.0, 2, 8)
    assert r["new_tokens"] == 8 and r["main_forwards"] <= 8
    with pytest.raises(ValueError, match="at least one prompt"):
        pooled_stats(model, [], 8, 1)
    st = pooled_stats(model, [torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4]])], 8, 2)
    assert st.new_tokens == 16 and abs(st.mean_accepted_length - 1 - sum(st.acceptance_rates)) < 1e-12
