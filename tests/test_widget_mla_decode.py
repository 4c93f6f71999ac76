"""Chapter 4's decode-cost widget: its numbers against closed forms written here from the V3 widths, every corner
of its controls, and the widget driven through its controls (figure updated in place, axes fixed)."""
from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from dsv3_lessons.course.ch02_mla import mha_cost, mla_cost  # noqa: E402
from dsv3_lessons.course.ch04_mla_inference.costs import (CONTROL_OPTIONS, H800_RIDGE, crossover_context,  # noqa: E402
                                                          decode_cost_report, fixed_cost_limits,
                                                          mha_attention_flops)
from dsv3_lessons.course.ch04_mla_inference.decode import v3_attention_config  # noqa: E402
from dsv3_lessons.course.ch04_mla_inference.widget import (READOUT_WIDTH, decode_cost_widget,  # noqa: E402
                                                           format_decode_cost_report)
from dsv3_lessons.model.config import count_parameters, deepseek_v3_671b  # noqa: E402

# V3 widths (released config.json; SPEC §1): d = 7168, d_c' = 1536, d_c = 512, d_h = 128, d_h^R = 64, d_v = 128
D, DQ, DC, DH, DR, DV = 7168, 1536, 512, 128, 64, 128


def _closed_form(T, h, batch, q, w):
    """Per decoded token (FLOPs, bytes), written out independently of the package."""
    keys = T + q
    mla_proj = 2 * (D * DQ + DQ * h * (DH + DR) + D * (DC + DR) + h * DV * D)
    fold = 2 * h * DH * DC + 2 * h * DC * DV                     # = expanding one token with kv_b_proj
    mla_params = count_parameters(v3_attention_config(h)).attention_per_layer
    mha_proj = 2 * (D * h * (2 * w + DV) + h * DV * D)
    flops = {"mha": mha_proj + 2 * h * keys * (w + DV),
             "per_head": mla_proj + fold + 2 * h * keys * (DH + DR + DV),
             "absorb": mla_proj + fold + 2 * h * keys * (DC + DR + DC)}
    rows = {"mha": h * (w + DV), "per_head": h * (DH + DR + DV), "absorb": DC + DR}
    params = {"mha": D * h * (2 * w + DV) + h * DV * D, "per_head": mla_params, "absorb": mla_params}
    # a step of batch·q tokens: every token pays its projections and its T + q keys; weights read once per step
    per_token = {v: (flops[v], 2 * (params[v] + batch * T * rows[v]) / (batch * q)) for v in flops}
    return per_token, rows


@pytest.mark.parametrize("T,h,batch,q,w", [(4096, 128, 1, 1, 192), (64, 8, 256, 2, 128), (131072, 16, 8, 1, 192),
                                           (1000, 64, 3, 2, 128)])
def test_report_equals_closed_form(T, h, batch, q, w):
    r = decode_cost_report(T, h, batch, q, w)
    want, rows = _closed_form(T, h, batch, q, w)
    for v, (f, b) in want.items():
        assert r.flops[v] == f and r.bytes[v] == pytest.approx(b, rel=1e-12)
        assert r.cache_row_bytes[v] == 2 * rows[v]
    assert r.core_intensity["absorb"] == pytest.approx(q * 2 * h * (2 * DC + DR) / (2 * (DC + DR)))
    assert r.core_intensity["per_head"] == pytest.approx(q * 1.0) and r.core_intensity["mha"] == pytest.approx(q * 1.0)


def test_v3_numbers_the_chapter_prints():
    r = decode_cost_report()
    assert r.core_intensity["absorb"] == pytest.approx(278_528 / 1_152)            # ≈ 242 FLOP per cached byte
    assert decode_cost_report(heads=16).core_intensity["absorb"] == pytest.approx(34_816 / 1_152)
    assert decode_cost_report(queries=2).core_intensity["absorb"] == pytest.approx(2 * 278_528 / 1_152)
    assert H800_RIDGE == pytest.approx(220.0)                                       # 660 TFLOPS / 3000 GB/s
    # chapter 2's projection counts: 1,174 vs 374 MFLOP per token and layer (the review's numbers)
    assert mha_attention_flops(deepseek_v3_671b(), 1, 0)["projections"] == mha_cost().flops_per_token_per_layer
    assert round(mha_cost().flops_per_token_per_layer / 1e6) == 1174 and round(mla_cost().flops_per_token_per_layer / 1e6) == 374


