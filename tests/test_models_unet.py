import pytest
import torch

from albench.errors import AlbenchError
from albench.models import SegmenterOutput, UNet, seeded


@pytest.mark.parametrize(
    "widths,bottleneck,size", [((32, 64, 128, 256), 512, 32), ((8, 16, 32, 64), 128, 64)]
)
def test_unet_shapes(widths, bottleneck, size):
    model = UNet(4, 4, widths=widths, bottleneck=bottleneck).eval()
    x = torch.randn(2, 4, size, size)
    out = model.forward_features(x)
    assert isinstance(out, SegmenterOutput)
    assert out.logits.shape == (2, 4, size, size)
    assert [tuple(e.shape) for e in out.encoder] == [
        (2, w, size >> i, size >> i) for i, w in enumerate(widths)
    ]
    assert out.bottleneck.shape == (2, bottleneck, size // 16, size // 16)
    assert out.decoder_last.shape == (2, widths[0], size, size)
    assert torch.equal(model(x), out.logits)


def test_unet_paper_parameter_count():
    # independent count: conv3x3 blocks without bias + 2 BN (weight, bias) each, transposed convs
    # with bias, 1x1 head with bias
    def block(i, o):
        return 9 * i * o + 9 * o * o + 4 * o

    w, b, c, k = (32, 64, 128, 256), 512, 4, 4
    expect = block(c, 32) + block(32, 64) + block(64, 128) + block(128, 256) + block(256, b)
    prev = b
    for wi in reversed(w):
        expect += prev * wi * 4 + wi + block(2 * wi, wi)
        prev = wi
    expect += 32 * k + k
    model = UNet(c, k)
    assert sum(p.numel() for p in model.parameters()) == expect


def test_unet_rejects_bad_size():
    model = UNet(1, 2, widths=(4, 4, 4, 4), bottleneck=4)
    with pytest.raises(AlbenchError, match="divisible by 16"):
        model(torch.zeros(1, 1, 24, 32))
    with pytest.raises(AlbenchError, match="expects input"):
        model(torch.zeros(1, 3, 32, 32))


def test_unet_mc_dropout_switch():
    model = UNet(1, 2, widths=(4, 4, 4, 4), bottleneck=8, dropout=0.5).eval()
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(model(x), model(x))
    model.mc_dropout(True)
    assert not model.bottleneck[1].training  # BatchNorm stays in eval mode
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_seeded_init_is_reproducible_and_isolated():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with seeded(7):
        a = UNet(1, 2, widths=(4, 4, 4, 4), bottleneck=8)
    after = torch.rand(1)
    with seeded(7):
        b = UNet(1, 2, widths=(4, 4, 4, 4), bottleneck=8)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_background_bias_shifts_only_the_background_logit_init():
    with seeded(3):
        plain = UNet(1, 3, widths=(4, 4, 4, 4), bottleneck=8)
    with seeded(3):
        biased = UNet(1, 3, widths=(4, 4, 4, 4), bottleneck=8, background_bias=4.0)
    torch.testing.assert_close(biased.head.bias - plain.head.bias, torch.tensor([4.0, 0.0, 0.0]))
    for (name, a), b in zip(plain.state_dict().items(), biased.state_dict().values()):
        if name != "head.bias":
            assert torch.equal(a, b)
