"""Chapter 9's drawing of V3 Fig. 6 (number formats around one linear layer in training): each box says what
the library's FP8Linear really does."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dsv3_lessons.course.ch09_fp8.figures import PRECISION_COLOURS, draw_mixed_precision  # noqa: E402
from dsv3_lessons.model import fp8  # noqa: E402


def _texts(dg):
    return [t.get_text() for t in dg.ax.texts]


def _face(dg, name):
    """Face colour of the patch drawn for the box registered as ``name``."""
    b = dg.boxes[name]
    for p in dg.ax.patches:
        if hasattr(p, "get_x") and abs(p.get_x() - (b.x - b.w / 2)) < 1e-9 and abs(p.get_y() - (b.y - b.h / 2)) < 1e-9:
            return mcolors.to_hex(p.get_facecolor())
    raise AssertionError(f"no patch for box {name!r}")


def test_three_fp8_gemms_with_their_formats():
    dg = draw_mixed_precision()
    texts = _texts(dg)
    for gemm in ("Fprop", "Dgrad", "Wgrad"):
        assert f"{gemm}\nFP8 × FP8 GEMM\nsums in FP32" in texts
    expect = {"Fprop:master W": "FP32", "Fprop:input x": "BF16", "Fprop:out": "BF16", "Dgrad:W (from Fprop)": "FP8",
              "Dgrad:out": "BF16", "Wgrad:cached x": "FP8", "Wgrad:out": "FP32"}
    for name, fmt in expect.items():
        assert _face(dg, name) == mcolors.to_hex(PRECISION_COLOURS[fmt]), name
    assert "1×128 tiles" in " ".join(texts) and "128×128 blocks" in " ".join(texts)
    matplotlib.pyplot.close(dg.fig)


def test_block_size_comes_from_the_argument():
    dg = draw_mixed_precision(block=64)
    joined = " ".join(_texts(dg))
    assert "1×64 tiles" in joined and "64×64 blocks" in joined and "64×1 tiles" in joined and "128" not in joined
    matplotlib.pyplot.close(dg.fig)
    with pytest.raises(ValueError, match="block must be >= 1"):
        draw_mixed_precision(block=0)


def test_fp8_linear_follows_the_drawn_dataflow():
    """Master weight and its gradient stay FP32; the GEMM inputs are FP8-representable at the drawn granularity."""
    torch.manual_seed(0)
    layer = fp8.FP8Linear(256, 128, bias=False)
    x = torch.randn(8, 256, requires_grad=True)
    y = layer(x)
    y.backward(torch.randn_like(y))
    assert layer.weight.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    # Fprop = the exact product of the tile-quantized x and the block-quantized W (sums in FP32)
    xq = fp8.fake_quantize(x.detach(), "tile")
    wq = fp8.fake_quantize(layer.weight.detach(), "block")
    torch.testing.assert_close(y.detach(), xq @ wq.t(), rtol=1e-6, atol=1e-6)
    assert not torch.equal(y.detach(), x.detach() @ layer.weight.detach().t())      # quantization is really there