def test_crossover_is_the_first_context_where_absorbed_costs_more():
    cfg = deepseek_v3_671b()
    for w, expected in ((192, 4070), (128, 2654)):           # the review measured ≈ 4,070 and ≈ 2,650
        t = crossover_context(cfg, mha_qk_width=w)
        assert t == expected
        f = lambda T, v: _closed_form(T, 128, 1, 1, w)[0][v][0]  # noqa: E731
        assert f(t, "absorb") > f(t, "mha") and f(t - 1, "absorb") <= f(t - 1, "mha")
    assert crossover_context(cfg.replace(kv_lora_rank=32, num_key_value_heads=128)) is None   # cheap pairs: never


def test_every_corner_of_the_controls_is_finite():
    opts = CONTROL_OPTIONS
    corners = itertools.product(*[(min(opts[k]), max(opts[k])) for k in ("context", "heads", "batch", "queries")],
                                opts["mha_qk_width"])
    n = 0
    for T, h, batch, q, w in corners:
        r = decode_cost_report(T, h, batch, q, w)
        values = [*r.flops.values(), *r.bytes.values(), *r.core_intensity.values(), *r.step_intensity.values()]
        values += [y for c in (*r.curve_flops.values(), *r.curve_bytes.values()) for y in c]
        assert all(math.isfinite(v) and v > 0 for v in values), (T, h, batch, q, w)
        assert r.crossover is None or r.crossover > 0
        # the learner report: a readout line wrapped inside "at every / T"; every line fits the output area
        assert max(len(line) for line in format_decode_cost_report(r).splitlines()) <= READOUT_WIDTH
        n += 1
    assert n == 32
    lims = fixed_cost_limits()
    assert all(math.isfinite(x) and x > 0 for pair in lims.values() for x in pair)


@pytest.mark.parametrize("bad", [dict(context=0), dict(heads=0), dict(batch=-1), dict(queries=1.5),
                                 dict(mha_qk_width=64), dict(context=True)])
def test_bad_settings_name_the_argument(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        decode_cost_report(**bad)


def test_widget_drives_and_keeps_its_axes():
    w = decode_cost_widget()
    assert repr(w) == "[DecodeCostWidget: run this cell to use the widget]"
    fig = w.figure
    axes_limits = [ax.get_ylim() for ax in fig.axes]
    png0 = w.image.value
    assert png0[:8] == b"\x89PNG\r\n\x1a\n"
    assert "T = 16,384" in w.readout.value and "4,070" in w.readout.value and "compute-bound" in w.readout.value
    for control, value in ((w.context, 131072), (w.heads, 16), (w.batch, 256), (w.queries, 2), (w.mha_qk_width, 128),
                           (w.context, 64), (w.heads, 8), (w.batch, 1)):
        control.value = value
        r = w.last_result
        assert r == decode_cost_report(w.context.value, w.heads.value, w.batch.value, w.queries.value,
                                       w.mha_qk_width.value)
        assert w.figure is fig                                    # updated in place, not rebuilt
        assert [ax.get_ylim() for ax in fig.axes] == axes_limits  # the axes do not move
        assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n" and w.image.value != png0
    w.heads.value = 16
    assert "memory-bound" in w.readout.value                     # 30 FLOP/B at 16 heads: below the ridge
    with pytest.raises(ValueError, match="heads"):
        decode_cost_widget(heads=12)


def test_toggle_buttons_are_wide_enough_for_their_labels():
    """The learner report: "2 (MTP draft veri…" and "192 (V3's q/k wid…" were cut at ipywidgets' default
    148 px buttons. About 7 px per character of the 13 px UI font, plus padding."""
    w = decode_cost_widget()
    for control in (w.queries, w.mha_qk_width):
        width = int(control.style.button_width.removesuffix("px"))
        assert all(7 * len(label) + 20 <= width for label in control._options_labels), control._options_labels
