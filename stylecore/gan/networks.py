"""The networks of the GAN translation models: the ResNet generator and the PatchGAN discriminator.

Both follow pix2pix / CycleGAN (Isola et al. 2017; Zhu et al. 2017) at their defaults, so parameter counts equal
the official code's (junyanz/pytorch-CycleGAN-and-pix2pix, ``netG resnet_9blocks``, ``netD basic``, ``norm
instance``): instance norm without affine parameters, hence biases on every convolution. Images are in [−1, 1]
(the generator ends in tanh); :mod:`stylecore.gan.base` maps the project's [0, 1] to it and back.
"""

from __future__ import annotations

from torch import Tensor, nn


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """The references' ``norm instance``: no learned scale and shift, no running statistics."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """x + [reflect pad 1, conv 3×3, IN, ReLU, reflect pad 1, conv 3×3, IN](x) (He et al. 2016, as in CycleGAN;
    U-GAT-IT's encoder blocks are the same without the convolutions' biases)."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), instance_norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), instance_norm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson et al.'s transformation network as CycleGAN uses it: c7s1-64, d128, d256, ``blocks`` residual
    blocks at 256 channels, u128, u64, c7s1-3, tanh. 11,378,179 parameters at ``width=64, blocks=9``.

    Any input side works; sides that are not a multiple of 4 come back cropped by the transposed convolutions'
    arithmetic, so :meth:`stylecore.gan.base.TranslationModel.translate` pads to a multiple of 4 first."""

    def __init__(self, width: int = 64, blocks: int = 9, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), instance_norm(width),
                                   nn.ReLU(True)]
        for factor in (1, 2):  # two stride-2 downsamplings
            layers += [nn.Conv2d(width * factor, width * factor * 2, 3, stride=2, padding=1),
                       instance_norm(width * factor * 2), nn.ReLU(True)]
        layers += [ResidualBlock(width * 4) for _ in range(blocks)]
        for factor in (4, 2):
            layers += [nn.ConvTranspose2d(width * factor, width * factor // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       instance_norm(width * factor // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """The 70×70 PatchGAN (Isola et al. 2017): C64 (no norm) – C128 – C256 – C512 (stride 1) – 1, 4×4 kernels,
    LeakyReLU 0.2; one logit per overlapping 70×70 patch. 2,764,737 parameters at ``width=64, layers=3``."""

    def __init__(self, width: int = 64, layers: int = 3, channels: int = 3) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        previous = width
        for n in range(1, layers + 1):
            current = width * min(2 ** n, 8)
            modules += [nn.Conv2d(previous, current, 4, stride=2 if n < layers else 1, padding=1),
                        instance_norm(current), nn.LeakyReLU(0.2, True)]
            previous = current
        modules.append(nn.Conv2d(previous, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """The references' ``init normal``: conv weights ~ N(0, gain²), biases 0 (CycleGAN ``init_weights``)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
