"""Shapes of every network the project defines (random weights: shapes only)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sar2eo_cloud_plugin.core import networks


@pytest.mark.parametrize("out_nc", [3, 4])
@pytest.mark.parametrize("size", [64, 256])
def test_generator_shapes(out_nc, size):
    torch.manual_seed(0)
    net = networks.ResnetGenerator(2, out_nc).eval()  # the seed's full generator: ngf 64, 9 blocks
    assert sum(isinstance(m, networks.ResnetBlock) for m in net.modules()) == 9
    with torch.inference_mode():
        y = net(torch.randn(1, 2, size, size))
    assert y.shape == (1, out_nc, size, size)
    assert float(y.abs().max()) <= 1.0  # tanh


def test_generator_layout_matches_the_seed():
    net = networks.ResnetGenerator(2, 3, ngf=64, n_blocks=9)
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in net.model) == 2
    assert isinstance(net.model[-1], nn.Tanh)
    assert any(isinstance(m, nn.ReflectionPad2d) for m in net.model[10].modules())  # first residual block
    assert all(not m.affine for m in net.modules() if isinstance(m, nn.InstanceNorm2d))


def test_discriminator_output_is_30x30_patches_of_70x70():
    torch.manual_seed(0)
    net = networks.NLayerDiscriminator(3, ndf=64, n_layers=3)
    with torch.inference_mode():
        assert net(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    # Receptive field: InstanceNorm mixes the whole image, so swap it for identity
    # and look at which input pixels one output pixel depends on.
    for i, m in enumerate(net.model):
        if isinstance(m, nn.InstanceNorm2d):
            net.model[i] = nn.Identity()
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    net(x)[0, 0, 15, 15].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0).flatten()
    assert int(rows.max() - rows.min() + 1) == 70
    assert int(cols.max() - cols.min() + 1) == 70


def test_cloud_unet_effb2_one_channel():
    net = networks.build_cloud_unet().eval()
    assert type(net.encoder).__name__ == "EfficientNetEncoder"
    with torch.inference_mode():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_build_network_from_card_names():
    net = networks.build_network("resnet_generator", {"input_nc": 2, "output_nc": 4, "ngf": 8, "n_blocks": 1})
    assert isinstance(net, networks.ResnetGenerator) and net.output_nc == 4
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        networks.build_network("nope", {})


def test_init_weights_normal_002():
    torch.manual_seed(0)
    net = networks.init_weights(networks.ResnetGenerator(2, 3, ngf=16, n_blocks=2))
    w = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(float(w.std()) - 0.02) < 0.002
    assert all(float(m.bias.detach().abs().max()) == 0 for m in net.modules() if isinstance(m, nn.Conv2d))
