"""Every network of the project, defined once.

The plugin builds these for inference and ``training/`` imports them to train;
nothing else defines a network. The CycleGAN parts follow Zhu et al. (2017) and
junyanz/pytorch-CycleGAN-and-pix2pix ("resnet_9blocks" generator, "basic" 70x70
PatchGAN discriminator, instance normalisation). The cloud mask is a U-Net with an
EfficientNet-B2 encoder from segmentation-models-pytorch.

torch (and smp) are imported here at module level; callers that must stay light
(the QGIS plugin at start-up) import this module lazily.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Dict

import torch
from torch import nn

# InstanceNorm without affine parameters or running stats, as in the reference
# CycleGAN: with it, the convolutions keep their bias.
_InstanceNorm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Conv-norm-ReLU-conv-norm with reflection padding and a skip connection."""

    def __init__(self, dim: int, use_dropout: bool = False) -> None:
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _InstanceNorm(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _InstanceNorm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: 7x7 conv, two stride-2 downsamplings, residual
    blocks, two upsamplings, 7x7 conv and tanh. Input height/width must be a
    multiple of 4 (the tiled engine pads tiles for that)."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_blocks: int = 9,
                 use_dropout: bool = False) -> None:
        super().__init__()
        self.input_nc, self.output_nc = input_nc, output_nc
        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=True),
                                  _InstanceNorm(ngf), nn.ReLU(True)]
        n_down = 2
        for i in range(n_down):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                      _InstanceNorm(ngf * mult * 2), nn.ReLU(True)]
        mult = 2 ** n_down
        model += [ResnetBlock(ngf * mult, use_dropout) for _ in range(n_blocks)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                         output_padding=1, bias=True),
                      _InstanceNorm(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator; with n_layers=3 each output sees a 70x70 patch."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        kw, padw = 4, 1
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=True),
                    _InstanceNorm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=True),
                _InstanceNorm(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _keep_triton_out_of_qgis() -> None:
    """Inside a QGIS process, make ``triton`` unimportable before smp is imported (unless something
    already imported it); elsewhere (training, scripts, the tests' core runs) do nothing.

    Why: importing segmentation-models-pytorch imports ``torch._dynamo``, which imports triton when it
    is installed (CUDA builds of torch ship it). libtriton.so carries its own LLVM, whose static
    initialisers segfault in a QGIS desktop process that has already loaded Mesa's libLLVM for
    OpenGL (seen: QGIS 3.22 under Xvfb, llvmpipe, torch 2.14 -> "QGIS died on signal 11" in
    ``_GLOBAL__sub_I_PassBuilder.cpp`` of libtriton.so; the regression test is
    ``tests/qgis/test_processing_cloudmask.py::test_real_qgis_desktop_runs_and_styles_both_algorithms``).
    The plugin runs networks eagerly and never compiles kernels, so torch without triton loses nothing
    there: it reports "no triton" and carries on. Training keeps triton (``torch.compile`` may want it):
    hence scoped to processes that have loaded QGIS, and applied only here, where the U-Net is built,
    instead of at every import of the plugin's inference.
    """
    if "qgis.core" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` -> ImportError


def build_cloud_unet(encoder_name: str = "efficientnet-b2", in_channels: int = 3, classes: int = 1,
                     encoder_weights: Any = None) -> nn.Module:
    """U-Net from segmentation-models-pytorch. ``encoder_weights`` is None at
    inference (the model file holds all weights) and for training from scratch;
    training passes a local ImageNet checkpoint separately (no downloads)."""
    _keep_triton_out_of_qgis()
    import segmentation_models_pytorch as smp  # imported here: smp is slow to import

    return smp.Unet(encoder_name=encoder_name, encoder_weights=encoder_weights,
                    in_channels=in_channels, classes=classes)


# Architecture names as written in model cards -> builders.
ARCHITECTURES = {
    "resnet_generator": ResnetGenerator,
    "patchgan_discriminator": NLayerDiscriminator,
    "unet": build_cloud_unet,
}


def build_network(architecture: str, args: Dict[str, Any]) -> nn.Module:
    """Build a network from the (architecture, arguments) pair of a model card."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})") from None
    return builder(**args)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """normal(0, gain) initialisation of conv weights, as in the CycleGAN paper."""

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net
