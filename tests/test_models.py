"""Architectures: shapes, the paper's layer facts, initialisation, rebuild from (name, arch)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from workflow_scripts.models import (
    LOWRES_SIZE,
    DCGANDiscriminator,
    DCGANGenerator,
    SRDiscriminator,
    SRGenerator,
    architecture,
    build_model,
    init_weights,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("channels", [1, 7])
def test_dcgan_generator_shapes(channels):
    g = DCGANGenerator(nz=100, channels=channels, base=8)
    out = g(torch.randn(3, 100, 1, 1))
    assert out.shape == (3, channels, 64, 64)
    assert out.abs().max() <= 1.0  # tanh
    assert g(torch.randn(3, 100)).shape == (3, channels, 64, 64)  # flat noise accepted


@pytest.mark.parametrize("channels", [1, 7])
def test_dcgan_discriminator_one_logit_per_image(channels):
    d = DCGANDiscriminator(channels=channels, base=8)
    logits = d(torch.randn(5, channels, 64, 64))
    assert logits.shape == (5,)
    assert logits.dtype == torch.float32
    with pytest.raises(ValueError, match="64, 64"):
        d(torch.randn(2, channels, 32, 32))


@pytest.mark.parametrize("channels", [1, 7])
def test_sr_generator_21_to_64(channels):
    g = SRGenerator(channels=channels, base=8)
    out = g(torch.randn(4, channels, LOWRES_SIZE, LOWRES_SIZE))
    assert LOWRES_SIZE == 21
    assert out.shape == (4, channels, 64, 64)
    assert out.abs().max() <= 1.0
    # fully convolutional: n -> 3n + 1
    assert g(torch.randn(1, channels, 10, 10)).shape[-1] == 31


@pytest.mark.parametrize("channels", [1, 7])
def test_sr_discriminator_conditional_and_unconditional(channels):
    hi = torch.randn(4, channels, 64, 64)
    lo = torch.randn(4, channels, 21, 21)
    d = SRDiscriminator(channels=channels, base=8)
    assert d.conditional
    assert d(hi, lo).shape == (4,)
    first = next(m for m in d.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 2 * channels  # image + upsampled condition
    with pytest.raises(ValueError, match="condition"):
        d(hi)
    # the condition matters: a different low-res input changes the logits
    assert not torch.allclose(d(hi, lo), d(hi, torch.randn_like(lo)))

    u = SRDiscriminator(channels=channels, base=8, conditional=False)
    first = next(m for m in u.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == channels
    assert torch.equal(u(hi), u(hi, lo))  # the paper's D ignores the input


def test_discriminator_is_the_papers_dcgan_stack():
    d = DCGANDiscriminator(channels=1, base=64)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    for c in convs[:-1]:
        assert (c.kernel_size, c.stride, c.padding) == ((4, 4), (2, 2), (1, 1))
    layers = list(d.net)
    # BN after every conv except the first; LeakyReLU(0.2) everywhere; no sigmoid (logits)
    assert not isinstance(layers[1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 3
    assert all(m.negative_slope == 0.2 for m in layers if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())


def test_sr_generator_layer_facts():
    g = SRGenerator(channels=1, base=64)
    layers = list(g.net)
    assert isinstance(layers[1], nn.LeakyReLU)  # LeakyReLU first
    with torch.no_grad():  # tanh output (applied in forward, after the optional skip path)
        y = g(100.0 * torch.randn(2, 1, 21, 21))
    assert float(y.abs().max()) <= 1.0 and float(y.abs().max()) > 0.5
    up = [m for m in layers if isinstance(m, nn.ConvTranspose2d)]
    assert len(up) == 1 and up[0].stride == (3, 3)
    assert (21 - 1) * 3 - 2 * up[0].padding[0] + up[0].kernel_size[0] == 64


def test_generators_receive_gradients_everywhere():
    g = SRGenerator(channels=1, base=4)
    g(torch.randn(2, 1, 21, 21)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def test_init_weights_statistics():
    torch.manual_seed(1)
    model = nn.ModuleList([DCGANGenerator(base=64), SRGenerator(channels=7, base=64),
                           SRDiscriminator(channels=7, base=64)])
    init_weights(model)
    conv_w = torch.cat([m.weight.flatten() for m in model.modules()
                        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    bn_w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))
              and m.bias is not None]
    assert abs(conv_w.mean().item()) < 1e-3
    assert conv_w.std().item() == pytest.approx(0.02, rel=0.02)
    assert bn_w.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert bn_w.std().item() == pytest.approx(0.02, rel=0.1)
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_init_is_seeded():
    a, b = SRGenerator(base=4), SRGenerator(base=4)
    torch.manual_seed(5)
    init_weights(a)
    torch.manual_seed(5)
    init_weights(b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("model", [DCGANGenerator(nz=16, channels=7, base=4), DCGANDiscriminator(3, base=4),
                                   SRGenerator(7, base=4), SRDiscriminator(7, base=4, conditional=False)])
def test_rebuild_from_architecture(model):
    spec = architecture(model)
    clone = build_model(spec["name"], spec["arch"])
    clone.load_state_dict(model.state_dict())
    assert architecture(clone) == spec
    with pytest.raises(ValueError, match="unknown model"):
        build_model("NoSuchNet", {})


def test_resize_upsampling_keeps_shape_and_centre():
    g = SRGenerator(7, base=8, upsample="resize")
    assert g(torch.zeros(2, 7, 21, 21)).shape == (2, 7, 64, 64)
    # the resize layer maps the centre of the low-res grid (10) onto the centre of the hi-res grid (31.5)
    from workflow_scripts.models.srgan import ResizeConv

    layer = ResizeConv(1, 1, 3)
    torch.nn.init.zeros_(layer.conv.weight)
    with torch.no_grad():
        layer.conv.weight[0, 0, 1, 1] = 1.0            # identity convolution
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    with torch.no_grad():
        y = layer(x)[0, 0]
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    assert float((y * cols).sum() / y.sum()) == pytest.approx(31.5, abs=1e-4)
    assert float((y * rows).sum() / y.sum()) == pytest.approx(31.5, abs=1e-4)
    with pytest.raises(ValueError, match="upsample"):
        SRGenerator(1, upsample="pixelshuffle")


def test_skip_path_starts_as_the_upsampled_input():
    """With skip=True and the body's output zeroed, G(x) = tanh(bicubic(x)): the residual starts from the input
    upsampled to the hi-res grid (centre on centre) and survives the DCGAN initialisation."""
    from workflow_scripts.models import init_weights

    g = init_weights(SRGenerator(2, base=4, skip=True))
    assert architecture(g)["arch"]["skip"] is True
    assert torch.equal(g.skip.weight, torch.eye(2))   # the N(0, 0.02) conv initialisation left it alone
    torch.nn.init.zeros_(g.net[-1].weight)
    torch.nn.init.zeros_(g.net[-1].bias)
    x = torch.zeros(1, 2, 21, 21)
    x[0, 0] = 0.5                                        # flat band: stays flat
    x[0, 1, 10, 10] = 0.8                                # point: lands on the hi-res centre
    g.eval()
    with torch.no_grad():
        y = g(x)[0]
    assert torch.allclose(y[0], torch.full((64, 64), math.tanh(0.5)), atol=1e-5)
    up = torch.atanh(y[1].clamp(-0.999, 0.999)).clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    assert float((up * cols).sum() / up.sum()) == pytest.approx(31.5, abs=0.05)
    assert float((up * rows).sum() / up.sum()) == pytest.approx(31.5, abs=0.05)
    # without the option the architecture record is unchanged (older generator files still load)
    assert "skip" not in architecture(SRGenerator(2, base=4))["arch"]
    clone = build_model("SRGenerator", architecture(g)["arch"])
    clone.load_state_dict(g.state_dict())


def test_zero_residual_generator_starts_exactly_as_the_upsampled_input():
    """zero_residual: the DCGAN initialisation leaves the learnt branch's last conv at zero, so the untrained
    generator is tanh(bicubic(x)) for any input, and the option is kept in the architecture record."""
    from workflow_scripts.models import init_weights

    torch.manual_seed(0)
    g = init_weights(SRGenerator(3, base=4, skip=True, zero_residual=True)).eval()
    assert architecture(g)["arch"]["zero_residual"] is True
    x = torch.rand(2, 3, 21, 21) * 2 - 1
    with torch.no_grad():
        expected = torch.tanh(torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic",
                                                              align_corners=False))
        assert torch.allclose(g(x), expected, atol=1e-6)
    plain = init_weights(SRGenerator(3, base=4, skip=True)).eval()
    with torch.no_grad():
        assert float((plain(x) - expected).abs().max()) > 1e-5  # the ordinary start is not exactly the input
    with pytest.raises(ValueError, match="skip"):
        SRGenerator(1, base=4, zero_residual=True)
    assert build_model("SRGenerator", architecture(g)["arch"]).arch["zero_residual"] is True
